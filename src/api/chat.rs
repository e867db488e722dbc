//! `POST /v1/chat/completions` request types.

use std::fmt;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::open_object::open_object;

use super::{Invalid, MAX_CHOICES, check_range};

/// A chat-completions request as the client sent it.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Everything else the client sent, forwarded untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Checks the rules serde cannot express. Returns `(message, param)`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.model.is_empty() {
            return Err(("`model` must not be empty".into(), "model"));
        }
        if self.messages.is_empty() {
            return Err(("`messages` must contain at least one message".into(), "messages"));
        }
        if self.stream_options.is_some() && !self.is_stream() {
            return Err((
                "`stream_options` is only allowed when `stream` is true".into(),
                "stream_options",
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err((format!("`temperature` must be between 0 and 2, got {t}"), "temperature"));
        }
        check_range(self.n.map(u64::from), 1, MAX_CHOICES, "n")?;
        check_range(self.max_tokens.map(u64::from), 1, u64::MAX, "max_tokens")?;
        check_range(
            self.max_completion_tokens.map(u64::from),
            1,
            u64::MAX,
            "max_completion_tokens",
        )?;
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Developer,
    System,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    /// Absent and `null` are both allowed (an assistant turn with tool calls).
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: plain text, or typed parts (text, image_url, input_audio, file).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessageContent {
    /// The text of the content, parts joined; non-text parts are skipped.
    pub fn text_len(&self) -> usize {
        match self {
            MessageContent::Text(t) => t.len(),
            MessageContent::Parts(parts) => parts.iter().filter_map(|p| p.text.as_ref()).map(String::len).sum(),
        }
    }

    pub fn last_text(&self) -> Option<&str> {
        match self {
            MessageContent::Text(t) => Some(t),
            MessageContent::Parts(parts) => parts.iter().rev().find_map(|p| p.text.as_deref()),
        }
    }
}

open_object!(ChatRequest, "a chat completions request",
    required { model: String, messages: Vec<ChatMessage> },
    optional {
        stream: bool, stream_options: StreamOptions, max_tokens: u32, max_completion_tokens: u32,
        temperature: f64, top_p: f64, n: u32, stop: Stop, tools: Vec<Value>, tool_choice: Value,
        response_format: Value, user: String,
    }
);
open_object!(
    StreamOptions,
    "stream options",
    required {},
    optional { include_usage: bool }
);
open_object!(ChatMessage, "a message",
    required { role: Role },
    optional { content: MessageContent, name: String, tool_calls: Vec<Value>, tool_call_id: String }
);
open_object!(ContentPart, "a content part", required { kind as "type": String }, optional { text: String });

/// A string, or an array read as `T`: `content` and `stop` take either.
fn string_or_seq<'de, D, T>(
    d: D,
    what: &'static str,
    one: fn(String) -> T,
    many: fn(Vec<T::Item>) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: StringOrSeq,
{
    struct V<T: StringOrSeq>(&'static str, fn(String) -> T, fn(Vec<T::Item>) -> T);
    impl<'de, T: StringOrSeq> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            Ok((self.1)(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
            Ok((self.1)(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            Vec::<T::Item>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(self.2)
        }
    }
    d.deserialize_any(V(what, one, many))
}

trait StringOrSeq {
    type Item: DeserializeOwned;
}

impl StringOrSeq for MessageContent {
    type Item = ContentPart;
}

impl StringOrSeq for Stop {
    type Item = String;
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_seq(
            d,
            "a string or an array of content parts",
            MessageContent::Text,
            MessageContent::Parts,
        )
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_seq(d, "a string or an array of strings", Stop::One, Stop::Many)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_request_round_trips_without_loss() {
        let raw = include_str!("../../tests/fixtures/openai/chat_request.json");
        let req: ChatRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(req.messages.len(), 4);
        assert!(req.is_stream() && req.wants_stream_usage());
        let back = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":"hi","x_meta":1}],"seed":7,"vendor_flag":{"a":[1,2]}}"#;
        let req: ChatRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(req.extra["seed"], 7);
        assert_eq!(req.messages[0].extra["x_meta"], 1);
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(raw).unwrap());
    }

    #[test]
    fn validation_rejects_semantic_mistakes() {
        let base = |extra: &str| {
            serde_json::from_str::<ChatRequest>(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
            ))
            .unwrap()
        };
        assert!(base("").validate().is_ok());
        assert_eq!(base(r#","temperature":3"#).validate().unwrap_err().1, "temperature");
        assert_eq!(
            base(r#","stream_options":{"include_usage":true}"#)
                .validate()
                .unwrap_err()
                .1,
            "stream_options"
        );
        let empty: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(empty.validate().unwrap_err().1, "messages");
    }

    #[test]
    fn content_and_stop_take_both_shapes_and_mistakes_point_at_their_place() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","stop":"END","messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"a"}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert!(matches!(req.stop, Some(Stop::One(ref s)) if s == "END"));
        assert!(matches!(req.messages[0].content, Some(MessageContent::Text(_))));
        assert!(matches!(req.messages[1].content, Some(MessageContent::Parts(ref p)) if p[0].kind == "text"));
        assert!(req.messages[2].content.is_none());
        let err = serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[{"role":"user","content":42}]}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("a string or an array of content parts") && err.column() > 40,
            "{err}"
        );
        let err = serde_json::from_str::<ChatRequest>(r#"["not", "an", "object"]"#).unwrap_err();
        assert!(err.to_string().contains("expected a chat completions request"), "{err}");
        let err = serde_json::from_str::<ChatRequest>(
            r#"{"model":"m","messages":[{"role":"user","content":[{"text":"no type"}]}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing field `type`"), "{err}");
    }

    #[test]
    fn unknown_role_is_a_parse_error() {
        let err = serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("wizard"), "{err}");
    }
}
