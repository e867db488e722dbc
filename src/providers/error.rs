//! Upstream failures, and how each one reaches the client.

use http::StatusCode;

use crate::api::{ApiError, ErrorKind};

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with an error status; `error` is what the client sees.
    #[error("upstream answered {}: {}", .error.status, .error.message)]
    Status { error: ApiError },
    #[error("cannot connect to provider `{provider}`: {detail}")]
    Connect { provider: String, detail: String },
    #[error("provider `{provider}` sent no {phase} within {secs:.1}s")]
    Timeout {
        provider: String,
        phase: TimeoutPhase,
        secs: f64,
    },
    /// The connection broke or closed before the answer was complete.
    #[error("provider `{provider}` closed the connection before the answer was complete: {detail}")]
    Dropped { provider: String, detail: String },
    /// The upstream sent something that is not its protocol.
    #[error("provider `{provider}` sent an invalid response: {detail}")]
    Protocol { provider: String, detail: String },
    /// The provider cannot be used as configured (a missing key).
    #[error("{0}")]
    NotConfigured(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    FirstByte,
    IdleGap,
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::IdleGap => "data between stream chunks",
            TimeoutPhase::Total => "complete answer",
        })
    }
}

impl UpstreamError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Status { error } if error.code.as_deref() == Some("upstream_auth_failed") => "auth",
            UpstreamError::Status { error } if error.status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            UpstreamError::Status { error } if error.status.is_server_error() => "status_5xx",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Dropped { .. } => "dropped",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::NotConfigured(_) => "not_configured",
        }
    }

    /// Whether another backend (or the same one, later) may answer where this
    /// one failed: the upstream's trouble, not the request's. A client's
    /// mistake (400, 404, 413, 422...) would fail anywhere.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Status { error } => {
                error.status.is_server_error()
                    || matches!(error.status.as_u16(), 408 | 409 | 429)
                    || error.code.as_deref() == Some("upstream_auth_failed")
            }
            _ => true,
        }
    }

    /// Whether the failure counts against the backend's health (its circuit
    /// breaker): a rate limit or a missing key says nothing about whether it works.
    pub fn is_backend_fault(&self) -> bool {
        matches!(
            self.kind(),
            "connect" | "timeout" | "dropped" | "protocol" | "auth" | "status_5xx"
        )
    }

    /// How long the upstream asked to be left alone (`Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            UpstreamError::Status { error } => error.retry_after.map(std::time::Duration::from_secs),
            _ => None,
        }
    }

    /// The error the client sees. Messages name the provider and what went
    /// wrong, never an address, a certificate name, an OS error or a key: the
    /// detail goes to the log (`Display`), not to the client.
    pub fn to_api_error(&self) -> ApiError {
        let (status, kind, code, message) = match self {
            UpstreamError::Status { error } => return error.clone(),
            UpstreamError::NotConfigured(msg) => {
                return ApiError::unavailable(msg.clone()).with_code("provider_not_configured");
            }
            UpstreamError::Connect { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                "upstream_unreachable",
                format!("provider `{provider}` is unreachable"),
            ),
            UpstreamError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Timeout,
                "upstream_timeout",
                self.to_string(),
            ),
            UpstreamError::Dropped { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                "upstream_disconnected",
                format!("provider `{provider}` closed the connection before the answer was complete"),
            ),
            UpstreamError::Protocol { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                ErrorKind::Upstream,
                "upstream_invalid_response",
                format!("provider `{provider}` sent an answer that is not valid for its API"),
            ),
        };
        ApiError::new(status, kind, message).with_code(code)
    }
}
