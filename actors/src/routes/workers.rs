//! `/actors/{actor_id}/workers...`: list, add, show and stop workers.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::Value;

use abaco_control::Start;
use abaco_core::WorkerId;

use abaco_core::PermissionLevel;

use super::load_actor;
use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

const NUM: Param = Param {
    name: "num",
    help: "Number of workers to start (default is 1).",
};

pub async fn list_workers(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let workers = api.control.store.workers_of(&actor.db_id()).await?;
    Ok(Reply::ok(
        "Workers retrieved successfully.",
        Value::Array(workers.iter().map(|w| wire::worker(api.case, w)).collect()),
    ))
}

pub async fn add_workers(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    if !who.is_admin() {
        return Err(ApiError::bad(
            "Not authorized -- only admins are authorized to update workers.",
        ));
    }
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, "Invalid POST")?;
    let num = params
        .int(&NUM, "Invalid POST")?
        .filter(|n| *n > 0)
        .unwrap_or(1);
    if num > 1 && !actor.stateless {
        return Err(ApiError::bad(
            "Invalid POST: stateful actors can only have 1 worker.",
        ));
    }
    let cap = actor
        .max_workers
        .unwrap_or(api.config.spawner.max_workers_per_actor as i64);
    if num > cap {
        return Err(ApiError::bad(format!(
            "Invalid POST: num ({num}) exceeds the actor's maximum of {cap} workers."
        )));
    }
    let current = api
        .control
        .store
        .workers_of(&actor.db_id())
        .await?
        .into_iter()
        .filter(|w| w.status.is_viable())
        .count() as i64;
    if current >= num {
        return Ok(Reply::ok(
            format!("Actor {actor_id} already had {num} worker(s)."),
            Value::Null,
        ));
    }
    for _ in current..num {
        api.control
            .request_worker(&actor, Start::Additional)
            .await?;
    }
    Ok(Reply::ok(
        format!(
            "Scheduled {} new worker(s) to start. Previously, there were {current} workers.",
            num - current
        ),
        Value::Null,
    ))
}

pub async fn get_worker(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, worker_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let worker = api
        .control
        .store
        .worker(&actor.db_id(), &WorkerId::from(worker_id.as_str()))
        .await?
        .ok_or_else(|| ApiError::not_found("Worker not found."))?;
    Ok(Reply::ok(
        "Worker retrieved successfully.",
        wire::worker(api.case, &worker),
    ))
}

pub async fn delete_worker(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, worker_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let worker_id = WorkerId::from(worker_id.as_str());
    if api
        .control
        .store
        .worker(&actor.db_id(), &worker_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("Worker not found."));
    }
    api.control
        .stop_worker(&actor.db_id(), &worker_id, "deleted through the API")
        .await?;
    Ok(Reply::ok("Worker scheduled to be stopped.", Value::Null))
}
