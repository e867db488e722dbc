//! The floor for any HTTP proxy on this machine: a bare hyper pass-through
//! that parses nothing. It forwards each request (method, path, headers, body)
//! to one upstream over pooled keep-alive connections and streams the answer
//! back. `bench/run.sh` measures it beside tollgate, so tollgate's overhead is
//! read against what a proxy cannot avoid (two more socket hops, two more
//! HTTP parses, and on two cores the cost of waking the other core).
//!
//! ```text
//! cargo run --release --example bare_proxy -- --listen 127.0.0.1:9200 --upstream 127.0.0.1:9100
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<bytes::Bytes, hyper::Error>;

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.next()?;
    args.next()
}

#[tokio::main]
async fn main() {
    let listen: SocketAddr = arg("--listen").and_then(|a| a.parse().ok()).expect("--listen ADDR");
    let upstream: SocketAddr = arg("--upstream").and_then(|a| a.parse().ok()).expect("--upstream ADDR");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(forward(&client, upstream, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{upstream}{path}").parse::<Uri>().expect("valid URI");
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(_) => {
            let mut resp = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}
