//! `/actors/aliases` and `/actors/aliases/{alias}` (spec §3.2, §4.18): tenant-unique names for
//! actors. An alias is a `Kind::Aliases` document keyed `"{tenant}_{alias}"` (parent: the tenant)
//! holding the human `actor_id`, which is how `resolve_db_id` lets every actor route accept an
//! alias. Aliases have their own permission map (`Kind::Permissions` under the alias id).
//!
//! Fixed from Abaco: listings show only aliases the caller may read (bug 29), the DELETE message
//! names the alias instead of a Python repr, and deleting an alias (or its actor) deletes its
//! nonces, so a later alias of the same name inherits nothing (bugs 30, 31).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use abaco_core::ids::is_hashid;
use abaco_core::{Actor, ActorId, DbId, PermissionLevel, Tenant};
use abaco_store::{Kind, Page, Update};

use crate::auth;
use crate::case;
use crate::identity::Identity;
use crate::params::{Param, Params};
use crate::reply::{ApiError, Reply};
use crate::Api;

/// A stored alias. Storage is snake case; `tenant`, `alias_id`, `db_id` and `api_server` are
/// never displayed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRecord {
    pub alias: String,
    pub alias_id: String,
    /// The human id of the actor the alias points at.
    pub actor_id: ActorId,
    pub db_id: DbId,
    pub owner: String,
    pub tenant: Tenant,
    pub api_server: String,
}

/// Refusal on the alias itself (spec §2.5 step 10).
pub const NO_ACCESS: &str = "Not authorized -- you do not have access to this alias.";

/// Prefix of `Params::parse` errors (undecodable bodies).
const BODY_PREFIX: &str = "Invalid alias description";
/// Prefix of missing or mistyped parameters.
const FIELD_PREFIX: &str = "Invalid alias description. Missing required field";

const ALIAS: Param = Param {
    name: "alias",
    help: "Actual alias for the actor; must be unique within a tenant.",
};
const ACTOR_ID: Param = Param {
    name: "actor_id",
    help: "The human readable id for the actor associated with this alias.",
};

/// Abaco's reserved words, listed verbatim in its message.
const RESERVED: &[&str] = &[
    "executions",
    "nonces",
    "logs",
    "messages",
    "adapters",
    "admin",
];
/// Words that name fixed endpoints under `/actors/`: an alias spelled like one could never be
/// addressed as `/actors/{alias}` (Abaco accepted them; here they are refused up front).
const ENDPOINT_WORDS: &[&str] = &["aliases", "configs", "search", "utilization"];
const FORBIDDEN: &[char] = &[
    '\\', ' ', '"', ':', '/', '?', '#', '[', ']', '@', '!', '$', '&', '\'', '(', ')', '*', '+',
    ',', ';', '=',
];

impl AliasRecord {
    pub fn key(tenant: &Tenant, alias: &str) -> String {
        format!("{tenant}_{alias}")
    }

    /// The storage key of the actor the alias points at.
    pub fn actor_db_id(&self) -> DbId {
        DbId::new(&self.tenant, &self.actor_id)
    }

    fn from_doc(doc: Value) -> Result<AliasRecord, ApiError> {
        serde_json::from_value(doc)
            .map_err(|e| ApiError::Internal(format!("A stored alias is unreadable: {e}")))
    }
}

/// The alias display (spec §3.2).
pub fn display(case: case::Case, alias: &AliasRecord) -> Value {
    let api = &alias.api_server;
    let mut m = Map::new();
    m.insert("alias".into(), json!(alias.alias));
    m.insert("actor_id".into(), json!(alias.actor_id));
    m.insert("owner".into(), json!(alias.owner));
    m.insert(
        "_links".into(),
        json!({
            "self": format!("{api}/actors/v2/aliases/{}", alias.alias),
            "owner": format!("{api}/profiles/v2/{}", alias.owner),
            "actor": format!("{api}/actors/v2/{}", alias.actor_id),
        }),
    );
    case::model(case, m)
}

/// The alias named in the URL, if the caller holds `needed` on it (refused with `denied`);
/// 404 "No alias found: {alias}." when the tenant has no such alias.
pub async fn load_alias(
    api: &Api,
    who: &Identity,
    alias: &str,
    needed: PermissionLevel,
    denied: &str,
) -> Result<AliasRecord, ApiError> {
    let key = AliasRecord::key(&who.tenant, alias);
    let doc = api
        .control
        .store
        .raw()
        .get(Kind::Aliases, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No alias found: {alias}.")))?;
    let record = AliasRecord::from_doc(doc)?;
    auth::require(api, who, &record.alias_id, needed, denied).await?;
    Ok(record)
}

pub async fn list_aliases(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    let docs = api
        .control
        .store
        .raw()
        .list(Kind::Aliases, Some(who.tenant.as_str()), Page::all())
        .await?;
    let mut result = Vec::new();
    for (_, doc) in docs {
        let alias = AliasRecord::from_doc(doc)?;
        if auth::level_of(&api, &who, &alias.alias_id).await? >= PermissionLevel::Read {
            result.push(display(api.case, &alias));
        }
    }
    Ok(Reply::ok(
        "Aliases retrieved successfully.",
        Value::Array(result),
    ))
}

pub async fn create_alias(
    State(api): State<Api>,
    who: Identity,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, BODY_PREFIX)?;
    let alias = params.required_string(&ALIAS, FIELD_PREFIX)?;
    let actor_id = params.required_string(&ACTOR_ID, FIELD_PREFIX)?;
    if is_hashid(&alias) {
        return Err(ApiError::bad(
            "Invalid alias description. Alias cannot be an Abaco hash id.",
        ));
    }
    let db_id = DbId::new(&who.tenant, &ActorId::from(actor_id.as_str()));
    if api.control.store.actor(&db_id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "No actor found with id: {actor_id}."
        )));
    }
    auth::require(
        &api,
        &who,
        db_id.as_str(),
        PermissionLevel::Update,
        &format!("Not authorized -- you do not have access to {actor_id}."),
    )
    .await?;
    check_alias_name(&alias)?;
    let record = AliasRecord {
        alias_id: AliasRecord::key(&who.tenant, &alias),
        alias,
        actor_id: ActorId::from(actor_id),
        db_id,
        owner: who.user.clone(),
        tenant: who.tenant.clone(),
        api_server: who.api_server.clone(),
    };
    let doc = serde_json::to_value(&record)
        .map_err(|e| ApiError::Internal(format!("Cannot encode the alias: {e}")))?;
    let raw = api.control.store.raw();
    if !raw
        .insert_new(Kind::Aliases, &record.alias_id, who.tenant.as_str(), &doc)
        .await?
    {
        return Err(ApiError::bad(format!(
            "Alias {} already exists.",
            record.alias
        )));
    }
    // A fresh map: whatever a deleted alias of the same name left behind does not carry over.
    let perms = json!({ who.user.as_str(): PermissionLevel::Update.as_str() });
    raw.put(
        Kind::Permissions,
        &record.alias_id,
        &record.alias_id,
        &perms,
    )
    .await?;
    tracing::info!(alias_id = %record.alias_id, actor_id = %record.actor_id, "alias created");
    Ok(Reply::ok(
        "Actor alias created successfully.",
        display(api.case, &record),
    ))
}

pub async fn get_alias(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
) -> Result<Reply, ApiError> {
    let record = load_alias(&api, &who, &alias, PermissionLevel::Read, NO_ACCESS).await?;
    Ok(Reply::ok(
        "Alias retrieved successfully.",
        display(api.case, &record),
    ))
}

/// Re-points an alias at another actor (the caller needs UPDATE on both).
pub async fn update_alias(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let record = load_alias(&api, &who, &alias, PermissionLevel::Update, NO_ACCESS).await?;
    let params = Params::parse(&headers, query.as_deref(), &body, api.case, BODY_PREFIX)?;
    if params.has(ALIAS.name) {
        return Err(ApiError::bad(
            "Invalid alias update description. The alias itself cannot be updated in a PUT request.",
        ));
    }
    let actor_id = params.required_string(&ACTOR_ID, FIELD_PREFIX)?;
    let db_id = DbId::new(&who.tenant, &ActorId::from(actor_id.as_str()));
    if api.control.store.actor(&db_id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "No actor found with id: {actor_id}."
        )));
    }
    auth::require(
        &api,
        &who,
        db_id.as_str(),
        PermissionLevel::Update,
        "Not authorized -- you do not have UPDATE access to the actor you want to associate with this alias.",
    )
    .await?;
    let (new_actor, new_db_id) = (actor_id, db_id);
    // Only an existing alias is changed: a concurrent DELETE is not undone.
    let f = move |current: Option<&Value>| {
        let mut doc = current?.as_object()?.clone();
        doc.insert("actor_id".into(), json!(new_actor));
        doc.insert("db_id".into(), json!(new_db_id));
        Some(Value::Object(doc))
    };
    let updated = match api
        .control
        .store
        .raw()
        .update(Kind::Aliases, &record.alias_id, who.tenant.as_str(), &f)
        .await?
    {
        Update::Written(doc) => AliasRecord::from_doc(doc)?,
        Update::Unchanged(_) => {
            return Err(ApiError::not_found(format!("No alias found: {alias}.")))
        }
    };
    auth::grant(&api, &updated.alias_id, &who.user, PermissionLevel::Update).await?;
    tracing::info!(alias_id = %updated.alias_id, actor_id = %updated.actor_id, "alias re-pointed");
    Ok(Reply::ok(
        "Actor alias updated successfully.",
        display(api.case, &updated),
    ))
}

pub async fn delete_alias(
    State(api): State<Api>,
    who: Identity,
    Path(alias): Path<String>,
) -> Result<Reply, ApiError> {
    let record = load_alias(&api, &who, &alias, PermissionLevel::Update, NO_ACCESS).await?;
    remove(&api, &record).await?;
    tracing::info!(alias_id = %record.alias_id, "alias deleted");
    Ok(Reply::ok(
        format!("Alias {} deleted successfully.", record.alias),
        Value::Null,
    ))
}

/// Deletes every alias of the actor's tenant that points at it (with their permissions and
/// nonces), so a deleted actor leaves no alias resolving to nothing.
pub async fn delete_aliases_of(api: &Api, actor: &Actor) -> Result<u64, ApiError> {
    let docs = api
        .control
        .store
        .raw()
        .list(Kind::Aliases, Some(actor.tenant.as_str()), Page::all())
        .await?;
    let mut deleted = 0;
    for (_, doc) in docs {
        let record = AliasRecord::from_doc(doc)?;
        if record.actor_id == actor.id {
            remove(api, &record).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Nonces first, so nothing redeemable outlives the alias even if a later step fails.
async fn remove(api: &Api, record: &AliasRecord) -> Result<(), ApiError> {
    let raw = api.control.store.raw();
    raw.delete_children(Kind::Nonces, &record.alias_id).await?;
    raw.delete(Kind::Aliases, &record.alias_id).await?;
    raw.delete(Kind::Permissions, &record.alias_id).await?;
    Ok(())
}

/// The name rules of spec §3.2, with Abaco's messages.
fn check_alias_name(alias: &str) -> Result<(), ApiError> {
    if RESERVED.contains(&alias) {
        let words: Vec<String> = RESERVED.iter().map(|w| format!("'{w}'")).collect();
        return Err(ApiError::bad(format!(
            "{alias} is a reserved word. The following reserved words cannot be used for an alias: [{}].",
            words.join(", ")
        )));
    }
    if ENDPOINT_WORDS.contains(&alias) {
        return Err(ApiError::bad(format!(
            "{alias} is a reserved word: /actors/{alias} is an Abaco endpoint, so it cannot be used for an alias."
        )));
    }
    if let Some(c) = alias.chars().find(|c| FORBIDDEN.contains(c)) {
        let chars: Vec<String> = FORBIDDEN.iter().map(char::to_string).collect();
        return Err(ApiError::bad(format!(
            "'{c}' is a forbidden character. The following characters cannot be used for an alias: ['{}'].",
            chars.join("', '")
        )));
    }
    // `.` and `..` are removed from URL paths by clients, so such an alias could not be addressed.
    if alias.chars().all(|c| c == '.') {
        return Err(ApiError::bad(
            "Invalid alias description. An alias cannot consist of dots only.",
        ));
    }
    if alias.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "Invalid alias description. An alias cannot contain control characters.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(alias: &str, expect: Result<(), &str>) {
        let got = check_alias_name(alias).map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_string), "{alias}");
    }

    #[test]
    fn alias_names_follow_abaco_rules() {
        check("my.alias-1_x", Ok(()));
        check(
            "nonces",
            Err("nonces is a reserved word. The following reserved words cannot be used for an alias: ['executions', 'nonces', 'logs', 'messages', 'adapters', 'admin']."),
        );
        check(
            "a b",
            Err("' ' is a forbidden character. The following characters cannot be used for an alias: ['\\', ' ', '\"', ':', '/', '?', '#', '[', ']', '@', '!', '$', '&', ''', '(', ')', '*', '+', ',', ';', '=']."),
        );
        assert!(check_alias_name("search").is_err());
        assert!(check_alias_name("..").is_err());
        assert!(check_alias_name("a\nb").is_err());
    }
}
