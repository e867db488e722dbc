//! The provider trait and one module per upstream.
//!
//! A provider adapter is the only place that knows an upstream's wire format:
//! it takes a canonical (OpenAI) request, talks to its upstream, and answers
//! canonical JSON bodies or canonical stream chunks.

pub mod anthropic;
pub mod azure;
mod client;
pub mod error;
mod event_body;
pub mod gemini;
pub mod huggingface;
pub mod ollama;
pub mod openai;
pub mod simulated;
pub mod upstream_call;
pub mod upstream_status;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use http::HeaderValue;

use crate::api::{ChatRequest, CompletionRequest, EmbeddingsRequest, Usage};
use crate::config::{HuggingFaceApi, ProviderKind, ProviderSpec};

pub use client::UpstreamClient;
pub use error::UpstreamError;

/// What a provider needs to know about the call besides the request body.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `x-request-id`, set (or checked) by the server's edge layer; sent upstream.
    pub request_id: &'a HeaderValue,
    /// Size of the client's request body: a capacity hint for the upstream body.
    pub body_size: usize,
    /// The name the upstream knows the model by (Azure: the deployment).
    pub upstream_model: &'a str,
    /// The name the client asked for; simulated answers echo it.
    pub requested_model: &'a str,
}

/// An upstream's answer in canonical form.
pub enum Reply {
    /// A complete OpenAI-shaped JSON body.
    Complete { body: Bytes, usage: Option<Usage> },
    /// OpenAI chunks, one JSON object each, ending when the stream is done.
    Stream(EventStream),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, UpstreamError>> + Send>>;

/// One OpenAI stream chunk.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The chunk's JSON, without the `data: ` framing.
    pub data: Bytes,
    /// Usage, when this chunk carries it.
    pub usage: Option<Usage>,
    /// The final usage chunk (`choices: []`), which the client sees only if it asked.
    pub usage_only: bool,
    /// Carries generated text or tool-call data (not just a role or a finish
    /// reason): the first such chunk marks the time to first token.
    pub has_content: bool,
}

impl StreamEvent {
    pub fn chunk(data: Bytes, has_content: bool) -> Self {
        StreamEvent {
            data,
            usage: None,
            usage_only: false,
            has_content,
        }
    }

    pub fn usage(data: Bytes, usage: Usage) -> Self {
        StreamEvent {
            data,
            usage: Some(usage),
            usage_only: true,
            has_content: false,
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError>;
    async fn completions(&self, call: Call<'_>, req: CompletionRequest) -> Result<Reply, UpstreamError>;
    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError>;

    /// The models the upstream says it serves (Ollama's `/api/tags`), for
    /// providers configured to discover them; none for the others.
    async fn discover_models(&self) -> Result<Vec<String>, UpstreamError> {
        Ok(Vec::new())
    }

    /// An active health check (`routing.health_checks`): a cheap GET of the
    /// upstream's own (model list, version, health). Healthy by default: the
    /// simulated provider has nothing to check.
    async fn probe(&self) -> Result<(), UpstreamError> {
        Ok(())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds the adapter a provider's config describes.
pub fn build(spec: &ProviderSpec) -> Arc<dyn Provider> {
    match &spec.kind {
        ProviderKind::OpenAi(http) => Arc::new(openai::OpenAiProvider::new(
            &spec.name,
            http.clone(),
            openai::Flavor::OpenAi,
        )),
        ProviderKind::Azure { http, api_version } => Arc::new(azure::new(&spec.name, http.clone(), api_version)),
        ProviderKind::Anthropic {
            http,
            version,
            max_tokens,
        } => Arc::new(anthropic::AnthropicProvider::new(
            &spec.name,
            http.clone(),
            version,
            *max_tokens,
        )),
        ProviderKind::Ollama {
            http,
            keep_alive,
            num_ctx,
            ..
        } => {
            let settings = ollama::Settings {
                keep_alive: keep_alive.clone(),
                num_ctx: *num_ctx,
            };
            Arc::new(ollama::OllamaProvider::new(&spec.name, http.clone(), settings))
        }
        ProviderKind::Gemini(http) => Arc::new(gemini::GeminiProvider::new(&spec.name, http.clone())),
        ProviderKind::HuggingFace {
            http,
            api: HuggingFaceApi::Messages,
            ..
        } => Arc::new(openai::OpenAiProvider::new(
            &spec.name,
            http.clone(),
            openai::Flavor::HfMessages,
        )),
        ProviderKind::HuggingFace { http, template, .. } => Arc::new(huggingface::HuggingFaceProvider::new(
            &spec.name,
            http.clone(),
            *template,
        )),
        ProviderKind::Simulated(sim) => Arc::new(simulated::SimulatedProvider::new(sim.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_are_percent_encoded() {
        assert_eq!(percent_encode("gpt-4o_prod.v2"), "gpt-4o_prod.v2");
        assert_eq!(percent_encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
