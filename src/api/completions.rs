//! `POST /v1/completions` (legacy text completions).

use serde::Serialize;
use serde_json::{Map, Value};

use super::chat::StreamOptions;
use super::open_object::open_object;
use super::{Invalid, MAX_CHOICES, MAX_INPUTS, check_range};

#[derive(Debug, Clone, Serialize)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, a list of strings, or token arrays.
    pub prompt: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

open_object!(
    CompletionRequest,
    "a completions request",
    required {
        model: String,
        prompt: Value
    },
    optional {
        stream: bool,
        stream_options: StreamOptions,
        max_tokens: u32
    }
);

impl CompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.model.is_empty() {
            return Err(("`model` must not be empty".into(), "model"));
        }
        match &self.prompt {
            Value::String(_) => {}
            Value::Array(items) if items.len() > MAX_INPUTS => {
                return Err((format!("`prompt` may hold at most {MAX_INPUTS} prompts"), "prompt"));
            }
            Value::Array(items) if !items.is_empty() => {}
            Value::Array(_) => return Err(("`prompt` must not be empty".into(), "prompt")),
            _ => {
                return Err((
                    "`prompt` must be a string or an array of strings or tokens".into(),
                    "prompt",
                ));
            }
        }
        check_range(self.max_tokens.map(u64::from), 1, u64::MAX, "max_tokens")?;
        check_range(self.n(), 1, MAX_CHOICES, "n")?;
        if self.stream_options.is_some() && !self.is_stream() {
            return Err((
                "`stream_options` is only allowed when `stream` is true".into(),
                "stream_options",
            ));
        }
        Ok(())
    }

    /// Choices per prompt; not modelled, so it stays in `extra` for pass-through.
    pub fn n(&self) -> Option<u64> {
        self.extra.get("n").map(|v| v.as_u64().unwrap_or(0))
    }

    /// The prompts: one string, a list of strings, one token array, or a
    /// list of token arrays. Token arrays are rendered as their numbers.
    pub fn prompts(&self) -> Vec<String> {
        fn one(v: &Value) -> String {
            match v {
                Value::String(s) => s.clone(),
                Value::Array(tokens) => tokens.iter().map(Value::to_string).collect::<Vec<_>>().join(" "),
                other => other.to_string(),
            }
        }
        match &self.prompt {
            Value::Array(items) if items.iter().all(Value::is_number) => vec![one(&self.prompt)],
            Value::Array(items) => items.iter().map(one).collect(),
            other => vec![one(other)],
        }
    }
}
