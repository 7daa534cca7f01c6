//! The environment of an actor container (spec §5.2), built in Abaco's order: the actor's
//! `default_environment`, then the message's fields, then the worker's own `_abaco_*` values,
//! then `_actor_configs` and `MSG`. Dicts and lists are rendered as Python reprs, as actor
//! libraries expect. Which configs an actor receives is decided here too (`names_actor`); reading
//! and decrypting them is the caller's business.

use serde_json::{Map, Value};

use abaco_core::messages::MessageBody;
use abaco_core::pyrepr::env_value;
use abaco_core::{Actor, MailboxMessage, Worker};

/// Ordered `(name, value)` pairs; later entries win. `configs` is `{name: plaintext value}` of
/// the configs naming this actor (see `names_actor`).
pub fn build(
    actor: &Actor,
    worker: &Worker,
    message: &MailboxMessage,
    access_token: &str,
    configs: &Map<String, Value>,
) -> Vec<(String, String)> {
    let mut env: Map<String, Value> = Map::new();
    for (k, v) in &actor.default_environment {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &message.env {
        env.insert(k.clone(), v.clone());
    }
    let set = |env: &mut Map<String, Value>, k: &str, v: Value| {
        env.insert(k.to_string(), v);
    };
    set(
        &mut env,
        "_abaco_access_token",
        Value::String(access_token.to_string()),
    );
    set(
        &mut env,
        "_abaco_actor_dbid",
        Value::String(actor.db_id().0),
    );
    set(
        &mut env,
        "_abaco_actor_id",
        Value::String(actor.id.0.clone()),
    );
    set(
        &mut env,
        "_abaco_worker_id",
        Value::String(worker.id.0.clone()),
    );
    set(
        &mut env,
        "_abaco_container_repo",
        Value::String(actor.image.clone()),
    );
    set(&mut env, "_abaco_actor_state", actor.state.clone());
    set(
        &mut env,
        "_abaco_actor_name",
        Value::String(actor.name.clone().unwrap_or_else(|| "None".into())),
    );
    set(
        &mut env,
        "_abaco_execution_id",
        Value::String(message.execution_id.0.clone()),
    );
    set(
        &mut env,
        "_abaco_Content_Type",
        Value::String(message.content_type.as_str().into()),
    );
    set(&mut env, "_actor_configs", Value::Object(configs.clone()));
    match &message.message {
        MessageBody::Text(s) => set(&mut env, "MSG", Value::String(s.clone())),
        MessageBody::Json(v) => set(&mut env, "MSG", v.clone()),
        MessageBody::Binary(_) => {
            env.remove("MSG");
        }
    }
    env.into_iter()
        .filter(|(k, v)| !k.is_empty() && !k.contains('=') && !v.is_null())
        .map(|(k, v)| {
            let value = env_value(&v).replace('\0', "");
            (k, value)
        })
        .collect()
}

/// Whether a config's `actors` field (comma-separated ids and aliases) names the actor: an entry,
/// trimmed, must equal one of `names` exactly — Abaco's substring test handed `abc`'s configs
/// to `abcd` too.
pub fn names_actor(actors_field: &str, names: &[&str]) -> bool {
    actors_field
        .split(',')
        .map(str::trim)
        .any(|entry| !entry.is_empty() && names.contains(&entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abaco_core::messages::ContentType;
    use abaco_core::time::now;
    use abaco_core::{ActorId, ActorStatus, ExecutionId, Tenant, WorkerId};
    use serde_json::json;

    fn actor() -> Actor {
        let t = now();
        Actor {
            id: ActorId::from("A1"),
            tenant: Tenant::from("DEV"),
            owner: "me".into(),
            api_server: "http://x".into(),
            image: "img".into(),
            name: None,
            description: String::new(),
            stateless: true,
            kind: "none".into(),
            link: String::new(),
            webhook: String::new(),
            hints: vec![],
            token: json!(false),
            privileged: false,
            max_workers: None,
            mem_limit: None,
            max_cpus: None,
            use_container_uid: false,
            default_environment: json!({"key1": "default", "key2": "kept"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            status: ActorStatus::Ready,
            status_message: String::new(),
            state: json!({"count": 1}),
            create_time: t,
            last_update_time: t,
            mounts: vec![],
            revision: 1,
            tasdir: None,
            uid: None,
            gid: None,
            queue: "default".into(),
            log_ex: None,
            cron_on: false,
            cron_schedule: None,
            cron_next_ex: None,
        }
    }

    #[test]
    fn message_fields_override_defaults_and_worker_values_win() {
        let a = actor();
        let w = Worker::requested(&a, WorkerId::from("W1"), now());
        let mut msg_env = Map::new();
        msg_env.insert("key1".into(), json!("from-query"));
        msg_env.insert("_abaco_actor_id".into(), json!("spoofed"));
        let m = MailboxMessage {
            execution_id: ExecutionId::from("E1"),
            content_type: ContentType::Json,
            message: MessageBody::Json(json!({"a": true})),
            env: msg_env,
        };
        let env: std::collections::HashMap<_, _> =
            build(&a, &w, &m, "tok", &Map::new()).into_iter().collect();
        assert_eq!(env["key1"], "from-query");
        assert_eq!(env["key2"], "kept");
        assert_eq!(env["_abaco_actor_id"], "A1");
        assert_eq!(env["_abaco_actor_dbid"], "DEV_A1");
        assert_eq!(env["MSG"], "{'a': True}");
        assert_eq!(env["_abaco_actor_state"], "{'count': 1}");
        assert_eq!(env["_abaco_actor_name"], "None");
        assert_eq!(env["_abaco_Content_Type"], "application/json");
        assert_eq!(env["_abaco_access_token"], "tok");
        assert_eq!(env["_actor_configs"], "{}");
    }

    #[test]
    fn configs_are_a_python_dict() {
        let a = actor();
        let w = Worker::requested(&a, WorkerId::from("W1"), now());
        let m = MailboxMessage {
            execution_id: ExecutionId::from("E1"),
            content_type: ContentType::Str,
            message: MessageBody::Text("hi".into()),
            env: Map::new(),
        };
        let configs = json!({"db": "postgres://x", "secret": "it's"});
        let configs = configs.as_object().cloned().unwrap_or_default();
        let env: std::collections::HashMap<_, _> =
            build(&a, &w, &m, "", &configs).into_iter().collect();
        assert_eq!(
            env["_actor_configs"],
            r#"{'db': 'postgres://x', 'secret': "it's"}"#
        );
    }

    #[test]
    fn configs_name_actors_by_whole_entries() {
        let check = |field: &str, names: &[&str], expect: bool| {
            assert_eq!(names_actor(field, names), expect, "{field:?} {names:?}");
        };
        check("A1", &["A1"], true);
        check(" A2 , A1 ", &["A1"], true);
        check("A1B", &["A1"], false);
        check("XA1", &["A1"], false);
        check("myalias,other", &["A1", "myalias"], true);
        check("", &["A1"], false);
        check(",,", &[""], false);
    }

    #[test]
    fn binary_messages_have_no_msg() {
        let a = actor();
        let w = Worker::requested(&a, WorkerId::from("W1"), now());
        let m = MailboxMessage {
            execution_id: ExecutionId::from("E1"),
            content_type: ContentType::Binary,
            message: MessageBody::Binary(vec![1, 2, 3]),
            env: Map::new(),
        };
        assert!(!build(&a, &w, &m, "", &Map::new())
            .iter()
            .any(|(k, _)| k == "MSG"));
    }
}
