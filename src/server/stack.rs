//! The request pipeline, built in one place.
//!
//! Order, outermost first, and why:
//! 1. `edge`, one middleware so the common path pays for one layer, not five:
//!    - the request id: the client's `x-request-id` if it is 1-128 visible ASCII
//!      characters, else a new UUID; written into the request (handlers log it and send it
//!      upstream) and onto every response, error responses included;
//!    - rejects oversized headers (431) and missing or wrong gateway keys (401, except on
//!      /health, /ready and /metrics), metering both;
//!    - one access-log line per request (id, status, time to response head).
//! 2. `CatchPanicLayer`: a bug in a handler becomes an OpenAI-shaped 500, which still
//!    gets its request id from `edge`.
//! 3. The router: the handlers read the body within `server.max_body` and
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
use http::{HeaderName, HeaderValue};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use super::state::Gateway;
use super::{admin, explain, handlers, keys, respond};
use crate::api::{ApiError, ErrorKind};
use crate::metering::Labels;

pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/models", get(admin::models))
        .route("/v1/route/explain", post(explain::explain))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/keys", get(keys::list).post(keys::create))
        .route("/admin/keys/{id}", axum::routing::delete(keys::revoke))
        // Model names may hold `/` (`meta-llama/Llama-3.3-70B-Instruct`).
        .route("/v1/models/{*id}", get(admin::model))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(gw.clone(), edge))
                .layer(CatchPanicLayer::custom(panic_response)),
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

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's request id if it is sane, else a new one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    match headers.get(&REQUEST_ID) {
        Some(v) if (1..=128).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic) => v.clone(),
        _ => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
        }
    }
}

/// Paths of the admin API.
fn is_admin(path: &str) -> bool {
    path.starts_with("/v1/route/") || path.starts_with("/admin/")
}

async fn edge(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let rejection = if header_bytes > gw.settings.max_header_bytes {
        Some(ApiError::headers_too_large(gw.settings.max_header_bytes))
    } else if is_admin(req.uri().path()) {
        // The admin API takes admin keys only, and is off without any.
        let admin = gw.admin_keys.load();
        (admin.is_open() || !admin.admit(req.headers())).then(ApiError::invalid_admin_key)
    } else if matches!(req.uri().path(), "/health" | "/ready" | "/metrics") {
        None
    } else {
        match gw.keys.load().identify(req.headers(), &gw.registry) {
            Ok(Some(caller)) => {
                // The handlers read it: limits, budgets, routes by key or team, the ledger.
                req.extensions_mut().insert(caller);
                None
            }
            Ok(None) => None,
            Err(_) => Some(ApiError::invalid_api_key()),
        }
    };
    // Access logs cost nothing when filtered out: nothing is copied then.
    let log = tracing::enabled!(tracing::Level::INFO).then(|| (req.method().clone(), req.uri().path().to_owned()));
    let mut resp = match rejection {
        Some(err) => meter_rejection(&gw, req.uri().path(), &err, started),
        None => next.run(req).await,
    };
    if let Some((method, path)) = log {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let request_id = id.to_str().unwrap_or("");
        tracing::info!(request_id, %method, %path, status = resp.status().as_u16(), ms, "request");
    }
    resp.headers_mut().insert(REQUEST_ID, id);
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
