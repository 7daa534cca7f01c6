//! The environment of an actor container (spec §5.2), built in Abaco's order: the actor's
//! `default_environment`, then the message's fields, then the worker's own `_abaco_*` values,
//! then `MSG`. Dicts and lists are rendered as Python reprs, as actor libraries expect.

use serde_json::{Map, Value};

use abaco_core::messages::MessageBody;
use abaco_core::pyrepr::env_value;
use abaco_core::{Actor, MailboxMessage, Worker};

/// Ordered `(name, value)` pairs; later entries win.
pub fn build(actor: &Actor, worker: &Worker, message: &MailboxMessage) -> Vec<(String, String)> {
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
        Value::String(String::new()),
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
        let env: std::collections::HashMap<_, _> = build(&a, &w, &m).into_iter().collect();
        assert_eq!(env["key1"], "from-query");
        assert_eq!(env["key2"], "kept");
        assert_eq!(env["_abaco_actor_id"], "A1");
        assert_eq!(env["_abaco_actor_dbid"], "DEV_A1");
        assert_eq!(env["MSG"], "{'a': True}");
        assert_eq!(env["_abaco_actor_state"], "{'count': 1}");
        assert_eq!(env["_abaco_actor_name"], "None");
        assert_eq!(env["_abaco_Content_Type"], "application/json");
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
        assert!(!build(&a, &w, &m).iter().any(|(k, _)| k == "MSG"));
    }
}
