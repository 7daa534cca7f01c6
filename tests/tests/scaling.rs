//! Scaling and health, black-box: bursts grow an actor's pool up to its cap and back to zero with
//! every message executed exactly once (embedded and distributed), the `sync` hint keeps one warm
//! worker, `autoscaling = false` keeps one, `[spawner] max_workers_per_actor` caps actors without
//! `max_workers`, health replaces dead workers, removes orphaned containers (and stopped ones of
//! finished executions) and enforces `worker_ttl`, and `GET /metrics` exposes mailbox, worker and
//! execution metrics.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abaco_core::messages::{ContentType, MessageBody};
use abaco_core::time::now;
use abaco_core::{
    ActorId, DbId, Execution, ExecutionId, ExecutionStatus, MailboxMessage, Tenant, WorkerId,
};
use abaco_runtime::ContainerSpec;
use abaco_tests::{unique, wait_for, TestApp};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

const IMAGE: &str = "abaco-test/actor:latest";

// ---- helpers ------------------------------------------------------------------------------------

fn db_id(app: &TestApp, aid: &str) -> DbId {
    DbId::new(&Tenant::from(app.tenant.as_str()), &ActorId::from(aid))
}

/// Registers an actor and returns its id.
async fn register(app: &TestApp, body: Value) -> String {
    let actor = app.register_actor(body).await;
    actor["id"].as_str().expect("actor id").to_string()
}

/// `GET /actors/{aid}/workers`.
async fn workers(app: &TestApp, aid: &str) -> Vec<Value> {
    let (status, env) = app.get(&format!("/actors/{aid}/workers")).await;
    assert_eq!(status, 200, "list workers: {env}");
    env["result"].as_array().cloned().unwrap_or_default()
}

/// A worker that is starting or serving (not shutting down or failed).
fn is_viable(worker: &Value) -> bool {
    !matches!(
        worker["status"].as_str(),
        Some("SHUTDOWN_REQUESTED" | "SHUTTING_DOWN" | "ERROR")
    )
}

fn worker_ids(workers: &[Value]) -> Vec<String> {
    workers
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_string))
        .collect()
}

/// Sends messages from tasks of their own (the harness's `TestApp` cannot be shared with them).
#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    url: String,
    tenant: String,
}

impl Sender {
    fn new(app: &TestApp, aid: &str) -> Sender {
        Sender {
            http: reqwest::Client::new(),
            url: app.url(&format!("/actors/{aid}/messages")),
            tenant: app.tenant.clone(),
        }
    }

    async fn send(&self, text: &str) -> String {
        let resp = self
            .http
            .post(&self.url)
            .header("tenant", &self.tenant)
            .json(&json!({ "message": text }))
            .send()
            .await
            .expect("message reaches the API");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON receipt");
        assert_eq!(status, 200, "send failed: {body}");
        body["result"]["execution_id"]
            .as_str()
            .expect("execution_id in receipt")
            .to_string()
    }
}

/// Sends `n` messages `{prefix}-{i:04}` with `concurrency` senders in flight at once; returns
/// `(message, execution id)` pairs.
async fn send_burst(
    app: &TestApp,
    aid: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Vec<(String, String)> {
    let sender = Sender::new(app, aid);
    let mut lanes = JoinSet::new();
    for lane in 0..concurrency {
        let sender = sender.clone();
        let prefix = prefix.to_string();
        lanes.spawn(async move {
            let mut sent = Vec::new();
            for i in (lane..n).step_by(concurrency) {
                let text = format!("{prefix}-{i:04}");
                let eid = sender.send(&text).await;
                sent.push((text, eid));
            }
            sent
        });
    }
    let mut all = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        all.extend(lane.expect("a sender lane panicked"));
    }
    all
}

/// Waits until the actor has exactly `n` executions, all COMPLETE or ERROR; returns the summary
/// items.
async fn wait_all_final(app: &TestApp, aid: &str, n: usize, within: Duration) -> Vec<Value> {
    let path = format!("/actors/{aid}/executions");
    wait_for(
        &format!("{n} executions of {aid} to finish"),
        within,
        || async {
            let (status, env) = app.get(&path).await;
            assert_eq!(status, 200, "executions summary: {env}");
            let items = env["result"]["executions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let finished = items
                .iter()
                .filter(|e| matches!(e["status"].as_str(), Some("COMPLETE" | "ERROR")))
                .count();
            (env["result"]["total_executions"] == n && items.len() == n && finished == n)
                .then_some(items)
        },
    )
    .await
}

/// How many lines of `logs` are exactly `line`.
fn count_lines(logs: &str, line: &str) -> usize {
    logs.lines().filter(|l| *l == line).count()
}

/// Checks one execution end to end: COMPLETE, exit code 0, and its logs show its own message
/// exactly once. Returns the id of the worker that ran it.
async fn check_execution(app: &TestApp, aid: &str, text: &str, eid: &str) -> String {
    let (status, env) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
    assert_eq!(status, 200, "execution {eid}: {env}");
    let execution = &env["result"];
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    assert_eq!(execution["exit_code"], 0, "{execution}");
    let logs = app.logs(aid, eid).await;
    assert_eq!(
        count_lines(&logs, &format!("MSG={text}")),
        1,
        "execution {eid} must show its message {text:?} exactly once: {logs}"
    );
    assert_eq!(
        count_lines(&logs, &format!("_abaco_execution_id={eid}")),
        1,
        "{logs}"
    );
    execution["worker_id"]
        .as_str()
        .unwrap_or_else(|| panic!("execution {eid} has no worker_id: {execution}"))
        .to_string()
}

/// What the pool of one actor looked like while a burst ran.
#[derive(Debug, Default)]
struct PoolObservation {
    samples: usize,
    /// Most viable worker records seen at once.
    max_viable: usize,
    /// Most worker records (any status) seen at once.
    max_records: usize,
    /// Most containers of the actor running at once.
    max_running: usize,
    /// When more than one viable worker was first seen.
    first_above_one: Option<Duration>,
}

/// Samples the actor's workers (API) and running containers (Docker) until `done`.
async fn observe_pool(
    app: &TestApp,
    aid: &str,
    done: &AtomicBool,
    since: Instant,
) -> PoolObservation {
    let db = db_id(app, aid);
    let mut obs = PoolObservation::default();
    while !done.load(Ordering::SeqCst) {
        let ws = workers(app, aid).await;
        let viable = ws.iter().filter(|w| is_viable(w)).count();
        obs.max_viable = obs.max_viable.max(viable);
        obs.max_records = obs.max_records.max(ws.len());
        if viable > 1 && obs.first_above_one.is_none() {
            obs.first_above_one = Some(since.elapsed());
        }
        if let Ok(containers) = app.runtime.list(&[("abaco.actor", db.as_str())]).await {
            let running = containers.iter().filter(|c| c.running).count();
            obs.max_running = obs.max_running.max(running);
        }
        obs.samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    obs
}

/// Puts a text message straight into the actor's mailbox, as the API does but without the API's
/// request for a worker: only health can then give the actor one.
async fn enqueue_direct(app: &TestApp, aid: &str, text: &str) -> String {
    let db = db_id(app, aid);
    let actor = app
        .control
        .store
        .actor(&db)
        .await
        .expect("store reachable")
        .expect("actor exists");
    let eid = ExecutionId::generate();
    let execution = Execution::submitted(&actor, eid.clone(), "scaling-test", now());
    let mut env = Map::new();
    env.insert("_abaco_username".into(), json!("scaling-test"));
    let message = MailboxMessage {
        execution_id: eid.clone(),
        content_type: ContentType::Str,
        message: MessageBody::Text(text.to_string()),
        env,
    };
    app.control
        .enqueue(&execution, &message)
        .await
        .expect("message enqueued");
    eid.as_str().to_string()
}

/// Enqueues `n` messages with [`enqueue_direct`], waits for them and checks each; returns the
/// ids of the workers that ran them.
async fn run_direct(app: &TestApp, aid: &str, tag: &str, n: usize) -> HashSet<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        let text = format!("{tag}-{i}");
        let eid = enqueue_direct(app, aid, &text).await;
        sent.push((text, eid));
    }
    let mut served_by = HashSet::new();
    for (text, eid) in &sent {
        app.wait_execution_final(aid, eid, Duration::from_secs(90))
            .await;
        served_by.insert(check_execution(app, aid, text, eid).await);
    }
    served_by
}

// ---- 1. bursts ----------------------------------------------------------------------------------

/// The headline acceptance test: a burst grows the pool above one worker within seconds and never
/// above the cap, every message is executed exactly once, and the pool goes back to zero.
async fn burst(app: TestApp, mode: &str, n: usize, cap: usize) {
    let aid = register(
        &app,
        json!({"image": IMAGE, "name": "burst", "stateless": true, "max_workers": cap,
               "default_environment": {"SLEEP_MS": "300"}}),
    )
    .await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;

    let prefix = unique("burst");
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let ((sent, sent_after, items, finished_after), obs) = tokio::join!(
        async {
            let sent = send_burst(&app, &aid, &prefix, n, 8).await;
            let sent_after = start.elapsed();
            let items =
                wait_all_final(&app, &aid, n, Duration::from_secs(120 + 2 * n as u64)).await;
            let finished_after = start.elapsed();
            done.store(true, Ordering::SeqCst);
            (sent, sent_after, items, finished_after)
        },
        observe_pool(&app, &aid, &done, start)
    );

    let finished_at = start + finished_after;

    // Every message accepted once, with its own execution id.
    assert_eq!(sent.len(), n);
    let sent_ids: HashSet<&str> = sent.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(sent_ids.len(), n, "execution ids must be distinct");
    let listed: Vec<&str> = items.iter().filter_map(|e| e["id"].as_str()).collect();
    let listed_ids: HashSet<&str> = listed.iter().copied().collect();
    assert_eq!(listed.len(), n);
    assert_eq!(listed_ids.len(), n, "executions listed twice: {listed:?}");
    assert_eq!(listed_ids, sent_ids, "executions listed != messages sent");
    let not_complete: Vec<&Value> = items.iter().filter(|e| e["status"] != "COMPLETE").collect();
    assert!(
        not_complete.is_empty(),
        "executions not COMPLETE: {not_complete:?}"
    );

    // The pool grew, quickly, and stayed within the cap.
    let first = obs
        .first_above_one
        .unwrap_or_else(|| panic!("the pool never grew above one worker: {obs:?}"));
    assert!(
        first <= Duration::from_secs(15),
        "the pool took {first:?} to grow above one worker: {obs:?}"
    );
    assert!(
        obs.max_viable <= cap,
        "more than {cap} viable workers at once: {obs:?}"
    );
    assert!(
        obs.max_running <= cap,
        "more than {cap} containers of the actor running at once: {obs:?}"
    );

    // Afterwards the pool shrinks to zero.
    wait_for(
        "the pool to shrink to zero workers",
        Duration::from_secs(60),
        || async { workers(&app, &aid).await.is_empty().then_some(()) },
    )
    .await;
    let shrink = finished_at.elapsed();

    println!(
        "[{mode}] burst of {n} messages (cap {cap}): sent in {sent_after:.1?}, all COMPLETE after \
         {finished_after:.1?} ({:.2} executions/s); pool > 1 after {first:.1?}, at most {} viable \
         workers ({} records) and {} running containers at once over {} samples; \
         back to zero workers {shrink:.1?} after the last execution finished",
        n as f64 / finished_after.as_secs_f64(),
        obs.max_viable,
        obs.max_records,
        obs.max_running,
        obs.samples,
    );

    // Each ran exactly once, and printed its own message.
    let mut served_by: HashMap<String, usize> = HashMap::new();
    for (text, eid) in &sent {
        let wid = check_execution(&app, &aid, text, eid).await;
        *served_by.entry(wid).or_default() += 1;
    }
    if mode == "embedded" {
        // This app's own store: the cluster-wide counters count exactly this burst.
        let counters = app
            .control
            .store
            .counters(abaco_core::metrics::EXECUTIONS)
            .await
            .expect("counters");
        let complete = &counters[&abaco_core::metrics::status_field(ExecutionStatus::Complete)];
        assert_eq!(
            complete,
            &json!(n),
            "executions that reached COMPLETE (a message run twice counts twice): {counters:?}"
        );
        assert_eq!(
            counters[abaco_core::metrics::COUNT],
            json!(n),
            "{counters:?}"
        );
    }

    assert!(
        served_by.len() > 1,
        "all executions ran on one worker: {served_by:?}"
    );

    println!(
        "[{mode}] {} distinct workers served the burst",
        served_by.len()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_200_scales_up_to_the_cap_and_back_to_zero_embedded() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscale_idle_time", "2")
        .start()
        .await
    else {
        return;
    };
    burst(app, "embedded", 200, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_40_scales_up_to_the_cap_and_back_to_zero_distributed() {
    let Some(app) = TestApp::distributed()
        .with("workers", "autoscale_idle_time", "2")
        .start()
        .await
    else {
        return;
    };
    burst(app, "distributed", 40, 4).await;
}

/// Without `max_workers` the actor is capped by `[spawner] max_workers_per_actor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_workers_per_actor_caps_actors_without_max_workers() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscale_idle_time", "2")
        .with("spawner", "max_workers_per_actor", "2")
        .start()
        .await
    else {
        return;
    };
    let aid = register(
        &app,
        json!({"image": IMAGE, "stateless": true, "default_environment": {"SLEEP_MS": "500"}}),
    )
    .await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;
    let n = 16;
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let ((sent, items), obs) = tokio::join!(
        async {
            let sent = send_burst(&app, &aid, "capped", n, 8).await;
            let items = wait_all_final(&app, &aid, n, Duration::from_secs(180)).await;
            done.store(true, Ordering::SeqCst);
            (sent, items)
        },
        observe_pool(&app, &aid, &done, start)
    );
    assert!(items.iter().all(|e| e["status"] == "COMPLETE"), "{items:?}");
    for (text, eid) in &sent {
        check_execution(&app, &aid, text, eid).await;
    }
    assert!(
        obs.max_viable <= 2 && obs.max_running <= 2,
        "[spawner] max_workers_per_actor = 2 exceeded: {obs:?}"
    );
    assert_eq!(
        obs.max_viable, 2,
        "the pool never grew to the configured cap of 2: {obs:?}"
    );
    app.stop().await;
}

// ---- 2. sync hint -------------------------------------------------------------------------------

/// After a burst an actor with the `sync` hint keeps one READY worker (while it was used within
/// `sync_max_idle_time`) while other actors scale to zero; past that window it goes to zero too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_hint_keeps_one_ready_worker_after_a_burst() {
    let sync_window = 15;
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscale_idle_time", "1")
        .with("workers", "sync_max_idle_time", &sync_window.to_string())
        .start()
        .await
    else {
        return;
    };
    let body = |hints: Value| {
        json!({"image": IMAGE, "stateless": true, "max_workers": 3, "hints": hints,
               "default_environment": {"SLEEP_MS": "500"}})
    };
    let sync_aid = register(&app, body(json!(["sync"]))).await;
    let plain_aid = register(&app, body(json!([]))).await;
    for aid in [&sync_aid, &plain_aid] {
        app.wait_actor_status(aid, "READY", Duration::from_secs(60))
            .await;
    }
    let n = 6;
    let (sync_sent, plain_sent) = tokio::join!(
        send_burst(&app, &sync_aid, "sync", n, 3),
        send_burst(&app, &plain_aid, "plain", n, 3)
    );
    let (sync_items, plain_items) = tokio::join!(
        wait_all_final(&app, &sync_aid, n, Duration::from_secs(120)),
        wait_all_final(&app, &plain_aid, n, Duration::from_secs(120))
    );
    let done = Instant::now();
    for items in [&sync_items, &plain_items] {
        assert!(items.iter().all(|e| e["status"] == "COMPLETE"), "{items:?}");
    }
    for (text, eid) in &sync_sent {
        check_execution(&app, &sync_aid, text, eid).await;
    }
    for (text, eid) in &plain_sent {
        check_execution(&app, &plain_aid, text, eid).await;
    }

    wait_for(
        "the actor without hints to scale to zero",
        Duration::from_secs(30),
        || async { workers(&app, &plain_aid).await.is_empty().then_some(()) },
    )
    .await;
    let kept = wait_for(
        "the sync actor to be down to one READY worker",
        Duration::from_secs(30),
        || async {
            let ws = workers(&app, &sync_aid).await;
            (ws.len() == 1 && ws[0]["status"] == "READY").then(|| worker_ids(&ws)[0].clone())
        },
    )
    .await;
    // Well inside the window the warm worker stays, READY.
    let hold = Duration::from_secs(sync_window - 5);
    while done.elapsed() < hold {
        let ws = workers(&app, &sync_aid).await;
        assert!(
            ws.len() == 1 && ws[0]["id"] == kept.as_str() && ws[0]["status"] == "READY",
            "the sync actor lost its warm worker {kept} {:.1?} after its last execution \
             (sync_max_idle_time = {sync_window}): {ws:?}",
            done.elapsed()
        );
        assert!(
            workers(&app, &plain_aid).await.is_empty(),
            "the actor without hints got a worker back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Unused for longer than sync_max_idle_time, it goes to zero as well.
    wait_for(
        "the sync actor to scale to zero after sync_max_idle_time",
        Duration::from_secs(sync_window + 30).saturating_sub(done.elapsed()),
        || async { workers(&app, &sync_aid).await.is_empty().then_some(()) },
    )
    .await;
    println!(
        "sync actor went to zero {:.1?} after its last execution (sync_max_idle_time = {sync_window} s)",
        done.elapsed()
    );
    app.stop().await;
}

// ---- 3. autoscaling off -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_off_keeps_one_worker_under_a_burst() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .with("workers", "autoscale_idle_time", "1")
        .start()
        .await
    else {
        return;
    };
    let aid = register(
        &app,
        json!({"image": IMAGE, "stateless": true, "max_workers": 4,
               "default_environment": {"SLEEP_MS": "300"}}),
    )
    .await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;
    let n = 10;
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let ((sent, items), obs) = tokio::join!(
        async {
            let sent = send_burst(&app, &aid, "noscale", n, 5).await;
            let items = wait_all_final(&app, &aid, n, Duration::from_secs(120)).await;
            done.store(true, Ordering::SeqCst);
            (sent, items)
        },
        observe_pool(&app, &aid, &done, start)
    );
    assert!(items.iter().all(|e| e["status"] == "COMPLETE"), "{items:?}");
    let mut served_by = HashSet::new();
    for (text, eid) in &sent {
        served_by.insert(check_execution(&app, &aid, text, eid).await);
    }
    assert!(
        obs.max_records <= 1 && obs.max_running <= 1,
        "autoscaling = false, yet the pool grew: {obs:?}"
    );
    assert_eq!(served_by.len(), 1, "{served_by:?}");
    // Nor is it scaled down: the worker stays READY past autoscale_idle_time.
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(4) {
        let ws = workers(&app, &aid).await;
        assert!(
            ws.len() == 1 && ws[0]["status"] == "READY",
            "autoscaling = false, yet the idle worker was stopped: {ws:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

// ---- 4. health replaces dead workers ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gives_a_worker_to_actors_with_queued_messages_and_replaces_dead_ones() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .with("workers", "init_count", "0")
        .health_period(Duration::from_millis(500))
        .start()
        .await
    else {
        return;
    };
    let aid = register(
        &app,
        json!({"image": IMAGE, "stateless": true, "default_environment": {"SLEEP_MS": "200"}}),
    )
    .await;
    let db = db_id(&app, &aid);
    assert!(
        workers(&app, &aid).await.is_empty(),
        "init_count = 0: no worker at registration"
    );

    // Messages queued and no worker: health gives the actor one.
    let first = run_direct(&app, &aid, "queued", 3).await;
    let ws = workers(&app, &aid).await;
    assert_eq!(ws.len(), 1, "{ws:?}");
    let w1 = worker_ids(&ws)[0].clone();
    assert_eq!(first, HashSet::from([w1.clone()]));

    // The worker dies silently: its heartbeat stops. Health removes its record.
    let started = Instant::now();
    wait_for(
        "health to remove the worker whose heartbeat stopped",
        Duration::from_secs(15),
        || async {
            let store = &app.control.store;
            let wid = WorkerId::from(w1.as_str());
            match store.worker(&db, &wid).await.expect("store") {
                None => Some(()),
                Some(_) => {
                    // Keep the heartbeat in the past (the live task could refresh it).
                    let mut patch = Map::new();
                    patch.insert(
                        "last_health_check_time".into(),
                        json!("2000-01-01T00:00:00.000Z"),
                    );
                    store.update_worker(&db, &wid, patch).await.expect("store");
                    None
                }
            }
        },
    )
    .await;
    println!(
        "health removed the dead worker {:.1?} after its heartbeat stopped",
        started.elapsed()
    );
    assert!(!worker_ids(&workers(&app, &aid).await).contains(&w1));

    // New messages get a new worker from health; the dead one runs none of them.
    let second = run_direct(&app, &aid, "after-death", 3).await;
    assert!(
        !second.contains(&w1),
        "the worker removed as dead ran executions: {second:?}"
    );
    let ws = workers(&app, &aid).await;
    let ids = worker_ids(&ws);
    assert_eq!(ids.len(), 1, "{ws:?}");
    let w2 = ids[0].clone();
    assert_ne!(w2, w1);

    // The record vanishes outright: health gives the actor another worker.
    assert!(app
        .control
        .store
        .delete_worker(&db, &WorkerId::from(w2.as_str()))
        .await
        .expect("store"));
    let third = run_direct(&app, &aid, "after-delete", 2).await;
    assert!(
        !third.contains(&w1) && !third.contains(&w2),
        "a removed worker ran executions: {third:?} (removed: {w1}, {w2})"
    );
    app.stop().await;
}

// ---- 5. orphaned containers ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_removes_orphaned_containers_of_its_host_only() {
    let Some(app) = TestApp::embedded()
        .health_period(Duration::from_millis(500))
        .start()
        .await
    else {
        return;
    };
    let create = |host: String, worker: String| {
        let runtime = app.runtime.clone();
        async move {
            let spec = ContainerSpec {
                image: IMAGE.into(),
                env: vec![("SLEEP_MS".into(), "60000".into())],
                labels: HashMap::from([
                    ("abaco.host".to_string(), host),
                    ("abaco.worker".to_string(), worker),
                ]),
                ..Default::default()
            };
            let id = runtime.create(&spec).await.expect("create container");
            let started = runtime.start(&id).await;
            (id, started)
        }
    };
    let orphan_worker = unique("orphan");
    let foreign_worker = unique("foreign");
    let foreign_host = unique("other-host-");
    let (foreign, started) = create(foreign_host, foreign_worker.clone()).await;
    started.expect("start the other host's container");
    // Health may remove the orphan between its creation and its start (it is nobody's from
    // the moment it exists), so its start may fail; either way it must be gone below.
    let _ = create(app.config.spawner.host_id.clone(), orphan_worker.clone()).await;

    let started = Instant::now();
    wait_for(
        "health to remove the orphaned container",
        Duration::from_secs(20),
        || async {
            let left = app
                .runtime
                .list(&[("abaco.worker", orphan_worker.as_str())])
                .await
                .expect("list containers");
            left.is_empty().then_some(())
        },
    )
    .await;
    println!("orphaned container removed after {:.1?}", started.elapsed());
    let foreign_left = app
        .runtime
        .list(&[("abaco.worker", foreign_worker.as_str())])
        .await
        .expect("list containers");
    let _ = app.runtime.remove(&foreign, true).await;
    assert_eq!(
        foreign_left.len(),
        1,
        "health removed a container of another host"
    );

    // The container of a live worker's execution is not an orphan.
    let aid = register(&app, json!({"image": IMAGE, "stateless": true})).await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;
    let (status, env) = app
        .call(
            app.request(
                reqwest::Method::POST,
                &format!("/actors/{aid}/messages?SLEEP_MS=4000"),
            )
            .json(&json!({"message": "long"})),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let eid = env["result"]["execution_id"].as_str().expect("eid");
    let execution = app
        .wait_execution_final(&aid, eid, Duration::from_secs(60))
        .await;
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    assert_eq!(execution["exit_code"], 0, "{execution}");
    let logs = app.logs(&aid, eid).await;
    assert!(
        logs.contains("SLEEP_END=") && !logs.contains("STOPPED="),
        "the running execution was interrupted: {logs}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_removes_stopped_containers_of_finished_executions_only() {
    let Some(app) = TestApp::embedded()
        .health_period(Duration::from_millis(500))
        .start()
        .await
    else {
        return;
    };
    let aid = register(&app, json!({"image": IMAGE})).await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;
    let eid = app.send_message(&aid, "done").await;
    let execution = app
        .wait_execution_final(&aid, &eid, Duration::from_secs(60))
        .await;
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    let worker = worker_ids(&workers(&app, &aid).await)
        .pop()
        .expect("the actor's live worker");
    // Stopped containers of a live worker that it could not remove (as when the Docker engine
    // restarts under it): one of the finished execution, one of an execution that is not over.
    let create = |execution: String| {
        let runtime = app.runtime.clone();
        let labels = HashMap::from([
            ("abaco.host".to_string(), app.config.spawner.host_id.clone()),
            ("abaco.worker".to_string(), worker.clone()),
            ("abaco.actor".to_string(), db_id(&app, &aid).0),
            ("abaco.execution".to_string(), execution),
        ]);
        async move {
            let spec = ContainerSpec {
                image: IMAGE.into(),
                labels,
                ..Default::default()
            };
            runtime.create(&spec).await.expect("create container")
        }
    };
    // The open one first: every pass that sees the finished one sees it too.
    let open = create(unique("open")).await;
    create(eid.clone()).await;
    wait_for(
        "health to remove the finished execution's container",
        Duration::from_secs(20),
        || async {
            let left = app
                .runtime
                .list(&[("abaco.execution", eid.as_str())])
                .await
                .expect("list containers");
            left.is_empty().then_some(())
        },
    )
    .await;
    let open_left = app
        .runtime
        .list(&[("abaco.worker", worker.as_str())])
        .await
        .expect("list containers");
    let _ = app.runtime.remove(&open, true).await;
    assert_eq!(
        open_left.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![open.as_str()],
        "health removed the container of an execution that is not over"
    );
    app.stop().await;
}

// ---- 6. worker_ttl ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ttl_stops_idle_workers_but_not_busy_ones() {
    let Some(app) = TestApp::embedded()
        .with("workers", "worker_ttl", "2")
        .with("workers", "autoscaling", "false")
        .health_period(Duration::from_millis(500))
        .start()
        .await
    else {
        return;
    };
    let aid = register(&app, json!({"image": IMAGE, "stateless": true})).await;
    let w1 = wait_for(
        "the first worker to be READY",
        Duration::from_secs(60),
        || async {
            let ws = workers(&app, &aid).await;
            ws.iter()
                .find(|w| w["status"] == "READY")
                .and_then(|w| w["id"].as_str().map(str::to_string))
        },
    )
    .await;
    let ready = Instant::now();
    wait_for(
        "the idle worker to be stopped after worker_ttl",
        Duration::from_secs(20),
        || async { (!worker_ids(&workers(&app, &aid).await).contains(&w1)).then_some(()) },
    )
    .await;
    println!(
        "idle worker stopped {:.1?} after it was READY (worker_ttl = 2 s)",
        ready.elapsed()
    );

    // A message brings a worker back; an execution longer than the TTL is not cut short.
    let (status, env) = app
        .call(
            app.request(
                reqwest::Method::POST,
                &format!("/actors/{aid}/messages?SLEEP_MS=4000"),
            )
            .json(&json!({"message": "longer than the ttl"})),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let eid = env["result"]["execution_id"].as_str().expect("eid");
    let execution = app
        .wait_execution_final(&aid, eid, Duration::from_secs(60))
        .await;
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    assert_eq!(execution["exit_code"], 0, "{execution}");
    let logs = app.logs(&aid, eid).await;
    assert!(
        logs.contains("SLEEP_END=") && !logs.contains("STOPPED="),
        "{logs}"
    );
    assert_ne!(execution["worker_id"], w1.as_str());
    // ... and then that worker idles out too.
    wait_for(
        "the second worker to be stopped after worker_ttl",
        Duration::from_secs(20),
        || async { workers(&app, &aid).await.is_empty().then_some(()) },
    )
    .await;
    app.stop().await;
}

// ---- 7. /metrics --------------------------------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `name{k="v",...} value` lines (comments skipped), enough for these tests.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let mut labels = BTreeMap::new();
                let mut chars = line[open + 1..].char_indices();
                let mut end = None;
                loop {
                    // key
                    let mut key = String::new();
                    let mut closed = false;
                    for (i, c) in chars.by_ref() {
                        match c {
                            '=' => break,
                            '}' => {
                                end = Some(open + 1 + i);
                                closed = true;
                                break;
                            }
                            ',' | ' ' => {}
                            c => key.push(c),
                        }
                    }
                    if closed {
                        break;
                    }
                    assert_eq!(
                        chars.next().map(|(_, c)| c),
                        Some('"'),
                        "label value must be quoted: {line}"
                    );
                    let mut value = String::new();
                    let mut escaped = false;
                    for (_, c) in chars.by_ref() {
                        match (escaped, c) {
                            (true, 'n') => {
                                value.push('\n');
                                escaped = false
                            }
                            (true, c) => {
                                value.push(c);
                                escaped = false
                            }
                            (false, '\\') => escaped = true,
                            (false, '"') => break,
                            (false, c) => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                }
                let end = end.unwrap_or_else(|| panic!("unterminated labels: {line}"));
                (&line[..open], labels, &line[end + 1..])
            }
            None => {
                let (name, rest) = line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("sample without value: {line}"));
                (name, BTreeMap::new(), rest)
            }
        };
        let raw = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("sample without value: {line}"));
        let value = match raw {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            raw => raw
                .parse()
                .unwrap_or_else(|e| panic!("bad value {raw:?} ({e}): {line}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample named `name` whose labels include `labels`.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET /metrics` with no credentials and no tenant: the content type and the parsed samples.
async fn scrape(app: &TestApp) -> (String, String, Vec<Sample>) {
    let resp = reqwest::Client::new()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics reaches the API");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.expect("metrics body");
    assert_eq!(
        status, 200,
        "GET /metrics without credentials must succeed: {status} {content_type} {body}"
    );
    let samples = parse_metrics(&body);
    (content_type, body, samples)
}

struct ExecutionMetrics {
    complete: f64,
    error: f64,
    count: f64,
    sum: f64,
    inf: f64,
}

fn execution_metrics(samples: &[Sample], body: &str) -> ExecutionMetrics {
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric(samples, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing from /metrics:\n{body}"))
    };
    let m = ExecutionMetrics {
        complete: get("abaco_executions_total", &[("status", "COMPLETE")]),
        error: get("abaco_executions_total", &[("status", "ERROR")]),
        count: get("abaco_execution_duration_seconds_count", &[]),
        sum: get("abaco_execution_duration_seconds_sum", &[]),
        inf: get("abaco_execution_duration_seconds_bucket", &[("le", "+Inf")]),
    };
    // Buckets are cumulative and end at +Inf == _count.
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == "abaco_execution_duration_seconds_bucket")
        .map(|s| {
            let le = s.labels["le"].as_str();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            (bound, s.value)
        })
        .collect();
    assert!(buckets.len() > 1, "{body}");
    for pair in buckets.windows(2) {
        assert!(
            pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1,
            "histogram buckets must be ordered and cumulative: {buckets:?}"
        );
    }
    assert_eq!(m.inf, m.count, "+Inf bucket == _count: {body}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposes_mailboxes_workers_and_executions() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = register(
        &app,
        json!({"image": IMAGE, "stateless": true, "max_workers": 1,
               "default_environment": {"SLEEP_MS": "300"}}),
    )
    .await;
    app.wait_actor_status(&aid, "READY", Duration::from_secs(60))
        .await;

    let (content_type, body, samples) = scrape(&app).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type: {content_type:?}"
    );
    for (family, kind) in [
        ("abaco_actor_mailbox_messages", "gauge"),
        ("abaco_workers", "gauge"),
        ("abaco_executions_total", "counter"),
        ("abaco_execution_duration_seconds", "histogram"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} {kind}\n")),
            "# TYPE {family} {kind} missing:\n{body}"
        );
    }
    let mailbox = metric(
        &samples,
        "abaco_actor_mailbox_messages",
        &[("actor_id", aid.as_str()), ("tenant", app.tenant.as_str())],
    )
    .unwrap_or_else(|| panic!("no mailbox gauge for {aid}:\n{body}"));
    assert_eq!(mailbox, 0.0);
    assert!(
        metric(&samples, "abaco_workers", &[("status", "READY")]).is_some_and(|v| v >= 1.0),
        "the actor's READY worker is not counted:\n{body}"
    );
    for status in ["BUSY", "REQUESTED", "SHUTDOWN_REQUESTED", "ERROR"] {
        assert!(
            metric(&samples, "abaco_workers", &[("status", status)]).is_some(),
            "abaco_workers{{status=\"{status}\"}} missing:\n{body}"
        );
    }
    assert!(
        metric(&samples, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0),
        "{body}"
    );
    let before = execution_metrics(&samples, &body);

    // Three messages to an actor with one worker: some wait in the mailbox, then all complete.
    let n = 3;
    let sleep_ms = 1500;
    let mut eids = Vec::new();
    for i in 0..n {
        let (status, env) = app
            .call(
                app.request(
                    reqwest::Method::POST,
                    &format!("/actors/{aid}/messages?SLEEP_MS={sleep_ms}"),
                )
                .json(&json!({"message": format!("metrics-{i}")})),
            )
            .await;
        assert_eq!(status, 200, "{env}");
        eids.push(
            env["result"]["execution_id"]
                .as_str()
                .expect("eid")
                .to_string(),
        );
    }
    let waiting = wait_for(
        "the mailbox gauge to show waiting messages",
        Duration::from_secs(30),
        || async {
            let (_, _, samples) = scrape(&app).await;
            metric(
                &samples,
                "abaco_actor_mailbox_messages",
                &[("actor_id", aid.as_str())],
            )
            .filter(|v| *v >= 1.0)
        },
    )
    .await;
    assert!(waiting <= n as f64, "{waiting}");
    for eid in &eids {
        let execution = app
            .wait_execution_final(&aid, eid, Duration::from_secs(90))
            .await;
        assert_eq!(execution["status"], "COMPLETE", "{execution}");
    }

    // The counters of this app's own store moved by exactly n (checked once the last execution
    // is recorded: metrics are written right after the execution's final status).
    let (_, body, samples) = wait_for(
        "abaco_executions_total to count the executions",
        Duration::from_secs(10),
        || async {
            let scraped = scrape(&app).await;
            let m = metric(
                &scraped.2,
                "abaco_executions_total",
                &[("status", "COMPLETE")],
            );
            (m >= Some(before.complete + n as f64)).then_some(scraped)
        },
    )
    .await;
    let after = execution_metrics(&samples, &body);
    assert_eq!(after.complete, before.complete + n as f64, "{body}");
    assert_eq!(after.error, before.error, "{body}");
    assert_eq!(after.count, before.count + n as f64, "{body}");
    assert!(
        after.sum - before.sum >= n as f64 * sleep_ms as f64 / 1000.0 * 0.9,
        "each execution slept {sleep_ms} ms, yet _sum grew by {}:\n{body}",
        after.sum - before.sum
    );
    let mailbox = metric(
        &samples,
        "abaco_actor_mailbox_messages",
        &[("actor_id", aid.as_str())],
    );
    assert_eq!(mailbox, Some(0.0), "{body}");
    app.stop().await;
}

/// The parser itself, on text shaped like the platform's exposition (no services needed).
#[test]
fn metrics_parser_reads_the_text_format() {
    let text = "# HELP abaco_actor_mailbox_messages Messages waiting.\n\
                # TYPE abaco_actor_mailbox_messages gauge\n\
                abaco_actor_mailbox_messages{tenant=\"T\\\"1\",actor_id=\"abc\"} 3\n\
                abaco_workers{status=\"SPAWNER SETUP\"} 0\n\
                abaco_execution_duration_seconds_bucket{le=\"0.5\"} 1\n\
                abaco_execution_duration_seconds_bucket{le=\"+Inf\"} 2\n\
                abaco_execution_duration_seconds_sum 1.25\n\
                process_resident_memory_bytes 1.2e7 1700000000000\n";
    let samples = parse_metrics(text);
    assert_eq!(samples.len(), 6, "{samples:?}");
    assert_eq!(
        metric(
            &samples,
            "abaco_actor_mailbox_messages",
            &[("tenant", "T\"1"), ("actor_id", "abc")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&samples, "abaco_workers", &[("status", "SPAWNER SETUP")]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &samples,
            "abaco_execution_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&samples, "abaco_execution_duration_seconds_sum", &[]),
        Some(1.25)
    );
    assert_eq!(
        metric(&samples, "process_resident_memory_bytes", &[]),
        Some(1.2e7)
    );
    assert_eq!(
        metric(&samples, "abaco_workers", &[("status", "READY")]),
        None
    );
}
