//! What every request reads: settings, keys, the router and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use super::auth::Keys;
use crate::config::{Config, ServerSettings};
use crate::metering::Metrics;
use crate::routing::Router;

pub struct Gateway {
    pub settings: ServerSettings,
    pub keys: Keys,
    /// For the admin API; empty = the admin API is off.
    pub admin_keys: Keys,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    /// `server.max_concurrent_requests`: one permit per proxied request, held to the end of its stream.
    pub limiter: Arc<Semaphore>,
    ready: AtomicBool,
}

impl Gateway {
    pub fn from_config(config: &Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        Gateway {
            settings: config.server.clone(),
            keys: Keys::new(&config.auth_keys),
            admin_keys: Keys::new(&config.admin_keys),
            router: Router::from_config(config, &metrics),
            metrics,
            limiter: Arc::new(Semaphore::new(
                config.server.max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            ready: AtomicBool::new(false),
        }
    }

    /// Ready means listening with a loaded config, and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
