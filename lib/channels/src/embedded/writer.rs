//! The SQLite side of the embedded channels backend: opening and loading
//! `channels.sqlite3`, and the writer thread that group-commits inserts, deletes and delivery
//! marks, then makes committed messages ready and answers their waiters. Only this file
//! writes SQL.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::{Message, State};
use crate::{ChannelError, Result};

/// Most write operations committed in one transaction.
const BATCH_MAX: usize = 4096;

pub(super) enum WriteOp {
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

/// Prepares the database and rebuilds the queues from it: every row is ready again.
pub(super) fn load(connection: &Connection) -> rusqlite::Result<State> {
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
    let mut state = State::new();
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
pub(super) fn run_writer(
    mut connection: Connection,
    ops: mpsc::Receiver<WriteOp>,
    state: Arc<Mutex<State>>,
) {
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
