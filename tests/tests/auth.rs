//! Authentication, authorization and tokens seen from outside (spec §2, §2.8, §7.4): gateway JWT
//! validation and its tolerated quirks, roles and privileged fields, the permission matrix,
//! tenant isolation, the platform's OAuth token endpoint driven by the `oauth2` crate, and
//! clientg's per-worker tokens end to end (an actor calling another actor with its token, and
//! the token dying with its worker).
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abaco_identity::TokenIssuer;
use abaco_tests::{unique, wait_for, Builder, TestApp};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType};
use oauth2::{ClientId, ClientSecret, RequestTokenError, TokenResponse, TokenUrl};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

const USER_ROLE: &str = "Internal/abaco-user";
const ADMIN_ROLE: &str = "Internal/abaco-admin";
const PRIVILEGED_ROLE: &str = "Internal/abaco-privileged";
const LIMITED_ROLE: &str = "Internal/abaco-limited";
const ENDUSER: &str = "http://wso2.org/claims/enduser";
const ROLE: &str = "http://wso2.org/claims/role";

const NO_ACCESS: &str = "Not authorized -- you do not have access to this actor.";
const ONLY_ADMINS_WORKERS: &str = "Not authorized -- only admins are authorized to update workers.";
const MISSING_ROLE: &str = "Not authorized -- missing required role.";

const ECHO: &str = "abaco-test/echo:latest";
const CALLER: &str = "abaco-test/caller:latest";
const TEST_ACTOR: &str = "abaco-test/actor:latest";

/// Registration until the first worker is READY (2 shared cores, parallel tests).
const READY_WITHIN: Duration = Duration::from_secs(120);
/// One execution, from the send to a final status.
const RUN_WITHIN: Duration = Duration::from_secs(120);
/// A deleted worker disappears, and the health sweep revokes its OAuth client.
const GONE_WITHIN: Duration = Duration::from_secs(60);

// ---- tokens -------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

fn tenant_name() -> String {
    unique("T").to_ascii_uppercase()
}

/// The claims of a WSO2 gateway token for `user` with the comma-separated `roles`.
fn claims(user: &str, roles: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(ENDUSER.into(), json!(format!("{user}@carbon.super")));
    m.insert(ROLE.into(), json!(roles));
    m
}

/// A stand-in for a tenant's identity gateway: an RSA key whose public half goes into
/// `[web] apim_public_key`, issuing standard tokens and signing hand-made ones.
struct Gateway {
    issuer: TokenIssuer,
    pair: RsaKeyPair,
}

impl Gateway {
    fn new() -> Gateway {
        let issuer = TokenIssuer::generate().expect("RSA key generation");
        let pair = RsaKeyPair::from_pkcs8(&issuer.to_pkcs8()).expect("PKCS#8 loads");
        Gateway { issuer, pair }
    }

    fn public_key(&self) -> String {
        self.issuer.public_key_base64()
    }

    /// A valid standard RS256 token (base64url, `exp` in seconds, one hour).
    fn token(&self, user: &str, roles: &str) -> String {
        self.issue(claims(user, roles), 3600)
    }

    fn issue(&self, claims: Map<String, Value>, ttl: i64) -> String {
        self.issuer
            .issue(claims, ttl, now_secs())
            .expect("token issued")
    }

    /// RSASSA-PKCS1-v1_5 / SHA-256 over `signed`, raw bytes.
    fn signature(&self, signed: &str) -> Vec<u8> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        sig
    }

    /// A token from raw header and payload JSON, encoded and signed as given.
    fn raw_token(&self, header: &str, payload: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = URL_SAFE_NO_PAD.encode(self.signature(&signed));
        format!("{signed}.{sig}")
    }
}

// ---- callers ------------------------------------------------------------------------------------

/// A caller of the API with its own authentication header.
#[derive(Clone)]
struct User {
    http: reqwest::Client,
    base: String,
    header: (String, String),
}

impl User {
    /// Sends `token` in `X-Jwt-Assertion-<tenant>`.
    fn jwt(app: &TestApp, tenant: &str, token: &str) -> User {
        User {
            http: reqwest::Client::new(),
            base: app.base.clone(),
            header: (format!("X-Jwt-Assertion-{tenant}"), token.to_string()),
        }
    }

    /// Sends `token` as `Authorization: Bearer`.
    fn bearer(app: &TestApp, token: &str) -> User {
        User {
            http: reqwest::Client::new(),
            base: app.base.clone(),
            header: (
                AUTHORIZATION.as_str().to_string(),
                format!("Bearer {token}"),
            ),
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(self.header.0.as_str(), self.header.1.as_str())
    }

    /// Status and body; a body that is not JSON comes back as a JSON string.
    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request reaches the API");
        let status = resp.status();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        self.send(req).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&body)).await
    }

    async fn register(&self, body: Value) -> String {
        let (status, env) = self.post("/actors", body).await;
        assert_eq!(status, StatusCode::OK, "register failed: {env}");
        env["result"]["id"].as_str().expect("actor id").to_string()
    }

    async fn message(&self, actor: &str, text: &str) -> String {
        let (status, env) = self
            .post(
                &format!("/actors/{actor}/messages"),
                json!({"message": text}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send failed: {env}");
        env["result"]["execution_id"]
            .as_str()
            .expect("execution_id")
            .to_string()
    }

    async fn wait_ready(&self, actor: &str) {
        let path = format!("/actors/{actor}");
        wait_for(&format!("actor {actor} READY"), READY_WITHIN, || async {
            let (_, env) = self.get(&path).await;
            let status = env["result"]["status"].as_str().unwrap_or("").to_string();
            assert_ne!(status, "ERROR", "actor {actor} failed: {env}");
            (status == "READY").then_some(())
        })
        .await;
    }

    async fn wait_final(&self, actor: &str, eid: &str) -> Value {
        let path = format!("/actors/{actor}/executions/{eid}");
        wait_for(&format!("execution {eid} final"), RUN_WITHIN, || async {
            let (_, env) = self.get(&path).await;
            let status = env["result"]["status"].as_str().unwrap_or("");
            (status == "COMPLETE" || status == "ERROR").then(|| env["result"].clone())
        })
        .await
    }

    async fn logs(&self, actor: &str, eid: &str) -> String {
        let (status, env) = self
            .get(&format!("/actors/{actor}/executions/{eid}/logs"))
            .await;
        assert_eq!(status, StatusCode::OK, "logs: {env}");
        env["result"]["logs"].as_str().unwrap_or("").to_string()
    }

    async fn worker_ids(&self, actor: &str) -> Vec<String> {
        let (status, env) = self.get(&format!("/actors/{actor}/workers")).await;
        assert_eq!(status, StatusCode::OK, "workers: {env}");
        env["result"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn actor_ids(&self) -> Vec<String> {
        let (status, env) = self.get("/actors").await;
        assert_eq!(status, StatusCode::OK, "list: {env}");
        env["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets `user`'s level on the actor (the caller must hold UPDATE).
    async fn grant(&self, actor: &str, user: &str, level: &str) {
        let (status, env) = self
            .post(
                &format!("/actors/{actor}/permissions"),
                json!({"user": user, "level": level}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "grant {user} {level}: {env}");
        assert_eq!(env["result"][user], level, "grant answer: {env}");
    }
}

/// Asserts an error envelope with `status` whose message contains `needle`.
fn assert_error(what: &str, got: &(StatusCode, Value), status: StatusCode, needle: &str) {
    let (code, env) = got;
    assert_eq!(*code, status, "{what}: {env}");
    assert_eq!(env["status"], "error", "{what}: envelope {env}");
    assert!(env["result"].is_null(), "{what}: envelope {env}");
    assert!(env.get("version").is_some(), "{what}: envelope {env}");
    let message = env["message"].as_str().unwrap_or("");
    assert!(
        message.contains(needle),
        "{what}: message {message:?} does not contain {needle:?}"
    );
}

/// JWT mode with the gateway's key for the two tenants; T1 is also the default tenant
/// (`Authorization: Bearer` without a tenant header).
fn jwt_mode(builder: Builder, gw: &Gateway, t1: &str, t2: &str) -> Builder {
    builder
        .with("web", "access_control", "jwt")
        .with("web", "apim_public_key", &gw.public_key())
        .with("web", "tenants", &format!("{t1},{t2}"))
        .with("web", "tenant_name", t1)
}

/// No worker starts at registration and the autoscaler stays still: the API alone.
fn quiet(builder: Builder) -> Builder {
    builder
        .with("workers", "init_count", "0")
        .with("workers", "autoscaling", "false")
}

// ---- 1. token validation ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tokens_are_verified() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(jwt_mode(TestApp::embedded(), &gw, &t1, &t2))
        .start()
        .await
    else {
        return;
    };
    let valid = gw.token("alice", USER_ROLE);
    let (status, env) = User::jwt(&app, &t1, &valid).get("/actors").await;
    assert_eq!(status, StatusCode::OK, "valid token: {env}");
    assert_eq!(env["status"], "success");

    // Rejections: 401 with the envelope and a message naming the problem.
    let payload = serde_json::to_string(&claims("alice", ADMIN_ROLE)).expect("json");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    let hs256 = {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        // The RS/HS confusion attack: HMAC keyed with the public key as configured.
        let key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, gw.public_key().as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let stranger = Gateway::new().token("alice", USER_ROLE);
    let expired = gw.issue(claims("alice", USER_ROLE), -3600);
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(serde_json::to_string(&claims("mallory", ADMIN_ROLE)).expect("json"));
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let no_user = {
        let mut c = Map::new();
        c.insert(ROLE.into(), json!(USER_ROLE));
        gw.issue(c, 3600)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "unsupported token algorithm: none"),
        (
            "HS256 keyed with the public key",
            hs256,
            "unsupported token algorithm: HS256",
        ),
        (
            "signed by another key",
            stranger,
            "signature does not verify",
        ),
        ("expired (exp in seconds, an hour ago)", expired, "expired"),
        ("tampered payload", tampered, "signature does not verify"),
        ("garbage", "not-a-jwt".into(), "malformed"),
        ("garbage with dots", "a.b.c".into(), "malformed"),
        ("no enduser claim", no_user, "names no user"),
    ];
    for (what, token, needle) in &cases {
        let got = User::jwt(&app, &t1, token).get("/actors").await;
        assert_error(what, &got, StatusCode::UNAUTHORIZED, "Invalid JWT");
        assert_error(what, &got, StatusCode::UNAUTHORIZED, needle);
        // The same token as a Bearer token of the default tenant is refused alike.
        let got = User::bearer(&app, token).get("/actors").await;
        assert_error(what, &got, StatusCode::UNAUTHORIZED, needle);
    }

    // A tenant header naming a tenant that is not configured.
    let other = tenant_name();
    let got = User::jwt(&app, &other, &valid).get("/actors").await;
    assert_error(
        "unconfigured tenant",
        &got,
        StatusCode::UNAUTHORIZED,
        "not configured",
    );
    assert_error(
        "unconfigured tenant",
        &got,
        StatusCode::UNAUTHORIZED,
        &other,
    );

    // No token at all (nonces are accepted): named as such. Abaco answered 400 here; 401 is
    // accepted as well.
    let resp = reqwest::Client::new()
        .get(app.url("/actors"))
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let env: Value = resp.json().await.expect("JSON envelope");
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
        "no token: {status} {env}"
    );
    assert_eq!(env["message"], "No JWT or nonce provided.", "{env}");

    // Tolerated quirks of Abaco's gateway.
    // (a) segments in padded standard base64, signature included.
    let padded = {
        let header = r#"{"typ":"JWT","alg":"RS256"}"#;
        let mut body = claims("alice", USER_ROLE);
        body.insert("note".into(), json!("???>>>???>>>"));
        let json = serde_json::to_string(&body).expect("json");
        let mut found = None;
        'search: for lead in 0..3 {
            for trail in 0..3 {
                let text = format!("{}{json}{}", " ".repeat(lead), " ".repeat(trail));
                let seg = STANDARD.encode(&text);
                if seg.ends_with('=') && (seg.contains('+') || seg.contains('/')) {
                    found = Some(seg);
                    break 'search;
                }
            }
        }
        let payload_seg = found.expect("a padded payload segment with + or /");
        let signed = format!("{}.{payload_seg}", STANDARD.encode(header));
        format!("{signed}.{}", STANDARD.encode(gw.signature(&signed)))
    };
    assert!(padded.contains('='), "the quirky token is padded: {padded}");
    // (b) `exp` in milliseconds, an hour ahead; and Abaco's test tokens' 2017 milliseconds.
    let exp_ms = |exp: i64| {
        let mut c = claims("alice", USER_ROLE);
        c.insert("exp".into(), json!(exp));
        gw.raw_token(
            r#"{"typ":"JWT","alg":"RS256"}"#,
            &serde_json::to_string(&c).expect("json"),
        )
    };
    let ms_future = exp_ms((now_secs() + 3600) * 1000);
    let ms_abaco = exp_ms(1_494_361_287_000);
    // (c) `alg` spelled SHA256withRSA.
    let sha256_with_rsa = gw.raw_token(
        r#"{"typ":"JWT","alg":"SHA256withRSA"}"#,
        &serde_json::to_string(&claims("alice", USER_ROLE)).expect("json"),
    );
    let accepted: Vec<(&str, String)> = vec![
        ("padded standard base64", padded),
        ("exp in ms (future)", ms_future),
        ("exp in ms (Abaco's 2017 tokens)", ms_abaco),
        ("alg SHA256withRSA", sha256_with_rsa),
        ("trailing spaces", format!("{valid}   ")),
        ("leading and trailing whitespace", format!("  {valid}\t")),
        ("literal \\n suffix", format!("{valid}\\n")),
    ];
    for (what, token) in &accepted {
        let (status, env) = User::jwt(&app, &t1, token).get("/actors").await;
        assert_eq!(status, StatusCode::OK, "{what} should be accepted: {env}");
    }

    // `Authorization: Bearer` acts in the default tenant (T1): an actor registered that way
    // is alice's in T1, visible through the T1 header and not in T2.
    let bearer = User::bearer(&app, &valid);
    let aid = bearer.register(json!({"image": ECHO})).await;
    let (status, env) = User::jwt(&app, &t1, &valid)
        .get(&format!("/actors/{aid}"))
        .await;
    assert_eq!(status, StatusCode::OK, "bearer actor in T1: {env}");
    assert_eq!(env["result"]["owner"], "alice", "{env}");
    let (status, env) = User::jwt(&app, &t2, &valid)
        .get(&format!("/actors/{aid}"))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bearer actor not in T2: {env}"
    );
    app.stop().await;
}

/// With a key per tenant (no global key), a token is verified with the keys of the tenant its
/// header names: T1's token sent as T2 fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_are_per_tenant() {
    let (gw1, gw2) = (Gateway::new(), Gateway::new());
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(TestApp::embedded())
        .with("web", "access_control", "jwt")
        .with("web", "tenants", &format!("{t1},{t2}"))
        .with(
            "web",
            &format!("{}_apim_public_key", t1.to_ascii_lowercase()),
            &gw1.public_key(),
        )
        .with(
            "web",
            &format!("{}_apim_public_key", t2.to_ascii_lowercase()),
            &gw2.public_key(),
        )
        .start()
        .await
    else {
        return;
    };
    let tok1 = gw1.token("alice", USER_ROLE);
    let tok2 = gw2.token("alice", USER_ROLE);
    let (status, env) = User::jwt(&app, &t1, &tok1).get("/actors").await;
    assert_eq!(status, StatusCode::OK, "T1 token as T1: {env}");
    let (status, env) = User::jwt(&app, &t2, &tok2).get("/actors").await;
    assert_eq!(status, StatusCode::OK, "T2 token as T2: {env}");
    let got = User::jwt(&app, &t2, &tok1).get("/actors").await;
    assert_error(
        "T1 token as T2",
        &got,
        StatusCode::UNAUTHORIZED,
        "signature",
    );
    let got = User::jwt(&app, &t1, &tok2).get("/actors").await;
    assert_error(
        "T2 token as T1",
        &got,
        StatusCode::UNAUTHORIZED,
        "signature",
    );
    // The header name is case-insensitive: the tenant is upper-cased.
    let (status, env) = User::jwt(&app, &t1.to_ascii_lowercase(), &tok1)
        .get("/actors")
        .await;
    assert_eq!(status, StatusCode::OK, "lower-case tenant header: {env}");
    app.stop().await;
}

// ---- 2. roles -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_privileged_fields() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(jwt_mode(TestApp::embedded(), &gw, &t1, &t2))
        .start()
        .await
    else {
        return;
    };
    let as_roles = |roles: &str| User::jwt(&app, &t1, &gw.token("alice", roles));

    // Roles that are none of Abaco's, and no role claim at all (→ Internal/everyone).
    for roles in [
        "Internal/everyone",
        "Application/other,Internal/subscriber",
        "",
    ] {
        let got = as_roles(roles).get("/actors").await;
        assert_error(
            &format!("roles {roles:?}"),
            &got,
            StatusCode::BAD_REQUEST,
            MISSING_ROLE,
        );
    }
    let mut no_claim = Map::new();
    no_claim.insert(ENDUSER.into(), json!("alice@carbon.super"));
    let got = User::jwt(&app, &t1, &gw.issue(no_claim, 3600))
        .get("/actors")
        .await;
    assert_error("no role claim", &got, StatusCode::BAD_REQUEST, MISSING_ROLE);
    // Any one Abaco role among others suffices.
    for roles in [
        USER_ROLE,
        LIMITED_ROLE,
        PRIVILEGED_ROLE,
        ADMIN_ROLE,
        "Internal/everyone, Internal/abaco-limited",
    ] {
        let (status, env) = as_roles(roles).get("/actors").await;
        assert_eq!(status, StatusCode::OK, "roles {roles:?}: {env}");
    }

    // Privileged fields (spec §2.7).
    let queue = app
        .config
        .spawner
        .host_queues
        .first()
        .expect("a host queue")
        .clone();
    let fields: Vec<(&str, Value, &str)> = vec![
        ("privileged", json!(true), "make privileged actors"),
        ("max_workers", json!(2), "set max workers"),
        ("mem_limit", json!("512m"), "set mem limit"),
        ("max_cpus", json!(1_000_000_000), "set max CPUs"),
        ("queue", json!(queue), "set queue"),
        ("use_container_uid", json!(true), "use container uid"),
    ];
    let plain = as_roles(USER_ROLE);
    let limited = as_roles(LIMITED_ROLE);
    let privileged = as_roles(PRIVILEGED_ROLE);
    let admin = as_roles(ADMIN_ROLE);
    let own = plain
        .register(json!({"image": ECHO, "stateless": false}))
        .await;
    for (key, value, what) in &fields {
        let message = format!("Not authorized -- only admins and privileged users can {what}.");
        let body = json!({"image": ECHO, *key: value});
        for (who, user) in [("user", &plain), ("limited", &limited)] {
            let got = user.post("/actors", body.clone()).await;
            assert_error(
                &format!("{who} registers with {key}"),
                &got,
                StatusCode::BAD_REQUEST,
                &message,
            );
            assert_eq!(got.1["message"], message.as_str());
        }
        // ... and on update (a stateless actor, so max_workers is otherwise fine).
        let got = plain
            .call(Method::PUT, &format!("/actors/{own}"), Some(&body))
            .await;
        assert_error(
            &format!("user updates with {key}"),
            &got,
            StatusCode::BAD_REQUEST,
            &message,
        );
        for (who, user) in [("privileged", &privileged), ("admin", &admin)] {
            let (status, env) = user.post("/actors", body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{who} registers with {key}: {env}");
            assert_eq!(env["result"][*key], *value, "{who} {key} kept: {env}");
        }
    }
    // All at once, for a privileged user.
    let mut all = json!({"image": ECHO});
    for (key, value, _) in &fields {
        all[*key] = value.clone();
    }
    let (status, env) = privileged.post("/actors", all).await;
    assert_eq!(status, StatusCode::OK, "privileged, every field: {env}");
    // False / absent values are not privileged requests.
    let (status, env) = plain
        .post(
            "/actors",
            json!({"image": ECHO, "privileged": false, "use_container_uid": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "false flags are fine: {env}");

    // Message and state bodies with those keys are data, not actor descriptions (Abaco bug 22).
    let mut data = json!({});
    for (key, value, _) in &fields {
        data[*key] = value.clone();
    }
    let (status, env) = plain
        .post(&format!("/actors/{own}/messages"), data.clone())
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "JSON message with privileged keys: {env}"
    );
    let (status, env) = plain
        .post(&format!("/actors/{own}/state"), data.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "state with privileged keys: {env}");
    let (_, env) = plain.get(&format!("/actors/{own}/state")).await;
    assert_eq!(env["result"]["state"], data, "state stored as sent");
    app.stop().await;
}

// ---- 3. permission matrix -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None,
    Read,
    Execute,
    Update,
    /// Admin role only (no permission level suffices).
    Admin,
}

struct Route {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    needs: Level,
    /// Statuses an allowed call may answer.
    ok: &'static [u16],
}

fn route(
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    needs: Level,
    ok: &'static [u16],
) -> Route {
    Route {
        method,
        path,
        body,
        needs,
        ok,
    }
}

/// Every actor-scoped route with the level it needs (spec §2.5), destructive ones last.
fn matrix() -> Vec<Route> {
    use Level::{Admin, Execute, Read, Update};
    vec![
        route(Method::GET, "/actors/{id}", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/state", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/messages", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/executions", None, Read, &[200]),
        route(
            Method::GET,
            "/actors/{id}/executions/{eid}",
            None,
            Read,
            &[200],
        ),
        route(
            Method::GET,
            "/actors/{id}/executions/{eid}/logs",
            None,
            Read,
            &[200],
        ),
        route(
            Method::GET,
            "/actors/{id}/executions/{eid}/results",
            None,
            Read,
            &[200],
        ),
        route(Method::GET, "/actors/{id}/nonces", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/nonces/{nid}", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/permissions", None, Read, &[200]),
        route(Method::GET, "/actors/{id}/workers", None, Read, &[200]),
        route(
            Method::GET,
            "/actors/{id}/workers/{wid}",
            None,
            Read,
            &[200],
        ),
        route(
            Method::POST,
            "/actors/{id}/messages",
            Some(r#"{"message": "from the matrix"}"#),
            Execute,
            &[200],
        ),
        route(
            Method::POST,
            "/actors/{id}/state",
            Some(r#"{"n": 1}"#),
            Update,
            &[200],
        ),
        route(
            Method::POST,
            "/actors/{id}/nonces",
            Some(r#"{"level": "READ"}"#),
            Update,
            &[200],
        ),
        route(
            Method::POST,
            "/actors/{id}/permissions",
            Some(r#"{"user": "carol", "level": "READ"}"#),
            Update,
            &[200],
        ),
        route(
            Method::PUT,
            "/actors/{id}",
            Some(r#"{"image": "abaco-test/echo:latest"}"#),
            Update,
            &[200],
        ),
        route(
            Method::DELETE,
            "/actors/{id}/messages",
            None,
            Update,
            &[200],
        ),
        // Force quit of a finished execution: allowed, then refused for its status.
        route(
            Method::DELETE,
            "/actors/{id}/executions/{eid}",
            None,
            Update,
            &[200, 400],
        ),
        route(
            Method::POST,
            "/actors/{id}/workers",
            Some(r#"{"num": 1}"#),
            Admin,
            &[200],
        ),
        route(
            Method::DELETE,
            "/actors/{id}/nonces/{nid}",
            None,
            Update,
            &[200],
        ),
        route(
            Method::DELETE,
            "/actors/{id}/workers/{wid}",
            None,
            Update,
            &[200],
        ),
        route(Method::DELETE, "/actors/{id}", None, Update, &[200]),
    ]
}

/// An actor of alice's with one finished execution, a worker and a nonce.
struct Fixture {
    id: String,
    eid: String,
    wid: String,
    nid: String,
}

async fn fixture(alice: &User) -> Fixture {
    let id = alice
        .register(json!({"image": ECHO, "stateless": false}))
        .await;
    let eid = alice.message(&id, "hello").await;
    alice.wait_final(&id, &eid).await;
    let wid = wait_for("a worker", READY_WITHIN, || async {
        alice.worker_ids(&id).await.into_iter().next()
    })
    .await;
    let (status, env) = alice
        .post(&format!("/actors/{id}/nonces"), json!({"level": "READ"}))
        .await;
    assert_eq!(status, StatusCode::OK, "nonce: {env}");
    let nid = env["result"]["id"].as_str().expect("nonce id").to_string();
    Fixture { id, eid, wid, nid }
}

/// Runs every route as `user` holding `held` on the fixture; returns the mismatches.
async fn run_matrix(user: &User, who: &str, held: Level, f: &Fixture) -> Vec<String> {
    let mut wrong = Vec::new();
    for r in matrix() {
        let path = r
            .path
            .replace("{id}", &f.id)
            .replace("{eid}", &f.eid)
            .replace("{wid}", &f.wid)
            .replace("{nid}", &f.nid);
        let mut req = user.req(r.method.clone(), &path);
        if let Some(body) = r.body {
            req = req.header(CONTENT_TYPE, "application/json").body(body);
        }
        let (status, env) = user.send(req).await;
        let message = env["message"].as_str().unwrap_or("").to_string();
        let allowed = held >= r.needs;
        let denial = if r.needs == Level::Admin && held >= Level::Read {
            ONLY_ADMINS_WORKERS
        } else {
            NO_ACCESS
        };
        let denied = status == StatusCode::BAD_REQUEST && message == denial;
        let fine = if allowed {
            r.ok.contains(&status.as_u16())
                && message != NO_ACCESS
                && message != ONLY_ADMINS_WORKERS
        } else {
            denied
        };
        if !fine {
            wrong.push(format!(
                "{who} holding {held:?}: {} {} (needs {:?}) expected {} but got {status} {message:?}",
                r.method,
                r.path,
                r.needs,
                if allowed { "allowed" } else { "denied" },
            ));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = jwt_mode(TestApp::embedded(), &gw, &t1, &t2)
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let alice = User::jwt(&app, &t1, &gw.token("alice", USER_ROLE));
    let bob = User::jwt(&app, &t1, &gw.token("bob", USER_ROLE));
    let admin = User::jwt(&app, &t1, &gw.token("dave", ADMIN_ROLE));

    let f = fixture(&alice).await;
    let mut wrong = Vec::new();
    // bob, with levels granted in turn (NONE set explicitly revokes an earlier READ); the
    // last level deletes the actor.
    let steps: [(Option<&str>, Level); 5] = [
        (None, Level::None),
        (Some("READ"), Level::Read),
        (Some("NONE"), Level::None),
        (Some("EXECUTE"), Level::Execute),
        (Some("UPDATE"), Level::Update),
    ];
    for (grant, held) in steps {
        if let Some(level) = grant {
            alice.grant(&f.id, "bob", level).await;
        }
        wrong.extend(run_matrix(&bob, "bob", held, &f).await);
    }
    let (status, env) = alice.get(&format!("/actors/{}", f.id)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bob deleted the actor: {env}"
    );

    // An administrator holds nothing on alice's actor and may do everything.
    let g = fixture(&alice).await;
    wrong.extend(run_matrix(&admin, "admin", Level::Admin, &g).await);
    assert!(wrong.is_empty(), "permission matrix:\n{}", wrong.join("\n"));
    app.stop().await;
}

/// `ABACO_WORLD` grants its level to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_permission() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(jwt_mode(TestApp::embedded(), &gw, &t1, &t2))
        .start()
        .await
    else {
        return;
    };
    let alice = User::jwt(&app, &t1, &gw.token("alice", USER_ROLE));
    let carol = User::jwt(&app, &t1, &gw.token("carol", USER_ROLE));
    let id = alice.register(json!({"image": ECHO})).await;
    let got = carol.get(&format!("/actors/{id}")).await;
    assert_error("carol before", &got, StatusCode::BAD_REQUEST, NO_ACCESS);
    alice.grant(&id, "ABACO_WORLD", "READ").await;
    let (status, env) = carol.get(&format!("/actors/{id}")).await;
    assert_eq!(status, StatusCode::OK, "world-readable: {env}");
    let got = carol
        .post(&format!("/actors/{id}/messages"), json!({"message": "x"}))
        .await;
    assert_error("carol sends", &got, StatusCode::BAD_REQUEST, NO_ACCESS);
    let got = carol
        .call(
            Method::PUT,
            &format!("/actors/{id}"),
            Some(&json!({"image": ECHO})),
        )
        .await;
    assert_error("carol updates", &got, StatusCode::BAD_REQUEST, NO_ACCESS);
    // A user's own lower level does not hide the world level.
    alice.grant(&id, "carol", "NONE").await;
    let (status, env) = carol.get(&format!("/actors/{id}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "world READ beats carol's NONE: {env}"
    );
    app.stop().await;
}

/// `GET /actors` lists the caller's readable actors only (spec §4.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_list_is_filtered_by_permission() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(jwt_mode(TestApp::embedded(), &gw, &t1, &t2))
        .start()
        .await
    else {
        return;
    };
    let alice = User::jwt(&app, &t1, &gw.token("alice", USER_ROLE));
    let bob = User::jwt(&app, &t1, &gw.token("bob", USER_ROLE));
    let carol = User::jwt(&app, &t1, &gw.token("carol", USER_ROLE));
    let a = alice.register(json!({"image": ECHO})).await;
    let b = bob.register(json!({"image": ECHO})).await;
    let al = alice.actor_ids().await;
    assert!(al.contains(&a) && !al.contains(&b), "alice lists {al:?}");
    let bl = bob.actor_ids().await;
    assert!(
        bl.contains(&b) && !bl.contains(&a),
        "bob lists {bl:?} (alice's {a} is not his)"
    );
    assert!(carol.actor_ids().await.is_empty(), "carol has no actor");
    alice.grant(&a, "bob", "READ").await;
    let bl = bob.actor_ids().await;
    assert!(bl.contains(&a) && bl.contains(&b), "bob after READ: {bl:?}");
    alice.grant(&a, "ABACO_WORLD", "READ").await;
    assert_eq!(
        carol.actor_ids().await,
        vec![a],
        "carol sees the world-readable one"
    );
    app.stop().await;
}

// ---- 4. tenant isolation ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = jwt_mode(TestApp::embedded(), &gw, &t1, &t2)
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    // The same user name and role in both tenants; and T2's administrator.
    let token = gw.token("alice", USER_ROLE);
    let alice1 = User::jwt(&app, &t1, &token);
    let alice2 = User::jwt(&app, &t2, &token);
    let admin2 = User::jwt(&app, &t2, &gw.token("root", ADMIN_ROLE));

    let id = alice1.register(json!({"image": ECHO})).await;
    let eid = alice1.message(&id, "in T1").await;
    alice1.wait_final(&id, &eid).await;
    let wid = wait_for("a worker", READY_WITHIN, || async {
        alice1.worker_ids(&id).await.into_iter().next()
    })
    .await;
    let alias = unique("al");
    let (status, env) = alice1
        .post("/actors/aliases", json!({"alias": alias, "actor_id": id}))
        .await;
    assert_eq!(status, StatusCode::OK, "alias: {env}");
    let (status, env) = alice1
        .post(&format!("/actors/{id}/nonces"), json!({"level": "READ"}))
        .await;
    assert_eq!(status, StatusCode::OK, "nonce: {env}");
    let nonce = env["result"]["id"].as_str().expect("nonce id").to_string();
    // Sanity: everything resolves in T1.
    for path in [
        format!("/actors/{id}"),
        format!("/actors/{alias}"),
        format!("/actors/aliases/{alias}"),
        format!("/actors/{id}/executions/{eid}/logs"),
    ] {
        let (status, env) = alice1.get(&path).await;
        assert_eq!(status, StatusCode::OK, "T1 {path}: {env}");
    }

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/actors/{id}"), None),
        (
            Method::PUT,
            format!("/actors/{id}"),
            Some(json!({"image": ECHO})),
        ),
        (Method::GET, format!("/actors/{id}/state"), None),
        (Method::GET, format!("/actors/{id}/messages"), None),
        (
            Method::POST,
            format!("/actors/{id}/messages"),
            Some(json!({"message": "from T2"})),
        ),
        (Method::GET, format!("/actors/{id}/executions"), None),
        (Method::GET, format!("/actors/{id}/executions/{eid}"), None),
        (
            Method::GET,
            format!("/actors/{id}/executions/{eid}/logs"),
            None,
        ),
        (Method::GET, format!("/actors/{id}/workers"), None),
        (Method::GET, format!("/actors/{id}/workers/{wid}"), None),
        (Method::DELETE, format!("/actors/{id}/workers/{wid}"), None),
        (Method::GET, format!("/actors/{id}/permissions"), None),
        (
            Method::POST,
            format!("/actors/{id}/permissions"),
            Some(json!({"user": "alice", "level": "UPDATE"})),
        ),
        (Method::GET, format!("/actors/{id}/nonces"), None),
        (Method::GET, format!("/actors/{id}/nonces/{nonce}"), None),
        (Method::GET, format!("/actors/{id}?x-nonce={nonce}"), None),
        (Method::GET, format!("/actors/{alias}"), None),
        (Method::GET, format!("/actors/{alias}/executions"), None),
        (Method::GET, format!("/actors/aliases/{alias}"), None),
        (Method::DELETE, format!("/actors/{id}"), None),
    ];
    let mut wrong = Vec::new();
    for (who, user) in [("alice of T2", &alice2), ("admin of T2", &admin2)] {
        for (method, path, body) in &routes {
            let (status, env) = user.call(method.clone(), path, body.as_ref()).await;
            if status != StatusCode::NOT_FOUND {
                wrong.push(format!("{who}: {method} {path} → {status} {env}"));
            }
        }
        let listed = user.actor_ids().await;
        if listed.contains(&id) {
            wrong.push(format!("{who} lists T1's actor: {listed:?}"));
        }
        let (_, env) = user.get("/actors/aliases").await;
        if env.to_string().contains(&alias) {
            wrong.push(format!("{who} lists T1's alias: {env}"));
        }
    }
    assert!(wrong.is_empty(), "tenant isolation:\n{}", wrong.join("\n"));

    // T2 may use the alias name for its own actor.
    let own = alice2.register(json!({"image": ECHO})).await;
    let (status, env) = alice2
        .post("/actors/aliases", json!({"alias": alias, "actor_id": own}))
        .await;
    assert_eq!(status, StatusCode::OK, "same alias in T2: {env}");
    let (status, env) = alice2.get(&format!("/actors/{alias}")).await;
    assert_eq!(status, StatusCode::OK, "T2 alias: {env}");
    assert_eq!(
        env["result"]["id"],
        own.as_str(),
        "T2's alias names T2's actor"
    );

    // T1's nonce alone (no token) works in T1 only: on T2's actor it does not exist.
    let anon = reqwest::Client::new();
    let (status, body) = {
        let r = anon
            .get(app.url(&format!("/actors/{id}?x-nonce={nonce}")))
            .send()
            .await
            .expect("request");
        (r.status(), r.text().await.expect("body"))
    };
    assert_eq!(status, StatusCode::OK, "nonce in T1: {body}");
    let r = anon
        .get(app.url(&format!("/actors/{own}?x-nonce={nonce}")))
        .send()
        .await
        .expect("request");
    let status = r.status();
    let env: Value = r.json().await.expect("json");
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "T1 nonce on T2's actor: {env}"
    );
    assert_eq!(env["message"], "Nonce does not exist.", "{env}");
    app.stop().await;
}

// ---- 5. the OAuth token endpoint ----------------------------------------------------------------

#[derive(Debug)]
struct HttpFail(String);

impl std::fmt::Display for HttpFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpFail {}

/// oauth2's HTTP client over reqwest 0.13 (its own reqwest feature would bring another reqwest).
async fn oauth_http(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpFail> {
    let fail = |e: &dyn std::fmt::Display| HttpFail(e.to_string());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(&e))?;
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| fail(&e))?;
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await.map_err(|e| fail(&e))?;
    builder.body(body.to_vec()).map_err(|e| fail(&e))
}

async fn oauth_flow(builder: Builder) {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = quiet(jwt_mode(builder, &gw, &t1, &t2)).start().await else {
        return;
    };
    let alice = User::jwt(&app, &t1, &gw.token("alice", USER_ROLE));
    let bob = User::jwt(&app, &t1, &gw.token("bob", USER_ROLE));
    let private = alice.register(json!({"image": ECHO})).await;

    let (status, env) = alice.post("/oauth2/clients", json!({})).await;
    assert_eq!(status, StatusCode::OK, "create client: {env}");
    let client_id = env["result"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    let secret = env["result"]["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_string();
    assert_eq!(env["result"]["owner"], "alice", "{env}");
    let token_url = TokenUrl::new(app.url("/oauth2/token")).expect("token URL");
    let client = BasicClient::new(ClientId::new(client_id.clone()))
        .set_client_secret(ClientSecret::new(secret.clone()))
        .set_token_uri(token_url.clone());

    let first = client
        .exchange_client_credentials()
        .request_async(&oauth_http)
        .await
        .expect("client_credentials grant");
    assert!(
        first.expires_in().is_some_and(|d| d > Duration::ZERO),
        "expires_in set"
    );
    let access1 = first.access_token().secret().clone();
    let refresh1 = first.refresh_token().expect("a refresh token").clone();

    // The token acts as alice: it reads her private actor, and what it registers is hers.
    let as_client = User::bearer(&app, &access1);
    let (status, env) = as_client.get("/actors").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "GET /actors with the access token: {env}"
    );
    let (status, env) = as_client.get(&format!("/actors/{private}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "alice's actor with her token: {env}"
    );
    let made = as_client.register(json!({"image": ECHO})).await;
    let (status, env) = alice.get(&format!("/actors/{made}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the client's actor is alice's: {env}"
    );
    assert_eq!(env["result"]["owner"], "alice", "{env}");
    // Not bob: the token does not reach bob's actors.
    let bobs = bob.register(json!({"image": ECHO})).await;
    let got = as_client.get(&format!("/actors/{bobs}")).await;
    assert_error(
        "alice's token on bob's actor",
        &got,
        StatusCode::BAD_REQUEST,
        NO_ACCESS,
    );
    // A platform token names its tenant: sent as another tenant's token it is refused.
    let got = User::jwt(&app, &t2, &access1).get("/actors").await;
    assert_error(
        "T1 client token as T2",
        &got,
        StatusCode::UNAUTHORIZED,
        "another tenant",
    );
    let (status, env) = User::jwt(&app, &t1, &access1).get("/actors").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "platform token in the T1 header: {env}"
    );

    // Refresh: a new access token; the used refresh token is dead.
    let second = client
        .exchange_refresh_token(&refresh1)
        .request_async(&oauth_http)
        .await
        .expect("refresh_token grant");
    let access2 = second.access_token().secret().clone();
    let refresh2 = second.refresh_token().expect("a new refresh token").clone();
    assert_ne!(access1, access2, "a fresh access token");
    let (status, env) = User::bearer(&app, &access2)
        .get(&format!("/actors/{private}"))
        .await;
    assert_eq!(status, StatusCode::OK, "refreshed token: {env}");
    // RFC 6749 §5.2 error answers, judged by the oauth2 crate itself and on the wire. Kept as
    // soft checks so the rest of the flow still runs when they fail.
    let mut wrong: Vec<String> = Vec::new();
    let used = client
        .exchange_refresh_token(&refresh1)
        .request_async(&oauth_http)
        .await;
    check_oauth_error(
        "a used refresh token",
        used,
        BasicErrorResponseType::InvalidGrant,
        &mut wrong,
    );
    let raw = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh1.secret()),
        ],
        None,
    )
    .await;
    check_raw_error(
        "a used refresh token",
        &raw,
        400,
        "invalid_grant",
        &mut wrong,
    );

    // Wrong secret, unknown client.
    for (id, secret, what) in [
        (client_id.clone(), "wrong".to_string(), "wrong secret"),
        (
            format!("{t1}_nosuchclient"),
            secret.clone(),
            "unknown client",
        ),
    ] {
        let bad = BasicClient::new(ClientId::new(id.clone()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_token_uri(token_url.clone());
        let got = bad
            .exchange_client_credentials()
            .request_async(&oauth_http)
            .await;
        check_oauth_error(what, got, BasicErrorResponseType::InvalidClient, &mut wrong);
        let raw = token_request(
            &app,
            &[("grant_type", "client_credentials")],
            Some((&id, &secret)),
        )
        .await;
        check_raw_error(what, &raw, 401, "invalid_client", &mut wrong);
        if !raw.2.starts_with("Basic") {
            wrong.push(format!(
                "{what}: 401 without WWW-Authenticate: Basic ({:?})",
                raw.2
            ));
        }
    }
    let raw = token_request(&app, &[("grant_type", "password")], None).await;
    check_raw_error(
        "grant_type=password",
        &raw,
        400,
        "unsupported_grant_type",
        &mut wrong,
    );
    let raw = token_request(&app, &[], None).await;
    check_raw_error("no grant_type", &raw, 400, "invalid_request", &mut wrong);
    // Credentials in the form body (RFC 6749 §2.3.1) work too.
    let raw = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    let form_token: Value = serde_json::from_str(&raw.1).unwrap_or(Value::Null);
    if raw.0 != 200 || !form_token["access_token"].is_string() {
        wrong.push(format!("form credentials: {} {}", raw.0, raw.1));
    }

    // Only the owner (or an admin) deletes a client; deleting it revokes its tokens at once.
    let got = bob
        .call(
            Method::DELETE,
            &format!("/oauth2/clients/{client_id}"),
            None,
        )
        .await;
    assert_eq!(
        got.0,
        StatusCode::BAD_REQUEST,
        "bob deletes alice's client: {}",
        got.1
    );
    let (status, env) = User::bearer(&app, &access2).get("/actors").await;
    assert_eq!(status, StatusCode::OK, "still valid: {env}");
    let (status, env) = alice
        .call(
            Method::DELETE,
            &format!("/oauth2/clients/{client_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "alice deletes her client: {env}");
    for (what, token) in [("first", &access1), ("refreshed", &access2)] {
        let got = User::bearer(&app, token).get("/actors").await;
        assert_error(
            &format!("{what} token after deletion"),
            &got,
            StatusCode::UNAUTHORIZED,
            "revoked",
        );
    }
    let got = client
        .exchange_client_credentials()
        .request_async(&oauth_http)
        .await;
    check_oauth_error(
        "a deleted client",
        got,
        BasicErrorResponseType::InvalidClient,
        &mut wrong,
    );
    let got = client
        .exchange_refresh_token(&refresh2)
        .request_async(&oauth_http)
        .await;
    check_oauth_error(
        "the refresh token of a deleted client",
        got,
        BasicErrorResponseType::InvalidGrant,
        &mut wrong,
    );
    app.stop().await;
    assert!(
        wrong.is_empty(),
        "OAuth error answers:\n{}",
        wrong.join("\n")
    );
}

/// Records unless the oauth2 crate read the answer as the error `expected`.
fn check_oauth_error<T: std::fmt::Debug>(
    what: &str,
    got: Result<T, RequestTokenError<HttpFail, BasicErrorResponse>>,
    expected: BasicErrorResponseType,
    wrong: &mut Vec<String>,
) {
    match got {
        Err(RequestTokenError::ServerResponse(e)) if *e.error() == expected => {}
        Err(RequestTokenError::Parse(e, body)) => wrong.push(format!(
            "{what}: oauth2 cannot parse the error answer ({e}): {}",
            String::from_utf8_lossy(&body)
        )),
        other => wrong.push(format!("{what}: expected {expected:?}, got {other:?}")),
    }
}

/// `POST /oauth2/token` with a form, optionally with HTTP Basic client authentication:
/// status, body and `WWW-Authenticate`.
async fn token_request(
    app: &TestApp,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, String, String) {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    let mut req = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if let Some((id, secret)) = basic {
        let pair = format!("{}:{}", form_encode(id), form_encode(secret));
        req = req.header(AUTHORIZATION, format!("Basic {}", STANDARD.encode(pair)));
    }
    let resp = req.send().await.expect("token endpoint reachable");
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, resp.text().await.expect("body"), www)
}

fn form_encode(s: &str) -> String {
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

/// Records unless the raw answer is `status` with the RFC 6749 body `{"error": error}`.
fn check_raw_error(
    what: &str,
    got: &(u16, String, String),
    status: u16,
    error: &str,
    wrong: &mut Vec<String>,
) {
    let body: Value = serde_json::from_str(&got.1).unwrap_or(Value::Null);
    if got.0 != status || body["error"] != error {
        wrong.push(format!(
            "{what}: expected {status} {{\"error\": \"{error}\"}}, got {} {}",
            got.0, got.1
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_endpoint_embedded() {
    oauth_flow(TestApp::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_token_endpoint_distributed() {
    oauth_flow(TestApp::distributed()).await;
}

// ---- 6. clientg end to end ----------------------------------------------------------------------

/// The `_abaco_access_token=` line the test actor prints.
fn printed_token(logs: &str) -> Option<String> {
    logs.lines()
        .find_map(|l| l.strip_prefix("_abaco_access_token="))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

async fn delete_worker_and_wait(user: &User, actor: &str, wid: &str) {
    let (status, env) = user
        .call(
            Method::DELETE,
            &format!("/actors/{actor}/workers/{wid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "delete worker {wid}: {env}");
    wait_for(&format!("worker {wid} gone"), GONE_WITHIN, || async {
        (!user.worker_ids(actor).await.iter().any(|w| w == wid)).then_some(())
    })
    .await;
}

async fn clientg_flow(builder: Builder) {
    let gw = Gateway::new();
    let (t1, t2) = (tenant_name(), tenant_name());
    let Some(app) = jwt_mode(builder, &gw, &t1, &t2)
        .with("docker", "network", "host")
        .with("workers", "autoscaling", "false")
        .start()
        .await
    else {
        return;
    };
    let alice = User::jwt(&app, &t1, &gw.token("alice", USER_ROLE));
    let b = alice.register(json!({"image": ECHO})).await;
    let a = alice
        .register(json!({
            "image": CALLER,
            "token": true,
            "default_environment": {"TARGET_ACTOR": b, "CALL_MESSAGE": "called by A"},
        }))
        .await;
    let c = alice
        .register(json!({"image": TEST_ACTOR, "token": true}))
        .await;
    for id in [&b, &a, &c] {
        alice.wait_ready(id).await;
    }

    // A calls B with its token, as alice.
    let eid = alice.message(&a, "go").await;
    let done = alice.wait_final(&a, &eid).await;
    let logs = alice.logs(&a, &eid).await;
    assert!(logs.contains("CALL_OK"), "A's call failed: {done}\n{logs}");
    assert!(!logs.contains("token_length=0"), "A got no token:\n{logs}");
    let b_exec = wait_for("B's execution", RUN_WITHIN, || async {
        let (_, env) = alice.get(&format!("/actors/{b}/executions")).await;
        env["result"]["executions"]
            .as_array()
            .and_then(|e| e.first())
            .and_then(|e| e["id"].as_str())
            .map(str::to_string)
    })
    .await;
    let exec = alice.wait_final(&b, &b_exec).await;
    assert_eq!(exec["executor"], "alice", "B's execution: {exec}");
    let b_logs = alice.logs(&b, &b_exec).await;
    assert!(b_logs.contains("MSG=called by A"), "B's logs:\n{b_logs}");
    assert!(
        b_logs.contains("_abaco_username=alice"),
        "B's logs:\n{b_logs}"
    );

    // A's worker goes (alice holds UPDATE).
    let a_workers = alice.worker_ids(&a).await;
    assert_eq!(a_workers.len(), 1, "A's workers: {a_workers:?}");
    delete_worker_and_wait(&alice, &a, &a_workers[0]).await;

    // C prints its token: it works while C's worker lives, and dies with it.
    let eid = alice.message(&c, "show me").await;
    alice.wait_final(&c, &eid).await;
    let logs = alice.logs(&c, &eid).await;
    let token = printed_token(&logs).unwrap_or_else(|| panic!("no token in C's logs:\n{logs}"));
    let as_c = User::bearer(&app, &token);
    let (status, env) = as_c.get(&format!("/actors/{c}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "C's token while its worker lives: {env}"
    );
    assert_eq!(env["result"]["owner"], "alice");
    let c_workers = alice.worker_ids(&c).await;
    assert_eq!(c_workers.len(), 1, "C's workers: {c_workers:?}");
    delete_worker_and_wait(&alice, &c, &c_workers[0]).await;
    let got = wait_for("C's token revoked", GONE_WITHIN, || async {
        let got = as_c.get("/actors").await;
        (got.0 != StatusCode::OK).then_some(got)
    })
    .await;
    assert_error(
        "C's token after its worker went",
        &got,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientg_tokens_end_to_end_embedded() {
    clientg_flow(TestApp::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clientg_tokens_end_to_end_distributed() {
    clientg_flow(TestApp::distributed()).await;
}
