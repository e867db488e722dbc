//! Golden tests of every translation, from the providers' wire-format
//! fixtures (tests/fixtures, copied from the shared protocol notes): the
//! request tollgate sends upstream, and what the client receives for an
//! upstream answer, stream or error. Each is an insta JSON snapshot in
//! tests/snapshots, so a change to a translation shows as a JSON diff;
//! review one with `cargo insta review` (or rerun with INSTA_UPDATE=always
//! and read `git diff`).

mod common;

use std::time::Duration;

use common::{MockUpstream, Script, TestGateway, fixture, fixture_json};
use serde_json::{Map, Value, json};

/// A fixed request id makes the ids tollgate derives from it stable.
const REQUEST_ID: &str = "golden-0001";

async fn gateway(kind_yaml: &str, mock: &MockUpstream) -> TestGateway {
    let kind_yaml = kind_yaml.replace("ADDR", &mock.addr.to_string());
    let yaml = format!(
        "providers:\n  up: {{ {kind_yaml} }}\nmodels:\n  - {{ name: m, provider: up, upstream_model: upstream-model }}\n"
    );
    let env = [("KEY", "test-key-0123456789")];
    TestGateway::start(&yaml, &env).await
}

const OPENAI: &str = "kind: openai, base_url: \"http://ADDR/v1\", api_key: \"${KEY}\"";
const AZURE: &str = "kind: azure, base_url: \"http://ADDR\", api_key: \"${KEY}\"";
const ANTHROPIC: &str = "kind: anthropic, base_url: \"http://ADDR\", api_key: \"${KEY}\", max_tokens: 1024";
const GEMINI: &str = "kind: gemini, base_url: \"http://ADDR/v1beta\", api_key: \"${KEY}\"";
const OLLAMA: &str = "kind: ollama, base_url: \"http://ADDR\"";
const TGI: &str = "kind: huggingface, base_url: \"http://ADDR\", chat_template: llama3";
const TGI_MESSAGES: &str = "kind: huggingface, api: messages, base_url: \"http://ADDR\"";

/// Timestamps are the only part of an answer that changes from run to run.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(created) = map.get_mut("created") {
                *created = json!("[created]");
            }
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Sends `body` to `path`; the snapshot records what went upstream and what came back.
async fn exchange(kind_yaml: &str, path: &str, body: Value, upstream: Script) -> Value {
    let mock = MockUpstream::start().await;
    mock.push(upstream);
    let gw = gateway(kind_yaml, &mock).await;
    let resp = reqwest::Client::new()
        .post(gw.url(path))
        .header("x-request-id", REQUEST_ID)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for name in ["retry-after", "x-tollgate-usage", "content-type"] {
        if let Some(v) = resp.headers().get(name) {
            headers.insert(name.into(), json!(v.to_str().unwrap()));
        }
    }
    let text = resp.text().await.unwrap();
    let answer = if headers.get("content-type").is_some_and(|t| t == "text/event-stream") {
        Value::Array(
            common::sse_data(&text)
                .iter()
                .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
                .collect(),
        )
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!(text))
    };
    let sent = mock
        .received()
        .into_iter()
        .next()
        .map(|r| json!({"path": r.path, "query": r.query, "body": r.body}));
    let mut out = json!({"upstream_request": sent, "status": status, "headers": headers, "answer": answer});
    normalise(&mut out);
    out
}

/// A fixture request, asking for the test config's model, not streamed
/// (`stream` turns it into a stream).
fn request(path: &str) -> Value {
    let mut v = fixture_json(path);
    let fields = v.as_object_mut().unwrap();
    fields.insert("model".into(), json!("m"));
    fields.remove("stream");
    fields.remove("stream_options");
    v
}

/// The OpenAI chat fixture: system, image, tool call and result, tools.
fn chat_request() -> Value {
    request("openai/chat_request.json")
}

/// A request every provider can take: system, user text, sampling and a stop sequence.
fn simple_request() -> Value {
    json!({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 20, "temperature": 0.2, "top_p": 0.95, "stop": ["\n\n"], "seed": 42})
}

fn json_mode(mut body: Value) -> Value {
    body["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}});
    body
}

fn stream(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

fn sse(path: &str, done: bool) -> Script {
    let events = fixture(path)
        .split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|d| d.trim_start().to_owned())
        })
        .filter(|d| d != "[DONE]")
        .collect();
    Script::Stream {
        events,
        gap: Duration::ZERO,
        done,
        break_after: None,
    }
}

fn ndjson(path: &str) -> Script {
    Script::Ndjson {
        lines: fixture(path)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        gap: Duration::ZERO,
    }
}

fn with_headers(path: &str, headers: &[(&str, &str)]) -> Script {
    Script::Json {
        status: 200,
        body: fixture_json(path),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        delay: Duration::ZERO,
    }
}

/// `batchEmbedContents` answers one `embedContent` answer (the fixture) per input.
fn gemini_batch_embed_answer() -> Script {
    let one = fixture_json("gemini/embed_response.json")["embedding"].clone();
    Script::json(200, json!({"embeddings": [one.clone(), one]}))
}

macro_rules! golden {
    ($($name:ident: $kind:expr, $path:expr, $body:expr, $upstream:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let got = exchange($kind, $path, $body, $upstream).await;
            insta::assert_json_snapshot!(stringify!($name), got);
        }
    )*};
}

const CHAT: &str = "/v1/chat/completions";

golden! {
    // Anthropic: request out, answers, streams, errors.
    anthropic_chat: ANTHROPIC, CHAT, chat_request(), Script::json(200, fixture_json("anthropic/messages_response.json"));
    anthropic_tool_use: ANTHROPIC, CHAT, chat_request(), Script::json(200, fixture_json("anthropic/messages_response_tool_use.json"));
    anthropic_stream: ANTHROPIC, CHAT, stream(simple_request()), sse("anthropic/messages_stream.sse", false);
    anthropic_stream_tool_use: ANTHROPIC, CHAT, stream(chat_request()), sse("anthropic/messages_stream_tool_use.sse", false);
    anthropic_error_400: ANTHROPIC, CHAT, simple_request(), Script::error_fixture("anthropic/error_400_invalid_request.json");
    anthropic_error_401: ANTHROPIC, CHAT, simple_request(), Script::error_fixture("anthropic/error_401_authentication.json");
    anthropic_error_429: ANTHROPIC, CHAT, simple_request(), Script::error_fixture("anthropic/error_429_rate_limit.json");
    anthropic_error_529: ANTHROPIC, CHAT, stream(simple_request()), Script::error_fixture("anthropic/error_529_overloaded.json");

    // Gemini.
    gemini_chat: GEMINI, CHAT, chat_request(), Script::json(200, fixture_json("gemini/generate_response.json"));
    gemini_function_call: GEMINI, CHAT, chat_request(), Script::json(200, fixture_json("gemini/generate_response_function_call.json"));
    gemini_stream: GEMINI, CHAT, stream(simple_request()), sse("gemini/stream.sse", false);
    gemini_embeddings: GEMINI, "/v1/embeddings", request("openai/embeddings_request.json"), gemini_batch_embed_answer();
    gemini_error_400_api_key: GEMINI, CHAT, simple_request(), Script::error_fixture("gemini/error_400_api_key_invalid.json");
    gemini_error_429: GEMINI, CHAT, simple_request(), Script::error_fixture("gemini/error_429_resource_exhausted.json");
    gemini_error_503: GEMINI, CHAT, stream(simple_request()), Script::error_fixture("gemini/error_503_unavailable.json");

    // Ollama native.
    ollama_chat: OLLAMA, CHAT, chat_request(), Script::json(200, fixture_json("ollama/chat_response.json"));
    ollama_stream: OLLAMA, CHAT, stream(simple_request()), ndjson("ollama/chat_stream.ndjson");
    ollama_stream_tool_call: OLLAMA, CHAT, stream(chat_request()), ndjson("ollama/chat_stream_tool_call.ndjson");
    ollama_embeddings: OLLAMA, "/v1/embeddings", request("openai/embeddings_request.json"), Script::json(200, fixture_json("ollama/embed_response.json"));
    ollama_error_404: OLLAMA, CHAT, simple_request(), Script::error_fixture("ollama/error_404_model_not_found.json");
    ollama_error_400_no_tools: OLLAMA, CHAT, chat_request(), Script::error_fixture("ollama/error_400_no_tools.json");

    // Hugging Face TGI native and TEI.
    tgi_generate: TGI, CHAT, simple_request(), with_headers("tgi/generate_response.json", &[("x-prompt-tokens", "17"), ("x-generated-tokens", "8")]);
    tgi_generate_without_counts: TGI, CHAT, simple_request(), Script::json(200, json!({"generated_text": "Paris."}));
    tgi_generate_stream: TGI, CHAT, stream(simple_request()), sse("tgi/generate_stream.sse", false);
    tgi_completions_stream: TGI, "/v1/completions", json!({"model": "m", "prompt": "The capital of France is", "max_tokens": 20, "stream": true}), sse("tgi/generate_stream.sse", false);
    tgi_error_422: TGI, CHAT, simple_request(), Script::error_fixture("tgi/error_422_validation.json");
    tgi_error_429: TGI, CHAT, stream(simple_request()), Script::error_fixture("tgi/error_429_overloaded.json");
    tei_embeddings: TGI, "/v1/embeddings", json!({"model": "m", "input": ["The food was delicious", "The service was slow"]}), with_headers("tei/embed_response.json", &[("x-compute-tokens", "14")]);
    tei_error_413: TGI, "/v1/embeddings", json!({"model": "m", "input": "x"}), Script::error_fixture("tei/error_413_batch_too_large.json");
    tei_error_422: TGI, "/v1/embeddings", json!({"model": "m", "input": "x"}), Script::error_fixture("tei/error_422_validation.json");

    // TGI's Messages API: its empty ids and finish reasons put right, JSON mode in its shape.
    tgi_messages_chat: TGI_MESSAGES, CHAT, json_mode(request("tgi/chat_request.json")), Script::json(200, fixture_json("tgi/chat_response.json"));
    tgi_messages_stream: TGI_MESSAGES, CHAT, stream(request("tgi/chat_request.json")), sse("tgi/chat_stream.sse", true);

    // OpenAI-compatible servers pass through: OpenAI, Azure, the Hugging Face router.
    openai_chat: OPENAI, CHAT, chat_request(), Script::json(200, fixture_json("openai/chat_response.json"));
    openai_stream_tool_call: OPENAI, CHAT, stream(chat_request()), sse("openai/chat_stream_tool_call.sse", true);
    openai_error_400: OPENAI, CHAT, simple_request(), Script::error_fixture("openai/error_400_context_length.json");
    openai_error_401: OPENAI, CHAT, simple_request(), Script::error_fixture("openai/error_401_invalid_api_key.json");
    openai_error_429: OPENAI, CHAT, simple_request(), Script::error_fixture("openai/error_429_rate_limit.json");
    azure_stream: AZURE, CHAT, stream(simple_request()), sse("azure/chat_stream.sse", true);
    azure_error_400_content_filter: AZURE, CHAT, simple_request(), Script::error_fixture("azure/error_400_content_filter.json");
    azure_error_404: AZURE, CHAT, simple_request(), Script::error_fixture("azure/error_404_deployment_not_found.json");
    hf_router_chat: OPENAI, CHAT, request("hf_router/chat_request.json"), Script::json(200, fixture_json("hf_router/chat_response.json"));
    hf_router_stream: OPENAI, CHAT, stream(simple_request()), sse("hf_router/chat_stream.sse", true);
    hf_router_error_400: OPENAI, CHAT, simple_request(), Script::error_fixture("hf_router/error_400_model_not_supported.json");
}
