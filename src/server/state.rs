//! What every request reads: settings, keys, the resolver and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, Secret, ServerSettings};
use crate::metering::Metrics;
use crate::routing::{ModelResolver, StaticResolver};

pub struct Gateway {
    pub settings: ServerSettings,
    pub keys: Vec<Secret>,
    pub resolver: Box<dyn ModelResolver>,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl Gateway {
    pub fn from_config(config: &Config) -> Self {
        Gateway {
            settings: config.server.clone(),
            keys: config.auth_keys.clone(),
            resolver: Box::new(StaticResolver::from_config(config)),
            metrics: Arc::new(Metrics::new()),
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
