//! The request pipeline, built in one place.
//!
//! Order, outermost first, and why:
//! 1. `clean_request_id`: drops a client `x-request-id` that is not 1-128 visible ASCII
//!    characters, so logs and upstream headers only ever carry a sane id.
//! 2. `SetRequestIdLayer`: keeps the client's `x-request-id` or makes a UUID, so every
//!    later step (logs, the upstream call) sees one id.
//! 3. `PropagateRequestIdLayer`: copies the id onto the response, error responses included.
//! 4. `CatchPanicLayer`: a bug in a handler becomes an OpenAI-shaped 500 with the request id.
//! 5. `edge`: one access-log line per request (id, status, time to response head); rejects
//!    oversized headers (431) and missing or wrong gateway keys (401, except on /health,
//!    /ready and /metrics), metering both.
//! 6. The router: the handlers read the body within `server.max_body` and
//!    `server.body_timeout` (413, 408), parse and validate it (400), resolve the model (404),
//!    take a slot of `server.max_concurrent_requests` (503), and call the provider within
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
use super::{admin, handlers, respond};
use crate::api::{ApiError, ErrorKind};
use crate::metering::Labels;

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
                .layer(middleware::from_fn(clean_request_id))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(middleware::from_fn_with_state(gw.clone(), edge)),
        )
        .with_state(gw)
}

/// The endpoint label of a path, for requests metered outside the handlers.
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/completions" => "completions",
        "/v1/embeddings" => "embeddings",
        p if p.starts_with("/v1/models") => "models",
        _ => "other",
    }
}

/// Meters a request the handlers never saw (bad key, headers, path).
pub fn meter_rejection(gw: &Gateway, path: &str, err: &ApiError, started: Instant) -> Response {
    let labels = Labels {
        endpoint: endpoint_label(path),
        model: "",
        provider: "",
    };
    gw.metrics.request(labels, err.status.as_u16(), started.elapsed());
    respond::error(err)
}

async fn clean_request_id(mut req: Request, next: Next) -> Response {
    let sane =
        |v: &http::HeaderValue| (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
    if req.headers().get("x-request-id").is_some_and(|v| !sane(v)) {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

async fn edge(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let rejection = if header_bytes > gw.settings.max_header_bytes {
        Some(ApiError::headers_too_large(gw.settings.max_header_bytes))
    } else if !matches!(req.uri().path(), "/health" | "/ready" | "/metrics") && !gw.keys.admit(req.headers()) {
        Some(ApiError::invalid_api_key())
    } else {
        None
    };
    // Access logs cost nothing when filtered out: nothing is copied then.
    let log = tracing::enabled!(tracing::Level::INFO).then(|| {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (req.method().clone(), req.uri().path().to_owned(), id)
    });
    let resp = match rejection {
        Some(err) => meter_rejection(&gw, req.uri().path(), &err, started),
        None => next.run(req).await,
    };
    if let Some((method, path, id)) = log {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(), ms, "request");
    }
    resp
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a handler panicked; answered 500");
    respond::error(&ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Server,
        "tollgate hit an internal error; it has been logged.",
    ))
}
