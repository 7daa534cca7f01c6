//! The actor container contract (spec §5, §4.12–4.14, §7.9) seen from outside: the environment a
//! container gets, binary messages, the results socket, synchronous messages, exit codes and
//! failures (OOM, `max_run_time`, force quit), logs (streaming, truncation, bad UTF-8, stderr,
//! expiry) and execution stats — all with the env-driven test actor `abaco-test/actor:latest`.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::process::Command;
use std::time::{Duration, Instant};

use abaco_tests::{wait_for, TestApp};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const IMAGE: &str = "abaco-test/actor:latest";
/// Registration until the first worker is READY.
const READY_WITHIN: Duration = Duration::from_secs(90);
/// One ordinary execution, from the send to a final status (generous: 2 cores, parallel tests).
const RUN_WITHIN: Duration = Duration::from_secs(90);
const TRUNCATED: &str = "LOG LIMIT EXCEEDED; this execution log was TRUNCATED!";

// ---- helpers ------------------------------------------------------------------------------------

/// FNV-1a 64 as lowercase hex, as the test actor prints it.
fn fnv1a64_hex(bytes: &[u8]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `len` deterministic pseudo-random bytes (xorshift64*), every byte value included.
fn deterministic_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Percent-encodes a query component (everything but RFC 3986 unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", pairs.join("&"))
}

/// Registers a test-actor (plus `extra` fields) and waits until it is READY; returns its id.
async fn new_actor(app: &TestApp, extra: Value) -> String {
    let mut body = json!({"image": IMAGE});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    let actor = app.register_actor(body).await;
    let aid = actor["id"].as_str().expect("actor id").to_string();
    app.wait_actor_status(&aid, "READY", READY_WITHIN).await;
    aid
}

/// What a message carries.
enum Msg {
    Text(&'static str),
    Json(Value),
    Binary(Vec<u8>),
}

/// POSTs a message with the given query parameters and returns the raw response.
async fn post_message(
    app: &TestApp,
    aid: &str,
    query: &[(&str, &str)],
    msg: Msg,
) -> reqwest::Response {
    let path = format!("/actors/{aid}/messages{}", query_string(query));
    let req = app.request(Method::POST, &path);
    let req = match msg {
        Msg::Text(text) => req.json(&json!({ "message": text })),
        Msg::Json(value) => req.json(&value),
        Msg::Binary(bytes) => req
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes),
    };
    req.send().await.expect("message POST reaches the API")
}

/// Sends a message; returns the execution id from the receipt.
async fn send(app: &TestApp, aid: &str, query: &[(&str, &str)], msg: Msg) -> String {
    let resp = post_message(app, aid, query, msg).await;
    let status = resp.status();
    let text = resp.text().await.expect("receipt body");
    assert_eq!(status, StatusCode::OK, "send failed: {text}");
    let receipt: Value = serde_json::from_str(&text).expect("receipt is JSON");
    receipt["result"]["execution_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no execution_id in receipt: {receipt}"))
        .to_string()
}

/// A finished execution and its logs.
struct Run {
    eid: String,
    execution: Value,
    logs: String,
}

impl Run {
    fn worker_id(&self) -> String {
        self.execution["worker_id"]
            .as_str()
            .unwrap_or_else(|| panic!("execution has no worker_id: {}", self.execution))
            .to_string()
    }

    /// Panics unless the execution is COMPLETE with the given exit code.
    fn assert_complete(&self, exit_code: i64) {
        assert_eq!(
            self.execution["status"], "COMPLETE",
            "execution {}: {}\nlogs:\n{}",
            self.eid, self.execution, self.logs
        );
        assert_eq!(
            self.execution["exit_code"], exit_code,
            "execution {}: {}\nlogs:\n{}",
            self.eid, self.execution, self.logs
        );
    }

    fn status_message(&self) -> String {
        self.execution["status_message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Sends a message and waits for its execution to finish.
async fn run(app: &TestApp, aid: &str, query: &[(&str, &str)], msg: Msg) -> Run {
    let eid = send(app, aid, query, msg).await;
    finish(app, aid, eid, RUN_WITHIN).await
}

async fn finish(app: &TestApp, aid: &str, eid: String, within: Duration) -> Run {
    let execution = app.wait_execution_final(aid, &eid, within).await;
    let logs = app.logs(aid, &eid).await;
    Run {
        eid,
        execution,
        logs,
    }
}

/// Whether `logs` has the exact line `line`.
fn has_line(logs: &str, line: &str) -> bool {
    logs.lines().any(|l| l == line)
}

fn assert_lines(logs: &str, lines: &[String]) {
    let missing: Vec<&String> = lines.iter().filter(|l| !has_line(logs, l)).collect();
    assert!(
        missing.is_empty(),
        "lines missing from the container output: {missing:#?}\nlogs:\n{logs}"
    );
}

/// Pops one result: status, Content-Type and body.
async fn pop_result(app: &TestApp, aid: &str, eid: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = app
        .request(
            Method::GET,
            &format!("/actors/{aid}/executions/{eid}/results"),
        )
        .send()
        .await
        .expect("results request reaches the API");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.bytes().await.expect("results body").to_vec();
    (status, ctype, body)
}

/// Waits until the actor has exactly one worker and it is READY; returns its id.
async fn one_ready_worker(app: &TestApp, aid: &str) -> String {
    let path = format!("/actors/{aid}/workers");
    wait_for(
        &format!("actor {aid} to have one READY worker"),
        Duration::from_secs(30),
        || async {
            let (status, env) = app.get(&path).await;
            let workers = env["result"].as_array()?;
            (status == StatusCode::OK && workers.len() == 1 && workers[0]["status"] == "READY")
                .then(|| workers[0]["id"].as_str().unwrap_or("").to_string())
        },
    )
    .await
}

/// After a failed or stopped execution: the worker that ran it is READY again and runs the next
/// message normally.
async fn assert_worker_still_serves(app: &TestApp, aid: &str, previous: &Run) {
    let worker = one_ready_worker(app, aid).await;
    assert_eq!(
        worker,
        previous.worker_id(),
        "the worker that ran {} was replaced",
        previous.eid
    );
    let next = run(app, aid, &[], Msg::Text("still alive")).await;
    next.assert_complete(0);
    assert!(has_line(&next.logs, "MSG=still alive"), "{}", next.logs);
    assert_eq!(next.worker_id(), worker, "the next message ran elsewhere");
    one_ready_worker(app, aid).await;
}

/// Deletes the test's actor (the distributed store is shared by every test) and stops the app.
async fn delete_and_stop(app: TestApp, aid: &str) {
    let (status, env) = app.delete(&format!("/actors/{aid}")).await;
    assert_eq!(status, StatusCode::OK, "delete actor: {env}");
    app.stop().await;
}

// ---- 1. environment (§5.2) ----------------------------------------------------------------------

async fn environment(app: TestApp) {
    let aid = new_actor(
        &app,
        json!({"name": "env-actor", "stateless": false,
               "default_environment": {"_actor_kept": "from-default",
                                       "_actor_override": "from-default"}}),
    )
    .await;
    let (status, env) = app
        .post_json(
            &format!("/actors/{aid}/state"),
            json!({"count": 1, "flag": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "set state: {env}");

    let text = run(
        &app,
        &aid,
        &[
            ("_actor_override", "from-query"),
            ("_actor_extra", "a b&c=d"),
            ("x-nonce", "NONCE-SHOULD-NOT-LEAK"),
            ("_abaco_synchronous", "false"),
        ],
        Msg::Text("hello env"),
    )
    .await;
    text.assert_complete(0);
    let worker = text.worker_id();
    let dbid = format!("{}_{aid}", app.tenant);
    let common = |content_type: &str, eid: &str| -> Vec<String> {
        vec![
            format!("_abaco_actor_id={aid}"),
            format!("_abaco_execution_id={eid}"),
            format!("_abaco_worker_id={worker}"),
            format!("_abaco_actor_dbid={dbid}"),
            "_abaco_username=anonymous".to_string(),
            format!("_abaco_api_server={}", app.base),
            "_abaco_actor_state={'count': 1, 'flag': False}".to_string(),
            "_abaco_actor_name=env-actor".to_string(),
            format!("_abaco_container_repo={IMAGE}"),
            "_abaco_actor_revision=1".to_string(),
            "_abaco_access_token=".to_string(),
            format!("_abaco_Content_Type={content_type}"),
            "_actor_kept=from-default".to_string(),
        ]
    };
    let mut expected = common("str", &text.eid);
    expected.push("MSG=hello env".into());
    expected.push("_actor_override=from-query".into());
    expected.push("_actor_extra=a b&c=d".into());
    assert_lines(&text.logs, &expected);
    assert!(
        !text.logs.contains("_abaco_synchronous") && !text.logs.contains("NONCE-SHOULD-NOT-LEAK"),
        "reserved query parameters reached the container:\n{}",
        text.logs
    );

    // A JSON message arrives as a Python repr; query parameters were per message.
    let js = run(&app, &aid, &[], Msg::Json(json!({"a": 1, "b": true}))).await;
    js.assert_complete(0);
    let mut expected = common("application/json", &js.eid);
    expected.push("MSG={'a': 1, 'b': True}".into());
    expected.push("_actor_override=from-default".into());
    assert_lines(&js.logs, &expected);
    assert!(!js.logs.contains("_actor_extra"), "{}", js.logs);
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    environment(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    environment(app).await;
}

/// The reserved query parameters `x-nonce` and `_abaco_synchronous` are not in the container's
/// environment at all (the test actor only prints `_abaco*`/`_actor*`, so look at the container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_query_parameters_stay_out_of_the_container() {
    let Some(app) = TestApp::embedded()
        .with("workers", "leave_containers", "true")
        .start()
        .await
    else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let done = run(
        &app,
        &aid,
        &[
            ("x-nonce", "NONCE-SHOULD-NOT-LEAK"),
            ("_abaco_synchronous", "false"),
            ("PLAIN", "kept"),
        ],
        Msg::Text("reserved"),
    )
    .await;
    done.assert_complete(0);
    let containers = app
        .runtime
        .list(&[("abaco.execution", done.eid.as_str())])
        .await
        .expect("list containers");
    assert_eq!(containers.len(), 1, "left container of {}", done.eid);
    let id = containers[0].id.clone();
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Env}}", &id])
        .output()
        .expect("docker inspect runs");
    let _ = app.runtime.remove(&id, true).await;
    assert!(out.status.success(), "docker inspect failed: {out:?}");
    let env: Vec<String> = serde_json::from_slice(&out.stdout).expect("Config.Env is JSON");
    assert!(env.contains(&"PLAIN=kept".to_string()), "{env:#?}");
    let leaked: Vec<&String> = env
        .iter()
        .filter(|e| e.starts_with("x-nonce=") || e.starts_with("_abaco_synchronous="))
        .collect();
    assert!(leaked.is_empty(), "reserved parameters leaked: {leaked:?}");
    delete_and_stop(app, &aid).await;
}

// ---- 2. binary messages (§5.3) ------------------------------------------------------------------

async fn binary_messages(app: TestApp, big: usize) {
    let aid = new_actor(&app, json!({})).await;

    // Small, with every byte value (NUL, newline, 0xff, ...).
    let small: Vec<u8> = (0..=255u8).cycle().take(4099).collect();
    let small_fnv = fnv1a64_hex(&small);
    let done = run(&app, &aid, &[], Msg::Binary(small)).await;
    done.assert_complete(0);
    assert_lines(
        &done.logs,
        &[
            "MSG unset".into(),
            "_abaco_Content_Type=application/octet-stream".into(),
            "BINARY_LEN=4099".into(),
            format!("BINARY_FNV={small_fnv}"),
        ],
    );
    let (status, _, body) = pop_result(&app, &aid, &done.eid).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty(), "unexpected result {body:?}");

    // Big, with the hash sent back as a result.
    let bytes = deterministic_bytes(big);
    let fnv = fnv1a64_hex(&bytes);
    let done = run(
        &app,
        &aid,
        &[("RESULT_BINARY_FNV", "1")],
        Msg::Binary(bytes),
    )
    .await;
    done.assert_complete(0);
    assert_lines(
        &done.logs,
        &[
            "MSG unset".into(),
            "_abaco_Content_Type=application/octet-stream".into(),
            format!("BINARY_LEN={big}"),
            format!("BINARY_FNV={fnv}"),
            "RESULTS_SENT=1".into(),
        ],
    );
    let (status, ctype, body) = pop_result(&app, &aid, &done.eid).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "application/octet-stream");
    assert_eq!(String::from_utf8_lossy(&body), fnv);
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_embedded_100mb() {
    let Some(app) = TestApp::embedded()
        .with("web", "max_content_length", "209715200")
        .start()
        .await
    else {
        return;
    };
    binary_messages(app, 100 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    binary_messages(app, 8 * 1024 * 1024).await;
}

/// A binary message within `[web] max_content_length` (default 500 000 000) but above what the
/// broker takes in one message (RabbitMQ's default `max_message_size` is 128 MiB) must either run
/// or be refused with a clear 400 — never a 500 that leaves an execution SUBMITTED forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_message_above_the_broker_limit_runs_or_is_refused_cleanly_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let size = 130 * 1024 * 1024;
    let resp = post_message(&app, &aid, &[], Msg::Binary(deterministic_bytes(size))).await;
    let status = resp.status();
    let text = resp.text().await.expect("response body");
    let env: Value = serde_json::from_str(&text).expect("response is JSON");
    match status {
        StatusCode::OK => {
            let eid = env["result"]["execution_id"]
                .as_str()
                .expect("execution_id")
                .to_string();
            let done = finish(&app, &aid, eid, RUN_WITHIN).await;
            done.assert_complete(0);
            assert!(
                has_line(&done.logs, &format!("BINARY_LEN={size}")),
                "{}",
                done.logs
            );
        }
        StatusCode::BAD_REQUEST => {
            let message = env["message"].as_str().unwrap_or("");
            assert!(
                message.contains("max content length"),
                "unclear refusal: {env}"
            );
            let (_, summary) = app.get(&format!("/actors/{aid}/executions")).await;
            assert_eq!(
                summary["result"]["total_executions"], 0,
                "a refused message left an execution behind: {summary}"
            );
        }
        other => {
            let (_, summary) = app.get(&format!("/actors/{aid}/executions")).await;
            panic!(
                "POST of a {size}-byte binary message: {other} {env}\nexecutions: {}",
                summary["result"]["executions"]
            );
        }
    }
    // Either way the actor keeps working.
    let next = run(&app, &aid, &[], Msg::Text("after the big one")).await;
    next.assert_complete(0);
    delete_and_stop(app, &aid).await;
}

// ---- 3. results socket (§5.4, §4.13) ------------------------------------------------------------

async fn results_socket(app: TestApp) {
    let aid = new_actor(&app, json!({})).await;
    let done = run(
        &app,
        &aid,
        &[("RESULTS", "one,two,three")],
        Msg::Text("results"),
    )
    .await;
    done.assert_complete(0);
    assert!(
        has_line(&done.logs, "RESULTS_SENT=3"),
        "execution {}\nlogs:\n{}",
        done.execution,
        done.logs
    );
    for expected in ["one", "two", "three", ""] {
        let (status, ctype, body) = pop_result(&app, &aid, &done.eid).await;
        assert_eq!(status, StatusCode::OK, "result {expected:?}");
        assert_eq!(ctype, "application/octet-stream", "result {expected:?}");
        assert_eq!(String::from_utf8_lossy(&body), expected);
    }
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_socket_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    results_socket(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_socket_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    results_socket(app).await;
}

// ---- 4. synchronous messages (§7.9) -------------------------------------------------------------

/// The only execution of an actor.
async fn only_execution(app: &TestApp, aid: &str) -> String {
    let (status, env) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, StatusCode::OK, "{env}");
    let executions = env["result"]["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 1, "{env}");
    executions[0]["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_messages_return_the_first_result_or_the_logs() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;

    let resp = post_message(
        &app,
        &aid,
        &[("_abaco_synchronous", "true"), ("RESULTS", "first,second")],
        Msg::Text("sync with results"),
    )
    .await;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.expect("sync body");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ctype, "application/octet-stream", "{body}");
    assert_eq!(body, "first");
    // The second result stays for GET .../results.
    let eid = only_execution(&app, &aid).await;
    let (_, _, next) = pop_result(&app, &aid, &eid).await;
    assert_eq!(String::from_utf8_lossy(&next), "second");

    let resp = post_message(
        &app,
        &aid,
        &[("_abaco_synchronous", "true")],
        Msg::Text("sync without results"),
    )
    .await;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.expect("sync body");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(ctype.starts_with("text/"), "content type {ctype:?}: {body}");
    assert!(has_line(&body, "MSG=sync without results"), "{body}");
    assert!(body.contains("_abaco_execution_id="), "{body}");
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_message_times_out_with_a_clear_error() {
    let Some(app) = TestApp::embedded()
        .with("web", "sync_timeout", "2")
        .start()
        .await
    else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let started = Instant::now();
    let (status, env) = app
        .call(
            app.request(
                Method::POST,
                &format!(
                    "/actors/{aid}/messages{}",
                    query_string(&[("_abaco_synchronous", "true"), ("SLEEP_MS", "8000")])
                ),
            )
            .json(&json!({"message": "slow"}))
            .timeout(Duration::from_secs(30)),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{env}");
    assert_eq!(env["status"], "error", "{env}");
    let message = env["message"].as_str().unwrap_or("");
    assert!(
        message.contains("sync_timeout") || message.contains("did not finish"),
        "unclear timeout message: {env}"
    );
    assert!(took < Duration::from_secs(7), "answered after {took:?}");
    // The execution keeps running and completes normally.
    let eid = only_execution(&app, &aid).await;
    assert!(message.contains(&eid), "{message} should name {eid}");
    let done = finish(&app, &aid, eid, RUN_WITHIN).await;
    done.assert_complete(0);
    assert!(done.logs.contains("SLEEP_END="), "{}", done.logs);
    delete_and_stop(app, &aid).await;
}

// ---- 5. exit codes and failures -----------------------------------------------------------------

async fn nonzero_exit_code(app: TestApp) {
    let aid = new_actor(&app, json!({})).await;
    let done = run(&app, &aid, &[("EXIT_CODE", "3")], Msg::Text("exit 3")).await;
    done.assert_complete(3);
    assert!(has_line(&done.logs, "MSG=exit 3"), "{}", done.logs);
    assert_worker_still_serves(&app, &aid, &done).await;
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_code_embedded() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    nonzero_exit_code(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_code_distributed() {
    let Some(app) = TestApp::distributed().start().await else {
        return;
    };
    nonzero_exit_code(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_completes_with_137_and_says_why() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({"mem_limit": "32m"})).await;
    let done = run(&app, &aid, &[("ALLOC_MB", "200")], Msg::Text("oom")).await;
    done.assert_complete(137);
    assert!(
        done.status_message().to_lowercase().contains("memory"),
        "status_message should mention memory: {}",
        done.execution
    );
    assert!(!done.logs.contains("ALLOCATED=200"), "{}", done.logs);
    assert_worker_still_serves(&app, &aid, &done).await;
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_run_time_stops_the_execution() {
    let Some(app) = TestApp::embedded()
        .with("workers", "max_run_time", "2")
        .start()
        .await
    else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let eid = send(&app, &aid, &[("SLEEP_MS", "30000")], Msg::Text("too long")).await;
    let sent = Instant::now();
    let done = finish(&app, &aid, eid, Duration::from_secs(25)).await;
    let took = sent.elapsed();
    assert_eq!(done.execution["status"], "COMPLETE", "{}", done.execution);
    assert!(
        took < Duration::from_secs(20),
        "max_run_time of 2 s took {took:?}"
    );
    assert!(
        done.status_message().contains("max_run_time"),
        "status_message should mention max_run_time: {}",
        done.execution
    );
    assert!(done.logs.contains("SLEEP_START="), "{}", done.logs);
    assert!(!done.logs.contains("SLEEP_END="), "{}", done.logs);
    assert_worker_still_serves(&app, &aid, &done).await;
    delete_and_stop(app, &aid).await;
}

// ---- 6. force quit (§4.12) ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_quit_stops_the_container_and_the_worker_carries_on() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let eid = send(&app, &aid, &[("SLEEP_MS", "60000")], Msg::Text("forever")).await;
    let path = format!("/actors/{aid}/executions/{eid}");
    wait_for("the execution to be RUNNING", RUN_WITHIN, || async {
        let (_, env) = app.get(&path).await;
        (env["result"]["status"] == "RUNNING").then_some(())
    })
    .await;

    let (status, env) = app.delete(&path).await;
    let asked = Instant::now();
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(
        env["message"],
        format!("Issued force quit command for execution {eid}."),
        "{env}"
    );
    assert_eq!(env["result"], Value::Null, "{env}");

    let done = finish(&app, &aid, eid.clone(), Duration::from_secs(20)).await;
    assert!(asked.elapsed() <= Duration::from_secs(20));
    assert_eq!(done.execution["status"], "COMPLETE", "{}", done.execution);
    assert!(
        done.status_message().to_lowercase().contains("force quit"),
        "status_message should say it was force quit: {}",
        done.execution
    );
    assert!(!done.logs.contains("SLEEP_END="), "{}", done.logs);

    // A finished execution cannot be force quit.
    let (status, env) = app.delete(&path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{env}");
    assert_eq!(
        env["message"],
        "Cannot force quit an execution not in RUNNING status. Execution was found in status: COMPLETE",
        "{env}"
    );

    assert_worker_still_serves(&app, &aid, &done).await;
    delete_and_stop(app, &aid).await;
}

// ---- 7. logs (§5.5, §7.10, §4.14) ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_streamed_while_the_execution_runs() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let eid = send(
        &app,
        &aid,
        &[("SPAM_LINES", "5"), ("SLEEP_MS", "6000")],
        Msg::Text("stream"),
    )
    .await;
    let path = format!("/actors/{aid}/executions/{eid}");
    // Logs first, status second: lines seen while the status is still RUNNING were visible
    // before the execution completed.
    let seen_while_running = wait_for("streamed logs or the end", RUN_WITHIN, || async {
        let logs = app.logs(&aid, &eid).await;
        let (_, env) = app.get(&path).await;
        let status = env["result"]["status"].as_str().unwrap_or("").to_string();
        if logs.contains("line 4 ") && status == "RUNNING" {
            return Some(true);
        }
        (status == "COMPLETE" || status == "ERROR").then_some(false)
    })
    .await;
    assert!(
        seen_while_running,
        "the logs only appeared after the execution finished"
    );
    let done = finish(&app, &aid, eid, RUN_WITHIN).await;
    done.assert_complete(0);
    assert!(done.logs.contains("SLEEP_END="), "{}", done.logs);
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_logs_are_truncated_with_a_marker() {
    let Some(app) = TestApp::embedded()
        .with("web", "max_log_length", "100")
        .start()
        .await
    else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let done = run(&app, &aid, &[("SPAM_LINES", "1000")], Msg::Text("spam")).await;
    done.assert_complete(0);
    assert!(done.logs.ends_with(TRUNCATED), "{:?}", done.logs);
    assert!(done.logs.starts_with("MSG=spam"), "{:?}", done.logs);
    let kept = done.logs.chars().count() - TRUNCATED.chars().count();
    assert!(
        (100..=101).contains(&kept),
        "kept {kept} characters before the marker: {:?}",
        done.logs
    );
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_output_and_stderr_are_captured() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let done = run(
        &app,
        &aid,
        &[("NONUTF8", "1"), ("SPAM_LINES", "2")],
        Msg::Text("bad bytes"),
    )
    .await;
    done.assert_complete(0);
    assert!(has_line(&done.logs, "MSG=bad bytes"), "{}", done.logs);
    assert!(done.logs.contains(" bad utf8 "), "{:?}", done.logs);
    assert!(done.logs.contains("line 1 "), "{:?}", done.logs);

    let done = run(
        &app,
        &aid,
        &[("STDERR", "written to stderr 42")],
        Msg::Text("stderr"),
    )
    .await;
    done.assert_complete(0);
    assert!(
        has_line(&done.logs, "written to stderr 42"),
        "stderr missing: {}",
        done.logs
    );
    assert!(has_line(&done.logs, "MSG=stderr"), "{}", done.logs);
    delete_and_stop(app, &aid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_expire_after_the_actors_log_ex() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({"log_ex": 1})).await;
    let eid = send(&app, &aid, &[], Msg::Text("short-lived logs")).await;
    let execution = app.wait_execution_final(&aid, &eid, RUN_WITHIN).await;
    assert_eq!(execution["status"], "COMPLETE", "{execution}");
    wait_for("the logs to expire", Duration::from_secs(15), || async {
        app.logs(&aid, &eid).await.is_empty().then_some(())
    })
    .await;
    let (status, env) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["result"]["status"], "COMPLETE", "{env}");
    delete_and_stop(app, &aid).await;
}

// ---- 8. stats -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_integers_and_runtime_is_in_seconds() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = new_actor(&app, json!({})).await;
    let done = run(
        &app,
        &aid,
        &[
            ("SPAM_LINES", "20000"),
            ("ALLOC_MB", "64"),
            ("SLEEP_MS", "2500"),
        ],
        Msg::Text("work"),
    )
    .await;
    done.assert_complete(0);
    let e = &done.execution;
    for field in ["runtime", "cpu", "io"] {
        assert!(
            e[field].as_i64().is_some_and(|v| v >= 0),
            "{field} is not a non-negative integer: {e}"
        );
    }
    let runtime = e["runtime"].as_i64().unwrap_or(0);
    assert!(
        (2..=30).contains(&runtime),
        "runtime {runtime} s for a 2.5 s run: {e}"
    );
    assert!(
        e["cpu"].as_i64().unwrap_or(0) > 0,
        "no CPU recorded for a busy container: {e}"
    );
    let (status, summary) = app.get(&format!("/actors/{aid}/executions")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    for field in ["total_runtime", "total_cpu", "total_io"] {
        assert!(summary["result"][field].is_i64(), "{field}: {summary}");
    }
    assert!(
        summary["result"]["total_runtime"].as_i64().unwrap_or(0) >= 2,
        "{summary}"
    );
    delete_and_stop(app, &aid).await;
}
