//! `/v1/suppressions`: the caller's tenant's suppression list. List (a page at a time,
//! in address order: the export), look up, add (up to [`MAX_ADD`] entries per
//! request: the import) and remove.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use postroad_webhooks::suppression::{Entry, Field, Suppressions, entry_by_hand, list_address};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::body;
use crate::history::rfc3339;
use crate::problem::{FieldError, Kind, Problem, pointer};
use crate::state::AppState;

/// Most entries one `POST` adds.
pub const MAX_ADD: usize = 10_000;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionView {
    pub address: String,
    /// `hard-bounce`, `soft-bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    /// Where it came from: `bounce`, `complaint`, `unsubscribe`, `api`, `cli`, `import`.
    pub source: String,
    /// What said so: the bounce's reply, the feedback type, the caller's note.
    pub detail: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it stops holding (soft bounces); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl From<&Entry> for SuppressionView {
    fn from(e: &Entry) -> Self {
        Self {
            address: e.address.clone(),
            reason: e.reason.as_str().into(),
            source: e.source.clone(),
            detail: e.detail.clone(),
            created_at: rfc3339(e.created_at_ms),
            expires_at: e.expires_at_ms.map(rfc3339),
        }
    }
}

/// A page of the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SuppressionPage {
    pub suppressions: Vec<SuppressionView>,
    /// The `after` of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Entries after this address (the previous page's `next`).
    pub after: Option<String>,
    /// Entries per page (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One entry to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewSuppression {
    pub address: String,
    /// Default `manual`.
    #[serde(default)]
    pub reason: Option<String>,
    /// A note, at most 500 characters.
    #[serde(default)]
    pub detail: Option<String>,
    /// When it stops holding (RFC 3339); default: never.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// What `POST /v1/suppressions` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// Up to 10,000 entries; an address already listed gets the new entry.
    pub suppressions: Vec<NewSuppression>,
}

/// What `POST /v1/suppressions` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Added {
    pub added: usize,
}

fn list_of(state: &AppState) -> Result<&Arc<Suppressions>, Problem> {
    state
        .deps
        .suppressions
        .as_ref()
        .ok_or_else(|| Problem::new(Kind::NotFound).detail("this server keeps no suppression list"))
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::store_unavailable("the suppression store", e)
}

/// The tenant's entries in address order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/suppressions",
    tag = "suppressions",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the list", body = SuppressionPage),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server keeps no suppression list", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let list = list_of(&state)?;
    let query = super::page::query(query)?;
    let limit = super::page::limit(query.limit)?;
    let after = query.after.map(|a| a.to_lowercase());
    let mut entries = list
        .store()
        .page(caller.tenant_key(), after.as_deref(), limit + 1)
        .await
        .map_err(unavailable)?;
    let next = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        entries.last().map(|e| e.address.clone())
    });
    let now = postroad_queue::unix_ms(std::time::SystemTime::now());
    let page = SuppressionPage {
        suppressions: entries
            .iter()
            .filter(|e| e.active(now))
            .map(SuppressionView::from)
            .collect(),
        next: next.flatten(),
    };
    Ok(axum::Json(page).into_response())
}

/// One address's entry, if it is listed.
#[utoipa::path(
    get,
    path = "/v1/suppressions/{address}",
    tag = "suppressions",
    params(("address" = String, Path, description = "The address (without regard to case)")),
    responses(
        (status = 200, description = "The entry", body = SuppressionView),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not listed (or no list on this server)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(address): Path<String>,
) -> Result<Response, Problem> {
    let list = list_of(&state)?;
    let address = list_address(&address)
        .map_err(|e| Problem::fields(vec![FieldError::new("address", "invalid-value", e)]))?;
    let now = postroad_queue::unix_ms(std::time::SystemTime::now());
    match list.store().get(caller.tenant_key(), &address).await {
        Ok(Some(entry)) if entry.active(now) => {
            Ok(axum::Json(SuppressionView::from(&entry)).into_response())
        }
        Ok(_) => Err(Problem::new(Kind::NotFound).detail(format!("{address} is not listed"))),
        Err(e) => Err(unavailable(e)),
    }
}

/// Takes an address off the list: mail to it goes again.
#[utoipa::path(
    delete,
    path = "/v1/suppressions/{address}",
    tag = "suppressions",
    params(("address" = String, Path, description = "The address (without regard to case)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not listed (or no list on this server)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(address): Path<String>,
) -> Result<Response, Problem> {
    let list = list_of(&state)?;
    let address = list_address(&address)
        .map_err(|e| Problem::fields(vec![FieldError::new("address", "invalid-value", e)]))?;
    match list.remove(caller.tenant_key(), &address).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(Problem::new(Kind::NotFound).detail(format!("{address} is not listed"))),
        Err(e) => Err(unavailable(e)),
    }
}

/// Adds entries (an address already listed gets the new entry): all of them or, with
/// a bad one, none.
#[utoipa::path(
    post,
    path = "/v1/suppressions",
    tag = "suppressions",
    request_body = AddRequest,
    responses(
        (status = 200, description = "Listed durably", body = Added),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server keeps no suppression list", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid entries (every one named)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    let list = list_of(&state)?;
    let bytes = body::read(&state, &headers, request).await?;
    let value = body::json(&headers, &bytes)?;
    let request: AddRequest = body::typed(value, "invalid-type")?;
    if request.suppressions.len() > MAX_ADD {
        return Err(Problem::fields(vec![FieldError::new(
            "/suppressions",
            "too-many",
            format!("at most {MAX_ADD} entries per request"),
        )]));
    }
    let now = postroad_queue::unix_ms(std::time::SystemTime::now());
    let mut errors = Vec::new();
    let mut entries = Vec::with_capacity(request.suppressions.len());
    for (i, new) in request.suppressions.into_iter().enumerate() {
        let at = pointer("/suppressions", &i.to_string());
        match entry(new, caller.tenant_key(), now) {
            Ok(entry) => entries.push(entry),
            Err((field, e)) => {
                errors.push(FieldError::new(pointer(&at, field), "invalid-value", e))
            }
        }
    }
    if !errors.is_empty() {
        return Err(Problem::fields(errors));
    }
    let added = entries.len();
    list.add(entries).await.map_err(unavailable)?;
    Ok(axum::Json(Added { added }).into_response())
}

/// The entry a request asks for, or the bad field (its name here) and why.
fn entry(new: NewSuppression, tenant: &str, now: u64) -> Result<Entry, (&'static str, String)> {
    entry_by_hand(
        tenant,
        &new.address,
        new.reason.as_deref(),
        new.detail.unwrap_or_default(),
        new.expires_at.as_deref(),
        "api",
        now,
    )
    .map_err(|(field, why)| {
        let name = match field {
            Field::Address => "address",
            Field::Reason => "reason",
            Field::Detail => "detail",
            Field::ExpiresAt => "expiresAt",
        };
        (name, why)
    })
}
