//! The request pipeline, built in one place.
//!
//! Order, outermost first, and why:
//! 1. `CatchPanicLayer`: a bug becomes an OpenAI-shaped 500, never a dropped connection.
//! 2. `SetRequestIdLayer`: keeps the client's `x-request-id` or makes a UUID, so every
//!    later step (logs, the upstream call) sees one id.
//! 3. `PropagateRequestIdLayer`: copies the id onto the response.
//! 4. `access_log`: one log line per request with its id, status and time to response head.
//! 5. `limit_headers`: rejects oversized headers (431) before anything reads them.
//! 6. `require_key`: gateway keys (401), except on /health, /ready and /metrics.
//! 7. The router: the handlers read the body within `server.max_body` (413), parse and
//!    validate it (400), resolve the model (404), and call the provider within
//!    `server.request_timeout` (504).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::state::Gateway;
use super::{admin, auth, handlers, respond};
use crate::api::{ApiError, ErrorKind};

pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/models", get(admin::models))
        // Model names may hold `/` (`meta-llama/Llama-3.3-70B-Instruct`).
        .route("/v1/models/{*id}", get(admin::model))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(access_log))
                .layer(middleware::from_fn_with_state(gw.clone(), limit_headers))
                .layer(middleware::from_fn_with_state(gw.clone(), require_key)),
        )
        .with_state(gw)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked; answered 500");
    respond::error(&ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Server,
        "tollgate hit an internal error; it has been logged.",
    ))
}

async fn access_log(req: Request, next: Next) -> Response {
    // Cheap when access logs are filtered out: nothing is copied.
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let resp = next.run(req).await;
    tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_secs_f64() * 1e3, "request");
    resp
}

async fn limit_headers(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > gw.settings.max_header_bytes {
        return respond::error(&ApiError::headers_too_large(gw.settings.max_header_bytes));
    }
    next.run(req).await
}

async fn require_key(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let open = matches!(req.uri().path(), "/health" | "/ready" | "/metrics");
    if !open && !auth::is_authorised(&gw.keys, auth::presented_key(req.headers())) {
        return respond::error(&ApiError::invalid_api_key());
    }
    next.run(req).await
}
