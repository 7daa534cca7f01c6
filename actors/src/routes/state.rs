//! `/actors/{actor_id}/state`: the state of stateful actors.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};

use abaco_core::PermissionLevel;

use super::load_actor;
use crate::identity::Identity;
use crate::params::{content_type, parse_json, JsonError};
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

pub async fn get_state(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    Ok(Reply::ok(
        "Actor state retrieved successfully.",
        json!({"state": actor.state}),
    ))
}

pub async fn set_state(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let mut actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    if actor.stateless {
        return Err(ApiError::not_found("actor is stateless."));
    }
    let invalid =
        || ApiError::bad("Invalid actor state description: state must be JSON serializable.");
    if content_type(&headers) != "application/json" {
        return Err(invalid());
    }
    let state: Value = parse_json(&body).map_err(|e| match e {
        JsonError::TooDeep => ApiError::bad(format!("Invalid actor state description: {e}.")),
        JsonError::Syntax(_) => invalid(),
    })?;
    let falsy = match &state {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if falsy {
        return Err(invalid());
    }
    api.control
        .store
        .set_actor_state(&actor.db_id(), &state)
        .await?;
    actor.state = state;
    Ok(Reply::ok(
        "State updated successfully.",
        wire::actor(api.case, &actor),
    ))
}
