//! Domain core: ids, the actor/execution/worker records, status enums with their wire strings,
//! channel message shapes, queue names and configuration. It does no IO and knows no transport;
//! every other crate speaks in these types.

pub mod config;
pub mod cron;
pub mod ids;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod pyrepr;
pub mod status;
pub mod time;

pub use config::{Config, ConfigError};
pub use ids::{ActorId, DbId, ExecutionId, Tenant, WorkerId};
pub use messages::{MailboxMessage, Queue, SpawnerCommand, WorkerControl};
pub use model::{Actor, Execution, Worker};
pub use status::{ActorStatus, ExecutionStatus, PermissionLevel, WorkerStatus};
