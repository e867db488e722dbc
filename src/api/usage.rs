//! Token usage as OpenAI reports it.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use memchr::memmem::FinderRev;

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
    /// Prompt tokens read from the provider's cache (among `prompt_tokens`):
    /// OpenAI's `prompt_tokens_details.cached_tokens`. Sent to clients by each
    /// translation in OpenAI's shape, not from here.
    #[serde(
        default,
        rename = "prompt_tokens_details",
        skip_serializing,
        deserialize_with = "cached_tokens"
    )]
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic), among `prompt_tokens`.
    #[serde(skip)]
    pub cache_write_tokens: u64,
    /// Completion tokens spent reasoning (among `completion_tokens`).
    #[serde(
        default,
        rename = "completion_tokens_details",
        skip_serializing,
        deserialize_with = "reasoning_tokens"
    )]
    pub reasoning_tokens: u64,
    /// Counted by tollgate because the upstream reported none; never sent to clients.
    #[serde(skip)]
    pub estimated: bool,
    /// Where the upstream says its time went (Ollama, TGI); never sent to clients.
    #[serde(skip)]
    pub reported_time: ReportedTime,
}

/// Time an upstream reports spending on a request, by phase: what metering
/// keeps of Ollama's `*_duration` fields and TGI's timing headers. Zero when
/// not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedTime {
    /// Loading the model (Ollama's cold start).
    pub load: Duration,
    /// Waiting in the server's queue (TGI).
    pub queue: Duration,
    /// Reading the prompt (Ollama's prompt evaluation).
    pub prompt: Duration,
    /// Generating the answer (Ollama's evaluation, TGI's inference).
    pub generation: Duration,
}

impl ReportedTime {
    pub fn is_zero(&self) -> bool {
        *self == ReportedTime::default()
    }

    /// The phases as metric labels, with their time.
    pub fn phases(&self) -> [(&'static str, Duration); 4] {
        [
            ("load", self.load),
            ("queue", self.queue),
            ("prompt", self.prompt),
            ("generation", self.generation),
        ]
    }
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Usage::default()
        }
    }

    /// Usage counted by tollgate (see `metering::estimate`), not reported upstream.
    pub fn estimated(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            estimated: true,
            ..Usage::new(prompt_tokens, completion_tokens)
        }
    }
}

/// Metering must never fail an answer: a count that is `null`, fractional,
/// negative or a string (some compatible servers send each) reads as what it
/// plausibly means, or 0. No allocation on the way.
pub(crate) fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
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

/// One count inside a `*_tokens_details` object, read leniently: any other
/// shape (null, a number, a list) is no count.
struct DetailCount(&'static str);

impl<'de> Visitor<'de> for DetailCount {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a token details object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut found = 0;
        // `Key` borrows the name from the input; serde's `Cow<str>` would allocate every one.
        while let Some(key) = map.next_key::<crate::api::open_object::Key<'de>>()? {
            if key.0 == self.0 {
                struct Count(u64);
                impl<'de> Deserialize<'de> for Count {
                    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        lenient_count(d).map(Count)
                    }
                }
                found = map.next_value::<Count>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Ok(0)
    }
}

fn cached_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(DetailCount("cached_tokens"))
}

fn reasoning_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(DetailCount("reasoning_tokens"))
}

/// The `usage` of a complete answer, read without parsing the rest of it.
/// OpenAI-style answers end with it, so the search runs from the end; and a
/// `"usage":` key cannot occur inside a JSON string, whose quotes are escaped.
/// An answer that spells the key unusually (`"usage" :`) is read whole.
pub fn find_usage(body: &[u8]) -> Option<Usage> {
    static KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\":"));
    if let Some(at) = KEY.rfind(body) {
        let mut value = serde_json::Deserializer::from_slice(&body[at + 8..]);
        return lenient_usage(&mut value).ok().flatten();
    }
    if memchr::memmem::find(body, b"\"usage\"").is_some() {
        return serde_json::from_slice::<UsageOnly>(body).ok().and_then(|u| u.usage);
    }
    None
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
    fn usage_is_found_without_parsing_the_answer() {
        let fixture = include_bytes!("../../tests/fixtures/openai/chat_response.json");
        let whole: UsageOnly = serde_json::from_slice(fixture).unwrap();
        assert!(whole.usage.is_some());
        assert_eq!(find_usage(fixture), whole.usage);
        let tricky = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage" : {"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert_eq!(find_usage(tricky), Some(Usage::new(1, 2)));
        assert_eq!(find_usage(br#"{"choices":[]}"#), None);
        assert_eq!(find_usage(br#"{"usage":null}"#), None);
    }

    #[test]
    fn cached_and_reasoning_tokens_are_read_from_their_details() {
        let u = find_usage(br#"{"id":"x","usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":12}}}"#).unwrap();
        assert_eq!((u.cached_tokens, u.reasoning_tokens), (64, 12));
        let u = find_usage(
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":"n/a"}}"#,
        )
        .unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens, u.reasoning_tokens), (1, 0, 0));
        // Never echoed: each translation writes OpenAI's details itself.
        assert!(!serde_json::to_string(&u).unwrap().contains("details"));
    }

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
                total_tokens: 4,
                ..Usage::default()
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
                total_tokens: 0,
                cached_tokens: 3,
                ..Usage::default()
            })
        );
    }
}
