//! `POST /v3/mail/send`: SendGrid v3, so that an app using a SendGrid library only
//! changes its host. The bearer token is a Postroad API key. Each personalization is
//! one message (up to 1,000 recipients in all), every one checked before any is queued,
//! all queued in one durable write; `202` with `X-Message-Id`. `template_id` names a
//! Postroad template, rendered with `dynamic_template_data`; `substitutions` replace
//! text in subject and content; `mail_settings.sandbox_mode` checks without sending.
//! Errors are SendGrid's `{"errors": [{"message", "field", "help"}]}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::translate;
use crate::problem::{FieldError, Problem, pointer};
use crate::state::AppState;
use crate::submit::forms::{Addresses, Attachment, ExplicitForm, Form, MetaFields};
use crate::submit::{self, Prepared, Refusal, check};

/// Most recipients in one request, all personalizations together (SendGrid's limit).
pub const MAX_RECIPIENTS: usize = 1000;
/// How far in the future `send_at` may be and still mean "now".
const SEND_AT_SLACK_SECS: i64 = 60;

#[derive(Debug, Deserialize)]
struct MailSend {
    #[serde(default)]
    personalizations: Vec<Personalization>,
    from: Option<EmailObject>,
    reply_to: Option<EmailObject>,
    #[serde(default)]
    reply_to_list: Vec<EmailObject>,
    subject: Option<String>,
    #[serde(default)]
    content: Vec<ContentItem>,
    #[serde(default)]
    attachments: Vec<SgAttachment>,
    template_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    custom_args: BTreeMap<String, String>,
    send_at: Option<i64>,
    mail_settings: Option<MailSettings>,
}

#[derive(Debug, Deserialize)]
struct Personalization {
    #[serde(default)]
    to: Vec<EmailObject>,
    #[serde(default)]
    cc: Vec<EmailObject>,
    #[serde(default)]
    bcc: Vec<EmailObject>,
    from: Option<EmailObject>,
    subject: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    substitutions: BTreeMap<String, String>,
    #[serde(default)]
    dynamic_template_data: Map<String, Value>,
    #[serde(default)]
    custom_args: BTreeMap<String, String>,
    send_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct EmailObject {
    email: String,
    name: Option<String>,
}

impl EmailObject {
    /// `Name <address>`, as the forms take it.
    fn text(&self) -> String {
        match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => format!("{name} <{}>", self.email),
            None => self.email.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ContentItem {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct SgAttachment {
    content: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    filename: String,
    disposition: Option<String>,
    content_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MailSettings {
    sandbox_mode: Option<Enable>,
}

#[derive(Debug, Deserialize)]
struct Enable {
    #[serde(default)]
    enable: bool,
}

/// Where our field pointers are in a SendGrid request.
const PATHS: &[(&str, &str)] = &[
    ("/from", "from"),
    ("/to", "personalizations.{i}.to"),
    ("/cc", "personalizations.{i}.cc"),
    ("/bcc", "personalizations.{i}.bcc"),
    ("/replyTo", "reply_to"),
    ("/subject", "subject"),
    ("/text", "content"),
    ("/html", "content"),
    ("/headers", "headers"),
    ("/attachments", "attachments"),
    ("/tags", "custom_args"),
    (
        "/templateData",
        "personalizations.{i}.dynamic_template_data",
    ),
    ("/emailType", "template_id"),
    ("/personalizations", "personalizations"),
    ("/send_at", "send_at"),
];

/// Sends one message per personalization, answering as SendGrid does.
pub async fn mail_send(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(caller) = state.keys.authenticate(&headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid, expired, or revoked",
            None,
        );
    };
    let bytes = match crate::body::read(&state, &headers, body).await {
        Ok(bytes) => bytes,
        Err(problem) => return error_for(problem),
    };
    let request: MailSend = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}"), None);
        }
    };
    let sandbox = request
        .mail_settings
        .as_ref()
        .and_then(|s| s.sandbox_mode.as_ref())
        .is_some_and(|s| s.enable);
    let ctx = state.context(&caller, peer.ip().to_canonical());
    let prepared = match prepare(request, &ctx, &state).await {
        Ok(prepared) => prepared,
        Err(Prepare::Fields(errors)) => return field_errors(&errors),
        Err(Prepare::Problem(problem)) => return error_for(problem),
    };
    if sandbox {
        return StatusCode::OK.into_response();
    }
    let ids: Vec<String> = prepared.iter().map(|p| p.envelope.id.to_string()).collect();
    if let Err(problem) = state.enqueue(prepared).await {
        return error_for(problem);
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    if let Ok(first) = HeaderValue::from_str(&ids[0]) {
        headers.insert("x-message-id", first);
    }
    if let Ok(all) = HeaderValue::from_str(&ids.join(",")) {
        headers.insert("x-postroad-message-ids", all);
    }
    response
}

enum Prepare {
    /// (personalization index, error) pairs.
    Fields(Vec<(usize, FieldError)>),
    Problem(Problem),
}

async fn prepare(
    request: MailSend,
    ctx: &submit::Context<'_>,
    state: &AppState,
) -> Result<Vec<Prepared>, Prepare> {
    let at_root = |e: FieldError| Prepare::Fields(vec![(0, e)]);
    let count = request.personalizations.len();
    if count == 0 {
        return Err(at_root(FieldError::new(
            "/personalizations",
            "required",
            "The personalizations field is required and must have at least one personalization.",
        )));
    }
    let recipients: usize = request
        .personalizations
        .iter()
        .map(|p| p.to.len() + p.cc.len() + p.bcc.len())
        .sum();
    if recipients > MAX_RECIPIENTS {
        return Err(at_root(FieldError::new(
            "/personalizations",
            "too-many",
            format!("at most {MAX_RECIPIENTS} recipients per request, personalizations together"),
        )));
    }
    let mut text = None;
    let mut html = None;
    for (i, item) in request.content.iter().enumerate() {
        match item.kind.to_ascii_lowercase().as_str() {
            "text/plain" => text = Some(item.value.clone()),
            "text/html" => html = Some(item.value.clone()),
            other => {
                return Err(at_root(FieldError::new(
                    pointer("/text", &i.to_string()),
                    "invalid-value",
                    format!("content of type {other:?}: only text/plain and text/html are taken"),
                )));
            }
        }
    }
    let template = match &request.template_id {
        None => None,
        Some(id) => match state.templates.get(ctx.caller.tenant_key(), id, None).await {
            Ok(Some(compiled)) => Some(compiled),
            Ok(None) => {
                return Err(at_root(FieldError::new(
                    "/emailType",
                    "unknown-template",
                    format!("no template for email type {id}"),
                )));
            }
            Err(e) => {
                return Err(Prepare::Problem(Problem::internal(format!(
                    "template store: {e}"
                ))));
            }
        },
    };
    let attachments: Vec<Attachment> = request
        .attachments
        .iter()
        .map(|a| Attachment {
            filename: a.filename.clone(),
            content_type: a.kind.clone(),
            content: a.content.clone(),
            content_id: a
                .content_id
                .clone()
                .filter(|_| a.disposition.as_deref() == Some("inline")),
        })
        .collect();
    let reply_to = if request.reply_to_list.is_empty() {
        request.reply_to.as_ref().map(|r| Addresses::One(r.text()))
    } else {
        Some(Addresses::Many(
            request
                .reply_to_list
                .iter()
                .map(EmailObject::text)
                .collect(),
        ))
    };
    let now = chrono::Utc::now().timestamp();
    let mut all_errors = Vec::new();
    let mut prepared = Vec::with_capacity(count);
    for (i, p) in request.personalizations.into_iter().enumerate() {
        let mut errors = Vec::new();
        if let Some(send_at) = p.send_at.or(request.send_at)
            && send_at > now + SEND_AT_SLACK_SECS
        {
            errors.push(FieldError::new(
                "/send_at",
                "invalid-value",
                "scheduled sending is not supported: omit send_at to send now",
            ));
        }
        let mut tags = request.custom_args.clone();
        tags.extend(p.custom_args);
        if !request.categories.is_empty() {
            tags.insert("categories".into(), request.categories.join(","));
        }
        let fields = MetaFields {
            email_type: request.template_id.clone(),
            tags: (!tags.is_empty()).then_some(tags),
            ..MetaFields::default()
        };
        let meta = check::meta(&fields, ctx.caller.tenant.as_deref(), "", &mut errors);
        let listed = |list: &[EmailObject]| {
            (!list.is_empty())
                .then(|| Addresses::Many(list.iter().map(EmailObject::text).collect()))
        };
        let mut headers = request.headers.clone();
        headers.extend(p.headers);
        let mut form = ExplicitForm {
            tracking: Default::default(),
            from: p
                .from
                .as_ref()
                .or(request.from.as_ref())
                .map(EmailObject::text),
            to: listed(&p.to),
            cc: listed(&p.cc),
            bcc: listed(&p.bcc),
            reply_to: reply_to.clone(),
            subject: p.subject.or(request.subject.clone()).unwrap_or_default(),
            text: text.clone(),
            html: html.clone(),
            headers,
            attachments: attachments.clone(),
        };
        if let Some(template) = &template {
            match template.render(None, &p.dynamic_template_data, "/templateData") {
                Ok(rendered) => {
                    if form.subject.is_empty() {
                        form.subject = rendered.subject;
                    }
                    form.text = rendered.text.or(form.text);
                    form.html = rendered.html.or(form.html);
                    form.from = form.from.or(rendered.from);
                }
                Err(mut e) => errors.append(&mut e),
            }
        } else if form.subject.is_empty() {
            errors.push(FieldError::new(
                "/subject",
                "required",
                "The subject is required. You can get around this requirement if you use a template with a subject.",
            ));
        }
        if template.is_none() && form.text.is_none() && form.html.is_none() {
            errors.push(FieldError::new(
                "/text",
                "required",
                "Unless a valid template_id is provided, the content parameter is required.",
            ));
        }
        substitute(&mut form, &p.substitutions);
        match submit::untemplated(Form::Explicit(form), meta, "", ctx, errors) {
            Ok(message) => prepared.push(message),
            Err(Refusal::Fields(errors)) => all_errors.extend(errors.into_iter().map(|e| (i, e))),
            Err(Refusal::Problem(problem)) => return Err(Prepare::Problem(problem)),
        }
    }
    if all_errors.is_empty() {
        Ok(prepared)
    } else {
        Err(Prepare::Fields(all_errors))
    }
}

/// SendGrid's legacy substitutions: each key replaced by its value in the subject and
/// the content.
fn substitute(form: &mut ExplicitForm, substitutions: &BTreeMap<String, String>) {
    for (key, value) in substitutions.iter().filter(|(k, _)| !k.is_empty()) {
        form.subject = form.subject.replace(key, value);
        for part in [&mut form.text, &mut form.html].into_iter().flatten() {
            *part = part.replace(key, value);
        }
    }
}

/// A SendGrid error answer.
fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "field": field, "help": null }]
    });
    (status, axum::Json(body)).into_response()
}

fn field_errors(errors: &[(usize, FieldError)]) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(i, e)| {
            let field = translate::path(&e.pointer, PATHS, *i, false);
            serde_json::json!({ "message": e.detail, "field": field, "help": null })
        })
        .collect();
    let body = serde_json::json!({ "errors": errors });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Our problem documents as SendGrid errors.
pub(crate) fn error_for(problem: Problem) -> Response {
    if problem.slug() == "invalid-request" {
        let errors: Vec<_> = problem.errors.into_iter().map(|e| (0, e)).collect();
        return field_errors(&errors);
    }
    let status = match problem.slug() {
        "overloaded" => StatusCode::TOO_MANY_REQUESTS,
        "malformed-json" | "unsupported-media-type" => StatusCode::BAD_REQUEST,
        _ => problem.status(),
    };
    let message = problem.detail.clone().unwrap_or(problem.title.clone());
    let mut response = error(status, &message, None);
    if let Some(seconds) = problem.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
