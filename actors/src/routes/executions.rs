//! `/actors/{actor_id}/executions...`: the summary, one execution, its logs and results, and
//! force-quitting a running one.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use abaco_core::{Actor, DbId, Execution, ExecutionId, ExecutionStatus, Queue, WorkerControl};
use abaco_store::Page;

use abaco_core::PermissionLevel;

use super::load_actor;
use crate::case;
use crate::identity::Identity;
use crate::params::{non_negative, parse_urlencoded};
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

/// Abaco's summary: every execution in arrival order with the actor's totals. `limit` and
/// `offset` (or `skip`) page the `executions` list; the totals always cover every execution and
/// come from counters kept as executions finish, so a page costs the same at any size.
pub async fn list_executions(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Reply, ApiError> {
    let page = page_of(query.as_deref())?;
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let db_id = actor.db_id();
    let store = &api.control.store;
    let (executions, total, totals) = tokio::try_join!(
        store.executions_of(&db_id, page),
        store.count_executions(&db_id),
        store.execution_totals(&db_id),
    )?;
    let mut m = Map::new();
    m.insert("actor_id".into(), json!(actor.id.as_str()));
    m.insert("api_server".into(), json!(actor.api_server));
    m.insert("owner".into(), json!(actor.owner));
    m.insert("total_executions".into(), json!(total));
    m.insert("total_cpu".into(), json!(totals.cpu));
    m.insert("total_io".into(), json!(totals.io));
    m.insert("total_runtime".into(), json!(totals.runtime));
    m.insert(
        "executions".into(),
        Value::Array(
            executions
                .iter()
                .map(|e| wire::execution_summary_item(api.case, e))
                .collect(),
        ),
    );
    m.insert("_links".into(), wire::executions_links(&actor));
    Ok(Reply::ok(
        "Actor executions retrieved successfully.",
        case::model(api.case, m),
    ))
}

/// The window of `GET .../executions`: everything unless `limit`/`offset`/`skip` say otherwise.
fn page_of(query: Option<&str>) -> Result<Page, ApiError> {
    let mut offset = 0;
    let mut limit = None;
    for (key, value) in parse_urlencoded(query.unwrap_or("")) {
        match key.as_str() {
            "offset" | "skip" => offset = non_negative(&key, &value).map_err(ApiError::bad)?,
            "limit" => limit = Some(non_negative(&key, &value).map_err(ApiError::bad)?),
            _ => {}
        }
    }
    Ok(Page {
        offset: offset as u64,
        limit: limit.map(|l| l as u64),
    })
}

async fn load_execution(
    api: &Api,
    actor: &Actor,
    actor_id: &str,
    execution_id: &str,
) -> Result<Execution, ApiError> {
    api.control
        .store
        .execution(&actor.db_id(), &ExecutionId::from(execution_id))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "No executions found with actor id of {actor_id} and execution id of {execution_id}."
            ))
        })
}

pub async fn get_execution(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, execution_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let execution = load_execution(&api, &actor, &actor_id, &execution_id).await?;
    Ok(Reply::ok(
        "Actor execution retrieved successfully.",
        wire::execution(api.case, &execution),
    ))
}

pub async fn get_logs(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, execution_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let execution = load_execution(&api, &actor, &actor_id, &execution_id).await?;
    let logs = api
        .control
        .store
        .logs(&execution.id)
        .await?
        .unwrap_or_default();
    Ok(Reply::ok(
        "Logs retrieved successfully.",
        json!({"logs": logs, "_links": wire::logs_links(&actor, execution.id.as_str())}),
    ))
}

/// Pops one result the execution sent over its results socket; an empty body when none is left.
pub async fn get_results(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, execution_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    let execution = load_execution(&api, &actor, &actor_id, &execution_id).await?;
    let queue = Queue::Results(actor.db_id(), execution.id);
    let payload = match api
        .control
        .channels
        .get(&queue, Duration::from_millis(100))
        .await?
    {
        Some(delivery) => {
            let (payload, delivery) = delivery.into_payload();
            delivery.ack().await?;
            payload
        }
        None => Vec::new(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        payload,
    )
        .into_response())
}

/// Stops the execution's container; the worker finalises the execution and keeps serving.
pub async fn force_quit_execution(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, execution_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let execution = load_execution(&api, &actor, &actor_id, &execution_id).await?;
    if execution.status != ExecutionStatus::Running {
        return Err(ApiError::bad(format!(
            "Cannot force quit an execution not in RUNNING status. Execution was found in status: {}",
            execution.status
        )));
    }
    let worker_id = execution.worker_id.clone().ok_or_else(|| {
        ApiError::Internal(format!("running execution {execution_id} has no worker"))
    })?;
    request_force_quit(&api, &actor.db_id(), &execution.id, &worker_id).await?;
    Ok(Reply::ok(
        format!("Issued force quit command for execution {execution_id}."),
        Value::Null,
    ))
}

async fn request_force_quit(
    api: &Api,
    db_id: &DbId,
    execution_id: &ExecutionId,
    worker_id: &abaco_core::WorkerId,
) -> Result<(), ApiError> {
    api.control
        .channels
        .publish(
            &Queue::WorkerControl(worker_id.clone()),
            &WorkerControl::ForceQuit,
        )
        .await?;
    tracing::info!(actor_id = %db_id, execution_id = %execution_id, worker_id = %worker_id, "force quit requested");
    Ok(())
}
