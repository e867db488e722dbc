//! Upstreams over TLS: a mock HTTPS upstream with its own CA, reached through
//! the provider's `ca_file`, negotiating HTTP/2 by ALPN.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{TestGateway, fixture_json};
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

struct TlsUpstream {
    port: u16,
    ca_pem: String,
    versions: Arc<Mutex<Vec<Version>>>,
}

async fn tls_upstream() -> TlsUpstream {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(req.version());
                    let body = fixture_json("openai/chat_response.json").to_string();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsUpstream {
        port,
        ca_pem: cert.pem(),
        versions,
    }
}

fn config(port: u16, ca_file: Option<&str>) -> String {
    let ca = ca_file.map(|f| format!(", ca_file: {f}")).unwrap_or_default();
    format!(
        "providers:\n  tls: {{ kind: openai, base_url: https://127.0.0.1:{port}/v1{ca} }}\nmodels:\n  - {{ name: m, provider: tls }}\n"
    )
}

fn chat() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_tls_upstream_with_a_private_ca_is_reached_over_http2() {
    let up = tls_upstream().await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &up.ca_pem).unwrap();
    let gw = TestGateway::start(&config(up.port, Some(ca.path().to_str().unwrap())), &[]).await;
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            fixture_json("openai/chat_response.json")
        );
    }
    assert_eq!(
        *up.versions.lock().unwrap(),
        [Version::HTTP_2, Version::HTTP_2],
        "ALPN chose h2"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_502_that_names_no_detail() {
    let up = tls_upstream().await;
    let gw = TestGateway::start(&config(up.port, None), &[]).await;
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("certificate") && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert!(up.versions.lock().unwrap().is_empty(), "no request got through");
}

#[test]
fn a_missing_or_empty_ca_file_is_a_config_error() {
    let errs = tollgate::config::parse(&config(1, Some("/nonexistent/ca.pem")), &|_| None).unwrap_err();
    assert_eq!(errs[0].path, "providers.tls.ca_file");
    let empty = tempfile::NamedTempFile::new().unwrap();
    let errs = tollgate::config::parse(&config(1, Some(empty.path().to_str().unwrap())), &|_| None).unwrap_err();
    assert!(errs[0].message.contains("no PEM certificate"), "{}", errs[0].message);
}
