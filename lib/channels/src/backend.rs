//! The primitives each channels backend implements, and the delivery type they hand out.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

#[async_trait]
pub trait Backend: Send + Sync {
    async fn publish(&self, queue: &str, durable: bool, payload: Vec<u8>) -> Result<()>;
    async fn consume(&self, queue: &str, durable: bool) -> Result<Box<dyn ConsumerBackend>>;
    async fn get(&self, queue: &str, durable: bool, wait: Duration) -> Result<Option<Delivery>>;
    async fn len(&self, queue: &str) -> Result<u64>;
    async fn purge(&self, queue: &str) -> Result<u64>;
    async fn delete(&self, queue: &str) -> Result<()>;
    /// The largest payload the backend accepts, when it has a limit.
    fn max_payload(&self) -> Option<usize> {
        None
    }
}

#[async_trait]
pub trait ConsumerBackend: Send {
    async fn next(&mut self) -> Result<Option<Delivery>>;
}

/// What settles a delivery; each backend provides one.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<()>;
    async fn nack(&self, requeue: bool) -> Result<()>;
    /// Called when the delivery is dropped unsettled: must requeue without blocking.
    fn requeue_on_drop(&self);
}

/// One message handed to a consumer. Dropping it unsettled requeues it.
pub struct Delivery {
    queue: String,
    payload: Vec<u8>,
    redelivered: bool,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    pub fn new(queue: String, payload: Vec<u8>, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Delivery {
            queue,
            payload,
            redelivered,
            acker: Some(acker),
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub fn into_payload(mut self) -> (Vec<u8>, Delivery) {
        let payload = std::mem::take(&mut self.payload);
        (payload, self)
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether this message was delivered before and not acked.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    pub async fn ack(mut self) -> Result<()> {
        match self.acker.take() {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    pub async fn nack(mut self, requeue: bool) -> Result<()> {
        match self.acker.take() {
            Some(a) => a.nack(requeue).await,
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(a) = self.acker.take() {
            a.requeue_on_drop();
        }
    }
}
