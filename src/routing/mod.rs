//! Which backend serves a request, and why.
//!
//! The operator's routes (first match wins) pick the candidates; filters drop
//! those that cannot take the request (context window, capabilities, data
//! that must stay local, an open circuit, a `Retry-After` cooldown); the
//! route's strategy orders the rest. The handler tries them in that order.
//! A request no route matches goes to the model it names. Every decision can
//! be explained (`POST /v1/route/explain`) without calling an upstream.

pub mod catalog;
pub mod classify;
mod features;
mod glob;
pub mod health;
pub mod limits;
mod route;
mod strategy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::api::{ApiError, ErrorKind};
use crate::config::Config;
use crate::config::schema::StrategyName;
use crate::metering::cost::{Pico, Pricing};
use crate::metering::{Endpoint, Labels, Metrics, Series};
use crate::providers::{self, Provider};
use catalog::{Capability, Catalog, Hosting, ModelInfo};
use classify::Domain;
pub use features::Features;
use health::{BreakerSettings, Health};
use limits::Limits;
use route::{LazyDomain, Objective, Retry, Route};

/// Output tokens assumed for a request that sets no `max_tokens`: its
/// expected cost, and its reservation of a tokens-per-minute limit.
pub(crate) const DEFAULT_OUTPUT_TOKENS: u64 = 256;
/// Busy time assumed for a self-hosted model not measured yet.
const DEFAULT_BUSY_SECS: f64 = 2.0;
/// The route name of requests no configured route matched.
pub const DIRECT: &str = "direct";

/// A configured (or discovered) model on its provider.
pub struct Backend {
    /// The configured model name (a metric label, and what `/v1/models` lists).
    pub model: Arc<str>,
    pub upstream_model: Arc<str>,
    pub provider_name: Arc<str>,
    pub provider: Arc<dyn Provider>,
    /// `provider/model`: the ledger's `backend` column and the budget metric's name.
    pub label: Arc<str>,
    /// `x-tollgate-backend`: the label, as a header value, built once.
    pub header: HeaderValue,
    /// Metric series per endpoint, indexed by `Endpoint as usize`.
    pub series: [Arc<Series>; 3],
    /// What the catalog says of it, if it knows the model.
    pub info: Option<ModelInfo>,
    /// Its prices, from the catalog, for metering.
    pub pricing: Option<Pricing>,
    pub health: Arc<Health>,
    /// The provider's key variable is unset: routes skip it rather than fail on it.
    pub missing_key: bool,
    /// OpenTelemetry's `gen_ai.provider.name` of its provider.
    pub system: &'static str,
    /// `models[].rpm` and `tpm`.
    pub limits: Option<Arc<Limits>>,
    /// How its text is counted when it reports no usage.
    pub counter: crate::metering::estimate::Counter,
    /// `models[].budget`, and what was spent on it: spent, it is skipped.
    pub budget: Option<BackendBudget>,
}

/// A backend's budget and its running spend (kept across reloads).
pub struct BackendBudget {
    pub limits: crate::keys::Budget,
    pub spend: Arc<crate::keys::budget::Spend>,
}

impl Backend {
    /// The budget period already spent, if any (the clock is read only for a backend with a budget).
    pub fn budget_spent(&self) -> Option<(crate::keys::Period, Pico)> {
        let b = self.budget.as_ref()?;
        b.limits.exhausted(b.spend.spent(crate::keys::budget::Now::current()))
    }
}

/// A provider as backends refer to it: its name, adapter and GenAI system name.
#[derive(Clone)]
struct ProviderRef {
    name: Arc<str>,
    adapter: Arc<dyn Provider>,
    system: &'static str,
}

/// A backend of `model` on provider `p`; `catalog` is its catalog entry's name
/// (with the upstream model and the name, it chooses the tokenizer).
fn backend(
    model: &str,
    upstream_model: &str,
    catalog: &str,
    p: &ProviderRef,
    info: Option<ModelInfo>,
    metrics: &Metrics,
) -> Backend {
    let provider_name = &*p.name;
    let label = format!("{provider_name}/{model}");
    Backend {
        model: model.into(),
        upstream_model: upstream_model.into(),
        provider_name: p.name.clone(),
        provider: p.adapter.clone(),
        system: p.system,
        header: HeaderValue::from_str(&label).unwrap_or(HeaderValue::from_static("unknown")),
        label: label.into(),
        series: Endpoint::ALL.map(|endpoint| {
            let labels = Labels {
                endpoint: endpoint.as_str(),
                model,
                provider: provider_name,
            };
            Arc::new(metrics.series(labels, p.system))
        }),
        pricing: info.as_ref().and_then(Pricing::of),
        info,
        health: Arc::new(Health::default()),
        missing_key: false,
        limits: None,
        // An Azure deployment's name says nothing; its catalog entry may.
        counter: crate::metering::estimate::Counter::for_model([upstream_model, model, catalog]),
        budget: None,
    }
}

/// A backend the decision kept, with what the strategy weighed.
#[derive(Clone)]
pub struct Candidate {
    pub backend: Arc<Backend>,
    /// Its place among the route's targets (for weights).
    position: usize,
    /// USD, from the catalog's prices and the request's estimated tokens.
    pub expected_cost: Option<f64>,
    pub expected_latency_ms: Option<f64>,
    /// Read only where a limit needs it (a sort of recent samples): `best-score` with `max_p95_latency`.
    pub p95_ms: Option<f64>,
    pub in_flight: u32,
    /// `best-score`: the benchmark score, and whether it is within the route's limits.
    pub score: Option<f64>,
    pub qualifies: bool,
}

/// A target the filters dropped, and why.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub model: Arc<str>,
    pub reason: String,
}

pub struct Decision {
    pub route: Arc<str>,
    /// `x-tollgate-route`.
    pub route_header: HeaderValue,
    pub strategy: StrategyName,
    pub domain: Option<Domain>,
    pub candidates: Vec<Candidate>,
    pub dropped: Vec<Dropped>,
    pub retry: Retry,
    pub objective: Objective,
    /// Whether `Retry-After` cooldowns skip a backend: only with somewhere else to go.
    pub honour_cooldown: bool,
    /// The route's mirror: where to copy, and what share of requests (drawn by `Router::mirror_to`).
    pub mirror: Option<(Arc<Backend>, f64)>,
}

impl Decision {
    /// Backends tried at most.
    /// The error when the filters left nothing to try.
    pub fn nothing_left(&self) -> Option<ApiError> {
        if !self.candidates.is_empty() {
            return None;
        }
        let reasons: Vec<String> = self
            .dropped
            .iter()
            .map(|d| format!("{}: {}", d.model, d.reason))
            .collect();
        Some(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Server,
                format!(
                    "route `{}` has no backend that can take this request ({})",
                    self.route,
                    reasons.join("; ")
                ),
            )
            .with_code("no_backend_available"),
        )
    }

    /// The benchmark `best-score` ranked by.
    pub fn benchmark(&self) -> Option<&str> {
        (self.strategy == StrategyName::BestScore).then(|| {
            self.objective
                .score
                .as_deref()
                .unwrap_or(strategy::default_benchmark(self.domain.unwrap_or(Domain::General)))
        })
    }

    pub fn attempts(&self) -> usize {
        let default = self.candidates.len().min(3);
        self.retry
            .attempts
            .map_or(default, |a| a as usize)
            .min(self.candidates.len())
            .max(1)
    }
}

/// A provider whose models are discovered at run time.
struct Discoverer {
    provider: ProviderRef,
}

pub struct Router {
    backends: Vec<Arc<Backend>>,
    by_name: HashMap<String, usize>,
    listed: Vec<(Arc<str>, usize)>,
    routes: Vec<Route>,
    catalog: Catalog,
    pub breaker: BreakerSettings,
    /// `routing.health_checks`.
    pub health_checks: Option<crate::config::schema::HealthCheckSection>,
    rng: Mutex<fastrand::Rng>,
    discoverers: Vec<Discoverer>,
    /// Discovered models, swapped whole on each refresh.
    discovered: ArcSwap<Vec<Arc<Backend>>>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// Builds the router for `config`; with the `previous` one (a reload),
    /// backends that remain (same name, provider and upstream model) keep
    /// their health: measured latency, circuit and cooldown.
    pub fn from_config(config: &Config, metrics: &Arc<Metrics>, previous: Option<&Router>) -> Self {
        let providers: HashMap<&str, ProviderRef> = config
            .providers
            .iter()
            .map(|p| {
                let r = ProviderRef {
                    name: p.name.as_str().into(),
                    adapter: providers::build(p),
                    system: p.kind.system(),
                };
                (p.name.as_str(), r)
            })
            .collect();
        // Validated at load: the built-in catalog parses, and so does the operator's.
        let catalog = Catalog::load(config.catalog_text.as_deref()).unwrap_or_default();
        let without_keys: Vec<&str> = config.providers_without_keys().into_iter().map(|(p, _)| p).collect();
        let mut backends = Vec::new();
        let mut by_name = HashMap::new();
        let mut listed = Vec::new();
        for m in &config.models {
            let Some(provider) = providers.get(m.provider.as_str()) else {
                continue;
            };
            let index = backends.len();
            let info = catalog.get(&m.catalog).or_else(|| catalog.get(&m.name)).cloned();
            let mut b = backend(&m.name, &m.upstream_model, &m.catalog, provider, info, metrics);
            b.missing_key = without_keys.contains(&m.provider.as_str());
            // A backend that remains keeps its health, its limiters' state and its spend.
            let kept = previous.and_then(|p| p.same_backend(&b));
            if let Some(k) = kept {
                b.health = k.health.clone();
            }
            b.limits = match kept.and_then(|k| k.limits.as_ref()).filter(|l| l.same(m.rpm, m.tpm)) {
                Some(l) => Some(l.clone()),
                None => Limits::new(m.rpm, m.tpm).map(Arc::new),
            };
            if m.budget.is_set() {
                b.budget = Some(BackendBudget {
                    limits: m.budget,
                    spend: kept
                        .and_then(|k| k.budget.as_ref())
                        .map_or_else(Arc::default, |k| k.spend.clone()),
                });
            }
            backends.push(Arc::new(b));
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                by_name.insert(name.clone(), index);
                listed.push((Arc::from(name.as_str()), index));
            }
        }
        let routes = config
            .routes
            .iter()
            .map(|r| Route::compile(r, |name| by_name.get(name).map(|&i| backends[i].clone())))
            .collect();
        let discoverers: Vec<Discoverer> = config
            .providers
            .iter()
            .filter(|p| p.kind.discovers_models())
            .filter_map(|p| {
                Some(Discoverer {
                    provider: providers.get(p.name.as_str())?.clone(),
                })
            })
            .collect();
        // Models discovered before a reload stay served (on the new provider,
        // with their health) until the next discovery says otherwise.
        let discovered: Vec<Arc<Backend>> = previous
            .map(|p| p.discovered.load_full())
            .into_iter()
            .flat_map(|old| old.iter().cloned().collect::<Vec<_>>())
            .filter(|old| !by_name.contains_key(&*old.model))
            .filter_map(|old| {
                let d = discoverers.iter().find(|d| d.provider.name == old.provider_name)?;
                let info = catalog.get(&old.model).cloned();
                let mut b = backend(&old.model, &old.upstream_model, &old.model, &d.provider, info, metrics);
                b.health = old.health.clone();
                Some(Arc::new(b))
            })
            .collect();
        let b = &config.routing.breaker;
        Router {
            backends,
            by_name,
            listed,
            routes,
            catalog,
            breaker: BreakerSettings {
                failures: b.failures,
                error_rate: b.error_rate,
                window: b.window,
                cooldown: b.cooldown.0,
            },
            health_checks: config.routing.health_checks.clone(),
            rng: Mutex::new(
                config
                    .routing
                    .seed
                    .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            ),
            discoverers,
            discovered: ArcSwap::from_pointee(discovered),
            metrics: metrics.clone(),
        }
    }

    /// This router's backend that is `b` again: same model, provider and upstream model.
    fn same_backend(&self, b: &Backend) -> Option<&Arc<Backend>> {
        self.backends
            .iter()
            .find(|x| x.model == b.model && x.provider_name == b.provider_name && x.upstream_model == b.upstream_model)
    }

    /// The backend of a model name: configured (name or alias) or discovered.
    pub fn resolve(&self, requested: &str) -> Result<Arc<Backend>, ApiError> {
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

    /// Every name a client may send (models, aliases, discovered models), with the provider that owns it.
    pub fn listed(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let configured = self
            .listed
            .iter()
            .map(|(name, i)| (name.clone(), self.backends[*i].provider_name.clone()));
        let discovered = self.discovered.load();
        let discovered = discovered.iter().map(|b| (b.model.clone(), b.provider_name.clone()));
        configured.chain(discovered).collect()
    }

    /// Chooses, filters and orders the backends for a request.
    pub fn decide(&self, f: &Features<'_>, headers: &HeaderMap, now: Instant) -> Result<Decision, ApiError> {
        let mut domain = LazyDomain::new(f.last_user_text, headers);
        let route = self.routes.iter().find(|r| r.matcher.matches(f, headers, &mut domain));
        let routed = route.is_some();
        let route_header = route.map_or(HeaderValue::from_static(DIRECT), |r| r.header.clone());
        let (name, strategy, targets, weights, objective, local_only, retry) = match route {
            Some(r) if !r.targets.is_empty() => (
                r.name.clone(),
                r.strategy,
                r.targets.clone(),
                r.weights.as_slice(),
                &r.objective,
                r.local_only,
                r.retry,
            ),
            // A route without targets applies its rules to the model asked for.
            Some(r) => (
                r.name.clone(),
                r.strategy,
                vec![self.resolve(f.model)?],
                &[][..],
                &r.objective,
                r.local_only,
                r.retry,
            ),
            None => (
                Arc::from(DIRECT),
                StrategyName::Priority,
                vec![self.resolve(f.model)?],
                &[][..],
                &NO_OBJECTIVE,
                false,
                NO_RETRY,
            ),
        };
        let several = targets.len() > 1;
        let mut candidates = Vec::with_capacity(targets.len());
        let mut dropped = Vec::new();
        for (position, b) in targets.into_iter().enumerate() {
            match unfit(&b, f, local_only, now, several, routed) {
                Some(reason) => dropped.push(Dropped {
                    model: b.model.clone(),
                    reason,
                }),
                None => candidates.push(candidate(b, position, f)),
            }
        }
        let mirror = route.and_then(|r| r.mirror.clone());
        let needs_domain = strategy == StrategyName::BestScore;
        let d = if needs_domain { domain.get() } else { Domain::General };
        strategy::order(strategy, &mut candidates, weights, objective, d, &self.rng);
        Ok(Decision {
            route: name,
            route_header,
            strategy,
            domain: domain.known(),
            candidates,
            dropped,
            retry,
            objective: objective.clone(),
            honour_cooldown: several,
            mirror,
        })
    }

    /// Whether this request is copied to the route's mirror: drawn only for a
    /// request about to be served, so an explanation or a refused request
    /// takes nothing from the seeded sequence.
    pub fn mirror_to(&self, decision: &Decision) -> Option<Arc<Backend>> {
        let (to, percent) = decision.mirror.as_ref()?;
        let draw = self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64() * 100.0;
        (draw < *percent).then(|| to.clone())
    }

    /// Every configured and discovered backend.
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let discovered = self.discovered.load();
        self.backends.iter().chain(discovered.iter()).cloned().collect()
    }

    /// Whether `refresh` has anything to do.
    pub fn discovers(&self) -> bool {
        !self.discoverers.is_empty()
    }

    /// Asks the providers that discover their models for the current list. A
    /// provider that cannot be asked keeps the models it had: a local server
    /// restarting does not empty `/v1/models`. Configured names win over
    /// discovered ones; a backend already known keeps its series and health.
    pub async fn refresh(&self) {
        let old = self.discovered.load_full();
        let mut next: Vec<Arc<Backend>> = Vec::new();
        for d in &self.discoverers {
            match d.provider.adapter.discover_models().await {
                Ok(names) => {
                    for name in names {
                        if self.by_name.contains_key(&name) || next.iter().any(|b| *b.model == *name) {
                            continue;
                        }
                        let known = old
                            .iter()
                            .find(|b| *b.model == *name && b.provider_name == d.provider.name);
                        next.push(known.cloned().unwrap_or_else(|| {
                            let info = self.catalog.get(&name).cloned();
                            Arc::new(backend(&name, &name, &name, &d.provider, info, &self.metrics))
                        }));
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = %d.provider.name, error = %e, "model discovery failed; keeping the last list");
                    next.extend(old.iter().filter(|b| b.provider_name == d.provider.name).cloned());
                }
            }
        }
        self.discovered.store(Arc::new(next));
    }
}

const NO_OBJECTIVE: Objective = Objective {
    score: None,
    max_cost: None,
    max_p95: None,
};

/// Requests no route matched: one try.
const NO_RETRY: Retry = Retry {
    attempts: Some(1),
    same_backend: 0,
    backoff: std::time::Duration::from_millis(100),
};

/// Why a backend cannot take a request, if it cannot; what the catalog does
/// not know is not held against a model. A model asked for by
/// name (`routed` false) is tried as it is, unless its budget is spent or its
/// circuit open: the route's filters are for choosing among targets.
fn unfit(
    b: &Backend,
    f: &Features<'_>,
    local_only: bool,
    now: Instant,
    cooldown: bool,
    routed: bool,
) -> Option<String> {
    if let Some(info) = b.info.as_ref().filter(|_| routed) {
        let needed = f.input_tokens + f.max_tokens.unwrap_or(0);
        if let Some(window) = info.context_window.filter(|w| needed > *w) {
            return Some(format!(
                "context window {window} tokens < about {needed} needed (prompt and max_tokens)"
            ));
        }
        let has_caps = !info.capabilities.is_empty();
        for (wanted, cap, name) in [
            (f.tools, Capability::Tools, "tools"),
            (f.images, Capability::Vision, "images"),
            (f.json_mode, Capability::Json, "JSON mode"),
        ] {
            if wanted && has_caps && !info.can(cap) {
                return Some(format!("cannot take {name}"));
            }
        }
    }
    if routed && b.missing_key {
        return Some(format!(
            "provider `{}` has no API key in the environment",
            b.provider_name
        ));
    }
    if routed && local_only && b.info.as_ref().is_none_or(|i| i.hosting != Hosting::SelfHosted) {
        return Some("not self-hosted, and the route keeps data local".into());
    }
    if let Some(spent) = budget_spent(b) {
        return Some(spent);
    }
    b.health.check(now, cooldown).err().map(|u| u.to_string())
}

/// Why a backend's own budget stops it, if it does.
fn budget_spent(b: &Backend) -> Option<String> {
    let (period, limit) = b.budget_spent()?;
    Some(format!(
        "its {} budget of ${} is spent",
        period.adjective(),
        crate::metering::cost::usd_text(limit)
    ))
}

fn candidate(backend: Arc<Backend>, position: usize, f: &Features<'_>) -> Candidate {
    let latency = backend.health.latency_ms();
    Candidate {
        expected_cost: expected_cost(&backend, f, latency),
        expected_latency_ms: latency,
        p95_ms: None,
        in_flight: backend.health.in_flight(),
        score: None,
        qualifies: false,
        position,
        backend,
    }
}

/// The request's expected cost in USD: its estimated prompt and its
/// `max_tokens` (or a typical answer) at the catalog's prices; a self-hosted
/// model's hourly cost spread over the request's expected busy time.
/// What the request would cost on `b`, by the same prices metering charges
/// (per-request fees and a self-hosted model's busy time included): its
/// estimated prompt and `max_tokens` (else 256), busy for its measured latency.
fn expected_cost(b: &Backend, f: &Features<'_>, latency_ms: Option<f64>) -> Option<f64> {
    let Some(pricing) = b.pricing else {
        // Self-hosted without an hourly cost: free as far as the catalog says.
        return b
            .info
            .as_ref()
            .filter(|i| i.hosting == Hosting::SelfHosted)
            .map(|_| 0.0);
    };
    let usage = crate::api::Usage::new(f.input_tokens, f.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS));
    let busy = std::time::Duration::from_secs_f64(latency_ms.map_or(DEFAULT_BUSY_SECS, |ms| ms / 1000.0));
    Some(crate::metering::cost::usd(pricing.cost(&usage, busy)))
}
