//! Who is calling: tenant, user, roles and the `api_server` their links point at. With
//! `[web] access_control = none` the tenant comes from the `tenant` header (or the configured
//! default) and the caller is an administrator, as in Abaco.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use abaco_core::Tenant;

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
}

impl FromRequestParts<Api> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        match api.config.web.access_control.as_str() {
            "none" => {
                let tenant = parts
                    .headers
                    .get("tenant")
                    .and_then(|v| v.to_str().ok())
                    .map(|t| t.trim().to_ascii_uppercase())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| api.config.web.tenant_name.clone());
                if tenant.contains('_') || tenant.contains('/') {
                    return Err(ApiError::bad(format!(
                        "Invalid tenant header {tenant:?}: tenant names cannot contain '_' or '/'."
                    )));
                }
                Ok(Identity {
                    tenant: Tenant(tenant),
                    user: "anonymous".into(),
                    roles: vec!["ALL".into()],
                    api_server: api.config.api_server(),
                    jwt_header_name: None,
                })
            }
            other => Err(ApiError::Unavailable(format!(
                "access_control = {other} is not supported by this server build."
            ))),
        }
    }
}
