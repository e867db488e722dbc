//! OpenAI ↔ Ollama's native API (`/api/chat`, `/api/embed`). Pure; tested on
//! the fixtures.
//!
//! Rules for what Ollama cannot take (documented in the README):
//! - rejected (400): `n` > 1, image URLs that are not `data:` URLs (Ollama
//!   cannot fetch), audio and file parts, the `function` role;
//! - dropped: `tool_choice`, `logit_bias`, `logprobs`, `user` and other
//!   OpenAI-only fields; `stream_options` (usage always comes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::chat::{ChatMessage, MessageContent, Role, base64_data_url};
use crate::api::embeddings::{self, EncodingFormat};
use crate::api::usage::ReportedTime;
use crate::api::{ApiError, ChatRequest, EmbeddingsRequest, Usage};
use crate::providers::StreamEvent;

fn unsupported(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

/// Per-provider settings that go into every request.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub keep_alive: Option<String>,
    pub num_ctx: Option<u32>,
}

pub fn to_chat_request(req: &ChatRequest, model: &str, settings: &Settings) -> Result<Value, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("Ollama returns one choice: `n` must be 1", "n"));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(req, m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = &req.tools {
        out.insert("tools".into(), Value::Array(tools.clone()));
    }
    match req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => {
            out.insert("format".into(), json!("json"));
        }
        Some("json_schema") => {
            let schema = req
                .response_format
                .as_ref()
                .and_then(|f| f.pointer("/json_schema/schema"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            out.insert("format".into(), schema);
        }
        _ => {}
    }
    let mut options = Map::new();
    if let Some(t) = req.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(max) = req.max_output_tokens() {
        options.insert("num_predict".into(), json!(max));
    }
    if let Some(stop) = req.stop_sequences() {
        options.insert("stop".into(), json!(stop));
    }
    for key in ["seed", "top_k", "presence_penalty", "frequency_penalty"] {
        if let Some(v) = req.extra.get(key) {
            options.insert(key.into(), v.clone());
        }
    }
    if let Some(n) = settings.num_ctx {
        options.insert("num_ctx".into(), json!(n));
    }
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    // Ollama streams unless told not to.
    out.insert("stream".into(), json!(req.is_stream()));
    if let Some(k) = &settings.keep_alive {
        out.insert("keep_alive".into(), json!(k));
    }
    Ok(Value::Object(out))
}

fn message(req: &ChatRequest, m: &ChatMessage, i: usize) -> Result<Value, ApiError> {
    let role = match m.role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => {
            return Err(unsupported(
                "the deprecated `function` role is not supported: use `tool`",
                "messages",
            ));
        }
    };
    let mut text = Vec::new();
    let mut images = Vec::new();
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => text.push(t.as_str()),
        Some(MessageContent::Parts(parts)) => {
            for p in parts {
                match p.kind.as_str() {
                    "text" => text.push(p.text.as_deref().unwrap_or("")),
                    "image_url" => {
                        let data = p.image_url().and_then(base64_data_url).map(|(_, d)| d).ok_or_else(|| {
                            unsupported(
                                format!("messages[{i}]: Ollama takes images as data: URLs only"),
                                "messages",
                            )
                        })?;
                        images.push(json!(data));
                    }
                    other => {
                        return Err(unsupported(
                            format!("messages[{i}]: `{other}` parts are not supported by Ollama"),
                            "messages",
                        ));
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    out.insert("content".into(), json!(text.join("\n")));
    if !images.is_empty() {
        out.insert("images".into(), Value::Array(images));
    }
    let calls = m
        .tool_call_parts()
        .map_err(|(msg, param)| unsupported(format!("messages[{i}]: {msg}"), param))?;
    if !calls.is_empty() {
        let calls = calls
            .into_iter()
            .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(name) = m.tool_call_id.as_deref().and_then(|id| req.tool_name_for(id)) {
        out.insert("tool_name".into(), json!(name));
    }
    Ok(Value::Object(out))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One `/api/chat` object: a stream line or the whole answer.
#[derive(Deserialize)]
struct ChatObject {
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: Option<OllamaMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    /// Nanoseconds, each.
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_duration: Option<u64>,
    #[serde(default)]
    eval_duration: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct OllamaMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<Value>,
}

fn usage(o: &ChatObject) -> Usage {
    // Absent counts mean 0 (Ollama omits zeros).
    let ns = |d: Option<u64>| Duration::from_nanos(d.unwrap_or(0));
    Usage {
        reported_time: ReportedTime {
            load: ns(o.load_duration),
            prompt: ns(o.prompt_eval_duration),
            generation: ns(o.eval_duration),
            ..ReportedTime::default()
        },
        ..Usage::new(o.prompt_eval_count.unwrap_or(0), o.eval_count.unwrap_or(0))
    }
}

fn finish_reason(o: &ChatObject, had_tool_calls: bool) -> &'static str {
    match o.done_reason.as_deref() {
        Some("length") => "length",
        // done_reason stays "stop" after tool calls.
        _ if had_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Ollama's tool calls arrive whole, arguments as an object, ids only in newer versions.
fn tool_calls(calls: &[Value], first_index: usize) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = c.get("function").unwrap_or(&Value::Null);
            let index = first_index + i;
            let id = c.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{index}"), str::to_owned);
            json!({"index": index, "id": id, "type": "function", "function": {
                "name": f.get("name").cloned().unwrap_or(Value::Null),
                "arguments": f.get("arguments").map_or_else(|| "{}".to_owned(), |a| if let Value::String(s) = a { s.clone() } else { a.to_string() }),
            }})
        })
        .collect()
}

/// The upstream failed: `{"error": "..."}` in place of an answer.
pub fn error_message(raw: &[u8]) -> Option<String> {
    serde_json::from_slice::<ChatObject>(raw).ok().and_then(|o| o.error)
}

/// A complete `/api/chat` answer as an OpenAI `chat.completion`, with its usage.
pub fn to_chat_completion(raw: &[u8], request_id: &str) -> Result<(Bytes, Usage), serde_json::Error> {
    let o: ChatObject = serde_json::from_slice(raw)?;
    let m = o.message.as_ref();
    let calls = tool_calls(m.map_or(&[][..], |m| &m.tool_calls), 0);
    let mut message = json!({"role": "assistant", "content": m.map_or("", |m| &m.content), "refusal": null});
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|mut c| {
                c.as_object_mut().map(|o| o.remove("index"));
                c
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let had_calls = message.get("tool_calls").is_some();
    let u = usage(&o);
    let body = json!({
        "id": format!("chatcmpl-{request_id}"), "object": "chat.completion", "created": now(), "model": o.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&o, had_calls)}],
        "usage": u,
    });
    Ok((Bytes::from(serde_json::to_vec(&body)?), u))
}

/// What one NDJSON line becomes.
pub enum Step {
    Emit(Vec<StreamEvent>),
    /// `done: true`: the finish and usage chunks; the answer is complete.
    Done(Vec<StreamEvent>),
    Failed(String),
}

/// Turns `/api/chat` stream lines into OpenAI chunks.
pub struct StreamTranslator {
    id: String,
    created: u64,
    started: bool,
    tool_calls: usize,
}

impl StreamTranslator {
    pub fn new(request_id: &str) -> Self {
        StreamTranslator {
            id: format!("chatcmpl-{request_id}"),
            created: now(),
            started: false,
            tool_calls: 0,
        }
    }

    fn chunk(&self, model: &str, delta: Value, finish_reason: Option<&str>, has_content: bool) -> StreamEvent {
        let body = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        StreamEvent::chunk(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), has_content)
    }

    pub fn step(&mut self, line: &[u8]) -> Result<Step, serde_json::Error> {
        let o: ChatObject = serde_json::from_slice(line)?;
        if let Some(e) = o.error {
            return Ok(Step::Failed(e));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(self.chunk(&o.model, json!({"role": "assistant", "content": ""}), None, false));
        }
        let m = o.message.as_ref();
        if let Some(text) = m.map(|m| m.content.as_str()).filter(|t| !t.is_empty()) {
            out.push(self.chunk(&o.model, json!({"content": text}), None, true));
        }
        if let Some(calls) = m.map(|m| &m.tool_calls).filter(|c| !c.is_empty()) {
            let calls = tool_calls(calls, self.tool_calls);
            self.tool_calls += calls.len();
            out.push(self.chunk(&o.model, json!({"tool_calls": calls}), None, true));
        }
        if !o.done {
            return Ok(Step::Emit(out));
        }
        out.push(self.chunk(&o.model, json!({}), Some(finish_reason(&o, self.tool_calls > 0)), false));
        let u = usage(&o);
        let body = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": o.model, "choices": [], "usage": u});
        out.push(StreamEvent::usage(Bytes::from(serde_json::to_vec(&body)?), u));
        Ok(Step::Done(out))
    }
}

/// The model names of an `/api/tags` answer.
pub fn model_names(raw: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Tags {
        models: Vec<Tag>,
    }
    #[derive(Deserialize)]
    struct Tag {
        name: String,
    }
    let tags: Tags = serde_json::from_slice(raw)?;
    Ok(tags.models.into_iter().map(|t| t.name).collect())
}

pub fn to_embed_request(req: &EmbeddingsRequest, model: &str, settings: &Settings) -> Value {
    let mut out = json!({"model": model, "input": req.input});
    if let Some(d) = req.dimensions {
        out["dimensions"] = json!(d);
    }
    if let Some(k) = &settings.keep_alive {
        out["keep_alive"] = json!(k);
    }
    out
}

#[derive(Deserialize)]
struct EmbedAnswer {
    #[serde(default)]
    model: String,
    embeddings: Vec<Vec<f64>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
}

/// `/api/embed`'s answer as OpenAI's embeddings list.
pub fn to_embeddings(raw: &[u8], format: Option<EncodingFormat>) -> Result<(Bytes, Usage), serde_json::Error> {
    let a: EmbedAnswer = serde_json::from_slice(raw)?;
    let data: Vec<Value> = a
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, v)| embeddings::entry(index, json!(v), format))
        .collect();
    let tokens = a.prompt_eval_count.unwrap_or(0);
    let body = embeddings::list(data, &a.model, tokens);
    Ok((Bytes::from(serde_json::to_vec(&body)?), Usage::new(tokens, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_request_translates_exactly() {
        let req: ChatRequest =
            serde_json::from_str(include_str!("../../../tests/fixtures/openai/chat_request.json")).unwrap();
        let expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/ollama/chat_request.json")).unwrap();
        let got = to_chat_request(&req, "llama3.2-vision", &Settings::default()).unwrap();
        assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
    }

    #[test]
    fn the_tags_fixture_names_its_models() {
        let names = model_names(include_bytes!("../../../tests/fixtures/ollama/tags_response.json")).unwrap();
        assert_eq!(names, ["llama3.2:latest", "all-minilm:latest"]);
    }

    #[test]
    fn json_mode_options_and_rejections() {
        let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"seed":7,"max_tokens":9}"#).unwrap();
        let got = to_chat_request(
            &req,
            "m",
            &Settings {
                keep_alive: Some("10m".into()),
                num_ctx: Some(8192),
            },
        )
        .unwrap();
        assert_eq!(got["format"], "json");
        assert_eq!(got["options"], json!({"seed": 7, "num_predict": 9, "num_ctx": 8192}));
        assert_eq!(got["keep_alive"], "10m");
        assert_eq!(got["stream"], false, "Ollama streams unless told not to");
        let url: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#).unwrap();
        assert_eq!(
            to_chat_request(&url, "m", &Settings::default())
                .unwrap_err()
                .param
                .as_deref(),
            Some("messages")
        );
    }

    fn run(raw: &str) -> (Vec<Value>, Option<Usage>) {
        let mut t = StreamTranslator::new("r1");
        let mut out = Vec::new();
        let mut usage = None;
        for line in raw.lines().filter(|l| !l.is_empty()) {
            let events = match t.step(line.as_bytes()).unwrap() {
                Step::Emit(e) | Step::Done(e) => e,
                Step::Failed(e) => panic!("{e}"),
            };
            for e in events {
                usage = e.usage.or(usage);
                out.push(serde_json::from_slice(&e.data).unwrap());
            }
        }
        (out, usage)
    }

    #[test]
    fn streams_translate_with_usage_and_tool_calls() {
        let (chunks, usage) = run(include_str!("../../../tests/fixtures/ollama/chat_stream.ndjson"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.ends_with(" 18°C and overcast."), "{text}");
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (41, 8));
        assert!(!usage.reported_time.is_zero(), "Ollama's durations are kept");
        assert_eq!(chunks.last().unwrap()["choices"], json!([]));

        let (chunks, _) = run(include_str!(
            "../../../tests/fixtures/ollama/chat_stream_tool_call.ndjson"
        ));
        let call = chunks
            .iter()
            .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
            .unwrap();
        assert_eq!(call["id"], "call_k3v9q2m1");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
    }

    #[test]
    fn complete_answers_and_embeddings() {
        let (body, usage) = to_chat_completion(
            include_bytes!("../../../tests/fixtures/ollama/chat_response.json"),
            "r1",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["choices"][0]["message"]["content"].as_str().unwrap().len() > 3);
        assert_eq!(v["usage"]["total_tokens"], usage.total_tokens);
        let (body, usage) = to_embeddings(
            include_bytes!("../../../tests/fixtures/ollama/embed_response.json"),
            None,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(usage.prompt_tokens, 10);
        assert_eq!(
            error_message(br#"{"error":"model 'llama9' not found"}"#).as_deref(),
            Some("model 'llama9' not found")
        );
    }
}
