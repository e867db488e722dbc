//! What every request reads: settings, keys, the router and the metrics.
//! Keys and the router are swapped whole when the config is reloaded; a
//! request holds the ones it started with to its end.

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use super::auth::Keys;
use crate::config::{Config, ServerSettings};
use crate::keys::{KeyRegistry, KeyStore};
use crate::metering::Metrics;
use crate::metering::ledger::Ledger;
use crate::routing::Router;

pub struct Gateway {
    pub settings: ServerSettings,
    pub keys: ArcSwap<Keys>,
    /// For the admin API; empty = the admin API is off.
    pub admin_keys: ArcSwap<Keys>,
    pub router: ArcSwap<Router>,
    pub metrics: Arc<Metrics>,
    /// `server.max_concurrent_requests`: one permit per proxied request, held to the end of its stream.
    pub limiter: Arc<Semaphore>,
    /// Shadow (mirrored) requests in flight.
    pub shadows: Arc<Semaphore>,
    /// The usage ledger, when configured (opened by the caller: it connects).
    pub ledger: Option<Ledger>,
    /// Managed keys and configured teams, in memory.
    pub registry: Arc<KeyRegistry>,
    /// The ledger's database, for managed keys and reports (opened by the caller: it connects).
    pub store: Option<KeyStore>,
    /// `auth.cut_streams_over_budget`.
    cut_streams: AtomicBool,
    ready: AtomicBool,
}

impl Gateway {
    pub fn from_config(config: &Config) -> Self {
        let metrics = Arc::new(Metrics::with_key_labels(config.key_labels));
        let registry = Arc::new(KeyRegistry::default());
        registry.set_teams(&config.teams);
        Gateway {
            settings: config.server.clone(),
            keys: ArcSwap::from_pointee(Keys::new(&config.auth_keys).with_managed(config.managed_keys)),
            admin_keys: ArcSwap::from_pointee(Keys::new(&config.admin_keys)),
            router: ArcSwap::from_pointee(Router::from_config(config, &metrics, None)),
            metrics,
            limiter: Arc::new(Semaphore::new(
                config.server.max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            shadows: Arc::new(Semaphore::new(super::mirror::MAX_SHADOWS)),
            ledger: None,
            registry,
            store: None,
            cut_streams: AtomicBool::new(config.cut_streams_over_budget),
            ready: AtomicBool::new(false),
        }
    }

    /// Keeps managed keys in `store` (the ledger's database).
    pub fn with_store(mut self, store: Option<KeyStore>) -> Self {
        self.store = store;
        self
    }

    /// Whether a stream that crosses its budget is ended.
    pub fn cuts_streams(&self) -> bool {
        self.cut_streams.load(Ordering::Relaxed)
    }

    /// Meters every request into `ledger` too.
    pub fn with_ledger(mut self, ledger: Option<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Takes a new, validated config: providers, models, routes, the catalog
    /// and keys. Backends that remain keep their measured latency and circuit
    /// state. `server` and `logging` settings need a restart.
    pub fn reload(&self, config: &Config) {
        let previous = self.router.load_full();
        let router = Router::from_config(config, &self.metrics, Some(&previous));
        self.router.store(Arc::new(router));
        // Managed keys need the key store opened at start: the start value stays.
        let managed = self.keys.load().managed();
        if managed != config.managed_keys {
            tracing::warn!("auth.managed_keys changed: it takes effect at the next restart");
        }
        self.keys
            .store(Arc::new(Keys::new(&config.auth_keys).with_managed(managed)));
        self.registry.set_teams(&config.teams);
        self.cut_streams
            .store(config.cut_streams_over_budget, Ordering::Relaxed);
        self.admin_keys.store(Arc::new(Keys::new(&config.admin_keys)));
    }

    /// Ready means listening with a loaded config, and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
