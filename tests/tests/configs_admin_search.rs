//! Actor configs, the admin routes, utilization and search, black-box. Configs run in both modes:
//! CRUD and validation, secrets encrypted in the store and masked in every answer, and delivery
//! to containers as `_actor_configs` (by id and by alias, whole entries only, secrets decrypted).
//! Admin, utilization and search run in both modes over real executions. Non-admin behaviour
//! (config permissions, refusals, admin-only routes, permission-filtered search) runs with
//! `access_control = jwt` and a gateway key the test generates.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abaco_identity::{SecretBox, TokenIssuer};
use abaco_store::Kind;
use abaco_tests::{unique, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

const ACTOR: &str = "abaco-test/actor:latest";
const FINISH_WITHIN: Duration = Duration::from_secs(90);
const DENIED: &str = "You do not have sufficient access to this actor config.";

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn ok(status: StatusCode, env: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["status"], "success", "{env}");
    env["result"].clone()
}

fn err(status: StatusCode, env: &Value, want: u16, contains: &str) {
    assert_eq!(status.as_u16(), want, "{env}");
    assert_eq!(env["status"], "error", "{env}");
    let message = env["message"].as_str().unwrap_or_default();
    assert!(message.contains(contains), "{contains:?} not in {env}");
}

/// The ids of a search result's items.
fn ids(result: &Value) -> Vec<String> {
    result["search"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

fn with_key(builder: abaco_tests::Builder) -> abaco_tests::Builder {
    builder.with("web", "encryption_key", &SecretBox::generate_key())
}

// ---- configs ---------------------------------------------------------------------------------

fn config(name: &str, value: &str, secret: bool, actors: &str) -> Value {
    json!({"name": name, "value": value, "is_secret": secret, "actors": actors})
}

/// Sends `body` with `method` to `path` and returns the status and envelope.
async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    app.call(app.request(method, path).json(&body)).await
}

async fn configs(app: TestApp) {
    let a = id_of(&app.register_actor(json!({"image": ACTOR})).await);
    let b = id_of(&app.register_actor(json!({"image": ACTOR})).await);
    let short = unique("via-");
    let long = format!("{short}-long");
    for (alias, actor) in [(&short, &a), (&long, &b)] {
        let body = json!({"alias": alias, "actor_id": actor});
        let (s, env) = app.post_json("/actors/aliases", body).await;
        ok(s, &env);
    }
    let post = |body: Value| send(&app, Method::POST, "/actors/configs", body);

    // Validation.
    let name_help =
        "Invalid config description. Missing required field: {'name': 'Name of the config'}";
    for (body, status, message) in [
        (json!({}), 400, name_help),
        (
            json!({"name": "x", "value": "v", "actors": a}),
            400,
            "{'is_secret':",
        ),
        (
            json!({"name": "x", "value": "v", "is_secret": "maybe", "actors": a}),
            400,
            "{'is_secret':",
        ),
        (
            config("admin", "v", false, &a),
            400,
            "admin is a reserved word.",
        ),
        (
            config("a b", "v", false, &a),
            400,
            "' ' is a forbidden character.",
        ),
        (
            config("x", "v", false, &format!("{a}, nope")),
            404,
            "No actor or alias found with id: nope.",
        ),
        (config("x", "v", false, " , "), 400, "{'actors':"),
    ] {
        let (s, env) = post(body).await;
        err(s, &env, status, message);
    }

    // A plain config, a secret one (`isSecret` as a string), one by alias, and one naming only
    // an alias that merely starts with the alias of `a`.
    let (s, env) = post(config("plain", "hello", false, &a)).await;
    assert_eq!(ok(s, &env), config("plain", "hello", false, &a));
    let (s, env) = post(config("plain", "again", false, &a)).await;
    err(s, &env, 400, "Config plain already exists");
    let secret = unique("s3cr3t-");
    let body =
        json!({"name": "pw", "value": secret, "isSecret": "true", "actors": format!("{a} , {b}")});
    let (s, env) = post(body).await;
    let shown = ok(s, &env);
    assert_eq!(
        (&shown["value"], &shown["is_secret"]),
        (&json!("********"), &json!(true))
    );
    assert!(!env.to_string().contains(&secret) && !env.to_string().contains("v1:"));
    for (name, actors) in [("viaalias", &short), ("prefix", &long)] {
        let (s, env) = post(config(name, name, false, actors)).await;
        ok(s, &env);
    }

    // The secret is ciphertext at rest, and no read shows it.
    let stored = app
        .control
        .store
        .raw()
        .get(Kind::Configs, &format!("{}_pw", app.tenant))
        .await
        .expect("store answers")
        .expect("config stored");
    let at_rest = stored["value"].as_str().expect("stored value");
    assert!(at_rest.starts_with("v1:"), "{stored}");
    assert!(!stored.to_string().contains(&secret), "{stored}");
    let (s, env) = app.get("/actors/configs").await;
    let list = ok(s, &env);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["plain", "pw", "viaalias", "prefix"]);
    assert!(!env.to_string().contains(&secret) && !env.to_string().contains("v1:"));
    let (s, env) = app.get("/actors/configs/pw").await;
    assert_eq!(ok(s, &env)["value"], "********");
    let (s, env) = app.get("/actors/configs/nope").await;
    err(s, &env, 404, "No config found: nope.");

    // Update keeps the URL name; permissions of the config.
    let (s, env) = app
        .put_json(
            "/actors/configs/plain",
            config("renamed", "changed", false, &a),
        )
        .await;
    assert_eq!(ok(s, &env), config("plain", "changed", false, &a));
    let (s, env) = app
        .put_json("/actors/configs/nope", config("nope", "v", false, &a))
        .await;
    err(s, &env, 404, "No config found: nope.");
    let (s, env) = app.get("/actors/configs/plain/permissions").await;
    assert_eq!(ok(s, &env), json!({"anonymous": "UPDATE"}));
    let perms = "/actors/configs/plain/permissions";
    let (s, env) = app
        .post_json(perms, json!({"user": "bob", "level": "READ"}))
        .await;
    assert_eq!(ok(s, &env), json!({"anonymous": "UPDATE", "bob": "READ"}));
    let (s, env) = app
        .post_json(perms, json!({"user": "bob", "level": "ALL"}))
        .await;
    err(s, &env, 400, "Invalid permission level: ALL.");

    // Delivery: `a` gets its configs (the secret decrypted), `b` the secret and `prefix`.
    let eid = app.send_message(&a, "configs").await;
    app.wait_execution_final(&a, &eid, FINISH_WITHIN).await;
    let logs = app.logs(&a, &eid).await;
    let want =
        format!("_actor_configs={{'plain': 'changed', 'pw': '{secret}', 'viaalias': 'viaalias'}}");
    assert!(logs.lines().any(|l| l == want), "{want} not in {logs}");
    let eid = app.send_message(&b, "configs").await;
    app.wait_execution_final(&b, &eid, FINISH_WITHIN).await;
    let logs = app.logs(&b, &eid).await;
    let want = format!("_actor_configs={{'pw': '{secret}', 'prefix': 'prefix'}}");
    assert!(logs.lines().any(|l| l == want), "{want} not in {logs}");

    // Delete.
    let (s, env) = app.delete("/actors/configs/plain").await;
    assert_eq!(env["message"], "Actor config plain deleted successfully.");
    ok(s, &env);
    let (s, env) = app.delete("/actors/configs/plain").await;
    err(s, &env, 404, "No config found with name: plain.");
    let (s, env) = app.get("/actors/configs/plain/permissions").await;
    err(s, &env, 404, "No config found: plain.");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_embedded() {
    let Some(app) = with_key(TestApp::embedded()).start().await else {
        return;
    };
    configs(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_distributed() {
    let Some(app) = with_key(TestApp::distributed()).start().await else {
        return;
    };
    configs(app).await;
}

// ---- admin, utilization, search --------------------------------------------------------------

/// Idle workers stay, so worker records are there to search. (In the distributed mode other
/// tests' autoscalers share the store; the actor whose worker is checked is stateful, which no
/// autoscaler scales.)
fn steady(builder: abaco_tests::Builder) -> abaco_tests::Builder {
    builder.with("workers", "autoscaling", "false")
}

async fn search(app: &TestApp, query: &str) -> Value {
    let (s, env) = app.get(&format!("/actors/search/{query}")).await;
    ok(s, &env)
}

async fn count(app: &TestApp, query: &str) -> u64 {
    total(&search(app, query).await)
}

fn total(result: &Value) -> u64 {
    result["_metadata"]["total_count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total_count in {result}"))
}

async fn admin_and_search(app: TestApp) {
    let tag = unique("tag");
    let alpha = app
        .register_actor(
            json!({"image": ACTOR, "name": format!("alpha-{tag}"), "description": "Find ME"}),
        )
        .await;
    let beta = app
        .register_actor(json!({"image": ACTOR, "name": format!("beta-{tag}"), "stateless": false}))
        .await;
    let (a, b) = (id_of(&alpha), id_of(&beta));
    let mut executions = Vec::new();
    for (actor, text, query) in [
        (&a, "first", ""),
        (&a, "second", ""),
        (&a, "third", "?EXIT_CODE=3"),
        (&b, "fourth", ""),
    ] {
        let msg = format!("{text}-{tag}");
        let (s, env) = app
            .post_json(
                &format!("/actors/{actor}/messages{query}"),
                json!({"message": msg}),
            )
            .await;
        let eid = ok(s, &env)["execution_id"]
            .as_str()
            .expect("eid")
            .to_string();
        executions.push((actor.clone(), eid));
    }
    for (actor, eid) in &executions {
        app.wait_execution_final(actor, eid, FINISH_WITHIN).await;
    }

    // Actors.
    let all = search(&app, "actors").await;
    assert_eq!(total(&all), 2, "{all}");
    let item = &all["search"][0];
    assert_eq!(item["id"], a.as_str());
    assert!(item["_links"]["self"]
        .as_str()
        .unwrap_or_default()
        .ends_with(&a));
    for hidden in ["tenant", "api_server", "db_id"] {
        assert!(item.get(hidden).is_none(), "{hidden} in {item}");
    }
    assert_eq!(
        ids(&search(&app, &format!("actors?name=alpha-{tag}")).await),
        [a.as_str()]
    );
    assert_eq!(
        ids(&search(&app, "ACTORS?name.like=^beta-").await),
        [b.as_str()]
    );
    assert_eq!(
        ids(&search(&app, "actors?name.nlike=^beta-").await),
        [a.as_str()]
    );
    let both = format!("actors?name.in=alpha-{tag},beta-{tag}");
    assert_eq!(count(&app, &both).await, 2);
    assert_eq!(count(&app, &format!("actors?name.nin=beta-{tag}")).await, 1);
    assert_eq!(count(&app, "actors?create_time.gt=2000-01-01").await, 2);
    assert_eq!(count(&app, "actors?create_time.lt=2000").await, 0);
    assert_eq!(
        ids(&search(&app, "actors?stateless=false").await),
        [b.as_str()]
    );
    assert_eq!(
        count(&app, "actors?stateless.neq=false&revision.gte=1").await,
        1
    );
    assert_eq!(ids(&search(&app, "actors?search=find").await), [a.as_str()]);
    assert_eq!(
        ids(&search(&app, "actors?exactsearch=find+me").await),
        [a.as_str()]
    );

    // Executions, with paging.
    let all = search(&app, "executions").await;
    assert_eq!(total(&all), 4, "{all}");
    let first = &all["search"][0];
    assert_eq!(first["actor_id"], a.as_str(), "{first}");
    assert!(first.get("tenant").is_none() && first.get("api_server").is_none());
    assert!(first["_links"]["logs"]
        .as_str()
        .unwrap_or_default()
        .ends_with("/logs"));
    assert_eq!(count(&app, &format!("executions?actor_id={a}")).await, 3);
    assert_eq!(count(&app, "executions?exit_code=3").await, 1);
    assert_eq!(count(&app, "executions?exit_code.neq=3").await, 3);
    assert_eq!(
        count(&app, "executions?runtime.gte=0&status=COMPLETE").await,
        4
    );
    let window = "executions?message_received_time.between=2000-01-01,2999-12-31";
    assert_eq!(count(&app, window).await, 4);
    let page = search(&app, "executions?limit=2").await;
    assert_eq!(
        page["_metadata"],
        json!({"total_count": 4, "records_skipped": 0, "record_limit": 2, "count_returned": 2})
    );
    let page = search(&app, "executions?skip=3&limit=2").await;
    assert_eq!(page["_metadata"]["count_returned"], 1);
    assert_eq!(page["search"][0]["id"], executions[3].1.as_str());

    // Workers and logs.
    let workers = search(&app, &format!("workers?actor_id={b}")).await;
    assert!(total(&workers) >= 1, "{workers}");
    for w in workers["search"].as_array().expect("items") {
        assert_eq!(w["actor_id"], b.as_str(), "{w}");
        assert!(
            w.get("tenant").is_none() && w["create_time"].is_string(),
            "{w}"
        );
    }
    assert_eq!(
        count(&app, &format!("workers?actor_id.nin={a},{b}")).await,
        0
    );
    let logs = search(&app, &format!("logs?logs.like=second-{tag}")).await;
    assert_eq!(total(&logs), 1, "{logs}");
    let entry = &logs["search"][0];
    assert!(entry["logs"]
        .as_str()
        .unwrap_or_default()
        .contains("MSG=second-"));
    assert!(entry["_links"]["execution"]
        .as_str()
        .unwrap_or_default()
        .ends_with(&executions[1].1));
    assert_eq!(count(&app, &format!("logs?actor_id={a}")).await, 3);
    assert_eq!(
        count(&app, &format!("logs?exactsearch=FOURTH-{tag}")).await,
        1
    );

    // Bad input is a 400, never a 500.
    for (query, contains) in [
        ("nodes", "actors, workers, executions, logs"),
        ("actors?skip=-1", "skip"),
        ("actors?limit=ten", "limit"),
        ("executions?start_time.gt=yesterday", "Invalid datetime"),
        ("actors?name.like=(a|b)", "not supported"),
    ] {
        let (s, env) = app.get(&format!("/actors/search/{query}")).await;
        err(s, &env, 400, contains);
    }

    // Admin routes (global) and utilization.
    let (s, env) = app.get("/actors/admin").await;
    let actors = ok(s, &env);
    let mine = actors
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["id"] == a.as_str())
        .unwrap_or_else(|| panic!("{a} not in {actors}"));
    assert_eq!(mine["executions"], 3, "{mine}");
    assert_eq!(mine["db_id"], format!("{}_{a}", app.tenant));
    assert!(mine["workers"].is_array() && mine["messages"].is_u64() && mine["runtime"].is_i64());
    let (s, env) = app.get("/actors/admin/workers").await;
    let result = ok(s, &env);
    for key in [
        "total_workers",
        "ready_workers",
        "requested_workers",
        "error_workers",
        "busy_workers",
        "actors_no_workers",
    ] {
        assert!(result["summary"][key].is_u64(), "{key} in {result}");
    }
    let worker = result["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["actor_id"] == b.as_str())
        .unwrap_or_else(|| panic!("no worker of {b} in {result}"));
    assert_eq!(worker["actor_dbid"], format!("{}_{b}", app.tenant));
    let (s, env) = app.get("/actors/admin/executions").await;
    let result = ok(s, &env);
    let summary = &result["summary"];
    assert!(
        summary["total_executions_all"].as_u64() >= Some(4),
        "{summary}"
    );
    assert!(
        summary["total_actors_existing"].as_u64() >= Some(2),
        "{summary}"
    );
    let row = result["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .find(|x| x["actor_id"] == a.as_str())
        .unwrap_or_else(|| panic!("{a} not in {result}"));
    assert_eq!(row["total_executions"], 3);
    assert_eq!(row["image"], ACTOR);
    let (s, env) = app.get("/actors/utilization").await;
    let result = ok(s, &env);
    assert!(
        result["currentActors"].as_u64().unwrap_or(0) >= 2,
        "{result}"
    );
    for key in ["totalActors", "workers", "commandQueue"] {
        assert!(result[key].is_u64(), "{key} in {result}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_search_embedded() {
    let Some(app) = steady(TestApp::embedded()).start().await else {
        return;
    };
    admin_and_search(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_search_distributed() {
    let Some(app) = steady(TestApp::distributed()).start().await else {
        return;
    };
    admin_and_search(app).await;
}

// ---- non-admin users (access_control = jwt) --------------------------------------------------

struct Users {
    app: TestApp,
    issuer: TokenIssuer,
}

impl Users {
    /// A platform trusting the test's gateway key, without an encryption key, that starts no
    /// workers on registration.
    async fn start() -> Option<Users> {
        let issuer = TokenIssuer::generate().expect("RSA key");
        let app = TestApp::embedded()
            .with("web", "access_control", "jwt")
            .with("web", "apim_public_key", &issuer.public_key_base64())
            .with("web", "tenant_name", &unique("JWT").to_ascii_uppercase())
            .with("workers", "init_count", "0")
            .start()
            .await?;
        Some(Users { app, issuer })
    }

    /// A request as `user` (`root` is an administrator) with a JSON body unless it is null.
    async fn call(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let role = match user {
            "root" => "Internal/abaco-admin",
            _ => "Internal/abaco-user",
        };
        let mut claims = Map::new();
        let enduser = format!("{user}@carbon.super");
        claims.insert("http://wso2.org/claims/enduser".into(), json!(enduser));
        claims.insert("http://wso2.org/claims/role".into(), json!(role));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        let now = i64::try_from(now.as_secs()).expect("time fits");
        let token = self.issuer.issue(claims, 3600, now).expect("token signs");
        let mut req = self.app.request(method, path).bearer_auth(token);
        if !body.is_null() {
            req = req.json(&body);
        }
        self.app.call(req).await
    }

    async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        self.call(user, Method::GET, path, Value::Null).await
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(user, Method::POST, path, body).await
    }

    async fn register(&self, user: &str) -> String {
        let (s, env) = self.post(user, "/actors", json!({"image": ACTOR})).await;
        id_of(&ok(s, &env))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_manage_their_configs_and_see_only_their_records() {
    let Some(u) = Users::start().await else {
        return;
    };
    let a = u.register("alice").await;
    let b = u.register("bob").await;
    let configs = "/actors/configs";
    let shared = "/actors/configs/shared";
    let perms = "/actors/configs/shared/permissions";

    let (s, env) = u
        .post("alice", configs, config("shared", "v", false, &a))
        .await;
    ok(s, &env);
    let (s, env) = u
        .post("alice", configs, config("theirs", "v", false, &b))
        .await;
    err(
        s,
        &env,
        400,
        &format!("you do not have UPDATE access to actor {b}"),
    );
    let (s, env) = u.post("alice", configs, config("pw", "v", true, &a)).await;
    err(s, &env, 400, "encryption_key");
    // A config named after bob's actor gives alice nothing on that actor.
    let (s, env) = u.post("alice", configs, config(&b, "v", false, &a)).await;
    ok(s, &env);
    let (s, env) = u.get("alice", &format!("/actors/{b}")).await;
    err(s, &env, 400, "Not authorized");

    // Owners read and change their configs; others are refused and do not see them.
    let (s, env) = u.get("alice", shared).await;
    assert_eq!(ok(s, &env)["value"], "v");
    let (s, env) = u.get("alice", perms).await;
    assert_eq!(ok(s, &env), json!({"alice": "UPDATE"}));
    let (s, env) = u.get("bob", configs).await;
    assert_eq!(ok(s, &env), json!([]));
    for (method, path, body) in [
        (Method::GET, shared, Value::Null),
        (Method::PUT, shared, config("shared", "x", false, &a)),
        (Method::DELETE, shared, Value::Null),
        (Method::GET, perms, Value::Null),
        (
            Method::POST,
            perms,
            json!({"user": "bob", "level": "UPDATE"}),
        ),
    ] {
        let (s, env) = u.call("bob", method, path, body).await;
        err(s, &env, 400, DENIED);
    }

    // Shared for reading only.
    let (s, env) = u
        .post("alice", perms, json!({"user": "bob", "level": "READ"}))
        .await;
    ok(s, &env);
    let (s, env) = u.get("bob", configs).await;
    assert_eq!(ok(s, &env)[0]["name"], "shared");
    let (s, env) = u.get("bob", shared).await;
    ok(s, &env);
    let (s, env) = u.call("bob", Method::DELETE, shared, Value::Null).await;
    err(s, &env, 400, DENIED);
    let body = json!({"value": "w", "is_secret": false, "actors": a});
    let (s, env) = u.call("alice", Method::PUT, shared, body).await;
    assert_eq!(ok(s, &env)["value"], "w");

    // Admin routes need the admin role; utilization and search do not; search is filtered.
    for path in [
        "/actors/admin",
        "/actors/admin/workers",
        "/actors/admin/executions",
    ] {
        let (s, env) = u.get("alice", path).await;
        err(s, &env, 400, "Abaco Admin role required.");
        let (s, env) = u.get("root", path).await;
        ok(s, &env);
    }
    let (s, env) = u.get("bob", "/actors/utilization").await;
    assert!(ok(s, &env)["currentActors"].as_u64().unwrap_or(0) >= 2);
    for (user, want) in [
        ("alice", vec![a.as_str()]),
        ("bob", vec![b.as_str()]),
        ("root", vec![a.as_str(), b.as_str()]),
    ] {
        let (s, env) = u.get(user, "/actors/search/actors").await;
        assert_eq!(ids(&ok(s, &env)), want, "{user}");
    }

    let (s, env) = u.call("alice", Method::DELETE, shared, Value::Null).await;
    ok(s, &env);
    u.app.stop().await;
}
