//! Reading an upstream's SSE response body event by event: the byte-safe
//! decoder, the idle and total timeouts, a bound on event size, and, once
//! the answer is complete, draining what follows off the request path so the
//! connection goes back to the pool instead of being closed.

use std::time::Duration;

use hyper::body::Incoming;
use tokio::time::Instant;

use super::{UpstreamClient, UpstreamError};
use crate::stream::{SseDecoder, SseEvent};

/// Largest single stream event: bounds memory per stream.
const MAX_EVENT_BYTES: usize = 4 << 20;
/// After the last event, how long and how much to read so the connection can be reused.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: usize = 64 << 10;

pub struct SseBody {
    /// `None` once handed to the drain task.
    body: Option<Incoming>,
    decoder: SseDecoder,
    client: UpstreamClient,
    deadline: Instant,
}

impl SseBody {
    pub fn new(body: Incoming, client: UpstreamClient, deadline: Instant) -> Self {
        SseBody {
            body: Some(body),
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            client,
            deadline,
        }
    }

    pub fn provider(&self) -> &str {
        self.client.provider()
    }

    /// The next event; `Ok(None)` when the body ended.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, UpstreamError> {
        loop {
            match self.decoder.next_event() {
                Err(e) => return Err(self.protocol(&e.to_string())),
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {
                    let Some(body) = self.body.as_mut() else {
                        return Ok(None);
                    };
                    match self.client.next_chunk(body, self.deadline).await? {
                        Some(bytes) => self.decoder.push(&bytes),
                        None => return Ok(None),
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
            let deadline = Instant::now() + DRAIN_TIME;
            let mut read = 0;
            while let Ok(Some(chunk)) = client.next_chunk(&mut body, deadline).await {
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
