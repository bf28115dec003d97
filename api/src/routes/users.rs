//! `PUT/GET/DELETE /v1/users/{userId}/preferences`: what template-form messages to the
//! user render with (see `crate::prefs`).

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body;
use crate::prefs::{self, Prefs, PrefsError};
use crate::problem::{FieldError, Kind, Problem};
use crate::state::AppState;

/// A user's preferences: names to string values (`name`, `language`, `timezone`...),
/// at most 50, values up to 1,024 bytes.
#[derive(ToSchema)]
#[schema(as = Preferences, example = json!({"name": "Ann", "language": "fr", "timezone": "Europe/Paris"}))]
pub struct PreferencesSchema(#[allow(dead_code)] std::collections::BTreeMap<String, String>);

fn user_id(text: &str) -> Result<u64, Problem> {
    postroad_queue::metadata::parse_user_id(text).map_err(|e| {
        Problem::fields(vec![FieldError::new(
            "userId",
            "invalid-value",
            e.to_string(),
        )])
    })
}

fn store_error(e: PrefsError) -> Problem {
    Problem::store_unavailable("the preferences store", e)
}

/// Replaces the user's preferences.
#[utoipa::path(
    put,
    path = "/v1/users/{userId}/preferences",
    tag = "users",
    params(("userId" = u64, Path, description = "The application's user id")),
    request_body = PreferencesSchema,
    responses(
        (status = 200, description = "Stored", body = PreferencesSchema),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id or preferences", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or store unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    let id = user_id(&id)?;
    let bytes = body::read(&state, &headers, request).await?;
    let value = body::json(&headers, &bytes)?;
    let prefs = prefs::read(&value).map_err(Problem::fields)?;
    state
        .prefs
        .put(caller.tenant_key(), id, &prefs)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::OK, axum::Json(prefs)).into_response())
}

/// The user's preferences.
#[utoipa::path(
    get,
    path = "/v1/users/{userId}/preferences",
    tag = "users",
    params(("userId" = u64, Path, description = "The application's user id")),
    responses(
        (status = 200, description = "The preferences", body = PreferencesSchema),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user has no preferences", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or store unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = user_id(&id)?;
    let mut found = state
        .prefs
        .get_many(caller.tenant_key(), &[id])
        .await
        .map_err(store_error)?;
    let prefs: Prefs = found.remove(&id).ok_or_else(|| {
        Problem::new(Kind::NotFound).detail(format!("user {id} has no preferences"))
    })?;
    Ok((StatusCode::OK, axum::Json(prefs)).into_response())
}

/// Deletes the user's preferences.
#[utoipa::path(
    delete,
    path = "/v1/users/{userId}/preferences",
    tag = "users",
    params(("userId" = u64, Path, description = "The application's user id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user has no preferences", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or store unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = user_id(&id)?;
    let deleted = state
        .prefs
        .delete(caller.tenant_key(), id)
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(Problem::new(Kind::NotFound).detail(format!("user {id} has no preferences")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
