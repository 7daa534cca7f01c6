//! Nonces (spec §2.6, §3.3): capability tokens for one actor or one alias, redeemed atomically
//! through `?x-nonce=`. A nonce acts as its creator, never above its own level nor above what its
//! creator holds at the time of use; a use is consumed only when the nonce is good for the
//! request (unlike Abaco, which consumed it before checking).

use axum::http::request::Parts;
use axum::http::Method;
use serde_json::{json, Value};

use abaco_core::{PermissionLevel, Tenant};
use abaco_store::{Kind, Update};

use crate::identity::{check_tenant_name, Identity};
use crate::reply::ApiError;
use crate::Api;

/// The object a request URL addresses, as nonces see it: an actor db_id or an alias id.
pub fn object_of_path(tenant: &str, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["actors", "aliases", alias, ..] => Some(format!("{tenant}_{alias}")),
        ["actors", id, ..]
            if !matches!(
                *id,
                "aliases" | "configs" | "admin" | "search" | "utilization"
            ) =>
        {
            Some(format!("{tenant}_{id}"))
        }
        _ => None,
    }
}

/// The level a request needs (spec §2.6 step 4).
pub fn needed_level(method: &Method, path: &str) -> PermissionLevel {
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        PermissionLevel::Read
    } else if *method == Method::POST && path.contains("/messages") {
        PermissionLevel::Execute
    } else {
        PermissionLevel::Update
    }
}

/// Redeems one use of `nonce_id` for this request and returns the identity it grants.
pub async fn redeem(api: &Api, parts: &Parts, nonce_id: &str) -> Result<Identity, ApiError> {
    let missing = || ApiError::bad("Nonce does not exist.");
    let (tenant, _) = nonce_id.rsplit_once('_').ok_or_else(missing)?;
    check_tenant_name(tenant).map_err(|_| missing())?;
    let path = parts.uri.path();
    let object = object_of_path(tenant, path).ok_or_else(|| {
        ApiError::bad("Not authorized. Nonces only work on actor and alias URLs.")
    })?;
    // Actor ids address actor nonces, aliases address alias nonces (spec §2.6 step 5).
    let needed = needed_level(&parts.method, path);
    let wanted = object.clone();
    let f = move |current: Option<&Value>| {
        let doc = current?.as_object()?;
        if doc.get("object").and_then(Value::as_str) != Some(wanted.as_str()) {
            return None;
        }
        let level = doc
            .get("level")
            .and_then(Value::as_str)
            .and_then(PermissionLevel::parse)?;
        if level < needed {
            return None;
        }
        let remaining = doc
            .get("remaining_uses")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let used = doc.get("current_uses").and_then(Value::as_i64).unwrap_or(0);
        let mut next = doc.clone();
        match remaining {
            -1 => {}
            n if n > 0 => {
                next.insert("remaining_uses".into(), json!(n - 1));
            }
            _ => return None,
        }
        next.insert("current_uses".into(), json!(used + 1));
        next.insert("last_use_time".into(), json!(abaco_core::time::now()));
        Some(Value::Object(next))
    };
    let outcome = api
        .control
        .store
        .raw()
        .update(Kind::Nonces, nonce_id, &object, &f)
        .await?;
    let doc = match outcome {
        Update::Written(doc) => doc,
        Update::Unchanged(None) => return Err(missing()),
        Update::Unchanged(Some(doc)) => {
            if doc.get("object").and_then(Value::as_str) != Some(object.as_str()) {
                return Err(missing());
            }
            let level = doc
                .get("level")
                .and_then(Value::as_str)
                .and_then(PermissionLevel::parse)
                .unwrap_or(PermissionLevel::None);
            if level < needed {
                return Err(ApiError::bad(
                    "Nonce does not have sufficient permissions level.",
                ));
            }
            return Err(ApiError::bad("No remaining uses left for this nonce."));
        }
    };
    let owner = doc
        .get("owner")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let roles: Vec<String> = doc
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let level = doc
        .get("level")
        .and_then(Value::as_str)
        .and_then(PermissionLevel::parse)
        .unwrap_or(PermissionLevel::None);
    let mut identity = Identity::new(api, Tenant(tenant.to_string()), owner, roles)?;
    identity.nonce_level = Some(level);
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_levels_from_urls() {
        assert_eq!(
            object_of_path("T", "/actors/abc/messages").as_deref(),
            Some("T_abc")
        );
        assert_eq!(
            object_of_path("T", "/actors/aliases/al/nonces").as_deref(),
            Some("T_al")
        );
        assert_eq!(object_of_path("T", "/actors"), None);
        assert_eq!(object_of_path("T", "/actors/configs/x"), None);
        assert_eq!(
            needed_level(&Method::GET, "/actors/a"),
            PermissionLevel::Read
        );
        assert_eq!(
            needed_level(&Method::POST, "/actors/a/messages"),
            PermissionLevel::Execute
        );
        assert_eq!(
            needed_level(&Method::POST, "/actors/a/state"),
            PermissionLevel::Update
        );
    }
}
