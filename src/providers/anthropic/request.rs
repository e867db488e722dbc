//! OpenAI chat request → Anthropic Messages request. Pure; unit-tested
//! against the fixture translation.
//!
//! Rules for what Anthropic cannot take (documented in the README):
//! - JSON mode: `json_schema` → `output_config.format` (structured output);
//!   `json_object`, which Anthropic has no mode for, → an instruction at the
//!   end of `system` to answer with one JSON object;
//! - rejected (400): `n` > 1, other `response_format` types, `temperature` > 1, audio and file parts, the deprecated `function` role,
//!   tool-call arguments that are not a JSON object;
//! - dropped: `stream_options` (usage always comes), `seed`, `logit_bias`,
//!   `logprobs`, `presence_penalty`, `frequency_penalty`, `service_tier`,
//!   `store` and other OpenAI-only fields.

use serde_json::{Map, Value, json};

use crate::api::chat::{ChatMessage, ContentPart, MessageContent, Role, ToolChoice, base64_data_url};
use crate::api::{ApiError, ChatRequest};

/// How a JSON-mode request reaches Anthropic.
enum JsonMode {
    /// `json_object`: Anthropic has no such mode, so the model is told.
    Instructed,
    /// `json_schema`: structured output constrained to the schema.
    Schema(Value),
}

/// Appended to `system` for `response_format: json_object`.
pub const JSON_OBJECT_INSTRUCTION: &str = "Answer with one valid JSON object and nothing else.";

fn unsupported(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

/// One Anthropic turn being built; consecutive turns of one role are merged.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
    /// A single plain-string message: sent as a string, as the client wrote it.
    plain: Option<String>,
}

pub fn to_messages_request(req: &ChatRequest, model: &str, default_max_tokens: u32) -> Result<Value, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("Anthropic models return one choice: `n` must be 1", "n"));
    }
    let format = req.response_format.as_ref();
    let json_mode = match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        None | Some("text") => None,
        Some("json_object") => Some(JsonMode::Instructed),
        Some("json_schema") => Some(JsonMode::Schema(
            format
                .and_then(|f| f.pointer("/json_schema/schema"))
                .cloned()
                .ok_or_else(|| unsupported("`response_format.json_schema.schema` is required", "response_format"))?,
        )),
        Some(kind) => {
            return Err(unsupported(
                format!("`response_format` {kind} is not supported by Anthropic models"),
                "response_format",
            ));
        }
    };
    if req.temperature.is_some_and(|t| t > 1.0) {
        return Err(unsupported(
            "Anthropic models take `temperature` between 0 and 1",
            "temperature",
        ));
    }

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        let (role, blocks, plain) = match message.role {
            Role::System | Role::Developer => {
                system.push(text_of(message, i)?);
                continue;
            }
            Role::User => {
                let plain = match &message.content {
                    Some(MessageContent::Text(t)) => Some(t.clone()),
                    _ => None,
                };
                ("user", content_blocks(message, i)?, plain)
            }
            Role::Assistant => ("assistant", assistant_blocks(message, i)?, None),
            Role::Tool => ("user", vec![tool_result(message, i)?], None),
            Role::Function => {
                return Err(unsupported(
                    "the deprecated `function` role is not supported: use `tool`",
                    "messages",
                ));
            }
        };
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.plain = None;
                last.blocks.extend(blocks);
            }
            _ => turns.push(Turn { role, blocks, plain }),
        }
    }

    let messages: Vec<Value> = turns
        .into_iter()
        .map(|t| match t.plain {
            Some(text) => json!({"role": t.role, "content": text}),
            None => json!({"role": t.role, "content": t.blocks}),
        })
        .collect();
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "max_tokens".into(),
        json!(req.max_output_tokens().unwrap_or(default_max_tokens)),
    );
    if matches!(json_mode, Some(JsonMode::Instructed)) {
        system.push(JSON_OBJECT_INSTRUCTION.to_owned());
    }
    match system.len() {
        0 => {}
        1 => {
            out.insert("system".into(), json!(system[0]));
        }
        _ => {
            out.insert("system".into(), json!(system.join("\n\n")));
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(JsonMode::Schema(schema)) = json_mode {
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": schema}}),
        );
    }
    if let Some(tools) = &req.tools {
        out.insert(
            "tools".into(),
            Value::Array(
                tools
                    .iter()
                    .enumerate()
                    .map(|(i, t)| tool(t, i))
                    .collect::<Result<_, _>>()?,
            ),
        );
    }
    if let Some(choice) = tool_choice(req)? {
        out.insert("tool_choice".into(), choice);
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.extra.get("top_k") {
        out.insert("top_k".into(), k.clone());
    }
    if let Some(stop) = req.stop_sequences() {
        out.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(user) = &req.user {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.is_stream() {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

fn text_of(message: &ChatMessage, i: usize) -> Result<String, ApiError> {
    match &message.content {
        Some(MessageContent::Text(t)) => Ok(t.clone()),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .map(|p| match (p.kind.as_str(), &p.text) {
                ("text", Some(t)) => Ok(t.as_str()),
                _ => Err(unsupported(
                    format!("messages[{i}]: only text parts are allowed here"),
                    "messages",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.join("\n")),
        None => Ok(String::new()),
    }
}

fn content_blocks(message: &ChatMessage, i: usize) -> Result<Vec<Value>, ApiError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(vec![json!({"type": "text", "text": t})]),
        Some(MessageContent::Parts(parts)) => parts.iter().map(|p| part(p, i)).collect(),
    }
}

fn part(p: &ContentPart, i: usize) -> Result<Value, ApiError> {
    match p.kind.as_str() {
        "text" => Ok(json!({"type": "text", "text": p.text.as_deref().unwrap_or("")})),
        "image_url" => image(p.image_url().unwrap_or("")).ok_or_else(|| {
            unsupported(
                format!("messages[{i}]: an image must be an https:// URL or a data:image/...;base64 URL"),
                "messages",
            )
        }),
        other => Err(unsupported(
            format!("messages[{i}]: `{other}` parts are not supported by Anthropic models"),
            "messages",
        )),
    }
}

fn image(url: &str) -> Option<Value> {
    if url.starts_with("data:") {
        let (media_type, data) = base64_data_url(url)?;
        return media_type
            .starts_with("image/")
            .then(|| json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    (url.starts_with("https://") || url.starts_with("http://"))
        .then(|| json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn assistant_blocks(message: &ChatMessage, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = content_blocks(message, i)?;
    let calls = message
        .tool_call_parts()
        .map_err(|(m, param)| unsupported(format!("messages[{i}]: {m}"), param))?;
    for call in calls {
        blocks.push(
            json!({"type": "tool_use", "id": call.id.unwrap_or_default(), "name": call.name, "input": call.arguments}),
        );
    }
    Ok(blocks)
}

fn tool_result(message: &ChatMessage, i: usize) -> Result<Value, ApiError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        ApiError::bad_request(format!("messages[{i}]: a tool message needs `tool_call_id`")).with_param("messages")
    })?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": text_of(message, i)?}))
}

fn tool(t: &Value, i: usize) -> Result<Value, ApiError> {
    let function = t
        .get("function")
        .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
    let Some(function) = function else {
        return Err(unsupported(
            format!("tools[{i}]: only `function` tools are supported by Anthropic models"),
            "tools",
        ));
    };
    let mut out = Map::new();
    out.insert("name".into(), function.get("name").cloned().unwrap_or(Value::Null));
    if let Some(d) = function.get("description") {
        out.insert("description".into(), d.clone());
    }
    out.insert(
        "input_schema".into(),
        function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
    );
    Ok(Value::Object(out))
}

fn tool_choice(req: &ChatRequest) -> Result<Option<Value>, ApiError> {
    let kind = req.tool_choice_kind().map_err(|(m, param)| unsupported(m, param))?;
    // Anthropic takes `tool_choice` only with tools, and the parallel switch on none of `none`.
    if req.tools.as_ref().is_none_or(|t| t.is_empty()) {
        return Ok(None);
    }
    let mut choice = kind.map(|k| match k {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Nothing => json!({"type": "none"}),
        ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> ChatRequest {
        serde_json::from_str(raw).unwrap()
    }

    #[test]
    fn the_fixture_request_translates_exactly() {
        let req = request(include_str!("../../../tests/fixtures/openai/chat_request.json"));
        let expected: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/anthropic/messages_request.json")).unwrap();
        let got = to_messages_request(&req, "claude-sonnet-4-5-20250929", 4096).unwrap();
        assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
    }

    #[test]
    fn defaults_merging_and_choices() {
        let req = request(
            r#"{"model":"c","messages":[{"role":"system","content":"A"},{"role":"developer","content":"B"},{"role":"user","content":"hi"},{"role":"user","content":"again"}],
                "tool_choice":"required","parallel_tool_calls":false,"tools":[{"type":"function","function":{"name":"f"}}],"stop":"END","user":"u1"}"#,
        );
        let got = to_messages_request(&req, "m", 1024).unwrap();
        assert_eq!(got["max_tokens"], 1024);
        assert_eq!(got["system"], "A\n\nB");
        assert_eq!(
            got["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}])
        );
        assert_eq!(
            got["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(got["tools"], json!([{"name": "f", "input_schema": {"type": "object"}}]));
        assert_eq!(got["stop_sequences"], json!(["END"]));
        assert_eq!(got["metadata"], json!({"user_id": "u1"}));
        assert!(got.get("stream").is_none());
        let no_tools = request(
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tool_choice":"auto","parallel_tool_calls":false}"#,
        );
        assert!(
            to_messages_request(&no_tools, "m", 1)
                .unwrap()
                .get("tool_choice")
                .is_none(),
            "no tools, no tool_choice"
        );
        let named = request(
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"max_tokens":5,"max_completion_tokens":7}"#,
        );
        let got = to_messages_request(&named, "m", 1).unwrap();
        assert_eq!(got["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert_eq!(got["max_tokens"], 7, "max_completion_tokens wins");
    }

    #[test]
    fn json_mode_is_a_schema_or_an_instruction() {
        let schema = request(
            r#"{"model":"c","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object","properties":{"t":{"type":"number"}}}}}}"#,
        );
        let got = to_messages_request(&schema, "m", 1).unwrap();
        assert_eq!(
            got["output_config"],
            json!({"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}})
        );
        assert!(got.get("system").is_none());
        let object = request(
            r#"{"model":"c","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        let got = to_messages_request(&object, "m", 1).unwrap();
        assert_eq!(got["system"], format!("Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"));
        assert!(got.get("output_config").is_none());
    }

    #[test]
    fn what_anthropic_cannot_honour_is_rejected_with_its_param() {
        for (extra, param) in [
            (r#","n":2"#, "n"),
            (r#","response_format":{"type":"yaml"}"#, "response_format"),
            (r#","temperature":1.5"#, "temperature"),
            (r#","tool_choice":"sometimes""#, "tool_choice"),
        ] {
            let req = request(&format!(
                r#"{{"model":"c","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
            ));
            let err = to_messages_request(&req, "m", 1).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{extra}");
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        }
        let audio = request(
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}"#,
        );
        assert!(
            to_messages_request(&audio, "m", 1)
                .unwrap_err()
                .message
                .contains("input_audio")
        );
        let url = request(
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
        );
        assert_eq!(
            to_messages_request(&url, "m", 1).unwrap()["messages"][0]["content"][0]["source"],
            json!({"type": "url", "url": "https://x/y.png"})
        );
    }
}
