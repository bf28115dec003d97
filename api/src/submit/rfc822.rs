//! Raw MIME: checked to be a message (a header section first), and, for a
//! `Content-Type: message/rfc822` request, its envelope read from the query string or
//! else from the message's own `From`, `To`, `Cc` and `Bcc` (the `Bcc` field is then
//! removed, as `sendmail -t` does).

use mail_parser::{Address, HeaderName, MessageParser};
use postroad_queue::{MessageId, Recipient};
use serde::Deserialize;

use super::forms::MetaFields;
use super::{Context, Prepared, Refusal, check, finish};
use crate::problem::FieldError;

/// The query string of a `message/rfc822` request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MimeQuery {
    /// Envelope sender; default: the address of the `From` field.
    pub from: Option<String>,
    /// Envelope recipients, comma separated; default: `To`, `Cc` and `Bcc`.
    pub to: Option<String>,
    pub user_id: Option<u64>,
    pub email_type: Option<String>,
    pub priority: Option<String>,
    /// `name=value,name2=value2`.
    pub tags: Option<String>,
    pub campaign: Option<String>,
    pub variant: Option<String>,
}

/// Whether `body` starts with a header section: a first line `Name: value`.
pub fn check(body: &[u8], at: &str, errors: &mut Vec<FieldError>) {
    let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let header = first
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|colon| colon > 0 && first[..colon].iter().all(|b| (b'!'..=b'~').contains(b)));
    if !header {
        errors.push(FieldError::new(
            at,
            "invalid-value",
            "not a MIME message: it must start with a header field",
        ));
    }
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|a| a.address())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The message without its `Bcc` field(s).
fn without_bcc(body: Vec<u8>, ranges: &[(usize, usize)]) -> Vec<u8> {
    if ranges.is_empty() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for &(start, end) in ranges {
        out.extend_from_slice(&body[at..start]);
        at = end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

impl MimeQuery {
    /// The envelope and metadata the query gives.
    pub fn given(self) -> Result<Given, Vec<FieldError>> {
        let tags = match self
            .tags
            .as_deref()
            .map(postroad_queue::metadata::parse_tags)
        {
            Some(Ok(tags)) => Some(tags.into_iter().collect()),
            Some(Err(e)) => {
                return Err(vec![FieldError::new(
                    "?tags",
                    "invalid-value",
                    e.to_string(),
                )]);
            }
            None => None,
        };
        let to = self.to.map(|to| {
            to.split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect()
        });
        Ok(Given {
            from: self.from,
            to,
            fields: MetaFields {
                user_id: self.user_id,
                email_type: self.email_type,
                priority: self.priority,
                tags,
                campaign: self.campaign,
                variant: self.variant,
            },
        })
    }
}

/// What a raw message's request says beside the message: the envelope (else read from
/// the message's fields) and the metadata.
#[derive(Debug, Default)]
pub struct Given {
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub fields: MetaFields,
}

/// Prepares a raw MIME message (a `message/rfc822` body, SES `Content.Raw`).
pub fn prepare(body: Vec<u8>, given: Given, ctx: &Context<'_>) -> Result<Prepared, Refusal> {
    let mut errors = Vec::new();
    check(&body, "", &mut errors);
    if !errors.is_empty() {
        return Err(Refusal::Fields(errors));
    }
    let parsed = MessageParser::new().parse_headers(&body);
    let (mut from, mut to, mut bcc_ranges) = (None, Vec::new(), Vec::new());
    if let Some(message) = &parsed {
        from = addresses(message.from()).into_iter().next();
        to = [message.to(), message.cc(), message.bcc()]
            .into_iter()
            .flat_map(addresses)
            .collect();
        for header in message.headers() {
            if header.name == HeaderName::Bcc {
                // From the start of the field name to the end of its value (CRLF included).
                bcc_ranges.push((header.offset_field as usize, header.offset_end as usize));
            }
        }
    }
    let meta = check::meta(
        &given.fields,
        ctx.caller.tenant.as_deref(),
        "?",
        &mut errors,
    );
    let sender = match given.from.or(from) {
        Some(from) => check::named(&from, "?from", &mut errors).map(|(_, address)| address),
        None => {
            errors.push(FieldError::new(
                "?from",
                "required",
                "no from in the query or the message",
            ));
            None
        }
    };
    let listed = given.to.unwrap_or(to);
    let mut recipients: Vec<Recipient> = Vec::new();
    for address in &listed {
        if let Some((_, address)) = check::named(address, "?to", &mut errors)
            && !recipients
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(&address))
        {
            recipients.push(Recipient::new(address));
        }
    }
    if recipients.is_empty() && errors.is_empty() {
        errors.push(FieldError::new(
            "?to",
            "required",
            "no recipient in the query or the message",
        ));
    }
    if recipients.len() > ctx.max_recipients {
        errors.push(FieldError::new(
            "?to",
            "too-many",
            format!("at most {} recipients per message", ctx.max_recipients),
        ));
    }
    let body = without_bcc(body, &bcc_ranges);
    finish(
        MessageId::new(),
        sender,
        recipients,
        Some(body),
        meta,
        ctx,
        "",
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_starts_with_a_header_field() {
        for ok in [
            &b"Subject: x\r\n\r\nbody"[..],
            b"From: a@b.test\n\nx",
            b"X-A:b",
        ] {
            let mut errors = Vec::new();
            check(ok, "/raw", &mut errors);
            assert!(errors.is_empty(), "{ok:?}");
        }
        for bad in [&b"hello world\r\n"[..], b"", b": x\r\n", b"Sub ject: x\r\n"] {
            let mut errors = Vec::new();
            check(bad, "/raw", &mut errors);
            assert_eq!(errors.len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn bcc_fields_are_cut_out() {
        let body =
            b"From: a@x.test\r\nBcc: b@x.test,\r\n c@x.test\r\nTo: d@x.test\r\n\r\nhi\r\n".to_vec();
        let message = MessageParser::new().parse_headers(&body).unwrap();
        let ranges: Vec<_> = message
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::Bcc)
            .map(|h| (h.offset_field as usize, h.offset_end as usize))
            .collect();
        assert_eq!(
            without_bcc(body.clone(), &ranges),
            b"From: a@x.test\r\nTo: d@x.test\r\n\r\nhi\r\n"
        );
    }
}
