//! What the router reads from a request: its shape, not its content, except
//! the last user message for the domain classifier (read only when a route
//! asks for the domain).

use serde_json::{Map, Value};

use crate::api::chat::{MessageContent, Role};
use crate::api::{ChatRequest, CompletionRequest, EmbeddingsRequest};
use crate::metering::Endpoint;

/// Characters per token assumed when estimating a prompt (`metering::estimate`).
const CHARS_PER_TOKEN: u64 = crate::metering::estimate::CHARS_PER_TOKEN as u64;

#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    pub endpoint: Endpoint,
    pub model: &'a str,
    pub stream: bool,
    pub tools: bool,
    pub images: bool,
    pub json_mode: bool,
    /// The prompt's estimated tokens (bytes / 4: cheap, and an overestimate for non-ASCII).
    pub input_tokens: u64,
    pub max_tokens: Option<u64>,
    pub user: Option<&'a str>,
    pub metadata: Option<&'a Map<String, Value>>,
    /// The text the domain classifier reads.
    pub last_user_text: &'a str,
    /// The caller's key id and team, set from the request's key.
    pub key_id: Option<&'a str>,
    pub team: Option<&'a str>,
}

impl<'a> Features<'a> {
    pub fn chat(req: &'a ChatRequest) -> Self {
        let images = req.messages.iter().any(
            |m| matches!(&m.content, Some(MessageContent::Parts(parts)) if parts.iter().any(|p| p.kind == "image_url")),
        );
        let bytes: usize = req
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(MessageContent::text_len)
            .sum();
        let json_mode = matches!(
            req.response_format
                .as_ref()
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str),
            Some("json_object" | "json_schema")
        );
        let last_user_text = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .and_then(|m| m.content.as_ref())
            .and_then(MessageContent::last_text)
            .unwrap_or_default();
        Features {
            endpoint: Endpoint::Chat,
            model: &req.model,
            stream: req.is_stream(),
            tools: req.tools.as_ref().is_some_and(|t| !t.is_empty()),
            images,
            json_mode,
            input_tokens: (bytes as u64).div_ceil(CHARS_PER_TOKEN),
            max_tokens: req.max_output_tokens().map(u64::from),
            user: req.user.as_deref(),
            metadata: req.extra.get("metadata").and_then(Value::as_object),
            last_user_text,
            key_id: None,
            team: None,
        }
    }

    pub fn completion(req: &'a CompletionRequest) -> Self {
        let text = req.prompt.as_str().unwrap_or_default();
        let bytes = match &req.prompt {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::len).sum(),
            _ => 0,
        };
        Features {
            endpoint: Endpoint::Completions,
            model: &req.model,
            stream: req.is_stream(),
            tools: false,
            images: false,
            json_mode: false,
            input_tokens: (bytes as u64).div_ceil(CHARS_PER_TOKEN),
            max_tokens: req.max_tokens.map(u64::from),
            user: req.extra.get("user").and_then(Value::as_str),
            metadata: None,
            last_user_text: text,
            key_id: None,
            team: None,
        }
    }

    pub fn embeddings(req: &'a EmbeddingsRequest) -> Self {
        let bytes = match &req.input {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::len).sum(),
            _ => 0,
        };
        Features {
            endpoint: Endpoint::Embeddings,
            model: &req.model,
            stream: false,
            tools: false,
            images: false,
            json_mode: false,
            input_tokens: (bytes as u64).div_ceil(CHARS_PER_TOKEN),
            max_tokens: None,
            user: req.extra.get("user").and_then(Value::as_str),
            metadata: None,
            last_user_text: "",
            key_id: None,
            team: None,
        }
    }
}
