//! JWT authentication (spec §2.1, §2.8): finds the token in `X-Jwt-Assertion-<TENANT>` or
//! `Authorization: Bearer`, verifies it against the tenant's gateway keys or the platform's own
//! key, and builds the caller's identity. A token that is present but invalid is refused with a
//! reason (Abaco silently fell back to nonce authentication).

use axum::http::request::Parts;

use abaco_core::Tenant;
use abaco_identity::{verify, verify_with, Claims, ExpiryRule};

use crate::identity::{check_tenant_name, Identity};
use crate::reply::ApiError;
use crate::Api;

/// The header prefix of gateway tokens; the rest of the header name is the tenant.
const ASSERTION_PREFIX: &str = "x-jwt-assertion-";

/// `Ok(None)` when the request carries no token at all.
pub async fn identify(api: &Api, parts: &Parts) -> Result<Option<Identity>, ApiError> {
    let mut found: Option<(Option<String>, String, Option<String>)> = None;
    for (name, value) in parts.headers.iter() {
        if let Some(tenant) = name.as_str().strip_prefix(ASSERTION_PREFIX) {
            let token = value
                .to_str()
                .map_err(|_| invalid("the token is not ASCII"))?;
            let header_name = format!("X-Jwt-Assertion-{}", tenant.to_ascii_uppercase());
            found = Some((
                Some(tenant.to_ascii_uppercase()),
                token.to_string(),
                Some(header_name),
            ));
            break;
        }
    }
    if found.is_none() {
        if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let text = value
                .to_str()
                .map_err(|_| invalid("the token is not ASCII"))?;
            let token = text
                .trim()
                .strip_prefix("Bearer ")
                .or_else(|| text.trim().strip_prefix("bearer "))
                .ok_or_else(|| invalid("the Authorization header must be `Bearer <token>`"))?;
            found = Some((None, token.to_string(), None));
        }
    }
    let Some((header_tenant, token, header_name)) = found else {
        return Ok(None);
    };
    let now = abaco_core::time::now().timestamp();
    // The platform's own tokens (issued to workers and OAuth clients) name their tenant.
    let platform_key = api.keys.issuer.public_key();
    let (claims, tenant) = match verify(&token, std::slice::from_ref(&platform_key), now) {
        Ok(claims) => {
            let tenant = claims
                .tenant()
                .map(str::to_string)
                .ok_or_else(|| invalid("the platform token names no tenant"))?;
            if let Some(h) = &header_tenant {
                if *h != tenant {
                    return Err(invalid("the token was issued for another tenant"));
                }
            }
            // Deleting a client (its worker went away) revokes its tokens at once.
            let client_id = claims
                .get("client_id")
                .and_then(|v| v.as_str())
                .ok_or_else(|| invalid("the platform token names no client"))?;
            let client = abaco_control::tokens::client(&api.control.store, client_id)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            if client.is_none() {
                return Err(invalid("the token's OAuth client was revoked"));
            }
            (claims, tenant)
        }
        Err(_) => {
            let tenant = match header_tenant.clone() {
                Some(t) => t,
                None => api.config.web.tenant_name.clone(),
            };
            check_tenant_name(&tenant)?;
            if !api.config.web.tenants.contains(&tenant) {
                return Err(ApiError::Unauthorized(format!(
                    "Tenant {tenant} is not configured on this server ([web] tenants)."
                )));
            }
            let keys = api.keys.for_tenant(&tenant);
            if keys.is_empty() {
                return Err(ApiError::Unauthorized(format!(
                    "No public key is configured for tenant {tenant} ([web] apim_public_key)."
                )));
            }
            // Gateway tokens may carry `exp` in milliseconds (spec §2.8): compared as seconds,
            // as Abaco did, so they are accepted; expiry in seconds is enforced.
            let claims = verify_with(&token, &keys, now, ExpiryRule::AbacoSeconds)
                .map_err(|e| invalid(&e.to_string()))?;
            (claims, tenant)
        }
    };
    let user = user_of(&claims)?;
    let mut identity = Identity::new(api, Tenant(tenant), user, claims.roles())?;
    identity.jwt_header_name = header_name;
    Ok(Some(identity))
}

fn user_of(claims: &Claims) -> Result<String, ApiError> {
    claims
        .user()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| invalid("the token names no user (http://wso2.org/claims/enduser)"))
}

fn invalid(why: &str) -> ApiError {
    ApiError::Unauthorized(format!("Invalid JWT: {why}."))
}
