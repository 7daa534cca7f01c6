//! Fixtures of the conformance suite: unique names, temporary directories, the shared servers
//! and sample records.

use std::sync::atomic::{AtomicU64, Ordering};

use abaco_core::model::Mount;
use abaco_core::time::now;
use abaco_core::{Actor, ActorId, ActorStatus, Tenant};
use serde_json::{json, Map, Value};

use crate::{Store, StoreError};

/// A name no other run (or test in this run) uses; no `_`, which separates parts of db ids.
pub(super) fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

pub(super) fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(unique("abaco-store-test"))
}

/// The shared servers, or `None` (with a note) when they are unreachable outside CI.
pub(super) async fn distributed() -> Option<Store> {
    let redis_url = std::env::var("ABACO_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_string());
    let postgres_url = std::env::var("ABACO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://abaco:abaco@127.0.0.1:5432/abaco".to_string());
    match Store::connect_distributed(&redis_url, &postgres_url).await {
        Ok(store) => Some(store),
        Err(StoreError::Unavailable(cause)) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the distributed store test: {cause}");
            None
        }
        Err(e) => panic!("cannot connect to Redis + PostgreSQL: {e}"),
    }
}

pub(super) fn actor(tenant: &str) -> Actor {
    let time = now();
    Actor {
        id: ActorId::generate(),
        tenant: Tenant::from(tenant),
        owner: "testuser".into(),
        api_server: "http://127.0.0.1:8000".into(),
        image: "abacosamples/test".into(),
        name: Some("conformance".into()),
        description: String::new(),
        stateless: true,
        kind: "none".into(),
        link: String::new(),
        webhook: String::new(),
        hints: Vec::new(),
        token: Value::String("false".into()),
        privileged: false,
        max_workers: None,
        mem_limit: Some("512m".into()),
        max_cpus: Some(i64::MAX),
        use_container_uid: false,
        default_environment: Map::new(),
        status: ActorStatus::Submitted,
        status_message: String::new(),
        state: json!({}),
        create_time: time,
        last_update_time: time,
        mounts: vec![Mount {
            host_path: "/data".into(),
            container_path: "/_abaco_data".into(),
            mode: "ro".into(),
        }],
        revision: 1,
        tasdir: None,
        uid: None,
        gid: None,
        queue: "default".into(),
        log_ex: None,
        cron_on: false,
        cron_schedule: None,
        cron_next_ex: None,
    }
}

pub(super) fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(super) fn keys(listing: &[(String, Value)]) -> Vec<&str> {
    listing.iter().map(|(k, _)| k.as_str()).collect()
}
