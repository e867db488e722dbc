//! Which backend serves a request. For now a static table from model names
//! and aliases to providers, plus the models discovered on providers that
//! list their own; the policy router replaces it behind the same
//! `ModelResolver` interface.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;

use crate::api::ApiError;
use crate::config::Config;
use crate::metering::{Endpoint, Labels, Metrics, Series};
use crate::providers::{self, Provider};

/// A configured model on its provider.
pub struct Backend {
    /// The configured model name (a metric label, and what `/v1/models` lists).
    pub model: Arc<str>,
    pub upstream_model: Arc<str>,
    pub provider_name: Arc<str>,
    pub provider: Arc<dyn Provider>,
    /// `x-tollgate-backend`: `provider/model`, built once.
    pub header: HeaderValue,
    /// Metric series per endpoint, indexed by `Endpoint as usize`.
    pub series: [Arc<Series>; 3],
}

#[async_trait]
pub trait ModelResolver: Send + Sync {
    /// The backend for the `model` a client asked for.
    fn resolve(&self, requested: &str) -> Result<Arc<Backend>, ApiError>;
    /// Every name a client may send (models, aliases, discovered models), with the provider that owns it.
    fn listed(&self) -> Vec<(Arc<str>, Arc<str>)>;
    /// Asks the providers that discover their models for the current list.
    async fn refresh(&self) {}
    /// Whether [`refresh`](Self::refresh) has anything to do.
    fn discovers(&self) -> bool {
        false
    }
}

/// A provider whose models are discovered at run time.
struct Discoverer {
    name: Arc<str>,
    provider: Arc<dyn Provider>,
}

/// The configured models, and those discovered on their providers.
pub struct StaticResolver {
    backends: Vec<Arc<Backend>>,
    by_name: HashMap<String, usize>,
    listed: Vec<(Arc<str>, usize)>,
    discoverers: Vec<Discoverer>,
    /// Discovered model name → backend, swapped whole on each refresh.
    discovered: ArcSwap<Vec<Arc<Backend>>>,
    metrics: Arc<Metrics>,
}

fn backend(
    model: &str,
    upstream_model: &str,
    provider_name: &str,
    provider: Arc<dyn Provider>,
    metrics: &Metrics,
) -> Backend {
    Backend {
        model: model.into(),
        upstream_model: upstream_model.into(),
        provider_name: provider_name.into(),
        provider,
        header: HeaderValue::from_str(&format!("{provider_name}/{model}"))
            .unwrap_or(HeaderValue::from_static("unknown")),
        series: Endpoint::ALL.map(|endpoint| {
            let labels = Labels {
                endpoint: endpoint.as_str(),
                model,
                provider: provider_name,
            };
            Arc::new(metrics.series(labels))
        }),
    }
}

impl StaticResolver {
    pub fn from_config(config: &Config, metrics: &Arc<Metrics>) -> Self {
        let providers: HashMap<&str, Arc<dyn Provider>> = config
            .providers
            .iter()
            .map(|p| (p.name.as_str(), providers::build(p)))
            .collect();
        let mut backends = Vec::new();
        let mut by_name = HashMap::new();
        let mut listed = Vec::new();
        for m in &config.models {
            // Validation guarantees the provider exists.
            let Some(provider) = providers.get(m.provider.as_str()) else {
                continue;
            };
            let index = backends.len();
            backends.push(Arc::new(backend(
                &m.name,
                &m.upstream_model,
                &m.provider,
                provider.clone(),
                metrics,
            )));
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                by_name.insert(name.clone(), index);
                listed.push((Arc::from(name.as_str()), index));
            }
        }
        let discoverers = config
            .providers
            .iter()
            .filter(|p| p.kind.discovers_models())
            .filter_map(|p| {
                Some(Discoverer {
                    name: p.name.as_str().into(),
                    provider: providers.get(p.name.as_str())?.clone(),
                })
            })
            .collect();
        StaticResolver {
            backends,
            by_name,
            listed,
            discoverers,
            discovered: ArcSwap::from_pointee(Vec::new()),
            metrics: metrics.clone(),
        }
    }
}

#[async_trait]
impl ModelResolver for StaticResolver {
    fn resolve(&self, requested: &str) -> Result<Arc<Backend>, ApiError> {
        if let Some(&i) = self.by_name.get(requested) {
            return Ok(self.backends[i].clone());
        }
        self.discovered
            .load()
            .iter()
            .find(|b| &*b.model == requested)
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(requested))
    }

    fn listed(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let configured = self
            .listed
            .iter()
            .map(|(name, i)| (name.clone(), self.backends[*i].provider_name.clone()));
        let discovered = self.discovered.load();
        let discovered = discovered.iter().map(|b| (b.model.clone(), b.provider_name.clone()));
        configured.chain(discovered).collect()
    }

    fn discovers(&self) -> bool {
        !self.discoverers.is_empty()
    }

    /// A provider that cannot be asked keeps the models it had: a local
    /// server restarting does not empty `/v1/models`. Configured names win
    /// over discovered ones; a backend already known keeps its metric series.
    async fn refresh(&self) {
        let old = self.discovered.load_full();
        let mut next: Vec<Arc<Backend>> = Vec::new();
        for d in &self.discoverers {
            match d.provider.discover_models().await {
                Ok(names) => {
                    for name in names {
                        if self.by_name.contains_key(&name) || next.iter().any(|b| *b.model == *name) {
                            continue;
                        }
                        let known = old.iter().find(|b| *b.model == *name && b.provider_name == d.name);
                        next.push(known.cloned().unwrap_or_else(|| {
                            Arc::new(backend(&name, &name, &d.name, d.provider.clone(), &self.metrics))
                        }));
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = %d.name, error = %e, "model discovery failed; keeping the last list");
                    next.extend(old.iter().filter(|b| b.provider_name == d.name).cloned());
                }
            }
        }
        self.discovered.store(Arc::new(next));
    }
}
