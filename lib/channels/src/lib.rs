//! Queues between components, behind one `Channels` handle. Queue names come from
//! `abaco_core::Queue` only. Only this crate knows AMQP.
//!
//! Semantics on every backend: a `publish` that returned `Ok` is durable (for durable queues);
//! a delivery is handed to one consumer at a time and stays owned until `ack`; a delivery that is
//! nacked, or whose consumer goes away before acking, is redelivered; order is kept per queue.

mod amqp;
mod backend;
mod embedded;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use abaco_core::config::{Backend as BackendKind, Config};
use abaco_core::Queue;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use backend::{Backend, ConsumerBackend, Delivery};

/// Errors of the channels. `Unavailable` means the broker could not be reached: callers may retry.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel broker unavailable: {0}")]
    Unavailable(String),
    #[error("channel operation on {queue} failed: {cause}")]
    Failed { queue: String, cause: String },
    #[error("message on {queue} is not valid: {cause}")]
    Decode { queue: String, cause: String },
}

pub type Result<T> = std::result::Result<T, ChannelError>;

/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Channels(Arc<dyn Backend>);

impl Channels {
    pub async fn connect(config: &Config) -> Result<Channels> {
        match config.store.backend {
            BackendKind::Embedded => Channels::open_embedded(&config.store.data_dir),
            BackendKind::Distributed => {
                Channels::connect_amqp(&config.rabbit.uri, config.rabbit.prefetch).await
            }
        }
    }

    /// The embedded backend: queues persisted in `{dir}/channels.sqlite3`.
    pub fn open_embedded(dir: &std::path::Path) -> Result<Channels> {
        Ok(Channels(Arc::new(embedded::Embedded::open(dir)?)))
    }

    pub async fn connect_amqp(uri: &str, prefetch: u16) -> Result<Channels> {
        Ok(Channels(Arc::new(
            amqp::Amqp::connect(uri, prefetch).await?,
        )))
    }

    /// Publishes raw bytes; returns once the message is durable (confirmed / committed).
    pub async fn publish_bytes(&self, queue: &Queue, payload: Vec<u8>) -> Result<()> {
        self.0
            .publish(&queue.name(), queue.is_durable(), payload)
            .await
    }

    /// Publishes a JSON-encoded value.
    pub async fn publish<T: Serialize>(&self, queue: &Queue, value: &T) -> Result<()> {
        let payload = serde_json::to_vec(value).map_err(|e| ChannelError::Failed {
            queue: queue.name(),
            cause: format!("encode: {e}"),
        })?;
        self.publish_bytes(queue, payload).await
    }

    /// A consumer of `queue`. Deliveries must be acked; dropping one unacked requeues it.
    pub async fn consume(&self, queue: &Queue) -> Result<Consumer> {
        let inner = self.0.consume(&queue.name(), queue.is_durable()).await?;
        Ok(Consumer {
            queue: queue.name(),
            inner,
        })
    }

    /// Takes one message if one arrives within `wait`.
    pub async fn get(&self, queue: &Queue, wait: Duration) -> Result<Option<Delivery>> {
        self.0.get(&queue.name(), queue.is_durable(), wait).await
    }

    /// The largest payload a message may have on this backend, when it has a limit.
    pub fn max_payload(&self) -> Option<usize> {
        self.0.max_payload()
    }

    /// Ready (not in-flight) messages in `queue`.
    pub async fn len(&self, queue: &Queue) -> Result<u64> {
        self.0.len(&queue.name()).await
    }

    /// Drops every ready message of `queue`; returns how many.
    pub async fn purge(&self, queue: &Queue) -> Result<u64> {
        self.0.purge(&queue.name()).await
    }

    /// Deletes the queue and its messages.
    pub async fn delete(&self, queue: &Queue) -> Result<()> {
        self.0.delete(&queue.name()).await
    }
}

/// A stream of deliveries from one queue.
pub struct Consumer {
    queue: String,
    inner: Box<dyn ConsumerBackend>,
}

impl Consumer {
    /// The next delivery; `None` when the channel closed.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        self.inner.next().await
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl Delivery {
    /// Decodes the JSON payload.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.payload()).map_err(|e| ChannelError::Decode {
            queue: self.queue().to_string(),
            cause: e.to_string(),
        })
    }
}
