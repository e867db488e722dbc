//! The Gemini provider end to end: an OpenAI client, tollgate, and a mock
//! speaking Google's generateContent API (fixtures from its wire format).

mod common;

use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, fixture, fixture_json, metric, sse_data};
use serde_json::{Value, json};

const KEY: &str = "AIza-test-key-0123456789";

async fn setup() -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  google: {{ kind: gemini, base_url: http://{}/v1beta, api_key: \"${{GEMINI_API_KEY}}\" }}\nmodels:\n  - {{ name: flash, provider: google, upstream_model: gemini-2.5-flash }}\n",
        mock.addr
    );
    let gw = TestGateway::start(&yaml, &[("GEMINI_API_KEY", KEY)]).await;
    (mock, gw)
}

fn ask() -> Value {
    json!({"model": "flash", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}], "max_tokens": 64})
}

#[tokio::test]
async fn a_chat_request_is_translated_there_and_back() {
    let (mock, gw) = setup().await;
    mock.push(Script::json(200, fixture_json("gemini/generate_response.json")));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(!v["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    let got = mock.last();
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(got.query, None, "the key never goes in the URL");
    assert_eq!(got.headers["x-goog-api-key"], KEY);
    assert_eq!(
        got.body,
        json!({"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}], "generationConfig": {"maxOutputTokens": 64}})
    );
}

#[tokio::test]
async fn a_stream_that_closes_after_its_finish_reason_is_complete() {
    let (mock, gw) = setup().await;
    let events: Vec<String> = fixture("gemini/stream.sse")
        .split("\r\n\r\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect();
    mock.push(Script::Stream {
        events: events.clone(),
        gap: Duration::ZERO,
        done: false,
        break_after: None,
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
    assert_eq!(text, "Paris is 18°C and overcast today.");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 19);
    assert_eq!(
        mock.last().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(mock.last().query.as_deref(), Some("alt=sse"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_tokens_total{model="flash",provider="google",type="completion"}"#
        ),
        Some(10.0)
    );

    // Closed before a finish reason: cut short.
    mock.push(Script::Stream {
        events: events[..1].to_vec(),
        gap: Duration::ZERO,
        done: false,
        break_after: None,
    });
    let data = sse_data(&gw.post("/v1/chat/completions", &req).await.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_disconnected");
}

#[tokio::test]
async fn google_errors_become_openai_errors() {
    let (mock, gw) = setup().await;
    mock.push(Script::error_fixture("gemini/error_429_resource_exhausted.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "37", "from RetryInfo.retryDelay");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "RESOURCE_EXHAUSTED"
    );

    mock.push(Script::error_fixture("gemini/error_400_api_key_invalid.json"));
    let resp = gw.post("/v1/chat/completions", &ask()).await;
    assert_eq!(
        resp.status(),
        502,
        "a bad gateway key is the gateway's problem, not the client's"
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_auth_failed"
    );

    mock.push(Script::error_fixture("gemini/error_503_unavailable.json"));
    assert_eq!(gw.post("/v1/chat/completions", &ask()).await.status(), 503);
}

#[tokio::test]
async fn embeddings_use_batch_embed_contents() {
    let (mock, gw) = setup().await;
    let one = fixture_json("gemini/embed_response.json")["embedding"].clone();
    mock.push(Script::json(200, json!({"embeddings": [one.clone(), one]})));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "flash", "input": ["a", "b"], "dimensions": 4}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"], json!([0.0123, -0.0456, 0.0789, -0.0321]));
    let got = mock.last();
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-flash:batchEmbedContents");
    assert_eq!(
        got.body["requests"][1],
        json!({"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4})
    );
}
