//! `GET /v1/history` and `GET /v1/messages/{id}`: delivery history, read through the
//! [`HistoryReader`] the process gave. An API key of a tenant sees only its tenant's
//! messages.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use postroad_queue::{EventKind, MessageId};

use crate::auth::Caller;
use crate::history::{HistoryFilter, HistoryPage, HistoryReader, MessageHistory, ReadError};
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;

/// Rows (or events) per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Longest accepted recipient address or cursor.
const MAX_TEXT: usize = 320;

fn reader(state: &AppState) -> Result<&Arc<dyn HistoryReader>, Problem> {
    state
        .deps
        .history
        .as_ref()
        .ok_or_else(|| Problem::new(Kind::NotFound).detail("this server keeps no history"))
}

fn read_error(e: ReadError) -> Problem {
    match e {
        ReadError::BadCursor(reason) => {
            Problem::fields(vec![FieldError::new("cursor", "invalid-value", reason)])
        }
        ReadError::Unavailable(reason) => {
            Problem::store_unavailable("the history database", reason)
        }
    }
}

/// Recipients' statuses, newest message first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/history",
    tag = "history",
    params(
        ("userId" = Option<u64>, Query, description = "Messages for this user of the application"),
        ("emailType" = Option<String>, Query, description = "Messages of this email type"),
        ("status" = Option<String>, Query, description = "Recipients now in this status: queued, deferred, delivered, bounced, expired, opened, clicked, complained, suppressed, unsubscribed"),
        ("recipient" = Option<String>, Query, description = "Messages to this address (without regard to case)"),
        ("from" = Option<String>, Query, format = DateTime, description = "Sent at or after (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Sent before (RFC 3339)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Rows per page (default 100)"),
        ("cursor" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = HistoryPage),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown parameters", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or history unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let reader = reader(&state)?;
    let mut filter = parse_filter(query.as_deref().unwrap_or_default())?;
    filter.tenant = caller.tenant.clone();
    let page = reader.list(&filter).await.map_err(read_error)?;
    Ok(axum::Json(page).into_response())
}

/// One message: each recipient's status and the event timeline.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "history",
    params(
        ("id" = String, Path, description = "The message's queue id (32 hex digits)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most events (the latest; default 1000)"),
    ),
    responses(
        (status = 200, description = "The message", body = MessageHistory),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message (or not of the caller's tenant)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or parameters", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or history unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let reader = reader(&state)?;
    let mut errors = Vec::new();
    let id = id.parse::<MessageId>().ok();
    if id.is_none() {
        errors.push(FieldError::new(
            "id",
            "invalid-value",
            "a message id is 32 hex digits",
        ));
    }
    let mut limit = MAX_LIMIT;
    for (name, value) in pairs(query.as_deref().unwrap_or_default(), &mut errors) {
        match name.as_str() {
            "limit" => {
                if let Some(n) = parse_limit(&value, &mut errors) {
                    limit = n;
                }
            }
            _ => errors.push(unknown(&name)),
        }
    }
    let Some(id) = id.filter(|_| errors.is_empty()) else {
        return Err(Problem::fields(errors));
    };
    match reader
        .message(id, caller.tenant.as_deref(), limit)
        .await
        .map_err(read_error)?
    {
        Some(history) => Ok(axum::Json(history).into_response()),
        None => Err(Problem::new(Kind::NotFound).detail(format!("no message {id} in the history"))),
    }
}

/// The query string's pairs; each name at most once.
fn pairs(query: &str, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(query) {
        Ok(pairs) => pairs,
        Err(e) => {
            errors.push(FieldError::new("?", "invalid-value", e.to_string()));
            return Vec::new();
        }
    };
    let mut seen = std::collections::HashSet::new();
    pairs
        .into_iter()
        .filter(|(name, _)| {
            let first = seen.insert(name.clone());
            if !first {
                errors.push(FieldError::new(
                    name.as_str(),
                    "invalid-value",
                    format!("{name} is given more than once"),
                ));
            }
            first
        })
        .collect()
}

fn unknown(name: &str) -> FieldError {
    FieldError::new(
        truncate(name),
        "unknown-field",
        format!("no parameter {:?}", truncate(name)),
    )
}

fn truncate(s: &str) -> &str {
    let end = (0..=s.len().min(64))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

fn parse_limit(value: &str, errors: &mut Vec<FieldError>) -> Option<u32> {
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
        _ => {
            errors.push(FieldError::new(
                "limit",
                "invalid-value",
                format!("limit is a whole number from 1 to {MAX_LIMIT}"),
            ));
            None
        }
    }
}

fn parse_time(name: &str, value: &str, errors: &mut Vec<FieldError>) -> Option<u64> {
    let ms = chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
    if ms.is_none() {
        errors.push(FieldError::new(
            name,
            "invalid-value",
            format!("{name} is an RFC 3339 time after 1970, e.g. 2026-12-01T00:00:00Z"),
        ));
    }
    ms
}

fn parse_text(name: &str, value: String, errors: &mut Vec<FieldError>) -> Option<String> {
    if value.is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            name,
            "invalid-value",
            format!("{name} is 1 to {MAX_TEXT} bytes without control characters"),
        ));
        return None;
    }
    Some(value)
}

/// The filter `GET /v1/history`'s query string asks for (the tenant is the caller's).
pub(crate) fn parse_filter(query: &str) -> Result<HistoryFilter, Problem> {
    let mut errors = Vec::new();
    let mut filter = HistoryFilter {
        limit: DEFAULT_LIMIT,
        ..HistoryFilter::default()
    };
    for (name, value) in pairs(query, &mut errors) {
        match name.as_str() {
            "userId" => match postroad_queue::metadata::parse_user_id(&value) {
                Ok(id) => filter.user_id = Some(id),
                Err(e) => errors.push(FieldError::new("userId", "invalid-value", e.to_string())),
            },
            "emailType" => match postroad_queue::metadata::token("emailType", &value) {
                Ok(()) => filter.email_type = Some(value),
                Err(e) => errors.push(FieldError::new("emailType", "invalid-value", e.to_string())),
            },
            "status" => match value.parse::<EventKind>() {
                Ok(kind) => filter.status = Some(kind),
                Err(e) => errors.push(FieldError::new("status", "invalid-value", e)),
            },
            "recipient" => filter.recipient = parse_text("recipient", value, &mut errors),
            "cursor" => filter.cursor = parse_text("cursor", value, &mut errors),
            "from" => filter.from_ms = parse_time("from", &value, &mut errors),
            "to" => filter.to_ms = parse_time("to", &value, &mut errors),
            "limit" => {
                if let Some(n) = parse_limit(&value, &mut errors) {
                    filter.limit = n;
                }
            }
            _ => errors.push(unknown(&name)),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(Problem::fields(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(query: &str) -> Vec<String> {
        let problem = parse_filter(query).unwrap_err();
        problem.errors.into_iter().map(|e| e.pointer).collect()
    }

    #[test]
    fn every_filter_is_read() {
        let f = parse_filter(
            "userId=42&emailType=welcome&status=delivered&recipient=Ann%40example.com\
             &from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00%2B01:00&limit=5&cursor=1.2",
        )
        .unwrap();
        assert_eq!(f.user_id, Some(42));
        assert_eq!(f.email_type.as_deref(), Some("welcome"));
        assert_eq!(f.status, Some(EventKind::Delivered));
        assert_eq!(f.recipient.as_deref(), Some("Ann@example.com"));
        assert_eq!(f.from_ms, Some(1_793_491_200_000));
        assert_eq!(f.to_ms, Some(1_796_079_600_000));
        assert_eq!(f.limit, 5);
        assert_eq!(f.cursor.as_deref(), Some("1.2"));
        assert_eq!(parse_filter("").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let mut named = pointers("userId=-1&status=read&limit=0&from=yesterday&color=red&limit=2");
        named.sort();
        assert_eq!(
            named,
            ["color", "from", "limit", "limit", "status", "userId"]
        );
        assert_eq!(
            pointers("recipient=&emailType=a%20b"),
            ["recipient", "emailType"]
        );
    }
}
