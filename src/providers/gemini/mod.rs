//! Google's Gemini API (Google AI): `generateContent`,
//! `streamGenerateContent?alt=sse` and `batchEmbedContents`, translated both
//! ways. The key goes in `x-goog-api-key`, never in the URL.

mod translate;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;

use super::event_body::{self, SseBody, Translate};
use super::upstream_call::{JsonUpstream, Success, key_header};
use super::{
    Call, EventStream, Provider, Reply, StreamEvent, UpstreamClient, UpstreamError, percent_encode, upstream_status,
};
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, ErrorKind};
use crate::config::HttpSpec;
use translate::{Step, StreamTranslator};

const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

pub struct GeminiProvider {
    upstream: JsonUpstream,
}

impl GeminiProvider {
    pub fn new(name: &str, spec: HttpSpec) -> Self {
        let key = key_header(&spec, "").map(|v| (X_GOOG_API_KEY, v));
        GeminiProvider {
            upstream: JsonUpstream::new(name, spec, key.into_iter().collect()),
        }
    }

    fn name(&self) -> &str {
        self.upstream.name()
    }

    /// `models/{model}:{method}`, streamed as SSE when `stream`.
    async fn send(&self, call: &Call<'_>, method: &str, body: &Value, stream: bool) -> Result<Success, UpstreamError> {
        let query = if stream { "?alt=sse" } else { "" };
        let uri = self.upstream.uri(&format!(
            "/models/{}:{method}{query}",
            percent_encode(call.upstream_model)
        ));
        self.upstream
            .post(call, uri, body, (stream, "text/event-stream"), |status, _, raw| {
                let value: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
                self.translate_error(status, &value)
            })
            .await
    }

    /// Google's `{"error":{code, message, status, details}}` → the client's error.
    fn translate_error(&self, status: StatusCode, body: &Value) -> ApiError {
        let error = body.get("error").unwrap_or(&Value::Null);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(|m| self.upstream.scrub(m));
        let details = error
            .get("details")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let bad_key = details
            .iter()
            .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
        if bad_key || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return upstream_status::credentials_rejected(self.name(), status, message.as_deref().unwrap_or(""));
        }
        let message =
            message.unwrap_or_else(|| format!("provider `{}` answered status {}", self.name(), status.as_u16()));
        let status = upstream_status::client_status(status);
        let mut api = ApiError::new(status, upstream_status::kind_for(status), message);
        api.code = error.get("status").and_then(Value::as_str).map(str::to_owned);
        // Google sends no Retry-After header: the delay is in RetryInfo.
        api.retry_after = details
            .iter()
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .and_then(|d| d.trim_end_matches('s').parse::<f64>().ok())
            .map(|s| s.ceil() as u64);
        api
    }
}

struct GeminiStream(StreamTranslator);

impl Translate for GeminiStream {
    const END: &'static str = "a finish reason";

    fn step(&mut self, data: Bytes) -> event_body::Step {
        match self.0.step(&data) {
            Ok(Step::Emit(events)) => event_body::Step::Emit(events),
            Ok(Step::Failed(v)) => {
                let error = v.get("error").unwrap_or(&Value::Null);
                let status = error
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| StatusCode::from_u16(c as u16).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream failed during the stream");
                let mut api = ApiError::new(upstream_status::client_status(status), ErrorKind::Upstream, message);
                api.code = error.get("status").and_then(Value::as_str).map(str::to_owned);
                event_body::Step::Failed(api)
            }
            Err(_) => event_body::Step::Invalid("a stream event is not valid JSON".into()),
        }
    }

    fn end(&mut self) -> Option<Vec<StreamEvent>> {
        self.0.end()
    }
}

fn relay(body: Incoming, client: UpstreamClient, deadline: Instant) -> EventStream {
    event_body::translated(
        SseBody::sse(body, client, deadline),
        GeminiStream(StreamTranslator::new()),
    )
}

#[async_trait]
impl Provider for GeminiProvider {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        let body = translate::to_generate_request(&req).map_err(|error| UpstreamError::Status { error })?;
        let method = if stream {
            "streamGenerateContent"
        } else {
            "generateContent"
        };
        let answer = self.send(&call, method, &body, stream).await?;
        if stream {
            let client = self.upstream.client.clone();
            return Ok(Reply::Stream(relay(answer.body, client, answer.deadline)));
        }
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_chat_completion(&raw)
            .map_err(|e| self.upstream.protocol(format!("not a generateContent answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }

    async fn completions(&self, _call: Call<'_>, _req: CompletionRequest) -> Result<Reply, UpstreamError> {
        Err(UpstreamError::Status {
            error: ApiError::bad_request(format!(
                "provider `{}` (Gemini) serves chat and embeddings; use chat completions",
                self.name()
            ))
            .with_param("model")
            .with_code("unsupported_endpoint"),
        })
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        self.upstream.probe("/models").await
    }

    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        let body = translate::to_batch_embed_request(&req, call.upstream_model)
            .map_err(|error| UpstreamError::Status { error })?;
        let answer = self.send(&call, "batchEmbedContents", &body, false).await?;
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = translate::to_embeddings(&raw, &req)
            .map_err(|e| self.upstream.protocol(format!("not a batchEmbedContents answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }
}
