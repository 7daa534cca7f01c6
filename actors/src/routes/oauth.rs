//! The platform's OAuth2 authorization server (RFC 6749): `POST /oauth2/token` with the
//! `client_credentials` and `refresh_token` grants, issuing short-lived RS256 access tokens the
//! API accepts like tenant tokens; and `POST/DELETE /oauth2/clients` for users who want
//! credentials of their own. Token responses follow the RFC, not Abaco's envelope.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

use abaco_control::tokens::{self, Client};
use abaco_core::ids::new_hashid;

use crate::identity::Identity;
use crate::params::parse_urlencoded;
use crate::reply::{ApiError, Reply, Verbatim};
use crate::Api;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response();
    response.extensions_mut().insert(Verbatim);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"abaco\""),
        );
    }
    response
}

/// `client_id`/`client_secret` from HTTP Basic authentication or the form (RFC 6749 §2.3.1).
fn client_credentials(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let unescape = |s: &str| parse_urlencoded(&format!("x={s}")).pop().map(|(_, v)| v);
        return Some((unescape(id)?, unescape(secret)?));
    }
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some((get("client_id")?, get("client_secret")?))
}

pub async fn token(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let form = parse_urlencoded(text);
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let store = &api.control.store;
    let client: Client = match field("grant_type") {
        Some("client_credentials") => {
            let Some((id, secret)) = client_credentials(&headers, &form) else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                );
            };
            match tokens::authenticate(store, &id, &secret).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "unknown client or wrong secret",
                    )
                }
                Err(e) => {
                    return oauth_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        &e.to_string(),
                    )
                }
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = field("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let client = match tokens::redeem_refresh_token(store, refresh).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "the refresh token is invalid, used or revoked",
                    )
                }
                Err(e) => {
                    return oauth_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        &e.to_string(),
                    )
                }
            };
            // A client that authenticates must be the token's owner.
            if let Some((id, _)) = client_credentials(&headers, &form) {
                if id != client.client_id {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "the refresh token belongs to another client",
                    );
                }
            }
            client
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: client_credentials, refresh_token",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
        }
    };
    let ttl = api.config.web.token_ttl;
    let access = match tokens::access_token(&api.keys.issuer, &client, ttl) {
        Ok(t) => t,
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        }
    };
    let refresh = match tokens::rotate_refresh_token(store, &client).await {
        Ok(t) => t,
        Err(e) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            )
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
        })
        .to_string(),
    )
        .into_response()
}

/// Creates an OAuth client acting as the caller; the secret is shown only in this answer.
pub async fn create_client(State(api): State<Api>, who: Identity) -> Result<Reply, ApiError> {
    if who.nonce_level.is_some() {
        return Err(ApiError::bad("Nonces cannot create OAuth clients."));
    }
    let client_id = format!("{}_{}", who.tenant, new_hashid());
    let (client, secret) =
        tokens::create_client(&api.control.store, &client_id, &who.tenant, &who.user, None)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Reply::ok(
        "OAuth client created; store the secret now, it is not shown again.",
        json!({"client_id": client.client_id, "client_secret": secret, "owner": client.owner,
               "token_endpoint": format!("{}/oauth2/token", api.config.api_server())}),
    ))
}

pub async fn delete_client(
    State(api): State<Api>,
    who: Identity,
    Path(client_id): Path<String>,
) -> Result<Reply, ApiError> {
    let store = &api.control.store;
    let client = tokens::client(store, &client_id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .filter(|c| c.tenant == who.tenant)
        .ok_or_else(|| {
            ApiError::not_found(format!("No OAuth client found with id: {client_id}."))
        })?;
    if client.owner != who.user && !who.is_admin() {
        return Err(ApiError::bad(
            "Not authorized -- you do not own this OAuth client.",
        ));
    }
    tokens::delete_client(store, &client_id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Reply::ok(
        format!("OAuth client {client_id} deleted."),
        Value::Null,
    ))
}
