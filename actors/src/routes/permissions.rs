//! `/actors/{actor_id}/permissions` and `/actors/aliases/{alias}/permissions` (spec §3.4, §4.16):
//! show and set the `{user: LEVEL}` map of an actor or an alias. Reading needs READ on the object,
//! changing needs UPDATE (administrators bypass both). Levels are never deleted, only set (NONE
//! included), as in Abaco. Config permissions live with the config routes.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::Value;

use abaco_core::PermissionLevel;

use super::aliases::{load_alias, NO_ACCESS};
use super::load_actor;
use crate::auth;
use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::{ApiError, Reply};
use crate::Api;

const PREFIX: &str = "Invalid permissions description";
const USER: Param = Param {
    name: "user",
    help: "User owning the permission.",
};
const LEVEL: Param = Param {
    name: "level",
    help: "Level of the permission: ('NONE', 'READ', 'EXECUTE', 'UPDATE')",
};

pub async fn get_actor_permissions(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    show(&api, actor.db_id().as_str(), &format!("Actor {actor_id}")).await
}

pub async fn set_actor_permission(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    set(&api, actor.db_id().as_str(), &params).await
}

pub async fn get_alias_permissions(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
) -> Result<Reply, ApiError> {
    let record = load_alias(&api, &who, &alias, PermissionLevel::Read, NO_ACCESS).await?;
    show(&api, &record.alias_id, &format!("Alias {alias}")).await
}

pub async fn set_alias_permission(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let record = load_alias(&api, &who, &alias, PermissionLevel::Update, NO_ACCESS).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    set(&api, &record.alias_id, &params).await
}

/// The permission map of `object`; `what` names it when the map is missing.
async fn show(api: &Api, object: &str, what: &str) -> Result<Reply, ApiError> {
    let perms = auth::permissions(api, object)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{what} does not exist")))?;
    Ok(Reply::ok(
        "Permissions retrieved successfully.",
        Value::Object(perms),
    ))
}

/// Sets `user`'s level on `object` from the request parameters; answers the whole map.
pub(super) async fn set(api: &Api, object: &str, params: &Params) -> Result<Reply, ApiError> {
    let user = params.required_string(&USER, PREFIX)?;
    let level_text = params.required_string(&LEVEL, PREFIX)?;
    let level = PermissionLevel::parse(&level_text).ok_or_else(|| {
        // The run of spaces is Abaco's (a backslash line continuation in its source).
        ApiError::bad(format!(
            "Invalid permission level: {level_text}.             The valid values are ('NONE', 'READ', 'EXECUTE', 'UPDATE')"
        ))
    })?;
    let perms = auth::grant(api, object, &user, level).await?;
    tracing::info!(object, user = %user, level = %level, "permission set");
    Ok(Reply::ok(
        "Permission added successfully.",
        Value::Object(perms),
    ))
}
