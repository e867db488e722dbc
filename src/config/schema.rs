//! The YAML file's shape, as written by the operator. Strings that may hold
//! `${VAR}` references are interpolated by `config::load`, not here.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, Dur};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    #[serde(default)]
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub routing: RoutingSection,
    /// The usage ledger; none = off.
    #[serde(default)]
    pub ledger: Option<LedgerSection>,
    /// Policy routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Teams: limits and budgets shared by their keys.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamSection>,
    #[serde(default)]
    pub metrics: MetricsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Adds `tollgate_key_*` series labelled by key id and team.
    #[serde(default)]
    pub key_labels: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSection {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u32>,
    #[serde(default)]
    pub budget: BudgetSection,
}

/// USD per UTC day and month.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    #[serde(default)]
    pub daily: Option<Usd>,
    #[serde(default)]
    pub monthly: Option<Usd>,
}

/// An amount of USD as written (`50`, `12.5`, `"0.25"`), parsed exactly into pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usd(pub crate::metering::cost::Pico);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::units::number_or_text(d, crate::keys::budget::parse_usd, "an amount of USD such as 5 or 12.50").map(Usd)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// `sqlite://data/tollgate.db` (created if missing) or `postgres://user@host/db`.
    pub url: String,
    /// Rows waiting at most; beyond, rows are dropped and counted.
    #[serde(default = "default_ledger_queue")]
    pub queue: usize,
    /// Rows per insert.
    #[serde(default = "default_ledger_batch")]
    pub batch: usize,
    /// How long a batch gathers rows before it is written.
    #[serde(default = "default_ledger_flush")]
    pub flush_interval: Dur,
}

/// Room for about 1.7 s of rows at 30,000 requests/s. In one benchmark run the
/// writer fell behind for at least a third of a second and a 10,000-row queue
/// dropped 9,897 rows. The queue holds memory only while rows wait in it.
fn default_ledger_queue() -> usize {
    50_000
}
fn default_ledger_batch() -> usize {
    500
}
fn default_ledger_flush() -> Dur {
    Dur(std::time::Duration::from_millis(200))
}

/// A string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(OneOrMany(match Either::deserialize(d)? {
            Either::One(s) => vec![s],
            Either::Many(v) => v,
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// Seeds the random choices (`weighted`, `lowest-latency`), for reproducible tests.
    #[serde(default)]
    pub seed: Option<u64>,
    /// A catalog file (the format of config/catalog.yaml) whose entries replace the built-in ones.
    #[serde(default)]
    pub catalog: Option<String>,
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Active health checks; none = only the breaker's passive ones.
    #[serde(default)]
    pub health_checks: Option<HealthCheckSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// How often each provider is checked.
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
    /// How long a check may take; longer is a failure.
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    /// Only these providers; empty = every provider (the simulated ones pass).
    #[serde(default)]
    pub providers: Vec<String>,
}

fn default_health_interval() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_health_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Consecutive failures that open a backend's circuit.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// Or this share of failures among the last `window` requests.
    #[serde(default = "default_breaker_error_rate")]
    pub error_rate: f64,
    #[serde(default = "default_breaker_window")]
    pub window: u32,
    /// How long an open circuit waits before one probe request.
    #[serde(default = "default_breaker_cooldown")]
    pub cooldown: Dur,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failures: default_breaker_failures(),
            error_rate: default_breaker_error_rate(),
            window: default_breaker_window(),
            cooldown: default_breaker_cooldown(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_error_rate() -> f64 {
    0.5
}
fn default_breaker_window() -> u32 {
    20
}
fn default_breaker_cooldown() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    /// What a request must have for this route; every condition given must hold.
    #[serde(default, rename = "match")]
    pub when: MatchSection,
    /// Configured model names; none = the model the client asked for.
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub strategy: StrategyName,
    /// `weighted`: target → weight (default 1).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    #[serde(default)]
    pub objective: ObjectiveSection,
    /// Only self-hosted backends (data that must not leave).
    #[serde(default)]
    pub local_only: bool,
    #[serde(default)]
    pub retry: RetrySection,
    /// Copies a share of the route's requests to another model, answer discarded.
    #[serde(default)]
    pub mirror: Option<MirrorSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    /// A configured model name.
    pub to: String,
    /// The share of requests copied, 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    #[default]
    Priority,
    Weighted,
    LowestLatency,
    LowestCost,
    BestScore,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Priority => "priority",
            StrategyName::Weighted => "weighted",
            StrategyName::LowestLatency => "lowest-latency",
            StrategyName::LowestCost => "lowest-cost",
            StrategyName::BestScore => "best-score",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// Requested model names, aliases, globs (`gpt-4o*`), `auto` or `auto:<domain>`.
    #[serde(default)]
    pub model: OneOrMany,
    /// `chat`, `completions`, `embeddings`.
    #[serde(default)]
    pub endpoint: OneOrMany,
    /// Header name → value (`*`: present with any value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Gateway key ids (`k-` and 12 hex digits of the key's SHA-256, as the ledger shows them).
    #[serde(default)]
    pub keys: OneOrMany,
    /// Teams of managed keys.
    #[serde(default)]
    pub teams: OneOrMany,
    /// The request's `user`, a glob.
    #[serde(default)]
    pub user: Option<String>,
    /// The request's `metadata` key → value.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<bool>,
    #[serde(default)]
    pub images: Option<bool>,
    #[serde(default)]
    pub json_mode: Option<bool>,
    /// Estimated prompt tokens, inclusive bounds.
    #[serde(default)]
    pub min_input_tokens: Option<u64>,
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    /// The classified domain (`code`, `math`, `general`), or the `x-tollgate-domain` header.
    #[serde(default)]
    pub domain: OneOrMany,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSection {
    /// The catalog benchmark to rank by; default by domain (code: humaneval, math: math, general: mmlu).
    #[serde(default)]
    pub score: Option<String>,
    /// USD, the request's expected cost.
    #[serde(default)]
    pub max_cost_per_request: Option<f64>,
    #[serde(default)]
    pub max_p95_latency: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Backends tried at most, the first included; default: every candidate, up to 3.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Extra tries on the same backend before moving on.
    #[serde(default)]
    pub same_backend: u32,
    /// Wait before a retry on the same backend (doubling).
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            attempts: None,
            same_backend: 0,
            backoff: default_backoff(),
        }
    }
}

fn default_backoff() -> Dur {
    Dur(std::time::Duration::from_millis(100))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    #[serde(default = "default_max_header")]
    pub max_header_bytes: ByteSize,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// After SIGTERM, keep serving this long with `/ready` failing, so load balancers stop sending first.
    #[serde(default = "zero")]
    pub shutdown_delay: Dur,
    /// Time allowed for a client to send its request body (408 after it).
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
    /// Proxied requests served at once, streams included; more are shed with 503.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            max_body: default_max_body(),
            max_header_bytes: default_max_header(),
            request_timeout: default_request_timeout(),
            shutdown_grace: default_shutdown_grace(),
            shutdown_delay: zero(),
            body_timeout: default_body_timeout(),
            max_concurrent_requests: default_max_concurrent(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:4000".into()
}
fn default_max_body() -> ByteSize {
    ByteSize(10 << 20)
}
fn default_max_header() -> ByteSize {
    ByteSize(32 << 10)
}
fn default_request_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}
fn zero() -> Dur {
    Dur(std::time::Duration::ZERO)
}
fn default_body_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_max_concurrent() -> usize {
    10_000
}
fn default_shutdown_grace() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Gateway keys clients must present.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Allow serving without keys on a non-loopback address while provider keys are set.
    #[serde(default)]
    pub open: bool,
    /// Keys for the admin API (`/v1/route/explain`); none = the admin API is off.
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Accept keys made with `tollgate keys create` (stored hashed in the ledger's database).
    #[serde(default)]
    pub managed_keys: bool,
    /// How often the managed keys are read again (a key made or revoked elsewhere takes effect).
    #[serde(default = "default_key_refresh")]
    pub key_refresh: Dur,
    /// End a stream when its key's or team's budget runs out midway, metered to the cut.
    #[serde(default)]
    pub cut_streams_over_budget: bool,
}

fn default_key_refresh() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            keys: Vec::new(),
            open: false,
            admin_keys: Vec::new(),
            managed_keys: false,
            key_refresh: default_key_refresh(),
            cut_streams_over_budget: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `tollgate=debug,hyper=warn`; RUST_LOG overrides it.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderSection {
    /// The OpenAI API or any OpenAI-compatible server.
    Openai(HttpProviderSection),
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure(AzureSection),
    /// Anthropic's Messages API, translated both ways.
    Anthropic(AnthropicSection),
    /// Ollama's native API (`/api/chat`, `/api/embed`), translated both ways.
    Ollama(OllamaSection),
    /// Google's Gemini API, translated both ways.
    Gemini(GeminiSection),
    /// Hugging Face TGI's native `/generate` and TEI's `/embed`, translated both ways.
    Huggingface(HuggingFaceSection),
    /// Built in, no network.
    Simulated(SimulatedSection),
}

/// The connection settings every HTTP provider's section has (serde's
/// `flatten` cannot share them: it does not work with `deny_unknown_fields`).
pub trait HttpFields {
    fn base_url(&self) -> &str;
    fn api_key(&self) -> Option<&str>;
    fn headers(&self) -> &BTreeMap<String, String>;
    fn timeouts(&self) -> &TimeoutSection;
    fn ca_file(&self) -> Option<&str>;
}

macro_rules! http_fields {
    ($($section:ty),*) => {$(
        impl HttpFields for $section {
            fn base_url(&self) -> &str {
                &self.base_url
            }
            fn api_key(&self) -> Option<&str> {
                self.api_key.as_deref()
            }
            fn headers(&self) -> &BTreeMap<String, String> {
                &self.headers
            }
            fn timeouts(&self) -> &TimeoutSection {
                &self.timeouts
            }
            fn ca_file(&self) -> Option<&str> {
                self.ca_file.as_deref()
            }
        }
    )*};
}

http_fields!(
    HttpProviderSection,
    AzureSection,
    AnthropicSection,
    OllamaSection,
    GeminiSection,
    HuggingFaceSection
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderSection {
    #[serde(default = "default_openai_base")]
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Header that carries the key: `authorization` (as `Bearer <key>`, the default) or any other name (the key as is).
    #[serde(default)]
    pub auth_header: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    /// Ask streams for their usage chunk (`stream_options.include_usage`); turn off for servers that reject it.
    #[serde(default = "yes")]
    pub stream_usage: bool,
    /// PEM file of extra CA certificates to trust (an internal CA), besides the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_openai_base() -> String {
    "https://api.openai.com/v1".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSection {
    /// `https://{resource}.openai.azure.com`
    pub base_url: String,
    #[serde(default = "default_azure_version")]
    pub api_version: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default = "yes")]
    pub stream_usage: bool,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicSection {
    #[serde(default = "default_anthropic_base")]
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// The `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub version: String,
    /// `max_tokens` for requests that set none (Anthropic requires one).
    #[serde(default = "default_anthropic_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_anthropic_base() -> String {
    "https://api.anthropic.com".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_anthropic_max_tokens() -> u32 {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OllamaSection {
    #[serde(default = "default_ollama_base")]
    pub base_url: String,
    /// Only for Ollama's cloud (sent as a Bearer token); a local server needs none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// How long Ollama keeps the model loaded after a request (`5m`, `-1`, `0`).
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Context window to load the model with (`options.num_ctx`).
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// List the server's models (`/api/tags`, refreshed every minute) in
    /// `/v1/models` and route them by their Ollama names.
    #[serde(default)]
    pub discover_models: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_ollama_base() -> String {
    "http://127.0.0.1:11434".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiSection {
    #[serde(default = "default_gemini_base")]
    pub base_url: String,
    /// Sent as `x-goog-api-key`.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuggingFaceSection {
    #[serde(default = "default_tgi_base")]
    pub base_url: String,
    /// For Inference Endpoints (sent as a Bearer token); a local server needs none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `native` (`/generate`, `/generate_stream`, `/embed`) or `messages`
    /// (the server's OpenAI-compatible `/v1/...` routes, TGI's quirks put right).
    #[serde(default)]
    pub api: HuggingFaceApi,
    /// The prompt format `/generate` gets chat turns in (native API only).
    #[serde(default)]
    pub chat_template: crate::providers::huggingface::ChatTemplate,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HuggingFaceApi {
    #[default]
    Native,
    Messages,
}

fn default_tgi_base() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_gemini_base() -> String {
    "https://generativelanguage.googleapis.com/v1beta".into()
}

fn default_azure_version() -> String {
    "2024-10-21".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    #[serde(default = "d5")]
    pub connect: Dur,
    #[serde(default = "d60")]
    pub first_byte: Dur,
    #[serde(default = "d60")]
    pub idle: Dur,
    #[serde(default = "d600")]
    pub total: Dur,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        TimeoutSection {
            connect: d5(),
            first_byte: d60(),
            idle: d60(),
            total: d600(),
        }
    }
}

fn d5() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn d60() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn d600() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedSection {
    /// Time to first token.
    #[serde(default)]
    pub ttft: Option<Dur>,
    /// Streaming speed; 0 (the default) sends every token at once.
    #[serde(default)]
    pub tokens_per_second: f64,
    /// Reply text; by default a deterministic sentence about the prompt.
    #[serde(default)]
    pub reply: Option<String>,
    /// Tokens in each reply (capped by the request's max_tokens).
    #[serde(default = "default_sim_tokens")]
    pub completion_tokens: u32,
    /// Length of simulated embedding vectors.
    #[serde(default = "default_sim_dims")]
    pub embedding_dimensions: u32,
}

fn default_sim_tokens() -> u32 {
    16
}
fn default_sim_dims() -> u32 {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The name clients send as `model`.
    pub name: String,
    /// A key of `providers`.
    pub provider: String,
    /// The model name the upstream expects (Azure: the deployment); defaults to `name`.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The catalog entry describing it; default: `upstream_model`, then `name`.
    #[serde(default)]
    pub catalog: Option<String>,
    /// Requests per minute this gateway sends to it.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt and `max_tokens`, estimated) this gateway sends to it.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// USD per UTC day and month this gateway may spend on it; spent, it is skipped.
    #[serde(default)]
    pub budget: BudgetSection,
}
