//! Who is calling: tenant, user, roles and the `api_server` their links point at (spec §2.1).
//!
//! * `[web] access_control = none`: the tenant comes from the `tenant` header (or `tenant_name`)
//!   and the caller is an administrator, as in Abaco — for local use only (loopback).
//! * `jwt`: an RS256 token in `X-Jwt-Assertion-<TENANT>` or `Authorization: Bearer`, verified
//!   against the tenant's configured keys or the platform's own token key (tokens it issued to
//!   workers). Abaco's quirks (padded base64, `exp` in ms, whitespace) are tolerated; the
//!   signature is always checked.
//! * `?x-nonce=` without a token: the nonce is redeemed atomically and the request acts as its
//!   creator, limited to the nonce's level (see `auth::nonce`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use abaco_core::{PermissionLevel, Tenant};

use crate::auth;
use crate::reply::ApiError;
use crate::Api;

#[derive(Clone, Debug)]
pub struct Identity {
    pub tenant: Tenant,
    pub user: String,
    pub roles: Vec<String>,
    pub api_server: String,
    /// The JWT header the caller used (`X-Jwt-Assertion-DEV-DEVELOP`), when any.
    pub jwt_header_name: Option<String>,
    /// Set when the caller authenticated with a nonce: the most it may do.
    pub nonce_level: Option<PermissionLevel>,
    admin: bool,
    privileged: bool,
}

impl Identity {
    /// Administrators bypass permission checks (spec §2.3).
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Admins and privileged users may set privileged actor fields (spec §2.7).
    pub fn is_privileged(&self) -> bool {
        self.admin || self.privileged
    }

    pub fn new(
        api: &Api,
        tenant: Tenant,
        user: String,
        roles: Vec<String>,
    ) -> Result<Identity, ApiError> {
        let role = |name: &str, default: &str| {
            api.config
                .tenant_value("web", tenant.as_str(), name)
                .unwrap_or_else(|| default.to_string())
        };
        let admin_role = role("admin_role", "Internal/abaco-admin");
        let privileged_role = role("privileged_role", "Internal/abaco-privileged");
        let user_role = role("user_role", "Internal/abaco-user");
        let limited_role = role("limited_role", "Internal/abaco-limited");
        let roles = if roles.is_empty() {
            vec!["Internal/everyone".to_string()]
        } else {
            roles
        };
        let has = |r: &str| roles.iter().any(|x| x == r);
        let admin = has("ALL") || has(&admin_role);
        let privileged = has(&privileged_role);
        if !(admin || privileged || has(&user_role) || has(&limited_role)) {
            return Err(ApiError::bad("Not authorized -- missing required role."));
        }
        Ok(Identity {
            api_server: api.config.api_server(),
            tenant,
            user,
            roles,
            jwt_header_name: None,
            nonce_level: None,
            admin,
            privileged,
        })
    }
}

impl FromRequestParts<Api> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        if api.config.web.access_control == "none" {
            let tenant = match parts.headers.get("tenant").map(|v| v.to_str()) {
                // Not text: refused like any other bad tenant name, never read as the default.
                Some(Err(_)) => {
                    return Err(ApiError::bad(
                        "Invalid tenant header: tenant names are letters, digits, '-' and '.'.",
                    ))
                }
                Some(Ok(t)) if !t.trim().is_empty() => t.trim().to_ascii_uppercase(),
                _ => api.config.web.tenant_name.clone(),
            };
            check_tenant_name(&tenant)?;
            return Identity::new(api, Tenant(tenant), "anonymous".into(), vec!["ALL".into()]);
        }
        if let Some(identity) = auth::jwt::identify(api, parts).await? {
            return Ok(identity);
        }
        let nonce = parts.uri.query().and_then(|q| {
            crate::params::parse_urlencoded(q)
                .into_iter()
                .find(|(k, _)| k == "x-nonce")
                .map(|(_, v)| v)
        });
        match nonce {
            Some(nonce_id) if api.config.web.accept_nonce => {
                auth::nonce::redeem(api, parts, &nonce_id).await
            }
            _ if api.config.web.accept_nonce => {
                Err(ApiError::Unauthorized("No JWT or nonce provided.".into()))
            }
            _ => Err(ApiError::Unauthorized("JWT header missing.".into())),
        }
    }
}

pub fn check_tenant_name(tenant: &str) -> Result<(), ApiError> {
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ApiError::bad(format!(
            "Invalid tenant {tenant:?}: tenant names are letters, digits, '-' and '.'."
        )));
    }
    Ok(())
}
