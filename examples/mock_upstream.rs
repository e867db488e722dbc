//! A tiny, fast mock of the `OpenAI` chat completions API, for benchmarking
//! tollgate (see `bench/run.sh` and `docs/benchmarks.md`). Not a test double:
//! it answers every `POST …/chat/completions` with the same precomputed bytes.
//!
//! ```text
//! cargo run --release --example mock_upstream -- --listen 127.0.0.1:9100 [--chunks 20] [--slow-ms 0]
//! ```
//!
//! * Without `"stream":true` in the body: a fixed ~500-byte `chat.completion`
//!   JSON with usage.
//! * With `"stream":true`: an SSE stream like `OpenAI`'s: `--chunks` content
//!   chunks, a finish chunk, a usage chunk (`"choices":[]`), then
//!   `data: [DONE]`. With `--slow-ms N` it waits N ms before each event after
//!   the first (to hold many streams open); by default it sends everything at once.
//!
//! The request body is only scanned for `"stream"` followed by `true`; no JSON
//! parsing. One single-threaded runtime, HTTP/1.1 keep-alive, `TCP_NODELAY`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Sleep;

const ID: &str = "chatcmpl-BmK3c9yQZ0xTq7PjR2dWv8sLhE4Nf";
const CREATED: u64 = 1_750_000_000;
const MODEL: &str = "gpt-4o-mini-2024-07-18";
const FINGERPRINT: &str = "fp_34a54ae93c";
const WORDS: &[&str] = &[
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ",", " and", " then", " it",
    " rests", " beneath", " an", " old", " oak", " tree", ".",
];

struct Config {
    listen: SocketAddr,
    chunks: usize,
    slow: Option<Duration>,
}

fn usage() -> ! {
    eprintln!("usage: mock_upstream --listen 127.0.0.1:PORT [--chunks 20] [--slow-ms 0]");
    std::process::exit(2);
}

fn parse_args() -> Config {
    let mut listen = None;
    let mut chunks = 20usize;
    let mut slow_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = Some(value().parse().unwrap_or_else(|_| usage())),
            "--chunks" => chunks = value().parse().unwrap_or_else(|_| usage()),
            "--slow-ms" => slow_ms = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(), // including -h/--help
        }
    }
    Config {
        listen: listen.unwrap_or_else(|| usage()),
        chunks,
        slow: (slow_ms > 0).then(|| Duration::from_millis(slow_ms)),
    }
}

/// Everything the server sends, built once.
struct Answers {
    completion: Bytes,
    /// One `data: …\n\n` frame per SSE event, `[DONE]` last.
    events: Arc<[Bytes]>,
    slow: Option<Duration>,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn completion_json() -> String {
    // A short sentence keeps the answer near 500 bytes, like a typical small completion.
    let content: String = WORDS[..9].concat();
    format!(
        concat!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"{model}","#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{content},"refusal":null,"annotations":[]}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":24,"completion_tokens":{n},"total_tokens":{total},"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0}}}},"#,
            r#""service_tier":"default","system_fingerprint":"{fp}"}}"#
        ),
        id = ID,
        created = CREATED,
        model = MODEL,
        content = json_str(&content),
        n = 10,
        total = 34,
        fp = FINGERPRINT,
    )
}

fn chunk_json(choices: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"{ID}","object":"chat.completion.chunk","created":{CREATED},"model":"{MODEL}","service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":{choices},"usage":{usage}}}"#
    )
}

fn sse(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn stream_events(chunks: usize) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(chunks + 3);
    for i in 0..chunks {
        let word = json_str(WORDS[i % WORDS.len()]);
        let delta = if i == 0 {
            format!(r#"{{"role":"assistant","content":{word},"refusal":null}}"#)
        } else {
            format!(r#"{{"content":{word}}}"#)
        };
        let choices = format!(r#"[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]"#);
        events.push(sse(&chunk_json(&choices, "null")));
    }
    events.push(sse(&chunk_json(
        r#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#,
        "null",
    )));
    let usage = format!(
        concat!(
            r#"{{"prompt_tokens":24,"completion_tokens":{n},"total_tokens":{total},"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
        ),
        n = chunks,
        total = 24 + chunks
    );
    events.push(sse(&chunk_json("[]", &usage)));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// `"stream"`, optional whitespace, `:`, optional whitespace, `true`.
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut rest = body;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let mut i = 0;
        while i < rest.len() && rest[i].is_ascii_whitespace() {
            i += 1;
        }
        if rest.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while i < rest.len() && rest[i].is_ascii_whitespace() {
            i += 1;
        }
        if rest[i..].starts_with(b"true") {
            return true;
        }
    }
    false
}

/// The SSE answer: precomputed frames, all at once or paced by `slow`.
struct EventBody {
    events: Arc<[Bytes]>,
    next: usize,
    slow: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.next >= this.events.len() {
            return Poll::Ready(None);
        }
        if let (Some(gap), true) = (this.slow, this.next > 0) {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let at = tokio::time::Instant::now() + gap;
            sleep.as_mut().reset(at);
        }
        let frame = this.events[this.next].clone();
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.events.len()
    }
}

enum Reply {
    Full(Full<Bytes>),
    Events(EventBody),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(b) => Pin::new(b).poll_frame(cx),
            Reply::Events(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Full(b) => b.is_end_stream(),
            Reply::Events(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Reply::Full(b) => b.size_hint(),
            Reply::Events(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Reply> {
    let mut resp = Response::new(Reply::Full(Full::new(Bytes::from_static(text.as_bytes()))));
    *resp.status_mut() = status;
    resp
}

async fn handle(answers: Arc<Answers>, req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    if req.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n"));
    }
    if !req.uri().path().ends_with("/chat/completions") {
        return Ok(plain(StatusCode::NOT_FOUND, "only /v1/chat/completions\n"));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "bad body\n")),
    };
    let resp = if wants_stream(&body) {
        let mut resp = Response::new(Reply::Events(EventBody {
            events: answers.events.clone(),
            next: 0,
            slow: answers.slow,
            sleep: None,
        }));
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    } else {
        let mut resp = Response::new(Reply::Full(Full::new(answers.completion.clone())));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    };
    Ok(resp)
}

fn main() {
    let cfg = parse_args();
    let answers = Arc::new(Answers {
        completion: Bytes::from(completion_json()),
        events: stream_events(cfg.chunks).into(),
        slow: cfg.slow,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(cfg.listen).await.unwrap_or_else(|e| {
            eprintln!("mock_upstream: cannot listen on {}: {e}", cfg.listen);
            std::process::exit(1);
        });
        eprintln!(
            "mock_upstream listening on {} ({} chunks, {} bytes non-streamed, {} ms between events)",
            listener.local_addr().map_or(cfg.listen, |a| a),
            cfg.chunks,
            answers.completion.len(),
            cfg.slow.map_or(0, |d| d.as_millis()),
        );
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    eprintln!("mock_upstream: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let answers = answers.clone();
            tokio::task::spawn(async move {
                let service = service_fn(move |req| handle(answers.clone(), req));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}
