//! OpenAI and every OpenAI-compatible server (vLLM, TGI's Messages API,
//! Hugging Face's router, Ollama's `/v1`, Groq, Together, ...), and Azure
//! OpenAI through its flavor. Requests pass through with only `model`
//! rewritten (and `stream_options.include_usage` added to streams, so they
//! are metered); streams are relayed event by event.

mod errors;
mod normalise;
mod stream;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use serde::Serialize;

use super::client::UpstreamClient;
use super::error::UpstreamError;
use super::upstream_call::{self, JsonPost, key_header, post_json};
use super::upstream_status;
use super::{Call, Provider, Reply, percent_encode};
use crate::api::chat::Stop;
use crate::api::usage::find_usage;
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, StreamOptions};
use crate::config::HttpSpec;

/// Largest complete (non-streamed) answer accepted from an upstream.
const MAX_ANSWER_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub enum Flavor {
    OpenAi,
    /// Azure OpenAI classic: the deployment in the path, `api-version` in the query.
    Azure {
        api_version: String,
    },
    /// A Hugging Face server's Messages API (TGI, Inference Endpoints, TEI):
    /// `/v1/...` under the server's root, JSON mode in TGI's own shape.
    HfMessages,
}

#[derive(Clone, Copy)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

pub struct OpenAiProvider {
    client: UpstreamClient,
    spec: HttpSpec,
    flavor: Flavor,
    /// The key header (`Authorization: Bearer …` or `api-key`), built once, marked sensitive.
    own_headers: Vec<(HeaderName, HeaderValue)>,
    /// Endpoint URIs, built once (OpenAI flavor only; Azure's depend on the deployment).
    uris: Option<[Uri; 3]>,
}

impl OpenAiProvider {
    pub fn new(name: &str, spec: HttpSpec, flavor: Flavor) -> Self {
        let prefix = if spec.auth_header == http::header::AUTHORIZATION {
            "Bearer "
        } else {
            ""
        };
        // Built once: no per-request allocation for the provider's own headers.
        let own_headers = key_header(&spec, prefix)
            .map(|v| (spec.auth_header.clone(), v))
            .into_iter()
            .collect();
        let uris = match flavor {
            Flavor::OpenAi | Flavor::HfMessages => {
                let prefix = if matches!(flavor, Flavor::HfMessages) {
                    "/v1"
                } else {
                    ""
                };
                let uri = |e: Endpoint| format!("{}{prefix}/{}", spec.base_url, e.path()).parse::<Uri>().ok();
                match (
                    uri(Endpoint::Chat),
                    uri(Endpoint::Completions),
                    uri(Endpoint::Embeddings),
                ) {
                    (Some(a), Some(b), Some(c)) => Some([a, b, c]),
                    _ => None,
                }
            }
            Flavor::Azure { .. } => None,
        };
        OpenAiProvider {
            client: UpstreamClient::new(name, spec.timeouts, &spec.extra_roots),
            spec,
            flavor,
            own_headers,
            uris,
        }
    }

    fn name(&self) -> &str {
        self.client.provider()
    }

    fn uri(&self, endpoint: Endpoint, model: &str) -> Result<Uri, UpstreamError> {
        let built = match (&self.flavor, &self.uris) {
            (Flavor::OpenAi | Flavor::HfMessages, Some(uris)) => return Ok(uris[endpoint as usize].clone()),
            (Flavor::OpenAi | Flavor::HfMessages, None) => None,
            (Flavor::Azure { api_version }, _) => format!(
                "{}/openai/deployments/{}/{}?api-version={}",
                self.spec.base_url,
                percent_encode(model),
                endpoint.path(),
                api_version
            )
            .parse()
            .ok(),
        };
        built.ok_or_else(|| {
            UpstreamError::NotConfigured(format!(
                "provider `{}` cannot build a URL for model `{model}`",
                self.name()
            ))
        })
    }

    async fn exchange(
        &self,
        call: Call<'_>,
        endpoint: Endpoint,
        body: &impl Serialize,
        stream: bool,
    ) -> Result<Reply, UpstreamError> {
        let mut buf = Vec::with_capacity(call.body_size + 64);
        serde_json::to_writer(&mut buf, body).map_err(|e| self.protocol(&e.to_string()))?;
        let post = JsonPost {
            uri: Some(self.uri(endpoint, call.upstream_model)?),
            body: buf,
            stream,
            stream_type: "text/event-stream",
            headers: &self.own_headers,
        };
        let answer = post_json(&self.client, &self.spec, &call, post, |status, headers, raw| {
            self.translate_error(status, headers, raw)
        })
        .await?;
        if stream {
            let azure = matches!(self.flavor, Flavor::Azure { .. });
            return Ok(Reply::Stream(stream::relay(
                answer.body,
                self.client.clone(),
                answer.deadline,
                azure,
                call.request_id.to_str().unwrap_or("-"),
            )));
        }
        let raw = self
            .client
            .read_body(answer.body, MAX_ANSWER_BYTES, answer.deadline)
            .await?;
        // The answer is passed on as it came; only its usage is read.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(self.protocol("the answer is not a JSON object"));
        }
        let raw = match endpoint {
            Endpoint::Embeddings => raw,
            _ => normalise::answer(raw, call.request_id.to_str().unwrap_or("-")),
        };
        Ok(Reply::Complete {
            usage: find_usage(&raw),
            body: raw,
        })
    }

    fn protocol(&self, detail: &str) -> UpstreamError {
        UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// An upstream error as the client sees it: status, type, code and
    /// message kept; credential problems become the gateway's problem (502),
    /// never the client's, and never echo anything about the key.
    fn translate_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> ApiError {
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let upstream = errors::from_body(status, raw, self.name(), |s| self.scrub(s));
            return upstream_status::credentials_rejected(self.name(), status, &upstream.message);
        }
        let mut error = errors::from_body(upstream_status::client_status(status), raw, self.name(), |s| {
            self.scrub(s)
        });
        error.retry_after = upstream_status::retry_after(headers);
        error
    }

    /// Removes the provider's key from a message an upstream wrote, should it appear.
    fn scrub(&self, message: String) -> String {
        upstream_call::scrub(&self.spec.key, &message)
    }

    fn ask_for_usage(&self, options: &mut Option<StreamOptions>) {
        if self.spec.stream_usage {
            options.get_or_insert_with(StreamOptions::default).include_usage = Some(true);
        }
    }
}

/// OpenAI's `response_format` in TGI's shape, which reads the schema from a
/// `value` key (OpenAI's `json_schema` key would be ignored, silently).
fn tgi_response_format(format: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::json;
    match format.get("type").and_then(serde_json::Value::as_str) {
        Some("json_object") => Some(json!({"type": "json_object", "value": {"type": "object"}})),
        Some("json_schema") => {
            let schema = format.get("json_schema").cloned().unwrap_or(serde_json::Value::Null);
            let name = schema.get("name").cloned().unwrap_or_else(|| json!("response"));
            let body = schema
                .get("schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            Some(json!({"type": "json_schema", "value": {"name": name, "schema": body}}))
        }
        // `text` is TGI's default; anything else is passed on for the server to judge.
        Some("text") => None,
        _ => Some(format),
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, call: Call<'_>, mut req: ChatRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        req.model = call.upstream_model.to_owned();
        if stream {
            // Streams are metered from the usage chunk; the relay hides it from clients that did not ask.
            self.ask_for_usage(&mut req.stream_options);
        }
        if matches!(self.flavor, Flavor::HfMessages) {
            if let Some(format) = req.response_format.take() {
                req.response_format = tgi_response_format(format);
            }
            // TGI takes `stop` only as a list.
            if let Some(Stop::One(one)) = &mut req.stop {
                req.stop = Some(Stop::Many(vec![std::mem::take(one)]));
            }
        }
        self.exchange(call, Endpoint::Chat, &req, stream).await
    }

    async fn completions(&self, call: Call<'_>, mut req: CompletionRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        req.model = call.upstream_model.to_owned();
        if stream {
            self.ask_for_usage(&mut req.stream_options);
        }
        self.exchange(call, Endpoint::Completions, &req, stream).await
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        // OpenAI's model list; a Hugging Face server's /health; Azure's model list.
        let uri = match &self.flavor {
            Flavor::OpenAi => format!("{}/models", self.spec.base_url),
            Flavor::HfMessages => format!("{}/health", self.spec.base_url),
            Flavor::Azure { api_version } => format!("{}/openai/models?api-version={api_version}", self.spec.base_url),
        };
        upstream_call::probe(&self.client, &self.spec, &self.own_headers, uri.parse().ok()).await
    }

    async fn embeddings(&self, call: Call<'_>, mut req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        req.model = call.upstream_model.to_owned();
        self.exchange(call, Endpoint::Embeddings, &req, false).await
    }
}
