//! The native Ollama provider end to end: an OpenAI client, tollgate, and a
//! mock speaking Ollama's `/api/chat` and `/api/embed` (fixtures from its wire format).

mod common;

use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, fixture, fixture_json, metric, sse_data};
use serde_json::{Value, json};

async fn setup() -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  local: {{ kind: ollama, base_url: http://{}, keep_alive: 10m, timeouts: {{ idle: 1s }} }}\nmodels:\n  - {{ name: llama, provider: local, upstream_model: llama3.2 }}\n",
        mock.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    (mock, gw)
}

fn ask() -> Value {
    json!({"model": "llama", "messages": [{"role": "user", "content": "Weather in Paris?"}], "temperature": 0.2})
}

fn lines(path: &str) -> Vec<String> {
    fixture(path)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_is_translated_there_and_back() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(200, fixture_json("ollama/chat_response.json")));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    let expected = fixture_json("ollama/chat_response.json");
    assert_eq!(v["choices"][0]["message"]["content"], expected["message"]["content"]);
    assert_eq!(v["usage"]["prompt_tokens"], expected["prompt_eval_count"]);
    let got = mock.last();
    assert_eq!(got.path, "/api/chat");
    assert_eq!(
        got.body,
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "Weather in Paris?"}], "options": {"temperature": 0.2}, "stream": false, "keep_alive": "10m"})
    );
    // Ollama's own timings are kept: a cold model load shows in the metrics.
    let m = gw.metrics().await;
    for (phase, field) in [
        ("load", "load_duration"),
        ("prompt", "prompt_eval_duration"),
        ("generation", "eval_duration"),
    ] {
        let series =
            format!(r#"tollgate_upstream_reported_seconds_total{{model="llama",phase="{phase}",provider="local"}}"#);
        let seconds = expected[field].as_f64().unwrap() / 1e9;
        let got = metric(&m, &series).unwrap_or_else(|| panic!("{series} missing: {m}"));
        assert!((got - seconds).abs() < 1e-9, "{phase}: {got} vs {seconds}");
    }
}

#[tokio::test]
async fn an_ndjson_stream_becomes_openai_chunks_split_anywhere() {
    let (mock, gw) = setup().await;
    mock.push(Script::Ndjson {
        lines: lines("ollama/chat_stream.ndjson"),
        gap: Duration::from_millis(5),
    });
    let mut req = ask();
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Paris is 18°C and overcast.");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 8);
    assert_eq!(mock.last().body["stream"], true);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="llama",provider="local",type="prompt"}"#
        ),
        Some(41.0)
    );
}

#[tokio::test]
async fn embeddings_go_to_api_embed() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(200, fixture_json("ollama/embed_response.json")));
    let resp = gw
        .post("/v1/embeddings", &json!({"model": "llama", "input": ["a", "b"]}))
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0]["embedding"],
        fixture_json("ollama/embed_response.json")["embeddings"][0]
    );
    assert_eq!(mock.last().path, "/api/embed");
    assert_eq!(
        mock.last().body,
        json!({"model": "llama3.2", "input": ["a", "b"], "keep_alive": "10m"})
    );
}

#[tokio::test]
async fn ollama_errors_become_openai_errors() {
    let (mock, gw) = setup().await;
    mock.push(Script::error_fixture("ollama/error_404_model_not_found.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["message"], "model 'llama9' not found");

    mock.push(Script::error_fixture("ollama/error_400_no_tools.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 400);

    let mut req = ask();
    req["stream"] = json!(true);
    let mut broken = lines("ollama/chat_stream.ndjson");
    broken.truncate(2);
    broken.push(json!({"error": "an error was encountered while running the model"}).to_string());
    mock.push(Script::Ndjson {
        lines: broken,
        gap: Duration::ZERO,
    });
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["message"],
        "an error was encountered while running the model"
    );

    let mut cut = lines("ollama/chat_stream.ndjson");
    cut.truncate(2);
    mock.push(Script::Ndjson {
        lines: cut,
        gap: Duration::ZERO,
    });
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_disconnected");
}

/// `/v1/models` as (id, owned_by) pairs.
async fn model_list(gw: &TestGateway) -> Vec<(String, String)> {
    let v: Value = reqwest::get(gw.url("/v1/models")).await.unwrap().json().await.unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["owned_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn discovered_models_are_listed_and_routed_by_their_ollama_names() {
    let mock = common::wire::WireMock::start().await;
    // A configured model of the same name as a discovered one wins.
    let yaml = format!(
        "providers:\n  local: {{ kind: ollama, base_url: http://{}, discover_models: true }}\n  sim: {{ kind: simulated }}\nmodels:\n  - {{ name: mock-embed:latest, provider: sim }}\n",
        mock.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let ask_discovered = json!({"model": "mock-llama:latest", "messages": [{"role": "user", "content": "hi"}]});
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = model_list(&gw).await;
        if listed.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        listed,
        [
            ("mock-embed:latest".to_owned(), "sim".to_owned()),
            ("mock-llama:latest".to_owned(), "local".to_owned()),
        ]
    );
    assert!(
        mock.received()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/tags")
    );

    let resp = gw.post("/v1/chat/completions", &ask_discovered).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-backend"], "local/mock-llama:latest");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from ollama.");
    assert_eq!(mock.last().body["model"], "mock-llama:latest");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{endpoint="chat",model="mock-llama:latest",provider="local",status="200"}"#
        ),
        Some(1.0),
        "{m}"
    );
    let r = reqwest::get(gw.url("/v1/models/mock-llama:latest")).await.unwrap();
    assert_eq!(r.status(), 200);
    // A reload keeps serving what was discovered, before discovery runs again.
    let cfg = tollgate::config::parse(&yaml, &|_| None).unwrap();
    gw.gateway.reload(&cfg);
    assert_eq!(model_list(&gw).await, listed);
    let resp = gw.post("/v1/chat/completions", &ask_discovered).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_unreachable_ollama_leaves_the_configured_models_listed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "providers:\n  local: {{ kind: ollama, base_url: http://{closed}, discover_models: true, timeouts: {{ connect: 200ms }} }}\nmodels:\n  - {{ name: llama, provider: local, upstream_model: llama3.2 }}\n"
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(model_list(&gw).await, [("llama".to_owned(), "local".to_owned())]);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "mock-llama:latest", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 404);
}
