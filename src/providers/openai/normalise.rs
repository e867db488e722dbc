//! What OpenAI-compatible servers get wrong, put right on the way through.
//!
//! TGI's Messages API (and servers built on it) answers with an empty `id`,
//! `finish_reason: "stop_sequence"`, tool calls ended by `"stop"` rather than
//! `"tool_calls"`, and may end a stream without any finish reason. Clients
//! (agent loops checking `finish_reason == "tool_calls"`, SDK accumulators)
//! rely on OpenAI's meanings, so those are rewritten. The checks run on the
//! raw bytes first: an answer that needs nothing (OpenAI's own) is passed on
//! untouched, unparsed.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::providers::StreamEvent;

static ID_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\""));

/// Whether some `key` in `data` has a value starting with `value`, however
/// the JSON is spaced. A false hit (the key inside a string) costs a parse,
/// never a wrong answer: the rewrite itself reads the parsed value.
fn has(data: &[u8], key: &Finder<'static>, value: &[u8]) -> bool {
    key.find_iter(data)
        .any(|at| value_of(&data[at + key.needle().len()..]).is_some_and(|v| v.starts_with(value)))
}

/// The value after a key's closing quote (`rest`), however the JSON is spaced.
fn value_of(rest: &[u8]) -> Option<&[u8]> {
    rest.trim_ascii_start().strip_prefix(b":").map(<[u8]>::trim_ascii_start)
}

/// Some `id` is an empty string, however the JSON is spaced.
pub(super) fn empty_id(data: &[u8]) -> bool {
    has(data, &ID_KEY, b"\"\"")
}

/// What the `finish_reason`s and `tool_calls` of a chunk or answer say,
/// read in one pass: every stream chunk asks.
#[derive(Default)]
struct Keys {
    /// Some choice finished (its reason is a string, not `null`).
    finished: bool,
    stop: bool,
    stop_sequence: bool,
    /// Some `tool_calls` list is not empty (`[]` calls nothing).
    tools_called: bool,
}

impl Keys {
    /// Both keys hold an underscore, a byte rare enough in JSON chunks that
    /// finding each one (memchr) and looking around it costs less than a
    /// search of the whole chunk for each key.
    fn of(data: &[u8]) -> Self {
        const FINISH: &[u8] = b"\"finish_reason\"";
        const TOOLS: &[u8] = b"\"tool_calls\"";
        let value_after = |underscore: usize, key: &[u8], offset: usize| {
            let start = underscore.checked_sub(offset)?;
            value_of(data[start..].strip_prefix(key)?)
        };
        let mut k = Keys::default();
        for at in memchr::memchr_iter(b'_', data) {
            if let Some(v) = value_after(at, FINISH, 7) {
                k.finished |= v.starts_with(b"\"");
                k.stop |= v.starts_with(b"\"stop\"");
                k.stop_sequence |= v.starts_with(b"\"stop_sequence\"");
            } else if let Some(v) = value_after(at, TOOLS, 5) {
                k.tools_called |= v
                    .strip_prefix(b"[")
                    .is_some_and(|rest| !rest.trim_ascii_start().starts_with(b"]"));
            }
        }
        k
    }
}

/// The choices of a chunk that call tools, read without building the chunk.
fn choices_calling_tools(data: &[u8]) -> Vec<u64> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        index: u64,
        #[serde(default)]
        delta: Option<Delta>,
    }
    #[derive(Deserialize)]
    struct Delta {
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
    }
    serde_json::from_slice::<Chunk>(data)
        .map(|c| {
            c.choices
                .into_iter()
                .filter(|c| {
                    c.delta
                        .as_ref()
                        .and_then(|d| d.tool_calls.as_ref())
                        .is_some_and(|t| !t.is_empty())
                })
                .map(|c| c.index)
                .collect()
        })
        .unwrap_or_default()
}

/// Fixes one choice: `stop_sequence` → `stop`; `stop` after tool calls → `tool_calls`.
fn fix_finish(choice: &mut Value, called_tools: bool) {
    let Some(reason) = choice.get_mut("finish_reason") else {
        return;
    };
    match reason.as_str() {
        Some("stop_sequence") => *reason = json!("stop"),
        Some("stop") if called_tools => *reason = json!("tool_calls"),
        _ => {}
    }
}

fn has_tool_calls(v: &Value) -> bool {
    v.as_array().is_some_and(|calls| !calls.is_empty())
}

/// A complete answer, rewritten only if it needs to be.
pub fn answer(raw: Bytes, request_id: &str) -> Bytes {
    let keys = Keys::of(&raw);
    let needs = empty_id(&raw) || keys.stop_sequence || (keys.stop && keys.tools_called);
    if !needs {
        return raw;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&raw) else {
        return raw;
    };
    if v.get("id").and_then(Value::as_str) == Some("") {
        v["id"] = json!(format!("chatcmpl-{request_id}"));
    }
    for choice in v.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
        let called = has_tool_calls(&choice["message"]["tool_calls"]);
        fix_finish(choice, called);
    }
    serde_json::to_vec(&v).map(Bytes::from).unwrap_or(raw)
}

/// The stream's side: remembers what it saw to fix later chunks and to end
/// a stream that stops without a finish reason.
pub struct StreamFixer {
    id: String,
    /// From the first chunk: what a synthesized finish chunk says.
    model: Option<String>,
    chat: bool,
    started: bool,
    /// The indices of the choices that called tools (with `n` > 1, not all may).
    called: Vec<u64>,
    finished: bool,
    /// Whether chunks may come with an empty `id` (the first one did, or had none).
    empty_ids: bool,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
}

impl StreamFixer {
    pub fn new(request_id: &str) -> Self {
        StreamFixer {
            id: format!("chatcmpl-{request_id}"),
            model: None,
            chat: false,
            started: false,
            called: Vec::new(),
            finished: false,
            empty_ids: true,
        }
    }

    /// One chunk (not `[DONE]`, not an error), fixed if it needs to be.
    pub fn chunk(&mut self, data: Bytes) -> Bytes {
        if !self.started {
            self.started = true;
            if let Ok(head) = serde_json::from_slice::<Head>(&data) {
                self.chat = head.object.as_deref() == Some("chat.completion.chunk");
                self.model = head.model.map(Cow::into_owned);
                if let Some(id) = head.id.filter(|id| !id.is_empty()) {
                    self.id = id.into_owned();
                    // A server that names its stream names its chunks: the
                    // rest are not searched through for an empty `id`.
                    self.empty_ids = false;
                }
            }
        }
        let keys = Keys::of(&data);
        if keys.tools_called {
            for index in choices_calling_tools(&data) {
                if !self.called.contains(&index) {
                    self.called.push(index);
                }
            }
        }
        self.finished |= keys.finished;
        // After a named first chunk only a chunk that opens with an empty `id`
        // is fixed: some proxies end a stream with one.
        let unnamed = if self.empty_ids {
            empty_id(&data)
        } else {
            data.starts_with(br#"{"id":"""#)
        };
        let needs = unnamed || keys.stop_sequence || (!self.called.is_empty() && keys.stop);
        if !needs {
            return data;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&data) else {
            return data;
        };
        if v.get("id").and_then(Value::as_str) == Some("") {
            v["id"] = json!(self.id);
        }
        for choice in v.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            fix_finish(choice, self.called.contains(&index));
        }
        serde_json::to_vec(&v).map(Bytes::from).unwrap_or(data)
    }

    /// The finish chunk a chat stream never sent, when it is about to end
    /// (its usage chunk or `[DONE]` arrived): `tool_calls` or `stop`.
    pub fn missing_finish(&mut self) -> Option<StreamEvent> {
        if self.finished || !self.started || !self.chat {
            return None;
        }
        self.finished = true;
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let reason = if self.called.contains(&0) { "tool_calls" } else { "stop" };
        let body = json!({"id": self.id, "object": "chat.completion.chunk", "created": created, "model": self.model,
                          "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]});
        Some(StreamEvent::chunk(
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            false,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_answers_pass_untouched() {
        let raw = Bytes::from_static(include_bytes!(
            "../../../tests/fixtures/openai/chat_response_tool_calls.json"
        ));
        assert_eq!(answer(raw.clone(), "r").as_ptr(), raw.as_ptr(), "not even copied");
    }

    #[test]
    fn tgi_answers_get_an_id_and_openai_finish_reasons() {
        let raw = Bytes::from_static(include_bytes!("../../../tests/fixtures/tgi/chat_response.json"));
        let v: Value = serde_json::from_slice(&answer(raw, "r1")).unwrap();
        assert_eq!(v["id"], "chatcmpl-r1");
        let tools = br#"{"id":"","choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"0","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#;
        let v: Value = serde_json::from_slice(&answer(Bytes::from_static(tools), "r")).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let stop = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop_sequence"}]}"#;
        let v: Value = serde_json::from_slice(&answer(Bytes::from_static(stop), "r")).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn a_stream_without_a_finish_reason_gets_one() {
        let mut f = StreamFixer::new("r");
        let first = f.chunk(Bytes::from_static(
            br#"{"object":"chat.completion.chunk","id":"","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"0","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]}"#,
        ));
        let v: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["id"], "chatcmpl-r");
        let finish = f.missing_finish().unwrap();
        let v: Value = serde_json::from_slice(&finish.data).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["model"], "m");
        assert!(f.missing_finish().is_none(), "once");
    }

    #[test]
    fn finish_reasons_and_tool_calls_are_read_in_one_pass() {
        let k = Keys::of(
            br#"_{"choices":[{"index":0,"delta":{"content":"a_b \"finish_reason\": \"stop\""},"finish_reason":null}]}"#,
        );
        assert!(
            !k.finished && !k.stop && !k.tools_called,
            "keys inside strings are text"
        );
        let k = Keys::of(
            br#"{"choices":[{"finish_reason" : "stop_sequence"},{"delta":{"tool_calls": [ {"index":0} ]},"finish_reason":"stop"}]}"#,
        );
        assert!(k.finished && k.stop && k.stop_sequence && k.tools_called);
        let k = Keys::of(br#"{"choices":[{"delta":{"tool_calls":[]},"finish_reason":"length"}]}"#);
        assert!(k.finished && !k.stop && !k.stop_sequence && !k.tools_called);
        assert!(!Keys::of(b"_").finished);
    }

    #[test]
    fn every_chunk_of_a_stream_without_ids_gets_the_id() {
        let mut f = StreamFixer::new("r");
        for delta in ["Hel", "lo"] {
            let chunk = format!(
                r#"{{"object":"chat.completion.chunk","id":"","model":"m","choices":[{{"index":0,"delta":{{"content":"{delta}"}},"finish_reason":null}}]}}"#
            );
            let v: Value = serde_json::from_slice(&f.chunk(Bytes::from(chunk))).unwrap();
            assert_eq!(v["id"], "chatcmpl-r");
            assert_eq!(v["choices"][0]["delta"]["content"], delta);
        }
        let mut f = StreamFixer::new("r");
        let named = Bytes::from_static(br#"{"object":"chat.completion.chunk","id":"c1","choices":[]}"#);
        assert_eq!(f.chunk(named.clone()).as_ptr(), named.as_ptr(), "passed on as it came");
        // A proxy's closing chunk without its name still gets it.
        let v: Value = serde_json::from_slice(&f.chunk(Bytes::from_static(
            br#"{"id":"","object":"chat.completion.chunk","choices":[],"usage":{"total_tokens":3}}"#,
        )))
        .unwrap();
        assert_eq!(v["id"], "c1");
    }

    #[test]
    fn only_the_choices_that_called_tools_finish_with_tool_calls() {
        let mut f = StreamFixer::new("r");
        f.chunk(Bytes::from_static(
            br#"{"object":"chat.completion.chunk","id":"c","model":"m","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":""}}]},"finish_reason":null},{"index":0,"delta":{"content":"hi","tool_calls":[]},"finish_reason":null}]}"#,
        ));
        let fixed = f.chunk(Bytes::from_static(
            br#"{"object":"chat.completion.chunk","id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
        ));
        let v: Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(
            v["choices"][0]["finish_reason"], "stop",
            "choice 0 called nothing (an empty list)"
        );
        assert_eq!(v["choices"][1]["finish_reason"], "tool_calls");
        assert!(Keys::of(br#"{"tool_calls": [ {"index":0} ]}"#).tools_called);
        assert!(!Keys::of(br#"{"tool_calls": [ ]}"#).tools_called);
    }

    #[test]
    fn a_stream_that_finished_needs_nothing() {
        let mut f = StreamFixer::new("r");
        let raw = include_str!("../../../tests/fixtures/openai/chat_stream.sse");
        for data in raw
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
        {
            let data = Bytes::copy_from_slice(data.as_bytes());
            assert_eq!(f.chunk(data.clone()), data);
        }
        assert!(f.missing_finish().is_none());
    }
}
