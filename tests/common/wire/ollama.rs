//! Ollama's native API (`/api/chat` with NDJSON streams, `/api/embed`, `/api/tags`).

use serde_json::{Value, json};

use super::*;

pub fn parse(body: &Value) -> Ask {
    let options = &body["options"];
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut ask = Ask {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        // Ollama streams unless told not to.
        stream: body["stream"].as_bool().unwrap_or(true),
        json_mode: body.get("format").is_some_and(|f| f == "json" || f.is_object()),
        stops: strings(options.get("stop")),
        max_tokens: options["num_predict"].as_u64(),
        temperature: options["temperature"].as_f64(),
        tools: tool_names(&body["tools"], "/function/name"),
        ..Ask::default()
    };
    ask.system = messages
        .iter()
        .filter(|m| m["role"] == "system")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    if let Some(user) = messages.iter().rev().find(|m| m["role"] == "user") {
        ask.user_text = user["content"].as_str().unwrap_or_default().to_owned();
        // Ollama takes bare base64; the mock names an image by its magic number.
        for image in user["images"].as_array().into_iter().flatten() {
            let b64 = image.as_str().unwrap_or_default();
            let mime = if b64.starts_with("iVBOR") {
                "image/png"
            } else if b64.starts_with("/9j/") {
                "image/jpeg"
            } else {
                "image/unknown"
            };
            ask.images.push(mime.to_owned());
        }
    }
    ask
}

fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

pub fn render(ask: &Ask, a: &Answer) -> Out {
    if a.fail_before {
        return Out::status(
            503,
            json!({"error": "server busy, please try again.  maximum pending requests exceeded"}),
        );
    }
    let created = "2025-08-06T17:06:02.402113Z";
    let reason = if a.finish == Finish::Length { "length" } else { "stop" };
    let calls = a.tool.as_ref().map(|t| {
        let args: Value = serde_json::from_str(&t.arguments()).unwrap();
        json!([{"id": t.id, "function": {"index": 0, "name": t.name, "arguments": args}}])
    });
    let done = |message: Value| {
        json!({"model": ask.model, "created_at": created, "message": message, "done_reason": reason, "done": true,
               "total_duration": 611_520_917u64, "load_duration": 20_110_542u64, "prompt_eval_count": PROMPT_TOKENS,
               "prompt_eval_duration": 212_004_000u64, "eval_count": COMPLETION_TOKENS, "eval_duration": 375_612_000u64})
    };
    if !ask.stream {
        let mut message = json!({"role": "assistant", "content": a.text()});
        if let Some(c) = calls {
            message["tool_calls"] = c;
        }
        return Out::ok(done(message));
    }
    let mut frames: Vec<Bytes> = a
        .pieces
        .iter()
        .map(|p| line(&json!({"model": ask.model, "created_at": created, "message": {"role": "assistant", "content": p}, "done": false})))
        .collect();
    if let Some(c) = calls {
        frames.push(line(&json!({"model": ask.model, "created_at": created, "message": {"role": "assistant", "content": "", "tool_calls": c}, "done": false})));
    }
    if a.fail_midway {
        frames.push(line(
            &json!({"error": "an error was encountered while running the model: unexpected EOF"}),
        ));
    } else {
        frames.push(line(&done(json!({"role": "assistant", "content": ""}))));
    }
    Out::Frames {
        content_type: "application/x-ndjson",
        frames,
    }
}

pub fn embeddings(body: &Value) -> Out {
    let embeddings: Vec<Vec<f32>> = strings(body.get("input")).iter().map(|t| embedding(t)).collect();
    Out::ok(
        json!({"model": body["model"], "embeddings": embeddings, "total_duration": 14_143_917u64,
                   "load_duration": 1_019_500u64, "prompt_eval_count": PROMPT_TOKENS}),
    )
}

pub fn tags() -> Out {
    let model = |name: &str, family: &str| {
        json!({"name": name, "model": name, "modified_at": "2025-07-30T09:12:44.261524108+02:00", "size": 2_019_393_189u64,
               "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
               "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                           "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}})
    };
    Out::ok(json!({"models": [model("mock-llama:latest", "llama"), model("mock-embed:latest", "bert")]}))
}
