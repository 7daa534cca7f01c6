//! The conformance suite of the atomic primitives (`update`, `insert_unless_sibling`,
//! `delete_guarded`) and what is built on them (viable-worker insertion, counters, locks), run on
//! both backends as part of the main suite. The concurrent parts race 20 tasks at once.

use std::future::Future;

use abaco_core::time::now;
use abaco_core::{Worker, WorkerId, WorkerStatus};
use serde_json::{json, Map, Value};

use super::harness::{actor, fields, keys, temp_dir, unique};
use crate::{Kind, Page, Store, StoreError, Transition, Update};

/// Part of the main suite (not a test of its own): its raw documents in typed kinds would break
/// the typed listings of a suite running alongside on the shared servers.
pub(super) async fn suite(store: &Store) {
    let run = unique("atomic");
    for kind in Kind::ALL {
        raw_update(store, *kind, &run).await;
        raw_insert_unless_sibling(store, *kind, &run).await;
        raw_delete_guarded(store, *kind, &run).await;
    }
    // One live-state kind and one record kind (Redis and PostgreSQL in the split backend).
    for kind in [Kind::Workers, Kind::Executions] {
        concurrent_updates(store, kind, &run).await;
        concurrent_sibling_inserts(store, kind, &run).await;
    }
    counters(store, &run).await;
    viable_workers(store, &run).await;
    locks(store, &run).await;
    leases(store, &run).await;
    reads_follow_writes(store, &run).await;
}

/// Runs 20 copies of `task` at once; their results in spawn order.
async fn race<T, F, Fut>(task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..20).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

fn increment(current: Option<&Value>) -> Option<Value> {
    let n = current.map_or(0, |d| d["n"].as_i64().unwrap());
    Some(json!({"n": n + 1}))
}

async fn raw_update(store: &Store, kind: Kind, run: &str) {
    let raw = store.raw();
    let ctx = kind.name();
    let parent = format!("{run}-{ctx}-up");
    let (first, k, last) = (
        format!("{run}-{ctx}-u0"),
        format!("{run}-{ctx}-u1"),
        format!("{run}-{ctx}-u2"),
    );
    raw.put(kind, &first, &parent, &json!({"v": 0}))
        .await
        .unwrap();

    // Absent: leaving it absent, then inserting under `parent`.
    let leave = |c: Option<&Value>| {
        assert_eq!(c, None);
        None
    };
    let outcome = raw.update(kind, &k, &parent, &leave).await.unwrap();
    assert_eq!(outcome, Update::Unchanged(None), "{ctx}");
    assert_eq!(raw.get(kind, &k).await.unwrap(), None, "{ctx}");
    let doc = json!({"n": 1, "empty": [], "obj": {}, "big": i64::MAX});
    let create = |_: Option<&Value>| Some(doc.clone());
    let outcome = raw.update(kind, &k, &parent, &create).await.unwrap();
    assert_eq!(outcome, Update::Written(doc.clone()), "{ctx}");
    assert_eq!(raw.get(kind, &k).await.unwrap(), Some(doc.clone()), "{ctx}");
    raw.put(kind, &last, &parent, &json!({"v": 2}))
        .await
        .unwrap();

    // Present: the function sees the document exactly; the parent and place are kept.
    let bumped = json!({"n": 2, "empty": [], "obj": {}, "big": i64::MAX});
    let bump = |c: Option<&Value>| {
        assert_eq!(c, Some(&doc));
        let mut next = c.unwrap().clone();
        next["n"] = json!(2);
        Some(next)
    };
    let outcome = raw.update(kind, &k, "elsewhere", &bump).await.unwrap();
    assert_eq!(outcome, Update::Written(bumped.clone()), "{ctx}");
    let stored = raw.get(kind, &k).await.unwrap().unwrap();
    assert_eq!(stored, bumped, "{ctx}");
    assert_eq!(stored["empty"], json!([]), "{ctx}");
    assert_eq!(stored["big"].as_i64(), Some(i64::MAX), "{ctx}");
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [&first, &k, &last], "{ctx}");
    assert_eq!(
        raw.count(kind, Some("elsewhere")).await.unwrap(),
        0,
        "{ctx}"
    );

    // Present but unchanged: the current document comes back, nothing is written.
    let outcome = raw.update(kind, &k, &parent, &|_| None);
    assert_eq!(
        outcome.await.unwrap(),
        Update::Unchanged(Some(bumped.clone()))
    );
    assert_eq!(raw.get(kind, &k).await.unwrap(), Some(bumped), "{ctx}");

    // Deleted, then updated again: inserted anew at the end.
    assert!(raw.delete(kind, &k).await.unwrap(), "{ctx}");
    let outcome = raw.update(kind, &k, &parent, &increment).await.unwrap();
    assert_eq!(outcome, Update::Written(json!({"n": 1})), "{ctx}");
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [&first, &last, &k], "{ctx}");
    assert_eq!(
        raw.delete_children(kind, &parent).await.unwrap(),
        3,
        "{ctx}"
    );
}

async fn raw_insert_unless_sibling(store: &Store, kind: Kind, run: &str) {
    let raw = store.raw();
    let ctx = kind.name();
    let (parent, other) = (format!("{run}-{ctx}-sp"), format!("{run}-{ctx}-sq"));
    let key = |i: usize| format!("{run}-{ctx}-s{i}");
    let insert = |i: usize, parent: &str, doc: Value, blocking: &'static [&'static str]| {
        let (key, parent) = (key(i), parent.to_string());
        async move {
            raw.insert_unless_sibling(kind, &key, &parent, &doc, "status", blocking)
                .await
                .unwrap()
        }
    };
    let a = json!({"status": "A", "empty": [], "big": i64::MAX});
    assert!(insert(0, &parent, a.clone(), &["A", "B"]).await, "{ctx}");
    assert_eq!(
        raw.get(kind, &key(0)).await.unwrap(),
        Some(a.clone()),
        "{ctx}"
    );
    assert!(
        !insert(1, &parent, json!({"status": "B"}), &["A"]).await,
        "{ctx}"
    );
    assert_eq!(raw.get(kind, &key(1)).await.unwrap(), None, "{ctx}");
    assert!(
        insert(1, &parent, json!({"status": "B"}), &["X", "Y"]).await,
        "{ctx}"
    );
    assert!(
        !insert(1, &parent, json!({"status": "C"}), &["X"]).await,
        "{ctx}: key exists"
    );
    assert_eq!(
        raw.get(kind, &key(1)).await.unwrap().unwrap()["status"],
        "B"
    );
    // Another parent's documents do not block; numbers, nulls and other fields never do.
    assert!(
        insert(2, &other, json!({"status": "Q"}), &["A", "B"]).await,
        "{ctx}"
    );
    raw.put(
        kind,
        &key(3),
        &parent,
        &json!({"status": 7, "other": "Z", "x": null}),
    )
    .await
    .unwrap();
    raw.put(kind, &key(4), &parent, &json!(["Z"]))
        .await
        .unwrap();
    assert!(
        insert(5, &parent, json!({"status": "Z"}), &["7", "Z"]).await,
        "{ctx}"
    );
    assert!(!insert(6, &parent, json!({}), &["Z"]).await, "{ctx}");
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [key(0), key(1), key(3), key(4), key(5)]);
    assert_eq!(
        raw.delete_children(kind, &parent).await.unwrap(),
        5,
        "{ctx}"
    );
    assert_eq!(raw.delete_children(kind, &other).await.unwrap(), 1, "{ctx}");
    // Stored untouched by the check (no re-encoding).
    assert!(insert(0, &parent, a.clone(), &["Z"]).await, "{ctx}");
    assert!(!insert(7, &parent, json!({}), &["A"]).await, "{ctx}");
    assert_eq!(raw.get(kind, &key(0)).await.unwrap(), Some(a), "{ctx}");
    assert!(raw.delete(kind, &key(0)).await.unwrap(), "{ctx}");
}

async fn raw_delete_guarded(store: &Store, kind: Kind, run: &str) {
    let raw = store.raw();
    let ctx = kind.name();
    let parent = format!("{run}-{ctx}-dp");
    let (k, kept) = (format!("{run}-{ctx}-d0"), format!("{run}-{ctx}-d1"));
    let guard = ("holder", &["me", "you"][..]);
    assert!(!raw.delete_guarded(kind, &k, guard).await.unwrap(), "{ctx}");
    raw.put(kind, &k, &parent, &json!({"holder": "them"}))
        .await
        .unwrap();
    raw.put(kind, &kept, &parent, &json!({"holder": 1}))
        .await
        .unwrap();
    assert!(!raw.delete_guarded(kind, &k, guard).await.unwrap(), "{ctx}");
    assert!(!raw
        .delete_guarded(kind, &kept, ("holder", &["1"]))
        .await
        .unwrap());
    assert_eq!(raw.count(kind, Some(&parent)).await.unwrap(), 2, "{ctx}");
    raw.put(kind, &k, &parent, &json!({"holder": "you", "empty": []}))
        .await
        .unwrap();
    assert!(raw.delete_guarded(kind, &k, guard).await.unwrap(), "{ctx}");
    assert_eq!(raw.get(kind, &k).await.unwrap(), None, "{ctx}");
    let listing = raw.list(kind, Some(&parent), Page::all()).await.unwrap();
    assert_eq!(keys(&listing), [&kept], "{ctx}: the indexes follow");
    assert!(!raw.delete_guarded(kind, &k, guard).await.unwrap(), "{ctx}");
    assert_eq!(
        raw.delete_children(kind, &parent).await.unwrap(),
        1,
        "{ctx}"
    );
}

/// 20 tasks increment one (absent) document through `update`: none is lost.
async fn concurrent_updates(store: &Store, kind: Kind, run: &str) {
    let (key, parent) = (format!("{run}-{}-race", kind.name()), format!("{run}-race"));
    let written = race(|_| {
        let (store, key, parent) = (store.clone(), key.clone(), parent.clone());
        async move {
            store
                .raw()
                .update(kind, &key, &parent, &increment)
                .await
                .unwrap()
        }
    })
    .await;
    let mut seen: Vec<i64> = written
        .iter()
        .map(|u| match u {
            Update::Written(doc) => doc["n"].as_i64().unwrap(),
            Update::Unchanged(_) => panic!("{}: an increment was not written", kind.name()),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "{}", kind.name());
    assert_eq!(
        store.raw().get(kind, &key).await.unwrap(),
        Some(json!({"n": 20}))
    );
    assert_eq!(store.raw().count(kind, Some(&parent)).await.unwrap(), 1);
    assert!(store.raw().delete(kind, &key).await.unwrap());
}

/// 20 tasks insert blocking siblings under one parent: exactly one may win.
async fn concurrent_sibling_inserts(store: &Store, kind: Kind, run: &str) {
    let parent = format!("{run}-{}-siblings", kind.name());
    let inserted = race(|i| {
        let (store, parent) = (store.clone(), parent.clone());
        let key = format!("{parent}-{i}");
        async move {
            let raw = store.raw();
            let doc = json!({"status": "UP", "i": i});
            raw.insert_unless_sibling(kind, &key, &parent, &doc, "status", &["UP"])
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(
        inserted.iter().filter(|i| **i).count(),
        1,
        "{}",
        kind.name()
    );
    assert_eq!(store.raw().count(kind, Some(&parent)).await.unwrap(), 1);
    assert_eq!(store.raw().delete_children(kind, &parent).await.unwrap(), 1);
}

async fn counters(store: &Store, run: &str) {
    let name = format!("{run}-hits");
    assert_eq!(store.counters(&name).await.unwrap(), Map::new());
    assert_eq!(store.increment_counter(&name, "a", 1).await.unwrap(), 1);
    assert_eq!(store.increment_counter(&name, "a", 5).await.unwrap(), 6);
    assert_eq!(store.increment_counter(&name, "b", -2).await.unwrap(), -2);
    assert_eq!(store.increment_counter(&name, "a", 0).await.unwrap(), 6);
    assert_eq!(
        store.counters(&name).await.unwrap(),
        fields(json!({"a": 6, "b": -2}))
    );

    let raced = format!("{run}-raced");
    let mut values = race(|_| {
        let (store, raced) = (store.clone(), raced.clone());
        async move { store.increment_counter(&raced, "n", 1).await.unwrap() }
    })
    .await;
    values.sort_unstable();
    assert_eq!(values, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        store.counters(&raced).await.unwrap(),
        fields(json!({"n": 20}))
    );

    // Not an integer, or overflowing: an error, and nothing changes.
    let odd = format!("{run}-odd");
    let key = format!("counter:{odd}");
    store
        .raw()
        .put(
            Kind::Meta,
            &key,
            "counters",
            &json!({"s": "x", "m": i64::MAX}),
        )
        .await
        .unwrap();
    for (field, by) in [("s", 1), ("m", 1)] {
        let outcome = store.increment_counter(&odd, field, by).await;
        assert!(
            matches!(outcome, Err(StoreError::Corrupt { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(
        store.increment_counter(&odd, "m", -1).await.unwrap(),
        i64::MAX - 1
    );
    for key in [format!("counter:{name}"), format!("counter:{raced}"), key] {
        assert!(store.raw().delete(Kind::Meta, &key).await.unwrap());
    }
}

async fn viable_workers(store: &Store, run: &str) {
    let owner = actor(&run.to_ascii_uppercase());
    let db_id = owner.db_id();
    // A failed worker does not block.
    let mut failed = Worker::requested(&owner, WorkerId::generate(), now());
    failed.status = WorkerStatus::Error;
    assert!(store.insert_worker_unless_viable(&failed).await.unwrap());

    let candidates: Vec<Worker> = (0..20)
        .map(|_| Worker::requested(&owner, WorkerId::generate(), now()))
        .collect();
    let inserted = race(|i| {
        let (store, worker) = (store.clone(), candidates[i].clone());
        async move { store.insert_worker_unless_viable(&worker).await.unwrap() }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|i| inserted[*i]).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = &candidates[winners[0]];
    let listed: Vec<WorkerId> = store
        .workers_of(&db_id)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec![failed.id.clone(), winner.id.clone()]);
    assert_eq!(
        store.worker(&db_id, &winner.id).await.unwrap().as_ref(),
        Some(winner)
    );

    // Every viable status blocks; once the winner is shutting down, a new worker may start.
    let next = Worker::requested(&owner, WorkerId::generate(), now());
    assert!(!store.insert_worker_unless_viable(&next).await.unwrap());
    let shutting = store
        .transition_worker(&db_id, &winner.id, WorkerStatus::ShuttingDown, Map::new())
        .await
        .unwrap();
    assert_eq!(shutting, Transition::Applied);
    assert!(store.insert_worker_unless_viable(&next).await.unwrap());
    assert!(
        !store.insert_worker_unless_viable(&next).await.unwrap(),
        "it exists"
    );
    let mut again = Worker::requested(&owner, WorkerId::generate(), now());
    again.status = WorkerStatus::Error;
    assert!(
        !store.insert_worker_unless_viable(&again).await.unwrap(),
        "next is viable"
    );
    assert_eq!(store.workers_of(&db_id).await.unwrap().len(), 3);
    for id in [&failed.id, &winner.id, &next.id] {
        assert!(store.delete_worker(&db_id, id).await.unwrap());
    }
}

async fn locks(store: &Store, run: &str) {
    // Two holders race for a free lock, ten times: exactly one wins each time.
    for round in 0..10 {
        let name = format!("{run}-pair{round}");
        let (first, second) =
            tokio::join!(store.try_lock(&name, "h1"), store.try_lock(&name, "h2"));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(first ^ second, "round {round}: {first} {second}");
        let winner = if first { "h1" } else { "h2" };
        assert_eq!(
            store.lock_holder(&name).await.unwrap().as_deref(),
            Some(winner)
        );
        assert!(store.unlock(&name, winner).await.unwrap());
    }
    let name = format!("{run}-lock");
    let won = race(|i| {
        let (store, name) = (store.clone(), name.clone());
        async move { store.try_lock(&name, &format!("holder{i}")).await.unwrap() }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|i| won[*i]).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let holder = format!("holder{}", winners[0]);
    assert_eq!(
        store.lock_holder(&name).await.unwrap(),
        Some(holder.clone())
    );
    let doc = store
        .raw()
        .get(Kind::Meta, &format!("lock:{name}"))
        .await
        .unwrap()
        .unwrap();
    let since = doc["since"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(since).is_ok(),
        "{since}"
    );

    // Re-entrant for the holder (keeping `since`), refused to others.
    assert!(store.try_lock(&name, &holder).await.unwrap());
    assert!(!store.try_lock(&name, "intruder").await.unwrap());
    let again = store
        .raw()
        .get(Kind::Meta, &format!("lock:{name}"))
        .await
        .unwrap();
    assert_eq!(again.unwrap()["since"], since);

    // Only the holder unlocks; afterwards the lock is gone and free.
    assert!(!store.unlock(&name, "intruder").await.unwrap());
    assert_eq!(
        store.lock_holder(&name).await.unwrap(),
        Some(holder.clone())
    );
    assert!(store.unlock(&name, &holder).await.unwrap());
    assert!(!store.unlock(&name, &holder).await.unwrap());
    assert_eq!(store.lock_holder(&name).await.unwrap(), None);
    assert_eq!(
        store
            .raw()
            .get(Kind::Meta, &format!("lock:{name}"))
            .await
            .unwrap(),
        None
    );

    // Stealing: only from the current holder; nothing to steal from a free lock.
    assert!(!store.steal_lock(&name, "a", "b").await.unwrap());
    assert_eq!(store.lock_holder(&name).await.unwrap(), None);
    assert!(store.try_lock(&name, "a").await.unwrap());
    assert!(!store.steal_lock(&name, "c", "b").await.unwrap());
    assert!(store.steal_lock(&name, "a", "b").await.unwrap());
    assert_eq!(
        store.lock_holder(&name).await.unwrap().as_deref(),
        Some("b")
    );
    assert!(!store.try_lock(&name, "a").await.unwrap());
    assert!(!store.unlock(&name, "a").await.unwrap());
    assert!(store.unlock(&name, "b").await.unwrap());
    assert!(store.try_lock(&name, "a").await.unwrap());
    assert!(store.unlock(&name, "a").await.unwrap());
}

/// The embedded `update` hands documents between the blocking pool and the caller's task: it
/// must work on a single-threaded runtime too.
#[tokio::test]
async fn embedded_update_on_current_thread() {
    let dir = temp_dir();
    let store = Store::open_embedded(&dir).unwrap();
    assert_eq!(store.increment_counter("single", "n", 2).await.unwrap(), 2);
    assert!(store.try_lock("single", "me").await.unwrap());
    assert!(!store.try_lock("single", "you").await.unwrap());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn leases(store: &Store, run: &str) {
    use std::time::Duration;
    let name = format!("{run}-lease");
    let long = Duration::from_secs(60);
    // Twenty processes race for a free lease: one gets it.
    let won = race(|i| {
        let (store, name) = (store.clone(), name.clone());
        async move { store.lease(&name, &format!("p{i}"), long).await.unwrap() }
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|i| won[*i]).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let holder = format!("p{}", winners[0]);
    // The holder renews it; the others are refused while it is fresh.
    assert!(store.lease(&name, &holder, long).await.unwrap());
    assert!(!store.lease(&name, "other", long).await.unwrap());
    assert_eq!(
        store.lock_holder(&name).await.unwrap(),
        Some(holder.clone())
    );
    // A holder that stopped renewing loses it once the TTL has passed.
    assert!(store.lease(&name, "other", Duration::ZERO).await.unwrap());
    assert_eq!(
        store.lock_holder(&name).await.unwrap().as_deref(),
        Some("other")
    );
    assert!(!store.lease(&name, &holder, long).await.unwrap());
}

/// Reads racing with writes of the same key (actors and permissions are cached in memory by the
/// embedded backend): each writer reads its own write back, and the last read sees every write.
async fn reads_follow_writes(store: &Store, run: &str) {
    for kind in [Kind::Actors, Kind::Permissions] {
        let key = format!("{run}-{}-raced", kind.name());
        let seen = race(|_| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                let raw = store.raw();
                let mut own = 0;
                for _ in 0..5 {
                    let _ = raw.get(kind, &key).await.unwrap();
                    let written = match raw.update(kind, &key, "p", &increment).await.unwrap() {
                        Update::Written(doc) => doc["n"].as_i64().unwrap(),
                        other => panic!("update refused: {other:?}"),
                    };
                    let read = raw.get(kind, &key).await.unwrap().unwrap()["n"]
                        .as_i64()
                        .unwrap();
                    assert!(
                        read >= written,
                        "{kind:?}: wrote {written}, then read {read}"
                    );
                    own += 1;
                }
                own
            }
        })
        .await;
        assert_eq!(seen.iter().sum::<i64>(), 100);
        let last = store.raw().get(kind, &key).await.unwrap().unwrap();
        assert_eq!(last["n"], 100, "{kind:?}");
        assert!(store.raw().delete(kind, &key).await.unwrap());
        assert_eq!(store.raw().get(kind, &key).await.unwrap(), None, "{kind:?}");
    }
}
