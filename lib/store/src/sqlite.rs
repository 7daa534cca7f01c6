//! The embedded backend: every kind in one SQLite file (`{dir}/store.sqlite3`), WAL mode with
//! `synchronous = NORMAL` — a committed write survives a crash of the process, while a power loss
//! may drop the last few commits (never corrupting the file). It knows nothing of the typed
//! records; it stores JSON documents under `(kind, key)`.
//!
//! One connection behind a mutex; every call runs on tokio's blocking pool. `seq` orders listings:
//! it comes from a counter (loaded from `MAX(seq)` at open) on first insert and is kept on replace.
//! `update` runs its function on the caller's task (it borrows, so it cannot move to the blocking
//! pool): the blocking side opens the transaction, sends the current document over a channel and
//! waits for the answer, so the read, the function and the write share one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};

use crate::backend::{apply_patch, guard_holds, Backend, Kind, Merge, Page, Update, UpdateFn};
use crate::{Result, StoreError};

/// The embedded SQLite backend. Cheap to share: all state sits behind one `Arc`.
pub(crate) struct Sqlite {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    conn: Connection,
    /// The last `seq` handed out.
    seq: i64,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS docs (
        kind   TEXT    NOT NULL,
        key    TEXT    NOT NULL,
        parent TEXT    NOT NULL,
        seq    INTEGER NOT NULL,
        doc    TEXT    NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX IF NOT EXISTS docs_by_parent ON docs (kind, parent, seq);
    CREATE INDEX IF NOT EXISTS docs_by_seq ON docs (kind, seq);
";

impl Sqlite {
    /// Opens (creating when needed) `{dir}/store.sqlite3` and its schema.
    pub fn open(dir: &Path) -> Result<Sqlite> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("store.sqlite3");
        let unavailable =
            |e: rusqlite::Error| StoreError::Unavailable(format!("SQLite {}: {e}", path.display()));
        let conn = Connection::open(&path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(unavailable)?;
        // `journal_mode` answers with a row, so it is queried rather than executed.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(unavailable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "SQLite {} refused WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM docs", [], |row| {
                row.get(0)
            })
            .map_err(unavailable)?;
        Ok(Sqlite {
            inner: Arc::new(Mutex::new(Inner { conn, seq })),
        })
    }

    /// Runs `f` with the connection on the blocking pool; `what` names the operation in errors.
    async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> std::result::Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = inner
                .lock()
                .map_err(|_| Failure::Other("the SQLite connection lock is poisoned".into()))?;
            f(&mut guard)
        })
        .await;
        match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Sql(e))) => Err(StoreError::Backend(format!("SQLite {what}: {e}"))),
            Ok(Err(Failure::Other(e))) => Err(StoreError::Backend(format!("SQLite {what}: {e}"))),
            Ok(Err(Failure::Corrupt(kind, key, cause))) => {
                Err(StoreError::Corrupt { kind, key, cause })
            }
            Err(e) => Err(StoreError::Backend(format!(
                "SQLite {what}: task failed: {e}"
            ))),
        }
    }
}

/// The current document of a key, read inside a transaction.
fn read_doc(
    tx: &rusqlite::Transaction<'_>,
    kind: Kind,
    key: &str,
) -> std::result::Result<Option<Value>, Failure> {
    let text: Option<String> = tx
        .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind.name(), key], |row| row.get(0))
        .optional()?;
    text.map(|t| parse(kind, key, &t)).transpose()
}

/// Inserts a new document inside a transaction, drawing the next `seq` (committed by the caller
/// into `Inner::seq` only once the transaction commits).
fn insert_doc(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    kind: Kind,
    key: &str,
    parent: &str,
    text: &str,
) -> std::result::Result<bool, Failure> {
    let n = tx
        .prepare_cached(
            "INSERT INTO docs (kind, key, parent, seq, doc) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, key) DO NOTHING",
        )?
        .execute(params![kind.name(), key, parent, seq, text])?;
    Ok(n == 1)
}

fn to_text(doc: &Value) -> std::result::Result<String, Failure> {
    serde_json::to_string(doc).map_err(|e| Failure::Other(format!("serialize: {e}")))
}

fn owned_values(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

fn borrowed(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

/// What can go wrong inside a blocking call.
enum Failure {
    Sql(rusqlite::Error),
    Corrupt(&'static str, String, String),
    Other(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

fn parse(kind: Kind, key: &str, text: &str) -> std::result::Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::Corrupt(kind.name(), key.to_string(), e.to_string()))
}

fn encode(doc: &Value) -> Result<String> {
    serde_json::to_string(doc).map_err(|e| StoreError::Backend(format!("serialize: {e}")))
}

fn sql_limit(page: Page) -> (i64, i64) {
    let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    // SQLite reads a negative LIMIT as "no limit".
    let limit = page
        .limit
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
        .unwrap_or(-1);
    (limit, offset)
}

#[async_trait]
impl Backend for Sqlite {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Value>> {
        let key = key.to_string();
        self.run("get", move |inner| {
            let text: Option<String> = inner
                .conn
                .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 AND key = ?2")?
                .query_row(params![kind.name(), key], |row| row.get(0))
                .optional()?;
            text.map(|t| parse(kind, &key, &t)).transpose()
        })
        .await
    }

    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()> {
        let (key, parent, text) = (key.to_string(), parent.to_string(), encode(doc)?);
        self.run("put", move |inner| {
            let seq = inner.seq + 1;
            inner
                .conn
                .prepare_cached(
                    "INSERT INTO docs (kind, key, parent, seq, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, key) DO UPDATE SET parent = excluded.parent,
                                                         doc = excluded.doc",
                )?
                .execute(params![kind.name(), key, parent, seq, text])?;
            inner.seq = seq;
            Ok(())
        })
        .await
    }

    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool> {
        let (key, parent, text) = (key.to_string(), parent.to_string(), encode(doc)?);
        self.run("insert", move |inner| {
            let seq = inner.seq + 1;
            let inserted = inner
                .conn
                .prepare_cached(
                    "INSERT INTO docs (kind, key, parent, seq, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, key) DO NOTHING",
                )?
                .execute(params![kind.name(), key, parent, seq, text])?;
            if inserted == 1 {
                inner.seq = seq;
            }
            Ok(inserted == 1)
        })
        .await
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool> {
        let key = key.to_string();
        self.run("delete", move |inner| {
            let n = inner
                .conn
                .prepare_cached("DELETE FROM docs WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind.name(), key])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64> {
        let parent = parent.to_string();
        self.run("delete children", move |inner| {
            let n = inner
                .conn
                .prepare_cached("DELETE FROM docs WHERE kind = ?1 AND parent = ?2")?
                .execute(params![kind.name(), parent])?;
            Ok(n as u64)
        })
        .await
    }

    async fn list(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<(String, Value)>> {
        let parent = parent.map(str::to_string);
        let (limit, offset) = sql_limit(page);
        self.run("list", move |inner| {
            let rows: Vec<(String, String)> = match &parent {
                Some(parent) => inner
                    .conn
                    .prepare_cached(
                        "SELECT key, doc FROM docs WHERE kind = ?1 AND parent = ?2
                         ORDER BY seq LIMIT ?3 OFFSET ?4",
                    )?
                    .query_map(params![kind.name(), parent, limit, offset], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
                None => inner
                    .conn
                    .prepare_cached(
                        "SELECT key, doc FROM docs WHERE kind = ?1
                         ORDER BY seq LIMIT ?2 OFFSET ?3",
                    )?
                    .query_map(params![kind.name(), limit, offset], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
            };
            rows.into_iter()
                .map(|(key, text)| {
                    let doc = parse(kind, &key, &text)?;
                    Ok((key, doc))
                })
                .collect()
        })
        .await
    }

    async fn count(&self, kind: Kind, parent: Option<&str>) -> Result<u64> {
        let parent = parent.map(str::to_string);
        self.run("count", move |inner| {
            let n: i64 = match &parent {
                Some(parent) => inner
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM docs WHERE kind = ?1 AND parent = ?2")?
                    .query_row(params![kind.name(), parent], |row| row.get(0))?,
                None => inner
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM docs WHERE kind = ?1")?
                    .query_row(params![kind.name()], |row| row.get(0))?,
            };
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn merge(
        &self,
        kind: Kind,
        key: &str,
        guard: Option<(&str, &[&str])>,
        patch: &Map<String, Value>,
    ) -> Result<Merge> {
        let key = key.to_string();
        let guard: Option<(String, Vec<String>)> = guard.map(|(field, allowed)| {
            (
                field.to_string(),
                allowed.iter().map(|s| s.to_string()).collect(),
            )
        });
        let patch = patch.clone();
        self.run("merge", move |inner| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let text: Option<String> = tx
                .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 AND key = ?2")?
                .query_row(params![kind.name(), key], |row| row.get(0))
                .optional()?;
            let Some(text) = text else {
                return Ok(Merge::Missing);
            };
            let mut doc = parse(kind, &key, &text)?;
            let allowed: Vec<&str> = guard
                .as_ref()
                .map(|(_, a)| a.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let guard_ref = guard
                .as_ref()
                .map(|(f, _)| (f.as_str(), allowed.as_slice()));
            if !guard_holds(&doc, guard_ref) {
                return Ok(Merge::Refused(doc));
            }
            apply_patch(&mut doc, &patch);
            let new_text =
                serde_json::to_string(&doc).map_err(|e| Failure::Other(e.to_string()))?;
            tx.prepare_cached("UPDATE docs SET doc = ?3 WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind.name(), key, new_text])?;
            tx.commit()?;
            Ok(Merge::Applied(doc))
        })
        .await
    }

    async fn update(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        f: &UpdateFn<'_>,
    ) -> Result<Update> {
        let (key, parent) = (key.to_string(), parent.to_string());
        let (current_tx, current_rx) = tokio::sync::oneshot::channel::<Option<Value>>();
        let (next_tx, next_rx) = tokio::sync::oneshot::channel::<Option<Value>>();
        let transaction = self.run("update", move |inner| {
            let seq = inner.seq + 1;
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read_doc(&tx, kind, &key)?;
            current_tx
                .send(current.clone())
                .map_err(|_| Failure::Other("the caller went away".into()))?;
            // Dropping the transaction on any early return rolls it back.
            let next = next_rx
                .blocking_recv()
                .map_err(|_| Failure::Other("the caller went away".into()))?;
            let Some(next) = next else {
                return Ok(Update::Unchanged(current));
            };
            let text = to_text(&next)?;
            let inserted = current.is_none();
            if inserted {
                if !insert_doc(&tx, seq, kind, &key, &parent, &text)? {
                    return Err(Failure::Other(
                        "the row appeared inside the transaction".into(),
                    ));
                }
            } else {
                tx.prepare_cached("UPDATE docs SET doc = ?3 WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind.name(), key, text])?;
            }
            tx.commit()?;
            if inserted {
                inner.seq = seq;
            }
            Ok(Update::Written(next))
        });
        let apply = async move {
            // An error before the read drops the sender; `run` then reports it.
            if let Ok(current) = current_rx.await {
                let _ = next_tx.send(f(current.as_ref()));
            }
        };
        let (outcome, ()) = tokio::join!(transaction, apply);
        outcome
    }

    async fn insert_unless_sibling(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        doc: &Value,
        field: &str,
        blocking: &[&str],
    ) -> Result<bool> {
        let (key, parent, text) = (key.to_string(), parent.to_string(), encode(doc)?);
        let (field, blocking) = (field.to_string(), owned_values(blocking));
        self.run("insert unless sibling", move |inner| {
            let seq = inner.seq + 1;
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let siblings: Vec<(String, String)> = tx
                .prepare_cached("SELECT key, doc FROM docs WHERE kind = ?1 AND parent = ?2")?
                .query_map(params![kind.name(), parent], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let blocking = borrowed(&blocking);
            for (sibling, sibling_text) in &siblings {
                let sibling_doc = parse(kind, sibling, sibling_text)?;
                if guard_holds(&sibling_doc, Some((&field, &blocking))) {
                    return Ok(false);
                }
            }
            if !insert_doc(&tx, seq, kind, &key, &parent, &text)? {
                return Ok(false);
            }
            tx.commit()?;
            inner.seq = seq;
            Ok(true)
        })
        .await
    }

    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool> {
        let key = key.to_string();
        let (field, allowed) = (guard.0.to_string(), owned_values(guard.1));
        self.run("guarded delete", move |inner| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(doc) = read_doc(&tx, kind, &key)? else {
                return Ok(false);
            };
            if !guard_holds(&doc, Some((&field, &borrowed(&allowed)))) {
                return Ok(false);
            }
            tx.prepare_cached("DELETE FROM docs WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind.name(), key])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
