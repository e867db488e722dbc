//! The Prometheus registry behind `/metrics`. Labels are bounded: endpoint,
//! configured model and provider names, and status; never request ids or
//! raw keys. Key ids and teams label the `tollgate_key_*` series, only when
//! the operator turns them on (`metrics.key_labels`), and the budget gauge,
//! one series per budget the operator set.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::api::Usage;
use crate::api::usage::ReportedTime;
use crate::metering::cost::Pico;
use crate::metering::exact::{ExactCounter, ExactCounterVec};

/// The proxy endpoints, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat = 0,
    Completions = 1,
    Embeddings = 2,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// The series of one endpoint, model and provider, looked up once when the
/// config loads, so a request's successful path hashes no label values.
pub struct Series {
    ok: prometheus::IntCounter,
    duration: prometheus::Histogram,
    ttft: prometheus::Histogram,
    /// By type, in `TOKEN_TYPES` order.
    tokens: [prometheus::IntCounter; 5],
    /// By phase, in `ReportedTime::phases` order.
    reported: [prometheus::Counter; 4],
    cost: ExactCounter,
    gen_ai: GenAiSeries,
}

/// The OpenTelemetry GenAI histograms of one backend and endpoint.
struct GenAiSeries {
    input_tokens: prometheus::Histogram,
    output_tokens: prometheus::Histogram,
    duration: prometheus::Histogram,
    ttft: prometheus::Histogram,
    per_output_token: prometheus::Histogram,
}

/// OpenTelemetry's GenAI metrics, with the semantic conventions' bucket
/// boundaries and attribute names in Prometheus form.
struct GenAi {
    tokens: HistogramVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    per_output_token: HistogramVec,
}

const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
const OPERATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];

/// `gen_ai.operation.name` of an endpoint.
fn operation(endpoint: &str) -> &'static str {
    match endpoint {
        "completions" => "text_completion",
        "embeddings" => "embeddings",
        _ => "chat",
    }
}

impl Series {
    pub fn cost(&self, pico: Pico) {
        self.cost.add(pico);
    }

    pub fn success(&self, elapsed: Duration) {
        self.ok.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn first_token(&self, elapsed: Duration) {
        self.ttft.observe(elapsed.as_secs_f64());
        self.gen_ai.ttft.observe(elapsed.as_secs_f64());
    }

    /// A successful operation in OpenTelemetry's terms: its duration, its
    /// tokens and, for a stream, the time per output token after the first.
    pub fn gen_ai(&self, elapsed: Duration, usage: Option<&Usage>, ttft: Option<Duration>) {
        let g = &self.gen_ai;
        g.duration.observe(elapsed.as_secs_f64());
        let Some(u) = usage else { return };
        g.input_tokens.observe(u.prompt_tokens as f64);
        g.output_tokens.observe(u.completion_tokens as f64);
        if let Some(first) = ttft.filter(|_| u.completion_tokens > 1) {
            let after = elapsed.saturating_sub(first).as_secs_f64();
            g.per_output_token.observe(after / (u.completion_tokens - 1) as f64);
        }
    }

    pub fn usage(&self, usage: &Usage) {
        for (counter, n) in self.tokens.iter().zip(token_counts(usage)) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        if !usage.reported_time.is_zero() {
            for (counter, (_, time)) in self.reported.iter().zip(usage.reported_time.phases()) {
                counter.inc_by(time.as_secs_f64());
            }
        }
    }
}

/// The `type` label of each token kind. Cached and cache-written tokens are
/// part of the prompt's, reasoning tokens part of the completion's.
const TOKEN_TYPES: [&str; 5] = ["prompt", "completion", "cached", "cache_write", "reasoning"];

/// A usage's tokens, in `TOKEN_TYPES` order.
fn token_counts(u: &Usage) -> [u64; 5] {
    [
        u.prompt_tokens,
        u.completion_tokens,
        u.cached_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    ]
}

/// Who served a request, as metric labels.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub endpoint: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    tokens: IntCounterVec,
    reported: CounterVec,
    upstream_errors: IntCounterVec,
    in_flight: IntGauge,
    reloads: IntCounterVec,
    mirror: MirrorMetrics,
    routing: RoutingMetrics,
    cost: ExactCounterVec,
    gen_ai: GenAi,
    ledger_rows: IntCounterVec,
    ledger_queue: IntGauge,
    rate_limited: IntCounterVec,
    overhead: [Histogram; 3],
    health_checks: IntCounterVec,
    budget: BudgetMetrics,
    /// `metrics.key_labels`: per key and team series.
    keys: Option<KeyMetrics>,
}

/// Budgets: refusals, streams cut, and how much of each budget is spent.
struct BudgetMetrics {
    rejected: IntCounterVec,
    cutoffs: IntCounterVec,
    used: GaugeVec,
}

/// Requests, tokens and cost by key id and team.
struct KeyMetrics {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: ExactCounterVec,
}

/// One finished request of a key, for [`Metrics::key_request`].
pub struct KeyOutcome<'a> {
    pub key: &'a str,
    pub team: &'a str,
    pub status: u16,
    pub usage: Option<&'a Usage>,
    pub cost: Option<Pico>,
}

/// What the router decided and how often it had to try again.
struct RoutingMetrics {
    decisions: IntCounterVec,
    retries: IntCounterVec,
    circuit: IntGaugeVec,
}

/// Requests a route mirrors: the primary's and the shadow's outcome on the
/// same requests, side by side, apart from the ordinary request metrics (which
/// count only what clients were answered).
struct MirrorMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    tokens: IntCounterVec,
    cost: ExactCounterVec,
    skipped: IntCounterVec,
}

/// One side of a mirrored request, for [`Metrics::mirrored`].
pub struct MirrorSide<'a> {
    pub route: &'a str,
    /// `primary` or `shadow`.
    pub role: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    pub usage: Option<&'a Usage>,
    pub cost: Option<Pico>,
}

/// Decrements the in-flight gauge when the request, stream included, is over.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Request durations from 5 ms to 5 minutes: LLM calls span that range.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// tollgate's own time per request: tens of microseconds, up to a stalled millisecond or more.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

impl Metrics {
    pub fn new() -> Self {
        Self::with_key_labels(false)
    }

    /// With `key_labels`, the `tollgate_key_*` series too.
    pub fn with_key_labels(key_labels: bool) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_requests_total",
                "Requests answered, by endpoint, model, provider and HTTP status (499: the client went away)",
            ),
            &["endpoint", "model", "provider", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_request_duration_seconds",
                "Time from request to the last byte of the answer",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["endpoint", "model", "provider"],
        )
        .expect("valid metric");
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_time_to_first_token_seconds",
                "Time from request to the first streamed chunk",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["endpoint", "model", "provider"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "tollgate_tokens_total",
                "Tokens by model, provider and type (prompt, completion; cached, cache_write: part of prompt; reasoning: part of completion)",
            ),
            &["model", "provider", "type"],
        )
        .expect("valid metric");
        let reported = CounterVec::new(
            Opts::new(
                "tollgate_upstream_reported_seconds_total",
                "Time upstreams report spending on requests (Ollama, TGI), by model, provider and phase (load, queue, prompt, generation)",
            ),
            &["model", "provider", "phase"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "tollgate_config_reloads_total",
                "Config reloads by result (ok, error: the file was rejected and the running config stays)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let mirror_labels = ["route", "role", "model", "provider"];
        let mirror = MirrorMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "tollgate_mirror_requests_total",
                    "Mirrored requests, the primary's and the shadow's answer, by route, role, model, provider and status",
                ),
                &["route", "role", "model", "provider", "status"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "tollgate_mirror_request_duration_seconds",
                    "Mirrored requests' time to the last byte, primary and shadow",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &mirror_labels,
            )
            .expect("valid metric"),
            tokens: IntCounterVec::new(
                Opts::new(
                    "tollgate_mirror_tokens_total",
                    "Mirrored requests' tokens, primary and shadow, by type (prompt, completion)",
                ),
                &["route", "role", "model", "provider", "type"],
            )
            .expect("valid metric"),
            cost: ExactCounterVec::new(
                "tollgate_mirror_cost_usd_total",
                "Mirrored requests' cost in USD at the catalog's prices, primary and shadow",
                &mirror_labels,
            ),
            skipped: IntCounterVec::new(
                Opts::new(
                    "tollgate_mirror_skipped_total",
                    "Requests a route would have mirrored while the shadow capacity was full",
                ),
                &["route"],
            )
            .expect("valid metric"),
        };
        let routing = RoutingMetrics {
            decisions: IntCounterVec::new(
                Opts::new(
                    "tollgate_route_decisions_total",
                    "Requests answered, by the route that matched (direct: none) and the backend that served",
                ),
                &["route", "model", "provider"],
            )
            .expect("valid metric"),
            retries: IntCounterVec::new(
                Opts::new(
                    "tollgate_retries_total",
                    "Attempts after the first, by route and kind (fallback: the next backend; same_backend: the same one again)",
                ),
                &["route", "kind"],
            )
            .expect("valid metric"),
            circuit: IntGaugeVec::new(
                Opts::new(
                    "tollgate_circuit_state",
                    "Each backend's circuit breaker: 0 closed, 1 half-open (probing), 2 open",
                ),
                &["model", "provider"],
            )
            .expect("valid metric"),
        };
        let cost = ExactCounterVec::new(
            "tollgate_cost_usd_total",
            "What requests cost in USD at the catalog's prices, by model and provider (summed exactly in pico-dollars)",
            &["model", "provider"],
        );
        let gen_ai_labels = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"];
        let gen_ai = GenAi {
            tokens: HistogramVec::new(
                HistogramOpts::new("gen_ai_client_token_usage", "Number of input and output tokens used (OpenTelemetry GenAI)")
                    .buckets(TOKEN_BUCKETS.to_vec()),
                &[
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_token_type",
                ],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new("gen_ai_client_operation_duration_seconds", "GenAI operation duration (OpenTelemetry GenAI)")
                    .buckets(OPERATION_BUCKETS.to_vec()),
                &[
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "error_type",
                ],
            )
            .expect("valid metric"),
            ttft: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_time_to_first_token_seconds",
                    "Time to generate the first token for successful responses (OpenTelemetry GenAI)",
                )
                .buckets(TTFT_BUCKETS.to_vec()),
                &gen_ai_labels,
            )
            .expect("valid metric"),
            per_output_token: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_time_per_output_token_seconds",
                    "Time per output token generated after the first token for successful responses (OpenTelemetry GenAI)",
                )
                .buckets(TPOT_BUCKETS.to_vec()),
                &gen_ai_labels,
            )
            .expect("valid metric"),
        };
        let ledger_rows = IntCounterVec::new(
            Opts::new(
                "tollgate_ledger_rows_total",
                "Usage ledger rows by result (written; dropped: the queue was full; failed: the database refused them)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let ledger_queue = IntGauge::new("tollgate_ledger_queue_rows", "Usage ledger rows waiting to be written")
            .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "tollgate_rate_limited_total",
                "Requests held back by a rate limit, by scope (backend: skipped for it; key, team: refused), model and provider (backend scope only) and limit (requests, tokens)",
            ),
            &["scope", "model", "provider", "limit"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_upstream_errors_total",
                "Upstream failures by provider and kind",
            ),
            &["provider", "kind"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "tollgate_in_flight_requests",
            "Requests being served now, streams included",
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new(
                "tollgate_build_info",
                "Always 1; the version label says which tollgate runs",
            ),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Both results from the start, so `increase()` sees the first rejected reload.
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        let overhead = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_overhead_seconds",
                "tollgate's own time per request: its duration minus the time spent waiting on upstreams",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
            &["endpoint"],
        )
        .expect("valid metric");
        let health_checks = IntCounterVec::new(
            Opts::new(
                "tollgate_health_checks_total",
                "Active health checks by provider and result (ok; failed: the circuit opens; inconclusive: the answer says nothing of health)",
            ),
            &["provider", "result"],
        )
        .expect("valid metric");
        let budget = BudgetMetrics {
            rejected: IntCounterVec::new(
                Opts::new(
                    "tollgate_budget_rejected_total",
                    "Requests refused because a key's or team's budget was spent, by scope (key, team) and period (day, month)",
                ),
                &["scope", "period"],
            )
            .expect("valid metric"),
            cutoffs: IntCounterVec::new(
                Opts::new(
                    "tollgate_budget_stream_cutoffs_total",
                    "Streams ended midway because they crossed a key's or team's budget, by scope and period",
                ),
                &["scope", "period"],
            )
            .expect("valid metric"),
            used: GaugeVec::new(
                Opts::new(
                    "tollgate_budget_used_ratio",
                    "Share of each budget spent (1 = all of it), by scope (key, team, backend), name (key id, team, provider/model) and period",
                ),
                &["scope", "name", "period"],
            )
            .expect("valid metric"),
        };
        let keys = key_labels.then(|| KeyMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "tollgate_key_requests_total",
                    "Requests by gateway key id, team and HTTP status",
                ),
                &["key", "team", "status"],
            )
            .expect("valid metric"),
            tokens: IntCounterVec::new(
                Opts::new("tollgate_key_tokens_total", "Tokens by gateway key id, team and type"),
                &["key", "team", "type"],
            )
            .expect("valid metric"),
            cost: ExactCounterVec::new(
                "tollgate_key_cost_usd_total",
                "Cost in USD at the catalog's prices by gateway key id and team",
                &["key", "team"],
            ),
        });
        if let Some(k) = &keys {
            for c in [
                Box::new(k.requests.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(k.tokens.clone()),
                Box::new(k.cost.clone()),
            ] {
                registry.register(c).expect("metric names are unique");
            }
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(ttft.clone()),
            Box::new(tokens.clone()),
            Box::new(reported.clone()),
            Box::new(reloads.clone()),
            Box::new(mirror.requests.clone()),
            Box::new(mirror.duration.clone()),
            Box::new(mirror.tokens.clone()),
            Box::new(mirror.cost.clone()),
            Box::new(mirror.skipped.clone()),
            Box::new(routing.decisions.clone()),
            Box::new(routing.retries.clone()),
            Box::new(routing.circuit.clone()),
            Box::new(cost.clone()),
            Box::new(gen_ai.tokens.clone()),
            Box::new(gen_ai.duration.clone()),
            Box::new(gen_ai.ttft.clone()),
            Box::new(gen_ai.per_output_token.clone()),
            Box::new(ledger_rows.clone()),
            Box::new(ledger_queue.clone()),
            Box::new(rate_limited.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(overhead.clone()),
            Box::new(health_checks.clone()),
            Box::new(budget.rejected.clone()),
            Box::new(budget.cutoffs.clone()),
            Box::new(budget.used.clone()),
            Box::new(build),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            ttft,
            tokens,
            reported,
            upstream_errors,
            in_flight,
            reloads,
            mirror,
            routing,
            cost,
            gen_ai,
            ledger_rows,
            ledger_queue,
            rate_limited,
            overhead: Endpoint::ALL.map(|e| overhead.with_label_values(&[e.as_str()])),
            health_checks,
            budget,
            keys,
        }
    }

    /// An active health check of `provider`: `ok`, `failed` or `inconclusive`.
    pub fn health_check(&self, provider: &str, result: &str) {
        self.health_checks.with_label_values(&[provider, result]).inc();
    }

    /// A rate limit held a request back: a backend's (`scope` backend, the
    /// backend skipped) or a key's or team's (refused; model and provider empty).
    pub fn rate_limited(&self, scope: &str, model: &str, provider: &str, limit: &str) {
        self.rate_limited
            .with_label_values(&[scope, model, provider, limit])
            .inc();
    }

    /// tollgate's own time on a request.
    pub fn overhead(&self, endpoint: Endpoint, time: Duration) {
        self.overhead[endpoint as usize].observe(time.as_secs_f64());
    }

    /// A request refused for a spent budget.
    pub fn budget_rejected(&self, scope: &str, period: &str) {
        self.budget.rejected.with_label_values(&[scope, period]).inc();
    }

    /// A stream ended for crossing a budget.
    pub fn budget_cutoff(&self, scope: &str, period: &str) {
        self.budget.cutoffs.with_label_values(&[scope, period]).inc();
    }

    /// Sets every budget's spent share, at scrape time; budgets gone since are dropped.
    pub fn budgets_used<'a>(&self, uses: impl IntoIterator<Item = (&'a str, &'a str, &'a str, f64)>) {
        self.budget.used.reset();
        for (scope, name, period, ratio) in uses {
            self.budget.used.with_label_values(&[scope, name, period]).set(ratio);
        }
    }

    /// Whether the `tollgate_key_*` series are kept.
    pub fn key_labels(&self) -> bool {
        self.keys.is_some()
    }

    /// One finished request of a key (with `metrics.key_labels` only).
    pub fn key_request(&self, o: KeyOutcome<'_>) {
        let Some(k) = &self.keys else { return };
        k.requests
            .with_label_values(&[o.key, o.team, &status_label(o.status)])
            .inc();
        if let Some(u) = o.usage {
            for (kind, n) in TOKEN_TYPES.into_iter().zip(token_counts(u)) {
                if n > 0 {
                    k.tokens.with_label_values(&[o.key, o.team, kind]).inc_by(n);
                }
            }
        }
        if let Some(pico) = o.cost {
            k.cost.with(&[o.key, o.team]).add(pico);
        }
    }

    /// The ledger's counters, for the ledger to keep.
    pub fn ledger_counters(&self) -> crate::metering::ledger::LedgerCounters {
        crate::metering::ledger::LedgerCounters {
            written: self.ledger_rows.with_label_values(&["written"]),
            dropped: self.ledger_rows.with_label_values(&["dropped"]),
            failed: self.ledger_rows.with_label_values(&["failed"]),
        }
    }

    /// Rows waiting in the ledger's queue, set when scraped.
    pub fn ledger_queue(&self, rows: usize) {
        self.ledger_queue.set(rows as i64);
    }

    /// A failed operation in OpenTelemetry's terms: its duration, with `error_type`.
    pub fn gen_ai_failure(&self, labels: Labels<'_>, system: &str, error_type: &str, elapsed: Duration) {
        self.gen_ai
            .duration
            .with_label_values(&[operation(labels.endpoint), system, labels.model, error_type])
            .observe(elapsed.as_secs_f64());
    }

    /// A request's cost, on the slow path (labels hashed).
    pub fn cost(&self, labels: Labels<'_>, pico: Pico) {
        self.cost.with(&[labels.model, labels.provider]).add(pico);
    }

    /// A backend served a request for `route`.
    pub fn route_decision(&self, route: &str, model: &str, provider: &str) {
        self.routing
            .decisions
            .with_label_values(&[route, model, provider])
            .inc();
    }

    /// Another attempt: `fallback` or `same_backend`.
    pub fn retry(&self, route: &str, kind: &str) {
        self.routing.retries.with_label_values(&[route, kind]).inc();
    }

    /// A backend's circuit state, set when metrics are scraped.
    pub fn circuit_state(&self, model: &str, provider: &str, state: i64) {
        self.routing.circuit.with_label_values(&[model, provider]).set(state);
    }

    /// Records one side of a mirrored request.
    pub fn mirrored(&self, side: MirrorSide<'_>) {
        let labels = [side.route, side.role, side.model, side.provider];
        let status = status_label(side.status);
        self.mirror
            .requests
            .with_label_values(&[side.route, side.role, side.model, side.provider, &status])
            .inc();
        self.mirror
            .duration
            .with_label_values(&labels)
            .observe(side.elapsed.as_secs_f64());
        if let Some(u) = side.usage {
            for (kind, n) in [("prompt", u.prompt_tokens), ("completion", u.completion_tokens)] {
                self.mirror
                    .tokens
                    .with_label_values(&[side.route, side.role, side.model, side.provider, kind])
                    .inc_by(n);
            }
        }
        if let Some(pico) = side.cost {
            self.mirror.cost.with(&labels).add(pico);
        }
    }

    /// A request was not mirrored: the shadow capacity was full.
    pub fn mirror_skipped(&self, route: &str) {
        self.mirror.skipped.with_label_values(&[route]).inc();
    }

    /// Counts a config reload, applied or rejected.
    pub fn config_reload(&self, applied: bool) {
        self.reloads
            .with_label_values(&[if applied { "ok" } else { "error" }])
            .inc();
    }

    /// `system` is the provider's `gen_ai.provider.name` (openai, anthropic, gcp.gemini...).
    pub fn series(&self, labels: Labels<'_>, system: &str) -> Series {
        let Labels {
            endpoint,
            model,
            provider,
        } = labels;
        let op = operation(endpoint);
        let g = &self.gen_ai;
        Series {
            gen_ai: GenAiSeries {
                input_tokens: g.tokens.with_label_values(&[op, system, model, "input"]),
                output_tokens: g.tokens.with_label_values(&[op, system, model, "output"]),
                duration: g.duration.with_label_values(&[op, system, model, ""]),
                ttft: g.ttft.with_label_values(&[op, system, model]),
                per_output_token: g.per_output_token.with_label_values(&[op, system, model]),
            },
            ok: self.requests.with_label_values(&[endpoint, model, provider, "200"]),
            duration: self.duration.with_label_values(&[endpoint, model, provider]),
            ttft: self.ttft.with_label_values(&[endpoint, model, provider]),
            tokens: TOKEN_TYPES.map(|t| self.tokens.with_label_values(&[model, provider, t])),
            reported: ReportedTime::default()
                .phases()
                .map(|(phase, _)| self.reported.with_label_values(&[model, provider, phase])),
            cost: self.cost.with(&[model, provider]),
        }
    }

    /// Records one finished request. `status` is an HTTP status, or 499 when the client left.
    pub fn request(&self, labels: Labels<'_>, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[labels.endpoint, labels.model, labels.provider, &status_label(status)])
            .inc();
        self.duration
            .with_label_values(&[labels.endpoint, labels.model, labels.provider])
            .observe(elapsed.as_secs_f64());
    }

    pub fn first_token(&self, labels: Labels<'_>, elapsed: Duration) {
        self.ttft
            .with_label_values(&[labels.endpoint, labels.model, labels.provider])
            .observe(elapsed.as_secs_f64());
    }

    pub fn usage(&self, labels: Labels<'_>, usage: &Usage) {
        for (kind, n) in TOKEN_TYPES.into_iter().zip(token_counts(usage)) {
            if n > 0 {
                self.tokens
                    .with_label_values(&[labels.model, labels.provider, kind])
                    .inc_by(n);
            }
        }
        for (phase, time) in usage.reported_time.phases() {
            if !time.is_zero() {
                self.reported
                    .with_label_values(&[labels.model, labels.provider, phase])
                    .inc_by(time.as_secs_f64());
            }
        }
    }

    pub fn upstream_error(&self, provider: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[provider, kind]).inc();
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec only fails on invalid metric data, which the registry rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Common statuses without a per-request allocation.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        413 => "413".into(),
        429 => "429".into(),
        499 => "499".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_types() {
        let m = Metrics::new();
        let l = Labels {
            endpoint: "chat",
            model: "m",
            provider: "p",
        };
        m.request(l, 200, Duration::from_millis(30));
        m.request(l, 499, Duration::from_millis(10));
        m.usage(l, &Usage::new(5, 7));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("# TYPE tollgate_requests_total counter"));
        assert!(text.contains("# TYPE tollgate_request_duration_seconds histogram"));
        assert!(
            text.contains(r#"tollgate_requests_total{endpoint="chat",model="m",provider="p",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"status="499"} 1"#));
        assert!(text.contains(r#"tollgate_tokens_total{model="m",provider="p",type="completion"} 7"#));
        assert!(text.contains(r#"tollgate_request_duration_seconds_count{endpoint="chat",model="m",provider="p"} 2"#));
    }
}
