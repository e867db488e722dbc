//! Shadow traffic: a copy of a mirrored request goes to the route's mirror
//! backend at the same time as the real one, off the client's path. Its answer
//! is read to the end and thrown away; only its status, time and tokens are
//! kept, beside the primary's, so two backends are compared on the same
//! production requests. A bounded number run at once; beyond that, requests
//! are not mirrored (and that is counted).

use std::sync::Arc;

use futures_util::StreamExt;
use http::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};

use super::handlers::ProxyRequest;
use super::state::Gateway;
use crate::api::Usage;
use crate::metering::ledger::Row;
use crate::metering::metrics::MirrorSide;
use crate::providers::{Call, Reply};
use crate::routing::Backend;

/// Shadow requests in flight at most, across all routes.
pub const MAX_SHADOWS: usize = 64;

pub struct Shadow<R> {
    pub route: Arc<str>,
    pub backend: Arc<Backend>,
    pub request: R,
    pub request_id: HeaderValue,
    pub body_size: usize,
    pub deadline: Instant,
    pub permit: OwnedSemaphorePermit,
}

pub fn spawn<R: ProxyRequest>(gw: Arc<Gateway>, shadow: Shadow<R>) {
    tokio::spawn(async move {
        let Shadow {
            route,
            backend,
            request,
            request_id,
            body_size,
            deadline,
            permit,
        } = shadow;
        let started = Instant::now();
        let requested = request.model().to_owned();
        let call = Call {
            request_id: &request_id,
            body_size,
            upstream_model: &backend.upstream_model,
            requested_model: &requested,
        };
        let (status, usage) = match timeout_at(deadline, request.send(&*backend.provider, call)).await {
            Err(_) => (504, None),
            Ok(Err(e)) => (e.to_api_error().status.as_u16(), None),
            Ok(Ok(Reply::Complete { usage, .. })) => (200, usage),
            Ok(Ok(Reply::Stream(mut events))) => {
                let mut usage: Option<Usage> = None;
                let status = loop {
                    match timeout_at(deadline, events.next()).await {
                        Err(_) => break 504,
                        Ok(None) => break 200,
                        Ok(Some(Ok(event))) => usage = event.usage.or(usage),
                        Ok(Some(Err(e))) => break e.to_api_error().status.as_u16(),
                    }
                };
                (status, usage)
            }
        };
        let elapsed = started.elapsed();
        let cost = usage.zip(backend.pricing).map(|(u, p)| p.cost(&u, elapsed));
        // Shadow traffic is the operator's spend on that backend: it counts against its budget.
        if let (Some(budget), Some(pico)) = (&backend.budget, cost) {
            budget.spend.add(crate::keys::budget::Now::current(), pico);
        }
        gw.metrics.mirrored(MirrorSide {
            route: &route,
            role: "shadow",
            model: &backend.model,
            provider: &backend.provider_name,
            status,
            elapsed,
            usage: usage.as_ref(),
            cost,
        });
        if let Some(ledger) = &gw.ledger {
            let mut row = Row {
                id: request_id.to_str().unwrap_or("-").to_owned(),
                route: route.to_string(),
                backend: backend.label.to_string(),
                provider: backend.provider_name.to_string(),
                requested_model: requested.clone(),
                served_model: backend.upstream_model.to_string(),
                status: i64::from(status),
                shadow: true,
                ..Row::default()
            };
            row.set_usage(usage.as_ref(), cost);
            row.set_timing(elapsed);
            ledger.record(row);
        }
        drop(permit);
    });
}
