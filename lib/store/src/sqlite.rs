//! The embedded backend: every kind in one SQLite file (`{dir}/store.sqlite3`), WAL mode with
//! `synchronous = NORMAL` — a committed write survives a crash of the process, while a power loss
//! may drop the last few commits (never corrupting the file). It knows nothing of the typed
//! records; it stores JSON documents under `(kind, key)`.
//!
//! Writes are group-committed: one writer thread owns the write connection and runs every job
//! that is waiting when it wakes inside one transaction, each job in its own savepoint (a failing
//! job rolls back alone), then commits once and answers every caller. Under load, many requests
//! share one commit instead of paying one each. Reads use a pool of read-only connections: a point
//! read runs on the caller's thread (microseconds, no hand-off), listings and counts on the
//! blocking pool. A caller is answered only after its commit, so it reads its own writes.
//! Actors, permission maps and aliases (read by every request) are also kept in memory: coherent
//! because this process makes every write to the file, and the writer forgets what a transaction
//! touched before it answers (`sqlite/cache.rs`).
//!
//! The file is over 600 lines because the schema (with its count triggers), the writer thread,
//! the read pool and the ten primitives of `Backend` belong together: each primitive's SQL sits
//! next to the transaction rules it relies on. The cache lives in `sqlite/cache.rs`.
//!
//! `seq` orders listings: it comes from a counter (loaded from `MAX(seq)` at open) on first insert
//! and is kept on replace. `update` runs its function on the caller's task (it borrows, so it
//! cannot move to the writer): the writer sends the current document over a channel and waits for
//! the answer, so the read, the function and the write share one transaction.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};

mod cache;

use cache::{Cache, Touch};

use crate::backend::{apply_patch, guard_holds, Backend, Kind, Merge, Page, Update, UpdateFn};
use crate::{Result, StoreError};

/// Most jobs one transaction takes; the rest wait for the next commit.
const MAX_BATCH: usize = 512;

/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The embedded SQLite backend. Cheap to share: all state sits behind `Arc`s.
pub(crate) struct Sqlite {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    cache: Arc<Cache>,
}

/// How long `open` waits for another holder of the directory's lock to let go (a store of this
/// process being dropped) before it reports the directory as in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the exclusive lock on `{dir}/store.lock`: one process owns an embedded data directory,
/// because the cache and the mailboxes rely on this process making every write.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("store.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(StoreError::Unavailable(format!(
                    "the data directory {} is in use by {holder} (an embedded store belongs to one \
                     `abaco serve`); stop it, or give this one another --data-dir",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
    }
    // The holder's pid, for the message above; the lock itself is what counts.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// The answer of a job once its transaction committed (or failed to).
type Finish = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A write's work: runs inside the writer's transaction with the `seq` counter (or, given `None`,
/// answers that no transaction could begin); says whether it succeeded, so a failure rolls back
/// alone.
type Work = Box<dyn FnOnce(Option<(&Connection, &mut i64)>) -> (bool, Finish) + Send>;

/// A write and what it may change, so the cache forgets it before the caller is answered.
struct Job {
    work: Work,
    touches: Touch,
}

/// Read-only connections to the store file, opened on demand and reused.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
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

/// How many documents each `(kind, parent)` holds, kept by triggers in the writing transaction,
/// so `count` reads one row instead of walking an index (an actor's executions: up to millions).
/// A store made before this table existed gets it filled once, at open.
const COUNTS: &str = "
    CREATE TABLE counts (
        kind   TEXT    NOT NULL,
        parent TEXT    NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (kind, parent)
    ) WITHOUT ROWID;
    INSERT INTO counts (kind, parent, n) SELECT kind, parent, COUNT(*) FROM docs GROUP BY kind, parent;
    CREATE TRIGGER docs_count_insert AFTER INSERT ON docs BEGIN
        INSERT INTO counts (kind, parent, n) VALUES (new.kind, new.parent, 1)
        ON CONFLICT (kind, parent) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER docs_count_delete AFTER DELETE ON docs BEGIN
        UPDATE counts SET n = n - 1 WHERE kind = old.kind AND parent = old.parent;
    END;
    CREATE TRIGGER docs_count_move AFTER UPDATE OF parent ON docs
    WHEN old.parent IS NOT new.parent BEGIN
        UPDATE counts SET n = n - 1 WHERE kind = old.kind AND parent = old.parent;
        INSERT INTO counts (kind, parent, n) VALUES (new.kind, new.parent, 1)
        ON CONFLICT (kind, parent) DO UPDATE SET n = n + 1;
    END;
";

impl Sqlite {
    /// Opens (creating when needed) `{dir}/store.sqlite3` and its schema, and starts the writer.
    /// Fails when another process has the directory open (`{dir}/store.lock`).
    pub fn open(dir: &Path) -> Result<Sqlite> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = lock_dir(dir)?;
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
        // Room for every statement the writer runs (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        let has_counts: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'counts')",
                [],
                |row| row.get(0),
            )
            .map_err(unavailable)?;
        if !has_counts {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {COUNTS} COMMIT;"))
                .map_err(unavailable)?;
        }
        let seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM docs", [], |row| {
                row.get(0)
            })
            .map_err(unavailable)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let cache = Arc::new(Cache::new());
        let writer_cache = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("abaco-store-writer".into())
            .spawn(move || {
                write_loop(conn, seq, queue, &writer_cache);
                // `{dir}/store.lock` is let go only once the last write is done and the write
                // connection closed (or by the kernel when the process dies).
                drop(lock);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        let readers = Arc::new(Readers {
            path: path.clone(),
            idle: Mutex::new(Vec::new()),
        });
        // Fail now, not on the first read, when the file cannot be read.
        let first = readers.take().map_err(|e| match e {
            Failure::Sql(e) => unavailable(e),
            _ => StoreError::Unavailable(format!("SQLite {}", path.display())),
        })?;
        readers.give_back(first);
        Ok(Sqlite {
            jobs,
            readers,
            cache,
        })
    }

    /// Runs the write `f` in the writer's next transaction; answers once that committed.
    /// `touches` names what it may change.
    async fn write<T, F>(&self, what: &'static str, touches: Touch, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut i64) -> std::result::Result<T, Failure> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move |ctx| {
            let outcome = match ctx {
                Some((conn, seq)) => f(conn, seq),
                None => Err(Failure::Other("no transaction could begin".into())),
            };
            let succeeded = outcome.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => outcome,
                    Err(e) => Err(Failure::Other(format!("commit: {e}"))),
                };
                let _ = answer.send(outcome);
            });
            (succeeded, finish)
        });
        self.jobs
            .send(Job { work, touches })
            .map_err(|_| StoreError::Unavailable(format!("SQLite {what}: the writer stopped")))?;
        let outcome = answered
            .await
            .map_err(|_| StoreError::Unavailable(format!("SQLite {what}: the writer stopped")))?;
        outcome.map_err(|f| f.into_error(what))
    }

    /// Runs the read `f` on the blocking pool with a read connection.
    async fn read<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> std::result::Result<T, Failure> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Backend(format!("SQLite {what}: task failed: {e}")))?
            .map_err(|f| f.into_error(what))
    }
}

impl Readers {
    fn take(&self) -> std::result::Result<Connection, Failure> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, Failure> {
        let conn = self.take()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }
}

/// The writer thread: takes every waiting job (up to `MAX_BATCH`), runs them in one transaction,
/// each in a savepoint, commits, answers. Ends when every `Sqlite` handle is gone.
fn write_loop(conn: Connection, mut seq: i64, queue: mpsc::Receiver<Job>, cache: &Cache) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            let cause = format!("begin: {e}");
            for job in batch {
                let (_, finish) = (job.work)(None);
                finish(Err(cause.clone()));
            }
            continue;
        }
        let mut finishes = Vec::with_capacity(batch.len());
        let mut touched = Vec::with_capacity(batch.len());
        for job in batch {
            touched.push(job.touches);
            let (succeeded, finish) = match run_cached(&conn, "SAVEPOINT job") {
                Ok(()) => (job.work)(Some((&conn, &mut seq))),
                Err(e) => {
                    let (_, finish) = (job.work)(None);
                    finishes.push(finish);
                    tracing::warn!(cause = %e, "SQLite store: savepoint failed");
                    continue;
                }
            };
            // A job that failed part-way rolls back alone; its answer carries its error.
            if !succeeded || run_cached(&conn, "RELEASE job").is_err() {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
            finishes.push(finish);
        }
        let commit = run_cached(&conn, "COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        // Before anyone is answered: a caller's next read must not find what it replaced.
        for touch in &touched {
            cache.forget(touch);
        }
        for finish in finishes {
            finish(commit.clone());
        }
    }
}

/// Runs one statement through the connection's statement cache: the writer runs its transaction
/// statements for every job, and cached they are parsed once.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The current document of a key, read inside a transaction.
fn read_doc(tx: &Connection, kind: Kind, key: &str) -> std::result::Result<Option<Value>, Failure> {
    let text: Option<String> = tx
        .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind.name(), key], |row| row.get(0))
        .optional()?;
    text.map(|t| parse(kind, key, &t)).transpose()
}

/// Inserts a new document inside a transaction under `seq`.
fn insert_doc(
    tx: &Connection,
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

impl Failure {
    fn into_error(self, what: &str) -> StoreError {
        match self {
            Failure::Sql(e) => StoreError::Backend(format!("SQLite {what}: {e}")),
            Failure::Other(e) => StoreError::Backend(format!("SQLite {what}: {e}")),
            Failure::Corrupt(kind, key, cause) => StoreError::Corrupt { kind, key, cause },
        }
    }
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
        let generation = if Cache::cached(kind) {
            match self.cache.get(kind, key) {
                Ok(doc) => return Ok(doc),
                Err(generation) => Some(generation),
            }
        } else {
            None
        };
        // A point read takes microseconds: it runs here, without a hand-off to another thread.
        let doc = self
            .readers
            .with(|conn| {
                let text: Option<String> = conn
                    .prepare_cached("SELECT doc FROM docs WHERE kind = ?1 AND key = ?2")?
                    .query_row(params![kind.name(), key], |row| row.get(0))
                    .optional()?;
                text.map(|t| parse(kind, key, &t)).transpose()
            })
            .map_err(|f| f.into_error("get"))?;
        if let Some(generation) = generation {
            self.cache.store(kind, key, &doc, generation);
        }
        Ok(doc)
    }

    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()> {
        let (key, parent, text) = (key.to_string(), parent.to_string(), encode(doc)?);
        self.write("put", Touch::Key(kind, key.clone()), move |conn, seq| {
            *seq += 1;
            conn.prepare_cached(
                "INSERT INTO docs (kind, key, parent, seq, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, key) DO UPDATE SET parent = excluded.parent,
                                                         doc = excluded.doc",
            )?
            .execute(params![kind.name(), key, parent, *seq, text])?;
            Ok(())
        })
        .await
    }

    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool> {
        let (key, parent, text) = (key.to_string(), parent.to_string(), encode(doc)?);
        self.write("insert", Touch::Key(kind, key.clone()), move |conn, seq| {
            *seq += 1;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO docs (kind, key, parent, seq, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, key) DO NOTHING",
                )?
                .execute(params![kind.name(), key, parent, *seq, text])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool> {
        let key = key.to_string();
        self.write("delete", Touch::Key(kind, key.clone()), move |conn, _| {
            let n = conn
                .prepare_cached("DELETE FROM docs WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind.name(), key])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64> {
        let parent = parent.to_string();
        self.write("delete children", Touch::Kind(kind), move |conn, _| {
            let n = conn
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
        // The offset is found in the covering index `(kind, parent|seq)` alone, then only the
        // rows of the page are read: a deep page does not decode every row before it.
        self.read("list", move |conn| {
            let rows: Vec<(String, String)> = match &parent {
                Some(parent) => conn
                    .prepare_cached(
                        "SELECT key, doc FROM docs WHERE kind = ?1 AND parent = ?2
                         AND seq >= (SELECT seq FROM docs WHERE kind = ?1 AND parent = ?2
                                     ORDER BY seq LIMIT 1 OFFSET ?4)
                         ORDER BY seq LIMIT ?3",
                    )?
                    .query_map(params![kind.name(), parent, limit, offset], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
                None => conn
                    .prepare_cached(
                        "SELECT key, doc FROM docs WHERE kind = ?1
                         AND seq >= (SELECT seq FROM docs WHERE kind = ?1
                                     ORDER BY seq LIMIT 1 OFFSET ?3)
                         ORDER BY seq LIMIT ?2",
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
        self.read("count", move |conn| {
            let n: i64 = match &parent {
                Some(parent) => conn
                    .prepare_cached("SELECT n FROM counts WHERE kind = ?1 AND parent = ?2")?
                    .query_row(params![kind.name(), parent], |row| row.get(0))
                    .optional()?
                    .unwrap_or(0),
                None => conn
                    .prepare_cached("SELECT COALESCE(SUM(n), 0) FROM counts WHERE kind = ?1")?
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
        self.write("merge", Touch::Key(kind, key.clone()), move |tx, _| {
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
        let transaction = self.write("update", Touch::Key(kind, key.clone()), move |tx, seq| {
            let current = read_doc(tx, kind, &key)?;
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
            if current.is_none() {
                *seq += 1;
                if !insert_doc(tx, *seq, kind, &key, &parent, &text)? {
                    return Err(Failure::Other(
                        "the row appeared inside the transaction".into(),
                    ));
                }
            } else {
                tx.prepare_cached("UPDATE docs SET doc = ?3 WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind.name(), key, text])?;
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
        self.write(
            "insert unless sibling",
            Touch::Key(kind, key.clone()),
            move |tx, seq| {
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
                *seq += 1;
                insert_doc(tx, *seq, kind, &key, &parent, &text)
            },
        )
        .await
    }

    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool> {
        let key = key.to_string();
        let (field, allowed) = (guard.0.to_string(), owned_values(guard.1));
        self.write(
            "guarded delete",
            Touch::Key(kind, key.clone()),
            move |tx, _| {
                let Some(doc) = read_doc(tx, kind, &key)? else {
                    return Ok(false);
                };
                if !guard_holds(&doc, Some((&field, &borrowed(&allowed)))) {
                    return Ok(false);
                }
                tx.prepare_cached("DELETE FROM docs WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind.name(), key])?;
                Ok(true)
            },
        )
        .await
    }
}
