//! Upstream error bodies and headers → the error the client sees.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{ApiError, ErrorKind};
use crate::providers::upstream_status::{client_status, kind_for};

/// OpenAI's envelope, read loosely: OpenAI, Azure, vLLM, TGI and Ollama's
/// `/v1` each fill it a little differently.
#[derive(Deserialize)]
struct Envelope {
    error: Inner,
    /// TGI and TEI: `{"error": "<text>", "error_type": "validation"}`.
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inner {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        param: Option<Value>,
        #[serde(default)]
        code: Option<Value>,
        /// TGI's Messages API, for errors inside a stream.
        #[serde(default)]
        http_status_code: Option<u16>,
    },
    Text(String),
}

/// Builds the client's error from an upstream error body; `scrub` removes the
/// provider's key from any text the upstream wrote. An error without a type
/// of its own gets one from its status.
pub fn from_body(status: StatusCode, raw: &[u8], provider: &str, scrub: impl Fn(String) -> String) -> ApiError {
    let fallback = || format!("provider `{provider}` answered status {}", status.as_u16());
    match serde_json::from_slice::<Envelope>(raw) {
        Ok(Envelope {
            error:
                Inner::Object {
                    message,
                    kind,
                    param,
                    code,
                    http_status_code,
                },
            ..
        }) => {
            // An error event inside a stream has no HTTP status but may name one.
            let status = http_status_code
                .and_then(|s| StatusCode::from_u16(s).ok())
                .map_or(status, client_status);
            let mut e = ApiError::new(status, kind_for(status), scrub(message.unwrap_or_else(fallback)));
            if let Some(k) = kind.filter(|k| !k.is_empty()) {
                e.kind = k;
            }
            e.param = param.and_then(value_text);
            e.code = code.and_then(value_text);
            e
        }
        Ok(Envelope {
            error: Inner::Text(message),
            error_type,
        }) => {
            let status = match error_type.as_deref() {
                Some("overloaded") => StatusCode::TOO_MANY_REQUESTS,
                _ => status,
            };
            let mut e = ApiError::new(status, kind_for(status), scrub(message));
            e.code = error_type;
            e
        }
        Err(_) => ApiError::new(status, ErrorKind::Upstream, fallback()),
    }
}

fn value_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_every_flavour() {
        let keep = |s: String| s;
        let e = from_body(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"m","type":"t","param":5,"code":400}}"#,
            "p",
            keep,
        );
        assert_eq!(
            (
                e.message.as_str(),
                e.kind.as_str(),
                e.param.as_deref(),
                e.code.as_deref()
            ),
            ("m", "t", Some("5"), Some("400"))
        );
        let e = from_body(StatusCode::NOT_FOUND, br#"{"error":"model 'x' not found"}"#, "p", keep);
        assert_eq!(e.message, "model 'x' not found");
        let e = from_body(StatusCode::BAD_GATEWAY, b"<html>nginx</html>", "p", keep);
        assert_eq!(e.message, "provider `p` answered status 502");
        // TGI: a typed text error, and an error event that names its status.
        let e = from_body(
            StatusCode::BAD_REQUEST,
            br#"{"error":"Input validation error","error_type":"validation"}"#,
            "p",
            keep,
        );
        assert_eq!(
            (e.kind.as_str(), e.code.as_deref()),
            ("invalid_request_error", Some("validation"))
        );
        let e = from_body(
            StatusCode::BAD_GATEWAY,
            br#"{"error":{"message":"too long","http_status_code":422}}"#,
            "p",
            keep,
        );
        assert_eq!(
            (e.status, e.kind.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        );
    }
}
