//! End-to-end behaviour of the gateway over real sockets: a real tollgate
//! server in front of a scriptable mock OpenAI upstream.

mod common;

use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, fixture_json, json_of, metric, sse_data};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

const GW_KEY: &str = "tg-test-key-0123456789";
const UP_KEY: &str = "sk-upstream-secret-abcdef";
const AZ_KEY: &str = "az-upstream-secret-123456";

async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn setup() -> (MockUpstream, TestGateway) {
    setup_with("request_timeout: 5s").await
}

async fn setup_with(server_extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let dead = closed_port().await;
    let yaml = format!(
        r#"
server:
  listen: 127.0.0.1:0
  max_body: 64KiB
  max_header_bytes: 8KiB
  shutdown_grace: 5s
  {server_extra}
auth:
  keys: ["${{GW_KEY}}"]
providers:
  up:
    kind: openai
    base_url: {base}
    api_key: ${{UP_KEY}}
    headers: {{ x-org: team-a }}
    timeouts: {{ first_byte: 1s, idle: 1s }}
  az:
    kind: azure
    base_url: http://{addr}
    api_version: 2024-10-21
    api_key: ${{AZ_KEY}}
  dead:
    kind: openai
    base_url: http://127.0.0.1:{dead}/v1
  nokey:
    kind: openai
    base_url: {base}
    api_key: ${{NOT_SET_ANYWHERE}}
  sim:
    kind: simulated
    completion_tokens: 5
models:
  - name: gpt-test
    provider: up
    upstream_model: gpt-4o-mini-2024-07-18
    aliases: [fast]
  - name: azure-test
    provider: az
    upstream_model: my-deploy
  - name: dead-model
    provider: dead
  - name: nokey-model
    provider: nokey
  - name: sim
    provider: sim
"#,
        base = mock.base_url(),
        addr = mock.addr,
    );
    let gw = TestGateway::start(&yaml, &[("GW_KEY", GW_KEY), ("UP_KEY", UP_KEY), ("AZ_KEY", AZ_KEY)]).await;
    (mock, gw)
}

fn client() -> reqwest::Client {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {GW_KEY}")).unwrap(),
    );
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

/// POSTs a chat request with the gateway key.
async fn post_chat(gw: &TestGateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}]})
}

async fn assert_openai_error(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

// ---------- the happy paths ----------

#[tokio::test]
async fn chat_passes_through_exactly_what_the_client_sent() {
    let (mock, gw) = setup().await;
    let sent = json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}], "x_part_meta": {"k": 1}},
        ],
        "temperature": 0.2,
        "seed": 42,
        "logit_bias": {"50256": -100},
        "a_vendor_field": {"nested": [1, 2, 3]},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
    });
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-abc-123")
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    assert_eq!(resp.headers()["x-tollgate-backend"], "up/gpt-test");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        fixture_json("openai/chat_response.json"),
        "the upstream's answer is relayed unchanged"
    );

    let got = mock.last();
    assert_eq!(got.path, "/v1/chat/completions");
    let mut expected = sent.clone();
    expected["model"] = json!("gpt-4o-mini-2024-07-18");
    assert_eq!(got.body, expected, "only `model` is rewritten");
    assert_eq!(got.headers["authorization"], format!("Bearer {UP_KEY}"));
    assert_eq!(got.headers["x-org"], "team-a");
    assert_eq!(got.headers["x-request-id"], "req-abc-123");
    assert!(
        !got.headers
            .values()
            .any(|v| v.as_bytes().windows(GW_KEY.len()).any(|w| w == GW_KEY.as_bytes())),
        "the gateway key never goes upstream"
    );
    // The answer's usage is metered.
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="gpt-test",provider="up",type="prompt"}"#
        ),
        Some(91.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="gpt-test",provider="up",type="completion"}"#
        ),
        Some(9.0)
    );
}

#[tokio::test]
async fn streaming_relays_every_chunk_and_the_usage_chunk_when_asked() {
    let (mock, gw) = setup().await;
    let mut req = chat("gpt-test");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = post_chat(&gw, &req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let expected: Vec<String> = common::fixture("openai/chat_stream.sse")
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(sse_data(&text), expected, "byte-identical chunks, then [DONE]");
    assert_eq!(mock.last().body["stream_options"]["include_usage"], true);

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="gpt-test",provider="up",type="prompt"}"#
        ),
        Some(91.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="gpt-test",provider="up",type="completion"}"#
        ),
        Some(9.0)
    );
}

#[tokio::test]
async fn stream_without_include_usage_hides_the_usage_chunk_but_meters_it() {
    let (mock, gw) = setup().await;
    let mut req = chat("gpt-test");
    req["stream"] = json!(true);
    let text = post_chat(&gw, &req).await.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(!v["choices"].as_array().unwrap().is_empty(), "no usage-only chunk: {d}");
    }
    // The gateway asked upstream for usage anyway, to meter the stream.
    assert_eq!(mock.last().body["stream_options"]["include_usage"], true);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="gpt-test",provider="up",type="completion"}"#
        ),
        Some(9.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="gpt-test",provider="up",status="200"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn completions_and_embeddings_pass_through() {
    let (mock, gw) = setup().await;
    let c = client();
    let resp = c
        .post(gw.url("/v1/completions"))
        .json(&json!({"model": "gpt-test", "prompt": "Say this is a test", "max_tokens": 7, "echo": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture_json("openai/completions_response.json")
    );
    assert_eq!(mock.last().path, "/v1/completions");
    assert_eq!(mock.last().body["echo"], false);

    let resp = c
        .post(gw.url("/v1/completions"))
        .json(&json!({"model": "gpt-test", "prompt": "x", "stream": true}))
        .send()
        .await
        .unwrap();
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.len() > 2);

    let resp = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "gpt-test", "input": ["a", "b"], "encoding_format": "float", "dimensions": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        fixture_json("openai/embeddings_response.json")
    );
    let got = mock.last();
    assert_eq!(got.path, "/v1/embeddings");
    assert_eq!(
        got.body,
        json!({"model": "gpt-4o-mini-2024-07-18", "input": ["a", "b"], "encoding_format": "float", "dimensions": 3})
    );
}

#[tokio::test]
async fn models_lists_configured_models_and_aliases() {
    let (_mock, gw) = setup().await;
    let v: Value = json_of(client().get(gw.url("/v1/models"))).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["gpt-test", "fast", "azure-test", "dead-model", "nokey-model", "sim"]
    );
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "up");
}

#[tokio::test]
async fn azure_uses_deployment_url_api_version_and_api_key() {
    let (mock, gw) = setup().await;
    let resp = post_chat(&gw, &chat("azure-test")).await;
    assert_eq!(resp.status(), 200);
    let got = mock.last();
    assert_eq!(got.path, "/openai/deployments/my-deploy/chat/completions");
    assert_eq!(got.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(got.headers["api-key"], AZ_KEY);
    assert!(got.headers.get("authorization").is_none());

    // Azure's annotation-only first chunk is not part of the answer.
    mock.push(Script::sse_fixture("azure/chat_stream.sse"));
    let mut req = chat("azure-test");
    req["stream"] = json!(true);
    let text = post_chat(&gw, &req).await.text().await.unwrap();
    let data = sse_data(&text);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_ne!(first["id"], "", "{}", data[0]);
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn health_and_ready_need_no_key() {
    let (_mock, gw) = setup().await;
    let plain = reqwest::Client::new();
    assert_eq!(plain.get(gw.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(plain.get(gw.url("/ready")).send().await.unwrap().status(), 200);
    assert_eq!(plain.get(gw.url("/metrics")).send().await.unwrap().status(), 200);
}

// ---------- bad input ----------

#[tokio::test]
async fn bad_input_gets_openai_errors_and_the_server_keeps_serving() {
    let (mock, gw) = setup().await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let post = |body: Vec<u8>| {
        c.post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let v = assert_openai_error(
        post(b"{\"model\": \"gpt-test\", \"messages\": [".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );

    let v = assert_openai_error(post(br#"{"model":"gpt-test"}"#.to_vec()).await.unwrap(), 400).await;
    assert_eq!(v["error"]["param"], "messages");

    let v = assert_openai_error(
        post(br#"{"model":"gpt-test","messages":"hello"}"#.to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid type"), "{v}");

    let v = assert_openai_error(
        post(br#"{"model":"gpt-test","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#.to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("invalid type"), "{v}");

    let v = assert_openai_error(
        post(br#"{"model":"gpt-test","messages":[]}"#.to_vec()).await.unwrap(),
        400,
    )
    .await;
    assert_eq!(v["error"]["param"], "messages");

    let mut bad_utf8 = br#"{"model":"gpt-test","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    assert_openai_error(post(bad_utf8).await.unwrap(), 400).await;

    let v = assert_openai_error(post(serde_json::to_vec(&chat("gpt-9000")).unwrap()).await.unwrap(), 404).await;
    assert_eq!(v["error"]["code"], "model_not_found");

    let huge = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x".repeat(70 * 1024)}]});
    let v = assert_openai_error(post(serde_json::to_vec(&huge).unwrap()).await.unwrap(), 413).await;
    assert_eq!(v["error"]["code"], "request_too_large");

    // Without a Content-Length the limit still holds (chunked upload).
    let chunks = futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let resp = c
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_openai_error(resp, 413).await;

    let resp = c
        .post(&url)
        .header("x-big", "v".repeat(9000))
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_openai_error(resp, 431).await;

    assert_openai_error(c.get(&url).send().await.unwrap(), 405).await;
    assert_openai_error(c.get(gw.url("/v2/nothing")).send().await.unwrap(), 404).await;

    assert!(mock.received().is_empty(), "nothing invalid reached the upstream");
    let resp = c.post(&url).json(&chat("gpt-test")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "still serving");

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="",provider="",status="400"}"#
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn wrong_or_missing_gateway_key_is_401() {
    let (mock, gw) = setup().await;
    let url = gw.url("/v1/chat/completions");
    let plain = reqwest::Client::new();
    let v = assert_openai_error(plain.post(&url).json(&chat("gpt-test")).send().await.unwrap(), 401).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_openai_error(
        plain
            .post(&url)
            .bearer_auth("tg-test-key-0123456788")
            .json(&chat("gpt-test"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_openai_error(plain.get(gw.url("/v1/models")).send().await.unwrap(), 401).await;
    // The `api-key` header works too (Azure-style clients).
    let resp = plain
        .post(&url)
        .header("api-key", GW_KEY)
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.received().len(), 1);
}

// ---------- upstream failures ----------

#[tokio::test]
async fn upstream_errors_keep_status_and_message() {
    let (mock, gw) = setup().await;
    mock.push(Script::error_fixture("openai/error_429_rate_limit.json"));
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    assert_eq!(resp.headers()["retry-after"], "2", "tokens exhausted, reset in 1.2s");
    let v = assert_openai_error(resp, 429).await;
    let upstream = fixture_json("openai/error_429_rate_limit.json");
    assert_eq!(v["error"]["message"], upstream["body"]["error"]["message"]);
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "tokens");

    mock.push(Script::error_fixture("openai/error_400_context_length.json"));
    let v = assert_openai_error(post_chat(&gw, &chat("gpt-test")).await, 400).await;
    assert_eq!(v["error"]["code"], "context_length_exceeded");

    mock.push(Script::json(
        503,
        json!({"error": {"message": "The server is overloaded", "type": "server_error"}}),
    ));
    let v = assert_openai_error(post_chat(&gw, &chat("gpt-test")).await, 503).await;
    assert_eq!(v["error"]["message"], "The server is overloaded");

    mock.push(Script::error_fixture("azure/error_404_deployment_not_found.json"));
    let v = assert_openai_error(post_chat(&gw, &chat("azure-test")).await, 404).await;
    assert_eq!(v["error"]["code"], "DeploymentNotFound");

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_upstream_errors_total{kind="rate_limited",provider="up"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_credential_errors_never_leak_the_key() {
    let (mock, gw) = setup().await;
    let mut f = fixture_json("openai/error_401_invalid_api_key.json");
    f["body"]["error"]["message"] = json!(format!("Incorrect API key provided: {UP_KEY}."));
    mock.push(Script::json(401, f["body"].clone()));
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    let v = assert_openai_error(resp, 502).await;
    assert_eq!(v["error"]["code"], "upstream_auth_failed");
    assert!(!v.to_string().contains("sk-upstream"), "{v}");
}

#[tokio::test]
async fn missing_provider_key_is_a_clear_503() {
    let (mock, gw) = setup().await;
    let v = assert_openai_error(post_chat(&gw, &chat("nokey-model")).await, 503).await;
    assert_eq!(v["error"]["code"], "provider_not_configured");
    assert!(v["error"]["message"].as_str().unwrap().contains("NOT_SET_ANYWHERE"));
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn connection_refused_is_502() {
    let (_mock, gw) = setup().await;
    let v = assert_openai_error(post_chat(&gw, &chat("dead-model")).await, 502).await;
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(
        !v["error"]["message"].as_str().unwrap().contains("127.0.0.1"),
        "no internal address leaks: {v}"
    );
}

#[tokio::test]
async fn no_first_byte_in_time_is_504() {
    let (mock, gw) = setup().await;
    mock.push(Script::Hang);
    let started = std::time::Instant::now();
    let v = assert_openai_error(post_chat(&gw, &stream_req()).await, 504).await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "first_byte is 1s, took {took:?}"
    );
}

#[tokio::test]
async fn whole_request_timeout_is_504() {
    let (mock, gw) = setup_with("request_timeout: 300ms").await;
    mock.push(Script::Json {
        status: 200,
        body: fixture_json("openai/chat_response.json"),
        headers: vec![],
        delay: Duration::from_millis(800),
    });
    let v = assert_openai_error(post_chat(&gw, &chat("gpt-test")).await, 504).await;
    assert_eq!(v["error"]["code"], "request_timeout");
}

fn stream_req() -> Value {
    let mut req = chat("gpt-test");
    req["stream"] = json!(true);
    req
}

fn content_events(n: usize) -> Vec<String> {
    (0..n).map(|i| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": null}]}).to_string()).collect()
}

#[tokio::test]
async fn dropped_connection_mid_stream_ends_with_an_error_event() {
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(5),
        gap: Duration::from_millis(10),
        done: true,
        break_after: Some(3),
    });
    let resp = post_chat(&gw, &stream_req()).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("no hang")
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 4, "{text}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_disconnected", "{last}");
    assert!(!text.contains("[DONE]"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="gpt-test",provider="up",status="502"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn stream_closed_without_done_is_an_error_not_success() {
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(2),
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let last: Value = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_disconnected");
}

#[tokio::test]
async fn idle_gap_mid_stream_ends_with_a_timeout_event() {
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(3),
        gap: Duration::from_millis(1500),
        done: true,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 2, "{text}");
    let last: Value = serde_json::from_str(&data[1]).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_stream_longer_than_the_idle_limit_is_not_cut_while_chunks_keep_coming() {
    // Idle limit 1 s; eight chunks 250 ms apart take 2 s: one timer serves the
    // body, and must move on at each chunk rather than fire at 1 s.
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(8),
        gap: Duration::from_millis(250),
        done: true,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("upstream_timeout"), "{text}");
    let contents: Vec<String> = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        contents,
        ["t0 ", "t1 ", "t2 ", "t3 ", "t4 ", "t5 ", "t6 ", "t7 "],
        "{text}"
    );
}

#[tokio::test]
async fn midstream_upstream_error_event_is_relayed_as_an_error_event() {
    let (mock, gw) = setup().await;
    let mut events = content_events(2);
    events.push(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "code": null}}).to_string());
    mock.push(Script::Stream {
        events,
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 3);
    let last: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(
        last["error"]["message"],
        "The server had an error while processing your request."
    );
    assert_eq!(last["error"]["type"], "server_error");
}

#[tokio::test]
async fn error_before_the_first_event_is_an_http_error() {
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: vec![],
        gap: Duration::ZERO,
        done: false,
        break_after: Some(0),
    });
    let resp = post_chat(&gw, &stream_req()).await;
    let v = assert_openai_error(resp, 502).await;
    assert_eq!(v["error"]["code"], "upstream_disconnected");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_promptly() {
    let (mock, gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(200),
        gap: Duration::from_millis(50),
        done: true,
        break_after: None,
    });
    let resp = post_chat(&gw, &stream_req()).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    assert!(
        mock.wait_dropped(Duration::from_secs(1)).await,
        "the upstream saw its connection closed within a second"
    );
    // The cancelled stream is metered as 499.
    let mut cancelled = None;
    for _ in 0..20 {
        cancelled = metric(
            &gw.metrics().await,
            r#"tollgate_requests_total{endpoint="chat",model="gpt-test",provider="up",status="499"}"#,
        );
        if cancelled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cancelled, Some(1.0));
}

#[tokio::test]
async fn slow_reader_gets_backpressure_not_buffering() {
    let (mock, gw) = setup_with("request_timeout: 120s").await;
    // 5,000 chunks of ~4 KiB (20 MB, far more than loopback socket buffers hold)
    // sent as fast as possible: a client that reads nothing must stall the
    // upstream, not make the gateway buffer the stream.
    const CHUNKS: usize = 5_000;
    let big: Vec<String> = (0..CHUNKS)
        .map(|i| {
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": format!("{i:05}{}", "x".repeat(4000))}}]})
                .to_string()
        })
        .collect();
    mock.push(Script::Stream {
        events: big,
        gap: Duration::ZERO,
        done: true,
        break_after: None,
    });
    let resp = post_chat(&gw, &stream_req()).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_at = mock.frames_sent();
    // Kernel socket buffers on both hops hold some; the gateway itself holds one event.
    assert!(
        stalled_at < CHUNKS / 4,
        "the upstream was held back: {stalled_at} of {CHUNKS} sent"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = mock.frames_sent();
    assert!(
        later < CHUNKS / 4,
        "and stays held back while the client reads nothing: {stalled_at} then {later}"
    );
    // Reading it all afterwards still yields the whole stream in order.
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let data = sse_data(&text);
    assert!(data.len() > CHUNKS / 2 && data.last().unwrap() == "[DONE]");
    let numbers: Vec<usize> = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()[..5]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order, none lost");
    assert_eq!(*numbers.last().unwrap(), CHUNKS - 1);
}

// ---------- simulated provider ----------

#[tokio::test]
async fn simulated_provider_answers_without_network() {
    let (mock, gw) = setup().await;
    let v: Value = post_chat(&gw, &chat("sim")).await.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "sim");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 5);
    assert!(mock.received().is_empty());
}

// ---------- shutdown ----------

#[tokio::test]
async fn graceful_shutdown_lets_a_stream_finish_and_refuses_new_work() {
    let (mock, mut gw) = setup().await;
    mock.push(Script::Stream {
        events: content_events(10),
        gap: Duration::from_millis(100),
        done: true,
        break_after: None,
    });
    let resp = post_chat(&gw, &stream_req()).await;
    assert_eq!(resp.status(), 200);
    gw.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!gw.gateway.is_ready(), "not ready while draining");
    let fresh = reqwest::Client::new().get(gw.url("/health")).send().await;
    assert!(fresh.is_err(), "the listener is closed");
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    // The mock's chunks carry no finish reason: tollgate adds the finish chunk before [DONE].
    assert_eq!(data.len(), 12, "all ten chunks, the finish and [DONE] arrived: {text}");
    assert!(data[10].contains(r#""finish_reason":"stop""#), "{text}");
    tokio::time::timeout(Duration::from_secs(3), gw.done.take().unwrap())
        .await
        .expect("server stopped after draining")
        .unwrap();
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    let (_mock, gw) = setup().await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GW_KEY)
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let text = h2
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GW_KEY)
        .json(&stream_req())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sse_data(&text).last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_single_model_can_be_retrieved() {
    let (_mock, gw) = setup().await;
    let v: Value = json_of(client().get(gw.url("/v1/models/fast"))).await;
    assert_eq!(v["id"], "fast");
    assert_eq!(v["object"], "model");
    assert_eq!(v["owned_by"], "up");
    let v = assert_openai_error(
        client().get(gw.url("/v1/models/nope/nested")).send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn simulated_provider_honours_n_prompt_lists_and_token_inputs() {
    let (_mock, gw) = setup().await;
    let c = client();
    let mut req = chat("sim");
    req["n"] = json!(3);
    let v: Value = json_of(c.post(gw.url("/v1/chat/completions")).json(&req)).await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(
        choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(v["usage"]["completion_tokens"], 15);

    let v: Value = json_of(
        c.post(gw.url("/v1/completions"))
            .json(&json!({"model": "sim", "prompt": ["first", "second"]})),
    )
    .await;
    let texts: Vec<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2);
    assert_ne!(texts[0], texts[1], "each prompt has its own answer");

    let v: Value = json_of(
        c.post(gw.url("/v1/embeddings"))
            .json(&json!({"model": "sim", "input": [[1, 2, 3], [4, 5, 6, 7, 8]], "dimensions": 4})),
    )
    .await;
    assert_ne!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 8, "one token per array element");

    for (path, body, param) in [
        (
            "/v1/embeddings",
            json!({"model": "sim", "input": "x", "dimensions": 0}),
            "dimensions",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"model": "sim", "prompt": "x", "max_tokens": 0}),
            "max_tokens",
        ),
    ] {
        let v = assert_openai_error(c.post(gw.url(path)).json(&body).send().await.unwrap(), 400).await;
        assert_eq!(v["error"]["param"], param);
    }
}

#[tokio::test]
async fn a_complete_answer_may_take_longer_than_first_byte() {
    let (mock, gw) = setup().await;
    // first_byte is 1s: a non-streamed answer only has its head when it is all generated.
    mock.push(Script::Json {
        status: 200,
        body: fixture_json("openai/chat_response.json"),
        headers: vec![],
        delay: Duration::from_millis(1500),
    });
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_upstream_connection_is_reused_after_a_stream() {
    let (mock, gw) = setup().await;
    for _ in 0..3 {
        let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.connections(), 1, "one pooled connection served all four requests");
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_with_503() {
    let (mock, gw) = setup_with("request_timeout: 5s\n  max_concurrent_requests: 1").await;
    mock.push(Script::Stream {
        events: content_events(5),
        gap: Duration::from_millis(100),
        done: true,
        break_after: None,
    });
    let first = post_chat(&gw, &stream_req()).await;
    assert_eq!(first.status(), 200);
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let v = assert_openai_error(resp, 503).await;
    assert_eq!(v["error"]["code"], "overloaded");
    first.text().await.unwrap();
    // The slot is back once the stream is over.
    let resp = post_chat(&gw, &chat("gpt-test")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_too_slowly_is_408() {
    let (_mock, gw) = setup_with("request_timeout: 5s\n  body_timeout: 300ms").await;
    let slow = futures_util::stream::unfold(0, |i| async move {
        (i < 10).then_some(())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(b" ".to_vec()), i + 1))
    });
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    let v = assert_openai_error(resp, 408).await;
    assert_eq!(v["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn every_rejection_is_metered() {
    let (_mock, gw) = setup().await;
    let plain = reqwest::Client::new();
    plain
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    client().get(gw.url("/nope")).send().await.unwrap();
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-big", "v".repeat(9000))
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    post_chat(&gw, &chat("no-such-model")).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="",provider="",status="401"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="other",model="",provider="",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="",provider="",status="431"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="",provider="",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "tollgate_in_flight_requests"), Some(0.0));
}

#[tokio::test]
async fn an_unusable_request_id_is_replaced() {
    let (mock, gw) = setup().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "x".repeat(500))
        .json(&chat("gpt-test"))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    assert_eq!(mock.last().headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn stream_events_odd_but_valid_and_invalid() {
    let (mock, gw) = setup().await;
    // A pretty-printed event spans several `data:` lines; an empty event is skipped.
    let pretty = "{\n\"id\": \"c1\",\n\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}}]\n}".to_owned();
    mock.push(Script::Stream {
        events: vec![pretty.replace('\n', "\ndata: "), String::new()],
        gap: Duration::ZERO,
        done: true,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{text}");
    let joined: String = events[0]
        .lines()
        .map(|l| l.strip_prefix("data: ").unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let v: Value = serde_json::from_str(&joined).unwrap();
    assert_eq!(v["choices"][0]["delta"]["content"], "hi");

    mock.push(Script::Stream {
        events: content_events(1)
            .into_iter()
            .chain(["<html>oops</html>".to_owned()])
            .collect(),
        gap: Duration::ZERO,
        done: true,
        break_after: None,
    });
    let text = post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let last: Value = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_invalid_response");
}

#[tokio::test]
async fn validation_statuses_from_compatible_servers_become_400() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(
        422,
        json!({"error": "Input validation error: `temperature` must be strictly positive", "error_type": "validation"}),
    ));
    let v = assert_openai_error(post_chat(&gw, &chat("gpt-test")).await, 400).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("temperature"));
}

#[tokio::test]
async fn stream_usage_can_be_turned_off_for_servers_that_reject_it() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  strict: {{ kind: openai, base_url: {}, stream_usage: false }}\nmodels:\n  - {{ name: m, provider: strict }}\n",
        mock.base_url()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut req = chat("m");
    req["stream"] = json!(true);
    let resp = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    assert!(mock.last().body.get("stream_options").is_none());
}

#[tokio::test]
async fn time_to_first_token_is_measured_at_the_first_content() {
    let (mock, gw) = setup().await;
    let role = json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).to_string();
    let mut events = vec![role];
    events.extend(content_events(2));
    mock.push(Script::Stream {
        events,
        gap: Duration::from_millis(300),
        done: true,
        break_after: None,
    });
    post_chat(&gw, &stream_req()).await.text().await.unwrap();
    let m = gw.metrics().await;
    let labels = r#"{endpoint="chat",model="gpt-test",provider="up""#;
    assert_eq!(
        metric(&m, &format!("tollgate_time_to_first_token_seconds_count{labels}}}")),
        Some(1.0)
    );
    // The role chunk came at once, the first content 300 ms later.
    assert_eq!(
        metric(
            &m,
            &format!("tollgate_time_to_first_token_seconds_bucket{labels},le=\"0.25\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            &format!("tollgate_time_to_first_token_seconds_bucket{labels},le=\"0.5\"}}")
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_delay_fails_ready_but_keeps_serving_for_a_while() {
    let (_mock, mut gw) = setup_with("request_timeout: 5s\n  shutdown_delay: 600ms").await;
    let plain = reqwest::Client::new();
    assert_eq!(plain.get(gw.url("/ready")).send().await.unwrap().status(), 200);
    gw.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = plain.get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "load balancers see it leaving");
    assert_eq!(
        post_chat(&gw, &chat("gpt-test")).await.status(),
        200,
        "but it still serves"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        reqwest::Client::new().get(gw.url("/health")).send().await.is_err(),
        "then it stops accepting"
    );
}

#[tokio::test]
async fn a_stream_answered_with_plain_json_is_an_error_not_a_hang() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(
        200,
        json!({"error": {"message": "quota exhausted", "type": "insufficient_quota"}}),
    ));
    let v = assert_openai_error(post_chat(&gw, &stream_req()).await, 502).await;
    assert_eq!(v["error"]["message"], "quota exhausted");
    mock.push(Script::json(200, fixture_json("openai/chat_response.json")));
    let v = assert_openai_error(post_chat(&gw, &stream_req()).await, 502).await;
    assert_eq!(v["error"]["code"], "upstream_invalid_response");
}
