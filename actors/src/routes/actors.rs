//! `/actors` and `/actors/{actor_id}`: register, list, show, update and delete actors.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value};

use abaco_control::Start;
use abaco_core::policy;
use abaco_core::time::now;
use abaco_core::{Actor, ActorId, ActorStatus, DbId, PermissionLevel, Queue, Tenant};
use abaco_store::Kind;

use super::actor_params::{ActorInput, PREFIX};
use super::{load_actor, resolve_db_id};
use crate::auth;
use crate::identity::Identity;
use crate::params::Params;
use crate::reply::{ApiError, Reply};
use crate::{wire, Api};

pub async fn list_actors(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    let actors = api
        .control
        .store
        .actors_of_tenant(who.tenant.as_str())
        .await?;
    // Only actors the caller may read (administrators read everything of their tenant).
    let mut result: Vec<Value> = Vec::with_capacity(actors.len());
    for actor in &actors {
        if auth::level_of(&api, &who, actor.db_id().as_str()).await? >= PermissionLevel::Read {
            result.push(wire::actor(api.case, actor));
        }
    }
    Ok(Reply::ok(
        "Actors retrieved successfully.",
        Value::Array(result),
    ))
}

pub async fn register_actor(
    State(api): State<Api>,
    who: Identity,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    let input = ActorInput::read(&api, &params)?;
    input.check_privileged(&who)?;
    if input.max_workers.is_some() && input.stateless == Some(false) {
        return Err(ApiError::bad(format!(
            "{PREFIX}: stateful actors can only have 1 worker."
        )));
    }
    if let Some(link) = input.link.as_deref().filter(|l| !l.is_empty()) {
        check_link(&api, &who, link).await?;
    }
    let mut actor = new_actor(&api, &who, input);
    apply_policies(&api, &mut actor);
    let db_id = actor.db_id();
    if !api.control.store.insert_actor(&actor).await? {
        return Err(ApiError::Internal(format!(
            "Actor id {} collided with an existing actor; retry the request.",
            actor.id
        )));
    }
    grant_owner(&api, &db_id, &who.user).await?;
    if api.config.workers.init_count > 0 {
        api.control.ensure_one_worker(&actor).await?;
    }
    tracing::info!(actor_id = %db_id, image = %actor.image, "actor registered");
    Ok(Reply::ok(
        "Actor created successfully.",
        wire::actor(api.case, &actor),
    ))
}

pub async fn get_actor(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Read).await?;
    Ok(Reply::ok(
        "Actor retrieved successfully.",
        wire::actor(api.case, &actor),
    ))
}

pub async fn update_actor(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let mut actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    let input = ActorInput::read(&api, &params)?;
    input.check_privileged(&who)?;
    if !actor.stateless && input.stateless == Some(true) {
        return Err(ApiError::bad(format!(
            "{PREFIX}: an actor that was not stateless cannot be updated to be stateless."
        )));
    }
    let stateless = input.stateless.unwrap_or(actor.stateless);
    if !stateless && input.max_workers.is_some() {
        return Err(ApiError::bad(format!(
            "{PREFIX}: stateful actors can only have 1 worker."
        )));
    }
    if let Some(link) = input.link.as_deref().filter(|l| !l.is_empty()) {
        let link_db_id = check_link(&api, &who, link).await?;
        if link_db_id == actor.db_id() {
            return Err(ApiError::bad(
                "Invalid link parameter. An actor cannot link to itself.",
            ));
        }
        if links_back(&api, &who, &link_db_id, &actor.db_id()).await? {
            return Err(ApiError::bad(
                "Error: this update would result in a cycle of linked actors.",
            ));
        }
    }
    let new_revision = input.force || input.image != actor.image;
    let force = input.force;
    apply_update(&mut actor, input);
    apply_policies(&api, &mut actor);
    actor.last_update_time = now();
    if new_revision {
        actor.revision += 1;
        actor.status = ActorStatus::Submitted;
        actor.status_message = String::new();
    }
    api.control.store.put_actor(&actor).await?;
    if who.user != actor.owner {
        auth::grant(
            &api,
            actor.db_id().as_str(),
            &who.user,
            PermissionLevel::Update,
        )
        .await?;
    }
    if new_revision {
        // The new worker replaces the old ones once it is up (`stop_existing`); old workers
        // finish their in-flight execution first.
        api.control
            .request_worker(&actor, Start::Replacing { repull: force })
            .await?;
    }
    tracing::info!(actor_id = %actor.db_id(), revision = actor.revision, "actor updated");
    Ok(Reply::ok(
        "Actor updated successfully.",
        wire::actor(api.case, &actor),
    ))
}

pub async fn delete_actor(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let actor = load_actor(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let db_id = actor.db_id();
    let store = &api.control.store;
    store
        .set_actor_status(&db_id, ActorStatus::ShuttingDown, "Actor is being deleted.")
        .await?;
    let workers = api
        .control
        .stop_workers(&db_id, &[], "actor deleted")
        .await?;
    if let Err(err) = api
        .control
        .channels
        .delete(&Queue::Mailbox(db_id.clone()))
        .await
    {
        // The actor goes regardless; a leftover empty queue is harmless.
        tracing::warn!(actor_id = %db_id, cause = %err, "could not delete the mailbox queue");
    }
    store.delete_logs_of(&db_id).await?;
    store.delete_executions_of(&db_id).await?;
    store
        .raw()
        .delete(Kind::Permissions, db_id.as_str())
        .await?;
    // Nonces are one document each under the actor: none may outlive it. Aliases of the actor
    // go too (with their own nonces), so a deleted actor leaves nothing resolving to it.
    store
        .raw()
        .delete_children(Kind::Nonces, db_id.as_str())
        .await?;
    super::aliases::delete_aliases_of(&api, &actor).await?;
    store.delete_actor(&db_id).await?;
    tracing::info!(actor_id = %db_id, workers, "actor deleted");
    let message = if workers == 0 {
        "Actor deleted successfully."
    } else {
        "Actor deleted successfully, though Abaco is still cleaning up some of the actor's resources."
    };
    Ok(Reply::ok(message, Value::Null))
}

/// Whether following links from `start` leads back to `target` (spec §7.8 cycle detection).
async fn links_back(
    api: &Api,
    who: &Identity,
    start: &DbId,
    target: &DbId,
) -> Result<bool, ApiError> {
    let actors = api
        .control
        .store
        .actors_of_tenant(who.tenant.as_str())
        .await?;
    let mut current = start.clone();
    let mut seen = std::collections::HashSet::new();
    while seen.insert(current.clone()) {
        let Some(actor) = actors.iter().find(|a| a.db_id() == current) else {
            return Ok(false);
        };
        if actor.link.is_empty() {
            return Ok(false);
        }
        let Some(next) =
            abaco_control::resolve_actor(&api.control.store, &who.tenant, &actor.link).await
        else {
            return Ok(false);
        };
        if next == *target {
            return Ok(true);
        }
        current = next;
    }
    Ok(false)
}

/// The linked actor must exist in the caller's tenant.
async fn check_link(api: &Api, who: &Identity, link: &str) -> Result<DbId, ApiError> {
    let unresolvable = || {
        ApiError::bad(
            "Invalid link parameter; unable to retrieve linked actor data. The link must be a valid actor id or alias for which you have EXECUTE permission. ",
        )
    };
    let db_id = resolve_db_id(api, who, link)
        .await
        .map_err(|_| unresolvable())?;
    match api.control.store.actor(&db_id).await? {
        Some(_) => Ok(db_id),
        None => Err(unresolvable()),
    }
}

fn new_actor(api: &Api, who: &Identity, input: ActorInput) -> Actor {
    let t = now();
    let token_default = api
        .config
        .tenant_value("web", who.tenant.as_str(), "default_token")
        .unwrap_or_else(|| api.config.web.default_token.clone());
    let mut actor = Actor {
        id: ActorId::generate(),
        tenant: Tenant(who.tenant.0.clone()),
        owner: who.user.clone(),
        api_server: who.api_server.clone(),
        image: input.image,
        name: input.name,
        description: input.description.unwrap_or_default(),
        stateless: input.stateless.unwrap_or(true),
        kind: input.kind.unwrap_or_else(|| "none".into()),
        link: input.link.unwrap_or_default(),
        webhook: input.webhook.unwrap_or_default(),
        hints: input.hints.unwrap_or_default(),
        token: match input.token {
            Some(b) => Value::Bool(b),
            None => Value::String(token_default),
        },
        privileged: input.privileged.unwrap_or(false),
        max_workers: input.max_workers,
        mem_limit: input.mem_limit,
        max_cpus: input.max_cpus,
        use_container_uid: input.use_container_uid.unwrap_or(false),
        default_environment: input.default_environment.unwrap_or_default(),
        status: ActorStatus::Submitted,
        status_message: String::new(),
        state: input.state.unwrap_or_else(|| Value::Object(Map::new())),
        create_time: t,
        last_update_time: t,
        mounts: Vec::new(),
        revision: 1,
        tasdir: None,
        uid: None,
        gid: None,
        queue: input
            .queue
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| default_queue(api)),
        log_ex: input.log_ex,
        cron_on: false,
        cron_schedule: None,
        cron_next_ex: None,
    };
    apply_cron(
        &mut actor,
        input.cron_schedule,
        input.cron_on.or(Some(true)),
    );
    actor
}

/// Mounts and uid/gid from the configuration (spec §7.11, §7.12), recomputed on every update.
fn apply_policies(api: &Api, actor: &mut Actor) {
    if actor.use_container_uid {
        (actor.uid, actor.gid, actor.tasdir) = (None, None, None);
    } else {
        (actor.uid, actor.gid, actor.tasdir) = policy::uid_gid(&api.config, actor.tenant.as_str());
    }
    let (mounts, problems) = policy::mounts(
        &api.config,
        actor.tenant.as_str(),
        &actor.owner,
        actor.tasdir.as_deref(),
        actor.privileged,
    );
    for problem in problems {
        tracing::warn!(problem, "configured mount skipped");
    }
    actor.mounts = mounts;
}

/// Actors that name no queue use the first of `[spawner] host_queues` (`default` unless configured).
fn default_queue(api: &Api) -> String {
    api.config
        .spawner
        .host_queues
        .first()
        .cloned()
        .unwrap_or_else(|| "default".into())
}

/// A PUT changes what the client sent and keeps everything else, including server-managed
/// fields (status, state, cron bookkeeping) — unlike Abaco's full replacement.
fn apply_update(actor: &mut Actor, input: ActorInput) {
    actor.image = input.image;
    if let Some(v) = input.stateless {
        actor.stateless = v;
    }
    if let Some(v) = input.kind {
        actor.kind = v;
    }
    if let Some(v) = input.link {
        actor.link = v;
    }
    if let Some(v) = input.token {
        actor.token = Value::Bool(v);
    }
    if let Some(v) = input.webhook {
        actor.webhook = v;
    }
    if let Some(v) = input.hints {
        actor.hints = v;
    }
    if let Some(v) = input.description {
        actor.description = v;
    }
    if let Some(v) = input.privileged {
        actor.privileged = v;
    }
    if input.max_workers.is_some() {
        actor.max_workers = input.max_workers;
    }
    if input.mem_limit.is_some() {
        actor.mem_limit = input.mem_limit;
    }
    if input.max_cpus.is_some() {
        actor.max_cpus = input.max_cpus;
    }
    if let Some(v) = input.use_container_uid {
        actor.use_container_uid = v;
    }
    if let Some(v) = input.default_environment {
        actor.default_environment = v;
    }
    if let Some(v) = input.state {
        actor.state = v;
    }
    if let Some(q) = input.queue.filter(|q| !q.is_empty()) {
        actor.queue = q;
    }
    if input.log_ex.is_some() {
        actor.log_ex = input.log_ex;
    }
    apply_cron(actor, input.cron_schedule, input.cron_on);
}

/// A new schedule (already validated) restarts the cron bookkeeping; `cron_on` switches it.
fn apply_cron(actor: &mut Actor, schedule: Option<String>, cron_on: Option<bool>) {
    if let Some(text) = schedule {
        if let Ok(parsed) = abaco_core::cron::parse(&text, now()) {
            actor.cron_next_ex = Some(abaco_core::cron::display_next(parsed.start));
            actor.cron_schedule = Some(text);
            actor.cron_on = cron_on.unwrap_or(true);
            return;
        }
    }
    if let Some(on) = cron_on {
        actor.cron_on = on && actor.cron_schedule.is_some();
    }
}

/// The creator gets `UPDATE` on the actor (spec §2.4).
async fn grant_owner(api: &Api, db_id: &DbId, user: &str) -> Result<(), ApiError> {
    let mut perms = Map::new();
    perms.insert(user.to_string(), Value::String("UPDATE".into()));
    api.control
        .store
        .raw()
        .put(
            Kind::Permissions,
            db_id.as_str(),
            db_id.as_str(),
            &Value::Object(perms),
        )
        .await?;
    Ok(())
}
