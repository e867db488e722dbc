//! OpenAI ↔ Google's Gemini API (`generateContent`, `streamGenerateContent`,
//! `batchEmbedContents`). Pure; tested on the fixtures.
//!
//! Rules for what Gemini cannot take (documented in the README):
//! - rejected (400): `n` > 1, image URLs that are not `data:` URLs, audio and
//!   file parts, the `function` role, tool-call arguments that are not an object;
//! - dropped: `logit_bias`, `logprobs`, `user`, `parallel_tool_calls` and other
//!   OpenAI-only fields; `stream_options` (usage always comes).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::api::chat::{ChatMessage, MessageContent, Role, ToolChoice, base64_data_url};
use crate::api::embeddings::{self, Input};
use crate::api::{ApiError, ChatRequest, EmbeddingsRequest, Usage};
use crate::metering::estimate;
use crate::providers::StreamEvent;

fn unsupported(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

pub fn to_generate_request(req: &ChatRequest) -> Result<Value, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(
            "tollgate asks Gemini for one candidate: `n` must be 1",
            "n",
        ));
    }
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                system.extend(text_parts(m, i)?);
                continue;
            }
            Role::User => ("user", content_parts(m, i)?),
            Role::Assistant => {
                let mut parts = content_parts(m, i)?;
                let calls = m
                    .tool_call_parts()
                    .map_err(|(msg, param)| unsupported(format!("messages[{i}]: {msg}"), param))?;
                parts.extend(
                    calls
                        .into_iter()
                        .map(|c| json!({"functionCall": {"name": c.name, "args": c.arguments}})),
                );
                ("model", parts)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = req.tool_name_for(id).unwrap_or(id);
                let text = text_parts(m, i)?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n");
                // functionResponse.response must be an object.
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            Role::Function => {
                return Err(unsupported(
                    "the deprecated `function` role is not supported: use `tool`",
                    "messages",
                ));
            }
        };
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), Value::Array(contents));
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let declarations = tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = t
                    .get("function")
                    .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
                let f = f.ok_or_else(|| {
                    unsupported(
                        format!("tools[{i}]: only `function` tools are supported by Gemini"),
                        "tools",
                    )
                })?;
                let mut d = Map::new();
                d.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(desc) = f.get("description") {
                    d.insert("description".into(), desc.clone());
                }
                if let Some(p) = f.get("parameters") {
                    d.insert("parameters".into(), p.clone());
                }
                Ok(Value::Object(d))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        let kind = req.tool_choice_kind().map_err(|(m, param)| unsupported(m, param))?;
        let mode = Some(match kind.unwrap_or(ToolChoice::Auto) {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Nothing => json!({"mode": "NONE"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        });
        if let Some(mode) = mode {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
        }
    }
    let mut config = Map::new();
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(max) = req.max_output_tokens() {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(stop) = req.stop_sequences() {
        config.insert("stopSequences".into(), json!(stop));
    }
    for (openai, gemini) in [
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("top_k", "topK"),
    ] {
        if let Some(v) = req.extra.get(openai) {
            config.insert(gemini.into(), v.clone());
        }
    }
    match req
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = req
                .response_format
                .as_ref()
                .and_then(|f| f.pointer("/json_schema/schema"))
            {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {}
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

fn text_parts(m: &ChatMessage, i: usize) -> Result<Vec<Value>, ApiError> {
    let parts = content_parts(m, i)?;
    if parts.iter().any(|p| p.get("text").is_none()) {
        return Err(unsupported(
            format!("messages[{i}]: only text is allowed here"),
            "messages",
        ));
    }
    Ok(parts)
}

fn content_parts(m: &ChatMessage, i: usize) -> Result<Vec<Value>, ApiError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(vec![json!({"text": t})]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .map(|p| match p.kind.as_str() {
                "text" => Ok(json!({"text": p.text.as_deref().unwrap_or("")})),
                "image_url" => {
                    let (mime, data) = p.image_url().and_then(base64_data_url).ok_or_else(|| {
                        unsupported(
                            format!("messages[{i}]: Gemini takes images as data: URLs only"),
                            "messages",
                        )
                    })?;
                    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
                }
                other => Err(unsupported(
                    format!("messages[{i}]: `{other}` parts are not supported by Gemini"),
                    "messages",
                )),
            })
            .collect(),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `usageMetadata` → usage. Thinking tokens are output the model generated.
fn usage(meta: &Value) -> Usage {
    let prompt = count(meta, "promptTokenCount").saturating_add(count(meta, "toolUsePromptTokenCount"));
    let thoughts = count(meta, "thoughtsTokenCount");
    let completion = count(meta, "candidatesTokenCount").saturating_add(thoughts);
    Usage {
        cached_tokens: count(meta, "cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        ..Usage::new(prompt, completion)
    }
}

fn usage_json(meta: &Value) -> Value {
    let u = usage(meta);
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
           "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}})
}

pub fn finish_reason(reason: Option<&str>, had_tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        // A function call still ends with STOP.
        _ if had_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// The text and tool calls of a candidate's parts; thought parts are reasoning, not content.
fn parts_of(candidate: &Value, first_index: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let index = first_index + calls.len();
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{index}"), str::to_owned);
            calls.push(json!({"index": index, "id": id, "type": "function", "function": {
                "name": call.get("name").cloned().unwrap_or(Value::Null),
                "arguments": call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string),
            }}));
        }
    }
    (text, calls)
}

/// A complete `generateContent` answer as an OpenAI `chat.completion`.
pub fn to_chat_completion(raw: &[u8]) -> Result<(Bytes, Usage), serde_json::Error> {
    let v: Value = serde_json::from_slice(raw)?;
    if v.get("candidates").is_none() && v.get("promptFeedback").is_none() {
        return Err(serde::de::Error::custom("no candidates and no promptFeedback"));
    }
    let candidate = v.pointer("/candidates/0").cloned().unwrap_or(Value::Null);
    let (text, calls) = parts_of(&candidate, 0);
    let blocked = v.pointer("/promptFeedback/blockReason").is_some() && candidate.is_null();
    let reason = if blocked {
        "content_filter"
    } else {
        finish_reason(candidate.get("finishReason").and_then(Value::as_str), !calls.is_empty())
    };
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
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
    let meta = v.get("usageMetadata").cloned().unwrap_or(Value::Null);
    let body = json!({
        "id": format!("chatcmpl-{}", v.get("responseId").and_then(Value::as_str).unwrap_or("gemini")),
        "object": "chat.completion", "created": now(),
        "model": v.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": reason}],
        "usage": usage_json(&meta),
    });
    Ok((Bytes::from(serde_json::to_vec(&body)?), usage(&meta)))
}

pub enum Step {
    Emit(Vec<StreamEvent>),
    Failed(Value),
}

/// Turns `streamGenerateContent?alt=sse` events into OpenAI chunks. The
/// stream ends when the connection closes; it is complete only if a finish
/// reason came.
#[derive(Default)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    started: bool,
    tool_calls: usize,
    usage: Value,
    finished: bool,
}

impl StreamTranslator {
    pub fn new() -> Self {
        StreamTranslator {
            created: now(),
            usage: Value::Null,
            ..Default::default()
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, has_content: bool) -> StreamEvent {
        let body = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                          "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]});
        StreamEvent::chunk(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), has_content)
    }

    pub fn step(&mut self, data: &[u8]) -> Result<Step, serde_json::Error> {
        let v: Value = serde_json::from_slice(data)?;
        if v.get("error").is_some() {
            return Ok(Step::Failed(v));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.id = format!(
                "chatcmpl-{}",
                v.get("responseId").and_then(Value::as_str).unwrap_or("gemini")
            );
            self.model = v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None, false));
        }
        if let Some(meta) = v.get("usageMetadata") {
            self.usage = meta.clone();
        }
        let usage_so_far = v.get("usageMetadata").map(usage);
        let candidate = v.pointer("/candidates/0").cloned().unwrap_or(Value::Null);
        let (text, calls) = parts_of(&candidate, self.tool_calls);
        if !text.is_empty() {
            out.push(self.chunk(json!({"content": text}), None, true));
        }
        if !calls.is_empty() {
            self.tool_calls += calls.len();
            out.push(self.chunk(json!({"tool_calls": calls}), None, true));
        }
        let blocked = v.pointer("/promptFeedback/blockReason").is_some() && candidate.is_null();
        if let Some(reason) = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .filter(|_| !self.finished)
        {
            self.finished = true;
            out.push(self.chunk(json!({}), Some(finish_reason(Some(reason), self.tool_calls > 0)), false));
        } else if blocked && !self.finished {
            self.finished = true;
            out.push(self.chunk(json!({}), Some("content_filter"), false));
        }
        // Counts so far ride on the event (not in its bytes): a stream that fails later is metered for them.
        if let (Some(u), Some(first)) = (usage_so_far, out.first_mut()) {
            first.usage = Some(u);
        }
        Ok(Step::Emit(out))
    }

    /// The connection closed: complete if a finish reason came, with the last usage.
    pub fn end(&mut self) -> Option<Vec<StreamEvent>> {
        if !self.finished {
            return None;
        }
        let u = usage(&self.usage);
        let body = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                          "choices": [], "usage": usage_json(&self.usage)});
        Some(vec![StreamEvent::usage(
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            u,
        )])
    }
}

pub fn to_batch_embed_request(req: &EmbeddingsRequest, model: &str) -> Result<Value, ApiError> {
    let requests = req
        .inputs()
        .into_iter()
        .map(|input| match input {
            Input::Text(t) => {
                let mut r = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = json!(d);
                }
                Ok(r)
            }
            Input::Tokens(_) => Err(unsupported("Gemini embeds text, not token arrays", "input")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"requests": requests}))
}

/// `batchEmbedContents` answers carry no token counts: usage is estimated (4 bytes a token).
pub fn to_embeddings(raw: &[u8], req: &EmbeddingsRequest) -> Result<(Bytes, Usage), serde_json::Error> {
    let v: Value = serde_json::from_slice(raw)?;
    let embeddings = v
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| serde::de::Error::custom("no embeddings"))?;
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let values = e.get("values").cloned().unwrap_or_else(|| json!([]));
            embeddings::entry(index, values, req.encoding_format)
        })
        .collect();
    let tokens: u64 = req
        .inputs()
        .iter()
        .map(|i| match i {
            Input::Text(t) => estimate::tokens(t).max(1),
            Input::Tokens(t) => t.len() as u64,
        })
        .sum();
    let body = embeddings::list(data, &req.model, tokens);
    // Gemini reports no usage for embeddings.
    Ok((Bytes::from(serde_json::to_vec(&body)?), Usage::estimated(tokens, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_request_translates_exactly() {
        let req: ChatRequest =
            serde_json::from_str(include_str!("../../../tests/fixtures/openai/chat_request.json")).unwrap();
        let expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/gemini/generate_request.json")).unwrap();
        let got = to_generate_request(&req).unwrap();
        assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
    }

    #[test]
    fn answers_streams_and_function_calls_translate() {
        let (body, usage) =
            to_chat_completion(include_bytes!("../../../tests/fixtures/gemini/generate_response.json")).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(!v["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
        assert_eq!(v["usage"]["total_tokens"], usage.total_tokens);

        let (body, usage) = to_chat_completion(include_bytes!(
            "../../../tests/fixtures/gemini/generate_response_function_call.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens),
            (58, 15 + 48, 48),
            "thinking tokens are completion tokens"
        );

        let raw = include_str!("../../../tests/fixtures/gemini/stream.sse");
        let mut t = StreamTranslator::new();
        let mut text = String::new();
        for event in raw.split("\r\n\r\n").filter_map(|e| e.strip_prefix("data: ")) {
            let Step::Emit(events) = t.step(event.as_bytes()).unwrap() else {
                panic!()
            };
            for e in events {
                let v: Value = serde_json::from_slice(&e.data).unwrap();
                text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(text, "Paris is 18°C and overcast today.");
        let end = t.end().expect("complete after a finish reason");
        assert_eq!(end[0].usage, Some(Usage::new(9, 10)));
        assert!(StreamTranslator::new().end().is_none(), "no finish reason: cut short");
    }
}
