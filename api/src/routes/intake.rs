//! What reaches Postroad about mail already sent: `POST /webhooks/ses` (SNS
//! notifications of SES events) and `POST /webhooks/sendgrid` (SendGrid's signed event
//! webhook), whose callers prove themselves by their signatures rather than an API
//! key; and `POST /v1/inbound`, a bounce or complaint report (the raw message) posted
//! by an application key holder. Each is recorded durably as events before it is
//! answered; what cannot be recorded now is answered 503 and should be sent again.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{Kind, Problem};
use crate::state::AppState;
use postroad_webhooks::Answer;
use postroad_webhooks::sendgrid::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// What a webhook delivery or a report became.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recorded {
    /// Events recorded (bounced, deferred, delivered, complained, opened, clicked).
    pub recorded: usize,
    /// Events or return paths naming no message Postroad sent.
    pub unmatched: usize,
    /// What said nothing to record (a notice, an auto-reply, ...).
    pub ignored: usize,
}

/// SES events, by way of an SNS topic's HTTP(S) subscription.
#[utoipa::path(
    post,
    path = "/webhooks/ses",
    tag = "webhooks",
    request_body(content = String, description = "An SNS message (JSON): Notification, SubscriptionConfirmation or UnsubscribeConfirmation", content_type = "text/plain"),
    responses(
        (status = 200, description = "Recorded, or the subscription confirmed", body = Recorded),
        (status = 400, description = "Not an SNS message, or not an SES event", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Signature, certificate or topic not trusted", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "webhooks.ses is off", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than http.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot be recorded now: send it again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ses(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(hooks) = state.deps.provider_hooks.clone() else {
        return off("webhooks.ses");
    };
    match crate::body::read(&state, &headers, body).await {
        Ok(bytes) => answer(hooks.ses(&bytes).await, "webhooks.ses"),
        Err(problem) => problem.into_response(),
    }
}

/// SendGrid's event webhook, signed (ECDSA P-256 over the timestamp and the body).
#[utoipa::path(
    post,
    path = "/webhooks/sendgrid",
    tag = "webhooks",
    request_body(content = String, description = "A JSON array of SendGrid events", content_type = "application/json"),
    params(
        ("X-Twilio-Email-Event-Webhook-Signature" = String, Header, description = "base64 DER ECDSA signature"),
        ("X-Twilio-Email-Event-Webhook-Timestamp" = String, Header, description = "Unix seconds"),
    ),
    responses(
        (status = 200, description = "Recorded", body = Recorded),
        (status = 400, description = "Not a JSON array of events", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing, bad or stale signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "webhooks.sendgrid is off", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than http.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot be recorded now: send it again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sendgrid(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(hooks) = state.deps.provider_hooks.clone() else {
        return off("webhooks.sendgrid");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
    match crate::body::read(&state, &headers, body).await {
        Ok(bytes) => answer(
            hooks
                .sendgrid(timestamp.as_deref(), signature.as_deref(), &bytes)
                .await,
            "webhooks.sendgrid",
        ),
        Err(problem) => problem.into_response(),
    }
}

/// A bounce or complaint report, as received by mail (for providers and gateways that
/// forward them over HTTP): mapped back by the return paths it carries.
#[utoipa::path(
    post,
    path = "/v1/inbound",
    tag = "messages",
    request_body(content = String, description = "The report, a whole message as received (message/rfc822; any content type is read as such)", content_type = "text/plain"),
    responses(
        (status = 200, description = "Read; what it recorded", body = Recorded),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No bounce domains (bounces.domains)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than http.max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The history or the queue is away: send it again", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn inbound(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(reports) = state.deps.reports.clone() else {
        return off("bounces.domains");
    };
    let bytes = match crate::body::read(&state, &headers, body).await {
        Ok(bytes) => bytes,
        Err(problem) => return problem.into_response(),
    };
    match reports.receive(&[], &bytes).await {
        Ok(got) => axum::Json(Recorded {
            recorded: got.recorded,
            unmatched: got.unverified,
            ignored: got.ignored,
        })
        .into_response(),
        Err(e) => Problem::new(Kind::QueueUnavailable)
            .detail(e.to_string())
            .retry_after(30)
            .into_response(),
    }
}

fn answer(answer: Answer, key: &str) -> Response {
    match answer {
        Answer::Recorded {
            events,
            unmatched,
            ignored,
        } => axum::Json(Recorded {
            recorded: events,
            unmatched,
            ignored,
        })
        .into_response(),
        Answer::Confirmed => (
            StatusCode::OK,
            axum::Json(Recorded {
                recorded: 0,
                unmatched: 0,
                ignored: 0,
            }),
        )
            .into_response(),
        Answer::Refused(why) => Problem::new(Kind::Forbidden).detail(why).into_response(),
        Answer::Malformed(why) => Problem::new(Kind::InvalidRequest)
            .detail(why)
            .into_response(),
        Answer::Unavailable(why) => Problem::new(Kind::QueueUnavailable)
            .detail(why)
            .retry_after(30)
            .into_response(),
        Answer::Off => off(key),
    }
}

fn off(key: &str) -> Response {
    Problem::new(Kind::NotFound)
        .detail(format!(
            "this server takes no such reports ({key} is not set)"
        ))
        .into_response()
}
