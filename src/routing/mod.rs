//! Which backend serves a request. For now a static table from model names
//! and aliases to providers; the policy router replaces it behind the same
//! `ModelResolver` interface.

use std::collections::HashMap;
use std::sync::Arc;

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

pub trait ModelResolver: Send + Sync {
    /// The backend for the `model` a client asked for.
    fn resolve(&self, requested: &str) -> Result<&Backend, ApiError>;
    /// Every name a client may send (models and aliases), with the provider that owns it.
    fn listed(&self) -> Vec<(&str, &str)>;
}

pub struct StaticResolver {
    backends: Vec<Backend>,
    by_name: HashMap<String, usize>,
    listed: Vec<(String, usize)>,
}

impl StaticResolver {
    pub fn from_config(config: &Config, metrics: &Metrics) -> Self {
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
            backends.push(Backend {
                model: m.name.as_str().into(),
                upstream_model: m.upstream_model.as_str().into(),
                provider_name: m.provider.as_str().into(),
                provider: provider.clone(),
                header: HeaderValue::from_str(&format!("{}/{}", m.provider, m.name))
                    .unwrap_or(HeaderValue::from_static("unknown")),
                series: Endpoint::ALL.map(|endpoint| {
                    let labels = Labels {
                        endpoint: endpoint.as_str(),
                        model: &m.name,
                        provider: &m.provider,
                    };
                    Arc::new(metrics.series(labels))
                }),
            });
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                by_name.insert(name.clone(), index);
                listed.push((name.clone(), index));
            }
        }
        StaticResolver {
            backends,
            by_name,
            listed,
        }
    }
}

impl ModelResolver for StaticResolver {
    fn resolve(&self, requested: &str) -> Result<&Backend, ApiError> {
        self.by_name
            .get(requested)
            .map(|&i| &self.backends[i])
            .ok_or_else(|| ApiError::model_not_found(requested))
    }

    fn listed(&self) -> Vec<(&str, &str)> {
        self.listed
            .iter()
            .map(|(name, i)| (name.as_str(), &*self.backends[*i].provider_name))
            .collect()
    }
}
