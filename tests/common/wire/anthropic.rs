//! Anthropic's Messages API.

use serde_json::{Value, json};

use super::*;

pub fn parse(body: &Value) -> Ask {
    let mut ask = Ask {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        stream: body["stream"].as_bool().unwrap_or(false),
        system: text_of(&body["system"]),
        json_mode: body.pointer("/output_config/format/type").and_then(Value::as_str) == Some("json_schema"),
        stops: strings(body.get("stop_sequences")),
        max_tokens: body["max_tokens"].as_u64(),
        temperature: body["temperature"].as_f64(),
        tools: tool_names(&body["tools"], "/name"),
        ..Ask::default()
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") {
        ask.user_text = text_of(&user["content"]);
        for block in user["content"].as_array().into_iter().flatten() {
            match block.pointer("/source/type").and_then(Value::as_str) {
                Some("base64") => ask
                    .images
                    .push(block["source"]["media_type"].as_str().unwrap_or("?").to_owned()),
                Some("url") => ask
                    .images
                    .push(block["source"]["url"].as_str().unwrap_or("?").to_owned()),
                _ => {}
            }
        }
    }
    ask
}

fn stop_reason(f: &Finish) -> (&'static str, Value) {
    match f {
        Finish::Stop => ("end_turn", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", json!(s)),
        Finish::Length => ("max_tokens", Value::Null),
        Finish::ToolUse => ("tool_use", Value::Null),
    }
}

fn usage(output: u64) -> Value {
    json!({"input_tokens": PROMPT_TOKENS - CACHED_TOKENS, "cache_creation_input_tokens": 0, "cache_read_input_tokens": CACHED_TOKENS,
           "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}, "output_tokens": output, "service_tier": "standard"})
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

pub fn render(ask: &Ask, a: &Answer) -> Out {
    if a.fail_before {
        return Out::Json {
            status: 429,
            headers: vec![("retry-after", RETRY_AFTER_SECS.to_string())],
            body: json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}, "request_id": "req_mock"}),
        };
    }
    let (reason, sequence) = stop_reason(&a.finish);
    if !ask.stream {
        let mut content = Vec::new();
        if !a.pieces.is_empty() {
            content.push(json!({"type": "text", "text": a.text()}));
        }
        if let Some(t) = &a.tool {
            let input: Value = serde_json::from_str(&t.arguments()).unwrap();
            content.push(json!({"type": "tool_use", "id": "toolu_mock_1", "name": t.name, "input": input}));
        }
        return Out::ok(
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": ask.model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence, "usage": usage(COMPLETION_TOKENS)}),
        );
    }
    let mut frames = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": ask.model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1)}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    if !a.pieces.is_empty() {
        frames.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        for p in &a.pieces {
            frames.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        if a.fail_midway {
            frames.push(event(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
            return Out::Frames {
                content_type: "text/event-stream",
                frames,
            };
        }
        frames.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    if let Some(t) = &a.tool {
        frames.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": t.name, "input": {}}}),
        ));
        for p in std::iter::once("").chain(t.pieces.iter().map(String::as_str)) {
            frames.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    frames.push(event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": {"output_tokens": COMPLETION_TOKENS}}),
    ));
    frames.push(event("message_stop", &json!({"type": "message_stop"})));
    Out::Frames {
        content_type: "text/event-stream",
        frames,
    }
}
