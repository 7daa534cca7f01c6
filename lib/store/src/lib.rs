//! Persistence of actors, workers, executions, logs, permissions and the rest, behind one `Store`
//! handle. Backends implement a handful of document primitives (`backend::Backend`); the typed
//! methods are written once here. Only this crate knows SQLite, Redis and PostgreSQL.
//!
//! Backends: `sqlite` (embedded, one WAL file) and `split` (Redis for live state: actors, workers,
//! nonces, aliases; PostgreSQL for records: executions, logs, permissions, configs).
//! Counters and named locks (`coordination`) live on `Kind::Meta`.

mod backend;
mod coordination;
mod postgres;
mod redis_backend;
mod split;
mod sqlite;

use std::sync::Arc;

use abaco_core::config::{Backend as BackendKind, StoreConfig};
use abaco_core::time::Timestamp;
use abaco_core::{
    Actor, ActorStatus, DbId, Execution, ExecutionId, ExecutionStatus, Worker, WorkerId,
    WorkerStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub use backend::{Kind, Merge, Page, Update, UpdateFn};

/// Errors of the store. `Unavailable` means the backend could not be reached: callers may retry.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
    #[error("store backend failed: {0}")]
    Backend(String),
    #[error("stored {kind} {key} is corrupt: {cause}")]
    Corrupt {
        kind: &'static str,
        key: String,
        cause: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Resource use summed over an actor's finished executions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutionTotals {
    pub cpu: i64,
    pub io: i64,
    pub runtime: i64,
}

/// The outcome of a guarded worker status change.
#[derive(Debug, PartialEq)]
pub enum Transition {
    Applied,
    /// The worker was in a status the transition may not start from (spec §6.2); nothing changed.
    Refused(WorkerStatus),
    Missing,
}

/// Cheap to clone; every clone shares the same connections.
#[derive(Clone)]
pub struct Store(Arc<dyn backend::Backend>);

impl Store {
    /// Connects to the configured backend and prepares its schema.
    pub async fn connect(config: &StoreConfig) -> Result<Store> {
        let backend: Arc<dyn backend::Backend> = match config.backend {
            BackendKind::Embedded => Arc::new(sqlite::Sqlite::open(&config.data_dir)?),
            BackendKind::Distributed => Arc::new(
                split::Split::connect(
                    &config.redis_url,
                    &config.postgres_url,
                    config.postgres_pool_size,
                )
                .await?,
            ),
        };
        Ok(Store(backend))
    }

    /// An embedded store in `dir` (tests, tools).
    pub fn open_embedded(dir: &std::path::Path) -> Result<Store> {
        Ok(Store(Arc::new(sqlite::Sqlite::open(dir)?)))
    }

    /// A distributed store over the given servers (tests, tools).
    pub async fn connect_distributed(redis_url: &str, postgres_url: &str) -> Result<Store> {
        Ok(Store(Arc::new(
            split::Split::connect(redis_url, postgres_url, 8).await?,
        )))
    }

    /// The raw document primitives, for the conformance suite and admin tooling.
    pub fn raw(&self) -> &dyn backend::Backend {
        self.0.as_ref()
    }

    // ---- actors -------------------------------------------------------------------------------

    pub async fn insert_actor(&self, actor: &Actor) -> Result<bool> {
        let db_id = actor.db_id();
        self.0
            .insert_new(
                Kind::Actors,
                db_id.as_str(),
                actor.tenant.as_str(),
                &to_doc(actor)?,
            )
            .await
    }

    pub async fn put_actor(&self, actor: &Actor) -> Result<()> {
        let db_id = actor.db_id();
        self.0
            .put(
                Kind::Actors,
                db_id.as_str(),
                actor.tenant.as_str(),
                &to_doc(actor)?,
            )
            .await
    }

    pub async fn actor(&self, db_id: &DbId) -> Result<Option<Actor>> {
        self.get_typed(Kind::Actors, db_id.as_str()).await
    }

    /// Actors of one tenant, in registration order.
    pub async fn actors_of_tenant(&self, tenant: &str) -> Result<Vec<Actor>> {
        self.list_typed(Kind::Actors, Some(tenant), Page::all())
            .await
    }

    /// Every actor of every tenant (health, autoscaler, admin).
    pub async fn all_actors(&self) -> Result<Vec<Actor>> {
        self.list_typed(Kind::Actors, None, Page::all()).await
    }

    pub async fn delete_actor(&self, db_id: &DbId) -> Result<bool> {
        self.0.delete(Kind::Actors, db_id.as_str()).await
    }

    /// Merges `patch` into an actor's record; `false` when there is no such actor.
    async fn merge_actor(&self, db_id: &DbId, patch: &Map<String, Value>) -> Result<bool> {
        Ok(matches!(
            self.0
                .merge(Kind::Actors, db_id.as_str(), None, patch)
                .await?,
            Merge::Applied(_)
        ))
    }

    /// Sets an actor's status message alone, leaving its status as it is now.
    pub async fn set_actor_status_message(&self, db_id: &DbId, message: &str) -> Result<bool> {
        let mut patch = Map::new();
        patch.insert("status_message".into(), Value::String(message.into()));
        self.merge_actor(db_id, &patch).await
    }

    pub async fn set_actor_status(
        &self,
        db_id: &DbId,
        status: ActorStatus,
        message: &str,
    ) -> Result<bool> {
        let mut patch = Map::new();
        patch.insert("status".into(), Value::String(status.as_str().into()));
        patch.insert("status_message".into(), Value::String(message.into()));
        self.merge_actor(db_id, &patch).await
    }

    pub async fn set_actor_state(&self, db_id: &DbId, state: &Value) -> Result<bool> {
        let mut patch = Map::new();
        patch.insert("state".into(), state.clone());
        self.merge_actor(db_id, &patch).await
    }

    // ---- workers ------------------------------------------------------------------------------

    fn worker_key(db_id: &DbId, worker_id: &WorkerId) -> String {
        format!("{db_id}_{worker_id}")
    }

    pub async fn put_worker(&self, worker: &Worker) -> Result<()> {
        let key = Self::worker_key(&worker.actor_id, &worker.id);
        self.0
            .put(
                Kind::Workers,
                &key,
                worker.actor_id.as_str(),
                &to_doc(worker)?,
            )
            .await
    }

    /// Inserts the worker record unless its actor already has a viable worker (one whose status
    /// is not ERROR, SHUTDOWN_REQUESTED or SHUTTING_DOWN) or the record exists, atomically;
    /// returns whether it inserted.
    pub async fn insert_worker_unless_viable(&self, worker: &Worker) -> Result<bool> {
        let key = Self::worker_key(&worker.actor_id, &worker.id);
        let viable: Vec<&str> = WorkerStatus::ALL
            .iter()
            .filter(|s| s.is_viable())
            .map(|s| s.as_str())
            .collect();
        self.0
            .insert_unless_sibling(
                Kind::Workers,
                &key,
                worker.actor_id.as_str(),
                &to_doc(worker)?,
                "status",
                &viable,
            )
            .await
    }

    pub async fn worker(&self, db_id: &DbId, worker_id: &WorkerId) -> Result<Option<Worker>> {
        self.get_typed(Kind::Workers, &Self::worker_key(db_id, worker_id))
            .await
    }

    pub async fn workers_of(&self, db_id: &DbId) -> Result<Vec<Worker>> {
        self.list_typed(Kind::Workers, Some(db_id.as_str()), Page::all())
            .await
    }

    pub async fn all_workers(&self) -> Result<Vec<Worker>> {
        self.list_typed(Kind::Workers, None, Page::all()).await
    }

    pub async fn delete_worker(&self, db_id: &DbId, worker_id: &WorkerId) -> Result<bool> {
        self.0
            .delete(Kind::Workers, &Self::worker_key(db_id, worker_id))
            .await
    }

    /// Moves a worker to `status` if the spec's state machine allows it from its current status,
    /// atomically, merging `extra` fields in the same write.
    pub async fn transition_worker(
        &self,
        db_id: &DbId,
        worker_id: &WorkerId,
        status: WorkerStatus,
        extra: Map<String, Value>,
    ) -> Result<Transition> {
        let mut patch = extra;
        patch.insert("status".into(), Value::String(status.as_str().into()));
        let allowed: Option<Vec<&str>> = status
            .allowed_predecessors()
            .map(|v| v.iter().map(|s| s.as_str()).collect());
        let guard = allowed.as_ref().map(|a| ("status", a.as_slice()));
        let key = Self::worker_key(db_id, worker_id);
        match self.0.merge(Kind::Workers, &key, guard, &patch).await? {
            Merge::Applied(_) => Ok(Transition::Applied),
            Merge::Missing => Ok(Transition::Missing),
            Merge::Refused(doc) => {
                let current = doc
                    .get("status")
                    .and_then(Value::as_str)
                    .and_then(WorkerStatus::parse)
                    .unwrap_or(WorkerStatus::Error);
                Ok(Transition::Refused(current))
            }
        }
    }

    /// Merges fields into a worker record without a status guard (heartbeats, bookkeeping).
    pub async fn update_worker(
        &self,
        db_id: &DbId,
        worker_id: &WorkerId,
        patch: Map<String, Value>,
    ) -> Result<bool> {
        let key = Self::worker_key(db_id, worker_id);
        Ok(matches!(
            self.0.merge(Kind::Workers, &key, None, &patch).await?,
            Merge::Applied(_)
        ))
    }

    // ---- executions ---------------------------------------------------------------------------

    fn execution_key(db_id: &DbId, execution_id: &ExecutionId) -> String {
        format!("{db_id}_{execution_id}")
    }

    pub async fn put_execution(&self, execution: &Execution) -> Result<()> {
        let key = Self::execution_key(&execution.actor_id, &execution.id);
        self.0
            .put(
                Kind::Executions,
                &key,
                execution.actor_id.as_str(),
                &to_doc(execution)?,
            )
            .await
    }

    pub async fn execution(
        &self,
        db_id: &DbId,
        execution_id: &ExecutionId,
    ) -> Result<Option<Execution>> {
        self.get_typed(Kind::Executions, &Self::execution_key(db_id, execution_id))
            .await
    }

    /// Executions of an actor in the order their messages arrived.
    pub async fn executions_of(&self, db_id: &DbId, page: Page) -> Result<Vec<Execution>> {
        self.list_typed(Kind::Executions, Some(db_id.as_str()), page)
            .await
    }

    pub async fn count_executions(&self, db_id: &DbId) -> Result<u64> {
        self.0.count(Kind::Executions, Some(db_id.as_str())).await
    }

    /// Merges fields into an execution (status, timings, results of the run).
    pub async fn update_execution(
        &self,
        db_id: &DbId,
        execution_id: &ExecutionId,
        patch: Map<String, Value>,
    ) -> Result<bool> {
        let key = Self::execution_key(db_id, execution_id);
        Ok(matches!(
            self.0.merge(Kind::Executions, &key, None, &patch).await?,
            Merge::Applied(_)
        ))
    }

    /// Marks an execution with a status unless it already reached a final one.
    pub async fn update_execution_unless_final(
        &self,
        db_id: &DbId,
        execution_id: &ExecutionId,
        patch: Map<String, Value>,
    ) -> Result<bool> {
        let key = Self::execution_key(db_id, execution_id);
        let open = [
            ExecutionStatus::Submitted.as_str(),
            ExecutionStatus::Running.as_str(),
        ];
        Ok(matches!(
            self.0
                .merge(Kind::Executions, &key, Some(("status", &open)), &patch)
                .await?,
            Merge::Applied(_)
        ))
    }

    pub async fn delete_executions_of(&self, db_id: &DbId) -> Result<u64> {
        self.delete_counter(&Self::totals_counter(db_id)).await?;
        self.0
            .delete_children(Kind::Executions, db_id.as_str())
            .await
    }

    fn totals_counter(db_id: &DbId) -> String {
        format!("executions:{db_id}")
    }

    /// Adds a finished execution's resource use to its actor's running totals, so the summary
    /// of `GET .../executions` never has to read every execution.
    pub async fn add_execution_totals(
        &self,
        db_id: &DbId,
        cpu: i64,
        io: i64,
        runtime: i64,
    ) -> Result<()> {
        self.increment_counters(
            &Self::totals_counter(db_id),
            &[("cpu", cpu), ("io", io), ("runtime", runtime)],
        )
        .await
        .map(|_| ())
    }

    /// The running totals of an actor's finished executions (`ExecutionTotals::default()` when
    /// none finished yet).
    pub async fn execution_totals(&self, db_id: &DbId) -> Result<ExecutionTotals> {
        let fields = self.counters(&Self::totals_counter(db_id)).await?;
        let field = |name: &str| fields.get(name).and_then(Value::as_i64).unwrap_or(0);
        Ok(ExecutionTotals {
            cpu: field("cpu"),
            io: field("io"),
            runtime: field("runtime"),
        })
    }

    // ---- logs ---------------------------------------------------------------------------------

    /// Stores (replaces) the logs of an execution; they expire at `expires` when given.
    pub async fn set_logs(
        &self,
        db_id: &DbId,
        execution_id: &ExecutionId,
        logs: &str,
        expires: Option<Timestamp>,
    ) -> Result<()> {
        let mut doc = Map::new();
        doc.insert("logs".into(), Value::String(logs.into()));
        doc.insert(
            "exp".into(),
            expires
                .map(|t| Value::from(t.timestamp_millis()))
                .unwrap_or(Value::Null),
        );
        self.0
            .put(
                Kind::Logs,
                execution_id.as_str(),
                db_id.as_str(),
                &Value::Object(doc),
            )
            .await
    }

    /// The logs of an execution, `None` when absent or expired.
    pub async fn logs(&self, execution_id: &ExecutionId) -> Result<Option<String>> {
        let Some(doc) = self.0.get(Kind::Logs, execution_id.as_str()).await? else {
            return Ok(None);
        };
        if let Some(exp) = doc.get("exp").and_then(Value::as_i64) {
            if exp <= abaco_core::time::now().timestamp_millis() {
                return Ok(None);
            }
        }
        Ok(doc.get("logs").and_then(Value::as_str).map(str::to_string))
    }

    pub async fn delete_logs_of(&self, db_id: &DbId) -> Result<u64> {
        self.0.delete_children(Kind::Logs, db_id.as_str()).await
    }

    // ---- helpers ------------------------------------------------------------------------------

    async fn get_typed<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>> {
        match self.0.get(kind, key).await? {
            None => Ok(None),
            Some(doc) => from_doc(kind, key, doc).map(Some),
        }
    }

    async fn list_typed<T: DeserializeOwned>(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<T>> {
        let docs = self.0.list(kind, parent, page).await?;
        // One unreadable record must not hide every other one from listings (and from the
        // health agent and autoscaler, which list everything).
        Ok(docs
            .into_iter()
            .filter_map(|(key, doc)| match from_doc(kind, &key, doc) {
                Ok(v) => Some(v),
                Err(err) => {
                    tracing::warn!(cause = %err, "skipping unreadable record");
                    None
                }
            })
            .collect())
    }
}

fn to_doc<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Backend(format!("serialize: {e}")))
}

fn from_doc<T: DeserializeOwned>(kind: Kind, key: &str, doc: Value) -> Result<T> {
    serde_json::from_value(doc).map_err(|e| StoreError::Corrupt {
        kind: kind.name(),
        key: key.to_string(),
        cause: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
