//! A webhook receiver of the tests' own (axum on the test's runtime): it answers as its
//! script says (fail, hang past the server's timeout, accept) and records every request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::runtime::Runtime;

/// What the receiver does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fail,
    /// Answers only after 10 s (past the servers' timeouts in the tests).
    Hang,
    Accept,
}

#[derive(Default)]
pub struct Seen {
    /// Modes for the next requests, in order; then `Accept`.
    pub script: Vec<Mode>,
    /// Every request: its mode, batch id, signature header and body.
    pub requests: Vec<(Mode, String, String, String)>,
}

pub type Receiver = Arc<Mutex<Seen>>;

async fn receive(State(seen): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mode = {
        let mut seen = seen.lock().unwrap();
        let mode = if seen.script.is_empty() {
            Mode::Accept
        } else {
            seen.script.remove(0)
        };
        let record = (
            mode,
            header("postroad-batch-id"),
            header("postroad-signature"),
            body,
        );
        seen.requests.push(record);
        mode
    };
    match mode {
        Mode::Fail => StatusCode::SERVICE_UNAVAILABLE,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StatusCode::OK
        }
        Mode::Accept => StatusCode::NO_CONTENT,
    }
}

/// A receiver at `http://127.0.0.1:{port}/hook`, on `rt`, following `script`.
pub fn start(rt: &Runtime, port: u16, script: Vec<Mode>) -> Receiver {
    let seen: Receiver = Arc::new(Mutex::new(Seen {
        script,
        ..Seen::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))))
        .unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    seen
}

/// The events the receiver accepted, the first delivery of each, in arrival order.
pub fn accepted_events(seen: &Receiver) -> Vec<Value> {
    let seen = seen.lock().unwrap();
    let mut ids = std::collections::HashSet::new();
    seen.requests
        .iter()
        .filter(|(mode, ..)| *mode == Mode::Accept)
        .flat_map(|(.., body)| {
            let batch: Value = serde_json::from_str(body).unwrap();
            batch["events"].as_array().unwrap().clone()
        })
        .filter(|e| ids.insert(e["id"].as_str().unwrap().to_string()))
        .collect()
}
