//! Abaco's response envelope `{message, result, status, version}` and the one place where
//! errors become HTTP status codes. Handlers return `Reply` or `ApiError`; both are rendered into
//! the envelope by `render_envelope`, which knows the version tag.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use abaco_control::ControlError;
use abaco_store::StoreError;

use crate::Api;

/// A successful JSON answer: rendered as `{"status": "success", ...}` with HTTP 200.
#[derive(Clone, Debug)]
pub struct Reply {
    pub message: String,
    pub result: Value,
}

impl Reply {
    pub fn ok(message: impl Into<String>, result: Value) -> Reply {
        Reply {
            message: message.into(),
            result,
        }
    }
}

/// What can go wrong serving a request, by client-visible category.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input or a refused operation: 400 (Abaco uses 400 for almost every client error).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Missing or invalid credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    #[error("Invalid request: the API endpoint does not exist or the provided HTTP method is not allowed.")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A backend is unreachable: 503, the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A waited-for condition did not happen in time: 504.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => ApiError::Unavailable(format!(
                "The store is unavailable ({cause}); retry the request shortly."
            )),
            other => {
                tracing::error!(cause = %other, "store failure");
                ApiError::Internal(format!("Store failure: {other}"))
            }
        }
    }
}

impl From<abaco_channels::ChannelError> for ApiError {
    fn from(err: abaco_channels::ChannelError) -> Self {
        match err {
            abaco_channels::ChannelError::Unavailable(cause) => ApiError::Unavailable(format!(
                "The message broker is unavailable ({cause}); retry the request shortly."
            )),
            other => {
                tracing::error!(cause = %other, "channel failure");
                ApiError::Internal(format!("Channel failure: {other}"))
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::Store(e) => e.into(),
            ControlError::Channel(e) => e.into(),
        }
    }
}

/// Marks a response that follows another protocol (the OAuth2 token endpoint's RFC 6749
/// errors) and must reach the client as it is, without the envelope.
#[derive(Clone, Copy, Debug)]
pub struct Verbatim;

/// Marker carried from handlers to `render_envelope`.
#[derive(Clone)]
struct Pending {
    status: StatusCode,
    message: String,
    result: Value,
    ok: bool,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = StatusCode::OK.into_response();
        response.extensions_mut().insert(Pending {
            status: StatusCode::OK,
            message: self.message,
            result: self.result,
            ok: true,
        });
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = status.into_response();
        response.extensions_mut().insert(Pending {
            status,
            message: self.to_string(),
            result: Value::Null,
            ok: false,
        });
        response
    }
}

/// Renders every `Reply`/`ApiError` into the JSON envelope with the configured version. Errors
/// produced before a handler runs (an undecodable path, a body over the size limit) are wrapped
/// too, so every error a client sees has the same shape.
pub async fn render_envelope(State(api): State<Api>, request: Request, next: Next) -> Response {
    let is_message_post =
        request.method() == axum::http::Method::POST && request.uri().path().ends_with("/messages");
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    if parts.extensions.get::<Verbatim>().is_some() {
        return Response::from_parts(parts, body);
    }
    let pending = match parts.extensions.get::<Pending>().cloned() {
        Some(p) => p,
        None if parts.status.is_client_error() || parts.status.is_server_error() => {
            rejection(&api, parts.status, body, is_message_post).await
        }
        None => return Response::from_parts(parts, body),
    };
    let envelope = json!({
        "message": pending.message,
        "result": pending.result,
        "status": if pending.ok { "success" } else { "error" },
        "version": api.config.general.tag,
    });
    let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    parts.status = pending.status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// The envelope for a response an extractor produced (its body is plain text).
async fn rejection(api: &Api, status: StatusCode, body: Body, is_message_post: bool) -> Pending {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let (status, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE if is_message_post => (
            StatusCode::BAD_REQUEST,
            format!(
                "Message exceeds max content length of: {}",
                api.config.web.max_content_length
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (status, format!("Request body too large: {text}")),
        _ => (status, format!("Invalid request: {text}")),
    };
    Pending {
        status,
        message,
        result: Value::Null,
        ok: false,
    }
}

/// 404 for paths no route matches.
pub async fn unknown_route() -> ApiError {
    ApiError::NotFound("Invalid request: the requested URL is not an Abaco endpoint.".into())
}

/// 405 for a known path with the wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
