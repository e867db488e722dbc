//! Active health checks (`routing.health_checks`): every interval, each
//! provider gets one cheap GET of its own (OpenAI's and Anthropic's model
//! lists, Gemini's models, Ollama's version, a Hugging Face server's
//! /health). A failed check opens the circuit of every backend on that
//! provider before any client request has to fail; a passing one closes it
//! again without waiting for the breaker's cooldown. Checks that say nothing
//! about the upstream's health (a 404 from a server without that endpoint, a
//! 429) change nothing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::{Instant, sleep, timeout};

use super::state::Gateway;
use crate::routing::Backend;

/// How often a gateway without health checks looks whether a reload turned them on.
const IDLE: Duration = Duration::from_secs(1);

/// Runs until the process ends.
pub async fn run(gw: Arc<Gateway>) {
    loop {
        let router = gw.router.load_full();
        let Some(settings) = router.health_checks.clone() else {
            sleep(IDLE).await;
            continue;
        };
        let mut providers: Vec<Vec<Arc<Backend>>> = Vec::new();
        for b in router.backends() {
            if b.missing_key
                || !(settings.providers.is_empty() || settings.providers.iter().any(|p| **p == *b.provider_name))
            {
                continue;
            }
            match providers.iter_mut().find(|g| g[0].provider_name == b.provider_name) {
                Some(group) => group.push(b),
                None => providers.push(vec![b]),
            }
        }
        let checks = providers.into_iter().map(|backends| async {
            let outcome = timeout(settings.timeout.0, backends[0].provider.probe()).await;
            (backends, outcome)
        });
        for (backends, outcome) in join_all(checks).await {
            let provider = &*backends[0].provider_name;
            let healthy = match &outcome {
                Ok(Ok(())) => Some(true),
                Ok(Err(e)) if e.is_backend_fault() => Some(false),
                Ok(Err(_)) => None,
                Err(_) => Some(false),
            };
            let result = match healthy {
                Some(true) => "ok",
                Some(false) => "failed",
                None => "inconclusive",
            };
            gw.metrics.health_check(provider, result);
            match &outcome {
                Ok(Err(e)) => tracing::warn!(provider, result, error = %e, "health check"),
                Err(_) => tracing::warn!(provider, result, "health check timed out"),
                Ok(Ok(())) => tracing::debug!(provider, "health check passed"),
            }
            if let Some(healthy) = healthy {
                let now = Instant::now();
                for b in &backends {
                    b.health.checked(healthy, now, &router.breaker);
                }
            }
        }
        drop(router);
        sleep(settings.interval.0).await;
    }
}
