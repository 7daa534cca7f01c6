//! The REST API service: Abaco's routes, envelope and wire shapes over axum. Only this crate knows
//! HTTP. Handlers are thin: extract, authorize, call one operation, wrap in the envelope.
//! Other components are reached only through the store and the channels (`abaco_control`).

mod auth;
pub mod case;
mod identity;
pub mod metrics;
mod params;
mod reply;
mod routes;
mod search_query;
mod wire;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use abaco_control::Control;
use abaco_core::Config;

pub use auth::keys::{KeyError, Keys};
pub use identity::Identity;
pub use reply::{ApiError, Reply};

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub config: Arc<Config>,
    pub control: Control,
    pub case: case::Case,
    pub keys: Keys,
}

impl Api {
    /// Loads the verification and signing keys (creating the platform's signing key on first
    /// start) and builds the API state.
    pub async fn new(config: Arc<Config>, control: Control) -> Result<Api, KeyError> {
        let keys = Keys::load(&config, &control.store).await?;
        let case = case::Case::from_config(&config.web.case);
        Ok(Api {
            config,
            control,
            case,
            keys,
        })
    }
}

/// The full application: Abaco's routes under `/actors` and `/actors/v2`, envelope rendering,
/// 404/405 in the envelope.
pub fn router(api: Api) -> Router {
    let inner = routes::routes(api.config.web.max_content_length)
        .fallback(reply::unknown_route)
        .method_not_allowed_fallback(reply::wrong_method)
        .layer(middleware::from_fn_with_state(
            api.clone(),
            reply::render_envelope,
        ))
        .with_state(api);
    // Public clients use the `/actors/v2/...` prefix (APIM strips `/v2`); serve both.
    Router::new()
        .fallback_service(inner)
        .layer(middleware::map_request(strip_v2_prefix))
}

async fn strip_v2_prefix(mut request: Request) -> Request {
    let path = request.uri().path();
    let rewritten = if path == "/actors/v2" || path == "/actors/v2/" {
        Some("/actors".to_string())
    } else {
        path.strip_prefix("/actors/v2/")
            .map(|rest| format!("/actors/{rest}"))
    };
    if let Some(new_path) = rewritten {
        let pq = match request.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn run(
    api: Api,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "API listening");
    axum::serve(listener, router(api))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
