//! The distributed backend: routes each kind to Redis (live state: `Kind::is_live_state`) or
//! PostgreSQL (durable records). It adds nothing but the routing; each half knows only its server.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{Backend, Kind, Merge, Page, Update, UpdateFn};
use crate::postgres::Postgres;
use crate::redis_backend::Redis;
use crate::Result;

/// Redis for live state, PostgreSQL for records.
pub(crate) struct Split {
    redis: Redis,
    postgres: Postgres,
}

impl Split {
    /// Connects to both servers (concurrently) and prepares the PostgreSQL schema.
    pub async fn connect(redis_url: &str, postgres_url: &str, pool_size: usize) -> Result<Split> {
        let (redis, postgres) = tokio::join!(
            Redis::connect(redis_url),
            Postgres::connect(postgres_url, pool_size)
        );
        Ok(Split {
            redis: redis?,
            postgres: postgres?,
        })
    }

    fn route(&self, kind: Kind) -> &dyn Backend {
        if kind.is_live_state() {
            &self.redis
        } else {
            &self.postgres
        }
    }
}

/// `url` without its credentials, for error messages (`postgres://***@host:5432/db`).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[async_trait]
impl Backend for Split {
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Value>> {
        self.route(kind).get(kind, key).await
    }

    async fn put(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<()> {
        self.route(kind).put(kind, key, parent, doc).await
    }

    async fn insert_new(&self, kind: Kind, key: &str, parent: &str, doc: &Value) -> Result<bool> {
        self.route(kind).insert_new(kind, key, parent, doc).await
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool> {
        self.route(kind).delete(kind, key).await
    }

    async fn delete_children(&self, kind: Kind, parent: &str) -> Result<u64> {
        self.route(kind).delete_children(kind, parent).await
    }

    async fn list(
        &self,
        kind: Kind,
        parent: Option<&str>,
        page: Page,
    ) -> Result<Vec<(String, Value)>> {
        self.route(kind).list(kind, parent, page).await
    }

    async fn count(&self, kind: Kind, parent: Option<&str>) -> Result<u64> {
        self.route(kind).count(kind, parent).await
    }

    async fn merge(
        &self,
        kind: Kind,
        key: &str,
        guard: Option<(&str, &[&str])>,
        patch: &Map<String, Value>,
    ) -> Result<Merge> {
        self.route(kind).merge(kind, key, guard, patch).await
    }

    async fn update(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        f: &UpdateFn<'_>,
    ) -> Result<Update> {
        self.route(kind).update(kind, key, parent, f).await
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
        self.route(kind)
            .insert_unless_sibling(kind, key, parent, doc, field, blocking)
            .await
    }

    async fn delete_guarded(&self, kind: Kind, key: &str, guard: (&str, &[&str])) -> Result<bool> {
        self.route(kind).delete_guarded(kind, key, guard).await
    }
}
