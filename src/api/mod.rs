//! OpenAI wire types: tollgate's canonical format.
//!
//! Every request type keeps the fields tollgate does not model in an `extra`
//! map, so a pass-through to an OpenAI-compatible upstream forwards everything
//! the client sent.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod models;
pub(crate) mod open_object;
pub mod usage;

pub use chat::{ChatMessage, ChatRequest, MessageContent, Role, StreamOptions};
pub use completions::CompletionRequest;
pub use embeddings::EmbeddingsRequest;
pub use error::{ApiError, ErrorKind};
pub use usage::Usage;

/// A request field that breaks a rule: the message and the `param` it names.
pub type Invalid = (String, &'static str);

/// Limits that keep one request from costing the gateway unbounded memory;
/// the same as OpenAI's own.
pub const MAX_CHOICES: u64 = 128;
pub const MAX_INPUTS: usize = 2048;
pub const MAX_DIMENSIONS: u64 = 16_384;

/// Checks that an optional integer field is within `min..=max`.
pub fn check_range(value: Option<u64>, min: u64, max: u64, param: &'static str) -> Result<(), Invalid> {
    match value {
        Some(v) if v < min || v > max => Err((format!("`{param}` must be between {min} and {max}, got {v}"), param)),
        _ => Ok(()),
    }
}
