//! Anthropic Messages answers → OpenAI chat completions: the complete answer,
//! stream events (a small state machine), usage and stop reasons. Pure;
//! unit-tested against the fixtures.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Usage;
use crate::providers::StreamEvent;

/// Anthropic's usage: `input_tokens` counts only what follows the last cache
/// breakpoint, so the prompt is input + cache reads + cache writes.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: Option<u64>,
}

/// Metering never fails an answer: odd counts read leniently.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    crate::api::usage::lenient_count(d).map(Some)
}

impl AnthropicUsage {
    /// Later counts (a stream's `message_delta`) override earlier ones where present.
    fn merge(&mut self, later: &AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    pub fn to_usage(self) -> Usage {
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            total_tokens: prompt.saturating_add(completion),
            cached_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            ..Usage::new(prompt, completion)
        }
    }

    fn to_openai(self) -> Value {
        let u = self.to_usage();
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_input_tokens.unwrap_or(0)},
        })
    }
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct Message {
    /// Must be `message`: anything else is not a Messages answer.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// A complete Messages answer as an OpenAI `chat.completion`, with its usage.
pub fn to_chat_completion(raw: &[u8]) -> Result<(Bytes, Usage), serde_json::Error> {
    let m: Message = serde_json::from_slice(raw)?;
    if m.kind != "message" {
        return Err(serde::de::Error::custom(format!(
            "`type` is `{}`, not `message`",
            m.kind
        )));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            // Thinking and server-tool blocks have no OpenAI equivalent here.
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let body = json!({
        "id": m.id,
        "object": "chat.completion",
        "created": now(),
        "model": m.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(m.stop_reason.as_deref())}],
        "usage": m.usage.to_openai(),
    });
    Ok((Bytes::from(serde_json::to_vec(&body)?), m.usage.to_usage()))
}

/// What one Anthropic stream event becomes.
pub enum Step {
    Emit(Vec<StreamEvent>),
    /// `message_stop`: the answer is complete (the usage chunk is emitted first).
    Done(Vec<StreamEvent>),
    /// An `error` event: the upstream's error object.
    Failed(Value),
}

/// Turns Anthropic stream events into OpenAI chunks.
#[derive(Default)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// For each Anthropic content block that is a tool call: its block index,
    /// its OpenAI `tool_calls[].index`, and whether any argument text came.
    tool_indexes: Vec<(u64, usize, bool)>,
    /// A finish chunk was sent (`message_delta`).
    finished: bool,
}

impl StreamTranslator {
    pub fn new() -> Self {
        StreamTranslator {
            created: now(),
            ..Default::default()
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, has_content: bool) -> StreamEvent {
        let body = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        StreamEvent::chunk(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), has_content)
    }

    pub fn step(&mut self, data: &[u8]) -> Result<Step, serde_json::Error> {
        let event: Value = serde_json::from_slice(data)?;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        Ok(match kind {
            "message_start" => {
                let message = event.get("message").cloned().unwrap_or(Value::Null);
                self.id = message.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(u) = message.get("usage") {
                    self.usage.merge(&AnthropicUsage::deserialize(u)?);
                }
                let mut first = self.chunk(json!({"role": "assistant", "content": ""}), None, false);
                // The prompt is known from here on: a stream that fails later is still metered for it.
                first.usage = Some(self.usage.to_usage());
                Step::Emit(vec![first])
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Ok(Step::Emit(Vec::new()));
                }
                let position = self.tool_indexes.len();
                self.tool_indexes.push((index, position, false));
                let call = json!([{"index": position, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": ""}}]);
                Step::Emit(vec![self.chunk(
                    json!({"content": null, "tool_calls": call}),
                    None,
                    // The name alone is not generated content: TTFT waits for text or arguments.
                    false,
                )])
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        Step::Emit(vec![self.chunk(json!({"content": text}), None, !text.is_empty())])
                    }
                    Some("input_json_delta") => {
                        let piece = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        let slot = self.tool_indexes.iter_mut().find(|(i, _, _)| *i == index);
                        match slot {
                            Some((_, p, sent)) if !piece.is_empty() => {
                                *sent = true;
                                let call = json!([{"index": *p, "function": {"arguments": piece}}]);
                                Step::Emit(vec![self.chunk(json!({"tool_calls": call}), None, true)])
                            }
                            _ => Step::Emit(Vec::new()),
                        }
                    }
                    // Thinking, signatures and citations have no OpenAI chunk.
                    _ => Step::Emit(Vec::new()),
                }
            }
            "message_delta" => {
                if let Some(u) = event.get("usage") {
                    self.usage.merge(&AnthropicUsage::deserialize(u)?);
                }
                let stop = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                self.finished = true;
                Step::Emit(vec![self.chunk(json!({}), Some(finish_reason(stop)), false)])
            }
            "content_block_stop" => {
                // A tool call whose arguments never came has empty arguments: `{}`, not "".
                match self.tool_indexes.iter_mut().find(|(i, _, _)| *i == index) {
                    Some((_, p, sent)) if !*sent => {
                        *sent = true;
                        let call = json!([{"index": *p, "function": {"arguments": "{}"}}]);
                        Step::Emit(vec![self.chunk(json!({"tool_calls": call}), None, false)])
                    }
                    _ => Step::Emit(Vec::new()),
                }
            }
            "message_stop" => {
                let mut out = Vec::new();
                if !self.finished {
                    out.push(self.chunk(json!({}), Some("stop"), false));
                }
                let usage = self.usage.to_usage();
                let body = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": self.usage.to_openai(),
                });
                out.push(StreamEvent::usage(Bytes::from(serde_json::to_vec(&body)?), usage));
                Step::Done(out)
            }
            "error" => Step::Failed(event),
            // ping, and event types added later.
            _ => Step::Emit(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(raw: &str) -> Vec<&str> {
        raw.split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .collect()
    }

    fn run(raw: &str) -> (Vec<Value>, Option<Usage>, bool) {
        let mut t = StreamTranslator::new();
        let (mut out, mut usage, mut done) = (Vec::new(), None, false);
        for data in events(raw) {
            let emitted = match t.step(data.as_bytes()).unwrap() {
                Step::Emit(e) => e,
                Step::Done(e) => {
                    done = true;
                    e
                }
                Step::Failed(e) => panic!("{e}"),
            };
            for e in emitted {
                usage = e.usage.or(usage);
                out.push(serde_json::from_slice(&e.data).unwrap());
            }
        }
        (out, usage, done)
    }

    #[test]
    fn complete_answers_translate() {
        let (body, usage) = to_chat_completion(include_bytes!(
            "../../../tests/fixtures/anthropic/messages_response.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Paris is 18°C and overcast.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 412);
        assert_eq!(usage, Usage::new(412, 12));

        let (body, _) = to_chat_completion(include_bytes!(
            "../../../tests/fixtures/anthropic/messages_response_tool_use.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn cache_reads_and_writes_count_as_prompt_tokens() {
        let raw = br#"{"type":"message","id":"m","model":"c","content":[],"stop_reason":"max_tokens","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        let (body, usage) = to_chat_completion(raw).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            usage,
            Usage {
                cached_tokens: 100,
                cache_write_tokens: 5,
                ..Usage::new(115, 7)
            }
        );
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(
            v["choices"][0]["message"]["content"], "",
            "empty content is not an error"
        );
    }

    #[test]
    fn the_text_stream_translates() {
        let (chunks, usage, done) = run(include_str!("../../../tests/fixtures/anthropic/messages_stream.sse"));
        assert!(done);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Paris is 18°C and overcast.");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["stop"]);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(usage.unwrap().completion_tokens, 12);
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == chunks[0]["id"] && c["object"] == "chat.completion.chunk")
        );
    }

    #[test]
    fn streamed_tool_calls_reassemble() {
        let (chunks, usage, done) = run(include_str!(
            "../../../tests/fixtures/anthropic/messages_stream_tool_use.sse"
        ));
        assert!(done && usage.is_some());
        let mut arguments = String::new();
        let mut name = None;
        for c in &chunks {
            for call in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(call["index"], 0);
                name = call["function"]["name"].as_str().map(str::to_owned).or(name);
                arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(name.as_deref(), Some("get_weather"));
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            json!({"city": "Paris"})
        );
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
    }

    #[test]
    fn a_tool_call_without_arguments_gets_an_empty_object() {
        let mut t = StreamTranslator::new();
        let steps = [
            r#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut arguments = String::new();
        let mut finish = Vec::new();
        for s in steps {
            let (Step::Emit(events) | Step::Done(events)) = t.step(s.as_bytes()).unwrap() else {
                panic!()
            };
            for e in events {
                let v: Value = serde_json::from_slice(&e.data).unwrap();
                arguments.push_str(
                    v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap_or(""),
                );
                finish.extend(v["choices"][0]["finish_reason"].as_str().map(str::to_owned));
            }
        }
        assert_eq!(arguments, "{}");
        assert_eq!(finish, ["stop"], "a finish chunk even without message_delta");
        assert!(to_chat_completion(br#"{"error":"not a message"}"#).is_err());
    }

    #[test]
    fn the_raw_event_stream_decodes_and_translates_at_any_split() {
        let raw = include_bytes!("../../../tests/fixtures/anthropic/messages_stream_tool_use.sse");
        let translate = |split: usize| {
            let mut decoder = crate::stream::SseDecoder::new(1 << 20);
            let mut t = StreamTranslator::new();
            let mut out = Vec::new();
            for chunk in raw.chunks(split) {
                decoder.push(bytes::Bytes::copy_from_slice(chunk));
                while let Some(event) = decoder.next_event().unwrap() {
                    if let Step::Emit(events) | Step::Done(events) = t.step(&event.data).unwrap() {
                        out.extend(
                            events
                                .into_iter()
                                .map(|e| serde_json::from_slice::<Value>(&e.data).unwrap()["choices"].clone()),
                        );
                    }
                }
            }
            out
        };
        let whole = translate(raw.len());
        assert!(whole.len() > 5);
        for split in [1, 3, 17] {
            assert_eq!(translate(split), whole, "split every {split} bytes");
        }
    }

    #[test]
    fn an_error_event_fails_the_stream() {
        let mut t = StreamTranslator::new();
        let step = t
            .step(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap();
        assert!(matches!(step, Step::Failed(e) if e["error"]["type"] == "overloaded_error"));
    }
}
