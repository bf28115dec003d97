//! The admin HTTP endpoint (axum): bearer-token auth, JSON in and out, every error an
//! `{"error": "..."}` answer, never a panic.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::Bytes;
use postroad_queue::{MessageId, Queue, QueueError};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::{
    BodyEncoding, DEFAULT_LIST_LIMIT, DeadLetterDetail, DeadLetterList, ErrorBody, Flushed,
    MAX_LIST_LIMIT, MessageDetail, MessageList, ProviderList, Purged, RelayControl, Requeued,
    ShapingReloaded, SiteList,
};

#[derive(Clone)]
struct AppState {
    queue: Arc<dyn Queue>,
    relay: Option<Arc<dyn RelayControl>>,
    token: Arc<str>,
}

/// How long requests still open at shutdown may take before they are cut off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the admin API on `listener` until `shutdown` turns true (or its sender is
/// dropped), then lets in-flight requests finish (for up to [`SHUTDOWN_GRACE`]: a
/// client that never finishes its request cannot hold the server's shutdown up) and
/// returns.
pub async fn serve_admin(
    listener: TcpListener,
    token: String,
    queue: Arc<dyn Queue>,
    relay: Option<Arc<dyn RelayControl>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let app = router(token, queue, relay, health);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let deadline = async move {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        }
        () = deadline => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "admin endpoint: requests still open at shutdown were cut off");
        }
    }
    tracing::debug!("admin endpoint stopped");
}

/// The admin API: the probes, and every other route behind the token check.
pub fn router(
    token: String,
    queue: Arc<dyn Queue>,
    relay: Option<Arc<dyn RelayControl>>,
    health: Arc<Health>,
) -> Router {
    let probes = Router::new()
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(super::health::readyz))
        .with_state((health, queue.clone()));
    let state = AppState {
        queue,
        relay,
        token: token.into(),
    };
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/queue/stats", get(queue_stats))
        .route("/v1/queue/messages", get(queue_list))
        .route("/v1/queue/messages/{id}", get(queue_get))
        .route("/v1/queue/flush", post(queue_flush))
        .route("/v1/queue/sites", get(queue_sites))
        .route("/v1/queue/providers", get(queue_providers))
        .route("/v1/shaping/reload", post(shaping_reload))
        .route("/v1/dlq", get(dlq_list))
        .route("/v1/dlq/{id}", get(dlq_get).delete(dlq_purge))
        .route("/v1/dlq/{id}/requeue", post(dlq_requeue))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    probes.merge(guarded)
}

/// An error answer: a status and a one-line message, as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A queue failure: 404 for an unknown message, 503 while shutting down, else 500.
    fn queue(e: QueueError) -> Self {
        let status = match e {
            QueueError::NotFound(_) => StatusCode::NOT_FOUND,
            QueueError::ShuttingDown | QueueError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueueError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "admin request failed");
        }
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"postroad-admin\""),
            );
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn relay(state: &AppState) -> Result<&Arc<dyn RelayControl>, ApiError> {
    state.relay.as_ref().ok_or_else(|| {
        ApiError::not_found("this process runs no relay (relay.enabled is off, or no relay role)")
    })
}

/// `GET /v1/queue/sites`: every site with its limits, state and queue.
async fn queue_sites(State(state): State<AppState>) -> ApiResult<SiteList> {
    Ok(Json(SiteList {
        sites: relay(&state)?.sites(),
    }))
}

/// `GET /v1/queue/providers`: every configured provider with its state and rate.
async fn queue_providers(State(state): State<AppState>) -> ApiResult<ProviderList> {
    Ok(Json(ProviderList {
        providers: relay(&state)?.providers(),
    }))
}

/// `POST /v1/shaping/reload`: reads the shaping file again; a file that does not load
/// is `422` and the running one stays.
async fn shaping_reload(State(state): State<AppState>) -> ApiResult<ShapingReloaded> {
    let relay = relay(&state)?.clone();
    match tokio::task::spawn_blocking(move || relay.reload_shaping()).await {
        Ok(Ok(summary)) => Ok(Json(ShapingReloaded { summary })),
        Ok(Err(reason)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().split_at_checked(7))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token.trim_ascii());
    match given {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing \"Authorization: Bearer <token>\" header",
        )
        .into_response(),
        Some(token) if bool::from(token.ct_eq(state.token.as_bytes())) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

type IdPath = Result<Path<String>, PathRejection>;

/// The `{id}` of the path: 32 hex digits.
fn parse_id(path: IdPath) -> Result<MessageId, ApiError> {
    let Path(text) = path.map_err(|e| ApiError::bad_request(format!("invalid message id: {e}")))?;
    // Uuid also takes hyphenated and braced forms; ids are shown as 32 hex digits.
    let is_hex = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match text.parse() {
        Ok(id) if is_hex => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "invalid message id {text:?}: expected 32 hex digits"
        ))),
    }
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(query: Params) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(map)| map)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// `limit=N` (default [`DEFAULT_LIST_LIMIT`], capped at [`MAX_LIST_LIMIT`]).
fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(text) => text
            .parse::<usize>()
            .map(|n| n.min(MAX_LIST_LIMIT))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid limit {text:?}: expected a whole number (at most {MAX_LIST_LIMIT} are returned)"
                ))
            }),
    }
}

/// `raw=1` (or `true`): the body as base64 of its exact bytes.
fn raw(params: &HashMap<String, String>) -> Result<bool, ApiError> {
    match params.get("raw").map(String::as_str) {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("" | "1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid raw {other:?}: expected 1 or 0"
        ))),
    }
}

fn encode_body(body: &Bytes, raw: bool) -> (String, BodyEncoding) {
    if raw {
        (
            base64::engine::general_purpose::STANDARD.encode(body),
            BodyEncoding::Base64,
        )
    } else {
        (
            String::from_utf8_lossy(body).into_owned(),
            BodyEncoding::Text,
        )
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = state.queue.stats().await.map_err(ApiError::queue)?;
    let text = crate::metrics::render(&stats, &state.queue.gauges());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

async fn queue_stats(State(state): State<AppState>) -> ApiResult<postroad_queue::QueueStats> {
    state.queue.stats().await.map(Json).map_err(ApiError::queue)
}

async fn queue_list(State(state): State<AppState>, query: Params) -> ApiResult<MessageList> {
    let limit = limit(&params(query)?)?;
    let messages = state.queue.list(limit).await.map_err(ApiError::queue)?;
    Ok(Json(MessageList { messages }))
}

async fn queue_get(
    State(state): State<AppState>,
    id: IdPath,
    query: Params,
) -> ApiResult<MessageDetail> {
    let id = parse_id(id)?;
    let raw = raw(&params(query)?)?;
    match state.queue.get(id).await.map_err(ApiError::queue)? {
        None => Err(ApiError::not_found(format!("no queued message {id}"))),
        Some((envelope, body)) => {
            let (body, body_encoding) = encode_body(&body, raw);
            Ok(Json(MessageDetail {
                envelope,
                body,
                body_encoding,
            }))
        }
    }
}

async fn queue_flush(State(state): State<AppState>) -> ApiResult<Flushed> {
    let flushed = state.queue.flush().await.map_err(ApiError::queue)?;
    tracing::info!(flushed, "admin: queue flushed");
    Ok(Json(Flushed { flushed }))
}

async fn dlq_list(State(state): State<AppState>, query: Params) -> ApiResult<DeadLetterList> {
    let limit = limit(&params(query)?)?;
    let dead_letters = state
        .queue
        .dead_letters(limit)
        .await
        .map_err(ApiError::queue)?;
    Ok(Json(DeadLetterList { dead_letters }))
}

async fn dlq_get(
    State(state): State<AppState>,
    id: IdPath,
    query: Params,
) -> ApiResult<DeadLetterDetail> {
    let id = parse_id(id)?;
    let raw = raw(&params(query)?)?;
    match state
        .queue
        .get_dead_letter(id)
        .await
        .map_err(ApiError::queue)?
    {
        None => Err(ApiError::not_found(format!("no dead letter {id}"))),
        Some((dead_letter, body)) => {
            let (body, body_encoding) = encode_body(&body, raw);
            Ok(Json(DeadLetterDetail {
                dead_letter,
                body,
                body_encoding,
            }))
        }
    }
}

/// A dead-letter operation's error: an unknown id is named as a dead letter.
fn dlq_error(id: MessageId) -> impl FnOnce(QueueError) -> ApiError {
    move |e| match e {
        QueueError::NotFound(_) => ApiError::not_found(format!("no dead letter {id}")),
        e => ApiError::queue(e),
    }
}

async fn dlq_requeue(State(state): State<AppState>, id: IdPath) -> ApiResult<Requeued> {
    let id = parse_id(id)?;
    let requeued_as = state
        .queue
        .requeue_dead_letter(id)
        .await
        .map_err(dlq_error(id))?;
    tracing::info!(%id, %requeued_as, "admin: dead letter requeued");
    Ok(Json(Requeued { requeued_as }))
}

async fn dlq_purge(State(state): State<AppState>, id: IdPath) -> ApiResult<Purged> {
    let id = parse_id(id)?;
    state
        .queue
        .purge_dead_letter(id)
        .await
        .map_err(dlq_error(id))?;
    tracing::info!(%id, "admin: dead letter purged");
    Ok(Json(Purged { purged: id }))
}
