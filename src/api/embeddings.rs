//! `POST /v1/embeddings`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::open_object::open_object;
use super::{Invalid, MAX_DIMENSIONS, MAX_INPUTS, check_range};

#[derive(Debug, Clone, Serialize)]
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

open_object!(
    EmbeddingsRequest,
    "an embeddings request",
    required {
        model: String,
        input: Value
    },
    optional {
        encoding_format: EncodingFormat,
        dimensions: u32
    }
);

impl EmbeddingsRequest {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.model.is_empty() {
            return Err(("`model` must not be empty".into(), "model"));
        }
        check_range(self.dimensions.map(u64::from), 1, MAX_DIMENSIONS, "dimensions")?;
        match &self.input {
            Value::String(s) if !s.is_empty() => Ok(()),
            Value::Array(items) if items.len() > MAX_INPUTS && !items.iter().all(Value::is_number) => {
                Err((format!("`input` may hold at most {MAX_INPUTS} items"), "input"))
            }
            Value::Array(items) if !items.is_empty() => Ok(()),
            Value::String(_) | Value::Array(_) => Err(("`input` must not be empty".into(), "input")),
            _ => Err((
                "`input` must be a string, an array of strings, or token arrays".into(),
                "input",
            )),
        }
    }

    /// The inputs, each as text or as a token array.
    pub fn inputs(&self) -> Vec<Input<'_>> {
        fn one(v: &Value) -> Input<'_> {
            match v {
                Value::String(s) => Input::Text(s),
                Value::Array(tokens) => Input::Tokens(tokens),
                _ => Input::Text(""),
            }
        }
        match &self.input {
            Value::Array(items) if items.iter().all(Value::is_number) => vec![one(&self.input)],
            Value::Array(items) => items.iter().map(one).collect(),
            other => vec![one(other)],
        }
    }
}

/// One embeddings input.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

/// Little-endian f32s in standard base64, as OpenAI's `encoding_format: base64`.
pub fn base64_f32(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One vector of OpenAI's embeddings list, from floats already parsed: as
/// they are, or as base64 of them when the client asked for `encoding_format: base64`.
pub fn entry_f32(index: usize, floats: &[f32], format: Option<EncodingFormat>) -> Value {
    let embedding = match format {
        Some(EncodingFormat::Base64) => Value::String(base64_f32(floats)),
        _ => serde_json::json!(floats),
    };
    item(index, embedding)
}

/// The same from an upstream's JSON array, passed on as it came unless base64 is asked for.
pub fn entry(index: usize, floats: Value, format: Option<EncodingFormat>) -> Value {
    let embedding = match format {
        Some(EncodingFormat::Base64) => {
            let f32s: Vec<f32> = floats
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect();
            Value::String(base64_f32(&f32s))
        }
        _ => floats,
    };
    item(index, embedding)
}

fn item(index: usize, embedding: Value) -> Value {
    serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
}

/// OpenAI's embeddings answer: the list, the model, and the prompt's tokens.
pub fn list(data: Vec<Value>, model: &str, prompt_tokens: u64) -> Value {
    serde_json::json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[0.0, 1.0]), "AAAAAAAAgD8=");
    }
}
