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

/// The client's `tool_choice`, read one way for every translating provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Auto,
    Required,
    Nothing,
    Function(&'a str),
}

/// One assistant tool call, with its arguments parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallParts<'a> {
    pub id: Option<&'a str>,
    pub name: &'a str,
    /// Always a JSON object (empty arguments read as `{}`).
    pub arguments: Value,
}

impl ChatRequest {
    /// `max_completion_tokens`, else the older `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The stop sequences, if any.
    pub fn stop_sequences(&self) -> Option<Vec<&str>> {
        match &self.stop {
            Some(Stop::One(s)) => Some(vec![s.as_str()]),
            Some(Stop::Many(list)) if !list.is_empty() => Some(list.iter().map(String::as_str).collect()),
            _ => None,
        }
    }

    pub fn tool_choice_kind(&self) -> Result<Option<ToolChoice<'_>>, Invalid> {
        let invalid = || {
            (
                "`tool_choice` must be auto, required, none or a named function".to_owned(),
                "tool_choice",
            )
        };
        Ok(match &self.tool_choice {
            None => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                "none" => ToolChoice::Nothing,
                _ => return Err(invalid()),
            }),
            Some(v) => Some(ToolChoice::Function(
                v.get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?,
            )),
        })
    }
}

impl ChatRequest {
    /// The function name of the tool call with this id, from the assistant turns
    /// (providers that name tool results by function, not by call id, need it).
    pub fn tool_name_for(&self, call_id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.tool_calls.iter().flatten())
            .find_map(|c| {
                (c.get("id").and_then(Value::as_str) == Some(call_id))
                    .then(|| c.pointer("/function/name").and_then(Value::as_str))
                    .flatten()
            })
    }
}

impl ChatMessage {
    /// The message's tool calls with parsed arguments; an error names the first whose arguments are not a JSON object.
    pub fn tool_call_parts(&self) -> Result<Vec<ToolCallParts<'_>>, Invalid> {
        self.tool_calls
            .iter()
            .flatten()
            .map(|call| {
                let function = call.get("function").unwrap_or(&Value::Null);
                let raw = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                let arguments = if raw.trim().is_empty() {
                    Value::Object(Map::new())
                } else {
                    serde_json::from_str(raw).unwrap_or(Value::Null)
                };
                if !arguments.is_object() {
                    return Err(("tool call arguments must be a JSON object".to_owned(), "messages"));
                }
                Ok(ToolCallParts {
                    id: call.get("id").and_then(Value::as_str),
                    name: function.get("name").and_then(Value::as_str).unwrap_or_default(),
                    arguments,
                })
            })
            .collect()
    }
}

impl ContentPart {
    /// An `image_url` part's URL.
    pub fn image_url(&self) -> Option<&str> {
        self.extra
            .get("image_url")
            .and_then(|u| u.get("url"))
            .and_then(Value::as_str)
    }
}

/// `data:<mime>;base64,<data>` → (mime, data).
pub fn base64_data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:")?.split_once(";base64,")
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
    fn the_accessors_translators_share() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","max_tokens":5,"stop":["a","b"],"tool_choice":{"type":"function","function":{"name":"f"}},
                "messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":""}},{"id":"c2","type":"function","function":{"name":"g","arguments":"[1]"}}]}]}"#,
        )
        .unwrap();
        assert_eq!(req.max_output_tokens(), Some(5));
        assert_eq!(req.stop_sequences(), Some(vec!["a", "b"]));
        assert_eq!(req.tool_choice_kind().unwrap(), Some(ToolChoice::Function("f")));
        assert_eq!(req.tool_name_for("c2"), Some("g"));
        assert_eq!(req.tool_name_for("c3"), None);
        assert_eq!(
            req.messages[0].tool_call_parts().unwrap_err().1,
            "messages",
            "arguments `[1]` are not an object"
        );
        assert_eq!(
            base64_data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(base64_data_url("https://x/y.png"), None);
    }

    #[test]
    fn unknown_role_is_a_parse_error() {
        let err = serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("wizard"), "{err}");
    }
}
