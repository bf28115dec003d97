//! `POST /v1/messages` and `POST /v1/messages/batch`.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use postroad_queue::MessageId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body;
use crate::idempotency::{self, Answer};
use crate::prefs;
use crate::problem::{FieldError, Kind, Problem, pointer};
use crate::state::AppState;
use crate::submit::{self, Prepared, Refusal, rfc822};

/// `202`: the message is durable in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The queue id of the message (as in SMTP's `250 2.0.0 queued as <id>`).
    #[schema(value_type = String, example = "0193a4f2c7b87e31a0f6b2d9c4e5a6b7")]
    pub id: MessageId,
    /// Envelope recipients queued.
    pub recipients: usize,
    /// Recipients on the suppression list: queued, then not sent (each gets a
    /// `suppressed` event).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedRecipient>,
}

/// A recipient that will not be sent to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppressedRecipient {
    pub address: String,
    /// `hard-bounce`, `soft-bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
}

/// For each of `messages`, its recipients on the suppression list: one lookup per
/// tenant (one Redis round trip with a shared list).
async fn suppressed(state: &AppState, messages: &[Prepared]) -> Vec<Vec<SuppressedRecipient>> {
    let mut found = vec![Vec::new(); messages.len()];
    let Some(list) = &state.deps.suppressions else {
        return found;
    };
    let mut by_tenant: std::collections::BTreeMap<Option<&str>, Vec<(usize, &str)>> =
        Default::default();
    for (i, prepared) in messages.iter().enumerate() {
        let envelope = &prepared.envelope;
        by_tenant
            .entry(envelope.meta.tenant.as_deref())
            .or_default()
            .extend(envelope.recipients.iter().map(|r| (i, r.address.as_str())));
    }
    for (tenant, recipients) in by_tenant {
        let addresses: Vec<&str> = recipients.iter().map(|&(_, a)| a).collect();
        let reasons = list.check(tenant, &addresses).await;
        for ((i, address), reason) in recipients.into_iter().zip(reasons) {
            if let Some(reason) = reason {
                found[i].push(SuppressedRecipient {
                    address: address.to_string(),
                    reason: reason.as_str().to_string(),
                });
            }
        }
    }
    found
}

/// One item of a batch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemResult {
    /// Position in the request's `messages`.
    pub index: usize,
    /// `accepted` or `rejected`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub id: Option<MessageId>,
    /// Accepted recipients on the suppression list: queued, then not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedRecipient>,
    /// Why the item was rejected: its bad fields (pointers from the request's root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// `200` for a batch: every item's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

fn answer<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    Answer {
        status,
        body: serde_json::to_string(value).unwrap_or_default(),
    }
}

/// Submits one message: the template, explicit or raw JSON form, or a MIME message
/// sent as `message/rfc822`.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    request_body(content = crate::openapi::MessageRequest, description = "A message in the template, explicit or raw form; or the MIME message itself as message/rfc822 (envelope in the query string)"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key get the first answer and queue nothing new"),
        ("from" = Option<String>, Query, description = "message/rfc822 only: envelope sender (default: the From field)"),
        ("to" = Option<String>, Query, description = "message/rfc822 only: envelope recipients, comma separated (default: To, Cc, Bcc)"),
    ),
    responses(
        (status = 202, description = "Queued durably", body = Accepted),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same Idempotency-Key is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or message too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or queue unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let bytes = match body::read(&state, &headers, request).await {
        Ok(bytes) => bytes,
        Err(problem) => return axum::response::IntoResponse::into_response(problem),
    };
    let fingerprint = fingerprint("send", &headers, &bytes);
    let handle = {
        let (state, caller, headers) = (state.clone(), caller.clone(), headers.clone());
        async move { send_one(&state, &caller, peer, query, &headers, bytes).await }
    };
    idempotency::once(&state, &caller, &headers, &fingerprint, handle).await
}

/// What `send` does once per request.
async fn send_one(
    state: &AppState,
    caller: &Caller,
    peer: SocketAddr,
    query: Option<String>,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<Answer, Problem> {
    let ctx = state.context(caller, peer.ip().to_canonical());
    let prepared = if body::media_type(headers) == "message/rfc822" {
        let query: rfc822::MimeQuery =
            serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).map_err(|e| {
                Problem::fields(vec![FieldError::new("?", "invalid-value", e.to_string())])
            })?;
        let given = query.given().map_err(Problem::fields)?;
        rfc822::prepare(bytes.to_vec(), given, &ctx)
    } else {
        let value = body::json(headers, &bytes)?;
        let prefs = prefs::Loaded::load(&state.prefs, caller.tenant_key(), [&value]).await;
        submit::prepare(&value, "", &ctx, &state.templates, &prefs).await
    }
    .map_err(Refusal::into_problem)?;
    let prepared = vec![prepared];
    let accepted = Accepted {
        id: prepared[0].envelope.id,
        recipients: prepared[0].envelope.recipients.len(),
        suppressed: suppressed(state, &prepared).await.swap_remove(0),
    };
    state.enqueue(prepared).await?;
    Ok(answer(StatusCode::ACCEPTED, &accepted))
}

/// What goes into the idempotency fingerprint: the route, the media type and the body.
fn fingerprint(route: &str, headers: &HeaderMap, bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{route}\n{}\n", body::media_type(headers)).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// `{"messages": [...]}`: what `POST /v1/messages/batch` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to `http.max_batch` (default 1,000) messages, each in any JSON form.
    #[schema(value_type = Vec<crate::openapi::MessageRequest>)]
    pub messages: Vec<Value>,
}

/// Submits up to `http.max_batch` messages in one durable write; each item is accepted
/// or rejected on its own.
#[utoipa::path(
    post,
    path = "/v1/messages/batch",
    tag = "messages",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key get the first answer and queue nothing new")),
    responses(
        (status = 200, description = "Per-item results; accepted items are durable", body = BatchResult),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same Idempotency-Key is in progress", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a batch, or too many messages", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or queue unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let bytes = match body::read(&state, &headers, request).await {
        Ok(bytes) => bytes,
        Err(problem) => return axum::response::IntoResponse::into_response(problem),
    };
    let fingerprint = fingerprint("batch", &headers, &bytes);
    let handle = {
        let (state, caller, headers) = (state.clone(), caller.clone(), headers.clone());
        async move { send_batch(&state, &caller, peer, &headers, bytes).await }
    };
    idempotency::once(&state, &caller, &headers, &fingerprint, handle).await
}

/// What `batch` does once per request.
async fn send_batch(
    state: &AppState,
    caller: &Caller,
    peer: SocketAddr,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<Answer, Problem> {
    let value = body::json(headers, &bytes)?;
    let request: BatchRequest = body::typed(value, "invalid-type")?;
    let max = state.config.max_batch;
    if request.messages.len() > max {
        let error = FieldError::new(
            "/messages",
            "too-many",
            format!("at most {max} messages per batch (http.max_batch)"),
        );
        return Err(Problem::fields(vec![error]));
    }
    let ctx = state.context(caller, peer.ip().to_canonical());
    let prefs = prefs::Loaded::load(&state.prefs, caller.tenant_key(), &request.messages).await;
    let mut results = Vec::with_capacity(request.messages.len());
    let mut ready: Vec<Prepared> = Vec::new();
    for (index, item) in request.messages.iter().enumerate() {
        let base = pointer("/messages", &index.to_string());
        match submit::prepare(item, &base, &ctx, &state.templates, &prefs).await {
            Ok(prepared) => {
                results.push(ItemResult {
                    index,
                    status: "accepted".into(),
                    id: Some(prepared.envelope.id),
                    suppressed: Vec::new(),
                    errors: Vec::new(),
                });
                ready.push(prepared);
            }
            Err(Refusal::Fields(errors)) => results.push(ItemResult {
                index,
                status: "rejected".into(),
                id: None,
                suppressed: Vec::new(),
                errors,
            }),
            Err(Refusal::Problem(problem)) => return Err(problem),
        }
    }
    let accepted = ready.len();
    let mut listed = suppressed(state, &ready).await.into_iter();
    for result in results.iter_mut().filter(|r| r.id.is_some()) {
        result.suppressed = listed.next().unwrap_or_default();
    }
    if !ready.is_empty() {
        state.enqueue(ready).await?;
    }
    let result = BatchResult {
        accepted,
        rejected: results.len() - accepted,
        results,
    };
    Ok(answer(StatusCode::OK, &result))
}

/// Answers requests to unknown paths.
pub async fn not_found() -> Problem {
    Problem::new(Kind::NotFound)
}

/// Answers a known path with a method it does not take.
pub async fn method_not_allowed() -> Problem {
    Problem::new(Kind::MethodNotAllowed)
}
