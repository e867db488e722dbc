//! Token usage as OpenAI reports it.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
/// plausibly means, or 0. No allocation on the way.
fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a token count")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            Ok(v.max(0) as u64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            Ok(if v.is_finite() && v > 0.0 { v.round() as u64 } else { 0 })
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            Ok(v.trim().parse().unwrap_or(0))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
            Ok(0)
        }
        fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
        fn visit_none<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(0)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(0)
        }
    }
    d.deserialize_any(Count)
}

/// Reads only `usage` from a response body, skipping everything else.
#[derive(Deserialize)]
pub struct UsageOnly {
    #[serde(default, deserialize_with = "lenient_usage")]
    pub usage: Option<Usage>,
}

/// A `usage` that is not an object at all is no usage, not an error.
pub fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    struct MaybeUsage;
    impl<'de> Visitor<'de> for MaybeUsage {
        type Value = Option<Usage>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a usage object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Usage>, A::Error> {
            Usage::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Usage>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Usage>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Usage>, E> {
            Ok(None)
        }
    }
    d.deserialize_any(MaybeUsage)
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
        let u: UsageOnly = serde_json::from_str(r#"{"usage":[1,{"a":2}],"x":1}"#).unwrap();
        assert_eq!(u.usage, None);
        let u: UsageOnly = serde_json::from_str(r#"{"usage":{"prompt_tokens":"7","completion_tokens":-2,"total_tokens":{"x":1},"prompt_tokens_details":{"cached_tokens":3}}}"#).unwrap();
        assert_eq!(
            u.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 0,
                total_tokens: 0
            })
        );
    }
}
