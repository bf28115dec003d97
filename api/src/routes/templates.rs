//! `PUT/GET/DELETE /v1/templates/{emailType}` and `GET /v1/templates`.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::body;
use crate::problem::{FieldError, Kind, Problem, pointer};
use crate::render::Compiled;
use crate::state::AppState;
use crate::store::templates::{DEFINITION_FIELDS, Definition, PARTS_FIELDS, Template};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    /// The newest version of each template.
    pub templates: Vec<Template>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A version; default: the newest.
    pub version: Option<u32>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

fn check_type(email_type: &str) -> Result<(), Problem> {
    postroad_queue::metadata::token("email type", email_type).map_err(|e| {
        Problem::fields(vec![FieldError::new(
            "emailType",
            "invalid-value",
            e.to_string(),
        )])
    })
}

/// Every field a template definition does not have, with its pointer.
fn unknown_fields(value: &serde_json::Value) -> Result<(), Problem> {
    let mut errors = Vec::new();
    let mut check =
        |object: &serde_json::Map<String, serde_json::Value>, known: &[&str], at: &str| {
            for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
                errors.push(FieldError::new(
                    pointer(at, key),
                    "unknown-field",
                    format!("{key} is not a field of a template"),
                ));
            }
        };
    if let Some(object) = value.as_object() {
        check(object, &DEFINITION_FIELDS, "");
        if let Some(locales) = object.get("locales").and_then(|l| l.as_object()) {
            for (name, parts) in locales {
                if let Some(parts) = parts.as_object() {
                    check(parts, &PARTS_FIELDS, &pointer("/locales", name));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::fields(errors))
    }
}

fn store_error(e: crate::store::StoreError) -> Problem {
    Problem::internal(format!("template store: {e}"))
}

/// Stores a new version of the template of `emailType` (compiled first: a syntax
/// error is a `422` naming the part).
#[utoipa::path(
    put,
    path = "/v1/templates/{emailType}",
    tag = "templates",
    params(("emailType" = String, Path, description = "The email type the template is for")),
    request_body = Definition,
    responses(
        (status = 201, description = "The new version", body = Template),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid template", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(email_type): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, Problem> {
    check_type(&email_type)?;
    let bytes = body::read(&state, &headers, request).await?;
    let value = body::json(&headers, &bytes)?;
    unknown_fields(&value)?;
    let definition: Definition = body::typed(value, "invalid-value")?;
    let mut errors = Vec::new();
    if let Some(from) = &definition.from {
        crate::submit::check::named(from, "/from", &mut errors);
    }
    if let Err(mut compile) = Compiled::new(definition.clone(), 0) {
        errors.append(&mut compile);
    }
    if !errors.is_empty() {
        return Err(Problem::fields(errors));
    }
    let tenant = caller.tenant_key();
    let stored = state
        .templates
        .store()
        .put_template(tenant, &email_type, &definition)
        .await
        .map_err(store_error)?;
    state
        .templates
        .changed(tenant, &email_type, Some(&stored))
        .await;
    Ok(json(StatusCode::CREATED, &stored))
}

/// The newest version of a template, or the one asked for.
#[utoipa::path(
    get,
    path = "/v1/templates/{emailType}",
    tag = "templates",
    params(("emailType" = String, Path, description = "The email type"), VersionQuery),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such template (or version)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email type or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(email_type): Path<String>,
    query: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    check_type(&email_type)?;
    let Query(query) = query.map_err(|e| {
        Problem::fields(vec![FieldError::new(
            "?version",
            "invalid-value",
            e.body_text(),
        )])
    })?;
    let found = state
        .templates
        .store()
        .template(caller.tenant_key(), &email_type, query.version)
        .await
        .map_err(store_error)?;
    match found {
        Some(template) => Ok(json(StatusCode::OK, &template)),
        None => Err(Problem::new(Kind::NotFound).detail(format!("no template {email_type}"))),
    }
}

/// Every template (newest versions).
#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "templates",
    responses(
        (status = 200, description = "The templates", body = TemplateList),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    let templates = state
        .templates
        .store()
        .list_templates(caller.tenant_key())
        .await
        .map_err(store_error)?;
    Ok(json(StatusCode::OK, &TemplateList { templates }))
}

/// Deletes every version of a template.
#[utoipa::path(
    delete,
    path = "/v1/templates/{emailType}",
    tag = "templates",
    params(("emailType" = String, Path, description = "The email type")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, unknown or revoked API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such template", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email type", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(email_type): Path<String>,
) -> Result<Response, Problem> {
    check_type(&email_type)?;
    let tenant = caller.tenant_key();
    let deleted = state
        .templates
        .store()
        .delete_template(tenant, &email_type)
        .await
        .map_err(store_error)?;
    if deleted == 0 {
        return Err(Problem::new(Kind::NotFound).detail(format!("no template {email_type}")));
    }
    state.templates.changed(tenant, &email_type, None).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
