//! The document primitives every backend implements. Documents are JSON objects stored under
//! `(kind, key)`, each with a `parent` (tenant for actors, actor db_id for workers, executions and
//! logs) used for listing in insertion order.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::Result;

/// The collections. Which server holds which one is the split backend's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Actors,
    Workers,
    Executions,
    Logs,
    Permissions,
    Nonces,
    Aliases,
    Configs,
    Clients,
    Meta,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Actors,
        Kind::Workers,
        Kind::Executions,
        Kind::Logs,
        Kind::Permissions,
        Kind::Nonces,
        Kind::Aliases,
        Kind::Configs,
        Kind::Clients,
        Kind::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Actors => "actors",
            Kind::Workers => "workers",
            Kind::Executions => "executions",
            Kind::Logs => "logs",
            Kind::Permissions => "permissions",
            Kind::Nonces => "nonces",
            Kind::Aliases => "aliases",
            Kind::Configs => "configs",
            Kind::Clients => "clients",
            Kind::Meta => "meta",
        }
    }

    /// Live state (Redis in the distributed backend) as opposed to durable records (PostgreSQL).
    pub fn is_live_state(self) -> bool {
        matches!(
            self,
            Kind::Actors | Kind::Workers | Kind::Nonces | Kind::Aliases
        )
    }
}

/// A window over a listing in insertion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: Option<u64>,
}

impl Page {
    pub fn all() -> Page {
        Page {
            offset: 0,
            limit: None,
        }
    }

    pub fn new(offset: u64, limit: u64) -> Page {
        Page {
            offset,
            limit: Some(limit),
        }
    }
}

/// The outcome of a guarded merge.
#[derive(Debug, PartialEq)]
pub enum Merge {
    /// The patch was applied; the new document.
    Applied(Value),
    /// The guard did not hold; the current document, unchanged.
    Refused(Value),
    Missing,
}

/// The outcome of an atomic read-modify-write (`Backend::update`).
#[derive(Debug, PartialEq)]
pub enum Update {
    /// The function returned a document and it was written (inserted when absent); the document.
    Written(Value),
    /// The function returned `None`; the current document (`None` when absent), untouched.
    Unchanged(Option<Value>),
}

/// The function of an update: the current document (`None` when absent) to the document to
/// write, or `None` to leave things as they are. It may run several times, so it must be pure.
pub type UpdateFn<'a> = dyn Fn(Option<&Value>) -> Option<Value> + Send + Sync + 'a;

#[async_trait]
pub trait Backend: Send + Sync {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Value>>;

    /// Insert or replace. A replaced document keeps its place in its parent's listing.
    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()>;

    /// Insert only if absent; `false` when the key already exists.
    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool>;

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool>;

    /// Deletes every document of `kind` whose parent is `parent`; returns how many.
    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64>;

    /// `(key, doc)` pairs of one parent (or of all parents) in insertion order.
    async fn list(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<(String, Value)>>;

    async fn count(&self, kind: Kind, parent: Option<&str>) -> Result<u64>;

    /// Atomically sets the top-level fields of `patch` on the document, if the guard
    /// `(field, allowed values)` holds (the field's current value is a string in the list).
    async fn merge(
        &self,
        kind: Kind,
        key: &str,
        guard: Option<(&str, &[&str])>,
        patch: &Map<String, Value>,
    ) -> Result<Merge>;

    /// Atomically replaces the document with `f(current)`, inserting it under `parent` when
    /// absent; `f` returning `None` leaves everything unchanged. `f` may be called more than once
    /// (optimistic retries), so it must be pure. A replaced document keeps its place and parent.
    async fn update(&self, kind: Kind, key: &str, parent: &str, f: &UpdateFn<'_>)
        -> Result<Update>;

    /// Atomically inserts `doc` under `(kind, key)` and `parent` unless the key exists or a
    /// document of the same kind and parent has a top-level string `field` whose value is in
    /// `blocking`; returns whether it inserted.
    async fn insert_unless_sibling(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        doc: &Value,
        field: &str,
        blocking: &[&str],
    ) -> Result<bool>;

    /// Atomically deletes the document if the guard `(field, allowed values)` holds on it (the
    /// same guard as `merge`); returns whether it deleted.
    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool>;
}

/// Whether the guard `(field, allowed)` holds on `doc`: the field is a string in the list.
pub(crate) fn guard_holds(doc: &Value, guard: Option<(&str, &[&str])>) -> bool {
    match guard {
        None => true,
        Some((field, allowed)) => doc
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|current| allowed.contains(&current)),
    }
}

/// Sets the top-level fields of `patch` on `doc` (a non-object document becomes an object).
pub(crate) fn apply_patch(doc: &mut Value, patch: &Map<String, Value>) {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(fields) = doc {
        for (name, value) in patch {
            fields.insert(name.clone(), value.clone());
        }
    }
}
