//! The conformance suite: one `suite(store)` exercising every primitive and typed method, run
//! against a fresh embedded store and against the real Redis + PostgreSQL servers (isolated by a
//! unique run id, since those servers are shared). Plus reopening the embedded store (and its
//! one-owner lock), and 20 concurrent guarded transitions of which exactly one may win, on both
//! backends. The atomic primitives and the counters and locks built on them are in `tests/more.rs`.
//!
//! Just over 600 lines: one suite walks every primitive and typed method in order, on the same
//! store; splitting it would duplicate the setup each part depends on.

// Tests fail loudly on purpose.
#![allow(clippy::unwrap_used)]

mod harness;
mod more;

use abaco_core::time::now;
use abaco_core::{
    ActorId, ActorStatus, DbId, Execution, ExecutionId, ExecutionStatus, Tenant, Worker, WorkerId,
    WorkerStatus,
};
use serde_json::{json, Map, Value};

use crate::{Kind, Merge, Page, Store, StoreError, Transition};
use harness::{actor, distributed, fields, keys, temp_dir, unique};

// ---- the suite ----------------------------------------------------------------------------------

async fn suite(store: Store) {
    let run = unique("run");
    for kind in Kind::ALL {
        raw_primitives(&store, *kind, &run).await;
    }
    actors(&store, &run).await;
    workers(&store, &run).await;
    executions(&store, &run).await;
    logs(&store, &run).await;
    more::suite(&store).await;
}

async fn raw_primitives(store: &Store, kind: Kind, run: &str) {
    let raw = store.raw();
    let parent = format!("{run}-{}-p", kind.name());
    let other = format!("{run}-{}-q", kind.name());
    let k: Vec<String> = (0..5)
        .map(|i| format!("{run}-{}-k{i}", kind.name()))
        .collect();
    let ctx = kind.name();

    assert_eq!(raw.get(kind, &k[1]).await.unwrap(), None, "{ctx}");
    assert!(
        raw.insert_new(kind, &k[1], &parent, &json!({"v": 1}))
            .await
            .unwrap(),
        "{ctx}"
    );
    assert!(
        !raw.insert_new(kind, &k[1], &parent, &json!({"v": 9}))
            .await
            .unwrap(),
        "{ctx}"
    );
    assert_eq!(
        raw.get(kind, &k[1]).await.unwrap(),
        Some(json!({"v": 1})),
        "{ctx}"
    );
    raw.put(kind, &k[2], &parent, &json!({"v": 2}))
        .await
        .unwrap();
    raw.put(kind, &k[3], &other, &json!({"v": 3}))
        .await
        .unwrap();
    raw.put(kind, &k[4], &parent, &json!({"v": 4}))
        .await
        .unwrap();
    // A replaced document keeps its place.
    raw.put(kind, &k[1], &parent, &json!({"v": 10}))
        .await
        .unwrap();
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [&k[1], &k[2], &k[4]], "{ctx}");
    assert_eq!(listing[0].1, json!({"v": 10}), "{ctx}");
    let page = raw
        .list(kind, Some(&parent), Page::new(1, 1))
        .await
        .unwrap();
    assert_eq!(keys(&page), [&k[2]], "{ctx}");
    let page = raw
        .list(kind, Some(&parent), Page::new(1, 10))
        .await
        .unwrap();
    assert_eq!(keys(&page), [&k[2], &k[4]], "{ctx}");
    assert!(raw
        .list(kind, Some(&parent), Page::new(0, 0))
        .await
        .unwrap()
        .is_empty());
    assert!(raw
        .list(kind, Some(&parent), Page::new(3, 5))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(raw.count(kind, Some(&parent)).await.unwrap(), 3, "{ctx}");
    assert_eq!(raw.count(kind, Some(&other)).await.unwrap(), 1, "{ctx}");
    assert_eq!(
        raw.count(kind, Some("no such parent")).await.unwrap(),
        0,
        "{ctx}"
    );
    // The global listing holds ours in insertion order (other runs may add theirs).
    let all = raw.list(kind, None, Page::all()).await.unwrap();
    let ours: Vec<&str> = keys(&all)
        .into_iter()
        .filter(|key| key.starts_with(run))
        .collect();
    assert_eq!(ours, [&k[1], &k[2], &k[3], &k[4]], "{ctx}");
    assert!(raw.count(kind, None).await.unwrap() >= 4, "{ctx}");

    // Merges: missing, unguarded, guarded (held, not held, not a string), values kept exactly.
    let patch = fields(json!({"status": "A", "empty": [], "obj": {}, "big": i64::MAX}));
    assert_eq!(
        raw.merge(kind, "absent", None, &patch).await.unwrap(),
        Merge::Missing
    );
    let merged = json!({"v": 10, "status": "A", "empty": [], "obj": {}, "big": i64::MAX});
    assert_eq!(
        raw.merge(kind, &k[1], None, &patch).await.unwrap(),
        Merge::Applied(merged)
    );
    let to_b = fields(json!({"status": "B", "note": null}));
    let refused = raw
        .merge(kind, &k[1], Some(("status", &["X", "Y"])), &to_b)
        .await
        .unwrap();
    assert!(
        matches!(refused, Merge::Refused(ref d) if d["status"] == "A"),
        "{ctx}"
    );
    let refused = raw
        .merge(kind, &k[1], Some(("v", &["10"])), &to_b)
        .await
        .unwrap();
    assert!(
        matches!(refused, Merge::Refused(_)),
        "{ctx}: a number is not a string"
    );
    let refused = raw
        .merge(kind, &k[1], Some(("nope", &["A"])), &to_b)
        .await
        .unwrap();
    assert!(
        matches!(refused, Merge::Refused(_)),
        "{ctx}: an absent field fails the guard"
    );
    let applied = raw
        .merge(kind, &k[1], Some(("status", &["X", "A"])), &to_b)
        .await
        .unwrap();
    let Merge::Applied(doc) = applied else {
        panic!("{ctx}: guarded merge refused: {applied:?}")
    };
    assert_eq!(doc["status"], "B");
    assert_eq!(doc["note"], Value::Null);
    let stored = raw.get(kind, &k[1]).await.unwrap().unwrap();
    assert_eq!(stored, doc, "{ctx}");
    assert_eq!(stored["empty"], json!([]), "{ctx}");
    assert_eq!(stored["big"].as_i64(), Some(i64::MAX), "{ctx}");
    let merged_keys = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(
        keys(&merged_keys),
        [&k[1], &k[2], &k[4]],
        "{ctx}: a merge keeps the place"
    );

    // Deletes; a deleted then re-put document goes to the end; moving a document between parents.
    assert!(raw.delete(kind, &k[2]).await.unwrap(), "{ctx}");
    assert!(!raw.delete(kind, &k[2]).await.unwrap(), "{ctx}");
    assert_eq!(raw.get(kind, &k[2]).await.unwrap(), None, "{ctx}");
    raw.put(kind, &k[2], &parent, &json!({"v": 2}))
        .await
        .unwrap();
    raw.put(kind, &k[3], &parent, &json!({"v": 3}))
        .await
        .unwrap();
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [&k[1], &k[3], &k[4], &k[2]], "{ctx}");
    // Counts follow deletes, re-inserts and moves between parents.
    assert_eq!(raw.count(kind, Some(&parent)).await.unwrap(), 4, "{ctx}");
    assert_eq!(raw.count(kind, Some(&other)).await.unwrap(), 0, "{ctx}");
    assert!(raw
        .list(kind, Some(&other), Page::all())
        .await
        .unwrap()
        .is_empty());

    assert_eq!(
        raw.delete_children(kind, &parent).await.unwrap(),
        4,
        "{ctx}"
    );
    assert_eq!(
        raw.delete_children(kind, &parent).await.unwrap(),
        0,
        "{ctx}"
    );
    assert_eq!(raw.count(kind, Some(&parent)).await.unwrap(), 0, "{ctx}");
    assert_eq!(raw.get(kind, &k[1]).await.unwrap(), None, "{ctx}");
    let all = raw.list(kind, None, Page::all()).await.unwrap();
    assert!(!keys(&all).iter().any(|key| key.starts_with(run)), "{ctx}");
}

async fn actors(store: &Store, run: &str) {
    let tenant = run.to_ascii_uppercase();
    let first = actor(&tenant);
    let second = actor(&tenant);
    let third = actor(&tenant);
    assert!(store.insert_actor(&first).await.unwrap());
    assert!(!store.insert_actor(&first).await.unwrap());
    assert!(store.insert_actor(&second).await.unwrap());
    store.put_actor(&third).await.unwrap();
    assert_eq!(
        store.actor(&first.db_id()).await.unwrap(),
        Some(first.clone())
    );

    let mut changed = first.clone();
    changed.image = "abacosamples/other".into();
    changed.revision = 2;
    store.put_actor(&changed).await.unwrap();
    let listed = store.actors_of_tenant(&tenant).await.unwrap();
    assert_eq!(listed, vec![changed.clone(), second.clone(), third.clone()]);
    assert!(store
        .actors_of_tenant("NOBODY-HERE")
        .await
        .unwrap()
        .is_empty());
    let all = store.all_actors().await.unwrap();
    assert!(all.contains(&second));

    assert!(store
        .set_actor_status(&second.db_id(), ActorStatus::Ready, "ok")
        .await
        .unwrap());
    assert!(store
        .set_actor_state(&second.db_id(), &json!({"n": [1, 2]}))
        .await
        .unwrap());
    let stored = store.actor(&second.db_id()).await.unwrap().unwrap();
    assert_eq!(stored.status, ActorStatus::Ready);
    assert_eq!(stored.status_message, "ok");
    assert_eq!(stored.state, json!({"n": [1, 2]}));
    assert_eq!(stored.mounts, second.mounts);

    let missing = DbId::new(&Tenant::from(tenant.as_str()), &ActorId::generate());
    assert!(!store
        .set_actor_status(&missing, ActorStatus::Error, "x")
        .await
        .unwrap());
    assert!(store.actor(&missing).await.unwrap().is_none());
    for a in [&first, &second, &third] {
        assert!(store.delete_actor(&a.db_id()).await.unwrap());
    }
    assert!(!store.delete_actor(&first.db_id()).await.unwrap());
    assert!(store.actors_of_tenant(&tenant).await.unwrap().is_empty());
}

async fn workers(store: &Store, run: &str) {
    use WorkerStatus::*;
    let owner = actor(&run.to_ascii_uppercase());
    let db_id = owner.db_id();
    let worker = Worker::requested(&owner, WorkerId::generate(), now());
    let spare = Worker::requested(&owner, WorkerId::generate(), now());
    store.put_worker(&worker).await.unwrap();
    store.put_worker(&spare).await.unwrap();
    assert_eq!(
        store.worker(&db_id, &worker.id).await.unwrap(),
        Some(worker.clone())
    );
    let ids: Vec<WorkerId> = store
        .workers_of(&db_id)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, vec![worker.id.clone(), spare.id.clone()]);
    assert!(store
        .all_workers()
        .await
        .unwrap()
        .iter()
        .any(|w| w.id == spare.id));

    let step = |status: WorkerStatus, extra: Value| {
        let (db_id, id) = (db_id.clone(), worker.id.clone());
        async move {
            store
                .transition_worker(&db_id, &id, status, fields(extra))
                .await
                .unwrap()
        }
    };
    assert_eq!(step(Busy, json!({})).await, Transition::Refused(Requested));
    assert_eq!(
        step(SpawnerSetup, json!({"host_id": "h1"})).await,
        Transition::Applied
    );
    assert_eq!(
        step(SpawnerSetup, json!({})).await,
        Transition::Refused(SpawnerSetup)
    );
    assert_eq!(
        step(CreatingContainer, json!({})).await,
        Transition::Refused(SpawnerSetup)
    );
    assert_eq!(step(PullingImage, json!({})).await, Transition::Applied);
    assert_eq!(
        step(CreatingContainer, json!({})).await,
        Transition::Applied
    );
    assert_eq!(
        step(Ready, json!({"cid": "c0ffee"})).await,
        Transition::Applied
    );
    assert_eq!(step(Ready, json!({})).await, Transition::Applied);
    assert_eq!(step(Busy, json!({})).await, Transition::Applied);
    assert_eq!(step(Busy, json!({})).await, Transition::Refused(Busy));
    assert_eq!(step(Ready, json!({})).await, Transition::Applied);
    assert_eq!(
        step(ShutdownRequested, json!({})).await,
        Transition::Applied
    );
    assert_eq!(
        step(Ready, json!({})).await,
        Transition::Refused(ShutdownRequested)
    );
    assert_eq!(
        step(Error, json!({"status_message": "boom"})).await,
        Transition::Applied
    );

    let stored = store.worker(&db_id, &worker.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Error);
    assert_eq!(stored.cid.as_deref(), Some("c0ffee"));
    assert_eq!(stored.host_id.as_deref(), Some("h1"));
    assert_eq!(stored.status_message.as_deref(), Some("boom"));

    let missing = WorkerId::generate();
    let outcome = store
        .transition_worker(&db_id, &missing, Ready, Map::new())
        .await
        .unwrap();
    assert_eq!(outcome, Transition::Missing);
    let beat = fields(json!({"last_health_check_time": now()}));
    assert!(store
        .update_worker(&db_id, &spare.id, beat.clone())
        .await
        .unwrap());
    assert!(!store.update_worker(&db_id, &missing, beat).await.unwrap());
    let spare_stored = store.worker(&db_id, &spare.id).await.unwrap().unwrap();
    assert!(spare_stored.last_health_check_time.is_some());

    assert!(store.delete_worker(&db_id, &worker.id).await.unwrap());
    assert!(!store.delete_worker(&db_id, &worker.id).await.unwrap());
    assert!(store.delete_worker(&db_id, &spare.id).await.unwrap());
    assert!(store.workers_of(&db_id).await.unwrap().is_empty());
}

async fn executions(store: &Store, run: &str) {
    let owner = actor(&run.to_ascii_uppercase());
    let db_id = owner.db_id();
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut execution = Execution::submitted(&owner, ExecutionId::generate(), "tester", now());
        execution.cpu = i64::MAX - i;
        execution.exit_code = Some(json!(0));
        store.put_execution(&execution).await.unwrap();
        ids.push(execution.id);
    }
    let listed: Vec<ExecutionId> = store
        .executions_of(&db_id, Page::all())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids);
    let page: Vec<ExecutionId> = store
        .executions_of(&db_id, Page::new(10, 5))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, ids[10..15]);
    let tail = store
        .executions_of(&db_id, Page::new(20, 100))
        .await
        .unwrap();
    assert_eq!(tail.len(), 5);
    assert_eq!(store.count_executions(&db_id).await.unwrap(), 25);

    let first = &ids[0];
    let running = fields(json!({"status": "RUNNING", "start_time": now()}));
    assert!(store
        .update_execution(&db_id, first, running)
        .await
        .unwrap());
    let complete = fields(json!({"status": "COMPLETE", "runtime": 3}));
    assert!(store
        .update_execution_unless_final(&db_id, first, complete)
        .await
        .unwrap());
    let error = fields(json!({"status": "ERROR", "status_message": "late"}));
    assert!(!store
        .update_execution_unless_final(&db_id, first, error)
        .await
        .unwrap());
    let stored = store.execution(&db_id, first).await.unwrap().unwrap();
    assert_eq!(stored.status, ExecutionStatus::Complete);
    assert_eq!(stored.runtime, 3);
    assert_eq!(stored.cpu, i64::MAX);
    assert!(stored.start_time.is_some());
    assert_eq!(stored.status_message, None);
    let missing = ExecutionId::generate();
    assert!(!store
        .update_execution(&db_id, &missing, Map::new())
        .await
        .unwrap());
    assert!(store.execution(&db_id, &missing).await.unwrap().is_none());
    // A replaced execution keeps its place in the listing.
    store.put_execution(&stored).await.unwrap();
    let again = store.executions_of(&db_id, Page::new(0, 1)).await.unwrap();
    assert_eq!(again[0].id, *first);

    assert_eq!(store.delete_executions_of(&db_id).await.unwrap(), 25);
    assert_eq!(store.count_executions(&db_id).await.unwrap(), 0);
    assert!(store
        .executions_of(&db_id, Page::all())
        .await
        .unwrap()
        .is_empty());
}

async fn logs(store: &Store, run: &str) {
    let owner = actor(&run.to_ascii_uppercase());
    let db_id = owner.db_id();
    let (kept, expired, soon) = (
        ExecutionId::generate(),
        ExecutionId::generate(),
        ExecutionId::generate(),
    );
    store.set_logs(&db_id, &kept, "first", None).await.unwrap();
    store
        .set_logs(&db_id, &kept, "hello\nworld", None)
        .await
        .unwrap();
    assert_eq!(
        store.logs(&kept).await.unwrap().as_deref(),
        Some("hello\nworld")
    );
    let past = now() - chrono::Duration::seconds(1);
    store
        .set_logs(&db_id, &expired, "gone", Some(past))
        .await
        .unwrap();
    assert_eq!(store.logs(&expired).await.unwrap(), None);
    let future = now() + chrono::Duration::hours(1);
    store
        .set_logs(&db_id, &soon, "a\0b ✓", Some(future))
        .await
        .unwrap();
    let text = store.logs(&soon).await.unwrap().unwrap();
    assert!(text.starts_with('a') && text.ends_with("b ✓"), "{text:?}");
    assert_eq!(store.logs(&ExecutionId::generate()).await.unwrap(), None);
    assert_eq!(store.delete_logs_of(&db_id).await.unwrap(), 3);
    assert_eq!(store.logs(&kept).await.unwrap(), None);
}

/// 20 tasks race to move one REQUESTED worker to SPAWNER SETUP: exactly one may win.
async fn concurrent_transition(store: Store) {
    let owner = actor(&unique("race").to_ascii_uppercase());
    let db_id = owner.db_id();
    let worker = Worker::requested(&owner, WorkerId::generate(), now());
    store.put_worker(&worker).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, db_id, id) = (store.clone(), db_id.clone(), worker.id.clone());
            tokio::spawn(async move {
                let extra = fields(json!({"host_id": format!("host{i}")}));
                let outcome = store
                    .transition_worker(&db_id, &id, WorkerStatus::SpawnerSetup, extra)
                    .await
                    .unwrap();
                (i, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        match outcome {
            Transition::Applied => winners.push(i),
            Transition::Refused(status) => assert_eq!(status, WorkerStatus::SpawnerSetup),
            Transition::Missing => panic!("the worker vanished"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.worker(&db_id, &worker.id).await.unwrap().unwrap();
    assert_eq!(stored.status, WorkerStatus::SpawnerSetup);
    assert_eq!(stored.host_id, Some(format!("host{}", winners[0])));
    assert!(store.delete_worker(&db_id, &worker.id).await.unwrap());
}

// ---- the runs -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_conforms() {
    let dir = temp_dir();
    suite(Store::open_embedded(&dir).unwrap()).await;
    concurrent_transition(Store::open_embedded(&dir.join("race")).unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_store_conforms() {
    let Some(store) = distributed().await else {
        return;
    };
    suite(store.clone()).await;
    concurrent_transition(store).await;
}

#[tokio::test]
async fn embedded_store_survives_reopening() {
    let dir = temp_dir();
    let owner = actor("REOPEN");
    let before = Execution::submitted(&owner, ExecutionId::generate(), "tester", now());
    {
        let store = Store::open_embedded(&dir).unwrap();
        store.insert_actor(&owner).await.unwrap();
        store.put_execution(&before).await.unwrap();
        store
            .set_logs(&owner.db_id(), &before.id, "kept", None)
            .await
            .unwrap();
    }
    let store = Store::open_embedded(&dir).unwrap();
    assert_eq!(
        store.actor(&owner.db_id()).await.unwrap(),
        Some(owner.clone())
    );
    assert_eq!(
        store.logs(&before.id).await.unwrap().as_deref(),
        Some("kept")
    );
    // Insertion order continues after the documents written before the reopen.
    let after = Execution::submitted(&owner, ExecutionId::generate(), "tester", now());
    store.put_execution(&after).await.unwrap();
    let listed = store
        .executions_of(&owner.db_id(), Page::all())
        .await
        .unwrap();
    assert_eq!(listed, vec![before, after]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One store owns a data directory: a second open fails naming the holder, and succeeds once the
/// first is closed.
#[tokio::test]
async fn embedded_data_directory_has_one_owner() {
    let dir = temp_dir();
    let first = Store::open_embedded(&dir).unwrap();
    let second = Store::open_embedded(&dir);
    let err = second
        .err()
        .expect("a second open of a locked directory must fail")
        .to_string();
    assert!(err.contains("is in use by process"), "{err}");
    assert!(err.contains(&std::process::id().to_string()), "{err}");
    drop(first);
    let reopened = Store::open_embedded(&dir).unwrap();
    assert_eq!(
        reopened
            .count_executions(&DbId::from("NONE"))
            .await
            .unwrap(),
        0
    );
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store written before the per-parent counts existed gets them filled at open.
#[tokio::test]
async fn embedded_counts_are_filled_for_an_older_store() {
    let dir = temp_dir();
    let owner = actor("COUNTS");
    {
        let store = Store::open_embedded(&dir).unwrap();
        for _ in 0..3 {
            let e = Execution::submitted(&owner, ExecutionId::generate(), "tester", now());
            store.put_execution(&e).await.unwrap();
        }
    }
    let conn = rusqlite::Connection::open(dir.join("store.sqlite3")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER docs_count_insert; DROP TRIGGER docs_count_delete;
         DROP TRIGGER docs_count_move; DROP TABLE counts;",
    )
    .unwrap();
    drop(conn);
    let store = Store::open_embedded(&dir).unwrap();
    assert_eq!(store.count_executions(&owner.db_id()).await.unwrap(), 3);
    let e = Execution::submitted(&owner, ExecutionId::generate(), "tester", now());
    store.put_execution(&e).await.unwrap();
    assert_eq!(store.count_executions(&owner.db_id()).await.unwrap(), 4);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unreachable_servers_are_unavailable() {
    let redis = crate::redis_backend::Redis::connect("redis://:secret@127.0.0.1:1/").await;
    let postgres =
        crate::postgres::Postgres::connect("postgres://abaco:secret@127.0.0.1:1/abaco", 2).await;
    for (server, outcome) in [("Redis", redis.err()), ("PostgreSQL", postgres.err())] {
        match outcome {
            Some(StoreError::Unavailable(message)) => {
                assert!(
                    message.contains(server) && message.contains("127.0.0.1:1"),
                    "{message}"
                );
                assert!(!message.contains("secret"), "credentials leak: {message}");
            }
            Some(e) => panic!("{server}: expected Unavailable, got {e}"),
            None => panic!("{server}: connected to port 1"),
        }
    }
}
