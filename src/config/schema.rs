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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Gateway keys clients must present.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Allow serving without keys on a non-loopback address while provider keys are set.
    #[serde(default)]
    pub open: bool,
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
}
