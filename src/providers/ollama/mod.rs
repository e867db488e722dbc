//! Ollama's native API: `/api/chat` (NDJSON streams) and `/api/embed`,
//! translated both ways. For Ollama's OpenAI-compatible `/v1`, use
//! `kind: openai` instead.

mod translate;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode, Uri};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;

use super::event_body::{self, NdjsonBody, Translate};
use super::upstream_call::{JsonUpstream, Success, key_header};
use super::upstream_status;
use super::{Call, EventStream, Provider, Reply, UpstreamClient, UpstreamError};
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, ErrorKind};
use crate::config::HttpSpec;
pub use translate::Settings;
use translate::{Step, StreamTranslator};

pub struct OllamaProvider {
    upstream: JsonUpstream,
    chat_uri: Option<Uri>,
    embed_uri: Option<Uri>,
    tags_uri: Option<Uri>,
    settings: Settings,
}

impl OllamaProvider {
    pub fn new(name: &str, spec: HttpSpec, settings: Settings) -> Self {
        // `Authorization: Bearer` for Ollama's cloud; local servers need none.
        let auth = key_header(&spec, "Bearer ").map(|v| (AUTHORIZATION, v));
        let upstream = JsonUpstream::new(name, spec, auth.into_iter().collect());
        OllamaProvider {
            chat_uri: upstream.uri("/api/chat"),
            embed_uri: upstream.uri("/api/embed"),
            tags_uri: upstream.uri("/api/tags"),
            upstream,
            settings,
        }
    }

    fn name(&self) -> &str {
        self.upstream.name()
    }

    async fn send(
        &self,
        call: &Call<'_>,
        uri: &Option<Uri>,
        body: &Value,
        stream: bool,
    ) -> Result<Success, UpstreamError> {
        self.upstream
            .post(
                call,
                uri.clone(),
                body,
                (stream, "application/x-ndjson"),
                |status, headers, raw| self.translate_error(status, headers, raw),
            )
            .await
    }

    /// Ollama's `{"error": "..."}` → the client's error; a missing model is a 404 `model_not_found`.
    fn translate_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> ApiError {
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return upstream_status::credentials_rejected(self.name(), status, "");
        }
        let message = translate::error_message(raw)
            .unwrap_or_else(|| format!("provider `{}` answered status {}", self.name(), status.as_u16()));
        let status = upstream_status::client_status(status);
        let mut error = ApiError::new(status, upstream_status::kind_for(status), message);
        if status == StatusCode::NOT_FOUND {
            error = error.with_code("model_not_found").with_param("model");
        }
        error.retry_after = upstream_status::retry_after(headers);
        error
    }
}

/// Ollama's stream translation, for the shared stream driver.
struct OllamaStream(StreamTranslator);

impl Translate for OllamaStream {
    const END: &'static str = "its `\"done\": true` line";

    fn step(&mut self, line: Bytes) -> event_body::Step {
        match self.0.step(&line) {
            Ok(Step::Emit(events)) => event_body::Step::Emit(events),
            Ok(Step::Done(events)) => event_body::Step::Done(events),
            Ok(Step::Failed(message)) => {
                event_body::Step::Failed(ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, message))
            }
            Err(_) => event_body::Step::Invalid("a stream line is not valid JSON".into()),
        }
    }
}

fn relay(body: Incoming, client: UpstreamClient, deadline: Instant, request_id: &str) -> EventStream {
    event_body::translated(
        NdjsonBody::ndjson(body, client, deadline),
        OllamaStream(StreamTranslator::new(request_id)),
    )
}

#[async_trait]
impl Provider for OllamaProvider {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        let body = translate::to_chat_request(&req, call.upstream_model, &self.settings)
            .map_err(|error| UpstreamError::Status { error })?;
        let answer = self.send(&call, &self.chat_uri, &body, stream).await?;
        let request_id = call.request_id.to_str().unwrap_or("-");
        if stream {
            let client = self.upstream.client.clone();
            return Ok(Reply::Stream(relay(answer.body, client, answer.deadline, request_id)));
        }
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_chat_completion(&raw, request_id)
            .map_err(|e| self.upstream.protocol(format!("not an /api/chat answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }

    async fn completions(&self, _call: Call<'_>, _req: CompletionRequest) -> Result<Reply, UpstreamError> {
        Err(UpstreamError::Status {
            error: ApiError::bad_request(format!(
                "provider `{}` (Ollama native) serves chat and embeddings; use chat completions",
                self.name()
            ))
            .with_param("model")
            .with_code("unsupported_endpoint"),
        })
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        self.upstream.probe("/api/version").await
    }

    async fn discover_models(&self) -> Result<Vec<String>, UpstreamError> {
        let raw = self
            .upstream
            .get(self.tags_uri.clone(), |status, headers, raw| {
                self.translate_error(status, headers, raw)
            })
            .await?;
        translate::model_names(&raw).map_err(|e| self.upstream.protocol(format!("not an /api/tags answer: {e}")))
    }

    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        let body = translate::to_embed_request(&req, call.upstream_model, &self.settings);
        let answer = self.send(&call, &self.embed_uri, &body, false).await?;
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_embeddings(&raw, req.encoding_format)
            .map_err(|e| self.upstream.protocol(format!("not an /api/embed answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }
}
