//! Wire shapes: how actors, executions, workers and the rest are displayed (spec §3), with their
//! `_links`. Domain types carry no HTTP concerns; this file turns them into JSON.

use serde_json::{json, Map, Value};

use abaco_core::time::display;
use abaco_core::{Actor, Execution, Worker};

use crate::case::{self, Case};

fn links(pairs: &[(&str, String)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_string(), Value::String(v.clone()));
    }
    Value::Object(m)
}

fn actor_url(api_server: &str, actor_id: &str) -> String {
    format!("{api_server}/actors/v2/{actor_id}")
}

fn owner_url(api_server: &str, owner: &str) -> String {
    format!("{api_server}/profiles/v2/{owner}")
}

/// The actor display (spec §3.1): every field except `db_id`, `executions`, `tenant`, `api_server`.
pub fn actor(case: Case, actor: &Actor) -> Value {
    let a = actor;
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    m.insert("image".into(), json!(a.image));
    m.insert("stateless".into(), json!(a.stateless));
    m.insert("type".into(), json!(a.kind));
    m.insert("link".into(), json!(a.link));
    m.insert("token".into(), a.token.clone());
    m.insert("webhook".into(), json!(a.webhook));
    m.insert("hints".into(), json!(a.hints));
    m.insert("description".into(), json!(a.description));
    m.insert("privileged".into(), json!(a.privileged));
    m.insert("max_workers".into(), json!(a.max_workers));
    m.insert("mem_limit".into(), json!(a.mem_limit));
    m.insert("max_cpus".into(), json!(a.max_cpus));
    m.insert("use_container_uid".into(), json!(a.use_container_uid));
    m.insert(
        "default_environment".into(),
        Value::Object(a.default_environment.clone()),
    );
    m.insert("status".into(), json!(a.status.as_str()));
    m.insert("status_message".into(), json!(a.status_message));
    m.insert("state".into(), a.state.clone());
    m.insert("create_time".into(), json!(display(Some(&a.create_time))));
    m.insert(
        "last_update_time".into(),
        json!(display(Some(&a.last_update_time))),
    );
    m.insert("owner".into(), json!(a.owner));
    m.insert("mounts".into(), json!(a.mounts));
    m.insert("revision".into(), json!(a.revision));
    m.insert("tasdir".into(), json!(a.tasdir));
    m.insert("uid".into(), json!(a.uid));
    m.insert("gid".into(), json!(a.gid));
    m.insert("queue".into(), json!(a.queue));
    m.insert("id".into(), json!(a.id.as_str()));
    m.insert("log_ex".into(), json!(a.log_ex));
    m.insert("cron_on".into(), json!(a.cron_on));
    m.insert("cron_schedule".into(), json!(a.cron_schedule));
    m.insert("cron_next_ex".into(), json!(a.cron_next_ex));
    m.insert(
        "_links".into(),
        links(&[
            ("self", actor_url(&a.api_server, a.id.as_str())),
            ("owner", owner_url(&a.api_server, &a.owner)),
            (
                "executions",
                format!("{}/executions", actor_url(&a.api_server, a.id.as_str())),
            ),
        ]),
    );
    case::model(case, m)
}

/// The execution display (spec §3.7).
pub fn execution(case: Case, e: &Execution) -> Value {
    let aid = e.actor_id.actor_id();
    let base = format!(
        "{}/executions/{}",
        actor_url(&e.api_server, aid.as_str()),
        e.id
    );
    let mut m = Map::new();
    m.insert("id".into(), json!(e.id.as_str()));
    m.insert("actor_id".into(), json!(aid.as_str()));
    m.insert("api_server".into(), json!(e.api_server));
    m.insert("executor".into(), json!(e.executor));
    m.insert("worker_id".into(), json!(e.worker_id));
    m.insert("status".into(), json!(e.status.as_str()));
    m.insert(
        "message_received_time".into(),
        json!(display(Some(&e.message_received_time))),
    );
    m.insert("start_time".into(), json!(display(e.start_time.as_ref())));
    m.insert("finish_time".into(), json!(display(e.finish_time.as_ref())));
    m.insert("runtime".into(), json!(e.runtime));
    m.insert("cpu".into(), json!(e.cpu));
    m.insert("io".into(), json!(e.io));
    m.insert(
        "exit_code".into(),
        e.exit_code.clone().unwrap_or(Value::Null),
    );
    m.insert(
        "final_state".into(),
        e.final_state.clone().unwrap_or(Value::Null),
    );
    m.insert("status_message".into(), json!(e.status_message));
    m.insert(
        "_links".into(),
        links(&[
            ("self", base.clone()),
            ("owner", owner_url(&e.api_server, &e.executor)),
            ("logs", format!("{base}/logs")),
        ]),
    );
    case::model(case, m)
}

/// One entry of the executions summary list (spec §3.6).
pub fn execution_summary_item(case: Case, e: &Execution) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(e.id.as_str()));
    m.insert("status".into(), json!(e.status.as_str()));
    m.insert(
        "start_time".into(),
        json!(e.start_time.as_ref().map(|t| display(Some(t)))),
    );
    m.insert(
        "finish_time".into(),
        json!(e.finish_time.as_ref().map(|t| display(Some(t)))),
    );
    m.insert(
        "message_received_time".into(),
        json!(display(Some(&e.message_received_time))),
    );
    case::dict(case, m)
}

/// The worker display (spec §3.9).
pub fn worker(case: Case, w: &Worker) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(w.id.as_str()));
    m.insert("tenant".into(), json!(w.tenant.as_str()));
    m.insert("status".into(), json!(w.status.as_str()));
    m.insert("ch_name".into(), json!(w.ch_name));
    m.insert("image".into(), json!(w.image));
    m.insert("location".into(), json!(w.location));
    m.insert("cid".into(), json!(w.cid));
    m.insert("host_id".into(), json!(w.host_id));
    m.insert("host_ip".into(), json!(w.host_ip));
    m.insert("create_time".into(), json!(display(Some(&w.create_time))));
    m.insert(
        "last_execution_time".into(),
        json!(display(w.last_execution_time.as_ref())),
    );
    m.insert(
        "last_health_check_time".into(),
        json!(display(w.last_health_check_time.as_ref())),
    );
    case::model(case, m)
}

/// `_links` of the mailbox routes.
pub fn messages_links(actor: &Actor) -> Value {
    let base = actor_url(&actor.api_server, actor.id.as_str());
    links(&[
        ("self", format!("{base}/messages")),
        ("owner", owner_url(&actor.api_server, &actor.owner)),
    ])
}

/// `_links` of a message receipt.
pub fn receipt_links(actor: &Actor, execution_id: &str) -> Value {
    let base = actor_url(&actor.api_server, actor.id.as_str());
    links(&[
        ("self", format!("{base}/executions/{execution_id}")),
        ("owner", owner_url(&actor.api_server, &actor.owner)),
        ("messages", format!("{base}/messages")),
    ])
}

/// `_links` of an execution's logs.
pub fn logs_links(actor: &Actor, execution_id: &str) -> Value {
    let base = actor_url(&actor.api_server, actor.id.as_str());
    links(&[
        ("self", format!("{base}/executions/{execution_id}/logs")),
        ("owner", owner_url(&actor.api_server, &actor.owner)),
        ("execution", format!("{base}/executions/{execution_id}")),
    ])
}

/// `_links` of an executions summary.
pub fn executions_links(actor: &Actor) -> Value {
    let base = actor_url(&actor.api_server, actor.id.as_str());
    links(&[
        ("self", format!("{base}/executions")),
        ("owner", owner_url(&actor.api_server, &actor.owner)),
    ])
}
