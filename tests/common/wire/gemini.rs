//! Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`).

use serde_json::{Value, json};

use super::*;

fn texts(parts: &Value) -> String {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn parse(body: &Value, model: &str, stream: bool) -> Ask {
    let config = &body["generationConfig"];
    let mut ask = Ask {
        model: model.to_owned(),
        stream,
        system: texts(&body["systemInstruction"]["parts"]),
        json_mode: config["responseMimeType"] == "application/json",
        stops: strings(config.get("stopSequences")),
        max_tokens: config["maxOutputTokens"].as_u64(),
        temperature: config["temperature"].as_f64(),
        tools: body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["functionDeclarations"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect(),
        ..Ask::default()
    };
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    if let Some(user) = contents.iter().rev().find(|c| {
        c["role"] == "user"
            && c["parts"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p.get("text").is_some() || p.get("inlineData").is_some())
            })
    }) {
        ask.user_text = texts(&user["parts"]);
        for part in user["parts"].as_array().into_iter().flatten() {
            if let Some(mime) = part.pointer("/inlineData/mimeType").and_then(Value::as_str) {
                ask.images.push(mime.to_owned());
            }
            if let Some(uri) = part.pointer("/fileData/fileUri").and_then(Value::as_str) {
                ask.images.push(uri.to_owned());
            }
        }
    }
    ask
}

fn finish(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "MAX_TOKENS",
        _ => "STOP",
    }
}

fn usage() -> Value {
    json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS, "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS,
           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]})
}

fn response(ask: &Ask, parts: Vec<Value>, finish_reason: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish_reason {
        candidate["finishReason"] = json!(f);
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": ask.model, "responseId": "mock-gemini-1"})
}

/// Gemini's SSE frames end with CRLF pairs.
fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

pub fn render(ask: &Ask, a: &Answer) -> Out {
    if a.fail_before {
        return Out::status(
            429,
            json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{RETRY_AFTER_SECS}s")}]}}),
        );
    }
    let call = a.tool.as_ref().map(|t| {
        let args: Value = serde_json::from_str(&t.arguments()).unwrap();
        json!({"functionCall": {"name": t.name, "args": args}})
    });
    if !ask.stream {
        let mut parts = Vec::new();
        if !a.pieces.is_empty() {
            parts.push(json!({"text": a.text()}));
        }
        parts.extend(call);
        return Out::ok(response(ask, parts, Some(finish(&a.finish)), usage()));
    }
    let prompt_only = json!({"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS});
    let mut frames: Vec<Bytes> = a
        .pieces
        .iter()
        .map(|p| frame(&response(ask, vec![json!({"text": p})], None, prompt_only.clone())))
        .collect();
    if a.fail_midway {
        frames.push(frame(
            &json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}),
        ));
        return Out::Frames {
            content_type: "text/event-stream",
            frames,
        };
    }
    let last = call.map_or_else(|| vec![json!({"text": ""})], |c| vec![c]);
    frames.push(frame(&response(ask, last, Some(finish(&a.finish)), usage())));
    Out::Frames {
        content_type: "text/event-stream",
        frames,
    }
}

pub fn embeddings(body: &Value) -> Out {
    let embeddings: Vec<Value> = body["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"values": embedding(&texts(&r["content"]["parts"]))}))
        .collect();
    Out::ok(json!({"embeddings": embeddings}))
}
