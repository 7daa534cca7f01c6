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
    /// clientg's replies to one worker: `clients_reply_{worker_id}`.
    ClientReply(WorkerId),
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
            Queue::ClientReply(wid) => format!("clients_reply_{wid}"),
            Queue::Events => "events_channel_default".to_string(),
        }
    }

    /// Queues that must survive a broker restart with their messages. Results queues are
    /// transient by design (Abaco lets them expire after 20 minutes).
    pub fn is_durable(&self) -> bool {
        !matches!(self, Queue::Results(..) | Queue::ClientReply(..))
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
    /// Pull the image again even when it is present (`force` on update).
    #[serde(default)]
    pub repull: bool,
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
    /// Raw bytes travel after the JSON header (see `MailboxMessage::encode`), not inside it.
    Binary(#[serde(skip)] Vec<u8>),
}

/// Why a mailbox payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("mailbox message is malformed: {0}")]
pub struct DecodeError(String);

impl MailboxMessage {
    /// Wire form: 4-byte big-endian header length, the JSON header, then the raw bytes of a
    /// binary message. Binary payloads (up to hundreds of MB) are never JSON-encoded.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).unwrap_or_default();
        let body: &[u8] = match &self.message {
            MessageBody::Binary(bytes) => bytes,
            _ => &[],
        };
        let mut out = Vec::with_capacity(4 + header.len() + body.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(body);
        out
    }

    /// The execution id of an encoded message that does not decode (its header is written with
    /// `execution_id` first), so that a worker can still close that execution with an error
    /// instead of leaving it waiting for ever.
    pub fn execution_id_of(bytes: &[u8]) -> Option<ExecutionId> {
        let rest = bytes.get(4..)?.strip_prefix(b"{\"execution_id\":\"")?;
        let end = rest.iter().position(|b| *b == b'"')?;
        let id = std::str::from_utf8(&rest[..end]).ok()?;
        (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| ExecutionId::from(id))
    }

    pub fn decode(bytes: &[u8]) -> Result<MailboxMessage, DecodeError> {
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| DecodeError("shorter than its header length".into()))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let header = bytes
            .get(4..4 + len)
            .ok_or_else(|| DecodeError("truncated header".into()))?;
        let mut message: MailboxMessage =
            serde_json::from_slice(header).map_err(|e| DecodeError(e.to_string()))?;
        if let MessageBody::Binary(body) = &mut message.message {
            *body = bytes[4 + len..].to_vec();
        }
        Ok(message)
    }
}

/// A request to clientg (spec §7.4), answered on `reply_to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Create an OAuth client for a worker of an actor whose `token` attribute is on.
    New {
        tenant: Tenant,
        actor_id: DbId,
        worker_id: WorkerId,
        reply_to: WorkerId,
    },
    /// A fresh access token for the client (before each execution).
    Token {
        client_id: String,
        client_secret: String,
        reply_to: WorkerId,
    },
    /// Delete the client (the worker is going away); no reply.
    Delete { client_id: String },
}

/// clientg's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientReply {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    #[serde(default)]
    pub access_token: String,
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
        assert_eq!(
            Queue::Command("default".into()).name(),
            "command_channel_default"
        );
        assert_eq!(
            Queue::WorkerControl(WorkerId::from("w1")).name(),
            "worker_w1"
        );
        assert_eq!(
            Queue::Results(db_id, ExecutionId::from("e1")).name(),
            "results_DEV_abc_e1"
        );
        assert_eq!(Queue::Events.name(), "events_channel_default");
    }

    #[test]
    fn mailbox_messages_round_trip_with_raw_binary() {
        for body in [
            MessageBody::Text("hello".into()),
            MessageBody::Json(serde_json::json!({"a": [1, 2]})),
            MessageBody::Binary(vec![0, 159, 146, 150, 255]),
        ] {
            let message = MailboxMessage {
                execution_id: ExecutionId::from("e1"),
                content_type: ContentType::Str,
                message: body,
                env: Map::new(),
            };
            assert_eq!(MailboxMessage::decode(&message.encode()).unwrap(), message);
        }
        assert!(MailboxMessage::decode(&[0, 0]).is_err());
        assert!(MailboxMessage::decode(&[0, 0, 0, 9, b'{']).is_err());
    }

    /// A message too deeply nested to decode still names its execution.
    #[test]
    fn an_undecodable_message_still_names_its_execution() {
        let mut deep = serde_json::json!("bottom");
        for _ in 0..200 {
            deep = serde_json::json!([deep]);
        }
        let message = MailboxMessage {
            execution_id: ExecutionId::from("E7xQ2"),
            content_type: ContentType::Json,
            message: MessageBody::Json(deep),
            env: Map::new(),
        };
        let bytes = message.encode();
        assert!(MailboxMessage::decode(&bytes).is_err());
        assert_eq!(
            MailboxMessage::execution_id_of(&bytes),
            Some(ExecutionId::from("E7xQ2"))
        );
        assert_eq!(MailboxMessage::execution_id_of(&[0, 0, 0, 9, b'{']), None);
    }

    #[test]
    fn worker_control_wire_strings() {
        assert_eq!(
            serde_json::to_string(&WorkerControl::StopNoDelete).unwrap(),
            "\"stop-no-delete\""
        );
    }
}

/// Event types (spec §7.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "ACTOR_READY")]
    ActorReady,
    #[serde(rename = "ACTOR_ERROR")]
    ActorError,
    #[serde(rename = "EXECUTION_COMPLETE")]
    ExecutionComplete,
}

/// An actor or execution event, as delivered to links and webhooks (spec §7.7). The payload is
/// a flat JSON object with Abaco's field names.
pub fn event_payload(
    event_type: EventType,
    actor: &crate::Actor,
    linked_db_id: &str,
    extra: Map<String, Value>,
) -> Value {
    let t = crate::time::display(Some(&crate::time::now()));
    let mut m = Map::new();
    m.insert("tenant_id".into(), Value::String(actor.tenant.0.clone()));
    m.insert(
        "event_type".into(),
        serde_json::to_value(event_type).unwrap_or(Value::Null),
    );
    m.insert("event_time_utc".into(), Value::String(t.clone()));
    m.insert("event_time_display".into(), Value::String(t));
    m.insert("actor_id".into(), Value::String(actor.id.0.clone()));
    m.insert("actor_dbid".into(), Value::String(actor.db_id().0));
    m.insert(
        "_abaco_link".into(),
        Value::String(linked_db_id.to_string()),
    );
    m.insert(
        "_abaco_webhook".into(),
        Value::String(actor.webhook.clone()),
    );
    m.extend(extra);
    Value::Object(m)
}
