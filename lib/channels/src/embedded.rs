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
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use tokio::sync::{oneshot, Notify};

use crate::backend::{Acker, Backend, ConsumerBackend, Delivery};
use crate::{ChannelError, Result};

/// Most write operations committed in one transaction.
const BATCH_MAX: usize = 4096;

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

enum WriteOp {
    Insert {
        id: i64,
        queue: String,
        generation: u64,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Delete {
        ids: Vec<i64>,
        done: oneshot::Sender<Result<()>>,
    },
    DeleteQueue {
        queue: String,
        done: oneshot::Sender<Result<()>>,
    },
    /// Fire and forget: only feeds the `redelivered` flag after a restart.
    MarkDelivered { id: i64 },
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
    fn queue(&mut self, name: &str, durable: bool) -> &mut QueueState {
        let next_generation = &mut self.next_generation;
        self.queues.entry(name.to_string()).or_insert_with(|| {
            *next_generation += 1;
            QueueState::new(durable, *next_generation)
        })
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

/// Prepares the database and rebuilds the queues from it: every row is ready again.
fn load(connection: &Connection) -> rusqlite::Result<State> {
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    tracing::debug!(journal_mode = %mode, "channels database opened");
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY,
             queue TEXT NOT NULL,
             payload BLOB NOT NULL,
             delivered INTEGER NOT NULL DEFAULT 0
         );
         CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue);",
    )?;
    let mut state = State {
        queues: HashMap::new(),
        next_id: 1,
        next_generation: 0,
    };
    let mut select =
        connection.prepare("SELECT id, queue, payload, delivered FROM messages ORDER BY id")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let queue: String = row.get(1)?;
        let delivered: bool = row.get(3)?;
        state.next_id = state.next_id.max(id + 1);
        state.queue(&queue, true).ready.push_back(Message {
            id,
            payload: row.get(2)?,
            redelivered: delivered,
            marked: delivered,
        });
    }
    Ok(state)
}

/// The writer thread: drains pending operations, commits them together, then publishes the
/// inserted messages and answers every waiter. Ends when the backend is dropped.
fn run_writer(mut connection: Connection, ops: mpsc::Receiver<WriteOp>, state: Arc<Mutex<State>>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&mut connection, &batch).map_err(|e| e.to_string());
        if let Err(cause) = &outcome {
            tracing::error!(cause = %cause, ops = batch.len(), "channels commit failed");
        }
        settle_batch(batch, outcome, &state);
    }
}

fn write_batch(connection: &mut Connection, batch: &[WriteOp]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO messages (id, queue, payload) VALUES (?1, ?2, ?3)")?;
        let mut delete = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
        let mut delete_queue = tx.prepare_cached("DELETE FROM messages WHERE queue = ?1")?;
        let mut mark = tx.prepare_cached("UPDATE messages SET delivered = 1 WHERE id = ?1")?;
        for op in batch {
            match op {
                WriteOp::Insert {
                    id, queue, payload, ..
                } => {
                    insert.execute(params![id, queue, payload])?;
                }
                WriteOp::Delete { ids, .. } => {
                    for id in ids {
                        delete.execute(params![id])?;
                    }
                }
                WriteOp::DeleteQueue { queue, .. } => {
                    delete_queue.execute(params![queue])?;
                }
                WriteOp::MarkDelivered { id } => {
                    mark.execute(params![id])?;
                }
            }
        }
    }
    tx.commit()
}

fn settle_batch(
    batch: Vec<WriteOp>,
    outcome: std::result::Result<(), String>,
    state: &Mutex<State>,
) {
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for op in batch {
            match op {
                WriteOp::Insert {
                    id,
                    queue,
                    generation,
                    payload,
                    done,
                } => {
                    if outcome.is_ok() {
                        // A queue deleted meanwhile took the message with it.
                        if let Some(q) = state.queues.get_mut(&queue) {
                            if q.generation == generation {
                                q.push(Message {
                                    id,
                                    payload,
                                    redelivered: false,
                                    marked: false,
                                });
                            }
                        }
                    }
                    answers.push((done, queue));
                }
                WriteOp::Delete { done, .. } => answers.push((done, String::new())),
                WriteOp::DeleteQueue { queue, done } => answers.push((done, queue)),
                WriteOp::MarkDelivered { .. } => {}
            }
        }
    }
    for (done, queue) in answers {
        let answer = match &outcome {
            Ok(()) => Ok(()),
            Err(cause) => Err(ChannelError::Failed {
                queue,
                cause: format!("commit: {cause}"),
            }),
        };
        // The waiter may have given up (cancelled); the outcome stands either way.
        let _ = done.send(answer);
    }
}
