//! Nonces of actors (`/actors/{actor_id}/nonces[/{nonce_id}]`, spec §4.15) and of aliases
//! (`/actors/aliases/{alias}/nonces[/{nonce_id}]`, §4.18): create, list, show and delete the
//! capability tokens that `auth::nonce` redeems. Each nonce is one `Kind::Nonces` document keyed
//! by its id `"{tenant}_{hashid}"` whose parent — and `object` field — is the actor's db_id or
//! the alias id, so deleting the actor or alias deletes its nonces with `delete_children`.
//!
//! Listing and showing need READ, creating and deleting UPDATE, on the actor and, for alias
//! nonces, on the alias too. A nonce never grants more than its creator holds. Unlike Abaco, a
//! missing nonce is a 404 (never a 500), and alias nonce links name the alias and its actor.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use abaco_core::ids::new_hashid;
use abaco_core::time::{display, now, Timestamp};
use abaco_core::{DbId, PermissionLevel};
use abaco_store::{Kind, Page};

use super::aliases::{load_alias, AliasRecord};
use super::load_actor;
use crate::auth;
use crate::case;
use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::{ApiError, Reply};
use crate::Api;

const PREFIX: &str = "Invalid nonce description";
const LEVEL: Param = Param {
    name: "level",
    help: "Permission level associated with this nonce. Default is EXECUTE.",
};
const MAX_USES: Param = Param {
    name: "max_uses",
    help: "Maximum number of times this nonce can be redeemed. Default is unlimited.",
};
const DESCRIPTION: Param = Param {
    name: "description",
    help: "Description of this nonce",
};

/// Refusal on alias nonce routes (spec §2.5 step 10).
const NO_ALIAS_ACCESS: &str = "Not authorized -- you do not have access to this alias and actor.";

/// What a nonce is for: an actor (addressed by its id or an alias of it) or an alias.
enum Target {
    Actor { db_id: DbId },
    Alias(AliasRecord),
}

impl Target {
    /// The key nonces of the target are stored under (and redeemed against).
    fn object(&self) -> &str {
        match self {
            Target::Actor { db_id } => db_id.as_str(),
            Target::Alias(alias) => &alias.alias_id,
        }
    }

    /// Alias nonces cannot carry UPDATE (spec §3.3).
    fn levels(&self) -> &'static [PermissionLevel] {
        match self {
            Target::Actor { .. } => PermissionLevel::ALL,
            Target::Alias(_) => &PermissionLevel::ALL[..3],
        }
    }

    /// The most the caller may put in a nonce: its own level on every object the nonce opens.
    async fn held(&self, api: &Api, who: &Identity) -> Result<PermissionLevel, ApiError> {
        match self {
            Target::Actor { db_id } => auth::level_of(api, who, db_id.as_str()).await,
            Target::Alias(alias) => {
                let on_alias = auth::level_of(api, who, &alias.alias_id).await?;
                let on_actor = auth::level_of(api, who, alias.actor_db_id().as_str()).await?;
                Ok(on_alias.min(on_actor))
            }
        }
    }

    fn noun(&self) -> &'static str {
        match self {
            Target::Actor { .. } => "Actor",
            Target::Alias(_) => "Alias",
        }
    }
}

// ---- actor nonces -----------------------------------------------------------------------------

pub async fn list_actor_nonces(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
) -> Result<Reply, ApiError> {
    let target = actor_target(&api, &who, &actor_id, PermissionLevel::Read).await?;
    list(&api, &target).await
}

pub async fn create_actor_nonce(
    State(api): State<Api>,
    who: Identity,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let target = actor_target(&api, &who, &actor_id, PermissionLevel::Update).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    create(&api, &who, &target, &params).await
}

pub async fn get_actor_nonce(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, nonce_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let target = actor_target(&api, &who, &actor_id, PermissionLevel::Read).await?;
    show(&api, &target, &nonce_id).await
}

pub async fn delete_actor_nonce(
    State(api): State<Api>,
    who: Identity,
    Path((actor_id, nonce_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let target = actor_target(&api, &who, &actor_id, PermissionLevel::Update).await?;
    remove(&api, &target, &nonce_id).await
}

// ---- alias nonces -----------------------------------------------------------------------------

pub async fn list_alias_nonces(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
) -> Result<Reply, ApiError> {
    let target = alias_target(&api, &who, &alias, PermissionLevel::Read).await?;
    list(&api, &target).await
}

pub async fn create_alias_nonce(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let target = alias_target(&api, &who, &alias, PermissionLevel::Update).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    create(&api, &who, &target, &params).await
}

pub async fn get_alias_nonce(
    State(api): State<Api>,
    who: Identity,
    Path((alias, nonce_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let target = alias_target(&api, &who, &alias, PermissionLevel::Read).await?;
    show(&api, &target, &nonce_id).await
}

pub async fn delete_alias_nonce(
    State(api): State<Api>,
    who: Identity,
    Path((alias, nonce_id)): Path<(String, String)>,
) -> Result<Reply, ApiError> {
    let target = alias_target(&api, &who, &alias, PermissionLevel::Update).await?;
    remove(&api, &target, &nonce_id).await
}

// ---- operations -------------------------------------------------------------------------------

/// The actor named in the URL (an id or an alias: either way its nonces are the actor's).
async fn actor_target(
    api: &Api,
    who: &Identity,
    actor_id: &str,
    needed: PermissionLevel,
) -> Result<Target, ApiError> {
    let actor = load_actor(api, who, actor_id, needed).await?;
    Ok(Target::Actor {
        db_id: actor.db_id(),
    })
}

/// The alias named in the URL; the caller needs `needed` on the alias and on its actor.
async fn alias_target(
    api: &Api,
    who: &Identity,
    alias: &str,
    needed: PermissionLevel,
) -> Result<Target, ApiError> {
    let record = load_alias(api, who, alias, needed, NO_ALIAS_ACCESS).await?;
    auth::require(
        api,
        who,
        record.actor_db_id().as_str(),
        needed,
        NO_ALIAS_ACCESS,
    )
    .await?;
    Ok(Target::Alias(record))
}

async fn list(api: &Api, target: &Target) -> Result<Reply, ApiError> {
    let docs = api
        .control
        .store
        .raw()
        .list(Kind::Nonces, Some(target.object()), Page::all())
        .await?;
    let result: Vec<Value> = docs
        .iter()
        .filter_map(|(_, doc)| doc.as_object())
        .map(|doc| display_nonce(api.case, target, doc))
        .collect();
    Ok(Reply::ok(
        format!("{} nonces retrieved successfully.", target.noun()),
        Value::Array(result),
    ))
}

async fn create(
    api: &Api,
    who: &Identity,
    target: &Target,
    params: &Params,
) -> Result<Reply, ApiError> {
    let level = match params
        .string(&LEVEL, PREFIX)?
        .filter(|s| !s.trim().is_empty())
    {
        None => PermissionLevel::Execute,
        Some(text) => PermissionLevel::parse(&text)
            .filter(|l| target.levels().contains(l))
            .ok_or_else(|| {
                let names: Vec<String> = target.levels().iter().map(|l| format!("'{l}'")).collect();
                ApiError::bad(format!(
                    "Invalid nonce description. The level attribute must be one of: ({})",
                    names.join(", ")
                ))
            })?,
    };
    let max_uses = params.int(&MAX_USES, PREFIX)?.unwrap_or(-1);
    if max_uses == 0 || max_uses < -1 {
        return Err(ApiError::bad(
            "The max uses parameter must be a positive integer or -1 (to denote unlimited uses).",
        ));
    }
    let description = params.string(&DESCRIPTION, PREFIX)?.unwrap_or_default();
    let held = target.held(api, who).await?;
    if level > held {
        return Err(ApiError::bad(format!(
            "Invalid nonce description. A nonce cannot carry a level ({level}) above the level you hold ({held})."
        )));
    }
    let (actor_id, alias_id, db_id) = match target {
        Target::Actor { db_id } => (
            json!(db_id.actor_id().as_str()),
            Value::Null,
            json!(db_id.as_str()),
        ),
        Target::Alias(alias) => (Value::Null, json!(alias.alias_id), Value::Null),
    };
    let mut doc = json!({
        "object": target.object(),
        "tenant": who.tenant.as_str(),
        "db_id": db_id,
        "actor_id": actor_id,
        "alias": alias_id,
        "owner": who.user,
        "roles": who.roles,
        "api_server": who.api_server,
        "level": level.as_str(),
        "max_uses": max_uses,
        "description": description,
        "create_time": now(),
        "last_use_time": Value::Null,
        "current_uses": 0,
        "remaining_uses": max_uses,
    });
    // Ids are 64 random bits: a collision is all but impossible, but never overwrite a nonce.
    for _ in 0..3 {
        let nonce_id = format!("{}_{}", who.tenant, new_hashid());
        doc["id"] = json!(nonce_id);
        if api
            .control
            .store
            .raw()
            .insert_new(Kind::Nonces, &nonce_id, target.object(), &doc)
            .await?
        {
            tracing::info!(nonce_id, object = target.object(), level = %level, max_uses, "nonce created");
            let shown = doc
                .as_object()
                .map(|d| display_nonce(api.case, target, d))
                .unwrap_or(Value::Null);
            return Ok(Reply::ok(
                format!("{} nonce created successfully.", target.noun()),
                shown,
            ));
        }
    }
    Err(ApiError::Internal(
        "Could not allocate a unique nonce id; retry the request.".into(),
    ))
}

async fn show(api: &Api, target: &Target, nonce_id: &str) -> Result<Reply, ApiError> {
    let doc = find(api, target, nonce_id).await?;
    Ok(Reply::ok(
        format!("{} nonce retrieved successfully.", target.noun()),
        display_nonce(api.case, target, &doc),
    ))
}

async fn remove(api: &Api, target: &Target, nonce_id: &str) -> Result<Reply, ApiError> {
    find(api, target, nonce_id).await?;
    if !api
        .control
        .store
        .raw()
        .delete(Kind::Nonces, nonce_id)
        .await?
    {
        return Err(not_found());
    }
    tracing::info!(nonce_id, object = target.object(), "nonce deleted");
    Ok(Reply::ok(
        format!("{} nonce deleted successfully.", target.noun()),
        Value::Null,
    ))
}

/// The nonce, if it belongs to the target (a nonce of another object is not found here).
async fn find(api: &Api, target: &Target, nonce_id: &str) -> Result<Map<String, Value>, ApiError> {
    api.control
        .store
        .raw()
        .get(Kind::Nonces, nonce_id)
        .await?
        .and_then(|doc| doc.as_object().cloned())
        .filter(|doc| doc.get("object").and_then(Value::as_str) == Some(target.object()))
        .ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::not_found("Nonce not found.")
}

/// The nonce display (spec §3.3): `tenant`, `db_id` and the internal `object` are hidden; alias
/// nonces show the bare alias name and link to the alias and its current actor.
fn display_nonce(case: case::Case, target: &Target, doc: &Map<String, Value>) -> Value {
    let field = |name: &str| doc.get(name).cloned().unwrap_or(Value::Null);
    let time = |name: &str| {
        let t = doc
            .get(name)
            .and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok());
        json!(display(t.as_ref()))
    };
    let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
    let owner = doc.get("owner").and_then(Value::as_str).unwrap_or_default();
    let api_server = doc
        .get("api_server")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("actor_id".into(), field("actor_id"));
    let (self_link, actor_link) = match target {
        Target::Actor { db_id } => {
            let base = format!("{api_server}/actors/v2/{}", db_id.actor_id());
            (format!("{base}/nonces/{id}"), base)
        }
        Target::Alias(alias) => {
            m.insert("alias".into(), json!(alias.alias));
            (
                format!("{api_server}/actors/v2/aliases/{}/nonces/{id}", alias.alias),
                format!("{api_server}/actors/v2/{}", alias.actor_id),
            )
        }
    };
    m.insert("owner".into(), json!(owner));
    m.insert("roles".into(), field("roles"));
    m.insert("api_server".into(), json!(api_server));
    m.insert("level".into(), field("level"));
    m.insert("max_uses".into(), field("max_uses"));
    m.insert("description".into(), field("description"));
    m.insert("create_time".into(), time("create_time"));
    m.insert("last_use_time".into(), time("last_use_time"));
    m.insert("current_uses".into(), field("current_uses"));
    m.insert("remaining_uses".into(), field("remaining_uses"));
    m.insert(
        "_links".into(),
        json!({
            "self": self_link,
            "owner": format!("{api_server}/profiles/v2/{owner}"),
            "actor": actor_link,
        }),
    );
    case::model(case, m)
}
