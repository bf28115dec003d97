//! `/v1/webhooks`: the endpoints the caller's tenant registered for its events, their
//! backlog, and their dead letters (look at them, send them again).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use postroad_webhooks::customer::endpoint::{kind_names, parse_events};
use postroad_webhooks::customer::{CustomerHooks, Endpoint, RegisterError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::body;
use crate::history::rfc3339;
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;

/// An endpoint (never its secret, which only registration shows).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    /// The event types it gets; empty: all.
    pub events: Vec<String>,
    pub description: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Events queued for it, not yet delivered.
    pub waiting: u64,
    /// Events given up on (`/dead-letters`).
    pub dead_letters: u64,
}

/// A new endpoint, with the secret its requests are signed with: shown only now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The HMAC-SHA256 key of the `Postroad-Signature` header: keep it.
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointList {
    pub webhooks: Vec<EndpointView>,
}

/// What `POST /v1/webhooks` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Where the event batches are POSTed (`https://...`).
    pub url: String,
    /// The event types to send (queued, delivered, deferred, bounced, expired, opened,
    /// clicked, complained, suppressed, unsubscribed); absent or empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// A note, at most 200 characters.
    #[serde(default)]
    pub description: String,
}

/// An event given up on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    /// Its place: the `after` of the next page.
    pub seq: i64,
    #[schema(format = DateTime)]
    pub queued_at: String,
    #[schema(format = DateTime)]
    pub failed_at: String,
    /// The last attempt's failure.
    pub error: String,
    /// The event, as it would have been sent.
    #[schema(value_type = Object)]
    pub event: Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetterView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    /// Dead letters after this `seq` (the previous page's `next`).
    pub after: Option<i64>,
    /// Per page (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Redriven {
    /// Events queued again.
    pub requeued: u64,
}

fn hooks(state: &AppState) -> Result<&Arc<CustomerHooks>, Problem> {
    state
        .deps
        .webhooks
        .as_ref()
        .ok_or_else(|| Problem::new(Kind::NotFound).detail("this server delivers no webhooks"))
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::store_unavailable("the webhook store", e)
}

async fn view(
    hooks: &CustomerHooks,
    endpoints: Vec<Endpoint>,
) -> Result<Vec<EndpointView>, Problem> {
    let counts = hooks.store().counts().await.map_err(unavailable)?;
    Ok(endpoints
        .into_iter()
        .map(|e| {
            let (waiting, dead) = counts
                .iter()
                .find(|(id, _, _)| *id == e.id)
                .map_or((0, 0), |(_, w, d)| (*w, *d));
            EndpointView {
                events: e.events.iter().map(|k| k.as_str().to_string()).collect(),
                created_at: rfc3339(e.created_at_ms),
                id: e.id,
                url: e.url,
                description: e.description,
                waiting,
                dead_letters: dead,
            }
        })
        .collect())
}

/// The caller's endpoint `id`, or 404.
async fn own(hooks: &CustomerHooks, caller: &Caller, id: &str) -> Result<Endpoint, Problem> {
    hooks
        .endpoint(caller.tenant_key(), id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Problem::new(Kind::NotFound).detail(format!("no webhook endpoint {id}")))
}

/// The tenant's endpoints, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The endpoints with their backlog", body = EndpointList),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server delivers no webhooks", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    let endpoints = hooks
        .store()
        .endpoints(Some(caller.tenant_key()))
        .await
        .map_err(unavailable)?;
    let webhooks = view(hooks, endpoints).await?;
    Ok(axum::Json(EndpointList { webhooks }).into_response())
}

/// Registers an endpoint: the tenant's events of the given types, from now on, POSTed
/// in signed batches. The answer carries the signing secret, shown only this once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = Registration,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server delivers no webhooks", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or the tenant has its most endpoints", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    let bytes = body::read(&state, &headers, request).await?;
    let value = body::json(&headers, &bytes)?;
    let request: Registration = body::typed(value, "invalid-type")?;
    if request.events.iter().any(|e| e.contains(',')) {
        return Err(Problem::fields(vec![FieldError::new(
            "/events",
            "invalid-value",
            format!("one event type per item: {}", kind_names()),
        )]));
    }
    let events = parse_events(&request.events.join(","))
        .map_err(|e| Problem::fields(vec![FieldError::new("/events", "invalid-value", e)]))?;
    let endpoint = hooks
        .register(
            caller.tenant_key(),
            &request.url,
            events,
            &request.description,
        )
        .await
        .map_err(|e| match e {
            RegisterError::Invalid(field, reason) => Problem::fields(vec![FieldError::new(
                format!("/{field}"),
                "invalid-value",
                reason,
            )]),
            RegisterError::TooMany(_) => {
                Problem::fields(vec![FieldError::new("/url", "too-many", e.to_string())])
            }
            RegisterError::Store(e) => unavailable(e),
        })?;
    let secret = endpoint.secret.clone();
    let endpoint = view(hooks, vec![endpoint]).await?.remove(0);
    let registered = Registered { endpoint, secret };
    Ok((StatusCode::CREATED, axum::Json(registered)).into_response())
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint with its backlog", body = EndpointView),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint of the tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    let endpoint = own(hooks, &caller, &id).await?;
    let view = view(hooks, vec![endpoint]).await?.remove(0);
    Ok(axum::Json(view).into_response())
}

/// Deletes an endpoint with its waiting events and dead letters.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint of the tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    match hooks.remove(caller.tenant_key(), &id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(Problem::new(Kind::NotFound).detail(format!("no webhook endpoint {id}"))),
        Err(e) => Err(unavailable(e)),
    }
}

/// The events given up on, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/dead-letters",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id"), DeadQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint of the tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad after or limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<DeadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    let query = super::page::query(query)?;
    let limit = super::page::limit(query.limit)?;
    let endpoint = own(hooks, &caller, &id).await?;
    let mut letters = hooks
        .store()
        .dead_letters(&endpoint.id, query.after.unwrap_or(0), limit + 1)
        .await
        .map_err(unavailable)?;
    let next = (letters.len() > limit).then(|| {
        letters.truncate(limit);
        letters[limit - 1].seq
    });
    let page = DeadLetterPage {
        dead_letters: letters
            .into_iter()
            .map(|d| DeadLetterView {
                seq: d.seq,
                queued_at: rfc3339(d.queued_at_ms),
                failed_at: rfc3339(d.failed_at_ms),
                error: d.error,
                event: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
            })
            .collect(),
        next,
    };
    Ok(axum::Json(page).into_response())
}

/// Queues the endpoint's dead letters again, in their order, as new events (the
/// give-up time counts from now).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/dead-letters/redrive",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Queued again", body = Redriven),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint of the tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let hooks = hooks(&state)?;
    let endpoint = own(hooks, &caller, &id).await?;
    let now = postroad_queue::unix_ms(std::time::SystemTime::now());
    let requeued = hooks
        .store()
        .redrive(&endpoint.id, now)
        .await
        .map_err(unavailable)?;
    hooks.wake();
    Ok(axum::Json(Redriven { requeued }).into_response())
}
