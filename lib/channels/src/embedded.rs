//! The embedded channels backend: in-process queues made durable by one SQLite file
//! (`{dir}/channels.sqlite3`, WAL). It owns the in-memory queue state and the single writer
//! thread; it knows nothing of AMQP and serves one process only (it is not shared between
//! processes through the file).
//!
//! Every message lives in memory (ready FIFO or in-flight map, per queue). Messages of durable
//! queues also have a row, inserted by the writer thread, which group-commits whatever is
//! pending in one transaction and only then makes the messages ready and answers their
//! publishers: a `publish` that returned `Ok` is on disk, and no consumer sees a message that is
//! not. `ack` (and `nack(false)`) delete the row; a requeue puts the message back in id order,
//! so it goes to the front. On `open`, every row is ready again; rows that had been delivered
//! are flagged `redelivered` (the flag is written lazily, like RabbitMQ's, so it is best-effort).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};

use crate::backend::{Acker, Backend, ConsumerBackend, Delivery};
use crate::{ChannelError, Result};

mod writer;

use writer::{load, run_writer, WriteOp};

/// How long an unused transient (results) queue lives, like Abaco's `x-expires`.
const TRANSIENT_EXPIRY: Duration = Duration::from_secs(20 * 60);
/// How often expired transient queues are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Embedded {
    shared: Arc<Shared>,
}

/// What the backend, its consumers and its ackers share.
struct Shared {
    state: Arc<Mutex<State>>,
    writer: mpsc::Sender<WriteOp>,
    /// Source of consumer owners and delivery tokens.
    next_token: AtomicU64,
}

struct State {
    queues: HashMap<String, QueueState>,
    next_id: i64,
    next_generation: u64,
    last_sweep: Instant,
}

struct QueueState {
    durable: bool,
    /// Changes when the queue is deleted and created again, so that late writes and late
    /// settlements of the old queue do not touch the new one.
    generation: u64,
    /// Sorted by id: publish order, with requeued messages back in their place.
    ready: VecDeque<Message>,
    in_flight: HashMap<i64, InFlight>,
    notify: Arc<Notify>,
    /// Last publish or take attempt: transient queues expire after `TRANSIENT_EXPIRY` unused.
    last_used: Instant,
}

struct Message {
    id: i64,
    payload: Vec<u8>,
    redelivered: bool,
    /// Whether the row already says it was delivered.
    marked: bool,
}

struct InFlight {
    message: Message,
    /// The consumer (or `get` call) holding it: its messages are requeued when it goes away.
    owner: u64,
    /// The one delivery allowed to settle it.
    token: u64,
}

enum Take {
    Taken(Delivery),
    Empty(Arc<Notify>),
}

impl Embedded {
    pub fn open(dir: &Path) -> Result<Embedded> {
        let path = dir.join("channels.sqlite3");
        let failed = |cause: String| ChannelError::Failed {
            queue: path.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
        let connection = Connection::open(&path).map_err(|e| failed(format!("open: {e}")))?;
        let state = load(&connection).map_err(|e| failed(format!("load: {e}")))?;
        let state = Arc::new(Mutex::new(state));
        let (writer, ops) = mpsc::channel();
        let writer_state = state.clone();
        std::thread::Builder::new()
            .name("channels-sqlite".to_string())
            .spawn(move || run_writer(connection, ops, writer_state))
            .map_err(|e| failed(format!("start writer thread: {e}")))?;
        Ok(Embedded {
            shared: Arc::new(Shared {
                state,
                writer,
                next_token: AtomicU64::new(1),
            }),
        })
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn publish(&self, queue: &str, durable: bool, payload: Vec<u8>) -> Result<()> {
        let done = {
            let mut state = self.shared.lock();
            let id = state.next_id;
            state.next_id += 1;
            let queue_state = state.queue(queue, durable);
            if !queue_state.durable {
                queue_state.push(Message {
                    id,
                    payload,
                    redelivered: false,
                    marked: false,
                });
                return Ok(());
            }
            let generation = queue_state.generation;
            let (done, answer) = oneshot::channel();
            // Sent under the lock so that the writer sees inserts in id order.
            self.shared.send(WriteOp::Insert {
                id,
                queue: queue.to_string(),
                generation,
                payload,
                done,
            })?;
            answer
        };
        done.await.map_err(|_| writer_gone())?
    }

    async fn consume(&self, queue: &str, durable: bool) -> Result<Box<dyn ConsumerBackend>> {
        Ok(Box::new(EmbeddedConsumer {
            shared: self.shared.clone(),
            queue: queue.to_string(),
            durable,
            owner: self.shared.token(),
        }))
    }

    async fn get(&self, queue: &str, durable: bool, wait: Duration) -> Result<Option<Delivery>> {
        let owner = self.shared.token();
        match tokio::time::timeout(wait, self.shared.take_wait(queue, durable, owner)).await {
            Ok(delivery) => delivery.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }

    async fn len(&self, queue: &str) -> Result<u64> {
        let state = self.shared.lock();
        Ok(state.queues.get(queue).map_or(0, |q| q.ready.len() as u64))
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let (count, done) = {
            let mut state = self.shared.lock();
            let Some(queue_state) = state.queues.get_mut(queue) else {
                return Ok(0);
            };
            let purged: Vec<i64> = queue_state.ready.drain(..).map(|m| m.id).collect();
            let count = purged.len() as u64;
            if !queue_state.durable || purged.is_empty() {
                return Ok(count);
            }
            let (done, answer) = oneshot::channel();
            self.shared.send(WriteOp::Delete { ids: purged, done })?;
            (count, answer)
        };
        done.await.map_err(|_| writer_gone())??;
        Ok(count)
    }

    async fn delete(&self, queue: &str) -> Result<()> {
        let done = {
            let mut state = self.shared.lock();
            let Some(queue_state) = state.queues.remove(queue) else {
                return Ok(());
            };
            // Waiting consumers look the queue up again and wait on its successor.
            queue_state.notify.notify_waiters();
            if !queue_state.durable {
                return Ok(());
            }
            let (done, answer) = oneshot::channel();
            self.shared.send(WriteOp::DeleteQueue {
                queue: queue.to_string(),
                done,
            })?;
            answer
        };
        done.await.map_err(|_| writer_gone())?
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants span
        // a panic point), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).map_err(|_| writer_gone())
    }

    /// Waits until a message is ready in `queue` and hands it to `owner`. Cancel-safe.
    async fn take_wait(
        self: &Arc<Self>,
        queue: &str,
        durable: bool,
        owner: u64,
    ) -> Result<Delivery> {
        loop {
            let notify = match self.try_take(queue, durable, owner) {
                Take::Taken(delivery) => return Ok(delivery),
                Take::Empty(notify) => notify,
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the second look, so no publish or delete can slip between.
            notified.as_mut().enable();
            match self.try_take(queue, durable, owner) {
                Take::Taken(delivery) => return Ok(delivery),
                Take::Empty(current) if Arc::ptr_eq(&current, &notify) => notified.await,
                // The queue was deleted and created again meanwhile: wait on the new one.
                Take::Empty(_) => continue,
            }
        }
    }

    fn try_take(self: &Arc<Self>, queue: &str, durable: bool, owner: u64) -> Take {
        let token = self.token();
        let mut state = self.lock();
        let queue_state = state.queue(queue, durable);
        let Some(mut message) = queue_state.ready.pop_front() else {
            return Take::Empty(queue_state.notify.clone());
        };
        if queue_state.durable && !message.marked {
            message.marked = true;
            // Losing this only loses the `redelivered` hint after a crash.
            let _ = self.writer.send(WriteOp::MarkDelivered { id: message.id });
        }
        let id = message.id;
        let payload = message.payload.clone();
        let redelivered = message.redelivered;
        let acker = EmbeddedAcker {
            shared: self.clone(),
            queue: queue.to_string(),
            generation: queue_state.generation,
            id,
            token,
        };
        queue_state.in_flight.insert(
            id,
            InFlight {
                message,
                owner,
                token,
            },
        );
        Take::Taken(Delivery::new(
            queue.to_string(),
            payload,
            redelivered,
            Box::new(acker),
        ))
    }

    /// Requeues every message `owner` still holds in `queue`.
    fn requeue_owner(&self, queue: &str, owner: u64) {
        let mut state = self.lock();
        let Some(queue_state) = state.queues.get_mut(queue) else {
            return;
        };
        let held: Vec<i64> = queue_state
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            if let Some(in_flight) = queue_state.in_flight.remove(&id) {
                queue_state.requeue(in_flight.message);
            }
        }
    }
}

impl State {
    fn new() -> State {
        State {
            queues: HashMap::new(),
            next_id: 1,
            next_generation: 0,
            last_sweep: Instant::now(),
        }
    }

    /// The queue named `name`, created if missing; marks it used.
    fn queue(&mut self, name: &str, durable: bool) -> &mut QueueState {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
        let next_generation = &mut self.next_generation;
        let queue = self.queues.entry(name.to_string()).or_insert_with(|| {
            *next_generation += 1;
            QueueState::new(durable, *next_generation)
        });
        queue.last_used = now;
        queue
    }

    /// Drops transient queues unused for `TRANSIENT_EXPIRY` with nothing in flight, as RabbitMQ
    /// does with `x-expires`, so results queues nobody deleted do not pile up.
    fn sweep(&mut self, now: Instant) {
        self.queues.retain(|_, q| {
            let keep = q.durable
                || !q.in_flight.is_empty()
                || now.duration_since(q.last_used) < TRANSIENT_EXPIRY;
            if !keep {
                // A consumer still waiting looks the queue up again (and recreates it).
                q.notify.notify_waiters();
            }
            keep
        });
    }
}

impl QueueState {
    fn new(durable: bool, generation: u64) -> QueueState {
        QueueState {
            durable,
            generation,
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            notify: Arc::new(Notify::new()),
            last_used: Instant::now(),
        }
    }

    /// Inserts in id order (almost always at the back) and wakes one waiting consumer.
    fn push(&mut self, message: Message) {
        let at = self.ready.partition_point(|m| m.id < message.id);
        self.ready.insert(at, message);
        self.notify.notify_one();
    }

    fn requeue(&mut self, mut message: Message) {
        message.redelivered = true;
        self.push(message);
    }
}

/// Settles one delivery of the embedded backend.
struct EmbeddedAcker {
    shared: Arc<Shared>,
    queue: String,
    generation: u64,
    id: i64,
    token: u64,
}

enum Settled {
    /// The queue is gone (deleted): nothing left to settle.
    Gone,
    /// Its consumer closed first, which requeued the message; it may be with someone else now.
    NotOwned,
    Taken {
        message: Message,
        durable: bool,
    },
}

impl EmbeddedAcker {
    fn take(&self, state: &mut State) -> Settled {
        let queue_state = match state.queues.get_mut(&self.queue) {
            Some(q) if q.generation == self.generation => q,
            _ => return Settled::Gone,
        };
        match queue_state.in_flight.get(&self.id) {
            Some(f) if f.token == self.token => {}
            _ => return Settled::NotOwned,
        }
        match queue_state.in_flight.remove(&self.id) {
            Some(f) => Settled::Taken {
                message: f.message,
                durable: queue_state.durable,
            },
            None => Settled::Gone,
        }
    }

    async fn remove(&self) -> Result<()> {
        let done = {
            let mut state = self.shared.lock();
            match self.take(&mut state) {
                Settled::Gone | Settled::Taken { durable: false, .. } => return Ok(()),
                Settled::NotOwned => {
                    return Err(ChannelError::Failed {
                        queue: self.queue.clone(),
                        cause: "delivery no longer owned: its consumer closed, so it was requeued"
                            .to_string(),
                    })
                }
                Settled::Taken { message, .. } => {
                    let (done, answer) = oneshot::channel();
                    self.shared.send(WriteOp::Delete {
                        ids: vec![message.id],
                        done,
                    })?;
                    answer
                }
            }
        };
        done.await.map_err(|_| writer_gone())?
    }

    /// Requeues the message; a message already requeued or deleted needs nothing.
    fn requeue(&self) {
        let mut state = self.shared.lock();
        if let Settled::Taken { message, .. } = self.take(&mut state) {
            if let Some(queue_state) = state.queues.get_mut(&self.queue) {
                queue_state.requeue(message);
            }
        }
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<()> {
        self.remove().await
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        if requeue {
            self.requeue();
            Ok(())
        } else {
            self.remove().await
        }
    }

    fn requeue_on_drop(&self) {
        self.requeue();
    }
}

struct EmbeddedConsumer {
    shared: Arc<Shared>,
    queue: String,
    durable: bool,
    owner: u64,
}

#[async_trait]
impl ConsumerBackend for EmbeddedConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        self.shared
            .take_wait(&self.queue, self.durable, self.owner)
            .await
            .map(Some)
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.shared.requeue_owner(&self.queue, self.owner);
    }
}

fn writer_gone() -> ChannelError {
    ChannelError::Unavailable("the embedded channels writer thread stopped".to_string())
}

#[cfg(test)]
mod expiry {
    use super::*;

    #[test]
    fn unused_transient_queues_expire() {
        let mut state = State::new();
        state.queue("results", false);
        state.queue("mailbox", true);
        state.queue("busy", false).in_flight.insert(
            1,
            InFlight {
                message: Message {
                    id: 1,
                    payload: Vec::new(),
                    redelivered: false,
                    marked: false,
                },
                owner: 1,
                token: 1,
            },
        );
        state.sweep(Instant::now() + TRANSIENT_EXPIRY + Duration::from_secs(1));
        assert!(!state.queues.contains_key("results"));
        assert!(state.queues.contains_key("mailbox"));
        assert!(state.queues.contains_key("busy"));
    }
}
