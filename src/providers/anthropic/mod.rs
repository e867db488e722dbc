//! Anthropic's Messages API: a client's OpenAI chat request is translated to
//! a Messages request, and the answer, the stream and the errors back. The
//! translation is in `request` and `response`, pure and tested on fixtures;
//! this module does the HTTP.

mod request;
mod response;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;

use super::event_body::{self, SseBody, Translate};
use super::upstream_call::{JsonUpstream, key_header, scrub};
use super::upstream_status;
use super::{Call, EventStream, Provider, Reply, UpstreamClient, UpstreamError};
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, ErrorKind};
use crate::config::{HttpSpec, KeyState};
use response::{Step, StreamTranslator};

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

pub struct AnthropicProvider {
    upstream: JsonUpstream,
    messages_uri: Option<Uri>,
    /// `max_tokens` is required by Anthropic; used when the request sets none.
    default_max_tokens: u32,
}

impl AnthropicProvider {
    pub fn new(name: &str, spec: HttpSpec, version: &str, default_max_tokens: u32) -> Self {
        let version = HeaderValue::from_str(version).unwrap_or(HeaderValue::from_static("2023-06-01"));
        let mut headers = vec![(ANTHROPIC_VERSION, version)];
        // `x-api-key`, marked sensitive so it is never logged.
        headers.extend(key_header(&spec, "").map(|k| (X_API_KEY, k)));
        let upstream = JsonUpstream::new(name, spec, headers);
        AnthropicProvider {
            messages_uri: upstream.uri("/v1/messages"),
            upstream,
            default_max_tokens,
        }
    }

    fn name(&self) -> &str {
        self.upstream.name()
    }

    /// Anthropic's `{"type":"error","error":{"type","message"}}` → the client's error.
    fn translate_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> ApiError {
        let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let (kind, message) = error_parts(&body);
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let logged = self.upstream.scrub(message.unwrap_or(""));
            return upstream_status::credentials_rejected(self.name(), status, &logged);
        }
        // 529 "overloaded" is Anthropic's own status: clients know it as 503.
        let status = if status.as_u16() == 529 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            upstream_status::client_status(status)
        };
        let message = message.map_or_else(
            || format!("provider `{}` answered status {}", self.name(), status.as_u16()),
            |m| self.upstream.scrub(m),
        );
        let mut error = ApiError::new(status, ErrorKind::Upstream, message);
        if let Some(kind) = kind {
            kind.clone_into(&mut error.kind);
            error.code = Some(kind.to_owned());
        }
        error.retry_after = upstream_status::retry_after(headers);
        error
    }
}

/// The status a client sees for an Anthropic error type (used for errors
/// that arrive inside a stream, which have no HTTP status of their own).
fn status_for(kind: Option<&str>) -> StatusCode {
    match kind {
        Some("invalid_request_error") => StatusCode::BAD_REQUEST,
        Some("rate_limit_error") => StatusCode::TOO_MANY_REQUESTS,
        Some("overloaded_error") => StatusCode::SERVICE_UNAVAILABLE,
        Some("timeout_error") => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn error_parts(body: &Value) -> (Option<&str>, Option<&str>) {
    let error = body.get("error");
    (
        error.and_then(|e| e.get("type")).and_then(Value::as_str),
        error.and_then(|e| e.get("message")).and_then(Value::as_str),
    )
}

/// Anthropic's stream translation, for the shared stream driver.
struct AnthropicStream {
    translator: StreamTranslator,
    /// The provider's key, to scrub from error text.
    key: KeyState,
}

impl Translate for AnthropicStream {
    const END: &'static str = "`message_stop`";

    fn step(&mut self, data: Bytes) -> event_body::Step {
        match self.translator.step(&data) {
            Ok(Step::Emit(events)) => event_body::Step::Emit(events),
            Ok(Step::Done(events)) => event_body::Step::Done(events),
            Ok(Step::Failed(event)) => {
                let (kind, message) = error_parts(&event);
                let message = scrub(&self.key, message.unwrap_or("the upstream failed during the stream"));
                let mut error = ApiError::new(status_for(kind), ErrorKind::Upstream, message);
                if let Some(kind) = kind {
                    kind.clone_into(&mut error.kind);
                    error.code = Some(kind.to_owned());
                }
                event_body::Step::Failed(error)
            }
            Err(_) => event_body::Step::Invalid("a stream event is not valid JSON".into()),
        }
    }
}

fn relay(body: Incoming, client: UpstreamClient, deadline: Instant, key: KeyState) -> EventStream {
    event_body::translated(
        SseBody::sse(body, client, deadline),
        AnthropicStream {
            translator: StreamTranslator::new(),
            key,
        },
    )
}

fn no_endpoint(provider: &str, what: &str) -> UpstreamError {
    UpstreamError::Status {
        error: ApiError::bad_request(format!(
            "provider `{provider}` (Anthropic) has no {what} API; use a model of another provider"
        ))
        .with_param("model")
        .with_code("unsupported_endpoint"),
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat(&self, call: Call<'_>, req: ChatRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        let translated = request::to_messages_request(&req, call.upstream_model, self.default_max_tokens)
            .map_err(|error| UpstreamError::Status { error })?;
        let answer = self
            .upstream
            .post(
                &call,
                self.messages_uri.clone(),
                &translated,
                (stream, "text/event-stream"),
                |status, headers, raw| self.translate_error(status, headers, raw),
            )
            .await?;
        if stream {
            let client = self.upstream.client.clone();
            let key = self.upstream.spec.key.clone();
            return Ok(Reply::Stream(relay(answer.body, client, answer.deadline, key)));
        }
        let raw = self.upstream.read(answer).await?;
        let (body, usage) = response::to_chat_completion(&raw)
            .map_err(|e| self.upstream.protocol(format!("not a Messages answer: {e}")))?;
        Ok(Reply::Complete {
            body,
            usage: Some(usage),
        })
    }

    async fn completions(&self, _call: Call<'_>, _req: CompletionRequest) -> Result<Reply, UpstreamError> {
        Err(no_endpoint(self.name(), "legacy completions"))
    }

    async fn embeddings(&self, _call: Call<'_>, _req: EmbeddingsRequest) -> Result<Reply, UpstreamError> {
        Err(no_endpoint(self.name(), "embeddings"))
    }

    async fn probe(&self) -> Result<(), UpstreamError> {
        self.upstream.probe("/v1/models").await
    }
}
