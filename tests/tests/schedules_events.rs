//! Cron schedules and events, black-box (spec §7.6–§7.8): schedule validation on POST and PUT,
//! firing once per due slot (and once, not once per missed slot, after downtime), switching a
//! schedule off, events delivered to a linked actor (by id or alias) and to webhooks (with the
//! failure record after the retries), and link cycle detection. Firing and links run in both
//! modes. Store edits stand in for "the platform was down for hours". One file over ~600 lines
//! on purpose: the areas share the helpers and the small in-test webhook receiver below.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abaco_core::cron::{display_next, parse_next, this_hour};
use abaco_core::time::{now, Timestamp};
use abaco_core::{ActorId, DbId, Tenant};
use abaco_store::Kind;
use abaco_tests::{unique, wait_for, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ECHO: &str = "abaco-test/echo";
const ACTOR: &str = "abaco-test/actor";
const CRON_MSG: &str = "This is your cron execution";
const HOUR: Duration = Duration::from_secs(3600);
/// A due schedule fires on the next pass of the 5 s cron loop.
const FIRE_WITHIN: Duration = Duration::from_secs(15);
/// How long a count must stay put to count as "no further firing" (two cron passes and more).
const QUIET_FOR: Duration = Duration::from_secs(12);
/// Starting a worker and running one container (2 shared cores, parallel tests).
const RUN_WITHIN: Duration = Duration::from_secs(90);

// ---- helpers ------------------------------------------------------------------------------------

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn db_id(app: &TestApp, aid: &str) -> DbId {
    DbId::new(&Tenant(app.tenant.clone()), &ActorId::from(aid))
}

/// `base` moved by `hours` hours, as the platform displays `cron_next_ex`.
fn hour_text(base: Timestamp, hours: i32) -> String {
    let step = HOUR * hours.unsigned_abs();
    let t = if hours >= 0 { base + step } else { base - step };
    display_next(t)
}

fn assert_error(status: StatusCode, env: &Value, want_status: u16, message: &str, what: &str) {
    assert_eq!(status.as_u16(), want_status, "{what}: {env}");
    assert_eq!(env["status"], "error", "{what}: {env}");
    assert_eq!(env["message"], message, "{what}: {env}");
}

/// Full execution records of an actor whose `executor` is `executor`.
async fn executions_by(app: &TestApp, aid: &str, executor: &str) -> Vec<Value> {
    let (status, env) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, StatusCode::OK, "executions summary: {env}");
    let mut out = Vec::new();
    for item in env["result"]["executions"].as_array().into_iter().flatten() {
        let eid = item["id"].as_str().unwrap_or_default();
        let (status, one) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
        assert_eq!(status, StatusCode::OK, "execution {eid}: {one}");
        if one["result"]["executor"] == executor {
            out.push(one["result"].clone());
        }
    }
    out
}

/// Checks `check` every half second for `period`; panics at the first violation.
async fn hold<F, Fut>(what: &str, period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + period;
    loop {
        if let Err(why) = check().await {
            panic!("{what}: {why}");
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for exactly `n` cron executions of `aid` and returns them.
async fn wait_cron_executions(app: &TestApp, aid: &str, n: usize, within: Duration) -> Vec<Value> {
    let what = format!("{n} cron execution(s) of {aid}");
    wait_for(&what, within, || async move {
        let seen = executions_by(app, aid, "cron").await;
        assert!(seen.len() <= n, "more than {n} cron executions: {seen:?}");
        (seen.len() == n).then_some(seen)
    })
    .await
}

/// Asserts for `QUIET_FOR` that `aid` keeps exactly `n` cron executions, unless the UTC hour
/// turned since `hour0` (then one more firing per new hour is legitimate).
async fn hold_cron_count(app: &TestApp, aid: &str, n: usize, hour0: Timestamp) {
    hold(
        &format!("cron executions of {aid} stay at {n}"),
        QUIET_FOR,
        || async move {
            let count = executions_by(app, aid, "cron").await.len();
            let extra_hours = (this_hour(now()) - hour0).num_hours().max(0) as usize;
            if count == n || (extra_hours > 0 && count <= n + extra_hours) {
                Ok(())
            } else {
                Err(format!("{count} cron executions"))
            }
        },
    )
    .await;
}

async fn actor_display(app: &TestApp, aid: &str) -> Value {
    let (status, env) = app.get(&format!("/actors/{aid}")).await;
    assert_eq!(status, StatusCode::OK, "get actor: {env}");
    env["result"].clone()
}

/// Overwrites the stored `cron_next_ex` (as if the platform had been down since then). Callers
/// make sure nothing else writes the actor meanwhile (no worker starting, cron off or not due).
async fn set_next_ex(app: &TestApp, aid: &str, next_ex: &str) {
    let store = &app.control.store;
    let mut actor = store
        .actor(&db_id(app, aid))
        .await
        .expect("store reads")
        .expect("actor in store");
    actor.cron_next_ex = Some(next_ex.to_string());
    store.put_actor(&actor).await.expect("store writes");
}

/// Waits for a finished execution of `aid` by `Abaco Event` whose logs contain every needle;
/// returns the execution and its logs.
async fn wait_event_execution(app: &TestApp, aid: &str, needles: &[&str]) -> (Value, String) {
    wait_for(
        &format!("an Abaco Event execution of {aid} logging {needles:?}"),
        RUN_WITHIN,
        || async {
            for exec in executions_by(app, aid, "Abaco Event").await {
                if exec["status"] != "COMPLETE" && exec["status"] != "ERROR" {
                    continue;
                }
                let logs = app.logs(aid, exec["id"].as_str().unwrap_or_default()).await;
                if needles.iter().all(|n| logs.contains(n)) {
                    return Some((exec, logs));
                }
            }
            None
        },
    )
    .await
}

async fn send_with_env(app: &TestApp, aid: &str, text: &str, query: &str) -> String {
    let req = app
        .request(Method::POST, &format!("/actors/{aid}/messages?{query}"))
        .json(&json!({ "message": text }));
    let (status, env) = app.call(req).await;
    assert_eq!(status, StatusCode::OK, "send failed: {env}");
    env["result"]["execution_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no execution_id in {env}"))
        .to_string()
}

/// Cleanup for the shared distributed store (so no scheduled actor outlives its test). Best
/// effort: a failed DELETE is retried and printed, not failed on — in distributed mode it can
/// answer 500 when its fresh AMQP channel reports the close of an earlier throwaway channel (a
/// NOT_FOUND about another actor's mailbox), which is not what these tests are about.
async fn delete_actors(app: &TestApp, ids: &[&str]) {
    for aid in ids {
        for attempt in 1..=3 {
            let (status, env) = app.delete(&format!("/actors/{aid}")).await;
            if status == StatusCode::OK {
                break;
            }
            eprintln!("cleanup: DELETE /actors/{aid} attempt {attempt}: {status} {env}");
        }
    }
}

// ---- a tiny webhook receiver --------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `status`, keeping the requests.
struct Hook {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start(status: u16) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hook");
        let port = listener.local_addr().expect("hook addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_hook(socket, status, sink.clone()));
            }
        });
        Hook {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
            task,
        }
    }

    fn bodies(&self) -> Vec<Received> {
        self.received.lock().expect("hook lock").clone()
    }

    fn of_type(&self, event_type: &str) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .filter(|r| r.body["event_type"] == event_type)
            .map(|r| r.body)
            .collect()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves keep-alive requests on one connection until the client closes it.
async fn serve_hook(mut socket: TcpStream, status: u16, sink: Arc<Mutex<Vec<Received>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let path = request_line.next().unwrap_or_default().to_string();
        let mut length = 0usize;
        let mut content_type = String::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + length {
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + length])
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&buf[head_end..]).into()));
        buf.drain(..head_end + length);
        sink.lock().expect("hook lock").push(Received {
            method,
            path,
            content_type,
            body,
        });
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if socket.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---- 1. validation ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedules_are_validated_on_post_and_put() {
    let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .start()
        .await
    else {
        return;
    };
    let hour0 = this_hour(now());
    let past_hour = format!("{} + 1 hour", hour_text(hour0, -1));
    let bad: Vec<(String, String)> = vec![
        (
            "2030-06-26 16 1 hour".into(),
            "The cron is not in the correct format".into(),
        ),
        (
            "now+1 hour".into(),
            "The cron is not in the correct format".into(),
        ),
        (
            "now + 1".into(),
            "The cron is not in the correct format".into(),
        ),
        (
            "now + 1 hour extra".into(),
            "The cron is not in the correct format".into(),
        ),
        (
            "2030-06 16 + 1 hour".into(),
            "The starting date 2030-06 16 is not in the correct format".into(),
        ),
        (
            "2030-13-01 10 + 1 hour".into(),
            "The starting date 2030-13-01 10 is not in the correct format".into(),
        ),
        (
            "2030-06-26 24 + 1 hour".into(),
            "The starting date 2030-06-26 24 is not in the correct format".into(),
        ),
        (
            "tomorrow + 1 hour".into(),
            "The starting date tomorrow is not in the correct format".into(),
        ),
        (
            "now + 1 fortnight".into(),
            "fortnight is an invalid unit of time".into(),
        ),
        (
            "now + 2 minutes".into(),
            "minutes is an invalid unit of time".into(),
        ),
        (
            "now + 0 hours".into(),
            "The increment must be a positive whole number, got \"0\"".into(),
        ),
        (
            "now + -1 hours".into(),
            "The increment must be a positive whole number, got \"-1\"".into(),
        ),
        (
            "now + 1.5 hours".into(),
            "The increment must be a positive whole number, got \"1.5\"".into(),
        ),
    ];
    let old_prefix = "The starting datetime is old. The current UTC time is ";
    let old_ok = |message: &str| {
        let rest = message.strip_prefix(old_prefix).unwrap_or("");
        let h = this_hour(now());
        rest == hour0.format("%Y-%m-%d %H:00:00").to_string()
            || rest == h.format("%Y-%m-%d %H:00:00").to_string()
    };

    // POST: every bad schedule is a 400 with cron.rs's message, and nothing is registered.
    for (schedule, message) in &bad {
        let (s, env) = app
            .post_json("/actors", json!({"image": ECHO, "cron_schedule": schedule}))
            .await;
        assert_error(s, &env, 400, message, &format!("POST {schedule:?}"));
    }
    for schedule in ["2020-01-01 01 + 1 hour", past_hour.as_str()] {
        let (s, env) = app
            .post_json("/actors", json!({"image": ECHO, "cron_schedule": schedule}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "POST {schedule:?}: {env}");
        let message = env["message"].as_str().unwrap_or_default();
        assert!(old_ok(message), "POST {schedule:?}: {env}");
    }
    let (_, list) = app.get("/actors").await;
    assert_eq!(list["result"], json!([]), "refused actors were registered");

    // POST: a valid `now` schedule.
    let actor = app
        .register_actor(json!({"image": ECHO, "cron_schedule": "now + 1 hour"}))
        .await;
    assert_eq!(actor["cron_on"], true, "{actor}");
    assert_eq!(actor["cron_schedule"], "now + 1 hour", "{actor}");
    let hours = [display_next(hour0), display_next(this_hour(now()))];
    assert!(
        hours.iter().any(|h| actor["cron_next_ex"] == h.as_str()),
        "cron_next_ex {} is not the current UTC hour {hours:?}",
        actor["cron_next_ex"]
    );
    let aid = id_of(&actor);
    let shown = actor_display(&app, &aid).await;
    assert_eq!(shown["cron_schedule"], "now + 1 hour", "{shown}");
    assert_eq!(shown["cron_on"], true, "{shown}");

    // POST: an explicit future start (zero-padded, capitalised unit) is kept as that hour.
    let start = this_hour(now()) + HOUR * 2;
    let padded = format!("{} + 3 Months", start.format("%Y-%m-%d %H"));
    let future = app
        .register_actor(json!({"image": ECHO, "cron_schedule": padded}))
        .await;
    assert_eq!(future["cron_on"], true, "{future}");
    assert_eq!(future["cron_schedule"], padded.as_str(), "{future}");
    let next = future["cron_next_ex"].as_str().unwrap_or_default();
    assert_eq!(parse_next(next), Some(start), "{future}");
    // `cron_on: false` on POST registers the schedule switched off.
    let off = app
        .register_actor(json!({"image": ECHO, "cron_schedule": "now + 2 days", "cron_on": false}))
        .await;
    assert_eq!(off["cron_on"], false, "{off}");
    assert_eq!(off["cron_schedule"], "now + 2 days", "{off}");

    // PUT: the same validation; a refused update changes nothing.
    let plain = app.register_actor(json!({"image": ECHO})).await;
    let pid = id_of(&plain);
    assert_eq!(plain["cron_on"], false, "{plain}");
    assert_eq!(plain["cron_schedule"], Value::Null, "{plain}");
    for (schedule, message) in &bad {
        let (s, env) = app
            .put_json(
                &format!("/actors/{pid}"),
                json!({"image": ECHO, "cron_schedule": schedule}),
            )
            .await;
        assert_error(s, &env, 400, message, &format!("PUT {schedule:?}"));
    }
    for schedule in ["2020-01-01 01 + 1 hour", past_hour.as_str()] {
        let (s, env) = app
            .put_json(
                &format!("/actors/{pid}"),
                json!({"image": ECHO, "cron_schedule": schedule}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "PUT {schedule:?}: {env}");
        assert!(
            old_ok(env["message"].as_str().unwrap_or_default()),
            "PUT {schedule:?}: {env}"
        );
    }
    let shown = actor_display(&app, &pid).await;
    assert_eq!(shown["cron_on"], false, "{shown}");
    assert_eq!(shown["cron_schedule"], Value::Null, "{shown}");
    assert_eq!(shown["cron_next_ex"], Value::Null, "{shown}");

    // PUT: `cron_on: true` without any schedule cannot switch cron on.
    let (s, env) = app
        .put_json(
            &format!("/actors/{pid}"),
            json!({"image": ECHO, "cron_on": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{env}");
    assert_eq!(env["result"]["cron_on"], false, "{env}");

    // PUT: a valid schedule.
    let (s, env) = app
        .put_json(
            &format!("/actors/{pid}"),
            json!({"image": ECHO, "cron_schedule": "now + 1 hour", "cron_on": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{env}");
    let put = &env["result"];
    assert_eq!(put["cron_on"], true, "{put}");
    assert_eq!(put["cron_schedule"], "now + 1 hour", "{put}");
    let hours = [display_next(hour0), display_next(this_hour(now()))];
    assert!(
        hours.iter().any(|h| put["cron_next_ex"] == h.as_str()),
        "{put}"
    );
    app.stop().await;
}

// ---- 2. firing ----------------------------------------------------------------------------------

async fn cron_fires_once_per_due_slot(app: TestApp) {
    let hour0 = this_hour(now());
    let actor = app
        .register_actor(json!({"image": ACTOR, "cron_schedule": "now + 1 hour"}))
        .await;
    let aid = id_of(&actor);
    assert_eq!(
        actor["cron_next_ex"],
        display_next(hour0).as_str(),
        "{actor}"
    );

    // Due at once: one cron execution within a cron pass or two.
    let fired = wait_cron_executions(&app, &aid, 1, FIRE_WITHIN).await;
    let eid = id_of(&fired[0]);
    let exec = app.wait_execution_final(&aid, &eid, RUN_WITHIN).await;
    assert_eq!(exec["status"], "COMPLETE", "{exec}");
    assert_eq!(exec["executor"], "cron", "{exec}");
    let logs = app.logs(&aid, &eid).await;
    assert!(logs.contains(&format!("MSG={CRON_MSG}\n")), "{logs}");
    assert!(logs.contains("_abaco_Content_Type=str\n"), "{logs}");
    assert!(
        logs.contains(&format!("_abaco_execution_id={eid}\n")),
        "{logs}"
    );

    // The slot is spent: no second firing within the same hour.
    hold_cron_count(&app, &aid, 1, hour0).await;
    let shown = actor_display(&app, &aid).await;
    let now_hour = this_hour(now());
    assert_eq!(
        shown["cron_next_ex"],
        hour_text(now_hour, 1).as_str(),
        "cron_next_ex must advance to the next hour: {shown}"
    );
    assert_eq!(shown["cron_on"], true, "{shown}");
    assert_eq!(shown["cron_schedule"], "now + 1 hour", "{shown}");
    delete_actors(&app, &[&aid]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_fires_once_per_due_slot_embedded() {
    // No worker at registration: the cron firing must bring one up itself.
    if let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .start()
        .await
    {
        cron_fires_once_per_due_slot(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_fires_once_per_due_slot_distributed() {
    if let Some(app) = TestApp::distributed()
        .with("workers", "init_count", "0")
        .start()
        .await
    {
        cron_fires_once_per_due_slot(app).await;
    }
}

// ---- 3. catch-up after downtime -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_catches_up_once_after_downtime() {
    let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .start()
        .await
    else {
        return;
    };
    let hour0 = this_hour(now());
    // Schedules starting next hour: not due, so nothing fires until the store says otherwise.
    let start = hour_text(hour0, 1);
    let hourly = app
        .register_actor(json!({"image": ACTOR, "cron_schedule": format!("{start} + 1 hour")}))
        .await;
    let every3 = app
        .register_actor(json!({"image": ACTOR, "cron_schedule": format!("{start} + 3 hours")}))
        .await;
    let (hid, tid) = (id_of(&hourly), id_of(&every3));
    for actor in [&hourly, &every3] {
        assert_eq!(actor["cron_on"], true, "{actor}");
        assert_eq!(actor["cron_next_ex"], start.as_str(), "{actor}");
    }
    hold_cron_count(&app, &hid, 0, hour0).await;

    // "Down" for five hours: the due slot is five hours old.
    let five_ago = hour_text(hour0, -5);
    set_next_ex(&app, &hid, &five_ago).await;
    set_next_ex(&app, &tid, &five_ago).await;

    // One execution each, not one per missed slot.
    for aid in [&hid, &tid] {
        let fired = wait_cron_executions(&app, aid, 1, FIRE_WITHIN).await;
        assert_eq!(fired[0]["executor"], "cron", "{}", fired[0]);
    }
    hold("catch-up fires once", QUIET_FOR, || async {
        let extra = (this_hour(now()) - hour0).num_hours().max(0) as usize;
        for aid in [&hid, &tid] {
            let count = executions_by(&app, aid, "cron").await.len();
            if count != 1 && !(extra > 0 && count <= 1 + extra) {
                return Err(format!("{aid} has {count} cron executions"));
            }
        }
        Ok(())
    })
    .await;

    // The next time is the first slot after now, aligned on the schedule: for every 3 hours
    // from five hours ago that is (hour0 - 5) + 6 = hour0 + 1 as well.
    let now_hour = this_hour(now());
    let shown = actor_display(&app, &hid).await;
    assert_eq!(
        shown["cron_next_ex"],
        hour_text(now_hour, 1).as_str(),
        "hourly: {shown}"
    );
    let shown = actor_display(&app, &tid).await;
    if now_hour == hour0 {
        assert_eq!(
            shown["cron_next_ex"],
            hour_text(hour0, 1).as_str(),
            "every 3 hours: {shown}"
        );
    }
    let next = parse_next(shown["cron_next_ex"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("unparsable cron_next_ex: {shown}"));
    assert!(next > now(), "cron_next_ex must be in the future: {shown}");

    // The catch-up execution runs like any other cron execution.
    let fired = executions_by(&app, &hid, "cron").await;
    let eid = id_of(&fired[0]);
    let exec = app.wait_execution_final(&hid, &eid, RUN_WITHIN).await;
    assert_eq!(exec["status"], "COMPLETE", "{exec}");
    let logs = app.logs(&hid, &eid).await;
    assert!(logs.contains(&format!("MSG={CRON_MSG}\n")), "{logs}");
    app.stop().await;
}

// ---- 4. switching cron off ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_off_stops_firing() {
    let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .start()
        .await
    else {
        return;
    };
    let hour0 = this_hour(now());
    let actor = app
        .register_actor(json!({"image": ACTOR, "cron_schedule": "now + 1 hour"}))
        .await;
    let aid = id_of(&actor);
    let fired = wait_cron_executions(&app, &aid, 1, FIRE_WITHIN).await;
    let eid = id_of(&fired[0]);
    app.wait_execution_final(&aid, &eid, RUN_WITHIN).await;
    // Quiescent from here on: the worker is up and idle, so the store edit below races nothing.
    app.wait_actor_status(&aid, "READY", RUN_WITHIN).await;

    let (s, env) = app
        .put_json(
            &format!("/actors/{aid}"),
            json!({"image": ACTOR, "cron_on": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{env}");
    assert_eq!(env["result"]["cron_on"], false, "{env}");
    assert_eq!(env["result"]["cron_schedule"], "now + 1 hour", "{env}");
    let shown = actor_display(&app, &aid).await;
    assert_eq!(shown["cron_on"], false, "{shown}");

    // Due again (an hour ago), but switched off: nothing fires.
    set_next_ex(&app, &aid, &hour_text(hour0, -1)).await;
    hold("cron off: no new cron execution", QUIET_FOR, || async {
        let count = executions_by(&app, &aid, "cron").await.len();
        (count == 1)
            .then_some(())
            .ok_or_else(|| format!("{count} cron executions"))
    })
    .await;

    // Switched back on, the overdue slot fires once again.
    let (s, env) = app
        .put_json(
            &format!("/actors/{aid}"),
            json!({"image": ACTOR, "cron_on": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{env}");
    assert_eq!(env["result"]["cron_on"], true, "{env}");
    let fired = wait_cron_executions(&app, &aid, 2, FIRE_WITHIN).await;
    for exec in &fired {
        assert_eq!(exec["executor"], "cron", "{exec}");
    }
    app.stop().await;
}

// ---- 5. links -----------------------------------------------------------------------------------

async fn links_deliver_events(app: TestApp) {
    let b = app.register_actor(json!({"image": ACTOR})).await;
    let bid = id_of(&b);
    let b_db = db_id(&app, &bid);
    let a = app
        .register_actor(json!({"image": ECHO, "link": bid.clone()}))
        .await;
    let aid = id_of(&a);
    assert_eq!(a["link"], bid.as_str(), "{a}");

    // A's worker comes up: B gets ACTOR_READY as a JSON message.
    let ready = [
        "'event_type': 'ACTOR_READY'".to_string(),
        format!("'actor_id': '{aid}'"),
        format!("'_abaco_link': '{b_db}'"),
    ];
    let needles: Vec<&str> = ready.iter().map(String::as_str).collect();
    let (exec, logs) = wait_event_execution(&app, &bid, &needles).await;
    assert_eq!(exec["executor"], "Abaco Event", "{exec}");
    assert_eq!(exec["status"], "COMPLETE", "{exec}");
    assert!(logs.contains("MSG={'"), "MSG is not a dict repr: {logs}");
    assert!(
        logs.contains("_abaco_Content_Type=application/json\n"),
        "{logs}"
    );
    assert!(logs.contains("_abaco_username=Abaco Event\n"), "{logs}");
    assert!(
        logs.contains(&format!("'tenant_id': '{}'", app.tenant)),
        "{logs}"
    );

    // A message to A completes: B gets EXECUTION_COMPLETE naming A's execution.
    let a_eid = app.send_message(&aid, "hello link").await;
    let done = app.wait_execution_final(&aid, &a_eid, RUN_WITHIN).await;
    assert_eq!(done["status"], "COMPLETE", "{done}");
    let complete = [
        "'event_type': 'EXECUTION_COMPLETE'".to_string(),
        format!("'execution_id': '{a_eid}'"),
        format!("'actor_id': '{aid}'"),
        "'exit_code': 0".to_string(),
    ];
    let needles: Vec<&str> = complete.iter().map(String::as_str).collect();
    let (exec, logs) = wait_event_execution(&app, &bid, &needles).await;
    assert_eq!(exec["executor"], "Abaco Event", "{exec}");
    assert!(
        logs.contains("_abaco_Content_Type=application/json\n"),
        "{logs}"
    );

    // B has no link or webhook of its own, and its event executions produce no further events.
    let events = executions_by(&app, &bid, "Abaco Event").await;
    assert_eq!(events.len(), 2, "{events:?}");
    delete_actors(&app, &[&aid, &bid]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_deliver_events_embedded() {
    if let Some(app) = TestApp::embedded().start().await {
        links_deliver_events(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_deliver_events_distributed() {
    if let Some(app) = TestApp::distributed().start().await {
        links_deliver_events(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_to_an_alias_delivers_events() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let b = app.register_actor(json!({"image": ACTOR})).await;
    let bid = id_of(&b);
    let alias = unique("linked-");
    let (s, env) = app
        .post_json(
            "/actors/aliases",
            json!({"alias": alias, "actor_id": bid.clone()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "alias: {env}");
    let a = app
        .register_actor(json!({"image": ECHO, "link": alias.clone()}))
        .await;
    let aid = id_of(&a);
    assert_eq!(a["link"], alias.as_str(), "the link is kept as given: {a}");
    let needles = [
        "'event_type': 'ACTOR_READY'".to_string(),
        format!("'actor_id': '{aid}'"),
        format!("'_abaco_link': '{}'", db_id(&app, &bid)),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    let (exec, logs) = wait_event_execution(&app, &bid, &needles).await;
    assert_eq!(exec["executor"], "Abaco Event", "{exec}");
    assert!(
        logs.contains("_abaco_Content_Type=application/json\n"),
        "{logs}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_validation_and_cycles() {
    let Some(app) = TestApp::embedded()
        .with("workers", "init_count", "0")
        .start()
        .await
    else {
        return;
    };
    let unresolvable = "Invalid link parameter; unable to retrieve linked actor data. The link must be a valid actor id or alias for which you have EXECUTE permission. ";
    let self_link = "Invalid link parameter. An actor cannot link to itself.";
    let cycle = "Error: this update would result in a cycle of linked actors.";

    let (s, env) = app
        .post_json("/actors", json!({"image": ECHO, "link": "no-such-actor"}))
        .await;
    assert_error(s, &env, 400, unresolvable, "POST link to nothing");

    let b = id_of(&app.register_actor(json!({"image": ECHO})).await);
    let a = id_of(
        &app.register_actor(json!({"image": ECHO, "link": b.clone()}))
            .await,
    );
    let b_alias = unique("cyc-");
    let (s, env) = app
        .post_json(
            "/actors/aliases",
            json!({"alias": b_alias, "actor_id": b.clone()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "alias: {env}");
    let app_ref = &app;
    let put_link = move |target: String, link: String| {
        let app = app_ref;
        async move {
            app.put_json(
                &format!("/actors/{target}"),
                json!({"image": ECHO, "link": link}),
            )
            .await
        }
    };

    // Two-actor cycle, self links (by id and by alias), and an unknown link on PUT.
    let (s, env) = put_link(b.clone(), a.clone()).await;
    assert_error(s, &env, 400, cycle, "PUT B -> A with A -> B");
    let (s, env) = put_link(b.clone(), b.clone()).await;
    assert_error(s, &env, 400, self_link, "PUT B -> B");
    let (s, env) = put_link(b.clone(), b_alias.clone()).await;
    assert_error(s, &env, 400, self_link, "PUT B -> alias of B");
    let (s, env) = put_link(b.clone(), "no-such-actor".into()).await;
    assert_error(s, &env, 400, unresolvable, "PUT B -> nothing");
    assert_eq!(actor_display(&app, &b).await["link"], "", "B unchanged");

    // Longer cycle: C -> A -> B, then B -> C closes it; also through an alias of C.
    let c = id_of(
        &app.register_actor(json!({"image": ECHO, "link": a.clone()}))
            .await,
    );
    let (s, env) = put_link(b.clone(), c.clone()).await;
    assert_error(s, &env, 400, cycle, "PUT B -> C with C -> A -> B");
    let c_alias = unique("cyc-");
    let (s, env) = app
        .post_json(
            "/actors/aliases",
            json!({"alias": c_alias, "actor_id": c.clone()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "alias: {env}");
    let (s, env) = put_link(b.clone(), c_alias.clone()).await;
    assert_error(s, &env, 400, cycle, "PUT B -> alias of C");

    // Acyclic updates are accepted: B -> D (D unlinked), and A re-linked to B unchanged.
    let d = id_of(&app.register_actor(json!({"image": ECHO})).await);
    let (s, env) = put_link(b.clone(), d.clone()).await;
    assert_eq!(s, StatusCode::OK, "PUT B -> D: {env}");
    assert_eq!(env["result"]["link"], d.as_str(), "{env}");
    let (s, env) = put_link(a.clone(), b.clone()).await;
    assert_eq!(s, StatusCode::OK, "PUT A -> B again: {env}");
    // Now D -> C would close D -> C -> A -> B -> D.
    let (s, env) = put_link(d.clone(), c.clone()).await;
    assert_error(s, &env, 400, cycle, "PUT D -> C closing a four-cycle");
    // Unlinking with an empty link is always allowed.
    let (s, env) = put_link(b.clone(), String::new()).await;
    assert_eq!(s, StatusCode::OK, "unlink B: {env}");
    assert_eq!(env["result"]["link"], "", "{env}");
    let (s, env) = put_link(d.clone(), c.clone()).await;
    assert_eq!(s, StatusCode::OK, "D -> C once B is unlinked: {env}");
    app.stop().await;
}

// ---- 6. webhooks --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receive_actor_and_execution_events() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let hook = Hook::start(200).await;
    let actor = app
        .register_actor(json!({"image": ACTOR, "webhook": hook.url}))
        .await;
    let aid = id_of(&actor);
    assert_eq!(actor["webhook"], hook.url.as_str(), "{actor}");

    let ready = wait_for("ACTOR_READY at the webhook", RUN_WITHIN, || async {
        hook.of_type("ACTOR_READY").into_iter().next()
    })
    .await;
    assert_eq!(ready["actor_id"], aid.as_str(), "{ready}");
    assert_eq!(ready["actor_dbid"], db_id(&app, &aid).as_str(), "{ready}");
    assert_eq!(ready["tenant_id"], app.tenant.as_str(), "{ready}");
    assert_eq!(ready["_abaco_webhook"], hook.url.as_str(), "{ready}");
    assert_eq!(ready["_abaco_link"], "", "{ready}");
    assert_eq!(ready["_abaco_username"], "Abaco Event", "{ready}");
    assert!(ready["event_time_utc"].is_string(), "{ready}");
    let request = hook.bodies()[0].clone();
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(request.path, "/hook", "{request:?}");
    assert!(
        request.content_type.starts_with("application/json"),
        "{request:?}"
    );

    // A message that exits 3: the event carries the execution and its exit code.
    let eid = send_with_env(&app, &aid, "hello hook", "EXIT_CODE=3").await;
    let exec = app.wait_execution_final(&aid, &eid, RUN_WITHIN).await;
    assert_eq!(exec["exit_code"], 3, "{exec}");
    let complete = wait_for("EXECUTION_COMPLETE at the webhook", RUN_WITHIN, || async {
        hook.of_type("EXECUTION_COMPLETE").into_iter().next()
    })
    .await;
    assert_eq!(complete["actor_id"], aid.as_str(), "{complete}");
    assert_eq!(complete["execution_id"], eid.as_str(), "{complete}");
    assert_eq!(complete["exit_code"], 3, "{complete}");
    assert_eq!(complete["status"], "COMPLETE", "{complete}");
    assert_eq!(complete["_abaco_webhook"], hook.url.as_str(), "{complete}");
    let time = complete["event_time_utc"].as_str().unwrap_or_default();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "event_time_utc is not YYYY-MM-DDTHH:MM:SS.mmmZ: {complete}"
    );

    // Exactly one delivery per event, and no failure recorded.
    hold("one delivery per event", Duration::from_secs(3), || async {
        let (r, c) = (
            hook.of_type("ACTOR_READY").len(),
            hook.of_type("EXECUTION_COMPLETE").len(),
        );
        (r == 1 && c == 1)
            .then_some(())
            .ok_or_else(|| format!("{r} ACTOR_READY, {c} EXECUTION_COMPLETE"))
    })
    .await;
    let key = format!("webhook_failures:{}", db_id(&app, &aid));
    let record = app.control.store.raw().get(Kind::Meta, &key).await;
    assert!(
        matches!(record, Ok(None)),
        "failure recorded for a working hook: {record:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_webhooks_are_retried_and_recorded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    // A closed port: bind, note the port, close.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let dead_url = format!("http://127.0.0.1:{closed}/hook");
    // A server that answers every request with 500.
    let failing = Hook::start(500).await;

    let dead = id_of(
        &app.register_actor(json!({"image": ACTOR, "webhook": dead_url}))
            .await,
    );
    let erring = id_of(
        &app.register_actor(json!({"image": ACTOR, "webhook": failing.url}))
            .await,
    );

    let app_ref = &app;
    let failures_of = move |aid: String| {
        let app = app_ref;
        async move {
            let key = format!("webhook_failures:{}", db_id(app, &aid));
            app.control
                .store
                .raw()
                .get(Kind::Meta, &key)
                .await
                .expect("store reads")
                .map(|doc| doc["failures"].as_array().cloned().unwrap_or_default())
                .unwrap_or_default()
        }
    };

    // Closed port: after the attempts, one failure for ACTOR_READY.
    let failures = wait_for(
        "a failure record for the closed port",
        RUN_WITHIN,
        || async {
            let f = failures_of(dead.clone()).await;
            (!f.is_empty()).then_some(f)
        },
    )
    .await;
    let entry = &failures[0];
    assert_eq!(entry["url"], dead_url.as_str(), "{entry}");
    assert_eq!(entry["event_type"], "ACTOR_READY", "{entry}");
    assert_eq!(entry["attempts"], 3, "{entry}");
    assert!(
        entry["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{entry}"
    );
    assert!(entry["time"].is_string(), "{entry}");

    // HTTP 500: three attempts reach the server, then a failure naming the status.
    let failures = wait_for("a failure record for HTTP 500", RUN_WITHIN, || async {
        let f = failures_of(erring.clone()).await;
        (!f.is_empty()).then_some(f)
    })
    .await;
    let entry = &failures[0];
    assert_eq!(entry["url"], failing.url.as_str(), "{entry}");
    assert_eq!(entry["event_type"], "ACTOR_READY", "{entry}");
    assert!(
        entry["error"].as_str().is_some_and(|e| e.contains("500")),
        "{entry}"
    );
    hold("exactly three attempts", Duration::from_secs(4), || async {
        let n = failing.of_type("ACTOR_READY").len();
        (n == 3)
            .then_some(())
            .ok_or_else(|| format!("{n} ACTOR_READY attempts"))
    })
    .await;

    // Failing webhooks never hold up the actor; each further event adds a failure.
    let eid = app.send_message(&dead, "still works").await;
    let exec = app.wait_execution_final(&dead, &eid, RUN_WITHIN).await;
    assert_eq!(exec["status"], "COMPLETE", "{exec}");
    let failures = wait_for("a second failure record", RUN_WITHIN, || async {
        let f = failures_of(dead.clone()).await;
        (f.len() >= 2).then_some(f)
    })
    .await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        failures[1]["event_type"], "EXECUTION_COMPLETE",
        "{failures:?}"
    );
    app.stop().await;
}
