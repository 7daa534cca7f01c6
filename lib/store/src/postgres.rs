//! The PostgreSQL half of the distributed backend: durable records (executions, logs,
//! permissions, configs, clients, meta). It knows nothing of the typed records and nothing of
//! Redis.
//!
//! One table `abaco_docs(kind, key, parent, seq BIGSERIAL, doc JSONB)`; `seq` is drawn on first
//! insert and kept on replace, so listings follow insertion order. `abaco_counts(kind, parent,
//! n)` holds how many documents each parent has, kept by statement-level triggers (rows locked in
//! `(kind, parent)` order, so concurrent batches cannot deadlock), so `count` reads one row. The
//! schema is created at connect under a transaction-scoped advisory lock, so several processes may
//! start at once.
//! The file is over 600 lines because the schema (with its triggers), the put batcher and the
//! ten primitives of `Backend` each need their SQL next to them; splitting them would separate a
//! primitive from the statement that makes it atomic.
//!
//! JSONB cannot hold the character U+0000: it is stored as U+FFFD (container logs may carry it).
//!
//! `put` is group-committed: concurrent puts wait in a queue and go to the server as one
//! multi-row `INSERT ... SELECT FROM UNNEST(...)` (up to `PUT_BATCH` rows, at most
//! `PUT_IN_FLIGHT` statements at once), so a burst of messages shares a few commits instead of
//! paying one WAL flush each. A caller is answered once its row committed.
//!
//! `update` locks the row (`SELECT ... FOR UPDATE`) for the read-modify-write; when the row is
//! absent it inserts with `ON CONFLICT DO NOTHING` and starts over if another writer got there
//! first. `insert_unless_sibling` serialises on a transaction-scoped advisory lock per
//! `(kind, parent)` around its check and insert.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::backend::{Backend, Kind, Merge, Page, Update, UpdateFn};
use crate::split::redact;
use crate::{Result, StoreError};

/// A pool of PostgreSQL connections.
pub(crate) struct Postgres {
    pool: Pool,
    shown_url: String,
    puts: mpsc::UnboundedSender<PutJob>,
}

/// Most rows one batched `put` statement carries.
const PUT_BATCH: usize = 500;

/// Batched `put` statements in flight at once; the next batch gathers while they run.
const PUT_IN_FLIGHT: usize = 4;

/// One caller's `put`, waiting for its batch.
struct PutJob {
    kind: Kind,
    key: String,
    parent: String,
    doc: Value,
    answer: oneshot::Sender<Result<()>>,
}

/// Key of the advisory lock serialising schema creation across processes ("abacodoc").
const SCHEMA_LOCK: i64 = 0x6162_6163_6f64_6f63;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS abaco_docs (
        kind   TEXT      NOT NULL,
        key    TEXT      NOT NULL,
        parent TEXT      NOT NULL,
        seq    BIGSERIAL NOT NULL,
        doc    JSONB     NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX IF NOT EXISTS abaco_docs_by_parent ON abaco_docs (kind, parent, seq);
    CREATE INDEX IF NOT EXISTS abaco_docs_by_seq ON abaco_docs (kind, seq);
    DO $$ BEGIN
        IF to_regclass('abaco_counts') IS NULL THEN
            CREATE TABLE abaco_counts (
                kind   TEXT   NOT NULL,
                parent TEXT   NOT NULL,
                n      BIGINT NOT NULL,
                PRIMARY KEY (kind, parent)
            );
            INSERT INTO abaco_counts (kind, parent, n)
                SELECT kind, parent, COUNT(*) FROM abaco_docs GROUP BY kind, parent;
        END IF;
    END $$;
    CREATE OR REPLACE FUNCTION abaco_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO abaco_counts (kind, parent, n)
                SELECT kind, parent, COUNT(*) FROM abaco_new GROUP BY kind, parent
                ORDER BY kind, parent
            ON CONFLICT (kind, parent) DO UPDATE SET n = abaco_counts.n + EXCLUDED.n;
        ELSE
            UPDATE abaco_counts c SET n = c.n - d.n
            FROM (SELECT kind, parent, COUNT(*) AS n FROM abaco_old GROUP BY kind, parent
                  ORDER BY kind, parent) d
            WHERE c.kind = d.kind AND c.parent = d.parent;
        END IF;
        RETURN NULL;
    END $$;
    CREATE OR REPLACE FUNCTION abaco_count_move() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE abaco_counts SET n = n - 1 WHERE kind = OLD.kind AND parent = OLD.parent;
        INSERT INTO abaco_counts (kind, parent, n) VALUES (NEW.kind, NEW.parent, 1)
        ON CONFLICT (kind, parent) DO UPDATE SET n = abaco_counts.n + 1;
        RETURN NULL;
    END $$;
    CREATE OR REPLACE TRIGGER abaco_docs_count_insert AFTER INSERT ON abaco_docs
        REFERENCING NEW TABLE AS abaco_new FOR EACH STATEMENT EXECUTE FUNCTION abaco_count_rows();
    CREATE OR REPLACE TRIGGER abaco_docs_count_delete AFTER DELETE ON abaco_docs
        REFERENCING OLD TABLE AS abaco_old FOR EACH STATEMENT EXECUTE FUNCTION abaco_count_rows();
    CREATE OR REPLACE TRIGGER abaco_docs_count_move AFTER UPDATE OF parent ON abaco_docs
        FOR EACH ROW WHEN (OLD.parent IS DISTINCT FROM NEW.parent)
        EXECUTE FUNCTION abaco_count_move();
";

impl Postgres {
    /// Builds a pool of up to `pool_size` connections to `url` and prepares the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Postgres> {
        let shown_url = redact(url);
        let mut pg_config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL {shown_url}: {e}")))?;
        pg_config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool for {shown_url}: {e}")))?;
        let (puts, queue) = mpsc::unbounded_channel();
        tokio::spawn(put_loop(pool.clone(), shown_url.clone(), queue));
        let postgres = Postgres {
            pool,
            shown_url,
            puts,
        };
        let client = postgres.client().await?;
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;");
        client
            .batch_execute(&lock)
            .await
            .map_err(|e| failure("schema creation", e))?;
        Ok(postgres)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot get a PostgreSQL connection to {}: {e}",
                self.shown_url
            ))
        })
    }
}

/// Gathers waiting puts into batches and writes each batch with one statement; ends when the
/// `Postgres` handle is gone.
async fn put_loop(pool: Pool, shown_url: String, mut queue: mpsc::UnboundedReceiver<PutJob>) {
    let in_flight = std::sync::Arc::new(Semaphore::new(PUT_IN_FLIGHT));
    loop {
        let Ok(permit) = std::sync::Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < PUT_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (pool, shown_url) = (pool.clone(), shown_url.clone());
        tokio::spawn(async move {
            write_puts(&pool, &shown_url, batch).await;
            drop(permit);
        });
    }
}

/// Writes a batch (split where a key repeats, since one statement may touch a row only once) and
/// answers every caller. A batch that fails for a reason other than the server being unreachable
/// is retried row by row, so one bad row fails alone.
async fn write_puts(pool: &Pool, shown_url: &str, batch: Vec<PutJob>) {
    let mut chunks: Vec<Vec<PutJob>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for job in batch {
        if !seen.insert((job.kind, job.key.clone())) || chunks.is_empty() {
            seen.clear();
            seen.insert((job.kind, job.key.clone()));
            chunks.push(Vec::new());
        }
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(job);
        }
    }
    for chunk in chunks {
        let outcome = put_rows(pool, shown_url, &chunk).await;
        match outcome {
            Err(StoreError::Backend(_)) if chunk.len() > 1 => {
                for job in chunk {
                    let single = put_rows(pool, shown_url, std::slice::from_ref(&job)).await;
                    let _ = job.answer.send(single);
                }
            }
            outcome => {
                for job in chunk {
                    let _ = job.answer.send(outcome.clone());
                }
            }
        }
    }
}

/// Inserts or replaces `rows` (distinct keys) with one statement.
async fn put_rows(pool: &Pool, shown_url: &str, rows: &[PutJob]) -> Result<()> {
    let client = pool.get().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot get a PostgreSQL connection to {shown_url}: {e}"
        ))
    })?;
    let statement = client
        .prepare_cached(
            "INSERT INTO abaco_docs (kind, key, parent, doc)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
             ON CONFLICT (kind, key) DO UPDATE SET parent = EXCLUDED.parent, doc = EXCLUDED.doc",
        )
        .await
        .map_err(|e| failure("put", e))?;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.name()).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let parents: Vec<&str> = rows.iter().map(|r| r.parent.as_str()).collect();
    let docs: Vec<&Value> = rows.iter().map(|r| &r.doc).collect();
    client
        .execute(&statement, &[&kinds, &keys, &parents, &docs])
        .await
        .map_err(|e| failure("put", e))?;
    Ok(())
}

/// Lost connections and server shutdowns are `Unavailable` (retryable); the rest `Backend`.
fn failure(what: &str, e: tokio_postgres::Error) -> StoreError {
    let message = format!("PostgreSQL {what}: {e}");
    let unavailable = match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        None => {
            e.is_closed()
                || std::error::Error::source(&e)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        }
    };
    if unavailable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

/// `doc` with every U+0000 (in strings and field names) replaced by U+FFFD, which JSONB accepts.
fn storable(doc: &Value) -> Cow<'_, Value> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn replace(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(s.replace('\0', "\u{FFFD}")),
            Value::Array(a) => Value::Array(a.iter().map(replace).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), replace(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(doc) {
        Cow::Owned(replace(doc))
    } else {
        Cow::Borrowed(doc)
    }
}

/// How often an update starts over after losing the race to insert an absent document. Each loss
/// means the document now exists, so the next attempt normally locks it.
const UPDATE_ATTEMPTS: usize = 100;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Backend for Postgres {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Value>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT doc FROM abaco_docs WHERE kind = $1 AND key = $2")
            .await
            .map_err(|e| failure("get", e))?;
        let row = client
            .query_opt(&statement, &[&kind.name(), &key])
            .await
            .map_err(|e| failure("get", e))?;
        row.map(|r| r.try_get::<_, Value>(0))
            .transpose()
            .map_err(|e| failure("get", e))
    }

    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        let job = PutJob {
            kind,
            key: key.to_string(),
            parent: parent.to_string(),
            doc: storable(doc).into_owned(),
            answer,
        };
        let stopped = || StoreError::Unavailable("PostgreSQL put: the batch writer stopped".into());
        self.puts.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO abaco_docs (kind, key, parent, doc) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, key) DO NOTHING",
            )
            .await
            .map_err(|e| failure("insert", e))?;
        let doc = storable(doc);
        let n = client
            .execute(&statement, &[&kind.name(), &key, &parent, doc.as_ref()])
            .await
            .map_err(|e| failure("insert", e))?;
        Ok(n == 1)
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM abaco_docs WHERE kind = $1 AND key = $2")
            .await
            .map_err(|e| failure("delete", e))?;
        let n = client
            .execute(&statement, &[&kind.name(), &key])
            .await
            .map_err(|e| failure("delete", e))?;
        Ok(n > 0)
    }

    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM abaco_docs WHERE kind = $1 AND parent = $2")
            .await
            .map_err(|e| failure("delete children", e))?;
        client
            .execute(&statement, &[&kind.name(), &parent])
            .await
            .map_err(|e| failure("delete children", e))
    }

    async fn list(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<(String, Value)>> {
        let client = self.client().await?;
        let offset = to_i64(page.offset);
        // The offset is found in the index alone (an index-only scan of `seq`), and only the rows
        // of the page are fetched: a deep page does not read every row before it.
        // `LIMIT NULL` is `LIMIT ALL`.
        let limit: Option<i64> = page.limit.map(to_i64);
        let rows = match parent {
            Some(parent) => {
                let statement = client
                    .prepare_cached(
                        "SELECT key, doc FROM abaco_docs WHERE kind = $1 AND parent = $2
                         AND seq >= (SELECT seq FROM abaco_docs WHERE kind = $1 AND parent = $2
                                     ORDER BY seq OFFSET $3 LIMIT 1)
                         ORDER BY seq LIMIT $4",
                    )
                    .await
                    .map_err(|e| failure("list", e))?;
                client
                    .query(&statement, &[&kind.name(), &parent, &offset, &limit])
                    .await
            }
            None => {
                let statement = client
                    .prepare_cached(
                        "SELECT key, doc FROM abaco_docs WHERE kind = $1
                         AND seq >= (SELECT seq FROM abaco_docs WHERE kind = $1
                                     ORDER BY seq OFFSET $2 LIMIT 1)
                         ORDER BY seq LIMIT $3",
                    )
                    .await
                    .map_err(|e| failure("list", e))?;
                client
                    .query(&statement, &[&kind.name(), &offset, &limit])
                    .await
            }
        }
        .map_err(|e| failure("list", e))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(|e| failure("list", e))
    }

    async fn count(&self, kind: Kind, parent: Option<&str>) -> Result<u64> {
        let client = self.client().await?;
        let row = match parent {
            Some(parent) => {
                let statement = client
                    .prepare_cached(
                        "SELECT COALESCE((SELECT n FROM abaco_counts WHERE kind = $1 AND parent = $2), 0)",
                    )
                    .await
                    .map_err(|e| failure("count", e))?;
                client.query_one(&statement, &[&kind.name(), &parent]).await
            }
            None => {
                let statement = client
                    .prepare_cached("SELECT COALESCE(SUM(n), 0)::BIGINT FROM abaco_counts WHERE kind = $1")
                    .await
                    .map_err(|e| failure("count", e))?;
                client.query_one(&statement, &[&kind.name()]).await
            }
        }
        .map_err(|e| failure("count", e))?;
        let n: i64 = row.try_get(0).map_err(|e| failure("count", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn merge(
        &self,
        kind: Kind,
        key: &str,
        guard: Option<(&str, &[&str])>,
        patch: &Map<String, Value>,
    ) -> Result<Merge> {
        let client = self.client().await?;
        let patch = Value::Object(patch.clone());
        let patch = storable(&patch);
        let updated = match guard {
            None => {
                let statement = client
                    .prepare_cached(
                        "UPDATE abaco_docs SET doc = doc || $3::jsonb
                         WHERE kind = $1 AND key = $2 RETURNING doc",
                    )
                    .await
                    .map_err(|e| failure("merge", e))?;
                client
                    .query_opt(&statement, &[&kind.name(), &key, patch.as_ref()])
                    .await
            }
            Some((field, allowed)) => {
                let statement = client
                    .prepare_cached(
                        "UPDATE abaco_docs SET doc = doc || $3::jsonb
                         WHERE kind = $1 AND key = $2
                           AND jsonb_typeof(doc -> ($4::text)) = 'string'
                           AND doc ->> ($4::text) = ANY ($5::text[])
                         RETURNING doc",
                    )
                    .await
                    .map_err(|e| failure("merge", e))?;
                client
                    .query_opt(
                        &statement,
                        &[&kind.name(), &key, patch.as_ref(), &field, &allowed],
                    )
                    .await
            }
        }
        .map_err(|e| failure("merge", e))?;
        if let Some(row) = updated {
            let doc: Value = row.try_get(0).map_err(|e| failure("merge", e))?;
            return Ok(Merge::Applied(doc));
        }
        // Nothing updated: either the document is absent or the guard did not hold.
        // The same connection is reused: a pool of one must not wait on itself.
        let statement = client
            .prepare_cached("SELECT doc FROM abaco_docs WHERE kind = $1 AND key = $2")
            .await
            .map_err(|e| failure("merge", e))?;
        let current = client
            .query_opt(&statement, &[&kind.name(), &key])
            .await
            .map_err(|e| failure("merge", e))?;
        match current {
            None => Ok(Merge::Missing),
            Some(row) => Ok(Merge::Refused(
                row.try_get(0).map_err(|e| failure("merge", e))?,
            )),
        }
    }

    async fn update(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        f: &UpdateFn<'_>,
    ) -> Result<Update> {
        let fail = |e| failure("update", e);
        let mut client = self.client().await?;
        for _ in 0..UPDATE_ATTEMPTS {
            let tx = client.transaction().await.map_err(fail)?;
            let select = tx
                .prepare_cached(
                    "SELECT doc FROM abaco_docs WHERE kind = $1 AND key = $2 FOR UPDATE",
                )
                .await
                .map_err(fail)?;
            let current: Option<Value> = tx
                .query_opt(&select, &[&kind.name(), &key])
                .await
                .map_err(fail)?
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(fail)?;
            let Some(next) = f(current.as_ref()) else {
                tx.rollback().await.map_err(fail)?;
                return Ok(Update::Unchanged(current));
            };
            let next = storable(&next);
            let written = if current.is_some() {
                let statement = tx
                    .prepare_cached(
                        "UPDATE abaco_docs SET doc = $3 WHERE kind = $1 AND key = $2 RETURNING doc",
                    )
                    .await
                    .map_err(fail)?;
                tx.query_opt(&statement, &[&kind.name(), &key, next.as_ref()])
                    .await
            } else {
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO abaco_docs (kind, key, parent, doc) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (kind, key) DO NOTHING RETURNING doc",
                    )
                    .await
                    .map_err(fail)?;
                tx.query_opt(&statement, &[&kind.name(), &key, &parent, next.as_ref()])
                    .await
            }
            .map_err(fail)?;
            match written {
                Some(row) => {
                    let doc: Value = row.try_get(0).map_err(fail)?;
                    tx.commit().await.map_err(fail)?;
                    return Ok(Update::Written(doc));
                }
                // Inserted concurrently (the locked row cannot vanish): start over.
                None => tx.rollback().await.map_err(fail)?,
            }
        }
        Err(StoreError::Backend(format!(
            "PostgreSQL update on {} {key}: gave up after {UPDATE_ATTEMPTS} concurrent inserts",
            kind.name()
        )))
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
        let fail = |e| failure("insert unless sibling", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(hashtext($1::text || $2::text))")
            .await
            .map_err(fail)?;
        tx.execute(&lock, &[&kind.name(), &parent])
            .await
            .map_err(fail)?;
        let check = tx
            .prepare_cached(
                "SELECT 1 FROM abaco_docs
                 WHERE kind = $1 AND parent = $2
                   AND jsonb_typeof(doc -> ($3::text)) = 'string'
                   AND doc ->> ($3::text) = ANY ($4::text[])
                 LIMIT 1",
            )
            .await
            .map_err(fail)?;
        let blocked = tx
            .query_opt(&check, &[&kind.name(), &parent, &field, &blocking])
            .await
            .map_err(fail)?;
        if blocked.is_some() {
            tx.rollback().await.map_err(fail)?;
            return Ok(false);
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO abaco_docs (kind, key, parent, doc) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, key) DO NOTHING",
            )
            .await
            .map_err(fail)?;
        let doc = storable(doc);
        let n = tx
            .execute(&insert, &[&kind.name(), &key, &parent, doc.as_ref()])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(n == 1)
    }

    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool> {
        let (field, allowed) = guard;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM abaco_docs
                 WHERE kind = $1 AND key = $2
                   AND jsonb_typeof(doc -> ($3::text)) = 'string'
                   AND doc ->> ($3::text) = ANY ($4::text[])",
            )
            .await
            .map_err(|e| failure("guarded delete", e))?;
        let n = client
            .execute(&statement, &[&kind.name(), &key, &field, &allowed])
            .await
            .map_err(|e| failure("guarded delete", e))?;
        Ok(n > 0)
    }
}
