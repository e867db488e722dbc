//! Reading an upstream's streamed body event by event (SSE or NDJSON): the
//! byte-safe decoder, the idle and total timeouts, a bound on event size,
//! and, once the answer is complete, draining what follows off the request
//! path so the connection goes back to the pool instead of being closed.

use std::time::Duration;

use hyper::body::Incoming;
use tokio::time::Instant;

use futures_util::stream;

use super::client::BodyTimer;
use super::{EventStream, StreamEvent, UpstreamClient, UpstreamError};
use crate::api::ApiError;
use bytes::Bytes;

use crate::stream::{NdjsonDecoder, SseDecoder};

/// How a stream's bytes split into events.
pub trait Framing: Send {
    fn push(&mut self, chunk: Bytes);
    /// The next complete event's payload.
    fn next(&mut self) -> Result<Option<Bytes>, String>;
    /// What is left when the body ends (NDJSON's last line may lack its `\n`).
    fn rest(&mut self) -> Option<Bytes> {
        None
    }
}

impl Framing for SseDecoder {
    fn push(&mut self, chunk: Bytes) {
        SseDecoder::push(self, chunk);
    }
    fn next(&mut self) -> Result<Option<Bytes>, String> {
        self.next_event().map(|e| e.map(|e| e.data)).map_err(|e| e.to_string())
    }
}

impl Framing for NdjsonDecoder {
    fn push(&mut self, chunk: Bytes) {
        NdjsonDecoder::push(self, &chunk);
    }
    fn next(&mut self) -> Result<Option<Bytes>, String> {
        self.next_line().map_err(|e| e.to_string())
    }
    fn rest(&mut self) -> Option<Bytes> {
        NdjsonDecoder::rest(self)
    }
}

pub type SseBody = EventBody<SseDecoder>;
pub type NdjsonBody = EventBody<NdjsonDecoder>;

/// Largest single stream event: bounds memory per stream.
const MAX_EVENT_BYTES: usize = 4 << 20;
/// After the last event, how long and how much to read so the connection can be reused.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: usize = 64 << 10;

pub struct EventBody<F> {
    /// `None` once handed to the drain task.
    body: Option<Incoming>,
    decoder: F,
    client: UpstreamClient,
    timer: BodyTimer,
}

impl EventBody<SseDecoder> {
    pub fn sse(body: Incoming, client: UpstreamClient, deadline: Instant) -> Self {
        EventBody {
            body: Some(body),
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            client,
            timer: BodyTimer::until(deadline),
        }
    }
}

impl EventBody<NdjsonDecoder> {
    pub fn ndjson(body: Incoming, client: UpstreamClient, deadline: Instant) -> Self {
        EventBody {
            body: Some(body),
            decoder: NdjsonDecoder::new(MAX_EVENT_BYTES),
            client,
            timer: BodyTimer::until(deadline),
        }
    }
}

impl<F: Framing> EventBody<F> {
    pub fn provider(&self) -> &str {
        self.client.provider()
    }

    /// The next event's payload; `Ok(None)` when the body ended.
    pub async fn next_event(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match self.decoder.next() {
                Err(e) => return Err(self.protocol(&e)),
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {
                    let Some(body) = self.body.as_mut() else {
                        return Ok(self.decoder.rest());
                    };
                    match self.client.next_chunk(body, &mut self.timer).await? {
                        Some(bytes) => self.decoder.push(bytes),
                        None => {
                            self.body = None;
                            return Ok(self.decoder.rest());
                        }
                    }
                }
            }
        }
    }

    /// The answer is complete: read what follows (normally just the end of
    /// the chunked body) in the background, so the connection is reused.
    pub fn finish(&mut self) {
        let Some(mut body) = self.body.take() else { return };
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut timer = BodyTimer::until(Instant::now() + DRAIN_TIME);
            let mut read = 0;
            while let Ok(Some(chunk)) = client.next_chunk(&mut body, &mut timer).await {
                read += chunk.len();
                if read > DRAIN_BYTES {
                    break;
                }
            }
        });
    }

    pub fn protocol(&self, detail: &str) -> UpstreamError {
        UpstreamError::Protocol {
            provider: self.provider().to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// The body ended before the answer was complete.
    pub fn cut_short(&self, what: &str) -> UpstreamError {
        UpstreamError::Dropped {
            provider: self.provider().to_owned(),
            detail: format!("the stream ended without {what}"),
        }
    }
}

/// What one upstream event becomes, in a translating provider.
pub enum Step {
    /// One chunk (the pass-through case, without a Vec per event).
    One(StreamEvent),
    Emit(Vec<StreamEvent>),
    /// The answer is complete; these are its last chunks.
    Done(Vec<StreamEvent>),
    /// The upstream reported a failure.
    Failed(ApiError),
    /// The event is not the upstream's protocol.
    Invalid(String),
}

/// A provider's stream translation, one upstream event at a time.
pub trait Translate: Send + 'static {
    /// What a complete stream ends with, named in the error when it ends early.
    const END: &'static str;
    fn step(&mut self, data: Bytes) -> Step;
    /// The body ended. Upstreams whose streams end by closing (Gemini) answer
    /// their last chunks; the others, `None`: the stream was cut short.
    fn end(&mut self) -> Option<Vec<StreamEvent>> {
        None
    }
}

/// Drives a translator over an upstream body: one canonical stream, ending
/// with an error when the upstream fails, breaks its protocol or stops early.
pub fn translated<F: Framing + 'static, T: Translate>(body: EventBody<F>, translator: T) -> EventStream {
    struct State<F, T> {
        body: EventBody<F>,
        translator: T,
        pending: std::vec::IntoIter<StreamEvent>,
        finished: bool,
    }
    // Boxed: `unfold` moves its state into and out of a new future for every
    // event, and the body, decoder and translator are hundreds of bytes.
    let state = Box::new(State {
        body,
        translator,
        pending: Vec::new().into_iter(),
        finished: false,
    });
    Box::pin(stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.next() {
                return Some((Ok(event), s));
            }
            if s.finished {
                return None;
            }
            let failure = match s.body.next_event().await {
                Ok(Some(data)) => match s.translator.step(data) {
                    Step::One(event) => return Some((Ok(event), s)),
                    Step::Emit(events) => {
                        s.pending = events.into_iter();
                        continue;
                    }
                    Step::Done(events) => {
                        s.body.finish();
                        s.finished = true;
                        s.pending = events.into_iter();
                        continue;
                    }
                    Step::Failed(error) => UpstreamError::Status { error },
                    Step::Invalid(detail) => s.body.protocol(&detail),
                },
                Ok(None) => match s.translator.end() {
                    Some(events) => {
                        s.finished = true;
                        s.pending = events.into_iter();
                        continue;
                    }
                    None => s.body.cut_short(T::END),
                },
                Err(e) => e,
            };
            s.finished = true;
            return Some((Err(failure), s));
        }
    }))
}
