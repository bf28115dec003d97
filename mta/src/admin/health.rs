//! Liveness and readiness, for load balancers and Kubernetes probes: `GET /healthz`
//! (the process answers) and `GET /readyz` (it is up, not draining, and its queue
//! answers: the spool's storage, or a Kafka broker), both without the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use postroad_queue::Queue;
use serde::Serialize;

/// How long `/readyz` waits for the queue to answer.
const QUEUE_CHECK: Duration = Duration::from_secs(3);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

/// Where the process is in its life.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every listener is bound and every part started.
    pub fn serving(&self) {
        self.0.store(SERVING, Ordering::SeqCst);
    }

    /// Shutting down: no new work should be sent here.
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    fn state(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            SERVING => "serving",
            _ => "draining",
        }
    }
}

/// What `/readyz` answers.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// `starting`, `serving` or `draining`.
    state: &'static str,
    /// `ok`, or why the queue does not answer.
    queue: String,
}

pub(super) async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"alive": true}))).into_response()
}

pub(super) async fn readyz(
    State((health, queue)): State<(Arc<Health>, Arc<dyn Queue>)>,
) -> Response {
    let state = health.state();
    let queue = match tokio::time::timeout(QUEUE_CHECK, queue.check()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {QUEUE_CHECK:?}"),
    };
    let ready = state == "serving" && queue == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            state,
            queue,
        }),
    )
        .into_response()
}
