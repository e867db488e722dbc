//! Building responses: OpenAI-shaped errors and JSON answers.

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

use crate::api::ApiError;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn error(err: &ApiError) -> Response {
    let mut resp = Response::new(Body::from(err.to_json()));
    *resp.status_mut() = err.status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    if let Some(secs) = err.retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}
