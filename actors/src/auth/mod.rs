//! Authorization (spec §2.4–§2.7): permission maps per object (actor, alias, config), the checks
//! every route makes, and the privileged-field rule. Authentication lives in `identity.rs`,
//! `jwt.rs` and `nonce.rs`.

pub mod jwt;
pub mod keys;
pub mod nonce;

use serde_json::{Map, Value};

use abaco_core::status::WORLD;
use abaco_core::PermissionLevel;
use abaco_store::{Kind, Update};

use crate::identity::Identity;
use crate::reply::ApiError;
use crate::Api;

/// The level `user` holds in a permission map; `ABACO_WORLD` grants its level to everyone.
pub fn level_in(perms: &Map<String, Value>, user: &str) -> PermissionLevel {
    let of = |name: &str| {
        perms
            .get(name)
            .and_then(Value::as_str)
            .and_then(PermissionLevel::parse)
            .unwrap_or(PermissionLevel::None)
    };
    of(user).max(of(WORLD))
}

/// The permission map of an object (`None` when the object has none: it does not exist).
pub async fn permissions(api: &Api, object: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    Ok(api
        .control
        .store
        .raw()
        .get(Kind::Permissions, object)
        .await?
        .and_then(|v| v.as_object().cloned()))
}

/// What the caller may do on an object: everything for admins; for nonce callers, no more than
/// the nonce's level (and no more than its creator holds).
pub async fn level_of(
    api: &Api,
    who: &Identity,
    object: &str,
) -> Result<PermissionLevel, ApiError> {
    let held = if who.is_admin() {
        PermissionLevel::Update
    } else {
        permissions(api, object)
            .await?
            .map(|p| level_in(&p, &who.user))
            .unwrap_or(PermissionLevel::None)
    };
    Ok(match who.nonce_level {
        Some(limit) => held.min(limit),
        None => held,
    })
}

/// Fails with `denied` (HTTP 400, Abaco's code for refusals) unless the caller holds `needed`.
pub async fn require(
    api: &Api,
    who: &Identity,
    object: &str,
    needed: PermissionLevel,
    denied: &str,
) -> Result<(), ApiError> {
    if level_of(api, who, object).await? >= needed {
        Ok(())
    } else {
        Err(ApiError::bad(denied))
    }
}

/// Sets `user`'s level on an object (creating its map); returns the new map.
pub async fn grant(
    api: &Api,
    object: &str,
    user: &str,
    level: PermissionLevel,
) -> Result<Map<String, Value>, ApiError> {
    let user = user.to_string();
    let f = move |current: Option<&Value>| {
        let mut map = current
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        map.insert(user.clone(), Value::String(level.as_str().into()));
        Some(Value::Object(map))
    };
    match api
        .control
        .store
        .raw()
        .update(Kind::Permissions, object, object, &f)
        .await?
    {
        Update::Written(v) | Update::Unchanged(Some(v)) => {
            Ok(v.as_object().cloned().unwrap_or_default())
        }
        Update::Unchanged(None) => Ok(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn world_and_user_levels_combine() {
        let perms = json!({"alice": "UPDATE", "bob": "NONE", "ABACO_WORLD": "READ"});
        let perms = perms.as_object().unwrap();
        assert_eq!(level_in(perms, "alice"), PermissionLevel::Update);
        assert_eq!(level_in(perms, "bob"), PermissionLevel::Read);
        assert_eq!(level_in(perms, "carol"), PermissionLevel::Read);
        let perms = json!({"alice": "EXECUTE"});
        assert_eq!(
            level_in(perms.as_object().unwrap(), "carol"),
            PermissionLevel::None
        );
    }
}
