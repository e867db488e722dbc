//! Text Generation Inference's `/generate` and `/generate_stream`, and Text Embeddings Inference's `/embed`.

use serde_json::{Value, json};

use super::*;

/// The last user turn of a rendered chat template (chatml or llama3), or the whole prompt.
fn last_user_text(inputs: &str) -> String {
    for (open, close) in [
        ("<|im_start|>user\n", "<|im_end|>"),
        ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    ] {
        if let Some(at) = inputs.rfind(open) {
            let rest = &inputs[at + open.len()..];
            return rest.split(close).next().unwrap_or(rest).to_owned();
        }
    }
    inputs.to_owned()
}

pub fn parse(body: &Value) -> Ask {
    let inputs = body["inputs"].as_str().unwrap_or_default();
    let p = &body["parameters"];
    let mut user_text = last_user_text(inputs);
    let mut images = Vec::new();
    // Images arrive as markdown: ![](url).
    while let Some(start) = user_text.find("![](") {
        let Some(len) = user_text[start..].find(')') else { break };
        images.push(super::openai::image_name(&user_text[start + 4..start + len]));
        user_text.replace_range(start..=start + len, "");
    }
    let system = ["<|im_start|>system\n", "<|start_header_id|>system<|end_header_id|>\n\n"]
        .iter()
        .find_map(|open| inputs.find(open).map(|at| &inputs[at + open.len()..]))
        .and_then(|rest| rest.split(['<']).next())
        .unwrap_or_default()
        .to_owned();
    Ask {
        model: "tgi".into(),
        system,
        user_text,
        images,
        json_mode: p.pointer("/grammar/type").and_then(Value::as_str) == Some("json"),
        stops: strings(p.get("stop")),
        max_tokens: p["max_new_tokens"].as_u64(),
        temperature: p["temperature"].as_f64(),
        ..Ask::default()
    }
}

fn reason(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::StopSequence(_) => "stop_sequence",
        _ => "eos_token",
    }
}

pub fn render(ask: &Ask, a: &Answer) -> Out {
    if a.fail_before {
        return Out::status(429, json!({"error": "Model is overloaded", "error_type": "overloaded"}));
    }
    // TGI keeps a matched stop sequence in its output; it ends a turn with a special EOS token.
    let mut tokens: Vec<(String, bool)> = a.pieces.iter().map(|p| (p.clone(), false)).collect();
    match &a.finish {
        _ if a.fail_midway && ask.stream => {}
        Finish::StopSequence(s) => tokens.push((s.clone(), false)),
        Finish::Stop => tokens.push(("<|eot_id|>".into(), true)),
        _ => {}
    }
    let generated: String = tokens
        .iter()
        .filter(|(_, special)| !special)
        .map(|(t, _)| t.as_str())
        .collect();
    let details = json!({"finish_reason": reason(&a.finish), "generated_tokens": COMPLETION_TOKENS, "seed": null});
    if !ask.stream {
        let mut d = details;
        d["prefill"] = json!([]);
        d["tokens"] = json!(
            tokens
                .iter()
                .enumerate()
                .map(|(i, (t, s))| json!({"id": i, "text": t, "logprob": -0.01, "special": s}))
                .collect::<Vec<_>>()
        );
        return Out::Json {
            status: 200,
            headers: vec![
                ("x-prompt-tokens", PROMPT_TOKENS.to_string()),
                ("x-generated-tokens", COMPLETION_TOKENS.to_string()),
                ("x-compute-type", "gpu+optimized".into()),
            ],
            body: json!({"generated_text": generated, "details": d}),
        };
    }
    let event = |v: &Value| Bytes::from(format!("data:{v}\n\n"));
    let mut frames = Vec::new();
    let last = tokens.len().saturating_sub(1);
    for (i, (text, special)) in tokens.iter().enumerate() {
        let token = json!({"id": i, "text": text, "logprob": -0.01, "special": special});
        if a.fail_midway && i == last {
            frames.push(event(
                &json!({"index": i + 1, "token": token, "generated_text": null, "details": null}),
            ));
            frames.push(Bytes::from_static(b":\n\n"));
            frames.push(event(&json!({"error": "Request failed during generation: Server error: CUDA out of memory", "error_type": "generation"})));
            return Out::Frames {
                content_type: "text/event-stream",
                frames,
            };
        }
        let (text_done, d) = if i == last {
            let mut d = details.clone();
            d["input_length"] = json!(PROMPT_TOKENS);
            (json!(generated), d)
        } else {
            (Value::Null, Value::Null)
        };
        frames.push(event(
            &json!({"index": i + 1, "token": token, "generated_text": text_done, "details": d}),
        ));
        if i == 0 {
            // TGI's keep-alive comment.
            frames.push(Bytes::from_static(b":\n\n"));
        }
    }
    Out::Frames {
        content_type: "text/event-stream",
        frames,
    }
}

pub fn embeddings(body: &Value) -> Out {
    let vectors: Vec<Vec<f32>> = strings(body.get("inputs")).iter().map(|t| embedding(t)).collect();
    Out::Json {
        status: 200,
        headers: vec![
            ("x-compute-tokens", PROMPT_TOKENS.to_string()),
            ("x-compute-type", "gpu+optimized".into()),
        ],
        body: json!(vectors),
    }
}
