//! The one JSON POST every HTTP provider makes: the configured and the
//! provider's own headers, the request id, a check that the key is set, the
//! timeouts, and an error status read (bounded) for the provider to translate.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{Call, UpstreamClient, UpstreamError};
use crate::api::ApiError;
use crate::config::{HttpSpec, KeyState};

/// Largest error body read from an upstream.
const MAX_ERROR_BYTES: usize = 64 << 10;
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct JsonPost<'a> {
    pub uri: Option<Uri>,
    pub body: Vec<u8>,
    pub stream: bool,
    /// What a streamed answer comes as: `text/event-stream` or `application/x-ndjson`.
    pub stream_type: &'static str,
    /// The provider's own headers (its key, its API version), after the configured ones.
    pub headers: &'a [(HeaderName, HeaderValue)],
}

/// A successful answer: its headers and the body still to read.
pub struct Success {
    pub headers: HeaderMap,
    pub body: Incoming,
    pub deadline: Instant,
}

/// Sends the POST. An error status, or a streamed request answered without
/// a stream (an error body, or a broken server), comes back as an error:
/// `translate` turns the upstream's error body into the client's error.
pub async fn post_json(
    client: &UpstreamClient,
    spec: &HttpSpec,
    call: &Call<'_>,
    post: JsonPost<'_>,
    translate: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> ApiError,
) -> Result<Success, UpstreamError> {
    require_key(client, spec)?;
    let uri = post.uri.ok_or_else(|| {
        UpstreamError::NotConfigured(format!(
            "provider `{}` cannot build a URL for model `{}`",
            client.provider(),
            call.upstream_model
        ))
    })?;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Full::new(Bytes::from(post.body)))
        .expect("static parts are valid");
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        ACCEPT,
        HeaderValue::from_static(if post.stream {
            post.stream_type
        } else {
            "application/json"
        }),
    );
    for (name, value) in spec.headers.iter().chain(post.headers) {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(REQUEST_ID, call.request_id.clone());
    let deadline = client.total_deadline();
    let resp = client.send(req, deadline, post.stream).await?;
    let (parts, body) = resp.into_parts();
    let streamed = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(post.stream_type));
    if parts.status.is_success() && (streamed || !post.stream) {
        return Ok(Success {
            headers: parts.headers,
            body,
            deadline,
        });
    }
    let raw = client
        .read_body(body, MAX_ERROR_BYTES, deadline)
        .await
        .unwrap_or_default();
    if !parts.status.is_success() {
        return Err(UpstreamError::Status {
            error: translate(parts.status, &parts.headers, &raw),
        });
    }
    let is_error = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw)
        .is_ok_and(|m| m.contains_key("error"));
    if is_error {
        return Err(UpstreamError::Status {
            error: translate(StatusCode::BAD_GATEWAY, &parts.headers, &raw),
        });
    }
    Err(UpstreamError::Protocol {
        provider: client.provider().to_owned(),
        detail: "a streamed request was answered without a stream".into(),
    })
}

/// A provider whose key is configured but missing from the environment is not called at all.
fn require_key(client: &UpstreamClient, spec: &HttpSpec) -> Result<(), UpstreamError> {
    match &spec.key {
        KeyState::Missing(vars) => Err(UpstreamError::NotConfigured(format!(
            "provider `{}` has no API key: set {} in the gateway's environment",
            client.provider(),
            vars.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// GETs `uri` with the configured and the provider's own headers: the whole
/// body, bounded, or the translated error.
pub async fn get(
    client: &UpstreamClient,
    spec: &HttpSpec,
    headers: &[(HeaderName, HeaderValue)],
    uri: Option<Uri>,
    translate: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> ApiError,
) -> Result<Bytes, UpstreamError> {
    require_key(client, spec)?;
    let uri = uri.ok_or_else(|| UpstreamError::Protocol {
        provider: client.provider().to_owned(),
        detail: "the configured base URL makes no valid URL".into(),
    })?;
    let mut req = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("static parts are valid");
    for (name, value) in spec.headers.iter().chain(headers) {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let deadline = client.total_deadline();
    let (parts, body) = client.send(req, deadline, false).await?.into_parts();
    if !parts.status.is_success() {
        let raw = client
            .read_body(body, MAX_ERROR_BYTES, deadline)
            .await
            .unwrap_or_default();
        return Err(UpstreamError::Status {
            error: translate(parts.status, &parts.headers, &raw),
        });
    }
    client.read_body(body, MAX_ANSWER_BYTES, deadline).await
}

/// An active health check: a GET that any success answers (the body is read
/// and dropped, so the connection goes back to the pool).
pub async fn probe(
    client: &UpstreamClient,
    spec: &HttpSpec,
    headers: &[(HeaderName, HeaderValue)],
    uri: Option<Uri>,
) -> Result<(), UpstreamError> {
    get(client, spec, headers, uri, |status, _, _| {
        ApiError::new(
            super::upstream_status::client_status(status),
            super::upstream_status::kind_for(status),
            format!("the health check was answered {status}"),
        )
    })
    .await
    .map(drop)
}

/// Largest complete answer read from an upstream.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A translating provider's upstream: its pooled client, its config, and its
/// own headers (key, API version), built once.
pub struct JsonUpstream {
    pub client: UpstreamClient,
    pub spec: HttpSpec,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl JsonUpstream {
    pub fn new(name: &str, spec: HttpSpec, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        JsonUpstream {
            client: UpstreamClient::new(name, spec.timeouts, &spec.extra_roots),
            spec,
            headers,
        }
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        self.client.provider()
    }

    /// `path` under the configured base URL.
    pub fn uri(&self, path: &str) -> Option<Uri> {
        format!("{}{path}", self.spec.base_url).parse().ok()
    }

    /// The upstream answered something that is not its API.
    pub fn protocol(&self, detail: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol {
            provider: self.name().to_owned(),
            detail: detail.into(),
        }
    }

    /// POSTs `body` as JSON; see [`post_json`].
    pub async fn post(
        &self,
        call: &Call<'_>,
        uri: Option<Uri>,
        body: &impl serde::Serialize,
        (stream, stream_type): (bool, &'static str),
        translate: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> ApiError,
    ) -> Result<Success, UpstreamError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e.to_string()))?;
        let post = JsonPost {
            uri,
            body,
            stream,
            stream_type,
            headers: &self.headers,
        };
        post_json(&self.client, &self.spec, call, post, translate).await
    }

    /// GETs `uri` (a model list, say); see [`get`].
    pub async fn get(
        &self,
        uri: Option<Uri>,
        translate: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> ApiError,
    ) -> Result<Bytes, UpstreamError> {
        get(&self.client, &self.spec, &self.headers, uri, translate).await
    }

    /// An active health check: GET `path`, any success is healthy.
    pub async fn probe(&self, path: &str) -> Result<(), UpstreamError> {
        probe(&self.client, &self.spec, &self.headers, self.uri(path)).await
    }

    /// Removes the provider's key from text an upstream wrote, should it appear.
    pub fn scrub(&self, message: &str) -> String {
        scrub(&self.spec.key, message)
    }

    /// A complete answer's body, bounded.
    pub async fn read(&self, answer: Success) -> Result<Bytes, UpstreamError> {
        self.client
            .read_body(answer.body, MAX_ANSWER_BYTES, answer.deadline)
            .await
    }
}

/// Removes `key` from text an upstream wrote, should it appear (short keys
/// are left alone: they would match ordinary words).
pub fn scrub(key: &KeyState, message: &str) -> String {
    match key {
        KeyState::Set(k) if k.expose().len() >= 8 && message.contains(k.expose()) => {
            message.replace(k.expose(), "[redacted]")
        }
        _ => message.to_owned(),
    }
}

/// A provider's key as a header value, marked sensitive so it is never logged.
pub fn key_header(spec: &HttpSpec, prefix: &str) -> Option<HeaderValue> {
    match &spec.key {
        KeyState::Set(k) => HeaderValue::from_str(&format!("{prefix}{}", k.expose()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        _ => None,
    }
}
