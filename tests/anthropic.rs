//! The Anthropic provider end to end: an OpenAI client, tollgate, and a mock
//! that speaks Anthropic's Messages API (fixtures from its wire format).

mod common;

use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, fixture, fixture_json, metric, sse_data};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-0123456789";

async fn setup() -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  claude: {{ kind: anthropic, base_url: http://{}, api_key: \"${{ANTHROPIC_API_KEY}}\", max_tokens: 512, timeouts: {{ idle: 1s }} }}\nmodels:\n  - {{ name: claude, provider: claude, upstream_model: claude-sonnet-4-5-20250929 }}\n",
        mock.addr
    );
    let gw = TestGateway::start(&yaml, &[("ANTHROPIC_API_KEY", KEY)]).await;
    (mock, gw)
}

fn ask() -> Value {
    json!({"model": "claude", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]})
}

/// The `data:` payloads of an Anthropic `.sse` fixture.
fn anthropic_events(path: &str) -> Vec<String> {
    fixture(path)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_chat_request_is_translated_there_and_back() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(200, fixture_json("anthropic/messages_response.json")));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris is 18°C and overcast.");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 412, "completion_tokens": 12, "total_tokens": 424, "prompt_tokens_details": {"cached_tokens": 0}})
    );

    let got = mock.last();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.headers["x-api-key"], KEY);
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(
        got.body,
        json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 512, "system": "Be brief.", "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="claude",provider="claude",type="prompt"}"#
        ),
        Some(412.0)
    );
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_as_openai_chunks() {
    let (mock, gw) = setup().await;
    let events = anthropic_events("anthropic/messages_stream_tool_use.sse");
    mock.push(Script::Stream {
        events,
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let mut req = ask();
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let resp = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check the weather.");
    let arguments: String = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|call| call["function"]["arguments"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(mock.last().body["stream"], true);
    assert_eq!(mock.last().body["tools"][0]["name"], "get_weather");
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors() {
    let (mock, gw) = setup().await;
    mock.push(Script::error_fixture("anthropic/error_529_overloaded.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(v["error"]["message"], "Overloaded");

    mock.push(Script::error_fixture("anthropic/error_429_rate_limit.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());

    mock.push(Script::error_fixture("anthropic/error_400_invalid_request.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    mock.push(Script::error_fixture("anthropic/error_401_authentication.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_auth_failed"
    );
}

#[tokio::test]
async fn failures_during_a_stream_end_it_with_an_error_event() {
    let (mock, gw) = setup().await;
    let mut req = ask();
    req["stream"] = json!(true);
    let mut events = anthropic_events("anthropic/messages_stream.sse");
    events.truncate(4);
    events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string());
    mock.push(Script::Stream {
        events,
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "overloaded_error");

    // An error as the very first event is still an HTTP error, with the status its type means.
    mock.push(Script::Stream {
        events: vec![
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string(),
        ],
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let resp = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 503);

    let mut cut = anthropic_events("anthropic/messages_stream.sse");
    cut.truncate(4);
    mock.push(Script::Stream {
        events: cut,
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_disconnected");
}

#[tokio::test]
async fn what_anthropic_cannot_do_is_refused_before_calling_it() {
    let (mock, gw) = setup().await;
    let mut req = ask();
    req["n"] = json!(2);
    let resp = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["param"], "n");
    let resp = gw
        .post("/v1/embeddings", &json!({"model": "claude", "input": "x"}))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_endpoint"
    );
    assert!(mock.received().is_empty());
}
