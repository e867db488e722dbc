//! Token usage as OpenAI reports it.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "lenient_count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Metering must never fail an answer: a count that is `null`, fractional,
/// negative or a string (some compatible servers send each) reads as what it
/// plausibly means, or 0.
fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64))
            .unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

/// Reads only `usage` from a response body, skipping everything else.
#[derive(Deserialize)]
pub struct UsageOnly {
    #[serde(default, deserialize_with = "lenient_usage")]
    pub usage: Option<Usage>,
}

/// A `usage` that is not an object at all is no usage, not an error.
pub fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.is_object().then(|| serde_json::from_value(value).ok()).flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_usage_shapes_read_leniently() {
        let u: UsageOnly =
            serde_json::from_str(r#"{"usage":{"prompt_tokens":3,"completion_tokens":null,"total_tokens":4.0}}"#)
                .unwrap();
        assert_eq!(
            u.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 0,
                total_tokens: 4
            })
        );
        let u: UsageOnly = serde_json::from_str(r#"{"usage":"n/a","x":1}"#).unwrap();
        assert_eq!(u.usage, None);
        let u: UsageOnly = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert_eq!(u.usage, None);
    }
}
