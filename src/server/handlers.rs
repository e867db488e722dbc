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
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

use super::meter::RequestMeter;
use super::relay::SseRelay;
use super::respond;
use super::state::Gateway;
use crate::api::error::from_json_error;
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, Invalid};
use crate::keys::Caller;
use crate::keys::budget::{Now, Period};
use crate::keys::registry::ManagedKey;
use crate::metering::Endpoint;
use crate::providers::{Call, Provider, Reply, UpstreamError};
use crate::routing::limits::Limited as RateLimited;
use crate::routing::{Backend, Features};

// Names parsed once, not on every answer.
const BACKEND: HeaderName = HeaderName::from_static("x-tollgate-backend");
const ROUTE: HeaderName = HeaderName::from_static("x-tollgate-route");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");
const COST_USD: HeaderName = HeaderName::from_static("x-tollgate-cost-usd");
const USAGE: HeaderName = HeaderName::from_static("x-tollgate-usage");

/// A request type the proxy path can serve.
pub trait ProxyRequest: DeserializeOwned + Clone + Send + 'static {
    /// The metric label of the endpoint.
    const ENDPOINT: Endpoint;
    fn model(&self) -> &str;
    /// What the router reads.
    fn features(&self) -> Features<'_>;
    fn validate(&self) -> Result<(), Invalid>;
    fn is_stream(&self) -> bool;
    fn wants_stream_usage(&self) -> bool;
    fn send<'a>(self, provider: &'a dyn Provider, call: Call<'a>) -> BoxFuture<'a, Result<Reply, UpstreamError>>;
}

impl ProxyRequest for ChatRequest {
    const ENDPOINT: Endpoint = Endpoint::Chat;
    fn model(&self) -> &str {
        &self.model
    }
    fn features(&self) -> Features<'_> {
        Features::chat(self)
    }
    fn validate(&self) -> Result<(), Invalid> {
        ChatRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        ChatRequest::is_stream(self)
    }
    fn wants_stream_usage(&self) -> bool {
        ChatRequest::wants_stream_usage(self)
    }
    fn send<'a>(self, provider: &'a dyn Provider, call: Call<'a>) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
        provider.chat(call, self)
    }
}

impl ProxyRequest for CompletionRequest {
    const ENDPOINT: Endpoint = Endpoint::Completions;
    fn model(&self) -> &str {
        &self.model
    }
    fn features(&self) -> Features<'_> {
        Features::completion(self)
    }
    fn validate(&self) -> Result<(), Invalid> {
        CompletionRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        CompletionRequest::is_stream(self)
    }
    fn wants_stream_usage(&self) -> bool {
        CompletionRequest::wants_stream_usage(self)
    }
    fn send<'a>(self, provider: &'a dyn Provider, call: Call<'a>) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
        provider.completions(call, self)
    }
}

impl ProxyRequest for EmbeddingsRequest {
    const ENDPOINT: Endpoint = Endpoint::Embeddings;
    fn model(&self) -> &str {
        &self.model
    }
    fn features(&self) -> Features<'_> {
        Features::embeddings(self)
    }
    fn validate(&self) -> Result<(), Invalid> {
        EmbeddingsRequest::validate(self)
    }
    fn is_stream(&self) -> bool {
        false
    }
    fn wants_stream_usage(&self) -> bool {
        false
    }
    fn send<'a>(self, provider: &'a dyn Provider, call: Call<'a>) -> BoxFuture<'a, Result<Reply, UpstreamError>> {
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

async fn proxy<R: ProxyRequest>(gw: Arc<Gateway>, req: Request) -> Response {
    let Ok(permit) = gw.limiter.clone().try_acquire_owned() else {
        return respond::error(&ApiError::overloaded());
    };
    let mut meter = RequestMeter::start(gw.metrics.clone(), R::ENDPOINT, permit);
    let started = meter.started();
    let deadline = started + gw.settings.request_timeout;
    let (parts, body) = req.into_parts();
    // The edge layer always sets a sane id.
    let request_header = parts
        .headers
        .get("x-request-id")
        .cloned()
        .unwrap_or(HeaderValue::from_static("-"));
    let request_id = request_header.to_str().unwrap_or("-");
    if gw.ledger.is_some() {
        meter.ledger(gw.ledger.clone(), request_id);
    }
    let caller = parts.extensions.get::<Caller>().cloned();
    meter.caller(caller.clone());

    let prepared = async {
        let body_deadline = deadline.min(started + gw.settings.body_timeout);
        let bytes = read_body(&parts.headers, body, gw.settings.max_body, body_deadline).await?;
        let parsed: R = serde_json::from_slice(&bytes).map_err(|e| from_json_error(&e))?;
        parsed.validate().map_err(|(message, param)| {
            ApiError::bad_request(message)
                .with_param(param)
                .with_code("invalid_value")
        })?;
        let mut features = parsed.features();
        if let Some(c) = &caller {
            features.key_id = Some(c.id());
            features.team = c.team();
        }
        let router = gw.router.load();
        let decision = router.decide(&features, &parts.headers, Instant::now())?;
        if let Some(err) = decision.nothing_left() {
            return Err(err);
        }
        let mirror_to = router.mirror_to(&decision);
        // What the rate limits and a cut stream's estimate need, read once.
        let estimate = (features.input_tokens, features.max_tokens);
        Ok::<_, ApiError>((parsed, decision, mirror_to, bytes.len(), estimate))
    };
    let (parsed, decision, mirror_to, body_size, (prompt_tokens, max_tokens)) = match prepared.await {
        Ok(ready) => ready,
        Err(err) => {
            meter.finish(err.status.as_u16());
            return respond::error(&err);
        }
    };
    let route_header = decision.route_header.clone();
    if let Some(key) = caller.as_ref().and_then(Caller::managed)
        && let Some(refused) = refuse_key(&gw, &mut meter, key, prompt_tokens, max_tokens)
    {
        return refused;
    }
    meter.prompt_estimate(prompt_tokens);
    if parsed.is_stream() && gw.cuts_streams() {
        meter.watch_budget();
    }
    meter.routed(&decision.route, parsed.model(), parsed.is_stream());
    let stream = parsed.is_stream();
    let forward_usage = parsed.wants_stream_usage();
    // `send` consumes the request: keep the name the client asked for.
    let requested = parsed.model().to_owned();
    let attempts = decision.attempts();
    let retry = decision.retry;
    if let Some(to) = mirror_to {
        match gw.shadows.clone().try_acquire_owned() {
            Ok(permit) => {
                meter.mirrored(decision.route.clone());
                let request_id =
                    HeaderValue::from_str(&format!("{request_id}-shadow")).unwrap_or(request_header.clone());
                super::mirror::spawn(
                    gw.clone(),
                    super::mirror::Shadow {
                        route: decision.route.clone(),
                        backend: to,
                        request: parsed.clone(),
                        request_id,
                        body_size,
                        deadline,
                        permit,
                    },
                );
            }
            Err(_) => gw.metrics.mirror_skipped(&decision.route),
        }
    }
    let mut parsed = Some(parsed);
    let mut tries: u32 = 0;
    let mut last_failure: Option<(UpstreamError, Arc<Backend>)> = None;
    let mut skipped: Vec<String> = Vec::new();
    let mut limited: Option<RateLimited> = None;

    'backends: for (i, candidate) in decision.candidates.iter().take(attempts).enumerate() {
        let backend = &candidate.backend;
        for again in 0..=retry.same_backend {
            if again > 0 {
                let wait = retry.backoff.saturating_mul(1 << (again - 1).min(10));
                if Instant::now() + wait >= deadline {
                    break 'backends;
                }
                tokio::time::sleep(wait).await;
            }
            // The claim first: a backend that cannot take the request costs
            // no rate-limit cell; one refused by its limits gives the claim back.
            if let Err(why) = backend.health.admit(Instant::now(), decision.honour_cooldown) {
                skipped.push(format!("{}: {why}", backend.model));
                continue 'backends;
            }
            let reservation = match backend.limits.as_ref().map(|l| l.take(prompt_tokens, max_tokens)) {
                None => None,
                Some(Ok(reservation)) => reservation,
                Some(Err(refused)) => {
                    backend.health.release();
                    gw.metrics
                        .rate_limited("backend", &backend.model, &backend.provider_name, refused.limit);
                    skipped.push(format!("{}: {refused}", backend.model));
                    limited = Some(refused);
                    continue 'backends;
                }
            };
            tries += 1;
            if tries > 1 {
                let kind = if again > 0 { "same_backend" } else { "fallback" };
                gw.metrics.retry(&decision.route, kind);
            }
            meter.resolved(backend, reservation);
            let last = i + 1 == attempts && again == retry.same_backend;
            let Some(req) = (if last { parsed.take() } else { parsed.clone() }) else {
                break 'backends;
            };
            let call = Call {
                request_id: &request_header,
                body_size,
                upstream_model: &backend.upstream_model,
                requested_model: &requested,
            };
            let began = Instant::now();
            let sent = timeout_at(deadline, req.send(&*backend.provider, call)).await;
            meter.waited(began.elapsed());
            let reply = match sent {
                Err(_) => {
                    backend.health.release();
                    return timed_out(&mut meter);
                }
                Ok(Ok(reply)) => reply,
                Ok(Err(err)) => {
                    if !note_failure(&gw, &mut meter, backend, &err, request_id) {
                        return failed(&mut meter, &err, &route_header, tries);
                    }
                    last_failure = Some((err, backend.clone()));
                    continue;
                }
            };
            let served = Served {
                backend: backend.header.clone(),
                route: route_header.clone(),
                attempts: tries,
            };
            match reply {
                Reply::Complete { body, usage } => {
                    backend.health.success(began.elapsed());
                    gw.metrics
                        .route_decision(&decision.route, &backend.model, &backend.provider_name);
                    meter.finish(200);
                    let estimated = usage.is_some_and(|u| u.estimated);
                    if let Some(u) = usage {
                        meter.usage(u);
                    }
                    let cost = meter.cost();
                    let mut resp = respond::json(StatusCode::OK, body);
                    served.stamp(resp.headers_mut());
                    if let Some(pico) = cost
                        && let Ok(v) = HeaderValue::from_str(&crate::metering::cost::usd_text(pico))
                    {
                        // At the catalog's prices; metering records the same figure.
                        resp.headers_mut().insert(COST_USD, v);
                    }
                    if estimated {
                        // The upstream reported no usage: the counts in the body are tollgate's estimate.
                        resp.headers_mut().insert(USAGE, HeaderValue::from_static("estimated"));
                    }
                    return resp;
                }
                Reply::Stream(mut events) if stream => {
                    // Wait for the first event before answering, so a failure
                    // before any data is an ordinary HTTP error, and the next
                    // backend can still be tried.
                    let waiting = Instant::now();
                    let first = timeout_at(deadline, events.next()).await;
                    meter.waited(waiting.elapsed());
                    let first = match first {
                        Err(_) => {
                            backend.health.release();
                            return timed_out(&mut meter);
                        }
                        Ok(Some(Ok(first))) => first,
                        Ok(outcome) => {
                            let err = match outcome {
                                Some(Err(err)) => err,
                                _ => UpstreamError::Dropped {
                                    provider: backend.provider_name.to_string(),
                                    detail: "the stream ended before any data".into(),
                                },
                            };
                            if !note_failure(&gw, &mut meter, backend, &err, request_id) {
                                return failed(&mut meter, &err, &route_header, tries);
                            }
                            last_failure = Some((err, backend.clone()));
                            continue;
                        }
                    };
                    backend.health.success(began.elapsed());
                    gw.metrics
                        .route_decision(&decision.route, &backend.model, &backend.provider_name);
                    let relay = SseRelay::new(first, events, forward_usage, deadline, meter, request_id);
                    let mut resp = Response::new(Body::new(relay));
                    let h = resp.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    served.stamp(h);
                    return resp;
                }
                Reply::Stream(_) => {
                    let err = UpstreamError::Protocol {
                        provider: backend.provider_name.to_string(),
                        detail: "streamed an answer that was not asked for".into(),
                    };
                    note_failure(&gw, &mut meter, backend, &err, request_id);
                    return failed(&mut meter, &err, &route_header, tries);
                }
            }
        }
    }
    // Refused without trying any (rate limits, open circuits): still the
    // route's first backend's request in the metrics, not an unlabelled one.
    if let Some(first) = decision.candidates.first() {
        meter.attribute(&first.backend);
    }
    match last_failure {
        Some((err, _)) => failed(&mut meter, &err, &route_header, tries),
        None if limited.is_some() => {
            let refused = limited.unwrap_or_else(|| unreachable!("checked"));
            meter.finish(429);
            let mut resp = respond::error(&rate_limit_error(&refused, &skipped));
            stamp_route(resp.headers_mut(), &route_header, tries);
            rate_limit_headers(resp.headers_mut(), &refused);
            resp
        }
        None => {
            let err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::api::ErrorKind::Server,
                format!(
                    "route `{}` has no backend that can take this request now ({})",
                    decision.route,
                    skipped.join("; ")
                ),
            )
            .with_code("no_backend_available");
            meter.finish(503);
            let mut resp = respond::error(&err);
            stamp_route(resp.headers_mut(), &route_header, tries);
            resp
        }
    }
}

/// Checks a managed key's budgets and rate limits, and its team's, before
/// any upstream is called. Refused: the 429 to send (metered).
fn refuse_key(
    gw: &Gateway,
    meter: &mut RequestMeter,
    key: &ManagedKey,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
) -> Option<Response> {
    let now = Now::current();
    let team = key.team.as_deref();
    let budgets = [Some(("key", key.record.budget(), &key.spend))]
        .into_iter()
        .chain([team.map(|t| ("team", t.spec.budget, &t.spend))])
        .flatten();
    for (scope, budget, spend) in budgets {
        if let Some((period, limit)) = budget.exhausted(spend.spent(now)) {
            gw.metrics.budget_rejected(scope, period.as_str());
            meter.finish(429);
            return Some(respond::error(&budget_error(scope, period, limit, now)));
        }
    }
    let limits = [
        ("key", key.limits.as_deref()),
        ("team", team.and_then(|t| t.limits.as_deref())),
    ];
    for (scope, limits) in limits {
        let Some(limits) = limits else { continue };
        match limits.take(prompt_tokens, max_tokens) {
            Ok(reservation) => meter.reserved(reservation),
            Err(refused) => {
                gw.metrics.rate_limited(scope, "", "", refused.limit);
                meter.finish(429);
                let mut resp = respond::error(&rate_limit_error(&refused, &[format!("{scope}: {refused}")]));
                rate_limit_headers(resp.headers_mut(), &refused);
                return Some(resp);
            }
        }
    }
    None
}

/// 429 `budget_exceeded`, with `Retry-After` until the period starts again.
pub(super) fn budget_error(scope: &str, period: Period, limit: crate::metering::cost::Pico, now: Now) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        crate::api::ErrorKind::RateLimit,
        format!(
            "This {scope}'s {} budget of ${} is spent; it renews at the start of the next UTC {}.",
            period.adjective(),
            crate::metering::cost::usd_text(limit),
            period.as_str()
        ),
    )
    .with_code("budget_exceeded");
    e.kind = "insufficient_quota".into();
    let wait = now.until_reset(period);
    e.retry_after = Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
    e
}

/// OpenAI's rate-limit error: 429, `rate_limit_exceeded`, and how long to wait.
fn rate_limit_error(refused: &RateLimited, skipped: &[String]) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        crate::api::ErrorKind::RateLimit,
        format!("Rate limit reached ({}). Please try again later.", skipped.join("; ")),
    )
    .with_code("rate_limit_exceeded");
    e.retry_after = Some(refused.wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// `x-ratelimit-limit|remaining|reset-requests|tokens`, shaped like OpenAI's.
fn rate_limit_headers(h: &mut http::HeaderMap, refused: &RateLimited) {
    let name = |what: &str| http::HeaderName::from_bytes(format!("x-ratelimit-{what}-{}", refused.limit).as_bytes());
    if let Ok(n) = name("limit") {
        h.insert(n, HeaderValue::from(refused.per_minute));
    }
    if let Ok(n) = name("remaining") {
        h.insert(n, HeaderValue::from(0u32));
    }
    if let (Ok(n), Ok(v)) = (
        name("reset"),
        HeaderValue::from_str(&format!("{:.3}s", refused.wait.as_secs_f64())),
    ) {
        h.insert(n, v);
    }
}

/// Where an answer came from: `x-tollgate-backend`, `x-tollgate-route`, `x-tollgate-attempts`.
struct Served {
    backend: HeaderValue,
    route: HeaderValue,
    attempts: u32,
}

impl Served {
    fn stamp(&self, h: &mut http::HeaderMap) {
        h.insert(BACKEND, self.backend.clone());
        stamp_route(h, &self.route, self.attempts);
    }
}

fn stamp_route(h: &mut http::HeaderMap, route: &HeaderValue, attempts: u32) {
    h.insert(ROUTE, route.clone());
    h.insert(ATTEMPTS, HeaderValue::from(attempts));
}

/// Records a failed attempt: metrics, the backend's health, a `Retry-After`
/// cooldown, the log. Answers whether another attempt may follow.
fn note_failure(
    gw: &Gateway,
    meter: &mut RequestMeter,
    backend: &Backend,
    err: &UpstreamError,
    request_id: &str,
) -> bool {
    meter.upstream_error(err.kind());
    let now = Instant::now();
    if err.is_backend_fault() {
        backend.health.failure(now, &gw.router.load().breaker);
    } else {
        backend.health.release();
    }
    if let Some(wait) = err.retry_after() {
        backend.health.cool_down(now, wait);
    }
    tracing::warn!(%request_id, model = %backend.model, provider = %backend.provider_name, error = %err, "upstream failed");
    err.retryable()
}

fn failed(meter: &mut RequestMeter, err: &UpstreamError, route: &HeaderValue, attempts: u32) -> Response {
    let api = err.to_api_error();
    meter.finish(api.status.as_u16());
    let mut resp = respond::error(&api);
    stamp_route(resp.headers_mut(), route, attempts);
    resp
}

fn timed_out(meter: &mut RequestMeter) -> Response {
    meter.upstream_error("timeout");
    meter.finish(504);
    respond::error(&ApiError::request_timeout())
}

/// Reads the request body, refusing more than `limit` bytes (413) and a
/// client that sends it too slowly (408).
pub(super) async fn read_body(
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
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit))
        }
        Ok(Err(_)) => {
            Err(ApiError::bad_request("The request body could not be read.").with_code("invalid_request_body"))
        }
    }
}
