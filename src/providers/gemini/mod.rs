//! Google's Gemini API (Google AI): `generateContent`,
//! `streamGenerateContent?alt=sse` and `batchEmbedContents`, translated both
//! ways. The key goes in `x-goog-api-key`, never in the URL.

mod translate;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;

use super::event_body::{self, SseBody, Translate};
use super::upstream_call::{JsonPost, key_header, post_json};
use super::{
    Call, EventStream, Provider, Reply, StreamEvent, UpstreamClient, UpstreamError, percent_encode, upstream_status,
};
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, ErrorKind};
use crate::config::{HttpSpec, KeyState};
use translate::{Step, StreamTranslator};

const MAX_ANSWER_BYTES: usize = 64 << 20;
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

pub struct GeminiProvider {
    client: UpstreamClient,
    spec: HttpSpec,
    key: Option<HeaderValue>,
}

impl GeminiProvider {
    pub fn new(name: &str, spec: HttpSpec) -> Self {
        let key = key_header(&spec, "");
        GeminiProvider {
            client: UpstreamClient::new(name, spec.timeouts, &spec.extra_roots),
            spec,
            key,
        }
    }

    fn name(&self) -> &str {
        self.client.provider()
    }

    async fn send(
        &self,
        call: &Call<'_>,
        method: &str,
        body: &Value,
        stream: bool,
    ) -> Result<(Incoming, Instant), UpstreamError> {
        let query = if stream { "?alt=sse" } else { "" };
        let uri = format!(
            "{}/models/{}:{method}{query}",
            self.spec.base_url,
            percent_encode(call.upstream_model)
        )
        .parse()
        .ok();
        let body = serde_json::to_vec(body).map_err(|e| UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: e.to_string(),
        })?;
        let headers = self.key.iter().map(|k| (X_GOOG_API_KEY, k.clone())).collect::<Vec<_>>();
        let post = JsonPost {
            uri,
            body,
            stream,
            stream_type: "text/event-stream",
            headers: &headers,
        };
        let answer = post_json(&self.client, &self.spec, call, post, |status, _, raw| {
            let value: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
            self.translate_error(status, &value)
        })
        .await?;
        Ok((answer.body, answer.deadline))
    }

    /// Google's `{"error":{code, message, status, details}}` → the client's error.
    fn translate_error(&self, status: StatusCode, body: &Value) -> ApiError {
        let error = body.get("error").unwrap_or(&Value::Null);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(|m| scrub(&self.spec.key, m));
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

fn scrub(key: &KeyState, message: &str) -> String {
    match key {
        KeyState::Set(k) if k.expose().len() >= 8 => message.replace(k.expose(), "[redacted]"),
        _ => message.to_owned(),
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
        let (incoming, deadline) = self.send(&call, method, &body, stream).await?;
        if stream {
            return Ok(Reply::Stream(relay(incoming, self.client.clone(), deadline)));
        }
        let raw = self.client.read_body(incoming, MAX_ANSWER_BYTES, deadline).await?;
        let (body, usage) = translate::to_chat_completion(&raw).map_err(|e| UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: format!("not a generateContent answer: {e}"),
        })?;
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

    async fn embeddings(&self, call: Call<'_>, req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        let body = translate::to_batch_embed_request(&req, call.upstream_model)
            .map_err(|error| UpstreamError::Status { error })?;
        let (incoming, deadline) = self.send(&call, "batchEmbedContents", &body, false).await?;
        let raw = self.client.read_body(incoming, MAX_ANSWER_BYTES, deadline).await?;
        let (body, usage) = translate::to_embeddings(&raw, &req).map_err(|e| UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: format!("not a batchEmbedContents answer: {e}"),
        })?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }
}
