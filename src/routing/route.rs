//! A route compiled from the config: typed matchers built once at load, so
//! matching a request parses nothing and compiles nothing.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::Backend;
use super::classify::Domain;
use super::features::Features;
use super::glob::Glob;
use crate::config::schema::{RouteSection, StrategyName};
use crate::metering::Endpoint;

/// Which requested model names a route takes.
#[derive(Debug)]
enum ModelMatch {
    /// `auto`, optionally only for one domain (`auto:code`).
    Auto(Option<Domain>),
    Name(String),
    Pattern(Glob),
}

#[derive(Debug, Default)]
pub struct Matcher {
    models: Vec<ModelMatch>,
    endpoints: Vec<Endpoint>,
    /// (name, value); `None` = present with any value.
    headers: Vec<(HeaderName, Option<String>)>,
    keys: Vec<String>,
    teams: Vec<String>,
    user: Option<Glob>,
    metadata: Vec<(String, String)>,
    stream: Option<bool>,
    tools: Option<bool>,
    images: Option<bool>,
    json_mode: Option<bool>,
    min_input_tokens: Option<u64>,
    max_input_tokens: Option<u64>,
    domains: Vec<Domain>,
}

/// The domain of a request, found at most once and only if a route asks.
pub struct LazyDomain<'a> {
    text: &'a str,
    header: Option<Domain>,
    found: Option<Domain>,
}

impl<'a> LazyDomain<'a> {
    pub fn new(text: &'a str, headers: &HeaderMap) -> Self {
        let header = headers
            .get("x-tollgate-domain")
            .and_then(|v| v.to_str().ok())
            .and_then(Domain::parse);
        LazyDomain {
            text,
            header,
            found: None,
        }
    }

    pub fn get(&mut self) -> Domain {
        if let Some(d) = self.header.or(self.found) {
            return d;
        }
        let d = super::classify::classify(self.text);
        self.found = Some(d);
        d
    }

    /// The domain if it was needed (classified or given).
    pub fn known(&self) -> Option<Domain> {
        self.header.or(self.found)
    }
}

impl Matcher {
    fn compile(section: &crate::config::schema::MatchSection) -> Self {
        let models = section
            .model
            .0
            .iter()
            .map(|m| match m.as_str() {
                "auto" => ModelMatch::Auto(None),
                _ if m.starts_with("auto:") => ModelMatch::Auto(Domain::parse(&m[5..])),
                _ if Glob::new(m).is_literal() => ModelMatch::Name(m.clone()),
                _ => ModelMatch::Pattern(Glob::new(m)),
            })
            .collect();
        let endpoints = section
            .endpoint
            .0
            .iter()
            .filter_map(|e| Endpoint::ALL.into_iter().find(|x| x.as_str() == e))
            .collect();
        let headers = section
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
                Some((name, (v != "*").then(|| v.clone())))
            })
            .collect();
        Matcher {
            models,
            endpoints,
            headers,
            keys: section.keys.0.clone(),
            teams: section.teams.0.clone(),
            user: section.user.as_deref().map(Glob::new),
            metadata: section.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            stream: section.stream,
            tools: section.tools,
            images: section.images,
            json_mode: section.json_mode,
            min_input_tokens: section.min_input_tokens,
            max_input_tokens: section.max_input_tokens,
            domains: section.domain.0.iter().filter_map(|d| Domain::parse(d)).collect(),
        }
    }

    /// Whether every condition holds; the cheap ones are checked first and
    /// the domain (the classifier) last.
    pub fn matches(&self, f: &Features<'_>, headers: &HeaderMap, domain: &mut LazyDomain<'_>) -> bool {
        let is = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
        if !(self.endpoints.is_empty() || self.endpoints.contains(&f.endpoint))
            || !is(self.stream, f.stream)
            || !is(self.tools, f.tools)
            || !is(self.images, f.images)
            || !is(self.json_mode, f.json_mode)
            || self.min_input_tokens.is_some_and(|m| f.input_tokens < m)
            || self.max_input_tokens.is_some_and(|m| f.input_tokens > m)
        {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, want)| match (headers.get(name), want) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(w)) => v.as_bytes() == w.as_bytes(),
        });
        let keys_ok = self.keys.is_empty() || f.key_id.is_some_and(|id| self.keys.iter().any(|k| k == id));
        let teams_ok = self.teams.is_empty() || f.team.is_some_and(|t| self.teams.iter().any(|k| k == t));
        let user_ok = self.user.as_ref().is_none_or(|g| f.user.is_some_and(|u| g.matches(u)));
        let metadata_ok = self.metadata.iter().all(|(k, v)| {
            f.metadata
                .and_then(|m| m.get(k))
                .and_then(serde_json::Value::as_str)
                .is_some_and(|have| have == v)
        });
        if !(headers_ok && keys_ok && teams_ok && user_ok && metadata_ok) {
            return false;
        }
        let model_ok = self.models.is_empty()
            || self.models.iter().any(|m| match m {
                ModelMatch::Name(n) => n == f.model,
                ModelMatch::Pattern(g) => g.matches(f.model),
                ModelMatch::Auto(None) => f.model == "auto",
                ModelMatch::Auto(Some(d)) => {
                    f.model.strip_prefix("auto:").and_then(Domain::parse) == Some(*d)
                        || (f.model == "auto" && domain.get() == *d)
                }
            });
        model_ok && (self.domains.is_empty() || self.domains.contains(&domain.get()))
    }
}

/// How many tries, where, and how long to wait between tries on one backend.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: Option<u32>,
    pub same_backend: u32,
    pub backoff: Duration,
}

/// What `best-score` optimises and within which limits.
#[derive(Debug, Clone, Default)]
pub struct Objective {
    pub score: Option<String>,
    pub max_cost: Option<f64>,
    pub max_p95: Option<Duration>,
}

pub struct Route {
    pub name: Arc<str>,
    /// `x-tollgate-route`, built once.
    pub header: http::HeaderValue,
    pub matcher: Matcher,
    /// Empty: the requested model's backend.
    pub targets: Vec<Arc<Backend>>,
    pub weights: Vec<u32>,
    pub strategy: StrategyName,
    pub objective: Objective,
    pub local_only: bool,
    pub retry: Retry,
    /// The shadow backend and the share (percent) of requests copied to it.
    pub mirror: Option<(Arc<Backend>, f64)>,
}

impl Route {
    /// Compiles a validated route; `backend` finds a configured model by name or alias.
    pub fn compile(section: &RouteSection, backend: impl Fn(&str) -> Option<Arc<Backend>>) -> Self {
        let targets: Vec<Arc<Backend>> = section.targets.iter().filter_map(|t| backend(t)).collect();
        let weights = section
            .targets
            .iter()
            .map(|t| section.weights.get(t).copied().unwrap_or(1))
            .collect();
        Route {
            name: section.name.as_str().into(),
            header: http::HeaderValue::from_str(&section.name).unwrap_or(http::HeaderValue::from_static("-")),
            matcher: Matcher::compile(&section.when),
            targets,
            weights,
            strategy: section.strategy,
            objective: Objective {
                score: section.objective.score.clone(),
                max_cost: section.objective.max_cost_per_request,
                max_p95: section.objective.max_p95_latency.map(|d| d.0),
            },
            local_only: section.local_only,
            retry: Retry {
                attempts: section.retry.attempts,
                same_backend: section.retry.same_backend,
                backoff: section.retry.backoff.0,
            },
            mirror: section.mirror.as_ref().and_then(|m| Some((backend(&m.to)?, m.percent))),
        }
    }
}
