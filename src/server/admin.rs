//! Health, readiness, metrics and the model list.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

use super::respond;
use super::stack::meter_rejection;
use super::state::Gateway;
use crate::api::ApiError;
use crate::api::models::{ModelEntry, ModelList};

pub async fn health() -> Response {
    respond::json(StatusCode::OK, r#"{"status":"ok"}"#)
}

pub async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_ready() {
        respond::json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        respond::error(&ApiError::unavailable("tollgate is starting or draining").with_code("not_ready"))
    }
}

pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    if let Some(ledger) = &gw.ledger {
        gw.metrics.ledger_queue(ledger.queued());
    }
    // Circuit states are read when scraped: they change by the passing of time too.
    let now = tokio::time::Instant::now();
    for b in gw.router.load().backends() {
        gw.metrics
            .circuit_state(&b.model, &b.provider_name, b.health.circuit(now).gauge());
    }
    // Budgets' use too: spend changes with requests, the period with the clock.
    let mut budgets = Vec::new();
    let today = crate::keys::budget::Now::current();
    gw.registry.budget_use(today, |u| {
        budgets.push((u.scope, u.name.to_owned(), u.period.as_str(), u.ratio));
    });
    for b in gw.router.load().backends() {
        if let Some(budget) = &b.budget {
            for (period, limit, spent) in budget.limits.against(budget.spend.spent(today)) {
                let ratio = crate::keys::budget::used_ratio(spent, limit);
                budgets.push(("backend", b.label.to_string(), period.as_str(), ratio));
            }
        }
    }
    gw.metrics.budgets_used(
        budgets
            .iter()
            .map(|(scope, name, period, ratio)| (*scope, name.as_str(), *period, *ratio)),
    );
    let mut resp = Response::new(gw.metrics.render().into());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Configured models and aliases, in OpenAI's list shape. `created` is the
/// gateway's start: tollgate does not know when an upstream made a model.
pub async fn models(State(gw): State<Arc<Gateway>>) -> Response {
    let created = started_at();
    let listed = gw.router.load().listed();
    let data = listed
        .iter()
        .map(|(id, owned_by)| ModelEntry {
            id,
            object: "model",
            created,
            owned_by,
        })
        .collect();
    let body = serde_json::to_vec(&ModelList { object: "list", data }).unwrap_or_default();
    respond::json(StatusCode::OK, body)
}

/// One model, as `GET /v1/models/{id}` (the SDKs' `models.retrieve`).
pub async fn model(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    let listed = gw.router.load().listed();
    match listed.iter().find(|(name, _)| **name == *id) {
        Some((id, owned_by)) => {
            let body = serde_json::to_vec(&ModelEntry {
                id,
                object: "model",
                created: started_at(),
                owned_by,
            })
            .unwrap_or_default();
            respond::json(StatusCode::OK, body)
        }
        None => respond::error(&ApiError::model_not_found(&id)),
    }
}

fn started_at() -> u64 {
    use std::sync::OnceLock;
    static STARTED: OnceLock<u64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

pub async fn not_found(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let path = req.uri().path();
    meter_rejection(&gw, path, &ApiError::not_found(path), std::time::Instant::now())
}

pub async fn method_not_allowed(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let path = req.uri().path();
    meter_rejection(
        &gw,
        path,
        &ApiError::method_not_allowed(req.method(), path),
        std::time::Instant::now(),
    )
}

/// The value of `name` in the URI's query, if there.
pub(super) fn query_param<'u>(uri: &'u http::Uri, name: &str) -> Option<&'u str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

/// `GET /admin/usage?since=24h&by=backend` (admin key): the ledger's report as JSON.
pub async fn usage(State(gw): State<Arc<Gateway>>, uri: http::Uri) -> Response {
    use crate::metering::report;
    // The gateway keeps a pool to the ledger's database whenever a ledger is configured.
    let Some(store) = &gw.store else {
        return respond::error(
            &ApiError::new(
                StatusCode::NOT_FOUND,
                crate::api::ErrorKind::InvalidRequest,
                "no usage ledger is configured",
            )
            .with_code("no_ledger"),
        );
    };
    let param = |name: &str| query_param(&uri, name).map(str::to_owned);
    let since = param("since").unwrap_or_else(|| "24h".into());
    let window = match crate::config::parse_window(&since) {
        Ok(w) => w,
        Err(e) => return respond::error(&ApiError::bad_request(e).with_param("since")),
    };
    let by_text = param("by").unwrap_or_else(|| "backend".into());
    let Some(by) = report::By::parse(&by_text) else {
        return respond::error(
            &ApiError::bad_request(format!("`{by_text}` is not backend, model, route, key or team")).with_param("by"),
        );
    };
    match report::groups(store.pool(), report::since_ms(window), by).await {
        Ok(groups) => {
            let body = serde_json::json!({"since": since, "by": by_text, "groups": groups});
            respond::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the usage ledger");
            respond::error(&ApiError::unavailable("the usage ledger cannot be read now"))
        }
    }
}
