//! Test harness: a scriptable mock OpenAI upstream and an in-process gateway,
//! both on real loopback sockets.
#![allow(dead_code)]

pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Sends a request and reads its JSON answer, whatever its status.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send()
        .await
        .expect("the request is sent")
        .json()
        .await
        .expect("the answer is JSON")
}

pub fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).unwrap()
}

/// What the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Script {
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
        delay: Duration,
    },
    /// SSE events (the `data:` payloads), `gap` between them; `done` adds `data: [DONE]`;
    /// `break_after` aborts the connection after that many events.
    Stream {
        events: Vec<String>,
        gap: Duration,
        done: bool,
        break_after: Option<usize>,
    },
    /// An NDJSON body (Ollama): each line sent as its own chunk with `\n`.
    Ndjson { lines: Vec<String>, gap: Duration },
    /// Never answers.
    Hang,
}

impl Script {
    pub fn json(status: u16, body: Value) -> Self {
        Script::Json {
            status,
            body,
            headers: vec![],
            delay: Duration::ZERO,
        }
    }

    pub fn error_fixture(path: &str) -> Self {
        let f = fixture_json(path);
        let headers = f["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Script::Json {
            status: f["status"].as_u64().unwrap() as u16,
            body: f["body"].clone(),
            headers,
            delay: Duration::ZERO,
        }
    }

    /// The events of an `.sse` fixture, `[DONE]` excluded.
    pub fn sse_fixture(path: &str) -> Self {
        let events = fixture(path)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(str::to_owned)
            .collect();
        Script::Stream {
            events,
            gap: Duration::ZERO,
            done: true,
            break_after: None,
        }
    }
}

#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    /// Counts streamed bodies the gateway dropped before they were finished.
    dropped: watch::Receiver<usize>,
    /// Stream frames handed to the socket so far, over all streams.
    frames_sent: Arc<AtomicUsize>,
    /// TCP connections accepted so far.
    connections: Arc<AtomicUsize>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let scripts = Arc::new(Mutex::new(VecDeque::new()));
        let (dropped_tx, dropped) = watch::channel(0usize);
        let dropped_tx = Arc::new(dropped_tx);
        let frames_sent = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, s, f, c) = (
            received.clone(),
            scripts.clone(),
            frames_sent.clone(),
            connections.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, s, d, f) = (r.clone(), s.clone(), dropped_tx.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, r.clone(), s.clone(), d.clone(), f.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        MockUpstream {
            addr,
            received,
            scripts,
            dropped,
            frames_sent,
            connections,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn push(&self, script: Script) {
        self.scripts.lock().unwrap().push_back(script);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().pop().expect("the mock received a request")
    }

    pub fn frames_sent(&self) -> usize {
        self.frames_sent.load(Ordering::SeqCst)
    }

    /// Waits until a streamed body was dropped unfinished (the gateway hung up).
    pub async fn wait_dropped(&self, within: Duration) -> bool {
        let mut rx = self.dropped.clone();
        tokio::time::timeout(within, rx.wait_for(|n| *n > 0)).await.is_ok()
    }
}

type MockBody = BoxBody<Bytes, std::io::Error>;

async fn handle(
    req: Request<Incoming>,
    received: Arc<Mutex<Vec<Received>>>,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    dropped: Arc<watch::Sender<usize>>,
    frames_sent: Arc<AtomicUsize>,
) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let stream = body["stream"].as_bool().unwrap_or(false);
    received.lock().unwrap().push(Received {
        path: path.clone(),
        query,
        headers,
        body,
    });
    let script = scripts
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| default_script(&path, stream));
    Ok(match script {
        Script::Json {
            status,
            body,
            headers,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json");
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            resp.body(Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}).boxed())
                .unwrap()
        }
        Script::Stream {
            events,
            gap,
            done,
            break_after,
        } => {
            let mut frames: Vec<Result<Bytes, std::io::Error>> = events
                .iter()
                .map(|e| Ok(Bytes::from(format!("data: {e}\n\n"))))
                .collect();
            if let Some(n) = break_after {
                frames.truncate(n);
                frames.push(Err(std::io::Error::other("mock breaks the connection")));
            } else if done {
                frames.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
            }
            let total = frames.len();
            let guard = DropGuard {
                sent: 0,
                frames_sent,
                total,
                dropped,
            };
            let body = stream::unfold((frames.into_iter(), guard), move |(mut it, mut guard)| async move {
                let next = it.next()?;
                if guard.sent > 0 {
                    tokio::time::sleep(gap).await;
                }
                guard.sent += 1;
                guard.frames_sent.fetch_add(1, Ordering::SeqCst);
                Some((next.map(Frame::data), (it, guard)))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(body).boxed())
                .unwrap()
        }
        Script::Ndjson { lines, gap } => {
            let body = stream::unfold((lines.into_iter(), false), move |(mut it, started)| async move {
                let line = it.next()?;
                if started {
                    tokio::time::sleep(gap).await;
                }
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(line + "\n"))),
                    (it, true),
                ))
            });
            Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(StreamBody::new(body).boxed())
                .unwrap()
        }
        Script::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    })
}

/// Notes when a stream body is dropped before all its frames were sent.
struct DropGuard {
    sent: usize,
    frames_sent: Arc<AtomicUsize>,
    total: usize,
    dropped: Arc<watch::Sender<usize>>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.sent < self.total {
            self.dropped.send_modify(|n| *n += 1);
        }
    }
}

fn default_script(path: &str, stream: bool) -> Script {
    match (path.rsplit('/').next().unwrap_or(""), stream) {
        ("completions", true) if path.ends_with("chat/completions") => Script::sse_fixture("openai/chat_stream.sse"),
        ("completions", false) if path.ends_with("chat/completions") => {
            Script::json(200, fixture_json("openai/chat_response.json"))
        }
        ("completions", true) => Script::sse_fixture("openai/completions_stream.sse"),
        ("completions", false) => Script::json(200, fixture_json("openai/completions_response.json")),
        ("embeddings", _) => Script::json(200, fixture_json("openai/embeddings_response.json")),
        // The model list: what an active health check asks for.
        ("models", _) => Script::json(200, serde_json::json!({"object": "list", "data": []})),
        _ => Script::json(
            404,
            serde_json::json!({"error": {"message": "no such path in the mock", "type": "invalid_request_error"}}),
        ),
    }
}

/// A gateway running in this process on a real socket.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<tollgate::server::Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
    /// The ledger's writer, when the config has a ledger.
    pub writer: Option<tollgate::metering::ledger::Writer>,
}

impl TestGateway {
    /// Starts a gateway from YAML; `${VAR}` resolves from `env`.
    pub async fn start(yaml: &str, env: &[(&str, &str)]) -> Self {
        let vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cfg = tollgate::config::parse(yaml, &|name| vars.get(name).cloned())
            .unwrap_or_else(|e| panic!("bad test config: {e:?}"));
        let gateway = tollgate::server::Gateway::from_config(&cfg);
        let (ledger, writer) = match &cfg.ledger {
            Some(settings) => {
                let (l, w) = tollgate::metering::ledger::Ledger::open(settings, gateway.metrics.ledger_counters())
                    .await
                    .expect("the test ledger opens");
                (Some(l), Some(w))
            }
            None => (None, None),
        };
        // As `tollgate serve` does: a pool of its own, the schema migrated by the ledger's.
        let store = match &cfg.ledger {
            Some(settings) => Some(
                tollgate::keys::KeyStore::attach(&settings.url)
                    .await
                    .expect("the key store opens"),
            ),
            _ => None,
        };
        let gateway = Arc::new(gateway.with_ledger(ledger).with_store(store));
        tollgate::server::keys::load(&gateway)
            .await
            .expect("the managed keys load");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let gw = gateway.clone();
        let done = tokio::spawn(async move {
            tollgate::server::serve(listener, gw, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestGateway {
            addr,
            gateway,
            shutdown: Some(tx),
            done: Some(done),
            writer,
        }
    }

    /// Shuts down gracefully, then flushes the ledger: every row is written when this returns.
    pub async fn stop(&mut self) {
        self.shutdown();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(writer) = self.writer.take() {
            assert!(writer.finish(Duration::from_secs(10)).await, "the ledger flushed");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// POSTs JSON without a gateway key (for gateways configured without keys).
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Reads one sample's value from Prometheus text, e.g. `tollgate_requests_total{...}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
