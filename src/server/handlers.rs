//! The proxy endpoints: chat completions, completions and embeddings share
//! one path: read the body within its limit, parse and validate, resolve the
//! model, call the provider before the deadline, answer or stream.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

use super::relay::{SseRelay, StreamLabels, StreamMeter};
use super::respond;
use super::state::Gateway;
use crate::api::error::from_json_error;
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest};
use crate::metering::Labels;
use crate::providers::{Call, Provider, Reply, UpstreamError};

/// A request type the proxy path can serve.
pub trait ProxyRequest: DeserializeOwned + Send + 'static {
    /// The metric label of the endpoint.
    const ENDPOINT: &'static str;
    fn model(&self) -> &str;
    fn validate(&self) -> Result<(), (String, &'static str)>;
    fn is_stream(&self) -> bool;
    fn wants_stream_usage(&self) -> bool;
    fn send<'a>(
        self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Reply, UpstreamError>>;
}

impl ProxyRequest for ChatRequest {
    const ENDPOINT: &'static str = "chat";
    fn model(&self) -> &str {
        &self.model
    }
    fn validate(&self) -> Result<(), (String, &'static str)> {
        ChatRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        ChatRequest::is_stream(self)
    }
    fn wants_stream_usage(&self) -> bool {
        ChatRequest::wants_stream_usage(self)
    }
    fn send<'a>(
        self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
        provider.chat(call, self)
    }
}

impl ProxyRequest for CompletionRequest {
    const ENDPOINT: &'static str = "completions";
    fn model(&self) -> &str {
        &self.model
    }
    fn validate(&self) -> Result<(), (String, &'static str)> {
        CompletionRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        CompletionRequest::is_stream(self)
    }
    fn wants_stream_usage(&self) -> bool {
        CompletionRequest::wants_stream_usage(self)
    }
    fn send<'a>(
        self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
        provider.completions(call, self)
    }
}

impl ProxyRequest for EmbeddingsRequest {
    const ENDPOINT: &'static str = "embeddings";
    fn model(&self) -> &str {
        &self.model
    }
    fn validate(&self) -> Result<(), (String, &'static str)> {
        EmbeddingsRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        false
    }
    fn wants_stream_usage(&self) -> bool {
        false
    }
    fn send<'a>(
        self,
        provider: &'a dyn Provider,
        call: Call<'a>,
    ) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
        provider.embeddings(call, self)
    }
}

pub async fn chat(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    proxy::<ChatRequest>(gw, req).await
}

pub async fn completions(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    proxy::<CompletionRequest>(gw, req).await
}

pub async fn embeddings(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    proxy::<EmbeddingsRequest>(gw, req).await
}

/// Label values for requests rejected before a model was resolved.
const UNRESOLVED: &str = "";

async fn proxy<R: ProxyRequest>(gw: Arc<Gateway>, req: Request) -> Response {
    let started = Instant::now();
    let in_flight = gw.metrics.start();
    let deadline = started + gw.settings.request_timeout;
    let (parts, body) = req.into_parts();
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");

    let reject = |err: ApiError| {
        let labels = Labels {
            endpoint: R::ENDPOINT,
            model: UNRESOLVED,
            provider: UNRESOLVED,
        };
        gw.metrics
            .request(labels, err.status.as_u16(), started.elapsed());
        respond::error(&err)
    };
    let bytes = match read_body(&parts.headers, body, gw.settings.max_body, deadline).await {
        Ok(b) => b,
        Err(err) => return reject(err),
    };
    let parsed: R = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return reject(from_json_error(&e)),
    };
    if let Err((message, param)) = parsed.validate() {
        return reject(
            ApiError::bad_request(message)
                .with_param(param)
                .with_code("invalid_value"),
        );
    }
    let backend = match gw.resolver.resolve(parsed.model()) {
        Ok(b) => b,
        Err(err) => return reject(err),
    };
    let labels = Labels {
        endpoint: R::ENDPOINT,
        model: &backend.model,
        provider: &backend.provider_name,
    };
    let fail = |err: &UpstreamError| {
        gw.metrics
            .upstream_error(&backend.provider_name, err.kind());
        let api = err.to_api_error();
        gw.metrics
            .request(labels, api.status.as_u16(), started.elapsed());
        tracing::warn!(%request_id, model = %backend.model, provider = %backend.provider_name, error = %err, "upstream failed");
        respond::error(&api)
    };
    let timed_out = || {
        gw.metrics.upstream_error(&backend.provider_name, "timeout");
        gw.metrics.request(labels, 504, started.elapsed());
        respond::error(&ApiError::request_timeout())
    };

    let stream = parsed.is_stream();
    let forward_usage = parsed.wants_stream_usage();
    // `send` consumes the request: keep the name the client asked for.
    let requested = parsed.model().to_owned();
    let call = Call {
        request_id,
        upstream_model: &backend.upstream_model,
        requested_model: &requested,
    };
    let reply = match timeout_at(deadline, parsed.send(&*backend.provider, call)).await {
        Err(_) => return timed_out(),
        Ok(Err(err)) => return fail(&err),
        Ok(Ok(reply)) => reply,
    };
    match reply {
        Reply::Complete { body, usage } => {
            gw.metrics.request(labels, 200, started.elapsed());
            if let Some(u) = &usage {
                gw.metrics.usage(labels, u);
            }
            let mut resp = respond::json(StatusCode::OK, body);
            resp.headers_mut()
                .insert("x-tollgate-backend", backend.header.clone());
            resp
        }
        Reply::Stream(mut events) if stream => {
            // Wait for the first event before answering, so a failure before
            // any data is an ordinary HTTP error the client (and later a
            // fallback) can act on.
            let first = match timeout_at(deadline, events.next()).await {
                Err(_) => return timed_out(),
                Ok(Some(Err(err))) => return fail(&err),
                Ok(None) => {
                    return fail(&UpstreamError::Dropped {
                        provider: backend.provider_name.to_string(),
                        detail: "the stream ended before any data".into(),
                    });
                }
                Ok(Some(Ok(first))) => first,
            };
            let labels = StreamLabels {
                endpoint: R::ENDPOINT,
                model: backend.model.clone(),
                provider: backend.provider_name.clone(),
            };
            let meter = StreamMeter::new(gw.metrics.clone(), labels, started, in_flight);
            let relay = SseRelay::new(first, events, forward_usage, deadline, meter);
            let mut resp = Response::new(Body::new(relay));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-tollgate-backend", backend.header.clone());
            resp
        }
        Reply::Stream(_) => fail(&UpstreamError::Protocol {
            provider: backend.provider_name.to_string(),
            detail: "streamed an answer that was not asked for".into(),
        }),
    }
}

/// Reads the request body, refusing more than `limit` bytes (413) and a client
/// that sends too slowly for the deadline (504 is not theirs to cause: 408).
async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    match timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            crate::api::ErrorKind::InvalidRequest,
            "The request body did not arrive in time.",
        )
        .with_code("request_timeout")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::payload_too_large(limit))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("The request body could not be read.")
            .with_code("invalid_request_body")),
    }
}
