//! What every HTTP provider does with an upstream's error status and headers,
//! whatever its error body looks like.

use http::{HeaderMap, StatusCode};

use crate::api::{ApiError, ErrorKind};

/// The longest `Retry-After` passed on: an upstream's absurd value is not the client's problem.
const MAX_RETRY_AFTER_SECS: u64 = 86_400;

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

/// The OpenAI error type for an upstream error the client sees with `status`
/// (after [`client_status`]): the client's own mistakes and rate limits keep
/// their meaning; anything else is the upstream's failure.
pub fn kind_for(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 404 | 413 | 422 => ErrorKind::InvalidRequest,
        429 => ErrorKind::RateLimit,
        _ => ErrorKind::Upstream,
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

/// An upstream refused the gateway's own credentials: the gateway's problem
/// (502), never the client's, and nothing about the key in the answer. The
/// upstream's words (already scrubbed of the key) go to the log.
pub fn credentials_rejected(provider: &str, status: StatusCode, upstream_message: &str) -> ApiError {
    tracing::warn!(
        provider,
        status = status.as_u16(),
        message = upstream_message,
        "upstream rejected the gateway's credentials"
    );
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Upstream,
        format!(
            "provider `{provider}` rejected the gateway's credentials (upstream status {})",
            status.as_u16()
        ),
    )
    .with_code("upstream_auth_failed")
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
    fn statuses_a_client_can_act_on() {
        assert_eq!(client_status(StatusCode::UNPROCESSABLE_ENTITY), StatusCode::BAD_REQUEST);
        assert_eq!(client_status(StatusCode::FOUND), StatusCode::BAD_GATEWAY);
        assert_eq!(
            client_status(StatusCode::TOO_MANY_REQUESTS),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
