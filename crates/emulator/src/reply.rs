//! What every product's handlers share to read a request and build an answer: query
//! parameters, JSON bodies, JSON answers with a status, and the base URL for `self` links.

use std::collections::HashMap;

use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Query parameters; a repeated name keeps its last value.
pub(crate) type Params = HashMap<String, String>;

/// A JSON answer with `status`.
pub(crate) fn json(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// An answer with no body.
pub(crate) fn empty(status: u16) -> Response {
    StatusCode::from_u16(status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response()
}

/// `http://host:port` from the `Host` header, for `self` links.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// A non-negative integer parameter, its default when absent, `Err` when not a number.
pub(crate) fn number(params: &Params, name: &str, default: usize) -> Result<usize, String> {
    match params.get(name) {
        None => Ok(default),
        Some(value) if value.is_empty() => Ok(default),
        Some(value) => value.parse().map_err(|_| {
            format!("The parameter {name} must be a non-negative integer, not '{value}'.")
        }),
    }
}

/// A boolean parameter (`true`/`false`, any case), its default when absent.
pub(crate) fn flag(params: &Params, name: &str, default: bool) -> bool {
    params
        .get(name)
        .map(|value| value.eq_ignore_ascii_case("true"))
        .unwrap_or(default)
}

/// A JSON object body, `Err` with a message when the body is not one.
pub(crate) fn object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("The request body must be a JSON object.".to_owned()),
        Err(error) => Err(format!("The request body is not valid JSON: {error}")),
    }
}

/// A string field of a JSON object; absent, null and non-string are `None`.
pub(crate) fn text<'a>(
    body: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a str> {
    body.get(name).and_then(|value| value.as_str())
}
