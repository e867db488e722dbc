//! The streamed answer to the client: OpenAI chunks framed as SSE, one frame
//! per upstream event, as they arrive. hyper polls this body only when the
//! client can take more, so a slow reader slows the upstream read
//! (backpressure) and memory per stream stays at one event. When the client
//! goes away hyper drops the body, which drops the upstream connection and
//! meters the request as cancelled (499).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use memchr::memmem::Finder;
use tokio::time::{Instant, Sleep};

use super::meter::{Crossed, RequestMeter};
use crate::api::ApiError;
use crate::metering::cost::{Pico, usd, usd_text};
use crate::providers::{EventStream, StreamEvent};

pub struct SseRelay {
    events: EventStream,
    /// The first event, read before the response head was sent.
    first: Option<StreamEvent>,
    forward_usage: bool,
    deadline: Pin<Box<Sleep>>,
    done: bool,
    meter: RequestMeter,
    request_id: Box<str>,
    /// Since when the upstream has had nothing for us: its wait is not tollgate's overhead.
    waiting_since: Option<Instant>,
}

impl SseRelay {
    pub fn new(
        first: StreamEvent,
        events: EventStream,
        forward_usage: bool,
        deadline: Instant,
        meter: RequestMeter,
        request_id: &str,
    ) -> Self {
        SseRelay {
            events,
            first: Some(first),
            forward_usage,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
            meter,
            request_id: request_id.into(),
            waiting_since: None,
        }
    }

    /// Writes one event into `out`, or nothing when it is a usage chunk the
    /// client did not ask for. Says when the stream has crossed its budget.
    fn write_event(&mut self, out: &mut BytesMut, event: StreamEvent) -> Option<Crossed> {
        let mut crossed = None;
        if event.has_content {
            self.meter.first_token();
            crossed = self.meter.streamed(&event.data);
        }
        if let Some(u) = event.usage {
            self.meter.usage(u);
        }
        if !event.usage_only || self.forward_usage {
            match self.meter.cost().filter(|_| event.usage_only) {
                Some(pico) => put_sse_data(out, &with_cost(&event.data, pico)),
                None => put_sse_data(out, &event.data),
            }
        }
        crossed
    }

    /// Ends the stream at its budget: what was produced so far was sent, and
    /// is metered (estimated); the upstream is dropped, so it stops generating.
    fn cut(&mut self, out: &mut BytesMut, crossed: Crossed) {
        self.done = true;
        self.meter.cut_at_budget(crossed);
        tracing::warn!(request_id = %self.request_id, scope = crossed.scope, period = crossed.period.as_str(), "stream ended: budget spent");
        let error = super::handlers::budget_error(
            crossed.scope,
            crossed.period,
            crossed.limit,
            crate::keys::budget::Now::current(),
        );
        put_sse_data(out, &error.to_json());
    }

    /// Ends the stream with one error event; no `[DONE]` follows.
    fn fail(&mut self, out: &mut BytesMut, error: &ApiError, kind: &str, detail: &dyn std::fmt::Display) {
        self.done = true;
        self.meter.upstream_error(kind);
        self.meter.finish(error.status.as_u16());
        tracing::warn!(request_id = %self.request_id, provider = self.meter.provider(), error = %detail, "stream ended with an error");
        put_sse_data(out, &error.to_json());
    }
}

/// The final usage chunk with the request's cost added as `usage.cost_usd`.
/// The field is spliced in after the usage object's opening brace, so the
/// chunk is neither parsed nor rewritten (and keeps the upstream's key
/// order). A chunk where that is not plainly right (`"usage"` found other
/// than once, or a `cost_usd` already there) is parsed and rewritten instead.
fn with_cost(data: &Bytes, pico: Pico) -> Bytes {
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    let mut found = USAGE.find_iter(data);
    if let (Some(at), None) = (found.next(), found.next())
        && memchr::memmem::find(data, b"\"cost_usd\"").is_none()
    {
        let after_key = data[at + USAGE.needle().len()..].trim_ascii_start();
        let Some(value) = after_key.strip_prefix(b":").map(<[u8]>::trim_ascii_start) else {
            return data.clone(); // `"usage"` is a string value, not a key: no usage object
        };
        if value.first() != Some(&b'{') {
            return data.clone(); // `null`: no usage object to add to
        }
        let brace = data.len() - value.len();
        let members = &data[brace + 1..];
        // Always with a decimal point, so the field is a float to every client, as on the parsing path.
        let mut cost = usd_text(pico);
        if !cost.contains('.') {
            cost.push_str(".0");
        }
        let mut out = BytesMut::with_capacity(data.len() + cost.len() + 12);
        out.put_slice(&data[..=brace]);
        out.put_slice(b"\"cost_usd\":");
        out.put_slice(cost.as_bytes());
        if !members.trim_ascii_start().starts_with(b"}") {
            out.put_u8(b',');
        }
        out.put_slice(members);
        return out.freeze();
    }
    let Ok(mut chunk) = serde_json::from_slice::<serde_json::Value>(data) else {
        return data.clone();
    };
    match chunk.get_mut("usage").and_then(serde_json::Value::as_object_mut) {
        Some(usage) => {
            usage.insert("cost_usd".into(), serde_json::json!(usd(pico)));
            serde_json::to_vec(&chunk).map_or_else(|_| data.clone(), Bytes::from)
        }
        None => data.clone(),
    }
}

/// Events already waiting are sent in one write, up to this many bytes:
/// nothing waits for more to arrive, but a burst costs one syscall, not one per event.
const COALESCE_BYTES: usize = 16 << 10;

/// `data: <json>\n\n`. A payload with line breaks gets one `data:` line per
/// line, as SSE requires, so the client reassembles it intact.
fn put_sse_data(out: &mut BytesMut, json: &[u8]) {
    out.reserve(json.len() + 8);
    if memchr::memchr(b'\n', json).is_none() {
        // Compact JSON, the common case: one line, no per-byte scan.
        out.put_slice(b"data: ");
        out.put_slice(json.strip_suffix(b"\r").unwrap_or(json));
        out.put_slice(b"\n\n");
        return;
    }
    for (i, line) in json.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.put_u8(b'\n');
        }
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
    }
    out.put_slice(b"\n\n");
}

impl Body for SseRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let mut out = BytesMut::new();
        if let Some(first) = this.first.take()
            && let Some(crossed) = this.write_event(&mut out, first)
        {
            this.cut(&mut out, crossed);
            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
        }
        while out.len() < COALESCE_BYTES {
            let polled = this.events.as_mut().poll_next(cx);
            if polled.is_ready()
                && let Some(since) = this.waiting_since.take()
            {
                this.meter.waited(since.elapsed());
            }
            match polled {
                Poll::Ready(Some(Ok(event))) => {
                    if let Some(crossed) = this.write_event(&mut out, event) {
                        this.cut(&mut out, crossed);
                        break;
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.fail(&mut out, &error.to_api_error(), error.kind(), &error);
                    break;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.meter.finish(200);
                    out.put_slice(b"data: [DONE]\n\n");
                    break;
                }
                Poll::Pending => {
                    this.waiting_since.get_or_insert_with(Instant::now);
                    if out.is_empty() && this.deadline.as_mut().poll(cx).is_ready() {
                        let error = ApiError::request_timeout();
                        this.fail(&mut out, &error, "timeout", &"the gateway's request timeout passed");
                    }
                    break;
                }
            }
        }
        if out.is_empty() {
            // Only a Pending poll leaves nothing to send; it registered the waker.
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(out.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_payloads_become_multi_line_events() {
        let framed = |json: &[u8]| {
            let mut out = BytesMut::new();
            put_sse_data(&mut out, json);
            out
        };
        assert_eq!(&framed(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&framed(b"{\n\"a\":1\r\n}")[..], b"data: {\ndata: \"a\":1\ndata: }\n\n");
    }

    #[test]
    fn the_cost_joins_the_usage_object() {
        let pico = 1_250_000; // $0.00000125
        let costed = |chunk: &str| {
            let out = with_cost(&Bytes::copy_from_slice(chunk.as_bytes()), pico);
            String::from_utf8(out.to_vec()).unwrap()
        };
        let usage_chunk = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        let out = costed(usage_chunk);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["usage"]["cost_usd"], 0.00000125, "{out}");
        assert_eq!(v["usage"]["total_tokens"], 21);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        assert!(
            out.starts_with(r#"{"id":"c","choices":[],"usage":{"cost_usd":0.00000125,"prompt_tokens":9,"#),
            "{out}"
        );
        // Spaced JSON and empty usage objects, spliced.
        assert_eq!(
            costed(r#"{ "usage" : { } }"#),
            r#"{ "usage" : {"cost_usd":0.00000125 } }"#
        );
        assert_eq!(costed(r#"{"usage":{ }}"#), r#"{"usage":{"cost_usd":0.00000125 }}"#);
        assert_eq!(
            costed(r#"{"usage": {"a":1}}"#),
            r#"{"usage": {"cost_usd":0.00000125,"a":1}}"#
        );
        // Whole dollars still read as a float.
        let whole = with_cost(&Bytes::from_static(br#"{"usage":{}}"#), 2_000_000_000_000);
        assert_eq!(&whole[..], br#"{"usage":{"cost_usd":2.0}}"#);
        // No usage object: unchanged.
        assert_eq!(costed(r#"{"usage":null}"#), r#"{"usage":null}"#);
        // An upstream's own cost_usd is replaced, not duplicated.
        let v: serde_json::Value =
            serde_json::from_str(&costed(r#"{"usage":{"cost_usd":9,"total_tokens":1}}"#)).unwrap();
        assert_eq!(v["usage"]["cost_usd"], 0.00000125);
        // A nested usage object besides the chunk's own, however either is spaced:
        // only the chunk's gets the cost.
        for chunk in [
            r#"{"x":{"usage":{"a":1}},"usage":{"total_tokens":1}}"#,
            r#"{"x":{"usage":{"a":1}},"usage" : {"total_tokens":1}}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(&costed(chunk)).unwrap();
            assert_eq!(v["usage"]["cost_usd"], 0.00000125, "{chunk}");
            assert!(v["x"]["usage"].get("cost_usd").is_none(), "{chunk}");
        }
        // `usage` only as a string value: nothing to add to.
        assert_eq!(costed(r#"{"kind":"usage"}"#), r#"{"kind":"usage"}"#);
    }
}
