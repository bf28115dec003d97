//! Reading request bodies within `http.max_body_bytes` and `http.request_timeout_secs`,
//! and parsing JSON with errors that say where.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use crate::problem::{Kind, Problem};
use crate::state::AppState;

/// The request's media type, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The whole body, or the problem to answer.
pub async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(state.config.request_timeout, read).await {
        Err(_) => Err(Problem::new(Kind::RequestTimeout).detail(format!(
            "the body did not arrive within {} s",
            state.config.request_timeout.as_secs()
        ))),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large(limit)),
        Ok(Err(e)) => {
            Err(Problem::new(Kind::MalformedJson).detail(format!("cannot read the body: {e}")))
        }
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn too_large(limit: usize) -> Problem {
    Problem::new(Kind::PayloadTooLarge)
        .detail(format!("the limit is {limit} bytes (http.max_body_bytes)"))
}

/// Parses a JSON body; a syntax error gives its line and column.
pub fn json(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, Problem> {
    let media = media_type(headers);
    if !(media == "application/json" || media.ends_with("+json")) {
        return Err(Problem::new(Kind::UnsupportedMediaType)
            .detail(format!("send application/json, not {:?}", media)));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(Kind::MalformedJson).detail(format!(
            "{e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A JSON value as `T`; what does not fit is a field error with its pointer and `code`.
pub fn typed<T: serde::de::DeserializeOwned>(value: Value, code: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = crate::problem::pointer_of(e.path());
        Problem::fields(vec![crate::problem::FieldError::new(
            at,
            code,
            e.inner().to_string(),
        )])
    })
}
