//! The scenario matrix: every provider kind runs the same scenarios end to
//! end, an HTTP client → tollgate → a mock speaking that provider's exact
//! wire format (tests/common/wire) → back. A provider that cannot do a
//! feature must refuse it the documented way; the README's capability
//! table is this file's summary.

mod common;

use common::TestGateway;
use common::wire::{self, WireMock};
use serde_json::{Value, json};

/// What one provider kind is expected to do.
struct Provider {
    /// The model name routed to this provider in the test config.
    model: &'static str,
    /// The name the mock answers plain prompts with ("Hello from <wire>.").
    wire: &'static str,
    tools: bool,
    embeddings: Embeddings,
    /// `json_object` reaches the upstream as an instruction in the system prompt, not a mode.
    json_object_instructed: bool,
    /// Status and `Retry-After` a client sees when the upstream is rate limited or overloaded.
    fail_status: u16,
    fail_retry_after: Option<&'static str>,
    cached_tokens: Option<u64>,
    /// The upstream reports the prompt's tokens before the answer: a stream that fails midway is metered for them.
    prompt_known_early: bool,
}

#[derive(PartialEq)]
enum Embeddings {
    No,
    Reported,
    Estimated,
}

const OPENAI: Provider = Provider {
    model: "m-openai",
    wire: "openai",
    tools: true,
    embeddings: Embeddings::Reported,
    json_object_instructed: false,
    fail_status: 429,
    fail_retry_after: Some("7"),
    prompt_known_early: false,
    cached_tokens: None,
};
const AZURE: Provider = Provider {
    model: "m-azure",
    ..OPENAI
};
const ANTHROPIC: Provider = Provider {
    model: "m-anthropic",
    wire: "anthropic",
    tools: true,
    embeddings: Embeddings::No,
    json_object_instructed: true,
    fail_status: 429,
    fail_retry_after: Some("7"),
    prompt_known_early: true,
    cached_tokens: Some(wire::CACHED_TOKENS),
};
const GEMINI: Provider = Provider {
    model: "m-gemini",
    wire: "gemini",
    tools: true,
    embeddings: Embeddings::Estimated,
    json_object_instructed: false,
    fail_status: 429,
    fail_retry_after: Some("7"),
    prompt_known_early: true,
    cached_tokens: None,
};
const OLLAMA: Provider = Provider {
    model: "m-ollama",
    wire: "ollama",
    tools: true,
    embeddings: Embeddings::Reported,
    json_object_instructed: false,
    fail_status: 503,
    fail_retry_after: None,
    prompt_known_early: false,
    cached_tokens: None,
};
const HUGGINGFACE: Provider = Provider {
    model: "m-huggingface",
    wire: "tgi",
    tools: false,
    embeddings: Embeddings::Reported,
    json_object_instructed: false,
    fail_status: 429,
    fail_retry_after: None,
    prompt_known_early: false,
    cached_tokens: None,
};

/// TGI's Messages API through `kind: huggingface, api: messages` (the mock speaks TGI's dialect for model `tgi`).
const HF_MESSAGES: Provider = Provider {
    model: "m-hf-messages",
    fail_retry_after: None,
    ..OPENAI
};

const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async fn setup() -> (WireMock, TestGateway) {
    let mock = WireMock::start().await;
    let a = mock.addr;
    let yaml = format!(
        r#"providers:
  openai: {{ kind: openai, base_url: "http://{a}/v1", api_key: "${{OPENAI_API_KEY}}" }}
  azure: {{ kind: azure, base_url: "http://{a}", api_key: "${{AZURE_API_KEY}}" }}
  anthropic: {{ kind: anthropic, base_url: "http://{a}", api_key: "${{ANTHROPIC_API_KEY}}" }}
  gemini: {{ kind: gemini, base_url: "http://{a}/v1beta", api_key: "${{GEMINI_API_KEY}}" }}
  ollama: {{ kind: ollama, base_url: "http://{a}" }}
  huggingface: {{ kind: huggingface, base_url: "http://{a}", chat_template: chatml }}
  hf-messages: {{ kind: huggingface, api: messages, base_url: "http://{a}" }}
models:
  - {{ name: m-openai, provider: openai, upstream_model: gpt-4o-mini }}
  - {{ name: m-azure, provider: azure, upstream_model: prod-gpt4o }}
  - {{ name: m-anthropic, provider: anthropic, upstream_model: claude-sonnet-4-5 }}
  - {{ name: m-gemini, provider: gemini, upstream_model: gemini-2.5-flash }}
  - {{ name: m-ollama, provider: ollama, upstream_model: "llama3.2:3b" }}
  - {{ name: m-huggingface, provider: huggingface, upstream_model: tgi }}
  - {{ name: m-hf-messages, provider: hf-messages, upstream_model: tgi }}
"#
    );
    let env = [
        ("OPENAI_API_KEY", "sk-test-openai-0123456789"),
        ("AZURE_API_KEY", "azure-test-0123456789"),
        ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789"),
        ("GEMINI_API_KEY", "gemini-test-0123456789"),
    ];
    (mock.clone(), TestGateway::start(&yaml, &env).await)
}

fn ask(p: &Provider, text: &str) -> Value {
    json!({"model": p.model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]})
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}])
}

/// A complete answer: status 200 and the parsed body.
async fn complete(gw: &TestGateway, body: &Value) -> Value {
    let resp = gw.post("/v1/chat/completions", body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// What a stream came to.
#[derive(Debug, Default)]
struct Streamed {
    text: String,
    tool_name: String,
    tool_arguments: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
    done: bool,
}

async fn stream(gw: &TestGateway, body: &Value) -> Streamed {
    let resp = gw.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let raw = resp.text().await.unwrap();
    let mut out = Streamed::default();
    for data in common::sse_data(&raw) {
        assert!(!out.done, "nothing may follow [DONE]: {raw}");
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
        if v.get("error").is_some() {
            out.error = Some(v);
            continue;
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            assert_eq!(v["choices"], json!([]), "usage comes in its own chunk");
            out.usage = Some(u.clone());
        }
        for choice in v["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            out.text.push_str(delta["content"].as_str().unwrap_or_default());
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                out.tool_name.push_str(
                    call.pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                out.tool_arguments.push_str(
                    call.pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                assert!(out.finish_reason.is_none(), "one finish reason: {raw}");
                out.finish_reason = Some(f.to_owned());
            }
        }
    }
    out
}

/// The usage is the mock's, mapped: 21 prompt tokens (cached ones among them), 5 completion tokens.
fn assert_usage(p: &Provider, usage: Option<&Value>) {
    let u = usage.unwrap_or_else(|| panic!("no usage"));
    assert_eq!(u["prompt_tokens"], wire::PROMPT_TOKENS, "{u}");
    assert_eq!(u["completion_tokens"], wire::COMPLETION_TOKENS, "{u}");
    assert_eq!(u["total_tokens"], wire::PROMPT_TOKENS + wire::COMPLETION_TOKENS, "{u}");
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64);
    assert_eq!(cached.filter(|c| *c > 0), p.cached_tokens, "{u}");
}

/// The mock's `echo` answer: what the upstream understood of the request.
async fn echo(gw: &TestGateway, body: Value) -> Value {
    let v = complete(gw, &body).await;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn plain_answer(p: &Provider) {
    let (_mock, gw) = setup().await;
    let v = complete(&gw, &ask(p, "hi")).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], format!("Hello from {}.", p.wire));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_usage(p, v.get("usage"));
    let m = gw.metrics().await;
    let prompt = format!(
        r#"tollgate_tokens_total{{model="{}",provider="{}",type="prompt"}}"#,
        p.model,
        &p.model[2..]
    );
    assert_eq!(common::metric(&m, &prompt), Some(wire::PROMPT_TOKENS as f64), "{m}");
}

async fn streaming(p: &Provider) {
    let (_mock, gw) = setup().await;
    let s = stream(&gw, &streamed(ask(p, "hi"))).await;
    assert_eq!(s.text, format!("Hello from {}.", p.wire));
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    assert_usage(p, s.usage.as_ref());
    assert!(s.done && s.error.is_none(), "{s:?}");
    // Without `include_usage`, no usage chunk reaches the client.
    let mut body = ask(p, "hi");
    body["stream"] = json!(true);
    let s = stream(&gw, &body).await;
    assert_eq!((s.usage, s.done), (None, true));
}

async fn tools(p: &Provider) {
    let (_mock, gw) = setup().await;
    let mut body = ask(p, "tool please");
    body["tools"] = weather_tool();
    if !p.tools {
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], "tools", "{v}");
        assert_eq!(v["error"]["code"], "unsupported_parameter");
        return;
    }
    let expected: Value = serde_json::from_str(wire::TOOL_ARGUMENTS).unwrap();
    let v = complete(&gw, &body).await;
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, expected);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

    let s = stream(&gw, &streamed(body)).await;
    assert_eq!(s.tool_name, "get_weather", "the name comes once");
    let args: Value = serde_json::from_str(&s.tool_arguments).unwrap_or_else(|e| panic!("{e}: {s:?}"));
    assert_eq!(args, expected);
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));
    assert_usage(p, s.usage.as_ref());
}

async fn json_mode(p: &Provider) {
    let (_mock, gw) = setup().await;
    let mut body = ask(p, "echo json");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "weather",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    assert_eq!(echo(&gw, body.clone()).await["json_mode"], true, "json_schema");
    body["response_format"] = json!({"type": "json_object"});
    let seen = echo(&gw, body).await;
    if p.json_object_instructed {
        assert_eq!(seen["json_mode"], false);
        assert!(seen["system"].as_str().unwrap().contains("JSON object"), "{seen}");
    } else {
        assert_eq!(seen["json_mode"], true, "json_object: {seen}");
    }
}

async fn image_input(p: &Provider) {
    let (_mock, gw) = setup().await;
    let body = json!({"model": p.model, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
        {"type": "text", "text": "echo what is this?"},
    ]}]});
    let seen = echo(&gw, body).await;
    assert_eq!(seen["images"], json!(["image/png"]), "{seen}");
    assert_eq!(seen["user_text"], "echo what is this?");
}

async fn request_parameters(p: &Provider) {
    let (_mock, gw) = setup().await;
    let mut body = ask(p, "echo params");
    body["stop"] = json!(["END"]);
    body["max_tokens"] = json!(7);
    body["temperature"] = json!(0.5);
    let seen = echo(&gw, body).await;
    assert_eq!(seen["system"], "Be brief.");
    assert_eq!(seen["stops"], json!(["END"]));
    assert_eq!(seen["max_tokens"], 7);
    assert_eq!(seen["temperature"], 0.5);
}

async fn stop_sequence(p: &Provider) {
    let (_mock, gw) = setup().await;
    let mut body = ask(p, "stop");
    body["stop"] = json!("END");
    let v = complete(&gw, &body).await;
    assert_eq!(
        v["choices"][0]["message"]["content"], "one two three",
        "the stop sequence is not part of the answer"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let s = stream(&gw, &streamed(body)).await;
    assert_eq!(s.text, "one two three");
    assert_eq!(s.finish_reason.as_deref(), Some("stop"));
}

async fn length_cut(p: &Provider) {
    let (_mock, gw) = setup().await;
    let mut body = ask(p, "length");
    body["max_tokens"] = json!(2);
    let v = complete(&gw, &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], "one two");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let s = stream(&gw, &streamed(body)).await;
    assert_eq!(s.finish_reason.as_deref(), Some("length"));
}

async fn utf8_split(p: &Provider) {
    let (_mock, gw) = setup().await;
    let s = stream(&gw, &streamed(ask(p, "utf8"))).await;
    assert_eq!(s.text, wire::UTF8_TEXT);
    assert!(s.done, "{s:?}");
    let v = complete(&gw, &ask(p, "utf8")).await;
    assert_eq!(v["choices"][0]["message"]["content"], wire::UTF8_TEXT);
}

async fn error_before_the_stream(p: &Provider) {
    let (_mock, gw) = setup().await;
    for body in [ask(p, "fail"), streamed(ask(p, "fail"))] {
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), p.fail_status, "{body}");
        assert_eq!(
            resp.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            p.fail_retry_after
        );
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
}

async fn error_during_the_stream(p: &Provider) {
    // The tables load in the background on first need; here they are wanted at once.
    tollgate::metering::estimate::Encoding::O200k.load_now();
    let (_mock, gw) = setup().await;
    let s = stream(&gw, &streamed(ask(p, "failmid"))).await;
    assert_eq!(s.text, "partial answer");
    let error = s.error.unwrap_or_else(|| panic!("no error event: {:?}", s.text));
    assert!(
        error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert!(!s.done, "a failed stream does not end with [DONE]");
    assert_eq!(s.finish_reason, None);
    let m = gw.metrics().await;
    let prompt_series = format!(
        r#"tollgate_tokens_total{{model="{}",provider="{}",type="prompt"}}"#,
        p.model,
        &p.model[2..]
    );
    let prompt = common::metric(&m, &prompt_series).unwrap();
    let completion = common::metric(&m, &prompt_series.replace("prompt", "completion")).unwrap();
    if p.prompt_known_early {
        // Reported before the failure: kept as reported.
        assert_eq!(prompt, wire::PROMPT_TOKENS as f64, "{m}");
    } else {
        // Reported only at the end, which never came: estimated from the request and the text streamed.
        assert!(prompt > 0.0 && prompt != wire::PROMPT_TOKENS as f64, "{m}");
        // OpenAI's model by its tokenizer (o200k_base: "partial", " answer"); others
        // by the approximation, 14 characters at four a token.
        let expected = if p.model == "m-openai" { 2.0 } else { 4.0 };
        assert_eq!(completion, expected, "\"partial answer\"");
    }
}

async fn embeddings(p: &Provider) {
    let (_mock, gw) = setup().await;
    let body = json!({"model": p.model, "input": ["ab", "héllo"]});
    let resp = gw.post("/v1/embeddings", &body).await;
    if p.embeddings == Embeddings::No {
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_endpoint");
        return;
    }
    assert_eq!(resp.status(), 200);
    let estimated = resp.headers().get("x-tollgate-usage").is_some_and(|v| v == "estimated");
    assert_eq!(estimated, p.embeddings == Embeddings::Estimated);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"], json!(wire::embedding("ab")));
    assert_eq!(v["data"][1]["embedding"], json!(wire::embedding("héllo")));
    assert_eq!(v["data"][1]["index"], 1);
    if !estimated {
        assert_eq!(v["usage"]["prompt_tokens"], wire::PROMPT_TOKENS);
    }
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

macro_rules! matrix {
    ($($module:ident => $provider:ident),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[tokio::test]
            async fn plain_answer() { super::plain_answer(&$provider).await }
            #[tokio::test]
            async fn streaming_with_usage() { super::streaming(&$provider).await }
            #[tokio::test]
            async fn tools_with_streamed_arguments() { super::tools(&$provider).await }
            #[tokio::test]
            async fn json_mode() { super::json_mode(&$provider).await }
            #[tokio::test]
            async fn image_input() { super::image_input(&$provider).await }
            #[tokio::test]
            async fn request_parameters() { super::request_parameters(&$provider).await }
            #[tokio::test]
            async fn stop_sequence() { super::stop_sequence(&$provider).await }
            #[tokio::test]
            async fn length_cut() { super::length_cut(&$provider).await }
            #[tokio::test]
            async fn utf8_split_across_reads() { super::utf8_split(&$provider).await }
            #[tokio::test]
            async fn error_before_the_stream() { super::error_before_the_stream(&$provider).await }
            #[tokio::test]
            async fn error_during_the_stream() { super::error_during_the_stream(&$provider).await }
            #[tokio::test]
            async fn embeddings() { super::embeddings(&$provider).await }
        }
    )*};
}

matrix! {
    openai => OPENAI,
    azure => AZURE,
    anthropic => ANTHROPIC,
    gemini => GEMINI,
    ollama => OLLAMA,
    huggingface => HUGGINGFACE,
    hf_messages => HF_MESSAGES,
}
