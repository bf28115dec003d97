//! `POST /v2/email/outbound-emails`: Amazon SES v2 `SendEmail`, so that an app using an
//! AWS SDK only changes its endpoint. Requests are SigV4-signed with an access key of
//! `[[http.ses_keys]]` (signing name `ses`); `Content.Simple`, `Content.Raw` and
//! `Content.Template` (a Postroad template named by `TemplateName`) are taken. Errors
//! are SES's: the code in `x-amzn-ErrorType`, `{"message"}` in the body.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::sigv4::{self, SigError};
use super::translate;
use crate::auth::Caller;
use crate::problem::{FieldError, Problem};
use crate::state::AppState;
use crate::submit::forms::{Addresses, Attachment, ExplicitForm, Form, MetaFields};
use crate::submit::{self, Refusal, check, rfc822};
use crate::{ApiConfig, ApiError};

/// The access keys, with their secrets read.
pub(crate) struct SesKeys(HashMap<String, SesCredential>);

struct SesCredential {
    secret: String,
    region: Option<String>,
    tenant: Option<String>,
}

impl SesKeys {
    pub(crate) fn load(config: &ApiConfig) -> Result<Self, ApiError> {
        let mut keys = HashMap::new();
        for key in &config.ses_keys {
            let secret = key.secret().map_err(ApiError::Config)?;
            if secret.is_empty() {
                return Err(ApiError::Config(format!(
                    "http.ses_keys {}: the secret is empty",
                    key.access_key_id
                )));
            }
            keys.insert(
                key.access_key_id.clone(),
                SesCredential {
                    secret,
                    region: key.region.clone(),
                    tenant: key.tenant.clone(),
                },
            );
        }
        Ok(Self(keys))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SendEmail {
    from_email_address: Option<String>,
    destination: Destination,
    reply_to_addresses: Vec<String>,
    content: Content,
    email_tags: Vec<NameValue>,
    configuration_set_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Destination {
    to_addresses: Vec<String>,
    cc_addresses: Vec<String>,
    bcc_addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Content {
    simple: Option<Simple>,
    raw: Option<Raw>,
    template: Option<Template>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Simple {
    subject: Data,
    #[serde(default)]
    body: SimpleBody,
    #[serde(default)]
    headers: Vec<NameValue>,
    #[serde(default)]
    attachments: Vec<SesAttachment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SimpleBody {
    text: Option<Data>,
    html: Option<Data>,
}

/// Text with its charset; JSON strings are Unicode, so the charset is not needed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Data {
    data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    /// Base64, as the SDKs send blobs.
    data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Template {
    template_name: Option<String>,
    template_arn: Option<String>,
    /// A JSON object, as a string.
    template_data: Option<String>,
    #[serde(default)]
    headers: Vec<NameValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SesAttachment {
    raw_content: String,
    file_name: String,
    content_type: Option<String>,
    content_disposition: Option<String>,
    content_id: Option<String>,
}

/// Where our field pointers are in an SES request, for error messages.
const PATHS: &[(&str, &str)] = &[
    ("?from", "FromEmailAddress"),
    ("?to", "Destination"),
    ("?/tags", "EmailTags"),
    ("/from", "FromEmailAddress"),
    ("/to", "Destination.ToAddresses"),
    ("/cc", "Destination.CcAddresses"),
    ("/bcc", "Destination.BccAddresses"),
    ("/replyTo", "ReplyToAddresses"),
    ("/subject", "Content.Simple.Subject.Data"),
    ("/text", "Content.Simple.Body"),
    ("/html", "Content.Simple.Body.Html.Data"),
    ("/headers", "Content.Simple.Headers"),
    ("/attachments", "Content.Simple.Attachments"),
    ("/tags", "EmailTags"),
    ("/templateData", "Content.Template.TemplateData"),
    ("/emailType", "Content.Template.TemplateName"),
];

/// Sends one message, answering as SES does.
pub async fn send_email(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match crate::body::read(&state, &headers, body).await {
        Ok(bytes) => bytes,
        Err(problem) => return error_for(problem),
    };
    let request = sigv4::Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &bytes,
    };
    let keys = &state.ses_keys.0;
    let now = chrono::Utc::now().timestamp();
    let secret = |id: &str| keys.get(id).map(|k| k.secret.as_str());
    let (signed, key) = match sigv4::verify(&request, "ses", secret, now) {
        Ok(signed) => match keys.get(&signed.access_key_id) {
            Some(key) => (signed, key),
            None => return signature_error(&SigError::UnknownKey),
        },
        Err(e) => return signature_error(&e),
    };
    if let Some(region) = &key.region
        && *region != signed.region
    {
        return signature_error(&SigError::WrongScope(format!("the region {region}")));
    }
    let caller = Caller {
        key_id: format!("ses:{}", signed.access_key_id),
        tenant: key.tenant.clone(),
    };
    let request: SendEmail = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &e.to_string(),
            );
        }
    };
    let ctx = state.context(&caller, peer.ip().to_canonical());
    let prepared = match prepare(request, &ctx, &state).await {
        Ok(prepared) => prepared,
        Err(Refusal::Fields(errors)) => return field_errors(&errors),
        Err(Refusal::Problem(problem)) => return error_for(problem),
    };
    let id = prepared.envelope.id;
    if let Err(problem) = state.enqueue(vec![prepared]).await {
        return error_for(problem);
    }
    let body = serde_json::json!({ "MessageId": id.to_string() }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn prepare(
    request: SendEmail,
    ctx: &submit::Context<'_>,
    state: &AppState,
) -> Result<submit::Prepared, Refusal> {
    let mut errors = Vec::new();
    let mut tags: BTreeMap<String, String> = request
        .email_tags
        .into_iter()
        .map(|t| (t.name, t.value))
        .collect();
    if let Some(set) = request.configuration_set_name {
        tags.insert("ses-configuration-set".into(), set);
    }
    let fields = MetaFields {
        tags: (!tags.is_empty()).then_some(tags),
        ..MetaFields::default()
    };
    let listed = |list: Vec<String>| (!list.is_empty()).then_some(Addresses::Many(list));
    let Destination {
        to_addresses,
        cc_addresses,
        bcc_addresses,
    } = request.destination;
    let reply_to = listed(request.reply_to_addresses);
    let content = request.content;
    let given = [
        content.simple.is_some(),
        content.raw.is_some(),
        content.template.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        errors.push(FieldError::new(
            "/content",
            "required",
            "Content needs exactly one of Simple, Raw and Template",
        ));
        return Err(Refusal::Fields(errors));
    }
    if let Some(raw) = content.raw {
        let body = STANDARD.decode(raw.data.as_bytes()).map_err(|e| {
            vec![FieldError::new(
                "",
                "invalid-base64",
                format!("Data is not base64: {e}"),
            )]
        })?;
        let all: Vec<String> = [to_addresses, cc_addresses, bcc_addresses].concat();
        let given = rfc822::Given {
            from: request.from_email_address,
            to: (!all.is_empty()).then_some(all),
            fields,
        };
        return rfc822::prepare(body, given, ctx);
    }
    let meta = check::meta(&fields, ctx.caller.tenant.as_deref(), "", &mut errors);
    let mut form = ExplicitForm {
        tracking: Default::default(),
        from: request.from_email_address,
        to: listed(to_addresses),
        cc: listed(cc_addresses),
        bcc: listed(bcc_addresses),
        reply_to,
        subject: String::new(),
        text: None,
        html: None,
        headers: BTreeMap::new(),
        attachments: Vec::new(),
    };
    if let Some(simple) = content.simple {
        form.subject = simple.subject.data;
        form.text = simple.body.text.map(|d| d.data);
        form.html = simple.body.html.map(|d| d.data);
        form.headers = simple
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        form.attachments = simple
            .attachments
            .into_iter()
            .map(|a| {
                let inline = a
                    .content_disposition
                    .is_some_and(|d| d.eq_ignore_ascii_case("INLINE"));
                Attachment {
                    filename: a.file_name,
                    content_type: a.content_type,
                    content: a.raw_content,
                    content_id: a.content_id.filter(|_| inline),
                }
            })
            .collect();
    } else if let Some(template) = content.template {
        let Some(name) = template.template_name else {
            let detail = match template.template_arn {
                Some(_) => "TemplateArn is not supported: name a Postroad template in TemplateName",
                None => "Template needs TemplateName",
            };
            errors.push(FieldError::new("/emailType", "required", detail));
            return Err(Refusal::Fields(errors));
        };
        let data = match template.template_data.as_deref().map(serde_json::from_str) {
            None => Map::new(),
            Some(Ok(Value::Object(data))) => data,
            Some(_) => {
                errors.push(FieldError::new(
                    "/templateData",
                    "invalid-type",
                    "TemplateData must be a JSON object in a string",
                ));
                return Err(Refusal::Fields(errors));
            }
        };
        let rendered = state
            .templates
            .get(ctx.caller.tenant_key(), &name, None)
            .await
            .map_err(|e| Refusal::Problem(Problem::internal(format!("template store: {e}"))))?;
        let Some(compiled) = rendered else {
            errors.push(FieldError::new(
                "/emailType",
                "unknown-template",
                format!("Template {name} does not exist"),
            ));
            return Err(Refusal::Fields(errors));
        };
        let rendered = compiled.render(None, &data, "/templateData")?;
        form.subject = rendered.subject;
        form.text = rendered.text;
        form.html = rendered.html;
        form.from = form.from.or(rendered.from);
        form.headers = template
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
    }
    submit::untemplated(Form::Explicit(form), meta, "", ctx, errors)
}

/// An SES error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(code) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", code);
    }
    response
}

fn signature_error(e: &SigError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
    error(status, e.code(), &e.to_string())
}

fn field_errors(errors: &[FieldError]) -> Response {
    let message = translate::message(errors, PATHS, 0);
    if errors.iter().any(|e| e.code == "unknown-template") {
        return error(StatusCode::NOT_FOUND, "NotFoundException", &message);
    }
    let code = if errors.iter().any(|e| e.code == "too-large") {
        "MessageRejected"
    } else {
        "BadRequestException"
    };
    error(StatusCode::BAD_REQUEST, code, &message)
}

/// Our problem documents as SES errors.
pub(crate) fn error_for(problem: Problem) -> Response {
    let detail = problem.detail.clone().unwrap_or(problem.title.clone());
    let (status, code) = match problem.slug() {
        "invalid-request" => return field_errors(&problem.errors),
        "malformed-json" | "unsupported-media-type" => {
            (StatusCode::BAD_REQUEST, "SerializationException")
        }
        "payload-too-large" => (StatusCode::BAD_REQUEST, "MessageRejected"),
        "overloaded" => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException"),
        "request-timeout" => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
        "queue-unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        "not-found" => (StatusCode::NOT_FOUND, "NotFoundException"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
    };
    let mut response = error(status, code, &detail);
    if let Some(seconds) = problem.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
