//! The links in the mail: `GET /t/o/{token}` (the open pixel), `GET /t/c/{token}` (a
//! tracked link: recorded, then a redirect to where it leads), and `/u/{token}`: the
//! one-click unsubscribe of RFC 8058 (`POST`, what mailbox providers send) and a page
//! with a button for a reader who follows the link (`GET`, which changes nothing:
//! link scanners fetch every URL). No API key: the token is signed, and a token
//! Postroad did not make, or one changed, is `404` with nothing recorded; a redirect
//! only ever goes where a signed token says.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postroad_queue::{DeliveryEvent, EventKind, unix_ms};

use crate::problem::Problem;
use crate::state::AppState;
use crate::tracking::unsubscribe::{self, UnsubscribeError};
use crate::tracking::{Claims, Purpose, machine};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

/// Never cached: each fetch is an open.
const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store, private");

/// The open pixel.
#[utoipa::path(
    get,
    path = "/t/o/{token}",
    tag = "tracking",
    params(("token" = String, Path, description = "A signed open token")),
    responses(
        (status = 200, description = "The pixel (image/gif); the open is recorded", content_type = "image/gif"),
        (status = 404, description = "Not a token of this server, or tracking is off"),
        (status = 503, description = "Cannot be recorded now", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let Some(claims) = claims(&state, &token, Purpose::Open) else {
        return not_found();
    };
    if let Err(problem) = record(&state, &claims, EventKind::Opened, &method, &headers).await {
        return problem.into_response();
    }
    ([(header::CONTENT_TYPE, "image/gif"), NO_STORE], PIXEL).into_response()
}

/// A tracked link.
#[utoipa::path(
    get,
    path = "/t/c/{token}",
    tag = "tracking",
    params(("token" = String, Path, description = "A signed click token")),
    responses(
        (status = 302, description = "To the link's target (Location); the click is recorded"),
        (status = 404, description = "Not a token of this server, or tracking is off"),
    )
)]
pub async fn click(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let Some(claims) = claims(&state, &token, Purpose::Click) else {
        return not_found();
    };
    let Some((_, target)) = claims.link.clone() else {
        return not_found();
    };
    // The reader goes on even when the click cannot be recorded now.
    if let Err(problem) = record(&state, &claims, EventKind::Clicked, &method, &headers).await {
        tracing::warn!(message = %claims.message, "click not recorded: {problem:?}");
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, target.as_str()), NO_STORE],
    )
        .into_response()
}

/// One-click unsubscribe (RFC 8058): the address goes on its tenant's suppression
/// list at once and an `unsubscribed` event is recorded.
#[utoipa::path(
    post,
    path = "/u/{token}",
    tag = "tracking",
    params(("token" = String, Path, description = "A signed unsubscribe token")),
    request_body(content = String, description = "List-Unsubscribe=One-Click (any body is accepted)", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Unsubscribed (text/plain)"),
        (status = 404, description = "Not a token of this server, or tracking is off"),
        (status = 503, description = "Cannot be recorded now: try again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(claims) = claims(&state, &token, Purpose::Unsubscribe) else {
        return not_found();
    };
    let deps = &state.deps;
    match unsubscribe::apply(&claims, deps.suppressions.as_deref(), &*deps.queue).await {
        Ok(()) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                NO_STORE,
            ],
            format!("{} is unsubscribed.\n", claims.recipient),
        )
            .into_response(),
        Err(UnsubscribeError::Suppressions(e)) => {
            Problem::store_unavailable("the suppression list", e).into_response()
        }
        Err(UnsubscribeError::Queue(e)) => {
            Problem::queue_unavailable("recording a tracking event", e).into_response()
        }
    }
}

/// The page behind the unsubscribe link: a button that sends the one-click POST.
#[utoipa::path(
    get,
    path = "/u/{token}",
    tag = "tracking",
    params(("token" = String, Path, description = "A signed unsubscribe token")),
    responses(
        (status = 200, description = "A page with an unsubscribe button (text/html); nothing changes"),
        (status = 404, description = "Not a token of this server, or tracking is off"),
    )
)]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let Some(claims) = claims(&state, &token, Purpose::Unsubscribe) else {
        return not_found();
    };
    let address = escape(&claims.recipient);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Stop mail to {address}?</p><button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_STORE],
        page,
    )
        .into_response()
}

/// The claims of a token made for `purpose`; `None` for anything else.
fn claims(state: &AppState, token: &str, purpose: Purpose) -> Option<Claims> {
    let tracking = state.deps.tracking.as_ref()?;
    tracking
        .verify(token)
        .ok()
        .filter(|claims| claims.purpose == purpose)
}

async fn record(
    state: &AppState,
    claims: &Claims,
    kind: EventKind,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    let window = state
        .deps
        .tracking
        .as_ref()
        .map(|t| t.machine_window())
        .unwrap_or_default();
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let now = unix_ms(std::time::SystemTime::now());
    let sent = (claims.message.as_u128() >> 80) as u64;
    let machine = machine::is_machine(method == Method::HEAD, agent, sent, now, window);
    let reason = machine.then(|| "machine".to_string());
    record_events(state, vec![claims.event(kind, reason, now)]).await
}

async fn record_events(state: &AppState, events: Vec<DeliveryEvent>) -> Result<(), Problem> {
    state
        .deps
        .queue
        .record(events)
        .await
        .map_err(|e| Problem::queue_unavailable("recording a tracking event", e))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [NO_STORE], "not found\n").into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
