//! Mock upstreams that speak each provider's exact wire format, driven by
//! the prompt, so one scenario can run against every provider.
//!
//! One server answers every format by path:
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/embeddings`
//!   (Azure: `/openai/deployments/{deployment}/…`)
//! - Anthropic: `POST /v1/messages`
//! - Gemini: `POST /v1beta/models/{model}:generateContent`,
//!   `:streamGenerateContent?alt=sse`, `:batchEmbedContents`
//! - Ollama: `POST /api/chat`, `POST /api/embed`, `GET /api/tags`
//! - TGI: `POST /generate`, `POST /generate_stream`; TEI: `POST /embed`;
//!   `POST /` as either's compat route (TGI when the body has `parameters`
//!   or `stream`)
//!
//! The first word of the last user message picks the scenario:
//! - `echo`: the answer is a JSON object of what the mock understood of the
//!   request (`system`, `json_mode`, `images`, `stops`, `max_tokens`,
//!   `tools`, `temperature`, `user_text`), so a test sees a translation arrive;
//! - `tool`: a call of the first declared tool with
//!   `{"city":"Paris","unit":"celsius"}`, its arguments streamed in pieces
//!   where the format streams them;
//! - `stop`: "one two three", ended by the first stop sequence asked for;
//! - `length`: "one two", cut at the token limit;
//! - `utf8`: "héllo wörld — 日本語 🎉", streamed with every multi-byte
//!   character split across two socket writes;
//! - `fail`: an error before any byte (rate limited or overloaded, the
//!   format's own error body and retry hint);
//! - `failmid`: "partial answer" streamed, then the format's mid-stream error;
//! - anything else: "Hello from <format>.".
//!
//! Usage is always 21 prompt tokens (Anthropic: 16 + 5 read from cache) and
//! 5 completion tokens. Embeddings are `[characters, 0.5, -0.25]` per input.
//! Shared by the Rust tests (in process) and `examples/mock_providers.rs`
//! (for the official client packages in tests/python).
#![allow(dead_code)]

mod anthropic;
mod gemini;
mod ollama;
mod openai;
mod tgi;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const PROMPT_TOKENS: u64 = 21;
pub const CACHED_TOKENS: u64 = 5;
pub const COMPLETION_TOKENS: u64 = 5;
pub const RETRY_AFTER_SECS: u64 = 7;
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris","unit":"celsius"}"#;
pub const UTF8_TEXT: &str = "héllo wörld — 日本語 🎉";

/// What the mock understood of a request, whatever its format.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub model: String,
    pub stream: bool,
    pub system: String,
    pub user_text: String,
    pub json_mode: bool,
    /// Each image as its MIME type (inline data) or its URL.
    pub images: Vec<String>,
    pub stops: Vec<String>,
    pub max_tokens: Option<u64>,
    pub tools: Vec<String>,
    pub temperature: Option<f64>,
    /// OpenAI: the client asked for the usage chunk.
    pub include_usage: bool,
    /// OpenAI: `stop` came as one string (TGI's Messages API refuses that).
    pub stop_was_text: bool,
}

impl Ask {
    fn echo(&self) -> String {
        json!({
            "system": self.system, "user_text": self.user_text, "json_mode": self.json_mode,
            "images": self.images, "stops": self.stops, "max_tokens": self.max_tokens,
            "tools": self.tools, "temperature": self.temperature,
        })
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    /// Ended by this stop sequence (TGI and Anthropic say which).
    StopSequence(String),
    ToolUse,
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments JSON in the pieces a streaming upstream sends.
    pub pieces: Vec<String>,
}

impl ToolCall {
    pub fn arguments(&self) -> String {
        self.pieces.concat()
    }
}

/// What the mock answers, before it is put in a format.
#[derive(Debug, Clone)]
pub struct Answer {
    pub pieces: Vec<String>,
    pub tool: Option<ToolCall>,
    pub finish: Finish,
    pub fail_before: bool,
    /// Fail after sending the pieces.
    pub fail_midway: bool,
    /// Split every multi-byte character across two writes.
    pub split_utf8: bool,
}

impl Answer {
    pub fn text(&self) -> String {
        self.pieces.concat()
    }
}

fn answer(ask: &Ask, wire: &str) -> Answer {
    let scenario = ask
        .user_text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut a = Answer {
        pieces: words(&["Hello", " from", " ", wire, "."]),
        tool: None,
        finish: Finish::Stop,
        fail_before: false,
        fail_midway: false,
        split_utf8: false,
    };
    match scenario.as_str() {
        "echo" => {
            let echo = ask.echo();
            let mid = echo.len() / 2;
            let mid = (mid..echo.len())
                .find(|&i| echo.is_char_boundary(i))
                .unwrap_or(echo.len());
            a.pieces = vec![echo[..mid].to_owned(), echo[mid..].to_owned()];
        }
        "tool" => match ask.tools.first() {
            Some(name) => {
                a.pieces = Vec::new();
                a.finish = Finish::ToolUse;
                a.tool = Some(ToolCall {
                    id: "call_mock_1".into(),
                    name: name.clone(),
                    pieces: words(&[r#"{"city":"#, r#""Paris","#, r#""unit":"celsius"}"#]),
                });
            }
            None => a.pieces = words(&["no tools were declared"]),
        },
        "stop" => {
            a.pieces = words(&["one", " two", " three"]);
            a.finish = Finish::StopSequence(ask.stops.first().cloned().unwrap_or_else(|| "END".into()));
        }
        "length" => {
            a.pieces = words(&["one", " two"]);
            a.finish = Finish::Length;
        }
        "utf8" => {
            a.pieces = words(&["héllo", " wörld", " — ", "日本語", " 🎉"]);
            a.split_utf8 = true;
        }
        "fail" => a.fail_before = true,
        "failmid" => {
            a.pieces = words(&["partial", " answer"]);
            a.fail_midway = true;
        }
        _ => {}
    }
    a
}

/// The mock's embedding of one input.
pub fn embedding(text: &str) -> Vec<f32> {
    vec![text.chars().count() as f32, 0.5, -0.25]
}

/// A format's reply.
pub enum Out {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    },
    /// A streamed body: each frame its own socket write.
    Frames {
        content_type: &'static str,
        frames: Vec<Bytes>,
    },
}

impl Out {
    fn ok(body: Value) -> Self {
        Out::Json {
            status: 200,
            headers: vec![],
            body,
        }
    }

    fn status(status: u16, body: Value) -> Self {
        Out::Json {
            status,
            headers: vec![],
            body,
        }
    }
}

/// Splits frames so that every multi-byte character straddles two writes.
fn split_utf8(frames: Vec<Bytes>) -> Vec<Bytes> {
    let mut out = Vec::new();
    for frame in frames {
        let mut start = 0;
        for (i, b) in frame.iter().enumerate() {
            // A lead byte of a multi-byte character: cut right after it.
            if *b >= 0xC0 {
                out.push(frame.slice(start..=i));
                start = i + 1;
            }
        }
        if start < frame.len() {
            out.push(frame.slice(start..));
        }
    }
    out
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// The mock on a loopback port, recording every request.
#[derive(Clone)]
pub struct WireMock {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl WireMock {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve(listener, received.clone()));
        WireMock { addr, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().pop().expect("the mock received no request")
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, received: Arc<Mutex<Vec<Received>>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, received.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, received: Arc<Mutex<Vec<Received>>>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let out = route(&parts.method, &path, parts.uri.query().unwrap_or(""), &body);
    Ok(render(out))
}

fn route(method: &http::Method, path: &str, query: &str, body: &Value) -> Out {
    if method == http::Method::GET {
        return match path {
            "/api/tags" => ollama::tags(),
            _ => Out::status(404, json!({"error": "not found"})),
        };
    }
    match path {
        "/v1/chat/completions" => chat(openai::parse(body), "openai", openai::render),
        "/v1/embeddings" => openai::embeddings(body),
        "/v1/messages" => chat(anthropic::parse(body), "anthropic", anthropic::render),
        "/api/chat" => chat(ollama::parse(body), "ollama", ollama::render),
        "/api/embed" => ollama::embeddings(body),
        "/generate" | "/generate_stream" => {
            let mut ask = tgi::parse(body);
            ask.stream = path == "/generate_stream";
            chat(ask, "tgi", tgi::render)
        }
        "/embed" => tgi::embeddings(body),
        // TGI's compat route picks by the body's `stream` (and wraps a complete
        // answer in a list); TEI serves embeddings at its root too.
        "/" if body.get("parameters").is_some() || body.get("stream").is_some() => {
            let mut ask = tgi::parse(body);
            ask.stream = body["stream"].as_bool().unwrap_or(false);
            match chat(ask, "tgi", tgi::render) {
                Out::Json {
                    status: 200,
                    headers,
                    body,
                } => Out::Json {
                    status: 200,
                    headers,
                    body: json!([body]),
                },
                out => out,
            }
        }
        "/" => tgi::embeddings(body),
        // Azure OpenAI: the deployment in the path, OpenAI's bodies.
        _ if path.starts_with("/openai/deployments/") && path.ends_with("/chat/completions") => {
            chat(openai::parse(body), "openai", openai::render)
        }
        _ if path.starts_with("/openai/deployments/") && path.ends_with("/embeddings") => openai::embeddings(body),
        _ => match path.strip_prefix("/v1beta/models/").and_then(|m| m.split_once(':')) {
            Some((model, "generateContent")) => chat(gemini::parse(body, model, false), "gemini", gemini::render),
            Some((model, "streamGenerateContent")) if query.contains("alt=sse") => {
                chat(gemini::parse(body, model, true), "gemini", gemini::render)
            }
            Some((_, "batchEmbedContents")) => gemini::embeddings(body),
            _ => Out::status(404, json!({"error": format!("no route for {path}")})),
        },
    }
}

fn chat(ask: Ask, wire: &str, render: fn(&Ask, &Answer) -> Out) -> Out {
    let answer = answer(&ask, wire);
    match render(&ask, &answer) {
        Out::Frames { content_type, frames } if answer.split_utf8 => Out::Frames {
            content_type,
            frames: split_utf8(frames),
        },
        out => out,
    }
}

fn render(out: Out) -> Response<Body> {
    match out {
        Out::Json { status, headers, body } => {
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json");
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            resp.body(Full::new(Bytes::from(body.to_string())).boxed()).unwrap()
        }
        Out::Frames { content_type, frames } => {
            // A short gap between frames makes each its own read on the other side.
            let frames = stream::unfold(frames.into_iter(), |mut it| async move {
                let frame = it.next()?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                Some((Ok::<_, Infallible>(Frame::data(frame)), it))
            });
            Response::builder()
                .header("content-type", content_type)
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap()
        }
    }
}

/// The text of an OpenAI-style or Anthropic-style content: a string or text parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The names of declared tools, each found at `pointer` in its declaration.
fn tool_names(tools: &Value, pointer: &str) -> Vec<String> {
    tools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer(pointer).and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// SSE `data: <json>` frame.
fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}
