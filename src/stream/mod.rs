//! Stream framing: Server-Sent Events decoding (upstreams) and encoding (clients).

pub mod sse;

pub use sse::{SseDecoder, SseError, SseEvent};
