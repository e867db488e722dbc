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
pub mod usage;

pub use chat::{ChatMessage, ChatRequest, MessageContent, Role, StreamOptions};
pub use completions::CompletionRequest;
pub use embeddings::EmbeddingsRequest;
pub use error::{ApiError, ErrorKind};
pub use usage::Usage;
