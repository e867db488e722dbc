//! Policy routing end to end: routes, filters, strategies, fallbacks,
//! cooldowns, circuit breakers and the explain endpoint, against mock
//! upstreams and the simulated provider on real sockets.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, metric};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-0123456789";

/// A catalog for the test models: `fast-api` (remote, cheap, small window,
/// no tools), `smart-api` (remote, dear, high scores), `local` (self-hosted).
const CATALOG: &str = r#"
models:
  up-model:
    sources: [test]
    price: {input: 10.0, output: 30.0}
    context_window: 100000
    capabilities: [tools, vision, json]
    scores: {humaneval: 92.0, mmlu: 88.0, math: 75.0}
  cheap-model:
    sources: [test]
    price: {input: 0.1, output: 0.2}
    context_window: 64
    capabilities: [json]
    scores: {humaneval: 60.0, mmlu: 70.0, math: 40.0}
  local-model:
    sources: [test]
    hosting: self_hosted
    context_window: 100000
    capabilities: [tools, json]
    scores: {humaneval: 70.0, mmlu: 72.0, math: 50.0}
"#;

struct Setup {
    mock: MockUpstream,
    gw: TestGateway,
    yaml: String,
    _catalog: tempfile::NamedTempFile,
}

const ENV: [(&str, &str); 2] = [("KEY", "sk-test-0123456789"), ("ADMIN_KEY", ADMIN)];

/// `up` is the scriptable mock (model `up`); `cheap` and `local` are simulated.
async fn setup(routes: &str, routing: &str) -> Setup {
    let mock = MockUpstream::start().await;
    let mut catalog = tempfile::NamedTempFile::new().unwrap();
    catalog.write_all(CATALOG.as_bytes()).unwrap();
    let yaml = format!(
        r#"auth:
  admin_keys: ["${{ADMIN_KEY}}"]
routing:
  catalog: "{catalog}"
  seed: 7
{routing}
providers:
  mock: {{ kind: openai, base_url: "{base}", api_key: "${{KEY}}", timeouts: {{ first_byte: 300ms, total: 2s }} }}
  sim: {{ kind: simulated, completion_tokens: 3 }}
  sim-slow: {{ kind: simulated, completion_tokens: 3, ttft: 80ms }}
models:
  - {{ name: up, provider: mock, upstream_model: up-model }}
  - {{ name: cheap, provider: sim, catalog: cheap-model }}
  - {{ name: local, provider: sim-slow, catalog: local-model }}
routes:
{routes}"#,
        catalog = catalog.path().display(),
        base = mock.base_url(),
    );
    let gw = TestGateway::start(&yaml, &ENV).await;
    Setup {
        mock,
        gw,
        yaml,
        _catalog: catalog,
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn explain(gw: &TestGateway, body: &Value, headers: &[(&str, &str)]) -> Value {
    let mut req = reqwest::Client::new()
        .post(gw.url("/v1/route/explain"))
        .bearer_auth(ADMIN)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn order(explained: &Value) -> Vec<String> {
    explained["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model"].as_str().unwrap().to_owned())
        .collect()
}

const FALLBACK: &str = "  - { name: main, match: { model: main }, targets: [up, cheap], retry: { attempts: 2 } }\n";

#[tokio::test]
async fn each_upstream_failure_before_the_answer_falls_back() {
    let s = setup(FALLBACK, "").await;
    let failures = [
        Script::json(500, json!({"error": {"message": "boom", "type": "server_error"}})),
        Script::json(503, json!({"error": {"message": "overloaded"}})),
        Script::json(429, json!({"error": {"message": "slow down", "type": "rate_limit"}})),
        Script::Hang,
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        s.mock.push(failure);
        let mut body = chat("main", "hi");
        if i == 3 {
            // A stream whose first byte never comes: the first-byte timeout, then the next backend.
            body["stream"] = json!(true);
        }
        let resp = s.gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 200, "failure {i}");
        assert_eq!(header(&resp, "x-tollgate-backend"), "sim/cheap", "failure {i}");
        assert_eq!(header(&resp, "x-tollgate-route"), "main");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    }
    let m = s.gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_upstream_errors_total{kind="status_5xx",provider="mock"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="cheap",provider="sim",status="200"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_route_decisions_total{model="cheap",provider="sim",route="main"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(&m, r#"tollgate_retries_total{kind="fallback",route="main"}"#),
        Some(4.0)
    );
}

#[tokio::test]
async fn an_unreachable_backend_falls_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "providers:\n  gone: {{ kind: openai, base_url: \"http://{closed}/v1\", timeouts: {{ connect: 300ms }} }}\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: gone, provider: gone }}\n  - {{ name: sim, provider: sim }}\nroutes:\n  - {{ name: r, match: {{ model: m }}, targets: [gone, sim] }}\n"
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let resp = gw.post("/v1/chat/completions", &chat("m", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-backend"), "sim/sim");
}

#[tokio::test]
async fn a_clients_mistake_is_not_retried_elsewhere() {
    let s = setup(FALLBACK, "").await;
    s.mock.push(Script::json(
        400,
        json!({"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature"}}),
    ));
    let resp = s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    assert_eq!(header(&resp, "x-tollgate-route"), "main");
}

#[tokio::test]
async fn retry_after_cools_the_backend_down_for_the_next_requests() {
    let s = setup(FALLBACK, "").await;
    let mut limited = Script::json(429, json!({"error": {"message": "slow down"}}));
    if let Script::Json { headers, .. } = &mut limited {
        headers.push(("retry-after".into(), "30".into()));
    }
    s.mock.push(limited);
    for _ in 0..3 {
        let resp = s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
        assert_eq!(header(&resp, "x-tollgate-backend"), "sim/cheap");
    }
    assert_eq!(s.mock.received().len(), 1, "the cooled-down backend was asked once");
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert_eq!(order(&e), ["cheap"]);
    assert!(
        e["dropped"][0]["reason"].as_str().unwrap().contains("cooling down"),
        "{e}"
    );
}

#[tokio::test]
async fn the_circuit_opens_after_failures_and_a_probe_closes_it() {
    let s = setup(FALLBACK, "  breaker: { failures: 2, cooldown: 300ms }").await;
    for _ in 0..2 {
        s.mock.push(Script::json(500, json!({"error": {"message": "boom"}})));
    }
    for _ in 0..4 {
        let resp = s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
        assert_eq!(header(&resp, "x-tollgate-backend"), "sim/cheap");
    }
    assert_eq!(s.mock.received().len(), 2, "open: no more requests");
    let m = s.gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_circuit_state{model="up",provider="mock"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"tollgate_circuit_state{model="cheap",provider="sim"}"#),
        Some(0.0)
    );
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert!(
        e["dropped"][0]["reason"].as_str().unwrap().contains("circuit open"),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The probe succeeds (the mock's default answer) and closes the circuit.
    let resp = s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
    assert_eq!(header(&resp, "x-tollgate-backend"), "mock/up");
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert_eq!(e["candidates"][0]["circuit"], "closed");
}

#[tokio::test]
async fn the_same_backend_is_retried_with_backoff_when_the_route_says_so() {
    let routes =
        "  - { name: main, match: { model: main }, targets: [up], retry: { same_backend: 1, backoff: 20ms } }\n";
    let s = setup(routes, "").await;
    s.mock
        .push(Script::json(502, json!({"error": {"message": "bad gateway"}})));
    let resp = s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    assert_eq!(s.mock.received().len(), 2);
    let m = s.gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_retries_total{kind="same_backend",route="main"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn context_window_and_capabilities_filter_candidates() {
    let routes = "  - { name: any, match: { model: any }, targets: [cheap, up] }\n";
    let s = setup(routes, "").await;
    // cheap-model's window is 64 tokens.
    let long = chat("any", &"word ".repeat(100));
    let e = explain(&s.gw, &long, &[]).await;
    assert_eq!(order(&e), ["up"]);
    assert!(
        e["dropped"][0]["reason"].as_str().unwrap().contains("context window"),
        "{e}"
    );
    let mut tools = chat("any", "hi");
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let e = explain(&s.gw, &tools, &[]).await;
    assert_eq!(order(&e), ["up"]);
    assert_eq!(e["dropped"][0]["reason"], "cannot take tools");
    let resp = s.gw.post("/v1/chat/completions", &tools).await;
    assert_eq!(header(&resp, "x-tollgate-backend"), "mock/up");
}

#[tokio::test]
async fn a_local_only_route_never_reaches_a_remote_backend() {
    let routes = "  - { name: private, match: { headers: { x-data-class: restricted } }, targets: [up, local], local_only: true }\n";
    let s = setup(routes, "").await;
    for _ in 0..3 {
        let resp = reqwest::Client::new()
            .post(s.gw.url("/v1/chat/completions"))
            .header("x-data-class", "restricted")
            .json(&chat("up", "secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-tollgate-backend"), "sim-slow/local");
        assert_eq!(header(&resp, "x-tollgate-route"), "private");
    }
    assert!(s.mock.received().is_empty(), "no request left the machine");
    // Without the header, the direct route serves the model asked for.
    let resp = s.gw.post("/v1/chat/completions", &chat("up", "hi")).await;
    assert_eq!(header(&resp, "x-tollgate-route"), "direct");
    assert_eq!(header(&resp, "x-tollgate-backend"), "mock/up");
}

#[tokio::test]
async fn best_score_picks_by_domain_within_the_limits_and_degrades_to_cheaper() {
    let routes = "  - { name: auto, match: { model: auto }, targets: [cheap, local, up], strategy: best-score }\n  - { name: budget, match: { model: auto-budget }, targets: [cheap, local, up], strategy: best-score, objective: { max_cost_per_request: 0.001 } }\n  - { name: none-fit, match: { model: auto-tight }, targets: [cheap, up], strategy: best-score, objective: { score: humaneval, max_cost_per_request: 0.0000001 } }\n";
    let s = setup(routes, "").await;
    let code = chat(
        "auto",
        "Fix this Rust error: ```fn main() { let x: i32 = \"a\"; }``` mismatched types",
    );
    let e = explain(&s.gw, &code, &[]).await;
    assert_eq!(e["domain"], "code");
    assert_eq!(e["benchmark"], "humaneval");
    assert_eq!(order(&e), ["up", "local", "cheap"], "{e}");
    // The header overrides the classifier.
    let e = explain(&s.gw, &code, &[("x-tollgate-domain", "math")]).await;
    assert_eq!(
        (e["domain"].as_str(), e["benchmark"].as_str()),
        (Some("math"), Some("math"))
    );
    // Within a cost limit the dear model no longer qualifies; the local one (free) leads.
    let mut budget = code.clone();
    budget["model"] = json!("auto-budget");
    let e = explain(&s.gw, &budget, &[]).await;
    assert_eq!(order(&e)[0], "local", "{e}");
    assert_eq!(e["candidates"][2]["within_limits"], false);
    // When none qualifies, the cheapest comes first.
    let mut tight = code;
    tight["model"] = json!("auto-tight");
    let e = explain(&s.gw, &tight, &[]).await;
    assert_eq!(order(&e), ["cheap", "up"], "{e}");
    let resp = s.gw.post("/v1/chat/completions", &tight).await;
    assert_eq!(header(&resp, "x-tollgate-backend"), "sim/cheap");
}

#[tokio::test]
async fn weighted_routing_follows_the_weights_reproducibly() {
    let routes = "  - { name: split, match: { model: split }, targets: [cheap, local], strategy: weighted, weights: { cheap: 3, local: 1 } }\n";
    let s = setup(routes, "").await;
    let mut first = Vec::new();
    for _ in 0..400 {
        first.push(order(&explain(&s.gw, &chat("split", "hi"), &[]).await)[0].clone());
    }
    let cheap = first.iter().filter(|m| *m == "cheap").count();
    assert!((260..=340).contains(&cheap), "3:1 expected, got {cheap} of 400");
    // The same seed gives the same sequence.
    let again = setup(routes, "").await;
    let mut second = Vec::new();
    for _ in 0..20 {
        second.push(order(&explain(&again.gw, &chat("split", "hi"), &[]).await)[0].clone());
    }
    assert_eq!(second, first[..20]);
}

#[tokio::test]
async fn lowest_cost_and_lowest_latency_order_by_what_they_measure() {
    let routes = "  - { name: thrifty, match: { model: thrifty }, targets: [up, cheap], strategy: lowest-cost }\n  - { name: quick, match: { model: quick }, targets: [local, cheap], strategy: lowest-latency }\n";
    let s = setup(routes, "").await;
    let e = explain(&s.gw, &chat("thrifty", "hi"), &[]).await;
    assert_eq!(order(&e), ["cheap", "up"]);
    assert!(
        e["candidates"][0]["expected_cost_usd"].as_f64().unwrap()
            < e["candidates"][1]["expected_cost_usd"].as_f64().unwrap()
    );
    // Measure both: local answers after 80 ms, cheap at once.
    for model in ["local", "cheap", "local", "cheap"] {
        let mut body = chat(model, "hi");
        body["stream"] = json!(true);
        s.gw.post("/v1/chat/completions", &body).await.text().await.unwrap();
    }
    for _ in 0..10 {
        let e = explain(&s.gw, &chat("quick", "hi"), &[]).await;
        assert_eq!(order(&e)[0], "cheap", "{e}");
    }
}

#[tokio::test]
async fn explain_needs_an_admin_key_and_says_why() {
    let s = setup(FALLBACK, "").await;
    let resp = s.gw.post("/v1/route/explain", &chat("main", "hi")).await;
    assert_eq!(resp.status(), 401);
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert_eq!(e["route"], "main");
    assert_eq!(e["strategy"], "priority");
    assert_eq!(e["attempts"], 2);
    assert_eq!(e["candidates"][0]["provider"], "mock");
    assert!(e["candidates"][0]["expected_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(s.mock.received().is_empty(), "explaining calls no upstream");
    let e = explain(&s.gw, &chat("cheap", "hi"), &[]).await;
    assert_eq!(e["route"], "direct");
    let resp = reqwest::Client::new()
        .post(s.gw.url("/v1/route/explain"))
        .bearer_auth(ADMIN)
        .json(&chat("nope", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_the_backends_that_remain() {
    let s = setup(FALLBACK, "  breaker: { failures: 2, cooldown: 60s }").await;
    for _ in 0..2 {
        s.mock.push(Script::json(500, json!({"error": {"message": "boom"}})));
        s.gw.post("/v1/chat/completions", &chat("main", "hi")).await;
    }
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert_eq!(order(&e), ["cheap"], "the circuit is open");
    // The same config again, plus a route: `up` remains, so its open circuit does too.
    let yaml = format!(
        "{}  - {{ name: extra, match: {{ model: extra }}, targets: [cheap] }}\n",
        s.yaml
    );
    let vars: std::collections::HashMap<&str, &str> = ENV.into_iter().collect();
    let cfg = tollgate::config::parse(&yaml, &|n| vars.get(n).map(|v| v.to_string())).unwrap();
    s.gw.gateway.reload(&cfg);
    let e = explain(&s.gw, &chat("main", "hi"), &[]).await;
    assert_eq!(order(&e), ["cheap"]);
    assert!(
        e["dropped"][0]["reason"].as_str().unwrap().contains("circuit open"),
        "{e}"
    );
    assert_eq!(explain(&s.gw, &chat("extra", "hi"), &[]).await["route"], "extra");
}

#[tokio::test]
async fn a_mirror_copies_requests_off_the_clients_path_and_meters_both_sides() {
    let routes = "  - { name: shadowed, match: { model: shadowed }, targets: [cheap], mirror: { to: up, percent: 100 } }\n  - { name: half, match: { model: half }, targets: [cheap], mirror: { to: up, percent: 50 } }\n";
    let s = setup(routes, "").await;
    // A slow, failing shadow changes nothing for the client.
    s.mock.push(Script::Json {
        status: 500,
        body: json!({"error": {"message": "shadow broke"}}),
        headers: vec![],
        delay: Duration::from_millis(600),
    });
    let started = std::time::Instant::now();
    let resp = reqwest::Client::new()
        .post(s.gw.url("/v1/chat/completions"))
        .header("x-request-id", "req-mirror-1")
        .json(&chat("shadowed", "hello shadow"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-backend"), "sim/cheap");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the client did not wait for the shadow"
    );
    // The shadow got the same request, for its own model.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while s.mock.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the shadow request never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = s.mock.last();
    assert_eq!(got.body["model"], "up-model");
    assert_eq!(got.body["messages"][0]["content"], "hello shadow");
    assert_eq!(got.headers["x-request-id"], "req-mirror-1-shadow");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let m = s.gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_mirror_requests_total{model="up",provider="mock",role="shadow",route="shadowed",status="500"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_mirror_requests_total{model="cheap",provider="sim",role="primary",route="shadowed",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_mirror_tokens_total{model="cheap",provider="sim",role="primary",route="shadowed",type="completion"}"#
        ),
        Some(3.0)
    );
    // Shadow traffic is not client traffic.
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="up",provider="mock",status="500"}"#
        ),
        None
    );
    // Half the requests, about.
    for _ in 0..100 {
        s.gw.post("/v1/chat/completions", &chat("half", "hi")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mirrored = s.mock.received().len() - 1;
    assert!(
        (30..=70).contains(&mirrored),
        "50% expected, {mirrored} of 100 mirrored"
    );
}

#[tokio::test]
async fn answers_carry_their_cost_and_metrics_add_it_up_exactly() {
    let s = setup("  []\n", "").await;
    // up-model costs $10 in and $30 out per million; no separate cached price.
    let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100, "prompt_tokens_details": {"cached_tokens": 200}}});
    for _ in 0..3 {
        s.mock.push(Script::json(200, answer.clone()));
        let resp = s.gw.post("/v1/chat/completions", &chat("up", "hi")).await;
        assert_eq!(resp.status(), 200);
        // 1 000 × 10 + 100 × 30 = 13 000 micro-dollars.
        assert_eq!(header(&resp, "x-tollgate-cost-usd"), "0.013");
    }
    let m = s.gw.metrics().await;
    assert_eq!(
        metric(&m, r#"tollgate_tokens_total{model="up",provider="mock",type="cached"}"#),
        Some(600.0),
        "cached input is counted by its own type"
    );
    assert_eq!(
        metric(&m, r#"tollgate_cost_usd_total{model="up",provider="mock"}"#),
        Some(0.039),
        "{m}"
    );
    // A model the catalog does not price has no cost header.
    let yaml = "providers:\n  sim: { kind: simulated }\nmodels:\n  - { name: unpriced, provider: sim }\n";
    let gw = TestGateway::start(yaml, &[]).await;
    let resp = gw.post("/v1/chat/completions", &chat("unpriced", "hi")).await;
    assert!(resp.headers().get("x-tollgate-cost-usd").is_none());
}

#[tokio::test]
async fn a_known_workload_gives_exact_metrics_and_histogram_counts() {
    let s = setup("  []\n", "").await;
    let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}});
    for _ in 0..3 {
        s.mock.push(Script::json(200, answer.clone()));
        assert_eq!(s.gw.post("/v1/chat/completions", &chat("up", "hi")).await.status(), 200);
    }
    s.mock.push(Script::json(500, json!({"error": {"message": "boom"}})));
    assert_eq!(s.gw.post("/v1/chat/completions", &chat("up", "hi")).await.status(), 500);
    for _ in 0..2 {
        let mut body = chat("cheap", "hi");
        body["stream"] = json!(true);
        let text = s.gw.post("/v1/chat/completions", &body).await.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    let m = s.gw.metrics().await;
    let get = |series: &str| metric(&m, series).unwrap_or_else(|| panic!("{series} missing:\n{m}"));
    let up = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="up""#;
    let cheap =
        r#"gen_ai_operation_name="chat",gen_ai_provider_name="tollgate.simulated",gen_ai_request_model="cheap""#;
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_operation_duration_seconds_count{{error_type="",{up}}}"#
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_operation_duration_seconds_count{{error_type="500",{up}}}"#
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_token_usage_count{{{up},gen_ai_token_type="input"}}"#
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_token_usage_sum{{{up},gen_ai_token_type="input"}}"#
        )),
        3000.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_token_usage_sum{{{up},gen_ai_token_type="output"}}"#
        )),
        300.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_server_time_to_first_token_seconds_count{{{cheap}}}"#
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_server_time_per_output_token_seconds_count{{{cheap}}}"#
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            r#"gen_ai_client_token_usage_sum{{{cheap},gen_ai_token_type="output"}}"#
        )),
        6.0
    );
    // 3 × (1 000 × $10 + 100 × $30) per million.
    assert_eq!(get(r#"tollgate_cost_usd_total{model="up",provider="mock"}"#), 0.039);
    assert_eq!(
        get(r#"tollgate_tokens_total{model="up",provider="mock",type="prompt"}"#),
        3000.0
    );
    assert_eq!(
        get(r#"tollgate_requests_total{endpoint="chat",model="up",provider="mock",status="200"}"#),
        3.0
    );
    assert_eq!(
        get(r#"tollgate_requests_total{endpoint="chat",model="up",provider="mock",status="500"}"#),
        1.0
    );
    assert_eq!(
        get(r#"tollgate_request_duration_seconds_count{endpoint="chat",model="cheap",provider="sim"}"#),
        2.0
    );
    // tollgate's own time, once per request, failed ones too; far below the requests' time.
    assert_eq!(get(r#"tollgate_overhead_seconds_count{endpoint="chat"}"#), 6.0);
    assert!(
        get(r#"tollgate_overhead_seconds_sum{endpoint="chat"}"#)
            < get(r#"tollgate_request_duration_seconds_sum{endpoint="chat",model="cheap",provider="sim"}"#)
                + get(r#"tollgate_request_duration_seconds_sum{endpoint="chat",model="up",provider="mock"}"#)
    );
}

#[tokio::test]
async fn a_streams_usage_chunk_carries_its_cost() {
    let s = setup("  []\n", "").await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    s.mock.push(Script::Stream {
        events: vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "hi"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-model", "choices": [],
                   "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})
            .to_string(),
        ],
        gap: Duration::ZERO,
        done: true,
        break_after: None,
    });
    let mut body = chat("up", "hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = s.gw.post("/v1/chat/completions", &body).await.text().await.unwrap();
    let usage: Value = common::sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk")["usage"]
        .clone();
    assert_eq!(usage["cost_usd"], 0.013, "{usage}");
    assert_eq!(usage["prompt_tokens"], 1000);
}

#[tokio::test]
async fn a_cancelled_stream_is_metered_and_costed_for_what_was_produced() {
    let mut catalog = tempfile::NamedTempFile::new().unwrap();
    catalog
        .write_all(b"models:\n  slow-model:\n    sources: [test]\n    price: {input: 1.0, output: 2.0}\n")
        .unwrap();
    let yaml = format!(
        "routing: {{ catalog: \"{}\" }}\nproviders:\n  slow: {{ kind: simulated, tokens_per_second: 20, completion_tokens: 200 }}\nmodels:\n  - {{ name: slow, provider: slow, catalog: slow-model }}\n",
        catalog.path().display()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut body = chat("slow", "tell me a long story");
    body["stream"] = json!(true);
    let mut resp = gw.post("/v1/chat/completions", &body).await;
    for _ in 0..5 {
        assert!(
            resp.chunk().await.unwrap().is_some(),
            "the stream ended before five chunks"
        );
    }
    drop(resp);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="slow",provider="slow",status="499"}"#
        ),
        Some(1.0)
    );
    let completion = metric(
        &m,
        r#"tollgate_tokens_total{model="slow",provider="slow",type="completion"}"#,
    )
    .unwrap();
    assert!(
        (1.0..200.0).contains(&completion),
        "what was produced, not the whole answer: {completion}"
    );
    let prompt = metric(
        &m,
        r#"tollgate_tokens_total{model="slow",provider="slow",type="prompt"}"#,
    )
    .unwrap();
    assert!(prompt >= 1.0, "the prompt, estimated: {prompt}");
    assert!(metric(&m, r#"tollgate_cost_usd_total{model="slow",provider="slow"}"#).unwrap() > 0.0);
}

#[tokio::test]
async fn model_rate_limits_skip_to_the_next_backend_then_answer_openai_429s() {
    let yaml = "providers:\n  sim: { kind: simulated }\nmodels:\n  - { name: small, provider: sim, rpm: 2 }\n  - { name: spare, provider: sim }\n  - { name: thrifty, provider: sim, tpm: 1000 }\nroutes:\n  - { name: spill, match: { model: spill }, targets: [small, spare] }\n";
    let gw = TestGateway::start(yaml, &[]).await;
    // The route spills to the spare model once `small` has had its 2 requests this minute.
    let mut served = Vec::new();
    for _ in 0..3 {
        let resp = gw.post("/v1/chat/completions", &chat("spill", "hi")).await;
        assert_eq!(resp.status(), 200);
        served.push(header(&resp, "x-tollgate-backend"));
    }
    assert_eq!(served, ["sim/small", "sim/small", "sim/spare"]);
    // Alone, a limited model answers OpenAI's 429.
    let resp = gw.post("/v1/chat/completions", &chat("small", "hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");
    assert!(header(&resp, "x-ratelimit-reset-requests").ends_with('s'));
    let wait: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    // Tokens per minute: the prompt and max_tokens are reserved, and what
    // the answer did not use comes back: a second 600 fits in 1000.
    let mut big = chat("thrifty", "hi");
    big["max_tokens"] = json!(600);
    assert_eq!(gw.post("/v1/chat/completions", &big).await.status(), 200);
    assert_eq!(gw.post("/v1/chat/completions", &big).await.status(), 200);
    // A whole minute's worth does not, once anything was used.
    big["max_tokens"] = json!(5000);
    let resp = gw.post("/v1/chat/completions", &big).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "1000");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_rate_limited_total{limit="requests",model="small",provider="sim",scope="backend"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_rate_limited_total{limit="tokens",model="thrifty",provider="sim",scope="backend"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_route_can_match_the_gateway_key_by_its_id() {
    let team_a = "tg-team-a-0123456789";
    let id = tollgate::server::auth::id_of(team_a.as_bytes());
    let yaml = format!(
        "auth:\n  keys: [\"${{KEY_A}}\", \"${{KEY_B}}\"]\nproviders:\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: shared, provider: sim }}\n  - {{ name: dedicated, provider: sim }}\nroutes:\n  - {{ name: team-a, match: {{ keys: [\"{id}\"] }}, targets: [dedicated] }}\n"
    );
    let gw = TestGateway::start(&yaml, &[("KEY_A", team_a), ("KEY_B", "tg-team-b-0123456789")]).await;
    let ask = |key: &'static str| {
        reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat("shared", "hi"))
            .send()
    };
    let a = ask("tg-team-a-0123456789").await.unwrap();
    assert_eq!(
        (header(&a, "x-tollgate-route"), header(&a, "x-tollgate-backend")),
        ("team-a".into(), "sim/dedicated".into())
    );
    let b = ask("tg-team-b-0123456789").await.unwrap();
    assert_eq!(
        (header(&b, "x-tollgate-route"), header(&b, "x-tollgate-backend")),
        ("direct".into(), "sim/shared".into())
    );
}

/// Polls the gateway's metrics until `series` has a value satisfying `ok`.
async fn wait_metric(gw: &TestGateway, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..100 {
        if let Some(v) = metric(&gw.metrics().await, series).filter(|v| ok(*v)) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never got there:\n{}", gw.metrics().await);
}

#[tokio::test]
async fn active_health_checks_open_a_failing_backends_circuit_and_close_it_when_it_is_back() {
    let mock = MockUpstream::start().await;
    // The first check of `flaky` fails; the later ones pass.
    mock.push(Script::json(503, json!({"error": {"message": "down for maintenance"}})));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "providers:\n  dead: {{ kind: openai, base_url: \"http://127.0.0.1:{dead}/v1\", timeouts: {{ connect: 200ms }} }}\n  flaky: {{ kind: openai, base_url: \"{base}\" }}\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: gone, provider: dead }}\n  - {{ name: flaky-model, provider: flaky }}\n  - {{ name: spare, provider: sim }}\nrouting:\n  breaker: {{ cooldown: 1h }}\n  health_checks: {{ interval: 100ms, timeout: 1s }}\nroutes:\n  - {{ name: r, match: {{ model: gone-first }}, targets: [gone, spare] }}\n",
        base = mock.base_url()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    // No client request yet: the checks alone open the dead backend's circuit.
    wait_metric(&gw, r#"tollgate_circuit_state{model="gone",provider="dead"}"#, |v| {
        v == 2.0
    })
    .await;
    wait_metric(
        &gw,
        r#"tollgate_health_checks_total{provider="dead",result="failed"}"#,
        |v| v >= 1.0,
    )
    .await;
    wait_metric(
        &gw,
        r#"tollgate_health_checks_total{provider="sim",result="ok"}"#,
        |v| v >= 1.0,
    )
    .await;
    // So the route skips it without trying: one attempt, on the spare.
    let resp = gw.post("/v1/chat/completions", &chat("gone-first", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-backend"), "sim/spare");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    // `flaky` failed its first check, then passed: closed again long before the hour's cooldown.
    let failed = metric(
        &gw.metrics().await,
        r#"tollgate_health_checks_total{provider="flaky",result="failed"}"#,
    );
    assert_eq!(failed, Some(1.0));
    wait_metric(
        &gw,
        r#"tollgate_health_checks_total{provider="flaky",result="ok"}"#,
        |v| v >= 1.0,
    )
    .await;
    wait_metric(
        &gw,
        r#"tollgate_circuit_state{model="flaky-model",provider="flaky"}"#,
        |v| v == 0.0,
    )
    .await;
    let resp = gw.post("/v1/chat/completions", &chat("flaky-model", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        mock.received().iter().any(|r| r.path == "/v1/models"),
        "the check is a GET of the model list"
    );
}

#[tokio::test]
async fn expected_cost_counts_a_per_request_fee_as_metering_does() {
    let mut catalog = tempfile::NamedTempFile::new().unwrap();
    write!(
        catalog,
        "models:\n  fee-model:\n    sources: [test]\n    price: {{input: 0.0, output: 0.0, per_request: 0.01}}\n"
    )
    .unwrap();
    let yaml = format!(
        "auth:\n  admin_keys: [\"${{ADMIN_KEY}}\"]\nproviders:\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: fee, provider: sim, catalog: fee-model }}\nrouting:\n  catalog: {}\nroutes:\n  - {{ name: r, match: {{ model: fee }}, targets: [fee], strategy: lowest-cost }}\n",
        catalog.path().display()
    );
    let gw = TestGateway::start(&yaml, &ENV).await;
    let e = explain(&gw, &chat("fee", "hi"), &[]).await;
    assert_eq!(e["candidates"][0]["expected_cost_usd"], json!(0.01), "{e}");
    // And what the answer is charged: the same fee.
    let resp = gw.post("/v1/chat/completions", &chat("fee", "hi")).await;
    assert_eq!(header(&resp, "x-tollgate-cost-usd"), "0.01");
}
