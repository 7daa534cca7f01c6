//! The RabbitMQ channels backend over lapin (tokio): the only code that knows AMQP.
//!
//! One connection, opened lazily again on the next operation after it dropped (operations in
//! between fail with `Unavailable`). Publishing goes through one channel in confirm mode and
//! returns once the broker confirmed; messages are persistent, queues of durable names are
//! durable, results queues are transient and expire after 20 minutes unused. Every consumer
//! has its own channel with `basic_qos(prefetch)` and manual acks, closed when the consumer is
//! dropped, which makes the broker requeue what it had not acked. Queues are declared before
//! first use (names cached); an unroutable publish (the queue was deleted meanwhile) declares
//! the queue again and retries once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::backend::{Acker, Backend, ConsumerBackend, Delivery};
use crate::{ChannelError, Result};

/// How long unused results queues live (Abaco's 20 minutes).
const RESULTS_EXPIRE_MS: i32 = 1_200_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two `basic_get` polls.
const GET_POLL_MAX: Duration = Duration::from_millis(100);

pub(crate) struct Amqp {
    uri: String,
    prefetch: u16,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    next_tag: AtomicU64,
}

/// One live connection and the long-lived channels on it.
struct Link {
    connection: Connection,
    /// Confirm mode; shared by all publishers, whose confirms are then pipelined.
    publisher: Slot,
    /// Declares queues and serves `get`: the deliveries of `get` belong to this channel.
    general: Slot,
    declared: Mutex<HashSet<String>>,
}

/// A channel re-opened when the broker closed it (a channel error closes only the channel).
struct Slot {
    confirm: bool,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl Amqp {
    pub async fn connect(uri: &str, prefetch: u16) -> Result<Amqp> {
        let amqp = Amqp {
            uri: uri.to_string(),
            prefetch,
            link: tokio::sync::Mutex::new(None),
            next_tag: AtomicU64::new(1),
        };
        amqp.link().await?;
        Ok(amqp)
    }

    /// Closes the current connection as a broker crash would, to exercise reconnection.
    #[cfg(test)]
    pub(crate) async fn close_connection_for_test(&self) {
        if let Some(link) = self.link.lock().await.as_ref() {
            let _ = link.connection.close(320, "test".into()).await;
        }
    }

    /// The live connection, opening a new one if the last one dropped.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref() {
            if link.connection.status().connected() {
                return Ok(link.clone());
            }
            tracing::warn!("AMQP connection lost; reconnecting");
        }
        let connect = Connection::connect(
            &self.uri,
            ConnectionProperties::default().with_connection_name("abaco".into()),
        );
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => return Err(ChannelError::Unavailable(format!("connect: {err}"))),
            Err(_elapsed) => {
                return Err(ChannelError::Unavailable(format!(
                    "connect: no answer within {CONNECT_TIMEOUT:?}"
                )))
            }
        };
        let link = Arc::new(Link {
            connection,
            publisher: Slot::new(true),
            general: Slot::new(false),
            declared: Mutex::new(HashSet::new()),
        });
        *current = Some(link.clone());
        Ok(link)
    }
}

#[async_trait]
impl Backend for Amqp {
    /// RabbitMQ's default `max_message_size` (128 MiB), less room for headers.
    fn max_payload(&self) -> Option<usize> {
        Some(134_217_728 - 64 * 1024)
    }

    async fn publish(&self, queue: &str, durable: bool, payload: Vec<u8>) -> Result<()> {
        let link = self.link().await?;
        let properties = BasicProperties::default().with_delivery_mode(if durable { 2 } else { 1 });
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        for _attempt in 0..2 {
            link.declare(queue, durable).await?;
            let channel = link.publisher.get(&link, queue).await?;
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    options,
                    &payload,
                    properties.clone(),
                )
                .await
                .map_err(|e| link.error(queue, e))?
                .await
                .map_err(|e| link.error(queue, e))?;
            match confirm {
                Confirmation::Ack(None) => return Ok(()),
                // Returned unroutable: the queue is gone although we declared it once.
                Confirmation::Ack(Some(_)) => link.forget(queue),
                Confirmation::Nack(_) => {
                    return Err(failed(queue, "the broker refused the message"))
                }
                Confirmation::NotRequested => {
                    return Err(failed(queue, "publisher confirms are not enabled"))
                }
            }
        }
        Err(failed(
            queue,
            "unroutable even after declaring the queue again",
        ))
    }

    async fn consume(&self, queue: &str, durable: bool) -> Result<Box<dyn ConsumerBackend>> {
        let link = self.link().await?;
        link.declare(queue, durable).await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| link.error(queue, e))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| link.error(queue, e))?;
        let tag = format!(
            "abaco-{}-{}",
            std::process::id(),
            self.next_tag.fetch_add(1, Ordering::Relaxed)
        );
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| link.error(queue, e))?;
        Ok(Box::new(AmqpConsumer {
            queue: queue.to_string(),
            link,
            channel,
            consumer,
        }))
    }

    async fn get(&self, queue: &str, durable: bool, wait: Duration) -> Result<Option<Delivery>> {
        let deadline = Instant::now() + wait;
        let link = self.link().await?;
        link.declare(queue, durable).await?;
        let mut pause = Duration::from_millis(5);
        loop {
            let channel = link.general.get(&link, queue).await?;
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| link.error(queue, e))?;
            if let Some(message) = got {
                return Ok(Some(delivery(queue, message.delivery)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(GET_POLL_MAX);
        }
    }

    async fn len(&self, queue: &str) -> Result<u64> {
        let link = self.link().await?;
        // A passive declare of a missing queue closes its channel: use a throwaway one. A fresh
        // channel can still report the close of an earlier throwaway channel (a NOT_FOUND about
        // another queue): try once more on another channel before giving up.
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut attempt = 0;
        loop {
            let channel = link.scratch(queue).await?;
            match channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
            {
                Ok(declared) => return Ok(u64::from(declared.message_count())),
                Err(err) if not_found(&err) && err.to_string().contains(queue) => return Ok(0),
                Err(err) if attempt == 0 && stale_close(&err.to_string(), queue) => attempt += 1,
                Err(err) if not_found(&err) => return Ok(0),
                Err(err) => return Err(link.error(queue, err)),
            }
        }
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let link = self.link().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let channel = match link.scratch(queue).await {
                Ok(c) => c,
                Err(e) if attempt == 1 && stale_close(&e.to_string(), queue) => continue,
                Err(e) => return Err(e),
            };
            match channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await
            {
                Ok(count) => return Ok(u64::from(count)),
                Err(err) if not_found(&err) && err.to_string().contains(queue) => return Ok(0),
                Err(err) if attempt == 1 && stale_close(&err.to_string(), queue) => continue,
                Err(err) if not_found(&err) => return Ok(0),
                Err(err) => return Err(link.error(queue, err)),
            }
        }
    }

    async fn delete(&self, queue: &str) -> Result<()> {
        let link = self.link().await?;
        link.forget(queue);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let channel = match link.scratch(queue).await {
                Ok(c) => c,
                Err(e) if attempt == 1 && stale_close(&e.to_string(), queue) => continue,
                Err(e) => return Err(e),
            };
            match channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) if attempt == 1 && stale_close(&err.to_string(), queue) => continue,
                Err(err) if not_found(&err) => return Ok(()),
                Err(err) => return Err(link.error(queue, err)),
            }
        }
    }
}

impl Link {
    /// Declares `queue` unless this connection already did.
    async fn declare(&self, queue: &str, durable: bool) -> Result<()> {
        if self.is_declared(queue) {
            return Ok(());
        }
        let mut arguments = FieldTable::default();
        if !durable {
            arguments.insert("x-expires".into(), AMQPValue::LongInt(RESULTS_EXPIRE_MS));
        }
        let options = QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        };
        let channel = self.general.get(self, queue).await?;
        channel
            .queue_declare(queue.into(), options, arguments)
            .await
            .map_err(|e| self.error(queue, e))?;
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(queue.to_string());
        Ok(())
    }

    fn is_declared(&self, queue: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(queue)
    }

    fn forget(&self, queue: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(queue);
    }

    /// A fresh channel for one operation that may close it; closed when dropped.
    async fn scratch(&self, queue: &str) -> Result<Channel> {
        self.connection
            .create_channel()
            .await
            .map_err(|e| self.error(queue, e))
    }

    /// `Unavailable` when the connection is gone (the next operation reconnects), else `Failed`.
    fn error(&self, queue: &str, err: lapin::Error) -> ChannelError {
        if !self.connection.status().connected() || is_connection_error(&err) {
            ChannelError::Unavailable(format!("{queue}: {err}"))
        } else {
            failed(queue, &err.to_string())
        }
    }
}

impl Slot {
    fn new(confirm: bool) -> Slot {
        Slot {
            confirm,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self, link: &Link, queue: &str) -> Result<Channel> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| link.error(queue, e))?;
        if self.confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| link.error(queue, e))?;
        }
        *slot = Some(channel.clone());
        Ok(channel)
    }
}

struct AmqpConsumer {
    queue: String,
    link: Arc<Link>,
    /// Kept so the channel lives exactly as long as the consumer.
    channel: Channel,
    consumer: lapin::Consumer,
}

#[async_trait]
impl ConsumerBackend for AmqpConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        match self.consumer.next().await {
            Some(Ok(received)) => Ok(Some(delivery(&self.queue, received))),
            Some(Err(err)) => Err(self.link.error(&self.queue, err)),
            None => Ok(None),
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Closing the channel makes the broker requeue every unacked delivery of this consumer,
        // including prefetched ones nobody saw.
        if let Ok(handle) = Handle::try_current() {
            let channel = self.channel.clone();
            handle.spawn(async move {
                if channel.status().connected() {
                    let _ = channel.close(200, "consumer closed".into()).await;
                }
            });
        }
    }
}

/// Settles one AMQP delivery on the channel it came from.
struct AmqpAcker {
    queue: String,
    acker: lapin::Acker,
    handle: Option<Handle>,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        match self.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed(
                &self.queue,
                "delivery no longer owned: its channel closed, so the broker requeued it",
            )),
            Err(err) => Err(settle_error(&self.queue, err)),
        }
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let options = BasicNackOptions {
            multiple: false,
            requeue,
        };
        match self.acker.nack(options).await {
            Ok(true) => Ok(()),
            // The channel closed: the broker requeues the message, which is what was asked.
            Ok(false) if requeue => Ok(()),
            Ok(false) => Err(failed(
                &self.queue,
                "delivery no longer owned: its channel closed, so the broker requeued it",
            )),
            Err(err) => Err(settle_error(&self.queue, err)),
        }
    }

    fn requeue_on_drop(&self) {
        // Without a runtime the nack cannot be sent; the broker still requeues the message when
        // the channel closes.
        if let Some(handle) = &self.handle {
            let acker = self.acker.clone();
            handle.spawn(async move {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(err) = acker.nack(options).await {
                    tracing::debug!(cause = %err, "requeue of a dropped delivery failed");
                }
            });
        }
    }
}

fn delivery(queue: &str, received: AmqpDelivery) -> Delivery {
    let AmqpDelivery {
        data,
        redelivered,
        acker,
        ..
    } = received;
    let acker = AmqpAcker {
        queue: queue.to_string(),
        acker,
        handle: Handle::try_current().ok(),
    };
    Delivery::new(queue.to_string(), data, redelivered, Box::new(acker))
}

fn failed(queue: &str, cause: &str) -> ChannelError {
    ChannelError::Failed {
        queue: queue.to_string(),
        cause: cause.to_string(),
    }
}

fn settle_error(queue: &str, err: lapin::Error) -> ChannelError {
    if is_connection_error(&err) {
        ChannelError::Unavailable(format!("{queue}: {err}"))
    } else {
        failed(queue, &err.to_string())
    }
}

fn is_connection_error(err: &lapin::Error) -> bool {
    err.is_io_error()
        || err.is_amqp_hard_error()
        || matches!(
            err.kind(),
            ErrorKind::InvalidConnectionState(_) | ErrorKind::MissingHeartbeatError
        )
}

/// A fresh throwaway channel can report the server's close of an earlier one: a NOT_FOUND
/// about another queue. Such an error says nothing about `queue`; the operation is retried.
fn stale_close(message: &str, queue: &str) -> bool {
    message.contains("NOT_FOUND") && !message.contains(&format!("'{queue}'"))
}

fn not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
