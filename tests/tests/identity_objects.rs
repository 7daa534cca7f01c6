//! Nonces, aliases and permissions as clients see them. The functional part runs the routes of
//! spec §4.15, §4.16 and §4.18 — messages, validation errors and displays, in snake and camel
//! case — on the embedded platform with `access_control = none`, where every caller is an
//! administrator. The second part turns `access_control = jwt` on, with a gateway key the test
//! generates, to exercise what only non-admin users and nonce callers see: permission refusals,
//! sharing between two users, listings filtered by permission, nonce redemption (levels, use
//! counts under concurrency, actor nonces only on actor URLs and alias nonces only on alias
//! URLs) and nonces disappearing with their actor or alias. It is one file, over the usual
//! length, because the three route families share their fixtures and every client-visible
//! message is asserted verbatim.
//!
//! This file is long on purpose: it is one area's table of black-box cases, each a few lines
//! over shared helpers at the top; splitting it would scatter the cases of one contract.

use std::time::{SystemTime, UNIX_EPOCH};

use abaco_identity::TokenIssuer;
use abaco_tests::{unique, TestApp};
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

const LEVELS_MESSAGE: &str =
    "Invalid nonce description. The level attribute must be one of: ('NONE', 'READ', 'EXECUTE', 'UPDATE')";
const NO_ACTOR_ACCESS: &str = "Not authorized -- you do not have access to this actor.";

async fn register(app: &TestApp) -> String {
    let actor = app
        .register_actor(json!({"image": "abaco-test/echo", "name": "identity-objects"}))
        .await;
    actor["id"].as_str().expect("actor id").to_string()
}

fn assert_error(status: StatusCode, env: &Value, want_status: u16, message: &str) {
    assert_eq!(status.as_u16(), want_status, "{env}");
    assert_eq!(env["status"], "error", "{env}");
    assert_eq!(env["message"], message, "{env}");
    assert_eq!(env["result"], Value::Null, "{env}");
}

fn assert_ok(status: StatusCode, env: &Value, message: &str) -> Value {
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["status"], "success", "{env}");
    assert_eq!(env["message"], message, "{env}");
    env["result"].clone()
}

// ---- functional: access_control = none ------------------------------------------------------

#[tokio::test]
async fn aliases_validate_resolve_and_carry_permissions() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let a = register(&app).await;
    let b = register(&app).await;
    let alias = unique("al-");

    // Validation, in Abaco's order and words.
    let (s, env) = app.post_json("/actors/aliases", json!({})).await;
    assert_error(s, &env, 400, "Invalid alias description. Missing required field: {'alias': 'Actual alias for the actor; must be unique within a tenant.'}");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias}))
        .await;
    assert_error(s, &env, 400, "Invalid alias description. Missing required field: {'actor_id': 'The human readable id for the actor associated with this alias.'}");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": b, "actor_id": a}))
        .await;
    assert_error(
        s,
        &env,
        400,
        "Invalid alias description. Alias cannot be an Abaco hash id.",
    );
    let (s, env) = app
        .post_json(
            "/actors/aliases",
            json!({"alias": alias, "actor_id": "no-such-actor"}),
        )
        .await;
    assert_error(s, &env, 404, "No actor found with id: no-such-actor.");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": "nonces", "actor_id": a}))
        .await;
    assert_error(s, &env, 400, "nonces is a reserved word. The following reserved words cannot be used for an alias: ['executions', 'nonces', 'logs', 'messages', 'adapters', 'admin'].");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": "a:b", "actor_id": a}))
        .await;
    assert_error(s, &env, 400, "':' is a forbidden character. The following characters cannot be used for an alias: ['\\', ' ', '\"', ':', '/', '?', '#', '[', ']', '@', '!', '$', '&', ''', '(', ')', '*', '+', ',', ';', '='].");
    let (s, env) = app
        .post_json(
            "/actors/aliases",
            json!({"alias": "utilization", "actor_id": a}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{env}");

    // Create, list, show.
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": a}))
        .await;
    let created = assert_ok(s, &env, "Actor alias created successfully.");
    assert_eq!(created["alias"], alias.as_str());
    assert_eq!(created["actor_id"], a.as_str());
    assert_eq!(created["owner"], "anonymous");
    for hidden in ["tenant", "alias_id", "db_id", "api_server"] {
        assert!(created.get(hidden).is_none(), "{hidden} shown: {created}");
    }
    let links = &created["_links"];
    assert_eq!(
        links["self"],
        app.url(&format!("/actors/v2/aliases/{alias}"))
    );
    assert_eq!(links["actor"], app.url(&format!("/actors/v2/{a}")));
    assert_eq!(links["owner"], app.url("/profiles/v2/anonymous"));
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": b}))
        .await;
    assert_error(s, &env, 400, &format!("Alias {alias} already exists."));
    let (s, env) = app.get("/actors/aliases").await;
    let listed = assert_ok(s, &env, "Aliases retrieved successfully.");
    assert_eq!(listed, json!([created]));
    let (s, env) = app.get(&format!("/actors/aliases/{alias}")).await;
    assert_eq!(assert_ok(s, &env, "Alias retrieved successfully."), created);
    let (s, env) = app.get("/actors/aliases/no-such-alias").await;
    assert_error(s, &env, 404, "No alias found: no-such-alias.");

    // Every actor route accepts the alias.
    let (s, env) = app.get(&format!("/actors/{alias}")).await;
    assert_eq!(
        assert_ok(s, &env, "Actor retrieved successfully.")["id"],
        a.as_str()
    );
    let (s, env) = app.get(&format!("/actors/{alias}/permissions")).await;
    assert_eq!(
        assert_ok(s, &env, "Permissions retrieved successfully."),
        json!({"anonymous": "UPDATE"})
    );
    let (s, env) = app.get("/actors/no-such-alias").await;
    assert_error(
        s,
        &env,
        404,
        "Actor with identifier 'no-such-alias' not found",
    );

    // PUT re-points the alias; the alias itself cannot change.
    let path = format!("/actors/aliases/{alias}");
    let (s, env) = app
        .put_json(&path, json!({"alias": "other", "actor_id": b}))
        .await;
    assert_error(
        s,
        &env,
        400,
        "Invalid alias update description. The alias itself cannot be updated in a PUT request.",
    );
    let (s, env) = app.put_json(&path, json!({})).await;
    assert_error(s, &env, 400, "Invalid alias description. Missing required field: {'actor_id': 'The human readable id for the actor associated with this alias.'}");
    let (s, env) = app
        .put_json(&path, json!({"actor_id": "no-such-actor"}))
        .await;
    assert_error(s, &env, 404, "No actor found with id: no-such-actor.");
    let (s, env) = app.put_json(&path, json!({"actor_id": b})).await;
    let updated = assert_ok(s, &env, "Actor alias updated successfully.");
    assert_eq!(updated["actor_id"], b.as_str());
    assert_eq!(updated["owner"], "anonymous");
    let (_, env) = app.get(&format!("/actors/{alias}")).await;
    assert_eq!(env["result"]["id"], b.as_str(), "{env}");

    // Alias permissions.
    let perms = format!("/actors/aliases/{alias}/permissions");
    let (s, env) = app.get(&perms).await;
    assert_eq!(
        assert_ok(s, &env, "Permissions retrieved successfully."),
        json!({"anonymous": "UPDATE"})
    );
    let (s, env) = app
        .post_json(&perms, json!({"user": "bob", "level": "READ"}))
        .await;
    assert_eq!(
        assert_ok(s, &env, "Permission added successfully."),
        json!({"anonymous": "UPDATE", "bob": "READ"})
    );
    let (s, env) = app
        .post_json(&perms, json!({"user": "bob", "level": "WRITE"}))
        .await;
    assert_error(s, &env, 400, "Invalid permission level: WRITE.             The valid values are ('NONE', 'READ', 'EXECUTE', 'UPDATE')");
    let (s, env) = app.post_json(&perms, json!({"level": "READ"})).await;
    assert_error(
        s,
        &env,
        400,
        "Invalid permissions description: {'user': 'User owning the permission.'}",
    );
    let (s, env) = app.post_json(&perms, json!({"user": "bob"})).await;
    assert_error(s, &env, 400, "Invalid permissions description: {'level': 'Level of the permission: ('NONE', 'READ', 'EXECUTE', 'UPDATE')'}");

    // Actor permissions, by id and through the alias; NONE is stored, not deleted.
    let perms = format!("/actors/{a}/permissions");
    let (s, env) = app
        .call(
            app.request(Method::POST, &perms)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("user=carol&level=EXECUTE"),
        )
        .await;
    assert_eq!(
        assert_ok(s, &env, "Permission added successfully."),
        json!({"anonymous": "UPDATE", "carol": "EXECUTE"})
    );
    let (s, env) = app
        .post_json(
            &format!("/actors/{alias}/permissions"),
            json!({"user": "carol", "level": "NONE"}),
        )
        .await;
    assert_eq!(
        assert_ok(s, &env, "Permission added successfully."),
        json!({"anonymous": "UPDATE", "carol": "NONE"}),
        "the alias now points at {b}, so this changed b"
    );
    let (_, env) = app.get(&perms).await;
    assert_eq!(
        env["result"],
        json!({"anonymous": "UPDATE", "carol": "EXECUTE"})
    );

    // Wrong methods are 405 in the envelope.
    for (method, path) in [
        (Method::PUT, format!("/actors/{a}/permissions")),
        (Method::PUT, format!("/actors/{a}/nonces")),
        (Method::POST, format!("/actors/{a}/nonces/x")),
        (Method::POST, format!("/actors/aliases/{alias}")),
    ] {
        let (s, env) = app.call(app.request(method, &path)).await;
        assert_error(s, &env, 405, "Invalid request: the API endpoint does not exist or the provided HTTP method is not allowed.");
    }

    // DELETE removes the alias and its permissions.
    let (s, env) = app.delete(&format!("/actors/aliases/{alias}")).await;
    assert_ok(s, &env, &format!("Alias {alias} deleted successfully."));
    let (s, env) = app.get(&format!("/actors/aliases/{alias}")).await;
    assert_error(s, &env, 404, &format!("No alias found: {alias}."));
    let (s, env) = app.get(&format!("/actors/{alias}")).await;
    assert_error(
        s,
        &env,
        404,
        &format!("Actor with identifier '{alias}' not found"),
    );
    let (s, env) = app.delete(&format!("/actors/aliases/{alias}")).await;
    assert_error(s, &env, 404, &format!("No alias found: {alias}."));

    // Deleting an actor deletes the aliases that point at it.
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": a}))
        .await;
    assert_ok(s, &env, "Actor alias created successfully.");
    let (s, env) = app.delete(&format!("/actors/{a}")).await;
    assert_eq!(s, StatusCode::OK, "{env}");
    let (s, env) = app.get(&format!("/actors/aliases/{alias}")).await;
    assert_error(s, &env, 404, &format!("No alias found: {alias}."));
    let (_, env) = app.get("/actors/aliases").await;
    assert_eq!(env["result"], json!([]));
    app.stop().await;
}

fn assert_nonce_display(nonce: &Value, app: &TestApp, actor_id: &str) {
    let id = nonce["id"].as_str().expect("nonce id");
    assert!(
        id.starts_with(&format!("{}_", app.tenant)),
        "nonce id names the tenant: {nonce}"
    );
    assert_eq!(nonce["actor_id"], actor_id);
    assert_eq!(nonce["owner"], "anonymous");
    assert_eq!(nonce["roles"], json!(["ALL"]));
    assert_eq!(nonce["api_server"], app.base.as_str());
    assert!(nonce["create_time"]
        .as_str()
        .expect("create_time")
        .ends_with('Z'));
    for hidden in ["tenant", "db_id", "object", "alias"] {
        assert!(nonce.get(hidden).is_none(), "{hidden} shown: {nonce}");
    }
    let links = &nonce["_links"];
    assert_eq!(
        links["self"],
        app.url(&format!("/actors/v2/{actor_id}/nonces/{id}"))
    );
    assert_eq!(links["actor"], app.url(&format!("/actors/v2/{actor_id}")));
    assert_eq!(links["owner"], app.url("/profiles/v2/anonymous"));
}

#[tokio::test]
async fn nonce_routes_create_list_show_delete() {
    let Some(app) = TestApp::embedded().start().await else {
        return;
    };
    let a = register(&app).await;
    let b = register(&app).await;
    let nonces = format!("/actors/{a}/nonces");

    // An empty POST makes an unlimited EXECUTE nonce.
    let (s, env) = app.call(app.request(Method::POST, &nonces)).await;
    let first = assert_ok(s, &env, "Actor nonce created successfully.");
    assert_nonce_display(&first, &app, &a);
    assert_eq!(first["level"], "EXECUTE");
    assert_eq!(first["max_uses"], -1);
    assert_eq!(first["remaining_uses"], -1);
    assert_eq!(first["current_uses"], 0);
    assert_eq!(first["description"], "");
    assert_eq!(first["last_use_time"], "None");

    let (s, env) = app
        .post_json(
            &nonces,
            json!({"level": "READ", "max_uses": 5, "description": "for the dashboard"}),
        )
        .await;
    let second = assert_ok(s, &env, "Actor nonce created successfully.");
    assert_eq!(second["level"], "READ");
    assert_eq!(second["max_uses"], 5);
    assert_eq!(second["remaining_uses"], 5);
    assert_eq!(second["description"], "for the dashboard");
    // Query-string parameters count too (reqparse reads them).
    let (s, env) = app
        .call(app.request(Method::POST, &format!("{nonces}?level=UPDATE&max_uses=2")))
        .await;
    let third = assert_ok(s, &env, "Actor nonce created successfully.");
    assert_eq!(
        (third["level"].clone(), third["max_uses"].clone()),
        (json!("UPDATE"), json!(2))
    );

    // Validation.
    let (s, env) = app.post_json(&nonces, json!({"level": "WRITE"})).await;
    assert_error(s, &env, 400, LEVELS_MESSAGE);
    for bad in [0, -2] {
        let (s, env) = app.post_json(&nonces, json!({"max_uses": bad})).await;
        assert_error(
            s,
            &env,
            400,
            "The max uses parameter must be a positive integer or -1 (to denote unlimited uses).",
        );
    }
    let (s, env) = app.post_json(&nonces, json!({"max_uses": "many"})).await;
    assert_error(s, &env, 400, "Invalid nonce description: {'max_uses': 'Maximum number of times this nonce can be redeemed. Default is unlimited.'}");
    let (s, env) = app
        .call(
            app.request(Method::POST, &nonces)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{env}");
    let (s, env) = app
        .post_json("/actors/no-such-actor/nonces", json!({}))
        .await;
    assert_error(
        s,
        &env,
        404,
        "Actor with identifier 'no-such-actor' not found",
    );

    // List and show.
    let (s, env) = app.get(&nonces).await;
    let listed = assert_ok(s, &env, "Actor nonces retrieved successfully.");
    assert_eq!(listed, json!([first, second, third]));
    let (s, env) = app.get(&format!("/actors/{b}/nonces")).await;
    assert_eq!(
        assert_ok(s, &env, "Actor nonces retrieved successfully."),
        json!([])
    );
    let id = second["id"].as_str().expect("nonce id");
    let (s, env) = app.get(&format!("{nonces}/{id}")).await;
    assert_eq!(
        assert_ok(s, &env, "Actor nonce retrieved successfully."),
        second
    );
    // A nonce is only found under its own actor.
    let (s, env) = app.get(&format!("/actors/{b}/nonces/{id}")).await;
    assert_error(s, &env, 404, "Nonce not found.");
    let (s, env) = app
        .get(&format!("{nonces}/{}_no-such-nonce", app.tenant))
        .await;
    assert_error(s, &env, 404, "Nonce not found.");

    // Delete; deleting again (or an unknown nonce) is a 404, not Abaco's 500.
    let (s, env) = app.delete(&format!("/actors/{b}/nonces/{id}")).await;
    assert_error(s, &env, 404, "Nonce not found.");
    let (s, env) = app.delete(&format!("{nonces}/{id}")).await;
    assert_ok(s, &env, "Actor nonce deleted successfully.");
    let (s, env) = app.delete(&format!("{nonces}/{id}")).await;
    assert_error(s, &env, 404, "Nonce not found.");
    let (_, env) = app.get(&nonces).await;
    assert_eq!(env["result"], json!([first, third]));

    // Through an alias, the actor routes manage the actor's nonces.
    let alias = unique("al-");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": a}))
        .await;
    assert_ok(s, &env, "Actor alias created successfully.");
    let (_, env) = app.get(&format!("/actors/{alias}/nonces")).await;
    assert_eq!(env["result"], json!([first, third]));

    // Alias nonces: their own list, levels up to EXECUTE, alias name shown, no actor id.
    let alias_nonces = format!("/actors/aliases/{alias}/nonces");
    let (s, env) = app
        .post_json(&alias_nonces, json!({"level": "UPDATE"}))
        .await;
    assert_error(
        s,
        &env,
        400,
        "Invalid nonce description. The level attribute must be one of: ('NONE', 'READ', 'EXECUTE')",
    );
    let (s, env) = app
        .post_json(&alias_nonces, json!({"level": "READ", "max_uses": 3}))
        .await;
    let alias_nonce = assert_ok(s, &env, "Alias nonce created successfully.");
    assert_eq!(alias_nonce["alias"], alias.as_str());
    assert_eq!(alias_nonce["actor_id"], Value::Null);
    assert_eq!(alias_nonce["level"], "READ");
    assert_eq!(alias_nonce["remaining_uses"], 3);
    let anid = alias_nonce["id"].as_str().expect("nonce id");
    assert_eq!(
        alias_nonce["_links"]["self"],
        app.url(&format!("/actors/v2/aliases/{alias}/nonces/{anid}"))
    );
    assert_eq!(
        alias_nonce["_links"]["actor"],
        app.url(&format!("/actors/v2/{a}"))
    );
    let (s, env) = app.get(&alias_nonces).await;
    assert_eq!(
        assert_ok(s, &env, "Alias nonces retrieved successfully."),
        json!([alias_nonce])
    );
    let (s, env) = app.get(&format!("{alias_nonces}/{anid}")).await;
    assert_eq!(
        assert_ok(s, &env, "Alias nonce retrieved successfully."),
        alias_nonce
    );
    let (s, env) = app.get(&format!("{nonces}/{anid}")).await;
    assert_error(s, &env, 404, "Nonce not found.");
    let (s, env) = app.get("/actors/aliases/no-such-alias/nonces").await;
    assert_error(s, &env, 404, "No alias found: no-such-alias.");
    let (s, env) = app.delete(&format!("{alias_nonces}/{anid}")).await;
    assert_ok(s, &env, "Alias nonce deleted successfully.");
    let (s, env) = app.delete(&format!("{alias_nonces}/{anid}")).await;
    assert_error(s, &env, 404, "Nonce not found.");

    // An alias deleted and created again does not inherit the old alias's nonces.
    let (s, env) = app.post_json(&alias_nonces, json!({})).await;
    assert_ok(s, &env, "Alias nonce created successfully.");
    let (s, env) = app.delete(&format!("/actors/aliases/{alias}")).await;
    assert_ok(s, &env, &format!("Alias {alias} deleted successfully."));
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": b}))
        .await;
    assert_ok(s, &env, "Actor alias created successfully.");
    let (_, env) = app.get(&alias_nonces).await;
    assert_eq!(env["result"], json!([]), "{env}");
    app.stop().await;
}

#[tokio::test]
async fn camel_case_names_nonce_and_alias_fields() {
    let Some(app) = TestApp::embedded()
        .with("web", "case", "camel")
        .start()
        .await
    else {
        return;
    };
    let a = register(&app).await;
    let nonces = format!("/actors/{a}/nonces");
    let (s, env) = app.post_json(&nonces, json!({"maxUses": 3})).await;
    let nonce = assert_ok(s, &env, "Actor nonce created successfully.");
    let mut keys: Vec<&str> = nonce
        .as_object()
        .expect("nonce object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "_links",
            "actorId",
            "apiServer",
            "createTime",
            "currentUses",
            "description",
            "id",
            "lastUseTime",
            "level",
            "maxUses",
            "owner",
            "remainingUses",
            "roles"
        ]
    );
    assert_eq!(nonce["maxUses"], 3);
    assert_eq!(nonce["remainingUses"], 3);
    // Snake names are not parameters in camel mode.
    let (_, env) = app.post_json(&nonces, json!({"max_uses": 3})).await;
    assert_eq!(env["result"]["maxUses"], -1, "{env}");
    let (s, env) = app.post_json(&nonces, json!({"maxUses": "x"})).await;
    assert_error(s, &env, 400, "Invalid nonce description: {'maxUses': 'Maximum number of times this nonce can be redeemed. Default is unlimited.'}");

    let alias = unique("al-");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actor_id": a}))
        .await;
    assert_error(s, &env, 400, "Invalid alias description. Missing required field: {'actorId': 'The human readable id for the actor associated with this alias.'}");
    let (s, env) = app
        .post_json("/actors/aliases", json!({"alias": alias, "actorId": a}))
        .await;
    let created = assert_ok(s, &env, "Actor alias created successfully.");
    assert_eq!(created["actorId"], a.as_str());
    assert!(created.get("actor_id").is_none(), "{created}");
    let (s, env) = app
        .post_json(&format!("/actors/aliases/{alias}/nonces"), json!({}))
        .await;
    let alias_nonce = assert_ok(s, &env, "Alias nonce created successfully.");
    assert!(
        alias_nonce.get("actorId").is_none(),
        "null fields are dropped: {alias_nonce}"
    );
    assert_eq!(alias_nonce["alias"], alias.as_str());
    app.stop().await;
}

// ---- access_control = jwt: two users and nonce callers -----------------------------------

/// A platform whose gateway key is the test's, and a way to mint tokens for any user.
struct JwtApp {
    app: TestApp,
    issuer: TokenIssuer,
    tenant: String,
}

impl JwtApp {
    async fn start() -> Option<JwtApp> {
        let issuer = TokenIssuer::generate().expect("RSA key");
        // The public half as base64 PKCS#1 DER, one of the forms `apim_public_key` takes.
        let key_pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&issuer.to_pkcs8())
            .expect("own key parses");
        let public = {
            use aws_lc_rs::signature::KeyPair as _;
            base64::engine::general_purpose::STANDARD.encode(key_pair.public_key().as_ref())
        };
        let tenant = unique("JWT").to_ascii_uppercase();
        let app = TestApp::embedded()
            .with("web", "access_control", "jwt")
            .with("web", "apim_public_key", &public)
            .with("web", "tenant_name", &tenant)
            .start()
            .await?;
        Some(JwtApp {
            app,
            issuer,
            tenant,
        })
    }

    fn token(&self, user: &str) -> String {
        let mut claims = Map::new();
        claims.insert(
            "http://wso2.org/claims/enduser".into(),
            json!(format!("{user}@carbon.super")),
        );
        claims.insert(
            "http://wso2.org/claims/role".into(),
            json!("Internal/abaco-user"),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        self.issuer
            .issue(claims, 3600, i64::try_from(now).expect("time fits"))
            .expect("token signs")
    }

    /// A request as `user`, with an optional JSON body.
    async fn call(
        &self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.app.request(method, path).bearer_auth(self.token(user));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.app.call(req).await
    }

    /// A request with nothing but `?x-nonce=`.
    async fn with_nonce(&self, method: Method, path: &str, nonce: &str) -> (StatusCode, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self
            .app
            .request(method, &format!("{path}{sep}x-nonce={nonce}"));
        if path.ends_with("/messages") {
            req = req.json(&json!({"message": "from a nonce"}));
        }
        self.app.call(req).await
    }

    async fn nonce(&self, user: &str, path: &str, body: Value) -> String {
        let (s, env) = self.call(user, Method::POST, path, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{env}");
        env["result"]["id"].as_str().expect("nonce id").to_string()
    }
}

#[tokio::test]
async fn permissions_are_shared_and_enforced_between_users() {
    let Some(j) = JwtApp::start().await else {
        return;
    };
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            "/actors",
            Some(json!({"image": "abaco-test/echo"})),
        )
        .await;
    let a = assert_ok(s, &env, "Actor created successfully.")["id"]
        .as_str()
        .expect("actor id")
        .to_string();
    let actor = format!("/actors/{a}");
    let perms = format!("{actor}/permissions");

    // Bob holds nothing.
    for path in [actor.clone(), perms.clone(), format!("{actor}/nonces")] {
        let (s, env) = j.call("bob", Method::GET, &path, None).await;
        assert_error(s, &env, 400, NO_ACTOR_ACCESS);
    }
    let (s, env) = j
        .call(
            "bob",
            Method::POST,
            &perms,
            Some(json!({"user": "bob", "level": "UPDATE"})),
        )
        .await;
    assert_error(s, &env, 400, NO_ACTOR_ACCESS);

    // Alice shares READ: bob reads, but may not execute, change or make nonces.
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            &perms,
            Some(json!({"user": "bob", "level": "READ"})),
        )
        .await;
    assert_eq!(
        assert_ok(s, &env, "Permission added successfully."),
        json!({"alice": "UPDATE", "bob": "READ"})
    );
    for path in [actor.clone(), perms.clone(), format!("{actor}/nonces")] {
        let (s, env) = j.call("bob", Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {env}");
    }
    let (s, env) = j
        .call(
            "bob",
            Method::POST,
            &format!("{actor}/messages"),
            Some(json!({"message": "hi"})),
        )
        .await;
    assert_error(s, &env, 400, NO_ACTOR_ACCESS);
    for path in [perms.clone(), format!("{actor}/nonces")] {
        let (s, env) = j
            .call(
                "bob",
                Method::POST,
                &path,
                Some(json!({"user": "bob", "level": "READ"})),
            )
            .await;
        assert_error(s, &env, 400, NO_ACTOR_ACCESS);
    }

    // Aliases need UPDATE on the actor to create; listings show only readable aliases.
    let alias = unique("al-");
    let (s, env) = j
        .call(
            "bob",
            Method::POST,
            "/actors/aliases",
            Some(json!({"alias": alias, "actor_id": a})),
        )
        .await;
    assert_error(
        s,
        &env,
        400,
        &format!("Not authorized -- you do not have access to {a}."),
    );
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            "/actors/aliases",
            Some(json!({"alias": alias, "actor_id": a})),
        )
        .await;
    assert_ok(s, &env, "Actor alias created successfully.");
    let (_, env) = j.call("alice", Method::GET, "/actors/aliases", None).await;
    assert_eq!(env["result"].as_array().map(Vec::len), Some(1), "{env}");
    let (_, env) = j.call("bob", Method::GET, "/actors/aliases", None).await;
    assert_eq!(env["result"], json!([]), "bob cannot read the alias: {env}");
    let alias_path = format!("/actors/aliases/{alias}");
    let no_alias_access = "Not authorized -- you do not have access to this alias.";
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({"actor_id": a}))),
        (Method::DELETE, None),
    ] {
        let (s, env) = j.call("bob", method, &alias_path, body).await;
        assert_error(s, &env, 400, no_alias_access);
    }
    let (s, env) = j
        .call("bob", Method::GET, &format!("{alias_path}/nonces"), None)
        .await;
    assert_error(
        s,
        &env,
        400,
        "Not authorized -- you do not have access to this alias and actor.",
    );
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            &format!("{alias_path}/permissions"),
            Some(json!({"user": "bob", "level": "READ"})),
        )
        .await;
    assert_ok(s, &env, "Permission added successfully.");
    let (_, env) = j.call("bob", Method::GET, "/actors/aliases", None).await;
    assert_eq!(env["result"][0]["alias"], alias.as_str(), "{env}");
    let (s, env) = j
        .call("bob", Method::GET, &format!("{alias_path}/nonces"), None)
        .await;
    assert_ok(s, &env, "Alias nonces retrieved successfully.");

    // Re-pointing needs UPDATE on the target actor too.
    let (s, env) = j
        .call(
            "bob",
            Method::POST,
            "/actors",
            Some(json!({"image": "abaco-test/echo"})),
        )
        .await;
    let bobs = assert_ok(s, &env, "Actor created successfully.")["id"]
        .as_str()
        .expect("actor id")
        .to_string();
    let (s, env) = j
        .call(
            "alice",
            Method::PUT,
            &alias_path,
            Some(json!({"actor_id": bobs})),
        )
        .await;
    assert_error(s, &env, 400, "Not authorized -- you do not have UPDATE access to the actor you want to associate with this alias.");
    // With UPDATE on alias and actor, bob may re-point it.
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            &format!("{alias_path}/permissions"),
            Some(json!({"user": "bob", "level": "UPDATE"})),
        )
        .await;
    assert_ok(s, &env, "Permission added successfully.");
    let (s, env) = j
        .call(
            "bob",
            Method::PUT,
            &alias_path,
            Some(json!({"actor_id": bobs})),
        )
        .await;
    assert_eq!(
        assert_ok(s, &env, "Actor alias updated successfully.")["actor_id"],
        bobs.as_str()
    );
    let (_, env) = j
        .call("bob", Method::GET, &format!("/actors/{alias}"), None)
        .await;
    assert_eq!(env["result"]["id"], bobs.as_str(), "{env}");
    j.app.stop().await;
}

#[tokio::test]
async fn nonces_authenticate_within_their_level_uses_and_object() {
    let Some(j) = JwtApp::start().await else {
        return;
    };
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            "/actors",
            Some(json!({"image": "abaco-test/echo"})),
        )
        .await;
    let a = assert_ok(s, &env, "Actor created successfully.")["id"]
        .as_str()
        .expect("actor id")
        .to_string();
    let actor = format!("/actors/{a}");
    let nonces = format!("{actor}/nonces");

    // Nothing at all: refused.
    let (s, env) = j.app.call(j.app.request(Method::GET, &actor)).await;
    assert_eq!(env["message"], "No JWT or nonce provided.", "{s} {env}");
    let (s, env) = j
        .with_nonce(Method::GET, &actor, &format!("{}_no-such-nonce", j.tenant))
        .await;
    assert_error(s, &env, 400, "Nonce does not exist.");

    // One use, ten concurrent callers: exactly one gets in.
    let once = j
        .nonce("alice", &nonces, json!({"level": "READ", "max_uses": 1}))
        .await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = j
            .app
            .request(Method::GET, &format!("{actor}?x-nonce={once}"));
        set.spawn(async move {
            let resp = req.send().await.expect("request reaches the API");
            let status = resp.status();
            let body: Value = resp.json().await.expect("JSON envelope");
            (status, body)
        });
    }
    let mut oks = 0;
    while let Some(joined) = set.join_next().await {
        let (status, body) = joined.expect("request task");
        if status == StatusCode::OK {
            oks += 1;
            assert_eq!(body["result"]["id"], a.as_str());
        } else {
            assert_error(status, &body, 400, "No remaining uses left for this nonce.");
        }
    }
    assert_eq!(oks, 1, "a one-use nonce admitted {oks} requests");
    let (_, env) = j
        .call("alice", Method::GET, &format!("{nonces}/{once}"), None)
        .await;
    let used = &env["result"];
    assert_eq!(
        (used["current_uses"].clone(), used["remaining_uses"].clone()),
        (json!(1), json!(0)),
        "{env}"
    );
    assert_ne!(used["last_use_time"], "None", "{env}");

    // A READ nonce reads but cannot send messages; an EXECUTE nonce sends but cannot delete.
    let read = j.nonce("alice", &nonces, json!({"level": "READ"})).await;
    let (s, env) = j.with_nonce(Method::GET, &actor, &read).await;
    assert_ok(s, &env, "Actor retrieved successfully.");
    let (s, env) = j
        .with_nonce(Method::POST, &format!("{actor}/messages"), &read)
        .await;
    assert_error(
        s,
        &env,
        400,
        "Nonce does not have sufficient permissions level.",
    );
    let execute = j.nonce("alice", &nonces, json!({})).await;
    let (s, env) = j
        .with_nonce(Method::POST, &format!("{actor}/messages"), &execute)
        .await;
    let receipt = assert_ok(s, &env, "The request was successful");
    assert!(receipt["execution_id"].is_string(), "{receipt}");
    let (s, env) = j.with_nonce(Method::DELETE, &actor, &execute).await;
    assert_error(
        s,
        &env,
        400,
        "Nonce does not have sufficient permissions level.",
    );
    let (s, env) = j.with_nonce(Method::GET, "/actors", &read).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "nonces only open their object: {env}"
    );

    // A nonce never exceeds what its creator holds now: bob's EXECUTE nonce stops working when
    // bob is demoted to READ.
    let perms = format!("{actor}/permissions");
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            &perms,
            Some(json!({"user": "bob", "level": "UPDATE"})),
        )
        .await;
    assert_ok(s, &env, "Permission added successfully.");
    let bobs = j.nonce("bob", &nonces, json!({"level": "EXECUTE"})).await;
    let (s, env) = j
        .with_nonce(Method::POST, &format!("{actor}/messages"), &bobs)
        .await;
    assert_ok(s, &env, "The request was successful");
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            &perms,
            Some(json!({"user": "bob", "level": "READ"})),
        )
        .await;
    assert_ok(s, &env, "Permission added successfully.");
    let (s, env) = j
        .with_nonce(Method::POST, &format!("{actor}/messages"), &bobs)
        .await;
    assert_error(s, &env, 400, NO_ACTOR_ACCESS);

    // Actor nonces work on actor-id URLs only, alias nonces on alias URLs only.
    let alias = unique("al-");
    let (s, env) = j
        .call(
            "alice",
            Method::POST,
            "/actors/aliases",
            Some(json!({"alias": alias, "actor_id": a})),
        )
        .await;
    assert_ok(s, &env, "Actor alias created successfully.");
    let (s, env) = j
        .with_nonce(Method::GET, &format!("/actors/{alias}"), &read)
        .await;
    assert_error(s, &env, 400, "Nonce does not exist.");
    let alias_read = j
        .nonce(
            "alice",
            &format!("/actors/aliases/{alias}/nonces"),
            json!({"level": "READ"}),
        )
        .await;
    let (s, env) = j
        .with_nonce(Method::GET, &format!("/actors/{alias}"), &alias_read)
        .await;
    assert_eq!(
        assert_ok(s, &env, "Actor retrieved successfully.")["id"],
        a.as_str()
    );
    let (s, env) = j
        .with_nonce(
            Method::GET,
            &format!("/actors/aliases/{alias}"),
            &alias_read,
        )
        .await;
    assert_ok(s, &env, "Alias retrieved successfully.");
    let (s, env) = j.with_nonce(Method::GET, &actor, &alias_read).await;
    assert_error(s, &env, 400, "Nonce does not exist.");

    // Deleting a nonce, the alias or the actor leaves nothing redeemable.
    let (s, env) = j
        .call("alice", Method::DELETE, &format!("{nonces}/{read}"), None)
        .await;
    assert_ok(s, &env, "Actor nonce deleted successfully.");
    let (s, env) = j.with_nonce(Method::GET, &actor, &read).await;
    assert_error(s, &env, 400, "Nonce does not exist.");
    let (s, env) = j
        .call(
            "alice",
            Method::DELETE,
            &format!("/actors/aliases/{alias}"),
            None,
        )
        .await;
    assert_ok(s, &env, &format!("Alias {alias} deleted successfully."));
    let (s, env) = j
        .with_nonce(
            Method::GET,
            &format!("/actors/aliases/{alias}"),
            &alias_read,
        )
        .await;
    assert_error(s, &env, 400, "Nonce does not exist.");
    let (s, env) = j.call("alice", Method::DELETE, &actor, None).await;
    assert_eq!(s, StatusCode::OK, "{env}");
    let (s, env) = j.with_nonce(Method::GET, &actor, &execute).await;
    assert_error(s, &env, 400, "Nonce does not exist.");
    j.app.stop().await;
}
