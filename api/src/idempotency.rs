//! `Idempotency-Key`: a request retried with the same key (per API key, within
//! `http.idempotency_ttl_secs`) gets the first answer again and queues nothing new; the
//! same key with a different request is refused (`422`), and while the first is still
//! in progress a retry gets `409`.
//!
//! The answer is recorded (fsync'd) right after the queue made the messages durable.
//! A process crash between those two commits would let a retry queue the messages a
//! second time; everything else (timeouts, lost connections, concurrent retries) is
//! answered from the record or the in-progress guard.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;
use crate::store::idempotency::Recorded;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer given again from the record.
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY: usize = 255;

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

/// Removes the in-progress mark however the request ends (also when its task is
/// dropped because the client went away).
struct InFlight<'a> {
    state: &'a AppState,
    key: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state
            .idempotent_in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
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
    F: Future<Output = Result<Answer, Problem>>,
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
    let store = &state.deps.store;
    match store.idempotent_answer(&caller.key_id, &key, ttl_ms).await {
        Ok(Some(recorded)) if recorded.request_hash == request_hash => return replay(recorded),
        Ok(Some(_)) => return Problem::new(Kind::IdempotencyMismatch).into_response(),
        Ok(None) => {}
        Err(e) => {
            return Problem::internal(format!("idempotency store: {e}"))
                .retry_after(1)
                .into_response();
        }
    }
    let mark = (caller.key_id.clone(), key.clone());
    if !state
        .idempotent_in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(mark.clone())
    {
        return Problem::new(Kind::IdempotencyInProgress)
            .retry_after(1)
            .into_response();
    }
    let _in_flight = InFlight { state, key: mark };
    let result = handle.await;
    let (status, response) = match &result {
        Ok(answer) => (answer.status, answer.body.clone()),
        Err(problem) if final_problem(problem) => (
            problem.status(),
            serde_json::to_string(problem).unwrap_or_default(),
        ),
        Err(_) => return respond(result),
    };
    let recorded = Recorded {
        request_hash,
        status: status.as_u16(),
        response,
    };
    if let Err(e) = store.record_answer(&caller.key_id, &key, &recorded).await {
        // The messages are queued; the answer is still right, only a retry could repeat.
        tracing::error!(error = %e, "cannot record an idempotent answer");
    }
    respond(result)
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
