//! From a request's JSON (or raw MIME) to what the queue stores: the envelope and the
//! message bytes. Nothing here touches the queue; the routes enqueue what this returns.

mod build;
pub mod check;
pub mod forms;
pub mod rfc822;

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use postroad_queue::{Envelope, MessageId, Metadata, Recipient};
use serde_json::Value;

use crate::auth::Caller;
use crate::prefs;
use crate::problem::{FieldError, Kind, Problem, pointer};
use crate::render::Templates;
use forms::{Addresses, Form, Parsed};

/// What a submission is checked against.
pub struct Context<'a> {
    pub hostname: &'a str,
    pub default_from: &'a str,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub client_ip: IpAddr,
    pub caller: &'a Caller,
    /// `[tracking]`, when it has a base URL.
    pub tracking: Option<&'a crate::tracking::Tracking>,
}

/// A message ready for the queue.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub envelope: Envelope,
    pub body: Bytes,
}

/// Why a message was not prepared.
#[derive(Debug)]
pub enum Refusal {
    /// The request is wrong: every bad field.
    Fields(Vec<FieldError>),
    /// We are (a store failed).
    Problem(Problem),
}

impl From<Vec<FieldError>> for Refusal {
    fn from(errors: Vec<FieldError>) -> Self {
        Refusal::Fields(errors)
    }
}

impl Refusal {
    pub fn into_problem(self) -> Problem {
        match self {
            Refusal::Fields(errors) => Problem::fields(errors),
            Refusal::Problem(p) => p,
        }
    }
}

/// Prepares one JSON message found at `base` in the request; a template-form message
/// renders with its user's preferences among `prefs`.
pub async fn prepare(
    value: &Value,
    base: &str,
    ctx: &Context<'_>,
    templates: &Templates,
    prefs: &prefs::Loaded,
) -> Result<Prepared, Refusal> {
    let mut errors = Vec::new();
    let Some(Parsed { form, meta }) = forms::parse(value, base, &mut errors) else {
        return Err(Refusal::Fields(errors));
    };
    let meta = check::meta(&meta, ctx.caller.tenant.as_deref(), base, &mut errors);
    match form {
        Form::Template(form) => {
            let id = MessageId::new();
            let recipients = recipients(
                &[("recipient", Some(&Addresses::One(form.recipient.clone())))],
                base,
                ctx,
                &mut errors,
            );
            let rendered = render(&form, &meta, base, ctx, templates, prefs, &mut errors).await?;
            let plan = tracking_plan(form.tracking, &meta, &recipients, base, ctx, &mut errors);
            let message = rendered.and_then(|r| {
                build::templated(&form, &r, id, plan.as_ref(), base, ctx, &mut errors)
            });
            let sender = message.as_ref().map(|(sender, _)| sender.clone());
            let body = message.map(|(_, body)| body);
            finish(id, sender, recipients, body, meta, ctx, base, errors)
        }
        form => untemplated(form, meta, base, ctx, errors),
    }
}

/// Prepares a message of the explicit or raw form (nothing to look up); `errors` holds
/// what reading its fields found.
pub(crate) fn untemplated(
    form: Form,
    meta: Metadata,
    base: &str,
    ctx: &Context<'_>,
    mut errors: Vec<FieldError>,
) -> Result<Prepared, Refusal> {
    let id = MessageId::new();
    match form {
        Form::Raw(raw) => {
            let body = match STANDARD.decode(raw.raw.as_bytes()) {
                Ok(body) => Some(body),
                Err(e) => {
                    errors.push(FieldError::new(
                        pointer(base, "raw"),
                        "invalid-base64",
                        format!("raw is not standard base64: {e}"),
                    ));
                    None
                }
            };
            let sender = check::mailbox(&raw.from, &pointer(base, "from"), &mut errors);
            let recipients = recipients(&[("to", Some(&raw.to))], base, ctx, &mut errors);
            if let Some(body) = &body {
                rfc822::check(body, &pointer(base, "raw"), &mut errors);
            }
            finish(id, sender, recipients, body, meta, ctx, base, errors)
        }
        Form::Explicit(form) => {
            let recipients = recipients(
                &[
                    ("to", form.to.as_ref()),
                    ("cc", form.cc.as_ref()),
                    ("bcc", form.bcc.as_ref()),
                ],
                base,
                ctx,
                &mut errors,
            );
            let plan = tracking_plan(form.tracking, &meta, &recipients, base, ctx, &mut errors);
            let message = build::explicit(&form, id, plan.as_ref(), base, ctx, &mut errors);
            let sender = message.as_ref().map(|(sender, _)| sender.clone());
            let body = message.map(|(_, body)| body);
            finish(id, sender, recipients, body, meta, ctx, base, errors)
        }
        Form::Template(_) => {
            errors.push(FieldError::new(
                pointer(base, "emailType"),
                "unknown-template",
                "templates are not available here",
            ));
            Err(Refusal::Fields(errors))
        }
    }
}

/// Renders the template of a template-form message: `templateData` over the user's
/// preferences, in the requested locale or else the user's `language`.
async fn render(
    form: &forms::TemplateForm,
    meta: &Metadata,
    base: &str,
    ctx: &Context<'_>,
    templates: &Templates,
    prefs: &prefs::Loaded,
    errors: &mut Vec<FieldError>,
) -> Result<Option<crate::render::Rendered>, Refusal> {
    let Some(email_type) = &meta.email_type else {
        errors.push(FieldError::new(
            pointer(base, "emailType"),
            "required",
            "the template form needs emailType",
        ));
        return Ok(None);
    };
    let compiled = templates
        .get(ctx.caller.tenant_key(), email_type, form.template_version)
        .await
        .map_err(|e| Refusal::Problem(Problem::internal(format!("template store: {e}"))))?;
    let Some(compiled) = compiled else {
        let (at, detail) = match form.template_version {
            Some(v) => (
                pointer(base, "templateVersion"),
                format!("template {email_type} has no version {v}"),
            ),
            None => (
                pointer(base, "emailType"),
                format!("no template for email type {email_type}"),
            ),
        };
        errors.push(FieldError::new(at, "unknown-template", detail));
        return Ok(None);
    };
    let user = prefs.of(meta.user_id);
    // Only a user with preferences needs a merged copy of templateData.
    let merged;
    let data = match user {
        None => &form.template_data,
        Some(user) => {
            let mut data: serde_json::Map<String, Value> = user
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            data.extend(
                form.template_data
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            merged = data;
            &merged
        }
    };
    let locale = form
        .locale
        .as_deref()
        .or_else(|| user.and_then(|u| u.get("language")).map(String::as_str));
    match compiled.render(locale, data, &pointer(base, "templateData")) {
        Ok(rendered) => Ok(Some(rendered)),
        Err(e) if prefs.unavailable && e.iter().any(|e| e.code == "missing-variable") => {
            Err(Refusal::Problem(
                Problem::new(Kind::StoreUnavailable)
                    .detail("the template needs a value that may be among the user's preferences, which cannot be read right now")
                    .retry_after(5),
            ))
        }
        Err(mut e) => {
            errors.append(&mut e);
            Ok(None)
        }
    }
}

/// The envelope recipients of the address fields, checked, without repeats.
/// The tracking a message gets: what it asks for in `tracking`, and `List-Unsubscribe`
/// for every bulk message, when `[tracking]` has a base URL; for one recipient only (its
/// links name it).
fn tracking_plan<'m>(
    options: forms::TrackingOptions,
    meta: &'m Metadata,
    recipients: &[Recipient],
    base: &str,
    ctx: &Context<'m>,
    errors: &mut Vec<FieldError>,
) -> Option<build::TrackingPlan<'m>> {
    let Some(tracking) = ctx.tracking else {
        if options.any() {
            errors.push(FieldError::new(
                pointer(base, "tracking"),
                "tracking-off",
                "this server tracks nothing: tracking.base_url is not set",
            ));
        }
        return None;
    };
    let bulk = meta.priority == postroad_queue::metadata::Priority::Bulk;
    let wanted = crate::tracking::Wanted {
        opens: options.opens,
        clicks: options.clicks,
        unsubscribe: options.unsubscribe || bulk,
    };
    if !(wanted.opens || wanted.clicks || wanted.unsubscribe) {
        return None;
    }
    match recipients {
        [one] => Some(build::TrackingPlan {
            tracking,
            recipient: one.address.clone(),
            meta,
            wanted,
        }),
        [] => None,
        _ => {
            let (at, why) = if options.any() {
                ("tracking", "tracked links name their reader")
            } else {
                (
                    "priority",
                    "a bulk message's unsubscribe link names its reader",
                )
            };
            errors.push(FieldError::new(
                pointer(base, at),
                "one-recipient",
                format!("{why}: send one message per recipient"),
            ));
            None
        }
    }
}

fn recipients(
    fields: &[(&str, Option<&Addresses>)],
    base: &str,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) -> Vec<Recipient> {
    let mut out: Vec<Recipient> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (field, addresses) in fields {
        let Some(addresses) = addresses else { continue };
        let at = pointer(base, field);
        let single = matches!(addresses, Addresses::One(_));
        for (i, address) in addresses.list().into_iter().enumerate() {
            let at = if single {
                at.clone()
            } else {
                pointer(&at, &i.to_string())
            };
            if let Some((_, address)) = check::named(address, &at, errors)
                && seen.insert(address.to_ascii_lowercase())
            {
                out.push(Recipient::new(address));
            }
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(FieldError::new(
            pointer(base, fields[0].0),
            "required",
            "a message needs at least one recipient",
        ));
    }
    if out.len() > ctx.max_recipients {
        errors.push(FieldError::new(
            pointer(base, fields[0].0),
            "too-many",
            format!("at most {} recipients per message", ctx.max_recipients),
        ));
    }
    out
}

/// The envelope of a message whose parts were all read, or every error found.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of one message, read apart"
)]
fn finish(
    id: MessageId,
    sender: Option<String>,
    recipients: Vec<Recipient>,
    body: Option<Vec<u8>>,
    meta: Metadata,
    ctx: &Context<'_>,
    base: &str,
    mut errors: Vec<FieldError>,
) -> Result<Prepared, Refusal> {
    if let Some(body) = &body
        && body.len() > ctx.max_message_size
    {
        errors.push(FieldError::new(
            base,
            "too-large",
            format!(
                "the message is {} bytes; the limit is {}",
                body.len(),
                ctx.max_message_size
            ),
        ));
    }
    let (Some(sender), Some(body)) = (sender, body) else {
        return Err(Refusal::Fields(errors));
    };
    if !errors.is_empty() {
        return Err(Refusal::Fields(errors));
    }
    let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
    // Applications on the API learn outcomes from the history and webhooks, not from
    // delivery status notifications mailed to their sender address.
    let mut recipients = recipients;
    for r in &mut recipients {
        r.notify.never = true;
    }
    let mut envelope = Envelope::new(sender, recipients, ctx.client_ip);
    envelope.id = id;
    envelope.helo = "http".into();
    envelope.auth_identity = Some(format!("api-key:{}", ctx.caller.key_id));
    envelope.size = body.len() as u64;
    envelope.body_8bit = body.iter().any(|&b| b >= 0x80);
    envelope.smtputf8 = smtputf8;
    envelope.meta = meta;
    Ok(Prepared {
        envelope,
        body: Bytes::from(body),
    })
}
