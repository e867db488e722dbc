//! OpenAI's chat completions and embeddings; for model `tgi`, in the dialect
//! of TGI's Messages API: empty ids, `stop_sequence`, tool calls ended by
//! `stop` (streams by no finish reason at all), `data:` without a space, and
//! JSON mode read only from a `value` key.

use serde_json::{Value, json};

use super::*;

pub fn parse(body: &Value) -> Ask {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut ask = Ask {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        stream: body["stream"].as_bool().unwrap_or(false),
        include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true),
        json_mode: if body["model"] == "tgi" {
            body.pointer("/response_format/value").is_some()
        } else {
            matches!(
                body.pointer("/response_format/type").and_then(Value::as_str),
                Some("json_object" | "json_schema")
            )
        },
        stops: strings(body.get("stop")),
        stop_was_text: body["stop"].is_string(),
        max_tokens: body["max_completion_tokens"].as_u64().or(body["max_tokens"].as_u64()),
        temperature: body["temperature"].as_f64(),
        tools: tool_names(&body["tools"], "/function/name"),
        ..Ask::default()
    };
    let system: Vec<String> = messages
        .iter()
        .filter(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
        .map(|m| text_of(&m["content"]))
        .collect();
    ask.system = system.join("\n\n");
    if let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") {
        ask.user_text = text_of(&user["content"]);
        for part in user["content"].as_array().into_iter().flatten() {
            if let Some(url) = part.pointer("/image_url/url").and_then(Value::as_str) {
                ask.images.push(image_name(url));
            }
        }
    }
    ask
}

/// A data URL by its MIME type, any other URL as it is.
pub fn image_name(url: &str) -> String {
    url.strip_prefix("data:")
        .and_then(|rest| rest.split_once(';'))
        .map_or_else(|| url.to_owned(), |(mime, _)| mime.to_owned())
}

fn finish(f: &Finish, tgi: bool) -> &'static str {
    match f {
        Finish::StopSequence(_) if tgi => "stop_sequence",
        Finish::ToolUse if tgi => "stop",
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolUse => "tool_calls",
    }
}

fn usage() -> Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
}

pub fn render(ask: &Ask, a: &Answer) -> Out {
    let tgi = ask.model == "tgi";
    if tgi && ask.stop_was_text {
        return Out::status(
            422,
            json!({"error": "Failed to deserialize the JSON body into the target type: stop: invalid type: string, expected a sequence", "error_type": "validation"}),
        );
    }
    if tgi && a.fail_before {
        return Out::status(429, json!({"error": "Model is overloaded", "error_type": "overloaded"}));
    }
    if a.fail_before {
        return Out::Json {
            status: 429,
            headers: vec![("retry-after", RETRY_AFTER_SECS.to_string())],
            body: json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        };
    }
    let id = if tgi { "" } else { "chatcmpl-mock" };
    let call_id = |t: &ToolCall| if tgi { "0".to_owned() } else { t.id.clone() };
    if !ask.stream {
        let mut message = json!({"role": "assistant", "content": if a.tool.is_some() { Value::Null } else { json!(a.text()) }, "refusal": null});
        if let Some(t) = &a.tool {
            message["tool_calls"] = json!([{"id": call_id(t), "type": "function", "function": {"name": t.name, "arguments": t.arguments()}}]);
        }
        return Out::ok(
            json!({"id": id, "object": "chat.completion", "created": 1_754_499_997, "model": ask.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish(&a.finish, tgi)}],
            "usage": usage()}),
        );
    }
    let frame = |v: &Value| {
        if tgi {
            Bytes::from(format!("data:{v}\n\n"))
        } else {
            sse(v)
        }
    };
    let chunk = |mut delta: Value, finish: Option<&str>| {
        if tgi {
            // TGI repeats the role in every delta.
            delta["role"] = json!("assistant");
        }
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_754_499_997, "model": ask.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if ask.include_usage {
            c["usage"] = Value::Null;
        }
        frame(&c)
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    frames.extend(a.pieces.iter().map(|p| chunk(json!({"content": p}), None)));
    if let Some(t) = &a.tool {
        frames.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": call_id(t), "type": "function", "function": {"name": t.name, "arguments": ""}}]}),
            None,
        ));
        for p in &t.pieces {
            frames.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
                None,
            ));
        }
    }
    if a.fail_midway && tgi {
        // TGI's Messages API: the error names a status, and [DONE] still follows.
        frames.push(frame(&json!({"error": {"message": "Request failed during generation: Server error: CUDA out of memory", "http_status_code": 424}})));
        frames.push(Bytes::from_static(b"data:[DONE]\n\n"));
        return Out::Frames {
            content_type: "text/event-stream",
            frames,
        };
    }
    if a.fail_midway {
        frames.push(frame(
            &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}),
        ));
        return Out::Frames {
            content_type: "text/event-stream",
            frames,
        };
    }
    // TGI may end a tool call's stream with no finish reason at all.
    if !(tgi && a.tool.is_some()) {
        frames.push(chunk(json!({}), Some(finish(&a.finish, tgi))));
    }
    if ask.include_usage {
        frames.push(frame(&json!({"id": id, "object": "chat.completion.chunk", "created": 1_754_499_997, "model": ask.model, "choices": [], "usage": usage()})));
    }
    frames.push(if tgi {
        Bytes::from_static(b"data:[DONE]\n\n")
    } else {
        Bytes::from_static(b"data: [DONE]\n\n")
    });
    Out::Frames {
        content_type: "text/event-stream",
        frames,
    }
}

pub fn embeddings(body: &Value) -> Out {
    let inputs = strings(body.get("input"));
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embedding(t)}))
        .collect();
    Out::ok(json!({"object": "list", "data": data, "model": body["model"],
                   "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}}))
}
