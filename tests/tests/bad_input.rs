//! Bad input on every route: a malformed body or a missing or mistyped field gets 400 naming the
//! field, an unknown actor, execution or worker gets 404, a wrong method 405 and an unknown path
//! 404 — always in Abaco's error envelope, never a 500, a dropped connection or a hang. Most
//! checks run with `[workers] init_count = 0`, so no worker container is started.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::time::Duration;

use abaco_core::{ActorId, ExecutionId, WorkerId};
use abaco_tests::TestApp;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};

/// A request that takes longer than this counts as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const ECHO: &str = "abaco-test/echo";
const IMAGE_MISSING: &str =
    "Invalid actor description: {'image': 'Reference to image on docker hub for this actor.'}";
const WRONG_METHOD: &str =
    "Invalid request: the API endpoint does not exist or the provided HTTP method is not allowed.";
const NOT_SERIALIZABLE: &str =
    "message POST body could not be serialized. Pass JSON data or use the message attribute.";
const BAD_STATE: &str = "Invalid actor state description: state must be JSON serializable.";
const BAD_NUM: &str = "Invalid POST: {'num': 'Number of workers to start (default is 1).'}";

/// What a request carries.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    /// Raw bytes under the given content type.
    Raw(&'static str, Vec<u8>),
}

fn json_body(value: Value) -> Body {
    Body::Json(value)
}

fn raw(content_type: &'static str, bytes: impl Into<Vec<u8>>) -> Body {
    Body::Raw(content_type, bytes.into())
}

/// Sends requests and collects every deviation, so one run names all the broken routes.
struct Checks<'a> {
    app: &'a TestApp,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    fn new(app: &'a TestApp) -> Checks<'a> {
        Checks {
            app,
            failures: Vec::new(),
        }
    }

    /// Sends one request; `Err` when it hangs, the connection breaks or the body is unreadable.
    async fn send(&self, method: Method, path: &str, body: Body) -> Result<(u16, String), String> {
        let mut req = self.app.request(method, path);
        req = match body {
            Body::None => req,
            Body::Json(value) => req.json(&value),
            Body::Raw(content_type, bytes) => req.header(CONTENT_TYPE, content_type).body(bytes),
        };
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?} (hang)")),
            Ok(Err(e)) => Err(format!(
                "request failed (panic or dropped connection?): {e}"
            )),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Checks that the answer is the error envelope with HTTP `status` and a message containing
    /// every one of `needles`.
    async fn check(
        &mut self,
        method: Method,
        path: &str,
        body: Body,
        status: u16,
        needles: &[&str],
    ) {
        self.judge(method, path, body, &[status], needles, 1).await;
    }

    /// As `check`, accepting any of `statuses`.
    async fn check_any(
        &mut self,
        method: Method,
        path: &str,
        body: Body,
        statuses: &[u16],
        needles: &[&str],
    ) {
        self.judge(method, path, body, statuses, needles, 1).await;
    }

    /// As `check_any` for a body too large to buffer: a server that answers before reading such
    /// a body may see its connection reset under the client (TCP, not the API), so a failed
    /// exchange is retried; a route that panics fails every attempt.
    async fn check_large(
        &mut self,
        method: Method,
        path: &str,
        body: Body,
        statuses: &[u16],
        needles: &[&str],
    ) {
        self.judge(method, path, body, statuses, needles, 3).await;
    }

    async fn judge(
        &mut self,
        method: Method,
        path: &str,
        body: Body,
        statuses: &[u16],
        needles: &[&str],
        attempts: u32,
    ) {
        let label = format!("{method} {path}");
        let mut answer = Err(String::new());
        for _ in 0..attempts {
            answer = self.send(method.clone(), path, body.clone()).await;
            if answer.is_ok() {
                break;
            }
        }
        let (got, text) = match answer {
            Ok(answer) => answer,
            Err(why) => {
                self.failures.push(format!("{label}: {why}"));
                return;
            }
        };
        let mut problems = Vec::new();
        if got >= 500 {
            problems.push(format!("server error {got}"));
        }
        if !statuses.contains(&got) {
            problems.push(format!("status {got}, expected {statuses:?}"));
        }
        let envelope = match serde_json::from_str::<Value>(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("body is not JSON ({e})"));
                Value::Null
            }
        };
        if !envelope.is_null() {
            problems.extend(envelope_problems(&envelope));
            let message = envelope["message"].as_str().unwrap_or("");
            for needle in needles {
                if !message.contains(needle) {
                    problems.push(format!("message lacks {needle:?}"));
                }
            }
        }
        if !problems.is_empty() {
            let shown: String = text.chars().take(300).collect();
            self.failures.push(format!(
                "{label}: {} — got {got} {shown:?}",
                problems.join("; ")
            ));
        }
    }

    /// Records a failure found by other means.
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} bad-input check(s) failed:\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

/// What is wrong with `v` as Abaco's error envelope `{message: str, result: null, status:
/// "error", version: str}` (nothing more).
fn envelope_problems(v: &Value) -> Vec<String> {
    let Some(object) = v.as_object() else {
        return vec!["body is not a JSON object".into()];
    };
    let mut problems = Vec::new();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["message", "result", "status", "version"] {
        problems.push(format!("envelope keys are {keys:?}"));
    }
    if !v["message"].is_string() {
        problems.push("message is not a string".into());
    }
    if !v["result"].is_null() {
        problems.push("result is not null".into());
    }
    if v["status"] != "error" {
        problems.push(format!("status field is {}", v["status"]));
    }
    if !v["version"].is_string() {
        problems.push("version is not a string".into());
    }
    problems
}

/// An app whose registrations start no worker.
async fn start_quiet(max_content_length: Option<&str>) -> Option<TestApp> {
    let mut builder = TestApp::embedded().with("workers", "init_count", "0");
    if let Some(n) = max_content_length {
        builder = builder.with("web", "max_content_length", n);
    }
    builder.start().await
}

fn actor_id(actor: &Value) -> String {
    actor["id"].as_str().expect("actor id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_rejects_bad_descriptions() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let existing = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let mut c = Checks::new(&app);
    let post = Method::POST;
    let field =
        |name: &str, help: &str| format!("Invalid actor description: {{'{name}': '{help}'}}");

    // Missing image, whatever else is sent and however.
    for body in [
        json_body(json!({})),
        json_body(json!({"name": "no-image", "stateless": true})),
        json_body(json!({"image": null})),
        json_body(Value::Null),
        Body::None,
        raw(
            "application/x-www-form-urlencoded",
            "name=formy&description=no+image",
        ),
        raw("text/plain", "image=abaco-test/echo"),
    ] {
        c.check(post.clone(), "/actors", body, 400, &[IMAGE_MISSING])
            .await;
    }
    c.check(
        post.clone(),
        "/actors?name=q",
        Body::None,
        400,
        &[IMAGE_MISSING],
    )
    .await;

    // Bodies that are not a JSON object.
    for text in [
        "{not json",
        "{\"image\": \"abaco-test/echo\"",
        "[{\"image\": \"abaco-test/echo\"}]",
        "\"abaco-test/echo\"",
        "42",
    ] {
        c.check(
            post.clone(),
            "/actors",
            raw("application/json", text),
            400,
            &["Invalid actor description: Unable to process the JSON description."],
        )
        .await;
    }

    // Wrong types name the field and its help text.
    let typed = [
        (
            json!({"stateless": "nope"}),
            field("stateless", "Whether the actor stores private state."),
        ),
        (
            json!({"stateless": 1}),
            field("stateless", "Whether the actor stores private state."),
        ),
        (
            json!({"max_workers": "many"}),
            field(
                "max_workers",
                "How many workers this actor is allowed at the same time.",
            ),
        ),
        (
            json!({"default_environment": "x"}),
            field(
                "default_environment",
                "A dictionary of default environmental variables and values.",
            ),
        ),
        (
            json!({"default_environment": ["A", "B"]}),
            field(
                "default_environment",
                "A dictionary of default environmental variables and values.",
            ),
        ),
        (
            json!({"token": "sure"}),
            field(
                "token",
                "Whether this actor requires an OAuth access token.",
            ),
        ),
        (
            json!({"privileged": "maybe"}),
            field("privileged", "Whether this actor runs in privileged mode."),
        ),
        (
            json!({"use_container_uid": "perhaps"}),
            field(
                "use_container_uid",
                "Whether this actor runs as the UID set in the container image.",
            ),
        ),
        (
            json!({"max_cpus": "lots"}),
            field(
                "max_cpus",
                "Maximum number of CPUs (nanoCPUs) this actor will have available to it.",
            ),
        ),
    ];
    for (extra, message) in typed {
        let mut body = extra;
        body["image"] = json!(ECHO);
        c.check(post.clone(), "/actors", json_body(body), 400, &[&message])
            .await;
    }
    // The same through a form body.
    c.check(
        post.clone(),
        "/actors",
        raw(
            "application/x-www-form-urlencoded",
            "image=abaco-test%2Fecho&stateless=nope",
        ),
        400,
        &[&field(
            "stateless",
            "Whether the actor stores private state.",
        )],
    )
    .await;

    // Validation rules.
    c.check(
        post.clone(),
        "/actors",
        json_body(json!({"image": ECHO, "hints": ["fine", "not{fine"]})),
        400,
        &["Invalid actor description: Unable to process the JSON description.: 400 Bad Request: Hints must be simple stings or numbers, no lists or dicts. Error character: {"],
    )
    .await;
    c.check(
        post.clone(),
        "/actors",
        json_body(json!({"image": ECHO, "queue": "no-such-queue"})),
        400,
        &["Invalid actor description: Unable to process the JSON description.: 400 Bad Request: Invalid queue name."],
    )
    .await;
    // Sizes Docker would refuse for every container: below its 6 MiB minimum.
    for mem in ["lots", "12q", "-5m", "1k", "5m"] {
        c.check(
            post.clone(),
            "/actors",
            json_body(json!({"image": ECHO, "mem_limit": mem})),
            400,
            &["Invalid actor description", "mem_limit"],
        )
        .await;
    }
    for hook in [
        "http://%zz/",
        "not a url",
        "ftp://example.org/x",
        "file:///etc/passwd",
    ] {
        c.check(
            post.clone(),
            "/actors",
            json_body(json!({"image": ECHO, "webhook": hook})),
            400,
            &[
                "Invalid actor description",
                "webhook",
                "is not a usable URL",
            ],
        )
        .await;
    }
    for cpus in [1, 9_999_999] {
        c.check(
            post.clone(),
            "/actors",
            json_body(json!({"image": ECHO, "max_cpus": cpus})),
            400,
            &[
                "Invalid actor description",
                "max_cpus must be at least 10000000",
            ],
        )
        .await;
    }
    c.check(
        post.clone(),
        "/actors",
        json_body(json!({"image": ECHO, "stateless": false, "max_workers": 2})),
        400,
        &["Invalid actor description: stateful actors can only have 1 worker."],
    )
    .await;
    let ghost = ActorId::generate();
    for link in [ghost.as_str(), "no-such-alias"] {
        c.check(
            post.clone(),
            "/actors",
            json_body(json!({"image": ECHO, "link": link})),
            400,
            &["Invalid link parameter"],
        )
        .await;
    }

    // The public prefix answers the same.
    c.check(
        post.clone(),
        "/actors/v2",
        json_body(json!({})),
        400,
        &[IMAGE_MISSING],
    )
    .await;
    c.check(
        post.clone(),
        "/actors/v2/",
        raw("application/json", "{not json"),
        400,
        &["Invalid actor description: Unable to process the JSON description."],
    )
    .await;

    // None of the refused requests registered anything.
    let (status, list) = app.get("/actors").await;
    let ids: Vec<&str> = list["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    c.expect(status == 200 && ids == [existing.as_str()], || {
        format!("refused registrations left actors behind: {status} {list}")
    });
    c.finish();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_actors_are_404_on_every_route() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let mut c = Checks::new(&app);
    let ghost = ActorId::generate();
    let eid = ExecutionId::generate();
    let wid = WorkerId::generate();
    let alias_needle = "Actor with identifier 'no-such-actor' not found".to_string();
    for (id, needles) in [
        (ghost.as_str(), vec!["No actor found with", ghost.as_str()]),
        ("no-such-actor", vec![alias_needle.as_str()]),
    ] {
        let routes: Vec<(Method, String, Body)> = vec![
            (Method::GET, format!("/actors/{id}"), Body::None),
            (
                Method::PUT,
                format!("/actors/{id}"),
                json_body(json!({"image": ECHO})),
            ),
            (
                Method::PUT,
                format!("/actors/{id}"),
                raw("application/json", "{not json"),
            ),
            (Method::DELETE, format!("/actors/{id}"), Body::None),
            (Method::GET, format!("/actors/{id}/state"), Body::None),
            (
                Method::POST,
                format!("/actors/{id}/state"),
                json_body(json!({"a": 1})),
            ),
            (Method::GET, format!("/actors/{id}/messages"), Body::None),
            (
                Method::POST,
                format!("/actors/{id}/messages"),
                json_body(json!({"message": "hi"})),
            ),
            (Method::POST, format!("/actors/{id}/messages"), Body::None),
            (Method::DELETE, format!("/actors/{id}/messages"), Body::None),
            (Method::GET, format!("/actors/{id}/executions"), Body::None),
            (
                Method::GET,
                format!("/actors/{id}/executions/{eid}"),
                Body::None,
            ),
            (
                Method::DELETE,
                format!("/actors/{id}/executions/{eid}"),
                Body::None,
            ),
            (
                Method::GET,
                format!("/actors/{id}/executions/{eid}/logs"),
                Body::None,
            ),
            (
                Method::GET,
                format!("/actors/{id}/executions/{eid}/results"),
                Body::None,
            ),
            (Method::GET, format!("/actors/{id}/workers"), Body::None),
            (
                Method::POST,
                format!("/actors/{id}/workers"),
                json_body(json!({"num": 1})),
            ),
            (
                Method::POST,
                format!("/actors/{id}/workers"),
                json_body(json!({"num": "x"})),
            ),
            (
                Method::GET,
                format!("/actors/{id}/workers/{wid}"),
                Body::None,
            ),
            (
                Method::DELETE,
                format!("/actors/{id}/workers/{wid}"),
                Body::None,
            ),
            (Method::GET, format!("/actors/v2/{id}"), Body::None),
            (
                Method::DELETE,
                format!("/actors/v2/{id}/messages"),
                Body::None,
            ),
            (
                Method::GET,
                format!("/actors/v2/{id}/workers/{wid}"),
                Body::None,
            ),
        ];
        for (method, path, body) in routes {
            c.check(method, &path, body, 404, &needles).await;
        }
    }

    // Nothing was created along the way.
    let (status, list) = app.get("/actors").await;
    c.expect(status == 200 && list["result"] == json!([]), || {
        format!("requests on unknown actors created actors: {status} {list}")
    });
    c.finish();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_actors_refuse_bad_input() {
    let Some(app) = start_quiet(Some("10")).await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let sid = actor_id(
        &app.register_actor(json!({"image": ECHO, "stateless": false}))
            .await,
    );
    let mut c = Checks::new(&app);
    let eid = ExecutionId::generate();
    let wid = WorkerId::generate();

    // Unknown executions and workers of an existing actor.
    let no_execution =
        format!("No executions found with actor id of {aid} and execution id of {eid}.");
    for (method, path) in [
        (Method::GET, format!("/actors/{aid}/executions/{eid}")),
        (Method::DELETE, format!("/actors/{aid}/executions/{eid}")),
        (Method::GET, format!("/actors/{aid}/executions/{eid}/logs")),
    ] {
        c.check(method, &path, Body::None, 404, &[&no_execution])
            .await;
    }
    for (method, path) in [
        (Method::GET, format!("/actors/{aid}/workers/{wid}")),
        (Method::DELETE, format!("/actors/{aid}/workers/{wid}")),
        (Method::GET, format!("/actors/v2/{aid}/workers/{wid}")),
    ] {
        c.check(method, &path, Body::None, 404, &["Worker not found."])
            .await;
    }

    // Messages.
    let messages = format!("/actors/{aid}/messages");
    for body in [
        Body::None,
        raw("application/json", ""),
        raw("text/plain", "  \n"),
        raw("application/x-www-form-urlencoded", ""),
    ] {
        c.check(Method::POST, &messages, body, 400, &[NOT_SERIALIZABLE])
            .await;
    }
    c.check(
        Method::POST,
        &format!("/actors/v2/{aid}/messages"),
        Body::None,
        400,
        &[NOT_SERIALIZABLE],
    )
    .await;
    for text in ["{not json", "[1, 2", "{\"message\": "] {
        c.check(
            Method::POST,
            &messages,
            raw("application/json", text),
            400,
            &["message POST body could not be"],
        )
        .await;
    }
    c.check(
        Method::POST,
        &messages,
        raw("application/octet-stream", vec![7u8; 20]),
        400,
        &["Message exceeds max content length of: 10"],
    )
    .await;
    // State.
    c.check(
        Method::POST,
        &format!("/actors/{aid}/state"),
        json_body(json!({"a": 1})),
        404,
        &["actor is stateless."],
    )
    .await;
    let state = format!("/actors/{sid}/state");
    for body in [
        Body::None,
        raw("application/json", "{not json"),
        raw("text/plain", "hello"),
        raw("text/plain", "{\"a\": 1}"),
        json_body(json!({})),
        json_body(json!([])),
        json_body(json!(0)),
        json_body(json!(false)),
        json_body(json!("")),
        json_body(Value::Null),
    ] {
        c.check(Method::POST, &state, body, 400, &[BAD_STATE]).await;
    }
    c.check(
        Method::POST,
        &format!("/actors/v2/{sid}/state"),
        json_body(json!([])),
        400,
        &[BAD_STATE],
    )
    .await;

    // Workers.
    let workers = format!("/actors/{aid}/workers");
    c.check(
        Method::POST,
        &workers,
        json_body(json!({"num": "x"})),
        400,
        &[BAD_NUM],
    )
    .await;
    c.check(
        Method::POST,
        &format!("{workers}?num=x"),
        Body::None,
        400,
        &[BAD_NUM],
    )
    .await;
    c.check(
        Method::POST,
        &workers,
        raw("application/x-www-form-urlencoded", "num=x"),
        400,
        &[BAD_NUM],
    )
    .await;
    c.check(
        Method::POST,
        &workers,
        raw("application/json", "{not json"),
        400,
        &["Invalid POST"],
    )
    .await;

    // Updates.
    let actor = format!("/actors/{aid}");
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({})),
        400,
        &[IMAGE_MISSING],
    )
    .await;
    c.check(Method::PUT, &actor, Body::None, 400, &[IMAGE_MISSING])
        .await;
    c.check(
        Method::PUT,
        &actor,
        raw("application/json", "{not json"),
        400,
        &["Invalid actor description: Unable to process the JSON description."],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        raw("application/json", "[1]"),
        400,
        &["Invalid actor description: Unable to process the JSON description."],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({"image": ECHO, "max_workers": "many"})),
        400,
        &["Invalid actor description: {'max_workers': 'How many workers this actor is allowed at the same time.'}"],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({"image": ECHO, "queue": "no-such-queue"})),
        400,
        &["Invalid queue name."],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({"image": ECHO, "hints": ["a]"]})),
        400,
        &["Hints must be simple stings or numbers, no lists or dicts. Error character: ]"],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({"image": ECHO, "link": aid})),
        400,
        &["Invalid link parameter. An actor cannot link to itself."],
    )
    .await;
    c.check(
        Method::PUT,
        &actor,
        json_body(json!({"image": ECHO, "link": ActorId::generate().as_str()})),
        400,
        &["Invalid link parameter"],
    )
    .await;
    c.check(
        Method::PUT,
        &format!("/actors/{sid}"),
        json_body(json!({"image": ECHO, "max_workers": 2})),
        400,
        &["Invalid actor description: stateful actors can only have 1 worker."],
    )
    .await;
    c.check(
        Method::PUT,
        &format!("/actors/{sid}"),
        json_body(json!({"image": ECHO, "stateless": true})),
        400,
        &["Invalid actor description: an actor that was not stateless cannot be updated to be stateless."],
    )
    .await;
    c.check(
        Method::PUT,
        &format!("/actors/v2/{aid}"),
        json_body(json!({"stateless": "nope", "image": ECHO})),
        400,
        &["Invalid actor description: {'stateless': 'Whether the actor stores private state.'}"],
    )
    .await;

    // The refused requests changed nothing: no message queued, no execution, no worker, same
    // revision and state.
    for id in [&aid, &sid] {
        let (_, actor) = app.get(&format!("/actors/{id}")).await;
        c.expect(actor["result"]["revision"] == 1, || {
            format!("refused updates changed actor {id}: {actor}")
        });
        let (_, count) = app.get(&format!("/actors/{id}/messages")).await;
        c.expect(count["result"]["messages"] == 0, || {
            format!("refused messages were queued for {id}: {count}")
        });
        let (_, summary) = app.get(&format!("/actors/{id}/executions")).await;
        c.expect(summary["result"]["total_executions"] == 0, || {
            format!("refused messages created executions for {id}: {summary}")
        });
        let (_, workers) = app.get(&format!("/actors/{id}/workers")).await;
        c.expect(workers["result"] == json!([]), || {
            format!("refused worker requests started workers for {id}: {workers}")
        });
    }
    let (_, stateful) = app.get(&format!("/actors/{sid}/state")).await;
    c.expect(stateful["result"]["state"] == json!({}), || {
        format!("refused state updates changed the state: {stateful}")
    });
    c.finish();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_and_unknown_paths_404() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let eid = ExecutionId::generate();
    let wid = WorkerId::generate();
    let mut c = Checks::new(&app);
    let wrong: Vec<(Method, String)> = vec![
        (Method::PUT, "/actors".into()),
        (Method::DELETE, "/actors".into()),
        (Method::PATCH, "/actors".into()),
        (Method::POST, format!("/actors/{aid}")),
        (Method::PATCH, format!("/actors/{aid}")),
        (Method::PUT, format!("/actors/{aid}/state")),
        (Method::DELETE, format!("/actors/{aid}/state")),
        (Method::PUT, format!("/actors/{aid}/messages")),
        (Method::PUT, format!("/actors/{aid}/executions")),
        (Method::DELETE, format!("/actors/{aid}/executions")),
        (Method::POST, format!("/actors/{aid}/executions/{eid}")),
        (Method::PUT, format!("/actors/{aid}/executions/{eid}")),
        (Method::POST, format!("/actors/{aid}/executions/{eid}/logs")),
        (
            Method::DELETE,
            format!("/actors/{aid}/executions/{eid}/logs"),
        ),
        (
            Method::POST,
            format!("/actors/{aid}/executions/{eid}/results"),
        ),
        (Method::PUT, format!("/actors/{aid}/workers")),
        (Method::DELETE, format!("/actors/{aid}/workers")),
        (Method::POST, format!("/actors/{aid}/workers/{wid}")),
        (Method::PUT, format!("/actors/{aid}/workers/{wid}")),
        (Method::PUT, "/actors/v2".into()),
        (Method::POST, format!("/actors/v2/{aid}")),
        (Method::PUT, format!("/actors/v2/{aid}/messages")),
    ];
    for (method, path) in wrong {
        // With and without a body: the method is refused before the body is looked at.
        c.check(method.clone(), &path, Body::None, 405, &[WRONG_METHOD])
            .await;
        c.check(
            method,
            &path,
            json_body(json!({"image": ECHO})),
            405,
            &[WRONG_METHOD],
        )
        .await;
    }
    let unknown: Vec<(Method, String)> = vec![
        (Method::GET, "/nope".into()),
        (Method::POST, "/nope".into()),
        (Method::DELETE, "/".into()),
        (Method::GET, "/actorsx".into()),
        (Method::GET, format!("/actors/{aid}/nope")),
        (Method::POST, format!("/actors/{aid}/nope")),
        (Method::GET, format!("/actors/{aid}/executions/{eid}/nope")),
        (Method::GET, format!("/actors/{aid}/workers/{wid}/nope")),
        (Method::GET, format!("/actors/v2/{aid}/nope")),
        (
            Method::GET,
            format!("/actors/{aid}/messages/extra/segments"),
        ),
    ];
    for (method, path) in unknown {
        c.check(method, &path, Body::None, 404, &["Invalid request"])
            .await;
    }
    c.finish();
    app.stop().await;
}

/// Force-quitting needs a real execution: one that already finished is refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_quit_of_a_finished_execution_is_400() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let eid = app.send_message(&aid, "finish quickly").await;
    let execution = app
        .wait_execution_final(&aid, &eid, Duration::from_secs(25))
        .await;
    let status = execution["status"].as_str().unwrap_or("").to_string();
    let mut c = Checks::new(&app);
    c.check(
        Method::DELETE,
        &format!("/actors/{aid}/executions/{eid}"),
        Body::None,
        400,
        &[&format!(
            "Cannot force quit an execution not in RUNNING status. Execution was found in status: {status}"
        )],
    )
    .await;
    c.check(
        Method::DELETE,
        &format!("/actors/v2/{aid}/executions/{eid}"),
        Body::None,
        400,
        &["Cannot force quit an execution not in RUNNING status."],
    )
    .await;
    // The refused force quit left the execution as it was.
    let (_, after) = app.get(&format!("/actors/{aid}/executions/{eid}")).await;
    c.expect(after["result"]["status"] == status.as_str(), || {
        format!("refused force quit changed the execution: {after}")
    });
    c.finish();
    app.stop().await;
}

/// Identifiers that are not valid UTF-8 name no actor, execution or worker: 404 (or 400) in the
/// envelope, like any other unknown identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_identifiers_get_the_envelope() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let mut c = Checks::new(&app);
    for (method, path) in [
        (Method::GET, "/actors/%FF%FE".to_string()),
        (Method::DELETE, "/actors/%FF%FE".to_string()),
        (Method::GET, "/actors/%FF%FE/executions".to_string()),
        (Method::GET, "/actors/v2/%FF%FE/messages".to_string()),
        (Method::GET, format!("/actors/{aid}/executions/%FF%FE")),
        (Method::GET, format!("/actors/{aid}/executions/%FF%FE/logs")),
        (Method::GET, format!("/actors/{aid}/workers/%FF%FE")),
    ] {
        c.check_any(method, &path, Body::None, &[400, 404], &[])
            .await;
    }
    c.finish();
    app.stop().await;
}

/// Bodies larger than the HTTP stack buffers are still answered in the envelope; a binary
/// message over `[web] max_content_length` is the documented 400 however large it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_the_envelope() {
    let Some(app) = start_quiet(Some("10")).await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let sid = actor_id(
        &app.register_actor(json!({"image": ECHO, "stateless": false}))
            .await,
    );
    let mut c = Checks::new(&app);
    let big = 3 * 1024 * 1024;
    c.check_large(
        Method::POST,
        &format!("/actors/{aid}/messages"),
        raw("application/octet-stream", vec![7u8; big]),
        &[400],
        &["Message exceeds max content length of: 10"],
    )
    .await;
    let mut unterminated = b"{\"image\": \"".to_vec();
    unterminated.resize(big, b'x');
    for (method, path) in [
        (Method::POST, "/actors".to_string()),
        (Method::PUT, format!("/actors/{aid}")),
        (Method::POST, format!("/actors/{aid}/workers")),
        (Method::POST, format!("/actors/{sid}/state")),
    ] {
        c.check_large(
            method,
            &path,
            raw("application/json", unterminated.clone()),
            &[400, 413],
            &[],
        )
        .await;
    }
    c.finish();
    app.stop().await;
}

/// `depth` arrays nested in one another.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// JSON nested deeper than the platform accepts (64 levels) is refused with 400 wherever it
/// would be kept — an actor's state, a message, an actor description — so no stored document
/// ever becomes unreadable; 64 levels are accepted and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_before_it_is_stored() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    let sid = actor_id(
        &app.register_actor(json!({"image": ECHO, "stateless": false}))
            .await,
    );
    let too_deep = "nested deeper than 64 levels";
    let mut c = Checks::new(&app);
    let state = format!("/actors/{sid}/state");
    for depth in [65, 127, 1000] {
        c.check(
            Method::POST,
            &state,
            raw("application/json", nested(depth)),
            400,
            &[too_deep],
        )
        .await;
        c.check(
            Method::POST,
            &format!("/actors/{aid}/messages"),
            raw("application/json", nested(depth)),
            400,
            &[too_deep],
        )
        .await;
        let description = format!(
            r#"{{"image": "{ECHO}", "default_environment": {{"deep": {}}}}}"#,
            nested(depth)
        );
        c.check(
            Method::POST,
            "/actors",
            raw("application/json", description),
            400,
            &[too_deep],
        )
        .await;
    }
    // At the limit: accepted, and the actor still reads back, alone and in the list.
    let (status, env) = app
        .call(
            app.request(Method::POST, &state)
                .header(CONTENT_TYPE, "application/json")
                .body(nested(64)),
        )
        .await;
    c.expect(status == 200, || {
        format!("state of 64 levels: {status} {env}")
    });
    for path in [format!("/actors/{sid}"), "/actors".to_string()] {
        let (status, env) = app.get(&path).await;
        c.expect(status == 200, || {
            format!("GET {path} after a deep state: {status} {env}")
        });
    }
    c.finish();
    app.stop().await;
}

/// A synchronous message whose actor is deleted while the request waits gets 404 in the
/// envelope, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_wait_ends_with_404_when_its_actor_is_deleted() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = actor_id(
        &app.register_actor(json!({"image": "abaco-test/sleep"}))
            .await,
    );
    app.wait_actor_status(&aid, "READY", Duration::from_secs(30))
        .await;
    let waiting = app
        .request(
            Method::POST,
            &format!("/actors/{aid}/messages?_abaco_synchronous=true&SLEEP=8"),
        )
        .header(CONTENT_TYPE, "text/plain")
        .body("wait for me")
        .send();
    let waiting = tokio::spawn(waiting);
    abaco_tests::wait_for("the execution to run", Duration::from_secs(30), || async {
        let (_, env) = app.get(&format!("/actors/{aid}/executions")).await;
        let running = env["result"]["executions"]
            .as_array()
            .is_some_and(|list| list.iter().any(|e| e["status"] == "RUNNING"));
        running.then_some(())
    })
    .await;
    let (status, env) = app.delete(&format!("/actors/{aid}")).await;
    assert_eq!(status, 200, "{env}");
    let answer = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the synchronous request answers once its actor is gone")
        .expect("the request task")
        .expect("the synchronous request gets an answer");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.expect("a JSON envelope");
    assert!(envelope_problems(&body).is_empty(), "{body}");
    // Usually the executions are gone before the wait looks again (404). The stopped container
    // may also be recorded first, and then the wait reports that ending (400). Never a 500.
    let message = body["message"].as_str().unwrap_or_default();
    println!("the wait ended with {status}: {message}");
    match status {
        404 => assert!(message.contains("its actor was deleted"), "{body}"),
        400 => assert!(
            message.contains("ERROR") || message.contains("error"),
            "{body}"
        ),
        other => panic!("status {other} for a wait whose actor was deleted: {body}"),
    }
    app.stop().await;
}

/// A `tenant` header that is not a valid tenant name — including bytes that are not text — is
/// refused with 400, never read as the default tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenant_headers_are_400() {
    let Some(app) = start_quiet(None).await else {
        return;
    };
    let client = reqwest::Client::new();
    for tenant in [
        reqwest::header::HeaderValue::from_static("A_B"),
        reqwest::header::HeaderValue::from_static("a b"),
        reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").expect("an opaque header value"),
    ] {
        let resp = client
            .get(app.url("/actors"))
            .header("tenant", tenant.clone())
            .send()
            .await
            .expect("an answer");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON envelope");
        assert_eq!(status, 400, "tenant {tenant:?}: {body}");
        assert!(envelope_problems(&body).is_empty(), "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Invalid tenant")),
            "{body}"
        );
    }
    app.stop().await;
}

/// A mailbox message the worker cannot read (the API refuses such input, so it is put in the
/// mailbox directly) ends its execution in ERROR with the reason, instead of leaving it
/// SUBMITTED for ever; the worker carries on with the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_mailbox_message_ends_its_execution_in_error() {
    use abaco_core::messages::{ContentType, MessageBody};
    use abaco_core::{DbId, Execution, MailboxMessage, Tenant};

    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let aid = actor_id(&app.register_actor(json!({"image": ECHO})).await);
    app.wait_actor_status(&aid, "READY", Duration::from_secs(30))
        .await;
    let db_id = DbId::new(
        &Tenant::from(app.tenant.as_str()),
        &ActorId::from(aid.as_str()),
    );
    let actor = app
        .control
        .store
        .actor(&db_id)
        .await
        .expect("the store answers")
        .expect("the registered actor");
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let eid = ExecutionId::generate();
    let execution = Execution::submitted(&actor, eid.clone(), "tester", abaco_core::time::now());
    let message = MailboxMessage {
        execution_id: eid.clone(),
        content_type: ContentType::Json,
        message: MessageBody::Json(deep),
        env: serde_json::Map::new(),
    };
    app.control
        .enqueue(&execution, &message)
        .await
        .expect("the message is queued");
    let ended = app
        .wait_execution_final(&aid, eid.as_str(), Duration::from_secs(30))
        .await;
    assert_eq!(ended["status"], "ERROR", "{ended}");
    assert!(
        ended["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be read")),
        "{ended}"
    );
    // The worker is still serving its mailbox.
    let next = app.send_message(&aid, "after the unreadable one").await;
    let done = app
        .wait_execution_final(&aid, &next, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "COMPLETE", "{done}");
    app.stop().await;
}
