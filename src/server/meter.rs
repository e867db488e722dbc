//! Accounting for one proxied request, from its first byte to its last,
//! however it ends: answered, failed, streamed, cut off by the client, or
//! panicked. It records when dropped, so no path can skip it or count twice.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::api::Usage;
use crate::keys::Caller;
use crate::keys::budget::{Now, Period};
use crate::metering::cost::{Pico, Pricing};
use crate::metering::estimate;
use crate::metering::ledger::{Ledger, Row};
use crate::metering::metrics::{InFlight, KeyOutcome, MirrorSide};
use crate::metering::{Endpoint, Labels, Metrics, Series};
use crate::routing::Backend;
use crate::routing::limits::Reservation;

/// Text kept per stream for an exact count, at most; beyond, characters are counted.
/// 64 KiB is about 16k tokens, a few milliseconds of counting at the end of a
/// cut stream, on the worker that drops it.
const MAX_KEPT_TEXT: usize = 64 << 10;

pub struct RequestMeter {
    metrics: Arc<Metrics>,
    endpoint: Endpoint,
    /// Model and provider names, and their series, once the model is resolved.
    backend: Option<(Arc<str>, Arc<str>, Arc<Series>)>,
    pricing: Option<Pricing>,
    /// The backend's `gen_ai.provider.name`, once resolved.
    system: &'static str,
    /// Time to the first content chunk, for the time per output token.
    ttft: Option<std::time::Duration>,
    /// Generated text streamed so far: all its characters, and for a backend
    /// with an exact tokenizer the text itself (up to `MAX_KEPT_TEXT`; beyond,
    /// characters); with the prompt's estimated tokens, the estimate when a
    /// stream ends without usage.
    streamed_chars: usize,
    streamed_text: String,
    overflow_chars: usize,
    counter: estimate::Counter,
    prompt_estimate: u64,
    /// The cost of `usage`, fixed when the usage arrives.
    cost: Option<Pico>,
    started: Instant,
    usage: Option<Usage>,
    first_token_seen: bool,
    /// Unset when dropped means the client went away (499).
    status: Option<u16>,
    _in_flight: InFlight,
    /// The request's share of `server.max_concurrent_requests`, held to the end of a stream.
    _permit: OwnedSemaphorePermit,
    /// Set when the route mirrors this request: the primary side is recorded for comparison.
    mirror_route: Option<Arc<str>>,
    /// The usage ledger, and what its row says beyond the metrics.
    ledger: Option<Ledger>,
    row: Row,
    /// Whose key: its spend, limits and labels.
    caller: Option<Caller>,
    /// Tokens reserved from the key's and team's limits, and from the serving backend's.
    reserved: Vec<Reservation>,
    backend_reserved: Option<Reservation>,
    /// Set when a stream ends at the caller's budget (`auth.cut_streams_over_budget`).
    watch_budget: bool,
    /// Time spent waiting on upstreams: what is not tollgate's overhead.
    upstream_wait: std::time::Duration,
    /// The serving backend's budget spend, when it has a budget.
    backend_spend: Option<Arc<crate::keys::budget::Spend>>,
}

/// A stream that crossed a budget: whose (`key` or `team`), which period, what limit.
#[derive(Debug, Clone, Copy)]
pub struct Crossed {
    pub scope: &'static str,
    pub period: Period,
    pub limit: Pico,
}

impl RequestMeter {
    pub fn start(metrics: Arc<Metrics>, endpoint: Endpoint, permit: OwnedSemaphorePermit) -> Self {
        let in_flight = metrics.start();
        RequestMeter {
            metrics,
            endpoint,
            backend: None,
            pricing: None,
            system: "",
            ttft: None,
            streamed_chars: 0,
            streamed_text: String::new(),
            overflow_chars: 0,
            counter: estimate::Counter::Approximate,
            prompt_estimate: 0,
            cost: None,
            started: Instant::now(),
            usage: None,
            first_token_seen: false,
            status: None,
            _in_flight: in_flight,
            _permit: permit,
            mirror_route: None,
            ledger: None,
            row: Row::default(),
            caller: None,
            reserved: Vec::new(),
            backend_reserved: None,
            watch_budget: false,
            upstream_wait: std::time::Duration::ZERO,
            backend_spend: None,
        }
    }

    /// Writes a ledger row, with request id `id`, when the request ends.
    pub fn ledger(&mut self, ledger: Option<Ledger>, id: &str) {
        self.ledger = ledger;
        if self.ledger.is_some() {
            self.row.id = id.to_owned();
        }
    }

    /// Whose request this is: the ledger's key id and team, the budget its cost is spent from.
    pub fn caller(&mut self, caller: Option<Caller>) {
        self.caller = caller;
    }

    /// Tokens reserved from the caller's limits, settled with the usage at the end.
    pub fn reserved(&mut self, reservation: Option<Reservation>) {
        self.reserved.extend(reservation);
    }

    /// Ends the stream if it crosses the caller's budget.
    pub fn watch_budget(&mut self) {
        self.watch_budget = self.caller.as_ref().is_some_and(|c| c.managed().is_some());
    }

    /// Time spent waiting on an upstream.
    pub fn waited(&mut self, time: std::time::Duration) {
        self.upstream_wait += time;
    }

    /// What was asked and how it was routed, for the ledger.
    pub fn routed(&mut self, route: &str, requested_model: &str, stream: bool) {
        if self.ledger.is_some() {
            route.clone_into(&mut self.row.route);
            requested_model.clone_into(&mut self.row.requested_model);
            self.row.stream = stream;
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// From now on the request is labelled with its model and provider;
    /// `reservation` is what it reserved of the backend's tokens per minute
    /// (a previous backend's, which did not serve, is given back).
    pub fn resolved(&mut self, backend: &Backend, reservation: Option<Reservation>) {
        if let Some(previous) = std::mem::replace(&mut self.backend_reserved, reservation) {
            previous.settle(0);
        }
        let series = backend.series[self.endpoint as usize].clone();
        self.backend = Some((backend.model.clone(), backend.provider_name.clone(), series));
        self.pricing = backend.pricing;
        self.system = backend.system;
        self.counter = backend.counter;
        self.backend_spend = backend.budget.as_ref().map(|b| b.spend.clone());
        if self.ledger.is_some() {
            self.row.served_model = backend.upstream_model.to_string();
            backend.label.as_ref().clone_into(&mut self.row.backend);
        }
    }

    /// Labels the request with `backend` if no backend was tried.
    pub fn attribute(&mut self, backend: &Backend) {
        if self.backend.is_none() {
            self.resolved(backend, None);
        }
    }

    fn labels(&self) -> Labels<'_> {
        let (model, provider) = self.backend.as_ref().map_or(("", ""), |(m, p, _)| (&**m, &**p));
        Labels {
            endpoint: self.endpoint.as_str(),
            model,
            provider,
        }
    }

    pub fn provider(&self) -> &str {
        self.labels().provider
    }

    /// The request's usage; its cost is computed now, at the catalog's prices
    /// (a self-hosted model's busy time is the time so far).
    pub fn usage(&mut self, usage: Usage) {
        self.cost = self.pricing.map(|p| p.cost(&usage, self.started.elapsed()));
        self.usage = Some(usage);
    }

    /// A chunk of generated text went to the client (`data`: the chunk's
    /// JSON). Says whether the stream has now crossed its caller's budget,
    /// when that is watched (by the approximate count: it runs per chunk).
    pub fn streamed(&mut self, data: &[u8]) -> Option<Crossed> {
        let keep_text = self.counter.is_exact();
        estimate::generated_text(data, |c| {
            self.streamed_chars += 1;
            if keep_text {
                if self.streamed_text.len() < MAX_KEPT_TEXT {
                    self.streamed_text.push(c);
                } else {
                    self.overflow_chars += 1;
                }
            }
        });
        if !self.watch_budget || self.usage.is_some() {
            return None;
        }
        let pricing = self.pricing?;
        let key = self.caller.as_ref()?.managed()?;
        let so_far = Usage::estimated(self.prompt_estimate, estimate::tokens_of_chars(self.streamed_chars));
        let running = pricing.cost(&so_far, self.started.elapsed());
        let now = Now::current();
        let crossed = |scope, budget: crate::keys::Budget, spend: &crate::keys::budget::Spend| {
            budget
                .crossed_by(spend.spent(now), running)
                .map(|(period, limit)| Crossed { scope, period, limit })
        };
        crossed("key", key.record.budget(), &key.spend)
            .or_else(|| key.team.as_ref().and_then(|t| crossed("team", t.spec.budget, &t.spend)))
    }

    /// The tokens of the text streamed so far: by the backend's tokenizer, or approximated.
    fn streamed_tokens(&self) -> u64 {
        if self.counter.is_exact() {
            self.counter.count(&self.streamed_text) + estimate::tokens_of_chars(self.overflow_chars)
        } else {
            estimate::tokens_of_chars(self.streamed_chars)
        }
    }

    /// The prompt's estimated tokens, for a stream that ends without usage.
    pub fn prompt_estimate(&mut self, tokens: u64) {
        self.prompt_estimate = tokens;
    }

    /// What the request cost, once its usage is known and its model priced.
    pub fn cost(&self) -> Option<Pico> {
        self.cost
    }

    /// The first chunk that carries content: time to first token.
    pub fn first_token(&mut self) {
        if self.first_token_seen {
            return;
        }
        self.first_token_seen = true;
        let elapsed = self.started.elapsed();
        self.ttft = Some(elapsed);
        match &self.backend {
            Some((_, _, series)) => series.first_token(elapsed),
            None => self.metrics.first_token(self.labels(), elapsed),
        }
    }

    pub fn upstream_error(&mut self, kind: &str) {
        self.metrics.upstream_error(self.labels().provider, kind);
        if self.ledger.is_some() {
            self.row.error_kind = Some(kind.to_owned());
        }
    }

    /// This request is mirrored by `route`.
    pub fn mirrored(&mut self, route: Arc<str>) {
        self.mirror_route = Some(route);
    }

    pub fn finish(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// The stream was ended at its budget.
    pub fn cut_at_budget(&mut self, crossed: Crossed) {
        self.metrics.budget_cutoff(crossed.scope, crossed.period.as_str());
        if self.ledger.is_some() {
            self.row.error_kind = Some("budget_cutoff".to_owned());
        }
        self.finish(429);
    }

    /// Settles token reservations with the usage, spends the cost from every
    /// budget it counts against (the serving backend's, the key's, its
    /// team's) and counts the key's series.
    fn account(&mut self, status: u16) {
        let used = self.usage.as_ref().map_or(0, |u| u.prompt_tokens + u.completion_tokens);
        for r in self.reserved.drain(..) {
            r.settle(used);
        }
        if let Some(r) = self.backend_reserved.take() {
            r.settle(used);
        }
        let key = self.caller.as_ref().and_then(Caller::managed);
        if let Some(pico) = self.cost.filter(|_| self.backend_spend.is_some() || key.is_some()) {
            let now = Now::current();
            let budgets = self
                .backend_spend
                .iter()
                .map(|s| &**s)
                .chain(key.map(|k| &*k.spend))
                .chain(key.and_then(|k| k.team.as_ref()).map(|t| &*t.spend));
            for spend in budgets {
                spend.add(now, pico);
            }
        }
        let Some(caller) = &self.caller else { return };
        if self.metrics.key_labels() && caller.is_known() {
            self.metrics.key_request(KeyOutcome {
                key: caller.id(),
                team: caller.team().unwrap_or(""),
                status,
                usage: self.usage.as_ref(),
                cost: self.cost,
            });
        }
    }
}

impl RequestMeter {
    /// The ledger's row for this request, as it ended.
    fn ledger_row(&mut self, status: u16, elapsed: std::time::Duration) -> Row {
        let mut row = std::mem::take(&mut self.row);
        let labels = self.labels();
        row.provider = labels.provider.to_owned();
        if let Some(c) = &self.caller {
            row.key_id = Some(c.id().to_owned());
            row.team = c.team().map(str::to_owned);
        }
        row.set_usage(self.usage.as_ref(), self.cost);
        row.set_timing(elapsed);
        row.ttft_ms = self.ttft.map(|t| t.as_millis() as i64);
        row.status = i64::from(status);
        row
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(if std::thread::panicking() { 500 } else { 499 });
        let elapsed = self.started.elapsed();
        if self.usage.is_none() && self.streamed_chars > 0 {
            // Cut or cancelled midway: what was produced is metered and costed, marked estimated.
            let completion = self.streamed_tokens();
            self.usage(Usage::estimated(self.prompt_estimate, completion));
        }
        self.metrics
            .overhead(self.endpoint, elapsed.saturating_sub(self.upstream_wait));
        self.account(status);
        if let Some(ledger) = self.ledger.take() {
            ledger.record(self.ledger_row(status, elapsed));
        }
        if let Some(route) = &self.mirror_route {
            let labels = self.labels();
            self.metrics.mirrored(MirrorSide {
                route,
                role: "primary",
                model: labels.model,
                provider: labels.provider,
                status,
                elapsed,
                usage: self.usage.as_ref(),
                cost: self.cost,
            });
        }
        if let (200, Some((_, _, series))) = (status, &self.backend) {
            // The common path: handles resolved at load, no label hashing.
            series.success(elapsed);
            series.gen_ai(elapsed, self.usage.as_ref(), self.ttft);
            if let Some(usage) = &self.usage {
                series.usage(usage);
                if let Some(pico) = self.cost {
                    series.cost(pico);
                }
            }
            return;
        }
        let labels = self.labels();
        self.metrics.request(labels, status, elapsed);
        if self.backend.is_some() {
            self.metrics
                .gen_ai_failure(labels, self.system, &status.to_string(), elapsed);
        }
        if let Some(usage) = &self.usage {
            self.metrics.usage(labels, usage);
            if let Some(pico) = self.cost {
                self.metrics.cost(labels, pico);
            }
        }
    }
}
