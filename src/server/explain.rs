//! `POST /v1/route/explain` (admin key): the routing decision a chat request
//! would get, without calling any upstream: the matched route, the candidates
//! in the order they would be tried with their expected cost, latency and
//! score, and why each dropped target was dropped.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::handlers::read_body;
use super::respond;
use super::state::Gateway;
use crate::api::ApiError;
use crate::api::ChatRequest;
use crate::api::error::from_json_error;
use crate::routing::Features;

pub async fn explain(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    match decide(&gw, req).await {
        Ok(body) => respond::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()),
        Err(e) => respond::error(&e),
    }
}

async fn decide(gw: &Gateway, req: Request) -> Result<Value, ApiError> {
    let (parts, body) = req.into_parts();
    let deadline = Instant::now() + gw.settings.body_timeout;
    let bytes = read_body(&parts.headers, body, gw.settings.max_body, deadline).await?;
    let chat: ChatRequest = serde_json::from_slice(&bytes).map_err(|e| from_json_error(&e))?;
    chat.validate().map_err(|(message, param)| {
        ApiError::bad_request(message)
            .with_param(param)
            .with_code("invalid_value")
    })?;
    let mut f = Features::chat(&chat);
    // The admin may ask as if a given key or team sent the request.
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    f.key_id = header("x-tollgate-key-id");
    f.team = header("x-tollgate-team");
    let now = Instant::now();
    let d = gw.router.load().decide(&f, &parts.headers, now)?;
    let attempts = if d.candidates.is_empty() { 0 } else { d.attempts() };
    let candidates: Vec<Value> = d
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "rank": i + 1,
                "model": &*c.backend.model,
                "provider": &*c.backend.provider_name,
                "upstream_model": &*c.backend.upstream_model,
                "tried": i < attempts,
                "expected_cost_usd": c.expected_cost,
                "expected_latency_ms": c.expected_latency_ms,
                "p95_latency_ms": c.p95_ms.or_else(|| c.backend.health.p95_ms()),
                "in_flight": c.in_flight,
                "score": c.score,
                "within_limits": d.benchmark().map(|_| c.qualifies),
                "circuit": c.backend.health.circuit(now).as_str(),
            })
        })
        .collect();
    let dropped: Vec<Value> = d
        .dropped
        .iter()
        .map(|x| json!({"model": &*x.model, "reason": x.reason}))
        .collect();
    Ok(json!({
        "route": &*d.route,
        "strategy": d.strategy.as_str(),
        "benchmark": d.benchmark(),
        "domain": d.domain.map(|x| x.as_str()),
        "request": {
            "model": f.model, "stream": f.stream, "tools": f.tools, "images": f.images, "json_mode": f.json_mode,
            "estimated_input_tokens": f.input_tokens, "max_tokens": f.max_tokens,
        },
        "attempts": attempts,
        "candidates": candidates,
        "dropped": dropped,
    }))
}
