//! Stream framing: Server-Sent Events and newline-delimited JSON from upstreams.

pub mod ndjson;
pub mod sse;

pub use ndjson::NdjsonDecoder;
pub use sse::{SseDecoder, SseError, SseEvent};
