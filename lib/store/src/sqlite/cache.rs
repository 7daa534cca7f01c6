//! The embedded store's in-memory copy of the small, hot kinds (actors, permission maps,
//! aliases), and what a write tells it to forget.

use std::sync::Mutex;

use serde_json::Value;

use crate::backend::Kind;

/// What a write may change.
#[derive(Clone)]
pub(super) enum Touch {
    Key(Kind, String),
    Kind(Kind),
}

/// The documents of the small, hot kinds (actors, permissions, aliases: read by every request)
/// kept in memory. Coherent because this process makes every write to the file: the writer
/// forgets what a transaction touched before answering its callers, and a read that raced with
/// a write never stores what it read (the generation moved on).
pub(super) struct Cache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    docs: std::collections::HashMap<(Kind, String), Option<Value>>,
    generation: u64,
}

/// Entries kept before the cache starts over.
const CACHE_ENTRIES: usize = 20_000;

impl Cache {
    pub(super) fn new() -> Cache {
        Cache {
            inner: Mutex::new(CacheInner::default()),
        }
    }

    pub(super) fn cached(kind: Kind) -> bool {
        matches!(kind, Kind::Actors | Kind::Permissions | Kind::Aliases)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached document (`Some(None)`: known absent), or the generation to store a read under.
    pub(super) fn get(&self, kind: Kind, key: &str) -> std::result::Result<Option<Value>, u64> {
        let inner = self.lock();
        match inner.docs.get(&(kind, key.to_string())) {
            Some(doc) => Ok(doc.clone()),
            None => Err(inner.generation),
        }
    }

    pub(super) fn store(&self, kind: Kind, key: &str, doc: &Option<Value>, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.docs.len() >= CACHE_ENTRIES {
            inner.docs.clear();
        }
        inner.docs.insert((kind, key.to_string()), doc.clone());
    }

    pub(super) fn forget(&self, touch: &Touch) {
        let kind = match touch {
            Touch::Key(kind, _) | Touch::Kind(kind) => *kind,
        };
        if !Self::cached(kind) {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        match touch {
            Touch::Key(kind, key) => {
                inner.docs.remove(&(*kind, key.clone()));
            }
            Touch::Kind(kind) => inner.docs.retain(|(k, _), _| k != kind),
        }
    }
}
