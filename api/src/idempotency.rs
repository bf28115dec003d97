//! `Idempotency-Key`: a request retried with the same key (per API key, within
//! `http.idempotency_ttl_secs`) gets the first answer again and queues nothing new; the
//! same key with a different request is refused (`422`), and while the first is still
//! in progress a retry gets `409`, on whichever node of a cluster it lands (the key is
//! claimed in the shared store before the request is handled).
//!
//! A claimed request runs to its end in a task of its own, so a client that hangs up
//! does not cut it between the queue's commit and the record of its answer. A process
//! crash between those two commits would let a retry (after [`CLAIM_STALE`]) queue the
//! messages a second time; everything else (timeouts, lost connections, concurrent
//! retries) is answered from the record or the claim.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;
use crate::store::AppStore;
use crate::store::idempotency::{Claim, Recorded};

pub const HEADER: &str = "idempotency-key";
/// Set on an answer given again from the record.
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY: usize = 255;
/// How long a claim without an answer holds its key: past it, the process that made
/// the claim is taken to have died and a retry is handled anew.
pub const CLAIM_STALE: Duration = Duration::from_secs(120);

/// A JSON answer: status and body.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Runs `handle` once per (API key, Idempotency-Key); without the header, always.
pub async fn once<F>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &[u8],
    handle: F,
) -> Response
where
    F: Future<Output = Result<Answer, Problem>> + Send + 'static,
{
    let Some(value) = headers.get(HEADER) else {
        return respond(handle.await);
    };
    let key = match value.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY
                && k.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
        {
            k.to_string()
        }
        _ => {
            let error = FieldError::new(
                "Idempotency-Key",
                "invalid-value",
                format!("the Idempotency-Key header is 1 to {MAX_KEY} printable ASCII characters"),
            );
            return Problem::fields(vec![error]).into_response();
        }
    };
    let request_hash: [u8; 32] = Sha256::digest(request).into();
    let ttl_ms = state.config.idempotency_ttl.as_millis() as i64;
    let stale_ms = CLAIM_STALE.as_millis() as i64;
    let store = state.deps.store.clone();
    let key_id = caller.key_id.clone();
    match store
        .claim(&key_id, &key, &request_hash, ttl_ms, stale_ms)
        .await
    {
        Ok(Claim::Fresh) => {}
        Ok(Claim::Answered(recorded)) if recorded.request_hash == request_hash => {
            return replay(recorded);
        }
        Ok(Claim::Answered(_)) => return Problem::new(Kind::IdempotencyMismatch).into_response(),
        Ok(Claim::InProgress) => {
            return Problem::new(Kind::IdempotencyInProgress)
                .retry_after(1)
                .into_response();
        }
        Err(e) => {
            return Problem::internal(format!("idempotency store: {e}"))
                .retry_after(1)
                .into_response();
        }
    }
    let task = tokio::spawn(async move {
        let result = handle.await;
        settle(&store, &key_id, &key, request_hash, &result).await;
        result
    });
    match task.await {
        Ok(result) => respond(result),
        // The handler panicked: its claim stays until it is stale.
        Err(e) => Problem::internal(format!("request failed: {e}")).into_response(),
    }
}

/// Records the answer of a claimed request, or gives the claim back when the answer is
/// one a retry may change.
async fn settle(
    store: &AppStore,
    key_id: &str,
    key: &str,
    request_hash: [u8; 32],
    result: &Result<Answer, Problem>,
) {
    let (status, response) = match result {
        Ok(answer) => (answer.status, answer.body.clone()),
        Err(problem) if final_problem(problem) => (
            problem.status(),
            serde_json::to_string(problem).unwrap_or_default(),
        ),
        Err(_) => {
            if let Err(e) = store.release(key_id, key).await {
                // The claim stays until it is stale; a retry meanwhile gets 409.
                tracing::warn!(error = %e, "cannot release an idempotency claim");
            }
            return;
        }
    };
    let recorded = Recorded {
        request_hash,
        status: status.as_u16(),
        response,
    };
    if let Err(e) = store.record_answer(key_id, key, &recorded).await {
        // The messages are queued; the answer is still right, and the claim keeps
        // retries out until it is stale.
        tracing::error!(error = %e, "cannot record an idempotent answer");
    }
}

/// Whether a problem is the request's final answer (a retry would get the same), so it
/// is recorded; transient ones (overload, queue down) are not.
fn final_problem(problem: &Problem) -> bool {
    let status = problem.status();
    status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT
}

fn replay(recorded: Recorded) -> Response {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK);
    let mut response = Answer {
        status,
        body: recorded.response,
    }
    .into_response();
    if status.is_client_error() {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::problem::PROBLEM_JSON),
        );
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn respond(result: Result<Answer, Problem>) -> Response {
    match result {
        Ok(answer) => answer.into_response(),
        Err(problem) => problem.into_response(),
    }
}
