//! The records the platform keeps: actors, executions and workers, in their storage form
//! (always snake_case; the API crate owns the wire shapes and camelCase).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ActorId, DbId, ExecutionId, Tenant, WorkerId};
use crate::status::{ActorStatus, ExecutionStatus, WorkerStatus};
use crate::time::Timestamp;

/// A registered actor (spec §3.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub id: ActorId,
    pub tenant: Tenant,
    pub owner: String,
    pub api_server: String,
    pub image: String,
    pub name: Option<String>,
    pub description: String,
    pub stateless: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub link: String,
    pub webhook: String,
    pub hints: Vec<String>,
    /// `true`/`false`, or Abaco's raw config string when defaulted; kept as JSON to stay wire-compatible.
    pub token: Value,
    pub privileged: bool,
    pub max_workers: Option<i64>,
    pub mem_limit: Option<String>,
    pub max_cpus: Option<i64>,
    pub use_container_uid: bool,
    pub default_environment: Map<String, Value>,
    pub status: ActorStatus,
    pub status_message: String,
    pub state: Value,
    pub create_time: Timestamp,
    pub last_update_time: Timestamp,
    pub mounts: Vec<Mount>,
    pub revision: i64,
    pub tasdir: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub queue: String,
    pub log_ex: Option<i64>,
    pub cron_on: bool,
    pub cron_schedule: Option<String>,
    pub cron_next_ex: Option<String>,
}

impl Actor {
    pub fn db_id(&self) -> DbId {
        DbId::new(&self.tenant, &self.id)
    }

    /// The `token` attribute as a boolean (Abaco stores config defaults as the strings `"true"`/`"false"`).
    pub fn wants_token(&self) -> bool {
        match &self.token {
            Value::Bool(b) => *b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    pub fn has_hint(&self, hint: &str) -> bool {
        self.hints.iter().any(|h| h == hint)
    }
}

/// A bind mount of the actor container (spec §7.11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub mode: String,
}

/// One run of an actor's container for one message (spec §3.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub actor_id: DbId,
    pub tenant: Tenant,
    pub api_server: String,
    pub executor: String,
    pub worker_id: Option<WorkerId>,
    pub status: ExecutionStatus,
    pub message_received_time: Timestamp,
    pub start_time: Option<Timestamp>,
    pub finish_time: Option<Timestamp>,
    /// Wall time in seconds.
    pub runtime: i64,
    /// CPU time used, nanoseconds.
    pub cpu: i64,
    /// Bytes read and written by the container.
    pub io: i64,
    pub exit_code: Option<Value>,
    pub final_state: Option<Value>,
    /// Why an execution ended in `ERROR`, or how it was stopped.
    #[serde(default)]
    pub status_message: Option<String>,
}

impl Execution {
    pub fn submitted(
        actor: &Actor,
        id: ExecutionId,
        executor: &str,
        received: Timestamp,
    ) -> Execution {
        Execution {
            id,
            actor_id: actor.db_id(),
            tenant: actor.tenant.clone(),
            api_server: actor.api_server.clone(),
            executor: executor.to_string(),
            worker_id: None,
            status: ExecutionStatus::Submitted,
            message_received_time: received,
            start_time: None,
            finish_time: None,
            runtime: 0,
            cpu: 0,
            io: 0,
            exit_code: None,
            final_state: None,
            status_message: None,
        }
    }
}

/// A worker: one consumer of an actor's mailbox that runs its containers (spec §3.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: WorkerId,
    pub actor_id: DbId,
    pub tenant: Tenant,
    pub status: WorkerStatus,
    pub ch_name: String,
    pub image: Option<String>,
    pub revision: Option<i64>,
    pub location: Option<String>,
    pub cid: Option<String>,
    pub host_id: Option<String>,
    pub host_ip: Option<String>,
    pub create_time: Timestamp,
    pub last_execution_time: Option<Timestamp>,
    pub last_health_check_time: Option<Timestamp>,
    /// Why the worker was stopped or failed, recorded by whoever acted on it.
    #[serde(default)]
    pub status_message: Option<String>,
}

impl Worker {
    pub fn requested(actor: &Actor, id: WorkerId, now: Timestamp) -> Worker {
        Worker {
            ch_name: format!("worker_{id}"),
            id,
            actor_id: actor.db_id(),
            tenant: actor.tenant.clone(),
            status: WorkerStatus::Requested,
            image: None,
            revision: None,
            location: None,
            cid: None,
            host_id: None,
            host_ip: None,
            create_time: now,
            last_execution_time: None,
            last_health_check_time: None,
            status_message: None,
        }
    }
}

/// Docker memory strings: bytes, or a number with `b`, `k`, `m`, `g` (any case); `-1` unlimited.
pub fn parse_mem_limit(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    if s == "-1" {
        return Some(-1);
    }
    let (digits, mult) = match s.chars().last()? {
        'b' => (&s[..s.len() - 1], 1),
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        c if c.is_ascii_digit() => (&s[..], 1),
        _ => return None,
    };
    let n: i64 = digits.parse().ok()?;
    if n <= 0 {
        return None;
    }
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::parse_mem_limit;

    #[test]
    fn memory_strings() {
        assert_eq!(parse_mem_limit("512m"), Some(512 << 20));
        assert_eq!(parse_mem_limit("1G"), Some(1 << 30));
        assert_eq!(parse_mem_limit("4096"), Some(4096));
        assert_eq!(parse_mem_limit("-1"), Some(-1));
        assert_eq!(parse_mem_limit("lots"), None);
        assert_eq!(parse_mem_limit("0m"), None);
        assert_eq!(parse_mem_limit(""), None);
    }
}
