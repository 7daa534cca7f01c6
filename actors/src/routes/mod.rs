//! The route table (spec §4.0) and the lookups every actor-scoped route shares.

mod actor_params;
mod actors;
mod admin;
mod aliases;
mod configs;
mod executions;
mod messages;
mod nonces;
mod oauth;
mod permissions;
mod search;
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
        .route("/oauth2/token", axum::routing::post(oauth::token))
        .route("/oauth2/clients", axum::routing::post(oauth::create_client))
        .route(
            "/oauth2/clients/{client_id}",
            axum::routing::delete(oauth::delete_client),
        )
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
            "/actors/aliases",
            get(aliases::list_aliases).post(aliases::create_alias),
        )
        .route(
            "/actors/aliases/{alias}",
            get(aliases::get_alias)
                .put(aliases::update_alias)
                .delete(aliases::delete_alias),
        )
        .route(
            "/actors/aliases/{alias}/nonces",
            get(nonces::list_alias_nonces).post(nonces::create_alias_nonce),
        )
        .route(
            "/actors/aliases/{alias}/nonces/{nonce_id}",
            get(nonces::get_alias_nonce).delete(nonces::delete_alias_nonce),
        )
        .route(
            "/actors/aliases/{alias}/permissions",
            get(permissions::get_alias_permissions).post(permissions::set_alias_permission),
        )
        .route(
            "/actors/{actor_id}/nonces",
            get(nonces::list_actor_nonces).post(nonces::create_actor_nonce),
        )
        .route(
            "/actors/{actor_id}/nonces/{nonce_id}",
            get(nonces::get_actor_nonce).delete(nonces::delete_actor_nonce),
        )
        .route(
            "/actors/{actor_id}/permissions",
            get(permissions::get_actor_permissions).post(permissions::set_actor_permission),
        )
        .route(
            "/actors/configs",
            get(configs::list_configs).post(configs::create_config),
        )
        .route(
            "/actors/configs/{name}",
            get(configs::get_config)
                .put(configs::update_config)
                .delete(configs::delete_config),
        )
        .route(
            "/actors/configs/{name}/permissions",
            get(configs::get_config_permissions).post(configs::add_config_permission),
        )
        .route("/actors/admin", get(admin::list_actors))
        .route("/actors/admin/workers", get(admin::list_workers))
        .route("/actors/admin/executions", get(admin::list_executions))
        .route("/actors/utilization", get(admin::utilization))
        .route("/actors/search/{search_type}", get(search::search))
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
    // Two independent reads (Redis and PostgreSQL when distributed): one round trip, not two.
    let (actor, level) = tokio::join!(
        api.control.store.actor(&db_id),
        auth::level_of(api, who, db_id.as_str()),
    );
    let actor = actor?
        .ok_or_else(|| ApiError::not_found(format!("No actor found with id: {identifier}.")))?;
    if level? < needed {
        return Err(ApiError::bad(
            "Not authorized -- you do not have access to this actor.",
        ));
    }
    Ok(actor)
}
