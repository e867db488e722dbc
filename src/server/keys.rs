//! Managed keys in a running gateway: loaded at start, kept current, and
//! the admin API (`/admin/keys`) that makes, lists and revokes them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::StatusCode;

use super::handlers::read_body;
use super::respond;
use super::state::Gateway;
use crate::api::{ApiError, ErrorKind};
use crate::keys::{KeyStore, NewKey};

/// How often spend is raised to the ledger's totals (other replicas' spend).
const SPEND_SYNC: Duration = Duration::from_secs(60);

/// Reads the keys and what was spent (by keys, teams and backends) before the gateway answers.
pub async fn load(gw: &Gateway) -> Result<(), sqlx::Error> {
    let Some(store) = &gw.store else { return Ok(()) };
    if gw.keys.load().managed() {
        gw.registry.refresh(store).await?;
    }
    sync_spend(gw, store).await
}

/// Raises in-memory spend to the ledger's totals: keys, teams, and backends with budgets.
async fn sync_spend(gw: &Gateway, store: &KeyStore) -> Result<(), sqlx::Error> {
    gw.registry.sync_spend(store).await?;
    let router = gw.router.load_full();
    let budgeted: Vec<_> = router.backends().into_iter().filter(|b| b.budget.is_some()).collect();
    if budgeted.is_empty() {
        return Ok(());
    }
    let now = crate::keys::budget::Now::current();
    for (label, spent) in store.backend_spend(now).await? {
        if let Some(b) = budgeted.iter().find(|b| *b.label == *label)
            && let Some(budget) = &b.budget
        {
            budget.spend.at_least(now, spent);
        }
    }
    Ok(())
}

/// Re-reads the keys every `every`, and spend every minute, until the process ends.
pub async fn keep_current(gw: Arc<Gateway>, every: Duration) {
    let Some(store) = gw.store.clone() else { return };
    // One tick, often enough for both: keys every `every`, spend every minute
    // (each the nearest whole number of ticks).
    let tick_every = every.min(SPEND_SYNC);
    let ticks = |period: Duration| (period.as_secs_f64() / tick_every.as_secs_f64()).round().max(1.0) as u64;
    let (refresh_ticks, sync_ticks) = (ticks(every), ticks(SPEND_SYNC));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1u64.. {
        tick.tick().await;
        if n % refresh_ticks == 0
            && gw.keys.load().managed()
            && let Err(e) = gw.registry.refresh(&store).await
        {
            tracing::warn!(error = %e, "cannot re-read the managed keys; the last list stays");
        }
        if n % sync_ticks == 0
            && let Err(e) = sync_spend(&gw, &store).await
        {
            tracing::warn!(error = %e, "cannot read spend from the ledger");
        }
    }
}

fn store(gw: &Gateway) -> Result<&KeyStore, ApiError> {
    gw.store.as_ref().filter(|_| gw.keys.load().managed()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            "managed keys are off: set auth.managed_keys: true (and a ledger) in the config",
        )
        .with_code("managed_keys_off")
    })
}

fn unavailable(e: &sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "the key store failed");
    ApiError::unavailable("the key store cannot be reached now")
}

/// `POST /admin/keys`: `{"name", "team"?, "budget_daily_usd"?, "budget_monthly_usd"?, "rpm"?, "tpm"?}`
/// → 201 with the key, shown this once.
pub async fn create(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let result = async {
        let store = store(&gw)?;
        let (parts, body) = req.into_parts();
        let deadline = tokio::time::Instant::now() + gw.settings.body_timeout;
        let bytes = read_body(&parts.headers, body, 64 << 10, deadline).await?;
        let new: NewKey = serde_json::from_slice(&bytes).map_err(|e| crate::api::error::from_json_error(&e))?;
        new.validate().map_err(|(message, param)| {
            ApiError::bad_request(message)
                .with_param(param)
                .with_code("invalid_value")
        })?;
        let (record, secret) = store.create(&new).await.map_err(|e| unavailable(&e))?;
        // This gateway accepts the key at once; others at their next refresh.
        if let Err(e) = gw.registry.refresh(store).await {
            tracing::warn!(error = %e, "cannot re-read the managed keys");
        }
        tracing::info!(key_id = %record.id, name = %record.name, "key created");
        let mut body = serde_json::to_value(&record).unwrap_or_default();
        body["key"] = secret.into();
        Ok::<_, ApiError>(body)
    }
    .await;
    match result {
        Ok(body) => respond::json(StatusCode::CREATED, serde_json::to_vec(&body).unwrap_or_default()),
        Err(e) => respond::error(&e),
    }
}

/// `GET /admin/keys[?all=true]`: the keys, without secrets.
pub async fn list(State(gw): State<Arc<Gateway>>, uri: http::Uri) -> Response {
    let all = super::admin::query_param(&uri, "all") == Some("true");
    let result = async {
        let keys = store(&gw)?.list(all).await.map_err(|e| unavailable(&e))?;
        Ok::<_, ApiError>(serde_json::json!({"object": "list", "data": keys}))
    }
    .await;
    match result {
        Ok(body) => respond::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()),
        Err(e) => respond::error(&e),
    }
}

/// `DELETE /admin/keys/{id}`: revokes the key, on this gateway at once.
pub async fn revoke(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    let result = async {
        let store = store(&gw)?;
        let revoked = store.revoke(&id).await.map_err(|e| unavailable(&e))?;
        // Refused here at once, whether or not the refresh below succeeds.
        gw.registry.forget(&id);
        if !revoked {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::InvalidRequest,
                format!("no active key has the id `{id}`"),
            )
            .with_code("key_not_found"));
        }
        if let Err(e) = gw.registry.refresh(store).await {
            tracing::warn!(error = %e, "cannot re-read the managed keys");
        }
        tracing::info!(key_id = %id, "key revoked");
        Ok(serde_json::json!({"id": id, "revoked": true}))
    }
    .await;
    match result {
        Ok(body) => respond::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()),
        Err(e) => respond::error(&e),
    }
}
