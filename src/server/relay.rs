//! The streamed answer to the client: OpenAI chunks framed as SSE, one frame
//! per upstream event, as they arrive. hyper polls this body only when the
//! client can take more, so a slow reader slows the upstream read
//! (backpressure) and memory per stream stays at one event. When the client
//! goes away hyper drops the body, which drops the upstream connection and
//! meters the request as cancelled (status 499).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::api::{ApiError, Usage};
use crate::metering::metrics::InFlight;
use crate::metering::{Labels, Metrics};
use crate::providers::{EventStream, StreamEvent, UpstreamError};

/// Label values owned by a stream, which outlives the handler.
pub struct StreamLabels {
    pub endpoint: &'static str,
    pub model: Arc<str>,
    pub provider: Arc<str>,
}

impl StreamLabels {
    fn get(&self) -> Labels<'_> {
        Labels {
            endpoint: self.endpoint,
            model: &self.model,
            provider: &self.provider,
        }
    }
}

pub struct SseRelay {
    events: EventStream,
    /// The first event, read before the response head was sent.
    first: Option<StreamEvent>,
    forward_usage: bool,
    deadline: Pin<Box<Sleep>>,
    done: bool,
    meter: StreamMeter,
}

/// Meters a stream when it ends, however it ends.
pub struct StreamMeter {
    metrics: Arc<Metrics>,
    labels: StreamLabels,
    started: Instant,
    usage: Option<Usage>,
    /// Set when the stream ends; still `None` on drop means the client left.
    status: Option<u16>,
    _in_flight: InFlight,
}

impl StreamMeter {
    pub fn new(
        metrics: Arc<Metrics>,
        labels: StreamLabels,
        started: Instant,
        in_flight: InFlight,
    ) -> Self {
        StreamMeter {
            metrics,
            labels,
            started,
            usage: None,
            status: None,
            _in_flight: in_flight,
        }
    }
}

impl SseRelay {
    pub fn new(
        first: StreamEvent,
        events: EventStream,
        forward_usage: bool,
        deadline: Instant,
        meter: StreamMeter,
    ) -> Self {
        meter
            .metrics
            .first_token(meter.labels.get(), meter.started.elapsed());
        SseRelay {
            events,
            first: Some(first),
            forward_usage,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
            meter,
        }
    }

    /// Frames one event, or skips it (`None`) when it is a usage chunk the client did not ask for.
    fn frame(&mut self, event: StreamEvent) -> Option<Bytes> {
        if let Some(u) = event.usage {
            self.meter.usage = Some(u);
        }
        if event.usage_only && !self.forward_usage {
            return None;
        }
        Some(sse_data(&event.data))
    }

    fn fail(&mut self, error: &ApiError, status: u16) -> Bytes {
        self.done = true;
        self.meter.status = Some(status);
        sse_data(&error.to_json())
    }
}

fn sse_data(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(json);
    out.put_slice(b"\n\n");
    out.freeze()
}

impl Body for SseRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take()
            && let Some(frame) = this.frame(first)
        {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        loop {
            match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if let Some(frame) = this.frame(event) {
                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.meter
                        .metrics
                        .upstream_error(&this.meter.labels.provider, error.kind());
                    let api = error.to_api_error();
                    let frame = this.fail(&api, stream_status(&error));
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.meter.status = Some(200);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                        b"data: [DONE]\n\n",
                    )))));
                }
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let frame = this.fail(&ApiError::request_timeout(), 504);
                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The status a failed stream is metered with.
fn stream_status(error: &UpstreamError) -> u16 {
    error.to_api_error().status.as_u16()
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        let labels = self.labels.get();
        self.metrics
            .request(labels, self.status.unwrap_or(499), self.started.elapsed());
        if let Some(usage) = &self.usage {
            self.metrics.usage(labels, usage);
        }
    }
}
