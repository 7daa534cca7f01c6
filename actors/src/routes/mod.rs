//! The route table (spec §4.0) and the lookups every actor-scoped route shares.

mod actor_params;
mod actors;
mod executions;
mod messages;
mod state;
mod workers;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use abaco_core::ids::is_hashid;
use abaco_core::{Actor, ActorId, DbId, PermissionLevel};
use abaco_store::Kind;

use crate::auth;
use crate::identity::Identity;
use crate::reply::ApiError;
use crate::Api;

/// The route table. Message bodies may be as large as `[web] max_content_length`; every other
/// body is limited to `OTHER_BODY_LIMIT`.
pub fn routes(max_message: u64) -> Router<Api> {
    // Binary messages are checked against `max_content_length` by the handler; other bodies
    // get at least the usual limit.
    let message_limit = usize::try_from(max_message.saturating_add(1))
        .unwrap_or(usize::MAX)
        .max(OTHER_BODY_LIMIT);
    Router::new()
        .route("/metrics", get(crate::metrics::get_metrics))
        .route(
            "/actors",
            get(actors::list_actors).post(actors::register_actor),
        )
        .route(
            "/actors/",
            get(actors::list_actors).post(actors::register_actor),
        )
        .route(
            "/actors/{actor_id}",
            get(actors::get_actor)
                .put(actors::update_actor)
                .delete(actors::delete_actor),
        )
        .route(
            "/actors/{actor_id}/state",
            get(state::get_state).post(state::set_state),
        )
        .route(
            "/actors/{actor_id}/messages",
            get(messages::count_messages)
                .post(messages::send_message)
                .delete(messages::purge_messages)
                .layer(DefaultBodyLimit::max(message_limit)),
        )
        .route(
            "/actors/{actor_id}/executions",
            get(executions::list_executions),
        )
        .route(
            "/actors/{actor_id}/executions/{execution_id}",
            get(executions::get_execution).delete(executions::force_quit_execution),
        )
        .route(
            "/actors/{actor_id}/executions/{execution_id}/logs",
            get(executions::get_logs),
        )
        .route(
            "/actors/{actor_id}/executions/{execution_id}/results",
            get(executions::get_results),
        )
        .route(
            "/actors/{actor_id}/workers",
            get(workers::list_workers).post(workers::add_workers),
        )
        .route(
            "/actors/{actor_id}/workers/{worker_id}",
            get(workers::get_worker).delete(workers::delete_worker),
        )
        .layer(DefaultBodyLimit::max(OTHER_BODY_LIMIT))
}

/// Limit of request bodies other than messages (actor descriptions, state, ...).
pub const OTHER_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Resolves an actor id or alias from the URL to the actor's storage key (spec §2.5).
pub async fn resolve_db_id(api: &Api, who: &Identity, identifier: &str) -> Result<DbId, ApiError> {
    if is_hashid(identifier) {
        return Ok(DbId::new(&who.tenant, &ActorId::from(identifier)));
    }
    let alias_key = format!("{}_{identifier}", who.tenant);
    let alias = api
        .control
        .store
        .raw()
        .get(Kind::Aliases, &alias_key)
        .await?;
    match alias
        .as_ref()
        .and_then(|a| a.get("actor_id"))
        .and_then(|v| v.as_str())
    {
        Some(actor_id) => Ok(DbId::new(&who.tenant, &ActorId::from(actor_id))),
        None => Err(ApiError::not_found(format!(
            "Actor with identifier '{identifier}' not found"
        ))),
    }
}

/// The actor named in the URL, if the caller holds `needed` on it; 404 "No actor found with id:
/// {id}." when it does not exist (in the caller's tenant).
pub async fn load_actor(
    api: &Api,
    who: &Identity,
    identifier: &str,
    needed: PermissionLevel,
) -> Result<Actor, ApiError> {
    let db_id = resolve_db_id(api, who, identifier).await?;
    let actor = api
        .control
        .store
        .actor(&db_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No actor found with id: {identifier}.")))?;
    auth::require(
        api,
        who,
        db_id.as_str(),
        needed,
        "Not authorized -- you do not have access to this actor.",
    )
    .await?;
    Ok(actor)
}
