//! MIME messages built with `mail-builder`: multipart/alternative when there are text
//! and HTML parts, multipart/mixed with attachments, RFC 2047 encoded headers, and a
//! `Message-ID` and `Date` of our own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use postroad_queue::{MessageId, Metadata};

use super::Context;
use super::check;
use super::forms::{Addresses, ExplicitForm, TemplateForm};
use crate::problem::{FieldError, pointer};
use crate::render::Rendered;

/// The sender's address and the message bytes.
pub type Built = (String, Vec<u8>);

/// Tracking for a message of one recipient.
pub struct TrackingPlan<'a> {
    pub tracking: &'a crate::tracking::Tracking,
    pub recipient: String,
    pub meta: &'a Metadata,
    pub wanted: crate::tracking::Wanted,
}

/// The HTML body (tracked as `plan` says) on `builder`, and `List-Unsubscribe` with
/// its one-click companion; `None` (an error at `at`) when a link cannot be made.
fn dress(
    mut builder: MessageBuilder<'static>,
    html: Option<&str>,
    plan: Option<&TrackingPlan<'_>>,
    id: MessageId,
    sender: &str,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<MessageBuilder<'static>> {
    let Some(plan) = plan else {
        if let Some(html) = html {
            builder = builder.html_body(html.to_string());
        }
        return Some(builder);
    };
    let Some(dressed) =
        plan.tracking
            .dress(id, sender, &plan.recipient, plan.meta, html, plan.wanted)
    else {
        errors.push(FieldError::new(
            at,
            "too-long",
            "a field of the message is too long for a tracking link",
        ));
        return None;
    };
    if let Some(html) = dressed.html {
        builder = builder.html_body(html);
    }
    if let Some(value) = dressed.list_unsubscribe {
        builder = builder.header("List-Unsubscribe", Raw::new(value)).header(
            "List-Unsubscribe-Post",
            Raw::new("List-Unsubscribe=One-Click"),
        );
    }
    Some(builder)
}

/// Longest subject, in characters.
const MAX_SUBJECT: usize = 998;

/// Checked addresses (`Name <address>` or an address) as a header's address list.
fn address_list(addresses: &Addresses) -> Address<'static> {
    let list = addresses
        .list()
        .into_iter()
        .map(|a| {
            let (name, address) = check::split_named(a);
            Address::new_address(name.map(str::to_string), address.to_string())
        })
        .collect();
    Address::new_list(list)
}

/// Checks reply addresses; `None` also when there are none.
fn reply_to(
    given: Option<&Addresses>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Addresses> {
    let given = given?;
    let single = matches!(given, Addresses::One(_));
    let before = errors.len();
    for (i, address) in given.list().into_iter().enumerate() {
        let at = if single {
            at.to_string()
        } else {
            pointer(at, &i.to_string())
        };
        check::named(address, &at, errors);
    }
    (errors.len() == before).then(|| given.clone())
}

fn named_address((name, address): (Option<String>, String)) -> Address<'static> {
    Address::new_address(name, address)
}

/// The sender: the request's, else the template's, else `http.default_from`.
fn sender(
    given: Option<&str>,
    fallback: Option<&str>,
    at: &str,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<(Option<String>, String)> {
    let from = given
        .or(fallback)
        .or((!ctx.default_from.is_empty()).then_some(ctx.default_from));
    match from {
        Some(from) => check::named(from, at, errors),
        None => {
            errors.push(FieldError::new(
                at,
                "required",
                "no sender: give from (or set one in the template or http.default_from)",
            ));
            None
        }
    }
}

fn subject_ok(subject: &str, at: &str, errors: &mut Vec<FieldError>) {
    if subject.contains(['\r', '\n']) {
        errors.push(FieldError::new(
            at,
            "header-injection",
            "the subject may not contain CR or LF",
        ));
    } else if subject.chars().count() > MAX_SUBJECT {
        errors.push(FieldError::new(
            at,
            "too-large",
            format!("the subject is longer than {MAX_SUBJECT} characters"),
        ));
    }
}

/// The common headers: `Message-ID` (the request's, or `<id@hostname>`), `Date`,
/// `From`, and the request's other header fields.
fn start(
    id: MessageId,
    ctx: &Context<'_>,
    from: (Option<String>, String),
    headers: Vec<(String, String)>,
) -> MessageBuilder<'static> {
    let mut own_id = format!("{id}@{}", ctx.hostname);
    let mut builder = MessageBuilder::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("message-id") {
            own_id = value
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
        } else {
            builder = builder.header(name, Text::new(value));
        }
    }
    builder
        .message_id(own_id)
        .date(chrono::Utc::now().timestamp())
        .from(named_address(from))
}

fn finish(
    builder: MessageBuilder<'_>,
    from: String,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Built> {
    match builder.write_to_vec() {
        Ok(bytes) => Some((from, bytes)),
        Err(e) => {
            errors.push(FieldError::new(
                at,
                "invalid-value",
                format!("cannot build the message: {e}"),
            ));
            None
        }
    }
}

/// What every built message is headed with: the sender, the reply addresses and the
/// request's own header fields, checked.
struct Heading {
    from: Option<(Option<String>, String)>,
    reply_to: Option<Addresses>,
    headers: Vec<(String, String)>,
}

impl Heading {
    fn read(
        from: (Option<&str>, Option<&str>),
        reply: Option<&Addresses>,
        headers: &std::collections::BTreeMap<String, String>,
        base: &str,
        ctx: &Context<'_>,
        errors: &mut Vec<FieldError>,
    ) -> Self {
        Self {
            from: sender(from.0, from.1, &pointer(base, "from"), ctx, errors),
            reply_to: reply_to(reply, &pointer(base, "replyTo"), errors),
            headers: check::headers(headers, base, errors),
        }
    }

    /// The builder with these fields, `Message-ID` and `Date`, and the sender's
    /// address; `None` without a sender.
    fn start(self, id: MessageId, ctx: &Context<'_>) -> Option<(MessageBuilder<'static>, String)> {
        let from = self.from?;
        let address = from.1.clone();
        let mut builder = start(id, ctx, from, self.headers);
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(address_list(reply_to));
        }
        Some((builder, address))
    }
}

pub fn explicit(
    form: &ExplicitForm,
    id: MessageId,
    plan: Option<&TrackingPlan<'_>>,
    base: &str,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<Built> {
    let heading = Heading::read(
        (form.from.as_deref(), None),
        form.reply_to.as_ref(),
        &form.headers,
        base,
        ctx,
        errors,
    );
    subject_ok(&form.subject, &pointer(base, "subject"), errors);
    if form.text.is_none() && form.html.is_none() {
        errors.push(FieldError::new(
            pointer(base, "text"),
            "required",
            "give text, html or both",
        ));
    }
    let mut attachments = Vec::with_capacity(form.attachments.len());
    for (i, a) in form.attachments.iter().enumerate() {
        let at = pointer(&pointer(base, "attachments"), &i.to_string());
        match STANDARD.decode(a.content.as_bytes()) {
            Ok(content) => attachments.push((a, content)),
            Err(e) => errors.push(FieldError::new(
                pointer(&at, "content"),
                "invalid-base64",
                format!("content is not standard base64: {e}"),
            )),
        }
        for (field, value) in [
            ("filename", Some(&a.filename)),
            ("contentType", a.content_type.as_ref()),
            ("contentId", a.content_id.as_ref()),
        ] {
            if value.is_some_and(|v| v.chars().any(char::is_control)) {
                errors.push(FieldError::new(
                    pointer(&at, field),
                    "header-injection",
                    format!("{field} may not contain control characters"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return None;
    }
    let (builder, address) = heading.start(id, ctx)?;
    let mut builder = builder.subject(Text::new(form.subject.clone()));
    if let Some(to) = &form.to {
        builder = builder.to(address_list(to));
    }
    if let Some(cc) = &form.cc {
        builder = builder.cc(address_list(cc));
    }
    if let Some(text) = &form.text {
        builder = builder.text_body(text.clone());
    }
    let mut builder = dress(
        builder,
        form.html.as_deref(),
        plan,
        id,
        &address,
        &pointer(base, "tracking"),
        errors,
    )?;
    for (a, content) in attachments {
        let content_type = a
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        builder = match &a.content_id {
            Some(cid) => builder.inline(content_type, cid.clone(), content),
            None => builder.attachment(content_type, a.filename.clone(), content),
        };
    }
    finish(builder, address, base, errors)
}

pub fn templated(
    form: &TemplateForm,
    rendered: &Rendered,
    id: MessageId,
    plan: Option<&TrackingPlan<'_>>,
    base: &str,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<Built> {
    let heading = Heading::read(
        (form.from.as_deref(), rendered.from.as_deref()),
        form.reply_to.as_ref(),
        &form.headers,
        base,
        ctx,
        errors,
    );
    if !errors.is_empty() {
        return None;
    }
    let (builder, address) = heading.start(id, ctx)?;
    let mut builder = builder
        .to(address_list(&Addresses::One(form.recipient.clone())))
        .subject(Text::new(rendered.subject.clone()));
    if let Some(text) = &rendered.text {
        builder = builder.text_body(text.clone());
    }
    let builder = dress(
        builder,
        rendered.html.as_deref(),
        plan,
        id,
        &address,
        &pointer(base, "tracking"),
        errors,
    )?;
    finish(builder, address, base, errors)
}
