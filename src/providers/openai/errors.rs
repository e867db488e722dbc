//! Upstream error bodies and headers → the error the client sees.

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{ApiError, ErrorKind};

/// The longest `Retry-After` passed on: an upstream's absurd value is not the client's problem.
const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// OpenAI's envelope, read loosely: OpenAI, Azure, vLLM, TGI and Ollama's
/// `/v1` each fill it a little differently.
#[derive(Deserialize)]
struct Envelope {
    error: Inner,
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
    },
    Text(String),
}

/// The status a client sees for an upstream's status. Upstream 401/403 are
/// handled apart: they are the gateway's credentials, not the client's.
pub fn client_status(upstream: StatusCode) -> StatusCode {
    match upstream.as_u16() {
        // TGI and FastAPI servers answer validation errors with 422: to an OpenAI client that is a 400.
        422 => StatusCode::BAD_REQUEST,
        // A failed dependency upstream is a bad gateway here.
        424 => StatusCode::BAD_GATEWAY,
        400..=599 => upstream,
        // 1xx and 3xx have no place as a final answer to an API call.
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Builds the client's error from an upstream error body; `scrub` removes the
/// provider's key from any text the upstream wrote.
pub fn from_body(status: StatusCode, raw: &[u8], provider: &str, scrub: impl Fn(String) -> String) -> ApiError {
    let fallback = || format!("provider `{provider}` answered status {}", status.as_u16());
    match serde_json::from_slice::<Envelope>(raw).map(|e| e.error) {
        Ok(Inner::Object {
            message,
            kind,
            param,
            code,
        }) => {
            let mut e = ApiError::new(status, ErrorKind::Upstream, scrub(message.unwrap_or_else(fallback)));
            if let Some(k) = kind.filter(|k| !k.is_empty()) {
                e.kind = k;
            }
            e.param = param.and_then(value_text);
            e.code = code.and_then(value_text);
            e
        }
        Ok(Inner::Text(message)) => ApiError::new(status, ErrorKind::Upstream, scrub(message)),
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

/// Seconds to wait, from `retry-after`, `retry-after-ms`, or else OpenAI's
/// `x-ratelimit-reset-*` of whichever limit is exhausted.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let seconds = |v: &str| v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
    let secs = if let Some(s) = get("retry-after").and_then(seconds) {
        s
    } else if let Some(ms) = get("retry-after-ms").and_then(seconds) {
        ms / 1000.0
    } else {
        ["requests", "tokens"]
            .iter()
            .filter(|limit| get(&format!("x-ratelimit-remaining-{limit}")).is_some_and(|r| r.trim() == "0"))
            .filter_map(|limit| get(&format!("x-ratelimit-reset-{limit}")).and_then(go_duration_secs))
            .reduce(f64::max)?
    };
    Some((secs.ceil() as u64).min(MAX_RETRY_AFTER_SECS))
}

/// Parses Go-style durations as OpenAI sends them: `8.64s`, `6m0s`, `120ms`, `1h2m3s`.
fn go_duration_secs(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..split].parse().ok()?;
        let unit_end = rest[split..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| split + i);
        let scale = match &rest[split..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_in_seconds_or_milliseconds_clamped() {
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1200"));
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(7));
        h.insert("retry-after", HeaderValue::from_static("inf"));
        assert_eq!(retry_after(&h), Some(2), "a non-finite retry-after is ignored");
        h.insert("retry-after", HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER_SECS));
    }

    #[test]
    fn retry_after_from_exhausted_openai_limit() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-remaining-requests", "9998"),
            ("x-ratelimit-reset-requests", "8.64s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1.2s"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        assert_eq!(retry_after(&h), Some(2), "only the exhausted limit counts");
        assert_eq!(go_duration_secs("6m0s"), Some(360.0));
        assert_eq!(go_duration_secs("1h2m3s"), Some(3723.0));
        assert_eq!(go_duration_secs("soon"), None);
    }

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
        assert_eq!(client_status(StatusCode::UNPROCESSABLE_ENTITY), StatusCode::BAD_REQUEST);
        assert_eq!(client_status(StatusCode::FOUND), StatusCode::BAD_GATEWAY);
        assert_eq!(
            client_status(StatusCode::TOO_MANY_REQUESTS),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
