//! What travels over the channels: queue names (one enum owns them all) and the payloads of the
//! spawner command queue, actor mailboxes and worker control queues. Payloads are JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{DbId, ExecutionId, Tenant, WorkerId};

/// Every queue the platform uses; `name()` gives the broker-level name (Abaco's names).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Worker-start commands for spawners serving one host queue: `command_channel_{queue}`.
    Command(String),
    /// An actor's mailbox: `actor_msg_{dbid}`.
    Mailbox(DbId),
    /// Control of one worker (`stop`, `force_quit`, ...): `worker_{worker_id}`.
    WorkerControl(WorkerId),
    /// Results an execution sent over its results socket: `results_{dbid}_{execution_id}`.
    Results(DbId, ExecutionId),
    /// Requests to clientg: `clients`.
    Clients,
    /// Actor and execution events for links and webhooks: `events_channel_default`.
    Events,
}

impl Queue {
    pub fn name(&self) -> String {
        match self {
            Queue::Command(q) => format!("command_channel_{q}"),
            Queue::Mailbox(db_id) => format!("actor_msg_{db_id}"),
            Queue::WorkerControl(wid) => format!("worker_{wid}"),
            Queue::Results(db_id, eid) => format!("results_{db_id}_{eid}"),
            Queue::Clients => "clients".to_string(),
            Queue::Events => "events_channel_default".to_string(),
        }
    }

    /// Queues that must survive a broker restart with their messages. Results queues are
    /// transient by design (Abaco lets them expire after 20 minutes).
    pub fn is_durable(&self) -> bool {
        !matches!(self, Queue::Results(..))
    }
}

/// A worker-start command for a spawner (spec §0.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnerCommand {
    pub actor_id: DbId,
    pub worker_id: WorkerId,
    pub image: String,
    pub revision: i64,
    pub tenant: Tenant,
    pub stop_existing: bool,
}

/// One message in an actor's mailbox: the payload plus the `_abaco_*` fields and the query
/// parameters that become container environment variables (spec §5.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MailboxMessage {
    pub execution_id: ExecutionId,
    pub content_type: ContentType,
    /// Text for `str`, any JSON for `application/json`, base64-free raw bytes for binary.
    pub message: MessageBody,
    /// Environment entries added by the API (`_abaco_username`, query parameters, ...).
    pub env: Map<String, Value>,
}

/// `_abaco_Content_Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentType {
    #[serde(rename = "str")]
    Str,
    #[serde(rename = "application/json")]
    Json,
    #[serde(rename = "application/octet-stream")]
    Binary,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Str => "str",
            ContentType::Json => "application/json",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageBody {
    Text(String),
    Json(Value),
    Binary(Vec<u8>),
}

/// Commands on a worker's control queue (spec §0.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerControl {
    /// Health ping: the worker records `last_health_check_time`.
    #[serde(rename = "status")]
    Status,
    /// Stop the running container; the execution is finalised and the worker keeps serving.
    #[serde(rename = "force_quit")]
    ForceQuit,
    /// Finish the in-flight execution, then stop and delete the worker record.
    #[serde(rename = "stop")]
    Stop,
    /// Same as `stop` (kept for wire compatibility; we never delete the mailbox).
    #[serde(rename = "stop-no-delete")]
    StopNoDelete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_match_abaco() {
        let db_id = DbId::from("DEV_abc");
        assert_eq!(Queue::Mailbox(db_id.clone()).name(), "actor_msg_DEV_abc");
        assert_eq!(Queue::Command("default".into()).name(), "command_channel_default");
        assert_eq!(Queue::WorkerControl(WorkerId::from("w1")).name(), "worker_w1");
        assert_eq!(
            Queue::Results(db_id, ExecutionId::from("e1")).name(),
            "results_DEV_abc_e1"
        );
        assert_eq!(Queue::Events.name(), "events_channel_default");
    }

    #[test]
    fn worker_control_wire_strings() {
        assert_eq!(
            serde_json::to_string(&WorkerControl::StopNoDelete).unwrap(),
            "\"stop-no-delete\""
        );
    }
}
