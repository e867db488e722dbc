//! `POST /v1/embeddings`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string, a list of strings, a token array or a list of token arrays.
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

impl EmbeddingsRequest {
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        if self.model.is_empty() {
            return Err(("`model` must not be empty".into(), "model"));
        }
        match &self.input {
            Value::String(s) if !s.is_empty() => Ok(()),
            Value::Array(items) if !items.is_empty() => Ok(()),
            Value::String(_) | Value::Array(_) => {
                Err(("`input` must not be empty".into(), "input"))
            }
            _ => Err((
                "`input` must be a string, an array of strings, or token arrays".into(),
                "input",
            )),
        }
    }

    /// The inputs as text; token arrays count as one item with no text.
    pub fn texts(&self) -> Vec<&str> {
        match &self.input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if items.iter().all(Value::is_number) => vec![""],
            Value::Array(items) => items.iter().map(|v| v.as_str().unwrap_or("")).collect(),
            _ => Vec::new(),
        }
    }
}
