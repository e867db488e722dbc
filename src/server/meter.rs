//! Accounting for one proxied request, from its first byte to its last,
//! however it ends: answered, failed, streamed, cut off by the client, or
//! panicked. It records when dropped, so no path can skip it or count twice.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::api::Usage;
use crate::metering::cost::{Pico, Pricing};
use crate::metering::estimate;
use crate::metering::ledger::{Ledger, Row};
use crate::metering::metrics::{InFlight, MirrorSide};
use crate::metering::{Endpoint, Labels, Metrics, Series};
use crate::routing::Backend;

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
    /// Characters of generated text streamed so far, and the prompt's
    /// estimated tokens: the estimate when a stream ends without usage.
    streamed_chars: usize,
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
        }
    }

    /// Writes a ledger row when the request ends; `id` and `key_id` say whose request it was.
    pub fn ledger(&mut self, ledger: Option<Ledger>, id: &str, key_id: Option<String>) {
        self.ledger = ledger;
        if self.ledger.is_some() {
            self.row.id = id.to_owned();
            self.row.key_id = key_id;
        }
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

    /// From now on the request is labelled with its model and provider.
    pub fn resolved(&mut self, backend: &Backend) {
        let series = backend.series[self.endpoint as usize].clone();
        self.backend = Some((backend.model.clone(), backend.provider_name.clone(), series));
        self.pricing = backend.pricing;
        self.system = backend.system;
        if self.ledger.is_some() {
            self.row.served_model = backend.upstream_model.to_string();
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

    /// More generated text went to the client.
    pub fn streamed(&mut self, chars: usize) {
        self.streamed_chars += chars;
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
}

impl RequestMeter {
    /// The ledger's row for this request, as it ended.
    fn ledger_row(&mut self, status: u16, elapsed: std::time::Duration) -> Row {
        let mut row = std::mem::take(&mut self.row);
        let labels = self.labels();
        row.backend = if labels.provider.is_empty() {
            String::new()
        } else {
            format!("{}/{}", labels.provider, labels.model)
        };
        row.provider = labels.provider.to_owned();
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
            let completion = estimate::tokens_of_chars(self.streamed_chars);
            self.usage(Usage::estimated(self.prompt_estimate, completion));
        }
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
