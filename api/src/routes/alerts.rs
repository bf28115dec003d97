//! `GET /v1/alerts`: the alert rules' states, from the [`AlertSource`] the process
//! gave. Alerts describe the whole server, so only keys without a tenant see them.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::alerts::AlertReport;
use crate::auth::Caller;
use crate::problem::{Kind, Problem};
use crate::state::AppState;

/// What fires now and since when, and every rule that does not.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    responses(
        (status = 200, description = "Every rule's state", body = AlertReport),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The API key belongs to a tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This server evaluates no alerts (alerts.enabled is off)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    if caller.tenant.is_some() {
        return Err(Problem::new(Kind::Forbidden)
            .detail("alerts describe the whole server: use an API key without a tenant"));
    }
    let source =
        state.deps.alerts.as_ref().ok_or_else(|| {
            Problem::new(Kind::NotFound).detail("this server evaluates no alerts")
        })?;
    Ok(axum::Json(source.report()).into_response())
}
