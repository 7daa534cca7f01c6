//! `/actors/admin*` (spec §4.22) — every actor, worker and execution of every tenant, for
//! administrators only — and `GET /actors/utilization` (spec §3.12), open to any caller. All
//! figures are computed from the store and the channels at request time.
//!
//! Abaco's `totalActors`/`total_actors_all` summed a daily "actors ever registered" counter;
//! nothing records registrations here, so they count the actors known now (plus, for the
//! executions summary, actors that only left executions behind).

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use serde_json::{json, Map, Value};

use abaco_core::{DbId, Execution, Queue, WorkerStatus};
use abaco_store::{Kind, Page};

use super::search::{display_times, to_doc, wire_key};
use crate::case;
use crate::identity::Identity;
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

const ADMIN_REQUIRED: &str = "Abaco Admin role required.";

pub async fn list_actors(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    require_admin(&who)?;
    let store = &api.control.store;
    let mut result = Vec::new();
    for actor in store.all_actors().await? {
        let db_id = actor.db_id();
        let Value::Object(mut m) = to_doc(&actor)? else {
            continue;
        };
        m.insert("db_id".into(), json!(db_id.as_str()));
        display_times(&mut m);
        let mut workers = Vec::new();
        for worker in store.workers_of(&db_id).await? {
            if let Value::Object(mut w) = to_doc(&worker)? {
                display_times(&mut w);
                workers.push(Value::Object(w));
            }
        }
        let executions = store.executions_of(&db_id, Page::all()).await?;
        let messages = api
            .control
            .channels
            .len(&Queue::Mailbox(db_id.clone()))
            .await?;
        m.insert("workers".into(), Value::Array(workers));
        m.insert("messages".into(), json!(messages));
        m.insert("executions".into(), json!(executions.len()));
        m.insert(
            "runtime".into(),
            json!(executions.iter().map(|e| e.runtime).sum::<i64>()),
        );
        result.push(case::dict(api.case, m));
    }
    Ok(Reply::ok(
        "Actors retrieved successfully.",
        Value::Array(result),
    ))
}

pub async fn list_workers(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    require_admin(&who)?;
    let store = &api.control.store;
    let workers = store.all_workers().await?;
    let with_workers: HashSet<&DbId> = workers.iter().map(|w| &w.actor_id).collect();
    let actors_no_workers = store
        .all_actors()
        .await?
        .iter()
        .filter(|a| !with_workers.contains(&a.db_id()))
        .count();
    let count = |status: WorkerStatus| workers.iter().filter(|w| w.status == status).count();
    let mut summary = Map::new();
    summary.insert("total_workers".into(), json!(workers.len()));
    summary.insert("ready_workers".into(), json!(count(WorkerStatus::Ready)));
    summary.insert(
        "requested_workers".into(),
        json!(count(WorkerStatus::Requested)),
    );
    summary.insert("error_workers".into(), json!(count(WorkerStatus::Error)));
    summary.insert("busy_workers".into(), json!(count(WorkerStatus::Busy)));
    summary.insert("actors_no_workers".into(), json!(actors_no_workers));
    let items: Vec<Value> = workers
        .iter()
        .map(|w| {
            let mut shown = wire::worker(api.case, w);
            if let Value::Object(m) = &mut shown {
                m.insert(
                    wire_key(api.case, "actor_id"),
                    json!(w.actor_id.actor_id().as_str()),
                );
                m.insert(wire_key(api.case, "actor_dbid"), json!(w.actor_id.as_str()));
            }
            shown
        })
        .collect();
    Ok(Reply::ok(
        "Workers retrieved successfully.",
        json!({"summary": case::dict(api.case, summary), "workers": items}),
    ))
}

/// Execution totals of one actor.
#[derive(Default)]
struct Totals {
    executions: u64,
    runtime: i64,
    cpu: i64,
    io: i64,
}

impl Totals {
    fn add(&mut self, e: &Execution) {
        self.executions += 1;
        self.runtime = self.runtime.saturating_add(e.runtime);
        self.cpu = self.cpu.saturating_add(e.cpu);
        self.io = self.io.saturating_add(e.io);
    }

    fn merge(&mut self, other: &Totals) {
        self.executions += other.executions;
        self.runtime = self.runtime.saturating_add(other.runtime);
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.io = self.io.saturating_add(other.io);
    }
}

pub async fn list_executions(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    require_admin(&who)?;
    let store = &api.control.store;
    let actors = store.all_actors().await?;
    // Every execution record, including those of actors that no longer exist.
    let mut per_actor: BTreeMap<String, Totals> = BTreeMap::new();
    for (key, doc) in store
        .raw()
        .list(Kind::Executions, None, Page::all())
        .await?
    {
        match serde_json::from_value::<Execution>(doc) {
            Ok(e) => per_actor.entry(e.actor_id.0.clone()).or_default().add(&e),
            Err(err) => {
                tracing::warn!(execution = %key, cause = %err, "skipping unreadable execution")
            }
        }
    }
    let existing: HashSet<String> = actors.iter().map(|a| a.db_id().0).collect();
    let mut all = Totals::default();
    let mut live = Totals::default();
    for (db_id, totals) in &per_actor {
        all.merge(totals);
        if existing.contains(db_id) {
            live.merge(totals);
        }
    }
    let known: HashSet<&String> = existing.iter().chain(per_actor.keys()).collect();
    let live_with_executions = per_actor.keys().filter(|k| existing.contains(*k)).count();
    let mut summary = Map::new();
    let mut put = |k: &str, v: Value| {
        summary.insert(k.to_string(), v);
    };
    put("total_actors_all", json!(known.len()));
    put("total_actors_all_with_executions", json!(per_actor.len()));
    put("total_executions_all", json!(all.executions));
    put("total_execution_runtime_all", json!(all.runtime));
    put("total_execution_cpu_all", json!(all.cpu));
    put("total_execution_io_all", json!(all.io));
    put("total_actors_existing", json!(existing.len()));
    put(
        "total_actors_existing_with_executions",
        json!(live_with_executions),
    );
    put("total_executions_existing", json!(live.executions));
    put("total_execution_runtime_existing", json!(live.runtime));
    put("total_execution_cpu_existing", json!(live.cpu));
    put("total_execution_io_existing", json!(live.io));
    let empty = Totals::default();
    let items: Vec<Value> = actors
        .iter()
        .map(|a| {
            let t = per_actor.get(&a.db_id().0).unwrap_or(&empty);
            let mut m = Map::new();
            m.insert("actor_id".into(), json!(a.id.as_str()));
            m.insert("tenant".into(), json!(a.tenant.as_str()));
            m.insert("owner".into(), json!(a.owner));
            m.insert("image".into(), json!(a.image));
            m.insert("total_executions".into(), json!(t.executions));
            m.insert("total_execution_cpu".into(), json!(t.cpu));
            m.insert("total_execution_io".into(), json!(t.io));
            m.insert("total_execution_runtime".into(), json!(t.runtime));
            case::dict(api.case, m)
        })
        .collect();
    Ok(Reply::ok(
        "Executions retrieved successfully.",
        json!({"summary": case::dict(api.case, summary), "actors": items}),
    ))
}

/// `{currentActors, totalActors, workers, commandQueue}`, always camel case (spec §3.12).
pub async fn utilization(State(api): State<Api>, _who: Identity) -> Result<Reply, ApiError> {
    let store = api.control.store.raw();
    let actors = store.count(Kind::Actors, None).await?;
    let workers = store.count(Kind::Workers, None).await?;
    let queue = api
        .config
        .spawner
        .host_queues
        .first()
        .cloned()
        .unwrap_or_else(|| "default".into());
    let command_queue = api.control.channels.len(&Queue::Command(queue)).await?;
    Ok(Reply::ok(
        "Abaco utilization returned successfully.",
        json!({
            "currentActors": actors,
            "totalActors": actors,
            "workers": workers,
            "commandQueue": command_queue,
        }),
    ))
}

fn require_admin(who: &Identity) -> Result<(), ApiError> {
    if who.is_admin() && who.nonce_level.is_none() {
        Ok(())
    } else {
        Err(ApiError::bad(ADMIN_REQUIRED))
    }
}
