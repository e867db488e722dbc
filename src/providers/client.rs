//! The pooled HTTP client every network provider uses: keep-alive, HTTP/1.1
//! and HTTP/2 (ALPN), TLS with rustls, and the upstream timeouts (connect,
//! first byte, idle gap between chunks, whole answer).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep, timeout_at};

use super::error::{TimeoutPhase, UpstreamError};
use crate::config::Timeouts;
use rustls_pki_types::CertificateDer;

#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    provider: std::sync::Arc<str>,
    timeouts: Timeouts,
}

impl UpstreamClient {
    pub fn new(provider: &str, timeouts: Timeouts, extra_roots: &[CertificateDer<'static>]) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        http.enforce_http(false);
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Config validation parsed these; a certificate rustls still rejects is skipped, as the public roots remain.
        let (_added, _ignored) = roots.add_parsable_certificates(extra_roots.iter().cloned());
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        UpstreamClient {
            inner,
            provider: provider.into(),
            timeouts,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The deadline of the provider's own `total` timeout, from now. The
    /// gateway's request deadline is enforced above the provider, so that a
    /// timeout says whose limit it was.
    pub fn total_deadline(&self) -> Instant {
        Instant::now() + self.timeouts.total
    }

    /// Sends a request and waits for the response head. A stream's head must
    /// come within the first-byte timeout; a complete answer's head comes only
    /// when the whole answer is generated, so it waits up to the total timeout.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        deadline: Instant,
        stream: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (limit, phase, after) = if stream {
            (
                (Instant::now() + self.timeouts.first_byte).min(deadline),
                TimeoutPhase::FirstByte,
                self.timeouts.first_byte,
            )
        } else {
            (deadline, TimeoutPhase::Total, self.timeouts.total)
        };
        match timeout_at(limit, self.inner.request(req)).await {
            Err(_) => Err(self.timeout(phase, after)),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
                provider: self.provider.to_string(),
                detail: causes(&e),
            }),
            Ok(Err(e)) => Err(UpstreamError::Dropped {
                provider: self.provider.to_string(),
                detail: causes(&e),
            }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// The next chunk of a body, within the idle-gap timeout and the body's
    /// deadline. `None` at the end.
    pub async fn next_chunk(&self, body: &mut Incoming, timer: &mut BodyTimer) -> Result<Option<Bytes>, UpstreamError> {
        // The idle gap counts from when reading resumes, not from the last
        // chunk: a client that reads slowly (backpressure) is not an idle upstream.
        let idle_limit = Instant::now() + self.timeouts.idle;
        let (limit, phase) = if idle_limit < timer.deadline {
            (idle_limit, TimeoutPhase::IdleGap)
        } else {
            (timer.deadline, TimeoutPhase::Total)
        };
        if timer.sleep.deadline() > limit {
            timer.sleep.as_mut().reset(limit);
        }
        loop {
            let polled = tokio::select! {
                biased;
                frame = body.frame() => Some(frame),
                () = timer.sleep.as_mut() => None,
            };
            let frame = match polled {
                // The timer was left at an earlier chunk's limit: move it on.
                None if Instant::now() < limit => {
                    timer.sleep.as_mut().reset(limit);
                    continue;
                }
                None => {
                    let secs = if phase == TimeoutPhase::IdleGap {
                        self.timeouts.idle
                    } else {
                        self.timeouts.total
                    };
                    return Err(self.timeout(phase, secs));
                }
                Some(None) => return Ok(None),
                Some(Some(Err(e))) => {
                    return Err(UpstreamError::Dropped {
                        provider: self.provider.to_string(),
                        detail: causes(&e),
                    });
                }
                Some(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
            // Trailers carry nothing tollgate uses.
        }
    }

    /// Reads a whole body, refusing more than `limit` bytes.
    pub async fn read_body(&self, mut body: Incoming, limit: usize, deadline: Instant) -> Result<Bytes, UpstreamError> {
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        let mut timer = BodyTimer::until(deadline);
        while let Some(chunk) = self.next_chunk(&mut body, &mut timer).await? {
            let total = first.as_ref().map_or(0, Bytes::len) + buf.len() + chunk.len();
            if total > limit {
                return Err(UpstreamError::Protocol {
                    provider: self.provider.to_string(),
                    detail: format!("the answer is larger than {limit} bytes"),
                });
            }
            // Most answers arrive in one chunk: keep it without copying.
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                prev => {
                    if let Some(p) = prev {
                        buf.extend_from_slice(&p);
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    }

    fn timeout(&self, phase: TimeoutPhase, after: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            provider: self.provider.to_string(),
            phase,
            secs: after.as_secs_f64(),
        }
    }
}

/// The timeouts of one body being read: its deadline, and the idle gap
/// between chunks, on one timer for the whole body. A timer per chunk would
/// be registered in tokio's timer wheel and cancelled again for every chunk;
/// this one is left at the first chunk's idle limit and only moved on when
/// it fires before the current chunk's limit.
pub struct BodyTimer {
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl BodyTimer {
    pub fn until(deadline: Instant) -> Self {
        BodyTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }
}

/// The error and its causes on one line. hyper's errors name no URL or header.
fn causes(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
