//! Actor lifecycle, black-box: registration fields and defaults (snake and camel case), updates
//! that keep server-managed fields, image changes and forced revisions (workers replaced, running
//! executions never abandoned), the workers routes, state, the one-execution-at-a-time rule of
//! stateful actors, the mailbox, the executions summary and deletion. The core scenarios run in
//! both modes.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::time::Duration;

use abaco_core::{ActorId, DbId, Tenant};
use abaco_tests::{wait_for, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ECHO: &str = "abaco-test/echo";
const ACTOR: &str = "abaco-test/actor";

/// Starting workers and running containers.
const READY_WITHIN: Duration = Duration::from_secs(60);
const FINISH_WITHIN: Duration = Duration::from_secs(90);

/// Every worker status string of spec §6 (note the spaces and underscores).
const WORKER_STATUSES: &[&str] = &[
    "REQUESTED",
    "SPAWNER SETUP",
    "PULLING IMAGE",
    "CREATING CONTAINER",
    "UPDATING STORE",
    "READY",
    "BUSY",
    "SHUTDOWN_REQUESTED",
    "SHUTTING_DOWN",
    "ERROR",
];

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Percent-encodes a query component.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a text message whose query parameters become environment variables of the container.
async fn send_env(app: &TestApp, aid: &str, text: &str, env: &[(&str, &str)]) -> String {
    let query: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let req = app
        .request(
            Method::POST,
            &format!("/actors/{aid}/messages?{}", query.join("&")),
        )
        .json(&json!({ "message": text }));
    let (status, body) = app.call(req).await;
    assert_eq!(status, StatusCode::OK, "send failed: {body}");
    body["result"]["execution_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no execution_id in receipt {body}"))
        .to_string()
}

async fn workers(app: &TestApp, aid: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/actors/{aid}/workers")).await;
    assert_eq!(status, StatusCode::OK, "list workers: {body}");
    body["result"]
        .as_array()
        .unwrap_or_else(|| panic!("workers result is not a list: {body}"))
        .clone()
}

async fn execution(app: &TestApp, aid: &str, eid: &str) -> Value {
    let (status, body) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
    assert_eq!(status, StatusCode::OK, "get execution: {body}");
    body["result"].clone()
}

async fn wait_execution_status(app: &TestApp, aid: &str, eid: &str, want: &str) -> Value {
    wait_for(
        &format!("execution {eid} to be {want}"),
        FINISH_WITHIN,
        || async {
            let e = execution(app, aid, eid).await;
            let status = e["status"].as_str().unwrap_or("");
            assert!(
                !(want == "RUNNING" && (status == "COMPLETE" || status == "ERROR")),
                "execution {eid} finished before it was seen RUNNING: {e}"
            );
            (status == want).then_some(e)
        },
    )
    .await
}

/// Waits until the execution is final and asserts it is `COMPLETE` with exit code 0.
async fn complete(app: &TestApp, aid: &str, eid: &str) -> Value {
    let e = app.wait_execution_final(aid, eid, FINISH_WITHIN).await;
    assert_eq!(e["status"], "COMPLETE", "{e}");
    assert_eq!(e["exit_code"], 0, "{e}");
    e
}

/// Values of the `NAME=` lines of the logs.
fn log_values(logs: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    logs.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// The `(SLEEP_START, SLEEP_END)` the test actor printed, in unix ms; each exactly once.
fn sleep_interval(logs: &str) -> (u64, u64) {
    let starts = log_values(logs, "SLEEP_START");
    let ends = log_values(logs, "SLEEP_END");
    assert_eq!(starts.len(), 1, "one SLEEP_START expected: {logs}");
    assert_eq!(ends.len(), 1, "one SLEEP_END expected: {logs}");
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bad time {s:?}"))
    };
    (parse(&starts[0]), parse(&ends[0]))
}

async fn ready_workers(app: &TestApp, aid: &str, n: usize) -> Vec<Value> {
    wait_for(
        &format!("{n} READY workers of {aid}"),
        READY_WITHIN,
        || async {
            let ws = workers(app, aid).await;
            (ws.len() == n && ws.iter().all(|w| w["status"] == "READY")).then_some(ws)
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. Registration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_round_trips_every_field_and_fills_defaults() {
    let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let target = app.register_actor(json!({"image": ECHO})).await;
    let target_id = id_of(&target);

    // Defaults of a minimal registration.
    let minimal = app.register_actor(json!({"image": ECHO})).await;
    let mid = id_of(&minimal);
    let queue = app.config.spawner.host_queues[0].clone();
    for (field, want) in [
        ("image", json!(ECHO)),
        ("status", json!("SUBMITTED")),
        ("revision", json!(1)),
        ("queue", json!(queue)),
        ("state", json!({})),
        ("mounts", json!([])),
        ("name", Value::Null),
        ("description", json!("")),
        ("stateless", json!(true)),
        ("type", json!("none")),
        ("link", json!("")),
        ("webhook", json!("")),
        ("hints", json!([])),
        ("privileged", json!(false)),
        ("max_workers", Value::Null),
        ("mem_limit", Value::Null),
        ("max_cpus", Value::Null),
        ("use_container_uid", json!(false)),
        ("default_environment", json!({})),
        ("log_ex", Value::Null),
        ("owner", json!("anonymous")),
        ("token", json!("false")),
        ("cron_on", json!(false)),
    ] {
        assert!(
            minimal.get(field).is_some(),
            "field {field} missing: {minimal}"
        );
        assert_eq!(minimal[field], want, "default of {field}: {minimal}");
    }
    for absent in ["db_id", "tenant", "api_server", "executions"] {
        assert!(minimal.get(absent).is_none(), "{absent} shown: {minimal}");
    }
    assert_ne!(minimal["create_time"], "None");
    assert_eq!(minimal["create_time"], minimal["last_update_time"]);
    let api = app.config.api_server();
    assert_eq!(
        minimal["_links"],
        json!({
            "self": format!("{api}/actors/v2/{mid}"),
            "owner": format!("{api}/profiles/v2/anonymous"),
            "executions": format!("{api}/actors/v2/{mid}/executions"),
        }),
        "{minimal}"
    );

    // Every settable field round-trips through POST and GET.
    let sent = json!({
        "name": "lifecycle-full",
        "image": ECHO,
        "description": "every field set",
        "stateless": true,
        "hints": ["alpha", "beta"],
        "default_environment": {"GREETING": "hi", "COUNT": "3"},
        "link": target_id,
        "webhook": "http://127.0.0.1:9/hook",
        "max_workers": 3,
        "mem_limit": "512m",
        "max_cpus": 1_000_000_000,
        "use_container_uid": true,
        "log_ex": 120,
        "privileged": true,
        "token": false,
    });
    let full = app.register_actor(sent.clone()).await;
    let fid = id_of(&full);
    let (status, got) = app.get(&format!("/actors/{fid}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["message"], "Actor retrieved successfully.");
    let got = got["result"].clone();
    for shown in [&full, &got] {
        for (field, want) in sent.as_object().expect("object") {
            assert_eq!(&shown[field], want, "{field} did not round-trip: {shown}");
        }
        assert_eq!(shown["status"], "SUBMITTED");
        assert_eq!(shown["revision"], 1);
        // use_container_uid: the container's own user, so no uid/gid is computed.
        assert_eq!(shown["uid"], Value::Null, "{shown}");
        assert_eq!(shown["gid"], Value::Null, "{shown}");
    }

    // GET /actors lists exactly the tenant's actors.
    let (status, list) = app.get("/actors").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["message"], "Actors retrieved successfully.");
    let mut ids: Vec<String> = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(id_of)
        .collect();
    ids.sort();
    let mut want = vec![target_id, mid, fid.clone()];
    want.sort();
    assert_eq!(ids, want, "{list}");
    let listed = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["id"] == fid.as_str())
        .expect("full actor listed")
        .clone();
    assert_eq!(listed, got, "the listing shows the same display as GET");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camel_case_mode_reads_and_writes_camel_names() {
    let Some(app) = TestApp::embedded()
        .with("web", "case", "camel")
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let actor = app
        .register_actor(json!({
            "image": ECHO,
            "defaultEnvironment": {"GREETING": "camel"},
            "maxWorkers": 2,
        }))
        .await;
    let aid = id_of(&actor);
    assert_eq!(actor["defaultEnvironment"], json!({"GREETING": "camel"}));
    assert_eq!(actor["maxWorkers"], 2);
    assert_eq!(actor["useContainerUid"], false);
    assert_eq!(actor["revision"], 1);
    assert!(actor["createTime"].is_string(), "{actor}");
    assert!(actor["lastUpdateTime"].is_string(), "{actor}");
    assert!(actor["statusMessage"].is_string(), "{actor}");
    assert!(actor["_links"]["self"].is_string(), "{actor}");
    for null_field in ["name", "memLimit", "maxCpus", "logEx", "cronSchedule"] {
        assert!(
            actor.get(null_field).is_none(),
            "null {null_field} not dropped: {actor}"
        );
    }
    for key in actor.as_object().expect("object").keys() {
        assert!(
            key.starts_with('_') || !key.contains('_'),
            "snake key {key} in a camel response: {actor}"
        );
        assert!(!actor[key].is_null(), "null {key} kept: {actor}");
    }

    // Snake names are not read in camel mode.
    let snake = app
        .register_actor(json!({"image": ECHO, "max_workers": 4, "default_environment": {"X": "1"}}))
        .await;
    assert!(snake.get("maxWorkers").is_none(), "{snake}");
    assert_eq!(snake["defaultEnvironment"], json!({}), "{snake}");

    // The message receipt and the execution are camel too.
    let (status, receipt) = app
        .post_json(
            &format!("/actors/{aid}/messages"),
            json!({"message": "hello camel"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    let receipt = &receipt["result"];
    assert!(receipt.get("execution_id").is_none(), "{receipt}");
    let eid = str_of(&receipt["executionId"]).to_string();
    assert_eq!(receipt["msg"], "hello camel");
    assert!(receipt["_links"]["self"].is_string(), "{receipt}");
    let e = app.wait_execution_final(&aid, &eid, FINISH_WITHIN).await;
    assert_eq!(e["status"], "COMPLETE", "{e}");
    assert_eq!(e["exitCode"], 0, "{e}");
    assert_eq!(e["actorId"], aid.as_str(), "{e}");
    assert!(e["workerId"].is_string(), "{e}");
    assert!(e.get("exit_code").is_none(), "{e}");
    let logs = app.logs(&aid, &eid).await;
    assert!(logs.contains("MSG=hello camel"), "{logs}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. PUT keeps server-managed fields

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_keeps_server_managed_and_unsent_fields() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let actor = app
        .register_actor(json!({
            "image": ECHO,
            "name": "keeper",
            "stateless": false,
            "description": "before",
            "hints": ["keep"],
            "default_environment": {"KEEP": "yes"},
            "webhook": "http://127.0.0.1:9/hook",
            "log_ex": 300,
        }))
        .await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    let (status, body) = app
        .call(
            app.request(Method::POST, &format!("/actors/{aid}/state"))
                .json(&json!({"counter": 41, "tags": ["x"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, before) = app.get(&format!("/actors/{aid}")).await;
    let before = before["result"].clone();
    assert_eq!(before["state"], json!({"counter": 41, "tags": ["x"]}));

    let (status, put) = app
        .put_json(
            &format!("/actors/{aid}"),
            json!({"image": ECHO, "description": "after"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["message"], "Actor updated successfully.");
    let (_, got) = app.get(&format!("/actors/{aid}")).await;
    let got = got["result"].clone();
    for shown in [&put["result"], &got] {
        assert_eq!(shown["description"], "after", "{shown}");
        for kept in [
            "state",
            "status",
            "revision",
            "create_time",
            "owner",
            "name",
            "stateless",
            "hints",
            "default_environment",
            "webhook",
            "log_ex",
            "image",
            "queue",
            "token",
        ] {
            assert_eq!(shown[kept], before[kept], "PUT changed {kept}: {shown}");
        }
        assert_eq!(shown["status"], "READY");
        assert_eq!(shown["revision"], 1);
        let (old, new) = (
            str_of(&before["last_update_time"]),
            str_of(&shown["last_update_time"]),
        );
        assert!(new > old, "last_update_time {old} -> {new}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Image change and forced revisions

async fn image_change_replaces_workers(app: TestApp) {
    let actor = app
        .register_actor(json!({"image": ECHO, "name": "img-change"}))
        .await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    let old: Vec<String> = ready_workers(&app, &aid, 1)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(workers(&app, &aid).await[0]["image"], ECHO);

    let e1 = send_env(&app, &aid, "before", &[("SLEEP_MS", "1")]).await;
    complete(&app, &aid, &e1).await;
    let logs = app.logs(&aid, &e1).await;
    assert!(logs.contains("MSG=before"), "{logs}");
    assert!(logs.contains("_abaco_actor_revision=1"), "{logs}");
    assert!(!logs.contains("SLEEP_START="), "echo image ran: {logs}");

    let (status, put) = app
        .put_json(&format!("/actors/{aid}"), json!({"image": ACTOR}))
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["result"]["revision"], 2, "{put}");
    assert_eq!(put["result"]["status"], "SUBMITTED", "{put}");
    assert_eq!(put["result"]["image"], ACTOR, "{put}");
    let (_, got) = app.get(&format!("/actors/{aid}")).await;
    assert_eq!(got["result"]["revision"], 2, "{got}");
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;

    let new = wait_for(
        "only workers of the new image",
        Duration::from_secs(30),
        || async {
            let ws = workers(&app, &aid).await;
            let done = !ws.is_empty()
                && ws
                    .iter()
                    .all(|w| w["image"] == ACTOR && w["status"] == "READY");
            done.then_some(ws)
        },
    )
    .await;
    for w in &new {
        assert!(
            !old.contains(&id_of(w)),
            "old worker {w} still listed after the image change"
        );
    }

    let e2 = send_env(&app, &aid, "after", &[("SLEEP_MS", "1")]).await;
    let done = complete(&app, &aid, &e2).await;
    let logs = app.logs(&aid, &e2).await;
    assert!(logs.contains("MSG=after"), "{logs}");
    assert_eq!(log_values(&logs, "SLEEP_START").len(), 1, "{logs}");
    assert!(logs.contains("_abaco_actor_revision=2"), "{logs}");
    assert!(
        logs.contains(&format!("_abaco_container_repo={ACTOR}")),
        "{logs}"
    );
    let wid = str_of(&done["worker_id"]).to_string();
    assert!(!old.contains(&wid), "ran on an old worker: {done}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_replaces_workers_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    image_change_replaces_workers(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_replaces_workers_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    image_change_replaces_workers(app).await;
}

async fn forced_update_keeps_running_execution(app: TestApp) {
    let actor = app.register_actor(json!({"image": ACTOR})).await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    let e1 = send_env(&app, &aid, "in flight", &[("SLEEP_MS", "4000")]).await;
    let running = wait_execution_status(&app, &aid, &e1, "RUNNING").await;
    let old_worker = str_of(&running["worker_id"]).to_string();

    let (status, put) = app
        .put_json(
            &format!("/actors/{aid}"),
            json!({"image": ACTOR, "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["result"]["revision"], 2, "{put}");
    assert_eq!(put["result"]["status"], "SUBMITTED", "{put}");

    let done = complete(&app, &aid, &e1).await;
    assert_eq!(done["worker_id"], old_worker.as_str(), "{done}");
    let logs = app.logs(&aid, &e1).await;
    sleep_interval(&logs);
    assert!(
        !logs.contains("STOPPED="),
        "the execution was stopped: {logs}"
    );

    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    wait_for(
        "the old worker to be gone and a new one READY",
        Duration::from_secs(30),
        || async {
            let ws = workers(&app, &aid).await;
            let done = !ws.is_empty()
                && ws
                    .iter()
                    .all(|w| w["id"] != old_worker.as_str() && w["status"] == "READY");
            done.then_some(())
        },
    )
    .await;

    let e2 = send_env(&app, &aid, "after", &[]).await;
    let done = complete(&app, &aid, &e2).await;
    assert_ne!(done["worker_id"], old_worker.as_str(), "{done}");
    let logs = app.logs(&aid, &e2).await;
    assert!(logs.contains("_abaco_actor_revision=2"), "{logs}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_update_keeps_running_execution_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    forced_update_keeps_running_execution(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_update_keeps_running_execution_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    forced_update_keeps_running_execution(app).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Workers routes

async fn workers_routes(app: TestApp) {
    let actor = app.register_actor(json!({"image": ACTOR})).await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    ready_workers(&app, &aid, 1).await;

    let (status, added) = app
        .post_json(&format!("/actors/{aid}/workers"), json!({"num": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(
        added["message"], "Scheduled 2 new worker(s) to start. Previously, there were 1 workers.",
        "{added}"
    );
    assert_eq!(added["result"], Value::Null);

    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ws = wait_for("3 READY workers", READY_WITHIN, || async {
        let ws = workers(&app, &aid).await;
        let mut seen = seen.lock().expect("not poisoned");
        for w in &ws {
            seen.insert(str_of(&w["status"]).to_string());
        }
        (ws.len() == 3 && ws.iter().all(|w| w["status"] == "READY")).then_some(ws)
    })
    .await;
    for s in seen.lock().expect("not poisoned").iter() {
        assert!(
            WORKER_STATUSES.contains(&s.as_str()),
            "unknown worker status {s:?}"
        );
    }

    let wid = id_of(&ws[0]);
    let (status, one) = app.get(&format!("/actors/{aid}/workers/{wid}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["message"], "Worker retrieved successfully.");
    let one = &one["result"];
    assert_eq!(one["id"], wid.as_str());
    assert_eq!(one["status"], "READY");
    assert_eq!(one["ch_name"], format!("worker_{wid}"), "{one}");
    assert_eq!(one["image"], ACTOR, "{one}");
    assert_eq!(one["host_id"], app.config.spawner.host_id.as_str(), "{one}");
    for t in ["create_time", "last_health_check_time"] {
        let v = str_of(&one[t]);
        assert!(v != "None" && !v.is_empty(), "{t}: {one}");
    }
    assert!(one.get("actor_id").is_none(), "{one}");

    let (status, deleted) = app.delete(&format!("/actors/{aid}/workers/{wid}")).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["message"], "Worker scheduled to be stopped.");
    assert_eq!(deleted["result"], Value::Null);
    wait_for(
        "the deleted worker to disappear",
        Duration::from_secs(5),
        || async {
            let listed = workers(&app, &aid)
                .await
                .iter()
                .any(|w| w["id"] == wid.as_str());
            let (status, _) = app.get(&format!("/actors/{aid}/workers/{wid}")).await;
            (!listed && status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let (status, missing) = app.get(&format!("/actors/{aid}/workers/{wid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["message"], "Worker not found.");
    assert_eq!(workers(&app, &aid).await.len(), 2);

    // A worker deleted while BUSY finishes its execution first.
    let eid = send_env(&app, &aid, "busy", &[("SLEEP_MS", "4000")]).await;
    let running = wait_execution_status(&app, &aid, &eid, "RUNNING").await;
    let busy = str_of(&running["worker_id"]).to_string();
    let (_, w) = app.get(&format!("/actors/{aid}/workers/{busy}")).await;
    assert_eq!(w["result"]["status"], "BUSY", "{w}");
    let (status, deleted) = app.delete(&format!("/actors/{aid}/workers/{busy}")).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["message"], "Worker scheduled to be stopped.");
    let (_, e) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
    assert_eq!(e["result"]["status"], "RUNNING", "abandoned: {e}");
    let done = complete(&app, &aid, &eid).await;
    assert_eq!(done["worker_id"], busy.as_str());
    let logs = app.logs(&aid, &eid).await;
    sleep_interval(&logs);
    assert!(
        !logs.contains("STOPPED="),
        "the execution was stopped: {logs}"
    );
    wait_for(
        "the busy worker to disappear after its execution",
        Duration::from_secs(10),
        || async {
            let ws = workers(&app, &aid).await;
            (ws.len() == 1 && ws[0]["id"] != busy.as_str()).then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_routes_embedded() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    workers_routes(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_routes_distributed() {
    let Some(app) = TestApp::distributed()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    workers_routes(app).await;
}

// ---------------------------------------------------------------------------------------------
// 5. State

async fn post_state(app: &TestApp, aid: &str, state: &Value) -> (StatusCode, Value) {
    app.call(
        app.request(Method::POST, &format!("/actors/{aid}/state"))
            .json(state),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_round_trips_and_reaches_the_container() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let actor = app
        .register_actor(json!({"image": ACTOR, "stateless": false}))
        .await;
    let aid = id_of(&actor);
    let (status, got) = app.get(&format!("/actors/{aid}/state")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["message"], "Actor state retrieved successfully.");
    assert_eq!(got["result"], json!({"state": {}}));

    for state in [
        json!({"a": 1, "nested": {"b": [1, 2, null]}, "s": "text"}),
        json!([1, "two", {"three": 3}]),
        json!("just a string"),
        json!(42),
    ] {
        let (status, body) = post_state(&app, &aid, &state).await;
        assert_eq!(status, StatusCode::OK, "{state}: {body}");
        assert_eq!(body["message"], "State updated successfully.");
        assert_eq!(body["result"]["id"], aid.as_str(), "actor display: {body}");
        assert_eq!(body["result"]["state"], state);
        let (_, got) = app.get(&format!("/actors/{aid}/state")).await;
        assert_eq!(got["result"]["state"], state, "{got}");
    }

    let stateless = app.register_actor(json!({"image": ACTOR})).await;
    let sid = id_of(&stateless);
    let (status, body) = post_state(&app, &sid, &json!({"a": 1})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["message"], "actor is stateless.");
    assert_eq!(body["status"], "error");

    // The container sees the state as a Python repr (keys in a stable order).
    let state = json!({"count": 3, "items": ["a", "b"], "valid": true});
    let (status, body) = post_state(&app, &aid, &state).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let eid = send_env(&app, &aid, "show state", &[]).await;
    complete(&app, &aid, &eid).await;
    let logs = app.logs(&aid, &eid).await;
    assert_eq!(
        log_values(&logs, "_abaco_actor_state"),
        vec!["{'count': 3, 'items': ['a', 'b'], 'valid': True}".to_string()],
        "{logs}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A stateful actor runs one execution at a time, even across a revision change

async fn stateful_actor_never_overlaps(app: TestApp) {
    let actor = app
        .register_actor(json!({
            "image": ACTOR,
            "stateless": false,
            "default_environment": {"SLEEP_MS": "700"},
        }))
        .await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    let mut eids = Vec::new();
    for i in 0..3 {
        eids.push(send_env(&app, &aid, &format!("m{i}"), &[]).await);
    }
    let (status, put) = app
        .put_json(
            &format!("/actors/{aid}"),
            json!({"image": ACTOR, "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["result"]["revision"], 2, "{put}");
    assert_eq!(put["result"]["stateless"], false, "{put}");
    for i in 3..6 {
        eids.push(send_env(&app, &aid, &format!("m{i}"), &[]).await);
    }

    let mut intervals = Vec::new();
    for (i, eid) in eids.iter().enumerate() {
        complete(&app, &aid, eid).await;
        let logs = app.logs(&aid, eid).await;
        assert_eq!(
            log_values(&logs, "MSG"),
            vec![format!("m{i}")],
            "{eid}: {logs}"
        );
        let (start, end) = sleep_interval(&logs);
        intervals.push((start, end, eid.clone()));
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.1 <= b.0,
            "executions {} [{}, {}] and {} [{}, {}] overlap",
            a.2,
            a.0,
            a.1,
            b.2,
            b.0,
            b.1
        );
    }

    let (status, summary) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    let summary = &summary["result"];
    assert_eq!(summary["total_executions"], 6, "{summary}");
    let listed: Vec<String> = summary["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "COMPLETE", "{e}");
            id_of(e)
        })
        .collect();
    assert_eq!(listed, eids, "each execution listed exactly once, in order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_actor_never_overlaps_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    stateful_actor_never_overlaps(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_actor_never_overlaps_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    stateful_actor_never_overlaps(app).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Mailbox count and purge

async fn mailbox_count(app: &TestApp, aid: &str) -> Value {
    let (status, body) = app.get(&format!("/actors/{aid}/messages")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "The request was successful");
    body["result"]["messages"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_counts_and_purges() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .with("workers", "init_count", "0")
        .start()
        .await
    else {
        return;
    };
    let actor = app.register_actor(json!({"image": ACTOR})).await;
    let aid = id_of(&actor);
    assert_eq!(mailbox_count(&app, &aid).await, 0);
    let (_, body) = app.get(&format!("/actors/{aid}/messages")).await;
    let api = app.config.api_server();
    assert_eq!(
        body["result"]["_links"]["self"],
        format!("{api}/actors/v2/{aid}/messages")
    );

    // A message always gets the actor a worker (spec §4.8 `ensure_one_worker`), so the only
    // worker is kept busy with a long execution while the mailbox is inspected.
    let blocker = send_env(&app, &aid, "blocker", &[("SLEEP_MS", "60000")]).await;
    wait_execution_status(&app, &aid, &blocker, "RUNNING").await;
    for i in 0..3 {
        send_env(&app, &aid, &format!("queued {i}"), &[]).await;
    }
    assert_eq!(mailbox_count(&app, &aid).await, 3);

    let (status, purged) = app.delete(&format!("/actors/{aid}/messages")).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["result"]["msg"], "Actor mailbox purged.", "{purged}");
    assert!(purged["result"]["_links"]["self"].is_string(), "{purged}");
    assert_eq!(mailbox_count(&app, &aid).await, 0);

    let (status, quit) = app
        .delete(&format!("/actors/{aid}/executions/{blocker}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{quit}");
    let e = app
        .wait_execution_final(&aid, &blocker, Duration::from_secs(30))
        .await;
    assert_eq!(e["status"], "COMPLETE", "{e}");
    assert_eq!(mailbox_count(&app, &aid).await, 0);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Executions summary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_summary_totals_and_order() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let actor = app.register_actor(json!({"image": ECHO})).await;
    let aid = id_of(&actor);
    let mut eids = Vec::new();
    for i in 0..3 {
        eids.push(app.send_message(&aid, &format!("n{i}")).await);
    }
    let mut finished = Vec::new();
    for eid in &eids {
        finished.push(complete(&app, &aid, eid).await);
    }
    let (status, summary) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(
        summary["message"],
        "Actor executions retrieved successfully."
    );
    let s = &summary["result"];
    assert_eq!(s["actor_id"], aid.as_str(), "{s}");
    assert_eq!(s["owner"], "anonymous", "{s}");
    assert_eq!(s["api_server"], app.config.api_server(), "{s}");
    assert_eq!(s["total_executions"], 3, "{s}");
    for (total, field) in [
        ("total_runtime", "runtime"),
        ("total_cpu", "cpu"),
        ("total_io", "io"),
    ] {
        let sum: i64 = finished.iter().map(|e| e[field].as_i64().unwrap()).sum();
        assert_eq!(s[total], sum, "{total}: {s}");
    }
    let items = s["executions"].as_array().expect("executions");
    let ids: Vec<String> = items.iter().map(id_of).collect();
    assert_eq!(ids, eids, "executions in the order they were received");
    for item in items {
        assert_eq!(item["status"], "COMPLETE", "{item}");
        for t in ["start_time", "finish_time", "message_received_time"] {
            assert!(item[t].is_string(), "{t}: {item}");
        }
    }
    let api = app.config.api_server();
    assert_eq!(
        s["_links"]["self"],
        format!("{api}/actors/v2/{aid}/executions"),
        "{s}"
    );
    // Paging windows the list; the totals still cover every execution.
    for (query, expected) in [
        ("limit=2", &eids[..2]),
        ("limit=2&offset=2", &eids[2..]),
        ("skip=1&limit=1", &eids[1..2]),
        ("offset=5", &eids[3..]),
        ("limit=0", &eids[..0]),
    ] {
        let (status, paged) = app.get(&format!("/actors/{aid}/executions?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {paged}");
        let ids: Vec<String> = paged["result"]["executions"]
            .as_array()
            .expect("executions")
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(ids, expected, "{query}: {paged}");
        for total in ["total_executions", "total_runtime", "total_cpu", "total_io"] {
            assert_eq!(paged["result"][total], s[total], "{query} {total}: {paged}");
        }
    }
    for query in ["limit=-1", "offset=x", "skip=1.5"] {
        let (status, body) = app.get(&format!("/actors/{aid}/executions?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("non-negative integer"),
            "{query}: {body}"
        );
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Deleting an actor

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_actor_stops_workers_and_hides_everything() {
    let Some(app) = TestApp::embedded()
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let actor = app.register_actor(json!({"image": ACTOR})).await;
    let aid = id_of(&actor);
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    let (status, added) = app
        .post_json(&format!("/actors/{aid}/workers"), json!({"num": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    ready_workers(&app, &aid, 2).await;
    let eid = app.send_message(&aid, "before delete").await;
    complete(&app, &aid, &eid).await;

    let (status, deleted) = app.delete(&format!("/actors/{aid}")).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert!(
        str_of(&deleted["message"]).starts_with("Actor deleted successfully"),
        "{deleted}"
    );
    assert_eq!(deleted["result"], Value::Null);

    let db_id = DbId::new(&Tenant(app.tenant.clone()), &ActorId::from(aid.as_str()));
    wait_for(
        "the actor's workers to stop",
        Duration::from_secs(20),
        || async {
            let left = app
                .control
                .store
                .workers_of(&db_id)
                .await
                .expect("store reachable");
            left.is_empty().then_some(())
        },
    )
    .await;

    let (status, body) = app.get(&format!("/actors/{aid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["message"], format!("No actor found with id: {aid}."));
    for path in [
        format!("/actors/{aid}/executions"),
        format!("/actors/{aid}/executions/{eid}"),
        format!("/actors/{aid}/executions/{eid}/logs"),
        format!("/actors/{aid}/workers"),
        format!("/actors/{aid}/messages"),
        format!("/actors/{aid}/state"),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, list) = app.get("/actors").await;
    assert_eq!(list["result"], json!([]), "{list}");
    app.stop().await;
}
