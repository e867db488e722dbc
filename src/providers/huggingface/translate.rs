//! OpenAI ↔ Hugging Face's native APIs: Text Generation Inference's
//! `/generate` and `/generate_stream`, Text Embeddings Inference's `/embed`.
//! Pure; tested on the fixtures.
//!
//! Rules for what `/generate` cannot take (documented in the README):
//! - rejected (400): `n` > 1, `tools` and tool turns (TGI's native API has no
//!   tools: use its Messages API through `kind: openai`), audio and file
//!   parts, the `function` role, several prompts in one completions request,
//!   token-array prompts and inputs;
//! - mapped: `temperature: 0` → greedy decoding (`do_sample: false`; TGI
//!   refuses a zero temperature), `top_p` only strictly between 0 and 1,
//!   images → `![](url)` in the prompt (TGI's vision-model syntax), JSON mode
//!   → `grammar`;
//! - dropped: `presence_penalty`, `logit_bias`, `logprobs`, `user`,
//!   `stream_options` (usage always comes, from `details`).
//!
//! TGI includes a matched stop sequence in its output; OpenAI does not, so it
//! is cut off, in streams too (text that may be the start of a stop sequence
//! is held back until it is known not to be).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::template::{ChatTemplate, Speaker, Turn};
use crate::api::chat::{ChatMessage, MessageContent, Role};
use crate::api::embeddings;
use crate::api::{ApiError, ChatRequest, CompletionRequest, EmbeddingsRequest, Usage};
use crate::metering::estimate;
use crate::providers::StreamEvent;
use crate::providers::upstream_status::{client_status, kind_for};

fn unsupported(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

/// OpenAI's own limit on stop sequences, and a bound on each one's length:
/// the stream holds back text that may begin a stop sequence and checks it
/// on every token, so a stop sequence's length is a cost per token.
const MAX_STOPS: usize = 4;
const MAX_STOP_BYTES: usize = 256;

fn checked_stops(stops: Vec<String>) -> Result<Vec<String>, ApiError> {
    if stops.len() > MAX_STOPS {
        return Err(unsupported(format!("at most {MAX_STOPS} stop sequences"), "stop"));
    }
    if stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(unsupported(
            format!("a stop sequence may be at most {MAX_STOP_BYTES} bytes long"),
            "stop",
        ));
    }
    Ok(stops)
}

/// Whether answers are chat completions or legacy text completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Text,
}

/// A `/generate` request body, and what its answer's translation needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: Value,
    /// The stop sequences, cut from the answer's end when one matched.
    pub stops: Vec<String>,
    /// Estimated prompt tokens, for servers that report none.
    pub prompt_estimate: u64,
    pub shape: Shape,
}

/// The sampling settings both endpoints share.
struct Sampling<'a> {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    stops: Vec<String>,
    json_mode: Option<&'a Value>,
    extra: &'a Map<String, Value>,
}

impl Sampling<'_> {
    fn parameters(&self) -> Value {
        let mut p = Map::new();
        if let Some(max) = self.max_tokens {
            p.insert("max_new_tokens".into(), json!(max));
        }
        match self.temperature {
            Some(t) if t > 0.0 => {
                p.insert("temperature".into(), json!(t));
                p.insert("do_sample".into(), json!(true));
            }
            Some(_) => {
                p.insert("do_sample".into(), json!(false));
            }
            None => {}
        }
        let greedy = self.temperature == Some(0.0);
        if let Some(top_p) = self.top_p.filter(|p| *p > 0.0 && *p < 1.0 && !greedy) {
            p.insert("top_p".into(), json!(top_p));
        }
        if let Some(seed) = self.extra.get("seed").filter(|s| s.is_u64()) {
            p.insert("seed".into(), seed.clone());
        }
        for key in ["frequency_penalty", "repetition_penalty"] {
            if let Some(v) = self.extra.get(key).filter(|v| v.is_number()) {
                p.insert(key.into(), v.clone());
            }
        }
        if let Some(k) = self.extra.get("top_k").filter(|k| k.as_u64().is_some_and(|k| k > 0)) {
            p.insert("top_k".into(), k.clone());
        }
        if !self.stops.is_empty() {
            p.insert("stop".into(), json!(self.stops));
        }
        if let Some(schema) = self.json_mode {
            p.insert("grammar".into(), json!({"type": "json", "value": schema}));
        }
        // Always: the final event's details carry the token counts.
        p.insert("details".into(), json!(true));
        Value::Object(p)
    }
}

/// OpenAI's `response_format` → the JSON schema TGI's grammar constrains to.
fn json_schema(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = format else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => Ok(Some(
            format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        )),
        Some(other) => Err(unsupported(
            format!("`response_format` type `{other}` is not supported"),
            "response_format",
        )),
    }
}

pub fn to_generate_request(req: &ChatRequest, template: ChatTemplate) -> Result<Prepared, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("TGI's /generate returns one answer: `n` must be 1", "n"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(unsupported(
            "TGI's native /generate has no tools; serve this model through its Messages API (`kind: openai`)",
            "tools",
        ));
    }
    let turns = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| turn(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = template.render(&turns);
    let stops = checked_stops(
        req.stop_sequences()
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    )?;
    let json_mode = json_schema(req.response_format.as_ref())?;
    let sampling = Sampling {
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_output_tokens(),
        stops: stops.clone(),
        json_mode: json_mode.as_ref(),
        extra: &req.extra,
    };
    Ok(Prepared {
        prompt_estimate: estimate::tokens(&inputs),
        body: json!({"inputs": inputs, "parameters": sampling.parameters()}),
        stops,
        shape: Shape::Chat,
    })
}

fn turn(m: &ChatMessage, i: usize) -> Result<Turn, ApiError> {
    let speaker = match m.role {
        Role::System | Role::Developer => Speaker::System,
        Role::User => Speaker::User,
        Role::Assistant => Speaker::Assistant,
        Role::Tool | Role::Function => {
            return Err(unsupported(
                format!("messages[{i}]: TGI's native /generate has no tool turns"),
                "messages",
            ));
        }
    };
    if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(unsupported(
            format!("messages[{i}]: TGI's native /generate has no tool calls"),
            "messages",
        ));
    }
    let text = match &m.content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t.clone(),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            let mut after_text = false;
            for p in parts {
                match p.kind.as_str() {
                    "text" => {
                        if after_text {
                            text.push('\n');
                        }
                        text.push_str(p.text.as_deref().unwrap_or(""));
                        after_text = true;
                    }
                    "image_url" => {
                        let url = p.image_url().ok_or_else(|| {
                            unsupported(format!("messages[{i}]: an image part needs a url"), "messages")
                        })?;
                        // TGI's vision models read images as markdown in the prompt.
                        text.push_str("![](");
                        text.push_str(url);
                        text.push(')');
                        after_text = false;
                    }
                    other => {
                        return Err(unsupported(
                            format!("messages[{i}]: `{other}` parts are not supported by TGI"),
                            "messages",
                        ));
                    }
                }
            }
            text
        }
    };
    Ok(Turn { speaker, text })
}

/// A legacy completions request → `/generate`, the prompt verbatim.
pub fn to_generate_from_completion(req: &CompletionRequest) -> Result<Prepared, ApiError> {
    let prompt = match &req.prompt {
        Value::String(s) => s.as_str(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => items[0].as_str().unwrap_or_default(),
        _ => {
            return Err(unsupported(
                "TGI's /generate takes one text prompt per request",
                "prompt",
            ));
        }
    };
    if req.extra.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported("TGI's /generate returns one answer: `n` must be 1", "n"));
    }
    let stops = checked_stops(match req.extra.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    })?;
    let sampling = Sampling {
        temperature: req.extra.get("temperature").and_then(Value::as_f64),
        top_p: req.extra.get("top_p").and_then(Value::as_f64),
        max_tokens: req.max_tokens,
        stops: stops.clone(),
        json_mode: None,
        extra: &req.extra,
    };
    Ok(Prepared {
        prompt_estimate: estimate::tokens(prompt),
        body: json!({"inputs": prompt, "parameters": sampling.parameters()}),
        stops,
        shape: Shape::Text,
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    generated_tokens: Option<u64>,
    #[serde(default)]
    input_length: Option<u64>,
}

impl Details {
    fn finish_reason(&self) -> &'static str {
        match self.finish_reason.as_deref() {
            Some("length") => "length",
            _ => "stop",
        }
    }

    fn stopped_by_sequence(&self) -> bool {
        self.finish_reason.as_deref() == Some("stop_sequence")
    }
}

#[derive(Deserialize)]
struct Generated {
    generated_text: String,
    #[serde(default)]
    details: Option<Details>,
}

/// Cuts the stop sequence TGI left at the end of the text.
fn strip_stop<'t>(text: &'t str, stops: &[String]) -> &'t str {
    stops
        .iter()
        .filter(|s| !s.is_empty() && text.ends_with(s.as_str()))
        .map(|s| &text[..text.len() - s.len()])
        .min_by_key(|t| t.len())
        .unwrap_or(text)
}

/// Token counts TGI sent as response headers (`x-prompt-tokens`, `x-generated-tokens`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderCounts {
    pub prompt: Option<u64>,
    pub generated: Option<u64>,
    /// `x-queue-time` and `x-inference-time`, in milliseconds.
    pub queue_ms: Option<u64>,
    pub inference_ms: Option<u64>,
}

/// A complete `/generate` answer as an OpenAI completion of `prepared.shape`.
pub fn to_answer(
    raw: &[u8],
    prepared: &Prepared,
    counts: HeaderCounts,
    id: &str,
    model: &str,
) -> Result<(Bytes, Usage), serde_json::Error> {
    let g: Generated = serde_json::from_slice(raw)?;
    let details = g.details.unwrap_or_default();
    let text = if details.stopped_by_sequence() {
        strip_stop(&g.generated_text, &prepared.stops)
    } else {
        &g.generated_text
    };
    let prompt = counts.prompt;
    let completion = details.generated_tokens.or(counts.generated);
    let mut usage = match (prompt, completion) {
        (Some(p), Some(c)) => Usage::new(p, c),
        (p, c) => Usage::estimated(
            p.unwrap_or(prepared.prompt_estimate),
            c.unwrap_or_else(|| estimate::tokens(&g.generated_text)),
        ),
    };
    let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or(0));
    usage.reported_time.queue = ms(counts.queue_ms);
    usage.reported_time.generation = ms(counts.inference_ms);
    let reason = details.finish_reason();
    let body = match prepared.shape {
        Shape::Chat => json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": reason}],
            "usage": usage,
        }),
        Shape::Text => json!({
            "id": format!("cmpl-{id}"), "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}],
            "usage": usage,
        }),
    };
    Ok((Bytes::from(serde_json::to_vec(&body)?), usage))
}

/// TGI's `{"error": "...", "error_type": "..."}` (TEI's too, with PascalCase types).
#[derive(Deserialize)]
struct TgiError {
    error: Value,
    #[serde(default)]
    error_type: Option<String>,
}

/// An error body as the client's error: `status` is the upstream's, or
/// `None` for an event in a stream, whose meaning comes from its type alone.
pub fn error(status: Option<StatusCode>, raw: &[u8], provider: &str) -> ApiError {
    let parsed = serde_json::from_slice::<TgiError>(raw).ok();
    let message = match parsed.as_ref().map(|e| &e.error) {
        Some(Value::String(m)) => m.clone(),
        // The Messages API's mid-stream shape: `{"error": {"message", "http_status_code"}}`.
        Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => format!(
            "provider `{provider}` failed (status {})",
            status.map_or(0, |s| s.as_u16())
        ),
    };
    let error_type = parsed.and_then(|e| e.error_type).map(|t| t.to_ascii_lowercase());
    let status = match (status, error_type.as_deref()) {
        (Some(s), _) => client_status(s),
        (None, Some("overloaded")) => StatusCode::TOO_MANY_REQUESTS,
        (None, Some("validation" | "tokenizer" | "template_error" | "missing_template_variable" | "empty")) => {
            StatusCode::BAD_REQUEST
        }
        (None, _) => StatusCode::BAD_GATEWAY,
    };
    let mut api = ApiError::new(status, kind_for(status), message);
    api.code = error_type;
    api
}

/// One `/generate_stream` event.
#[derive(Deserialize)]
struct TokenEvent {
    #[serde(default)]
    token: Option<Token>,
    #[serde(default)]
    generated_text: Option<String>,
    #[serde(default)]
    details: Option<Details>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    text: String,
    #[serde(default)]
    special: bool,
}

pub enum Step {
    Emit(Vec<StreamEvent>),
    Done(Vec<StreamEvent>),
    Failed(ApiError),
}

/// Turns `/generate_stream` events into OpenAI chunks of `shape`.
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    shape: Shape,
    stops: Vec<String>,
    prompt_estimate: u64,
    /// Text that may be the start of a stop sequence, not yet sent.
    held: String,
    started: bool,
    /// Token events seen: the completion count when `details` is missing.
    tokens: u64,
}

impl StreamTranslator {
    pub fn new(prepared: &Prepared, id: &str, model: &str) -> Self {
        let prefix = match prepared.shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        StreamTranslator {
            id: format!("{prefix}-{id}"),
            model: model.to_owned(),
            created: now(),
            shape: prepared.shape,
            stops: prepared.stops.clone(),
            prompt_estimate: prepared.prompt_estimate,
            held: String::new(),
            started: false,
            tokens: 0,
        }
    }

    fn object(&self) -> &'static str {
        match self.shape {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        }
    }

    fn chunk(&self, text: Option<&str>, finish_reason: Option<&str>) -> StreamEvent {
        let choice = match self.shape {
            Shape::Chat => {
                let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
            Shape::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason})
            }
        };
        let body = json!({"id": self.id, "object": self.object(), "created": self.created, "model": self.model, "choices": [choice]});
        StreamEvent::chunk(
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            text.is_some_and(|t| !t.is_empty()),
        )
    }

    /// How many bytes at the end of the held text could begin a stop sequence.
    fn undecided_tail(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(at, _)| at)
                    .chain(std::iter::once(stop.len()))
                    .filter(|&len| self.held.ends_with(&stop[..len]))
            })
            .max()
            .unwrap_or(0)
    }

    pub fn step(&mut self, data: &[u8]) -> Result<Step, serde_json::Error> {
        let event: TokenEvent = serde_json::from_slice(data)?;
        if event.error.is_some() {
            return Ok(Step::Failed(error(None, data, "huggingface")));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if self.shape == Shape::Chat {
                let body = json!({"id": self.id, "object": self.object(), "created": self.created, "model": self.model,
                                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]});
                out.push(StreamEvent::chunk(Bytes::from(serde_json::to_vec(&body)?), false));
            }
        }
        if let Some(token) = &event.token {
            self.tokens += 1;
            // Special tokens (EOS, end of turn) are not text.
            if !token.special && !token.text.is_empty() {
                self.held.push_str(&token.text);
                let ready = self.held.len() - self.undecided_tail();
                if ready > 0 {
                    let text: String = self.held.drain(..ready).collect();
                    out.push(self.chunk(Some(&text), None));
                }
            }
        }
        let Some(generated) = event.generated_text else {
            return Ok(Step::Emit(out));
        };
        let details = event.details.unwrap_or_default();
        let mut rest = std::mem::take(&mut self.held);
        if details.stopped_by_sequence() {
            let kept = strip_stop(&rest, &self.stops).len();
            rest.truncate(kept);
        }
        if !rest.is_empty() {
            out.push(self.chunk(Some(&rest), None));
        }
        out.push(self.chunk(None, Some(details.finish_reason())));
        let usage = match (details.input_length, details.generated_tokens) {
            (Some(p), Some(c)) => Usage::new(p, c),
            (p, c) => Usage::estimated(
                p.unwrap_or(self.prompt_estimate),
                c.unwrap_or(self.tokens.max(estimate::tokens(&generated))),
            ),
        };
        let body = json!({"id": self.id, "object": self.object(), "created": self.created, "model": self.model, "choices": [], "usage": usage});
        out.push(StreamEvent::usage(Bytes::from(serde_json::to_vec(&body)?), usage));
        Ok(Step::Done(out))
    }
}

/// An embeddings request → TEI's `/embed`.
pub fn to_embed_request(req: &EmbeddingsRequest) -> Result<Value, ApiError> {
    let texts = match &req.input {
        Value::String(_) => req.input.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => req.input.clone(),
        _ => return Err(unsupported("TEI's /embed takes text, not token arrays", "input")),
    };
    if req.dimensions.is_some() {
        return Err(unsupported(
            "TEI's /embed serves the model's own dimensions: `dimensions` is not supported",
            "dimensions",
        ));
    }
    Ok(json!({"inputs": texts, "truncate": true}))
}

/// TEI's bare `[[f32]]` as OpenAI's embeddings list; tokens from `x-compute-tokens` or estimated.
pub fn to_embeddings(
    raw: &[u8],
    req: &EmbeddingsRequest,
    compute_tokens: Option<u64>,
    model: &str,
) -> Result<(Bytes, Usage), serde_json::Error> {
    let vectors: Vec<Vec<f32>> = serde_json::from_slice(raw)?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| embeddings::entry_f32(index, v, req.encoding_format))
        .collect();
    let usage = match compute_tokens {
        Some(t) => Usage::new(t, 0),
        None => {
            let texts = match &req.input {
                Value::String(s) => estimate::tokens(s),
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(estimate::tokens).sum(),
                _ => 0,
            };
            Usage::estimated(texts, 0)
        }
    };
    let body = embeddings::list(data, model, usage.prompt_tokens);
    Ok((Bytes::from(serde_json::to_vec(&body)?), usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_fixture_request_translates_exactly() {
        let req = chat(
            json!({"model": "llama", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                              "max_tokens": 20, "temperature": 0.2, "top_p": 0.95, "stop": "\n\n", "seed": 42}),
        );
        let mut expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/tgi/generate_request.json")).unwrap();
        // The fixture's prompt starts with the BOS token, which TGI's tokenizer adds itself (see `template`).
        let inputs = expected["inputs"]
            .as_str()
            .unwrap()
            .strip_prefix("<|begin_of_text|>")
            .unwrap()
            .to_owned();
        expected["inputs"] = json!(inputs);
        let got = to_generate_request(&req, ChatTemplate::Llama3).unwrap();
        assert_eq!(
            got.body,
            expected,
            "{}",
            serde_json::to_string_pretty(&got.body).unwrap()
        );
        assert_eq!(got.stops, ["\n\n"]);
    }

    #[test]
    fn greedy_json_images_and_rejections() {
        let req = chat(
            json!({"model": "m", "temperature": 0, "top_p": 1.0, "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}, {"type": "text", "text": "What is it?"}]}]}),
        );
        let got = to_generate_request(&req, ChatTemplate::Chatml).unwrap();
        assert_eq!(
            got.body["parameters"],
            json!({"do_sample": false, "grammar": {"type": "json", "value": {"type": "object"}}, "details": true})
        );
        assert_eq!(
            got.body["inputs"],
            "<|im_start|>user\n![](https://x/cat.png)What is it?<|im_end|>\n<|im_start|>assistant\n"
        );
        let tools = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
        );
        assert_eq!(
            to_generate_request(&tools, ChatTemplate::Chatml)
                .unwrap_err()
                .param
                .as_deref(),
            Some("tools")
        );
        let n = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}));
        assert_eq!(to_generate_request(&n, ChatTemplate::Chatml).unwrap_err().status, 400);
        let long = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "a".repeat(257)}));
        assert_eq!(
            to_generate_request(&long, ChatTemplate::Chatml)
                .unwrap_err()
                .param
                .as_deref(),
            Some("stop")
        );
        let many = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}),
        );
        assert_eq!(
            to_generate_request(&many, ChatTemplate::Chatml)
                .unwrap_err()
                .param
                .as_deref(),
            Some("stop")
        );
    }

    #[test]
    fn the_fixture_answer_translates_with_header_and_detail_counts() {
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let prepared = to_generate_request(&req, ChatTemplate::Llama3).unwrap();
        let raw = include_bytes!("../../../tests/fixtures/tgi/generate_response.json");
        let counts = HeaderCounts {
            prompt: Some(17),
            generated: Some(8),
            queue_ms: Some(3),
            inference_ms: Some(120),
        };
        let (body, usage) = to_answer(raw, &prepared, counts, "r1", "llama").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Paris is the capital of France.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.estimated),
            (17, 8, false)
        );
        assert_eq!(usage.reported_time.generation, Duration::from_millis(120));
        // Without the header, the prompt is estimated and marked so.
        let (_, usage) = to_answer(raw, &prepared, HeaderCounts::default(), "r1", "llama").unwrap();
        assert!(usage.estimated);
        assert_eq!(usage.completion_tokens, 8, "details still count the completion");
        assert_eq!(usage.prompt_tokens, prepared.prompt_estimate);
    }

    #[test]
    fn a_matched_stop_sequence_is_cut_even_when_split_across_tokens() {
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["END", "##"]}));
        let prepared = to_generate_request(&req, ChatTemplate::Chatml).unwrap();
        let mut t = StreamTranslator::new(&prepared, "r", "m");
        let mut text = String::new();
        let events = [
            r#"{"index":1,"token":{"id":1,"text":"one E","logprob":0,"special":false},"generated_text":null,"details":null}"#,
            r#"{"index":2,"token":{"id":2,"text":"ND? no, two E","logprob":0,"special":false},"generated_text":null,"details":null}"#,
            r#"{"index":3,"token":{"id":3,"text":"N","logprob":0,"special":false},"generated_text":null,"details":null}"#,
            r#"{"index":4,"token":{"id":4,"text":"D","logprob":0,"special":false},"generated_text":"one END? no, two END","details":{"finish_reason":"stop_sequence","generated_tokens":4,"seed":null,"input_length":3}}"#,
        ];
        let mut usage = None;
        for e in events {
            let out = match t.step(e.as_bytes()).unwrap() {
                Step::Emit(out) | Step::Done(out) => out,
                Step::Failed(e) => panic!("{}", e.message),
            };
            for ev in out {
                let v: Value = serde_json::from_slice(&ev.data).unwrap();
                if let Some(c) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                    text.push_str(c);
                }
                usage = usage.or(ev.usage);
            }
        }
        assert_eq!(text, "one END? no, two ");
        assert_eq!(usage, Some(Usage::new(3, 4)));
    }

    #[test]
    fn tgi_and_tei_errors_keep_their_meaning() {
        let overloaded = br#"{"error":"Model is overloaded","error_type":"overloaded"}"#;
        let e = error(Some(StatusCode::TOO_MANY_REQUESTS), overloaded, "hf");
        assert_eq!(
            (e.status, e.kind.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
        );
        let tei = br#"{"error":"Input validation error","error_type":"Validation"}"#;
        let e = error(Some(StatusCode::UNPROCESSABLE_ENTITY), tei, "hf");
        assert_eq!(
            (e.status, e.code.as_deref()),
            (StatusCode::BAD_REQUEST, Some("validation"))
        );
        let generation = br#"{"error":"CUDA out of memory","error_type":"generation"}"#;
        assert_eq!(
            error(Some(StatusCode::FAILED_DEPENDENCY), generation, "hf").status,
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn tei_vectors_become_openai_embeddings() {
        let req: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "bge", "input": ["a b c d", "e"]})).unwrap();
        assert_eq!(
            to_embed_request(&req).unwrap(),
            json!({"inputs": ["a b c d", "e"], "truncate": true})
        );
        let raw = include_bytes!("../../../tests/fixtures/tei/embed_response.json");
        let (body, usage) = to_embeddings(raw, &req, Some(14), "bge").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(
            v["data"][0]["embedding"][0].as_f64().map(|x| (x * 1e4).round()),
            Some(227.0)
        );
        assert_eq!(usage, Usage::new(14, 0));
        let (_, usage) = to_embeddings(raw, &req, None, "bge").unwrap();
        assert_eq!(usage, Usage::estimated(3, 0));
    }
}
