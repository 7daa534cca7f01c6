//! `/actors/configs`: named values a tenant hands to some of its actors, delivered to their
//! containers as `_actor_configs` by the worker (spec §3.5, §4.19). Secret values are encrypted
//! at rest with `[web] encryption_key` and never leave the API again (shown as `********`, never
//! logged). Stored in `Kind::Configs` under `"{tenant}_{name}"`.
//!
//! Unlike Abaco: non-admins can read and manage configs they hold permissions on (bug 20), the
//! listing shows only configs the caller may read, listed actors must be ones the caller may
//! update, and config permissions live under their own key (`configs/{tenant}_{name}`): sharing
//! the permission documents of actors and aliases would let a config named after someone else's
//! actor id or alias hand its creator `UPDATE` on that actor or alias.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use abaco_core::{ActorId, DbId, PermissionLevel};
use abaco_store::{Kind, Page};

use crate::auth;
use crate::case;
use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::{ApiError, Reply};
use crate::Api;

/// How a secret value is displayed.
pub const MASK: &str = "********";

const PREFIX: &str = "Invalid config description. Missing required field";
const PERMISSION_PREFIX: &str = "Invalid permissions description";
const DENIED: &str = "You do not have sufficient access to this actor config.";
const RESERVED: &[&str] = &[
    "executions",
    "nonces",
    "logs",
    "messages",
    "adapters",
    "admin",
    "utilization",
];
const FORBIDDEN: &[char] = &[
    ':', '/', '?', '#', '[', ']', '@', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ' ',
    '\\', '"',
];

const NAME: Param = Param {
    name: "name",
    help: "Name of the config",
};
const VALUE: Param = Param {
    name: "value",
    help: "The value of the config; JSON Serializable. Set as the ENV VAR value.",
};
const IS_SECRET: Param = Param {
    name: "is_secret",
    help: "Whether the config should be encrypted at rest and not retrievable.",
};
/// `isSecret` is accepted in snake mode too, as Abaco does.
const IS_SECRET_CAMEL: Param = Param {
    name: "isSecret",
    help: "Whether the config should be encrypted at rest and not retrievable.",
};
const ACTORS: Param = Param {
    name: "actors",
    help: "List of actor IDs or aliases that should get this config/secret.",
};

/// A config as stored. `value` is the `v1:` ciphertext when `is_secret`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredConfig {
    pub name: String,
    pub value: String,
    pub is_secret: bool,
    /// Comma-separated actor ids and aliases, as the client sent them.
    pub actors: String,
    pub tenant: String,
    pub owner: String,
}

pub async fn list_configs(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    let docs = api
        .control
        .store
        .raw()
        .list(Kind::Configs, Some(who.tenant.as_str()), Page::all())
        .await?;
    let mut result = Vec::new();
    for (key, doc) in docs {
        let Ok(config) = serde_json::from_value::<StoredConfig>(doc) else {
            tracing::warn!(config = %key, "skipping unreadable config");
            continue;
        };
        let level = auth::level_of(&api, &who, &permission_key(&who, &config.name)).await?;
        if level >= PermissionLevel::Read {
            result.push(display(&api, &config));
        }
    }
    Ok(Reply::ok(
        "Actor Configs retrieved successfully.",
        Value::Array(result),
    ))
}

pub async fn create_config(
    State(api): State<Api>,
    who: Identity,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    let name = params.required_string(&NAME, PREFIX)?;
    check_name(&name)?;
    let config = read_config(&api, &who, &params, name).await?;
    let created = api
        .control
        .store
        .raw()
        .insert_new(
            Kind::Configs,
            &config_key(&who, &config.name),
            who.tenant.as_str(),
            &to_doc(&config)?,
        )
        .await?;
    if !created {
        return Err(ApiError::bad(format!(
            "Config {} already exists; please choose another name for your config",
            config.name
        )));
    }
    auth::grant(
        &api,
        &permission_key(&who, &config.name),
        &who.user,
        PermissionLevel::Update,
    )
    .await?;
    tracing::info!(config = %config_key(&who, &config.name), secret = config.is_secret, "config created");
    Ok(Reply::ok(
        "Actor config created successfully.",
        display(&api, &config),
    ))
}

pub async fn get_config(
    State(api): State<Api>,
    who: Identity,
    Path(name): Path<String>,
) -> Result<Reply, ApiError> {
    let config = load_config(&api, &who, &name, PermissionLevel::Read).await?;
    Ok(Reply::ok(
        "Config retrieved successfully.",
        display(&api, &config),
    ))
}

pub async fn update_config(
    State(api): State<Api>,
    who: Identity,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let current = load_config(&api, &who, &name, PermissionLevel::Update).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, PREFIX)?;
    // The name in the URL is kept; one in the body is ignored (spec §4.19).
    let mut config = read_config(&api, &who, &params, current.name.clone()).await?;
    config.owner = current.owner;
    api.control
        .store
        .raw()
        .put(
            Kind::Configs,
            &config_key(&who, &config.name),
            who.tenant.as_str(),
            &to_doc(&config)?,
        )
        .await?;
    tracing::info!(config = %config_key(&who, &config.name), secret = config.is_secret, "config updated");
    Ok(Reply::ok(
        "Actor config updated successfully.",
        display(&api, &config),
    ))
}

pub async fn delete_config(
    State(api): State<Api>,
    who: Identity,
    Path(name): Path<String>,
) -> Result<Reply, ApiError> {
    let config = load_config(&api, &who, &name, PermissionLevel::Update)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => {
                ApiError::not_found(format!("No config found with name: {name}."))
            }
            other => other,
        })?;
    let store = api.control.store.raw();
    store
        .delete(Kind::Configs, &config_key(&who, &config.name))
        .await?;
    store
        .delete(Kind::Permissions, &permission_key(&who, &config.name))
        .await?;
    tracing::info!(config = %config_key(&who, &config.name), "config deleted");
    Ok(Reply::ok(
        format!("Actor config {} deleted successfully.", config.name),
        Value::Null,
    ))
}

pub async fn get_config_permissions(
    State(api): State<Api>,
    who: Identity,
    Path(name): Path<String>,
) -> Result<Reply, ApiError> {
    let config = load_config(&api, &who, &name, PermissionLevel::Read).await?;
    let perms = auth::permissions(&api, &permission_key(&who, &config.name))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Config {} does not exist",
                config_key(&who, &config.name)
            ))
        })?;
    Ok(Reply::ok(
        "Permissions retrieved successfully.",
        Value::Object(perms),
    ))
}

pub async fn add_config_permission(
    State(api): State<Api>,
    who: Identity,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let config = load_config(&api, &who, &name, PermissionLevel::Update).await?;
    let params = Params::parse(
        &headers,
        query.as_deref(),
        &body,
        api.case,
        PERMISSION_PREFIX,
    )?;
    super::permissions::set(&api, &permission_key(&who, &config.name), &params).await
}

/// The storage key of a config: `"{tenant}_{name}"`.
fn config_key(who: &Identity, name: &str) -> String {
    format!("{}_{name}", who.tenant)
}

/// The key of a config's permission map (see the module comment for why it is not the config key).
fn permission_key(who: &Identity, name: &str) -> String {
    format!("configs/{}", config_key(who, name))
}

/// The config named in the URL, if the caller holds `needed` on it.
async fn load_config(
    api: &Api,
    who: &Identity,
    name: &str,
    needed: PermissionLevel,
) -> Result<StoredConfig, ApiError> {
    let missing = || ApiError::not_found(format!("No config found: {name}."));
    let doc = api
        .control
        .store
        .raw()
        .get(Kind::Configs, &config_key(who, name))
        .await?
        .ok_or_else(missing)?;
    let config: StoredConfig = serde_json::from_value(doc).map_err(|e| {
        tracing::error!(config = %config_key(who, name), cause = %e, "stored config is corrupt");
        ApiError::Internal(format!("Stored config {name} is unreadable."))
    })?;
    auth::require(api, who, &permission_key(who, name), needed, DENIED).await?;
    Ok(config)
}

/// Reads and checks `value`, `is_secret` and `actors`, encrypting a secret value.
async fn read_config(
    api: &Api,
    who: &Identity,
    params: &Params,
    name: String,
) -> Result<StoredConfig, ApiError> {
    let value = match params.raw(VALUE.name) {
        None => return Err(params.invalid(&VALUE, PREFIX)),
        Some(Value::String(s)) => s,
        Some(Value::Bool(b)) => if b { "True" } else { "False" }.to_string(),
        Some(other) => other.to_string(),
    };
    let mut is_secret = params.boolean(&IS_SECRET, PREFIX)?;
    if is_secret.is_none() && api.case == case::Case::Snake {
        is_secret = params.boolean(&IS_SECRET_CAMEL, PREFIX)?;
    }
    let is_secret = is_secret.ok_or_else(|| params.invalid(&IS_SECRET, PREFIX))?;
    let secrets = match (is_secret, api.keys.secrets.as_ref()) {
        (true, None) => return Err(ApiError::bad(
            "Secret configs are not available: this server has no [web] encryption_key configured.",
        )),
        (true, Some(secrets)) => Some(secrets),
        (false, _) => None,
    };
    let actors = params.required_string(&ACTORS, PREFIX)?;
    let names = actor_names(&actors);
    if names.is_empty() {
        return Err(params.invalid(&ACTORS, PREFIX));
    }
    for actor in names {
        check_actor(api, who, actor).await?;
    }
    let value = match secrets {
        Some(secrets) => secrets.encrypt(&value),
        None => value,
    };
    Ok(StoredConfig {
        name,
        value,
        is_secret,
        actors,
        tenant: who.tenant.0.clone(),
        owner: who.user.clone(),
    })
}

/// The trimmed, non-empty entries of an `actors` field.
pub fn actor_names(actors: &str) -> Vec<&str> {
    actors
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// A listed actor must exist in the tenant (as an id or an alias) and the caller must be allowed
/// to change what it receives.
async fn check_actor(api: &Api, who: &Identity, actor: &str) -> Result<(), ApiError> {
    let store = &api.control.store;
    let direct = DbId::new(&who.tenant, &ActorId::from(actor));
    let db_id = if store.actor(&direct).await?.is_some() {
        direct
    } else {
        let alias = store
            .raw()
            .get(Kind::Aliases, &format!("{}_{actor}", who.tenant))
            .await?;
        match alias
            .as_ref()
            .and_then(|a| a.get("actor_id"))
            .and_then(Value::as_str)
        {
            Some(id) => DbId::new(&who.tenant, &ActorId::from(id)),
            None => {
                return Err(ApiError::not_found(format!(
                    "No actor or alias found with id: {actor}."
                )))
            }
        }
    };
    auth::require(
        api,
        who,
        db_id.as_str(),
        PermissionLevel::Update,
        &format!("Not authorized -- you do not have UPDATE access to actor {actor}."),
    )
    .await
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if RESERVED.contains(&name) {
        return Err(ApiError::bad(format!(
            "{name} is a reserved word. The following reserved words cannot be used for a config: ['{}'].",
            RESERVED.join("', '")
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        return Err(ApiError::bad(format!(
            "'{c}' is a forbidden character. The following characters cannot be used for a config name: [{}].",
            FORBIDDEN.iter().collect::<String>()
        )));
    }
    Ok(())
}

/// `{name, value, is_secret, actors}`; a secret's value is masked.
fn display(api: &Api, config: &StoredConfig) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(config.name));
    let value = if config.is_secret {
        MASK
    } else {
        config.value.as_str()
    };
    m.insert("value".into(), json!(value));
    m.insert("is_secret".into(), json!(config.is_secret));
    m.insert("actors".into(), json!(config.actors));
    case::model(api.case, m)
}

fn to_doc(config: &StoredConfig) -> Result<Value, ApiError> {
    serde_json::to_value(config)
        .map_err(|e| ApiError::Internal(format!("Could not encode the config: {e}")))
}
