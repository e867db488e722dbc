//! The OpenAI-shaped error every client sees:
//! `{"error": {"message", "type", "param", "code"}}` with the right status.

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

/// The `type` field of an OpenAI error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    RateLimit,
    Upstream,
    Timeout,
    Server,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Server => "server_error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// The OpenAI `type`; upstream errors keep the upstream's own type.
    pub kind: String,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.as_str().to_owned(),
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_api_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Authentication,
            "Invalid or missing API key. Send your tollgate key as `Authorization: Bearer <key>` or in the `api-key` header.",
        )
        .with_code("invalid_api_key")
    }

    /// The admin API needs an admin key (`auth.admin_keys`); without any configured it is off.
    pub fn invalid_admin_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Authentication,
            "The admin API needs an admin key (auth.admin_keys); it is off when none is configured.",
        )
        .with_code("invalid_admin_key")
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            format!("The model `{model}` does not exist or is not served by this gateway. GET /v1/models lists the models you can use."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    pub fn not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidRequest,
            format!("Unknown path `{path}`."),
        )
        .with_code("unknown_url")
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            format!("Method {method} is not allowed on `{path}`."),
        )
        .with_code("method_not_allowed")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidRequest,
            format!("Request body is larger than the gateway's limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    }

    pub fn headers_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::InvalidRequest,
            format!("Request headers are larger than the gateway's limit of {limit} bytes."),
        )
        .with_code("headers_too_large")
    }

    pub fn request_timeout() -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Timeout,
            "The request did not complete within the gateway's request timeout.",
        )
        .with_code("request_timeout")
    }

    pub fn overloaded() -> Self {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Server,
            "The gateway is serving its maximum number of concurrent requests; retry shortly.",
        )
        .with_code("overloaded");
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Server, message)
    }

    /// Compact JSON body of the error envelope.
    pub fn to_json(&self) -> Bytes {
        let envelope = Envelope {
            error: Inner {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        // Serialising plain strings cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Turns a serde_json error from a request body into a 400 that says what is wrong.
pub fn from_json_error(err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = match err.classify() {
        Category::Syntax | Category::Eof => {
            format!("The request body is not valid JSON: {err}.")
        }
        Category::Data => format!("The request body is invalid: {err}."),
        Category::Io => format!("The request body could not be read: {err}."),
    };
    let mut api = ApiError::bad_request(message).with_code("invalid_request_body");
    if let Some(field) = missing_field(&err.to_string()) {
        api.param = Some(field.to_owned());
    }
    api
}

fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_openai_shape() {
        let err = ApiError::model_not_found("gpt-9");
        let v: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn missing_field_names_the_param() {
        let err = serde_json::from_str::<crate::api::ChatRequest>(r#"{"model":"m"}"#).unwrap_err();
        let api = from_json_error(&err);
        assert_eq!(api.status, StatusCode::BAD_REQUEST);
        assert_eq!(api.param.as_deref(), Some("messages"));
        assert!(api.message.contains("messages"));
    }
}
