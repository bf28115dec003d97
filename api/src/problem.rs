//! RFC 9457 problem details: the body of every error answer, with a machine-readable
//! `type` and, for bad input, the JSON Pointer of every bad field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, as `type` names it (`urn:postroad:problem:<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unauthorized,
    Forbidden,
    MalformedJson,
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    IdempotencyInProgress,
    IdempotencyMismatch,
    Overloaded,
    RequestTimeout,
    QueueUnavailable,
    StoreUnavailable,
    /// The resource is not in a state that allows it (a finished campaign paused).
    WrongState,
    Internal,
}

impl Kind {
    fn slug(self) -> &'static str {
        match self {
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::MalformedJson => "malformed-json",
            Kind::InvalidRequest => "invalid-request",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::NotFound => "not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::IdempotencyInProgress => "idempotency-key-in-use",
            Kind::IdempotencyMismatch => "idempotency-key-reused",
            Kind::Overloaded => "overloaded",
            Kind::RequestTimeout => "request-timeout",
            Kind::QueueUnavailable => "queue-unavailable",
            Kind::StoreUnavailable => "store-unavailable",
            Kind::WrongState => "wrong-state",
            Kind::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::MalformedJson => StatusCode::BAD_REQUEST,
            Kind::InvalidRequest | Kind::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::IdempotencyInProgress | Kind::WrongState => StatusCode::CONFLICT,
            Kind::Overloaded | Kind::QueueUnavailable | Kind::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Unauthorized => "Missing, unknown or revoked API key",
            Kind::Forbidden => "This API key may not do that",
            Kind::MalformedJson => "The body is not valid JSON",
            Kind::InvalidRequest => "The request has invalid fields",
            Kind::UnsupportedMediaType => "Unsupported content type",
            Kind::PayloadTooLarge => "The request body is too large",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::IdempotencyInProgress => "A request with this Idempotency-Key is in progress",
            Kind::IdempotencyMismatch => "This Idempotency-Key was used for a different request",
            Kind::Overloaded => "Too many requests at once",
            Kind::RequestTimeout => "The request body did not arrive in time",
            Kind::QueueUnavailable => "The queue cannot take messages right now",
            Kind::StoreUnavailable => "A store the request needs cannot be reached right now",
            Kind::WrongState => "Not possible in the resource's present state",
            Kind::Internal => "Internal error",
        }
    }
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the field, from the request body's root: `/to/0`.
    pub pointer: String,
    /// Machine-readable reason: `required`, `unknown-field`, `invalid-type`,
    /// `invalid-address`, `header-injection`, `invalid-header`, `too-large`,
    /// `too-many`, `invalid-value`, `invalid-priority`, `invalid-base64`,
    /// `unknown-template`, `template-error`, `missing-variable`.
    pub code: String,
    /// What is wrong, for people.
    pub detail: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, code: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code: code.to_string(),
            detail: detail.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:postroad:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every bad field, for `invalid-request`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again (also sent as `Retry-After`).
    #[serde(
        default,
        rename = "retryAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind: format!("urn:postroad:problem:{}", kind.slug()),
            title: kind.title().to_string(),
            status: kind.status().as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// `invalid-request` with these field errors.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        let mut problem = Problem::new(Kind::InvalidRequest);
        problem.errors = errors;
        problem
    }

    /// `store-unavailable` (logged): `store` (`"the webhook store"`) does not answer;
    /// try again in 5 s.
    pub fn store_unavailable(store: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "http api: {store} unavailable");
        Problem::new(Kind::StoreUnavailable)
            .detail(format!("{store}: {e}"))
            .retry_after(5)
    }

    /// `queue-unavailable` (logged): the queue could not make `what` (`"enqueue"`)
    /// durable; try again in 5 s.
    pub fn queue_unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "http api: {what} failed");
        Problem::new(Kind::QueueUnavailable)
            .detail(e.to_string())
            .retry_after(5)
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("http api: {what}");
        Problem::new(Kind::Internal)
    }

    /// The kind's name: `type` without `urn:postroad:problem:`.
    pub fn slug(&self) -> &str {
        self.kind
            .strip_prefix("urn:postroad:problem:")
            .unwrap_or(&self.kind)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The JSON Pointer of `parent` + `key` (RFC 6901 escapes `~` and `/`).
pub fn pointer(parent: &str, key: &str) -> String {
    let escaped = key.replace('~', "~0").replace('/', "~1");
    format!("{parent}/{escaped}")
}

/// The JSON Pointer of a serde path (`to[0].name` → `/to/0/name`).
pub fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out = pointer(&out, &index.to_string()),
            Segment::Map { key } => out = pointer(&out, key),
            Segment::Enum { variant } => out = pointer(&out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_as_rfc_6901_says() {
        assert_eq!(pointer("", "a/b~c"), "/a~1b~0c");
        assert_eq!(pointer("/headers", "X-Id"), "/headers/X-Id");
    }

    #[test]
    fn problems_carry_type_status_and_retry_after() {
        let response = Problem::new(Kind::Overloaded)
            .retry_after(2)
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
