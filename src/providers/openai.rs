//! OpenAI and every OpenAI-compatible server (vLLM, TGI's Messages API,
//! Hugging Face's router, Ollama's `/v1`, Groq, Together, ...), and Azure
//! OpenAI through its flavor. Requests pass through with only `model`
//! rewritten; streams are relayed event by event.

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::time::Instant;

use super::client::UpstreamClient;
use super::error::UpstreamError;
use super::{Call, EventStream, Provider, Reply, StreamEvent};
use crate::api::usage::UsageOnly;
use crate::api::{
    ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, ErrorKind, StreamOptions, Usage,
};
use crate::config::{HttpSpec, KeyState};
use crate::stream::SseDecoder;

/// Largest complete (non-streamed) answer accepted from an upstream.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Largest error body read from an upstream.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// Largest single stream event: bounds memory per stream.
const MAX_EVENT_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub enum Flavor {
    OpenAi,
    /// Azure OpenAI classic: the deployment in the path, `api-version` in the query.
    Azure {
        api_version: String,
    },
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
    /// Pre-built `Authorization`/`api-key` value, marked sensitive so it is never logged.
    auth: Option<HeaderValue>,
    /// Endpoint URIs, built once (OpenAI flavor only; Azure's depend on the deployment).
    uris: Option<[Uri; 3]>,
}

impl OpenAiProvider {
    pub fn new(name: &str, spec: HttpSpec, flavor: Flavor) -> Self {
        let auth = match &spec.key {
            KeyState::Set(key) => {
                let raw = if spec.auth_header == http::header::AUTHORIZATION {
                    format!("Bearer {}", key.expose())
                } else {
                    key.expose().to_owned()
                };
                HeaderValue::from_str(&raw).ok().map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            }
            _ => None,
        };
        let uris = match flavor {
            Flavor::OpenAi => {
                let uri = |e: Endpoint| {
                    format!("{}/{}", spec.base_url, e.path())
                        .parse::<Uri>()
                        .ok()
                };
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
            client: UpstreamClient::new(name, spec.timeouts),
            spec,
            flavor,
            auth,
            uris,
        }
    }

    fn name(&self) -> &str {
        self.client.provider()
    }

    fn uri(&self, endpoint: Endpoint, model: &str) -> Result<Uri, UpstreamError> {
        let built = match (&self.flavor, &self.uris) {
            (Flavor::OpenAi, Some(uris)) => return Ok(uris[endpoint as usize].clone()),
            (Flavor::OpenAi, None) => None,
            (Flavor::Azure { api_version }, _) => format!(
                "{}/openai/deployments/{}/{}?api-version={}",
                self.spec.base_url,
                model,
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

    fn request(
        &self,
        call: &Call<'_>,
        endpoint: Endpoint,
        body: Vec<u8>,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        if let KeyState::Missing(vars) = &self.spec.key {
            return Err(UpstreamError::NotConfigured(format!(
                "provider `{}` has no API key: set {} in the gateway's environment",
                self.name(),
                vars.join(", ")
            )));
        }
        let uri = self.uri(endpoint, call.upstream_model)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(Bytes::from(body)))
            .expect("static parts are valid");
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        for (name, value) in &self.spec.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(auth) = &self.auth {
            headers.insert(self.spec.auth_header.clone(), auth.clone());
        }
        if let Ok(id) = HeaderValue::from_str(call.request_id) {
            headers.insert("x-request-id", id);
        }
        Ok(req)
    }

    async fn exchange(
        &self,
        call: Call<'_>,
        endpoint: Endpoint,
        body: Vec<u8>,
        stream: bool,
    ) -> Result<Reply, UpstreamError> {
        let req = self.request(&call, endpoint, body, stream)?;
        let deadline = self.client.total_deadline();
        let resp = self.client.send(req, deadline).await?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        if !status.is_success() {
            let raw = self
                .client
                .read_body(body, MAX_ERROR_BYTES, deadline)
                .await
                .unwrap_or_default();
            return Err(UpstreamError::Status {
                error: self.translate_error(status, &parts.headers, &raw),
            });
        }
        let is_sse = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if stream && is_sse {
            return Ok(Reply::Stream(self.relay(body, deadline)));
        }
        let raw = self
            .client
            .read_body(body, MAX_ANSWER_BYTES, deadline)
            .await?;
        if stream {
            // A JSON answer to a streamed request is an error body or a broken server.
            return Err(match serde_json::from_slice::<Value>(&raw) {
                Ok(v) if v.get("error").is_some() => UpstreamError::Status {
                    error: self.translate_error(StatusCode::BAD_GATEWAY, &parts.headers, &raw),
                },
                _ => self.protocol("a streamed request was answered without an event stream"),
            });
        }
        let usage = serde_json::from_slice::<UsageOnly>(&raw)
            .map_err(|_| self.protocol("the answer is not JSON"))?
            .usage;
        Ok(Reply::Complete { body: raw, usage })
    }

    fn protocol(&self, detail: &str) -> UpstreamError {
        UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// An upstream error as the client sees it: status, type, code and message
    /// kept; credentials problems become the gateway's problem (502), never
    /// the client's, and never echo anything about the key.
    fn translate_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> ApiError {
        let parsed: Option<UpstreamErrorBody> = serde_json::from_slice(raw).ok();
        let inner = parsed.map(|b| b.error);
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                format!(
                    "provider `{}` rejected the gateway's credentials (upstream status {})",
                    self.name(),
                    status.as_u16()
                ),
            )
            .with_code("upstream_auth_failed");
        }
        let mut error = match inner {
            Some(UpstreamErrorInner::Object {
                message,
                kind,
                param,
                code,
            }) => {
                let mut e = ApiError::new(
                    status,
                    ErrorKind::Upstream,
                    self.scrub(message.unwrap_or_else(|| {
                        format!(
                            "provider `{}` answered status {}",
                            self.name(),
                            status.as_u16()
                        )
                    })),
                );
                if let Some(k) = kind {
                    e.kind = k;
                }
                e.param = param;
                e.code = code.and_then(|c| match c {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                e
            }
            Some(UpstreamErrorInner::Text(message)) => {
                ApiError::new(status, ErrorKind::Upstream, self.scrub(message))
            }
            None => ApiError::new(
                status,
                ErrorKind::Upstream,
                format!(
                    "provider `{}` answered status {}",
                    self.name(),
                    status.as_u16()
                ),
            ),
        };
        error.retry_after = retry_after(headers);
        error
    }

    /// Removes the provider's key from a message an upstream wrote, should it appear.
    fn scrub(&self, message: String) -> String {
        match &self.spec.key {
            KeyState::Set(key) if key.expose().len() >= 8 && message.contains(key.expose()) => {
                message.replace(key.expose(), "[redacted]")
            }
            _ => message,
        }
    }

    fn relay(&self, body: Incoming, deadline: Instant) -> EventStream {
        let state = Relay {
            body,
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            client: self.client.clone(),
            deadline,
            skip_annotations: matches!(self.flavor, Flavor::Azure { .. }),
            finished: false,
        };
        Box::pin(stream::unfold(state, |mut relay| async move {
            if relay.finished {
                return None;
            }
            let item = relay.next().await;
            relay.finished = !matches!(item, Some(Ok(_)));
            item.map(|i| (i, relay))
        }))
    }
}

/// Reads an upstream SSE body and hands out OpenAI chunks.
struct Relay {
    body: Incoming,
    decoder: SseDecoder,
    client: UpstreamClient,
    deadline: Instant,
    /// Azure sends annotation-only chunks (empty `id`, no choices): not part of the answer.
    skip_annotations: bool,
    finished: bool,
}

impl Relay {
    async fn next(&mut self) -> Option<Result<StreamEvent, UpstreamError>> {
        loop {
            match self.decoder.next_event() {
                Err(e) => return Some(Err(self.protocol(&e.to_string()))),
                Ok(Some(event)) => {
                    let data = event.data;
                    if &data[..] == b"[DONE]" {
                        return None;
                    }
                    if let Some(error) = midstream_error(&data) {
                        return Some(Err(UpstreamError::Status { error }));
                    }
                    if self.skip_annotations && is_annotation_only(&data) {
                        continue;
                    }
                    return Some(Ok(classify_chunk(data)));
                }
                Ok(None) => match self.client.next_chunk(&mut self.body, self.deadline).await {
                    Ok(Some(bytes)) => self.decoder.push(&bytes),
                    Ok(None) => {
                        return Some(Err(UpstreamError::Dropped {
                            provider: self.client.provider().to_owned(),
                            detail: "the stream ended without `data: [DONE]`".into(),
                        }));
                    }
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }

    fn protocol(&self, detail: &str) -> UpstreamError {
        UpstreamError::Protocol {
            provider: self.client.provider().to_owned(),
            detail: detail.to_owned(),
        }
    }
}

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":"));

/// Wraps a chunk, reading its usage only when it has one: with
/// `include_usage` every chunk says `"usage":null`, and only the last is worth parsing.
pub(crate) fn classify_chunk(data: Bytes) -> StreamEvent {
    let has_usage = USAGE_KEY.find(&data).is_some_and(|at| {
        let rest = &data[at + 8..];
        rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    });
    if !has_usage {
        return StreamEvent::content(data);
    }
    #[derive(Deserialize)]
    struct Chunk {
        usage: Option<Usage>,
        #[serde(default)]
        choices: Vec<IgnoredAny>,
    }
    match serde_json::from_slice::<Chunk>(&data) {
        Ok(chunk) => StreamEvent {
            usage_only: chunk.choices.is_empty() && chunk.usage.is_some(),
            usage: chunk.usage,
            data,
        },
        Err(_) => StreamEvent::content(data),
    }
}

fn midstream_error(data: &[u8]) -> Option<ApiError> {
    let start = data.iter().position(|b| !b.is_ascii_whitespace())?;
    if !data[start..].starts_with(b"{\"error\"") {
        return None;
    }
    let body: UpstreamErrorBody = serde_json::from_slice(data).ok()?;
    Some(match body.error {
        UpstreamErrorInner::Object {
            message,
            kind,
            param,
            code,
        } => {
            let mut e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                message.unwrap_or_else(|| "the upstream failed during the stream".into()),
            );
            if let Some(k) = kind {
                e.kind = k;
            }
            e.param = param;
            e.code = code.and_then(|c| c.as_str().map(str::to_owned));
            e
        }
        UpstreamErrorInner::Text(message) => {
            ApiError::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, message)
        }
    })
}

fn is_annotation_only(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow)]
        id: Option<&'a str>,
    }
    memchr::memmem::find(data, b"\"id\":\"\"").is_some()
        && serde_json::from_slice::<Probe>(data).is_ok_and(|p| p.id.is_none_or(str::is_empty))
}

#[derive(Deserialize)]
struct UpstreamErrorBody {
    error: UpstreamErrorInner,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UpstreamErrorInner {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        param: Option<String>,
        #[serde(default)]
        code: Option<Value>,
    },
    Text(String),
}

/// Seconds to wait, from `retry-after`, `retry-after-ms`, or else OpenAI's
/// `x-ratelimit-reset-*` of whichever limit is exhausted.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = get("retry-after").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(secs.ceil() as u64);
    }
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some((ms / 1000.0).ceil() as u64);
    }
    ["requests", "tokens"]
        .iter()
        .filter(|limit| {
            get(&format!("x-ratelimit-remaining-{limit}")).is_some_and(|r| r.trim() == "0")
        })
        .filter_map(|limit| get(&format!("x-ratelimit-reset-{limit}")).and_then(go_duration_secs))
        .reduce(f64::max)
        .map(|secs| secs.ceil() as u64)
}

/// Parses Go-style durations as OpenAI sends them: `8.64s`, `6m0s`, `120ms`, `1h2m3s`.
fn go_duration_secs(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..split].parse().ok()?;
        let unit_end = rest[split..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| split + i);
        let scale = match &rest[split..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, call: Call<'_>, mut req: ChatRequest) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        req.model = call.upstream_model.to_owned();
        if stream {
            // Always ask for usage, so streams are metered; the relay hides the chunk from clients that did not ask.
            req.stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        }
        let body = serde_json::to_vec(&req).map_err(|e| self.protocol(&e.to_string()))?;
        self.exchange(call, Endpoint::Chat, body, stream).await
    }

    async fn completions(
        &self,
        call: Call<'_>,
        mut req: CompletionRequest,
    ) -> Result<Reply, UpstreamError> {
        let stream = req.is_stream();
        req.model = call.upstream_model.to_owned();
        if stream {
            req.stream_options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        }
        let body = serde_json::to_vec(&req).map_err(|e| self.protocol(&e.to_string()))?;
        self.exchange(call, Endpoint::Completions, body, stream)
            .await
    }

    async fn embeddings(
        &self,
        call: Call<'_>,
        mut req: EmbeddingsRequest,
    ) -> Result<Reply, UpstreamError> {
        req.model = call.upstream_model.to_owned();
        let body = serde_json::to_vec(&req).map_err(|e| self.protocol(&e.to_string()))?;
        self.exchange(call, Endpoint::Embeddings, body, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_only_from_the_usage_chunk() {
        let raw = std::str::from_utf8(include_bytes!(
            "../../tests/fixtures/openai/chat_stream.sse"
        ))
        .unwrap();
        let events: Vec<StreamEvent> = raw
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| classify_chunk(Bytes::copy_from_slice(d.as_bytes())))
            .collect();
        let with_usage: Vec<_> = events.iter().filter(|e| e.usage.is_some()).collect();
        assert_eq!(with_usage.len(), 1);
        assert!(with_usage[0].usage_only);
        assert_eq!(with_usage[0].usage, Some(Usage::new(91, 9)));
        assert!(events.last().unwrap().usage_only);
    }

    #[test]
    fn azure_annotation_chunks_are_recognised() {
        let raw = std::str::from_utf8(include_bytes!("../../tests/fixtures/azure/chat_stream.sse"))
            .unwrap();
        let first = raw
            .split("\n\n")
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        assert!(is_annotation_only(first.as_bytes()));
        let second = raw
            .split("\n\n")
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        assert!(!is_annotation_only(second.as_bytes()));
    }

    #[test]
    fn midstream_error_is_detected() {
        let e = midstream_error(
            br#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#,
        )
        .unwrap();
        assert_eq!(e.message, "overloaded");
        assert_eq!(e.kind, "server_error");
        assert!(midstream_error(br#"{"id":"x","choices":[]}"#).is_none());
    }

    #[test]
    fn retry_after_in_seconds_or_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1200"));
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(7));
    }

    #[test]
    fn retry_after_from_exhausted_openai_limit() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-remaining-requests", "9998"),
            ("x-ratelimit-reset-requests", "8.64s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1.2s"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        assert_eq!(retry_after(&h), Some(2), "only the exhausted limit counts");
        assert_eq!(go_duration_secs("6m0s"), Some(360.0));
        assert_eq!(go_duration_secs("120ms"), Some(0.12));
        assert_eq!(go_duration_secs("1h2m3s"), Some(3723.0));
        assert_eq!(go_duration_secs("soon"), None);
    }
}
