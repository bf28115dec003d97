//! Field checks shared by the forms: addresses, header fields, metadata. Each check
//! adds what is wrong to `errors` with the field's pointer and returns what it could
//! read.

use std::collections::BTreeMap;

use postroad_queue::metadata::{self, MAX_TAGS};
use postroad_queue::{Metadata, Priority};

use super::forms::MetaFields;
use crate::problem::{FieldError, pointer};

/// Longest header field line (RFC 5322 2.1.1), name and value together.
const MAX_HEADER_LINE: usize = 998;
/// Most custom header fields on one message.
pub const MAX_HEADERS: usize = 50;

/// Header fields a request may not set: Postroad writes them from other fields.
/// (`Message-ID` may be given, as `<left@right>`; Postroad makes one otherwise.)
const RESERVED_HEADERS: [&str; 11] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "mime-version",
    "return-path",
    "received",
    "sender",
];

/// A bare mailbox (`user@example.com`).
pub fn mailbox(text: &str, at: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match smtp_wire::parse_mailbox(text) {
        Ok(_) => Some(text.to_string()),
        Err(e) => {
            errors.push(FieldError::new(
                at,
                "invalid-address",
                format!("{:?} {e}", shown(text)),
            ));
            None
        }
    }
}

/// A sender or reply address: `user@example.com` or `Display Name <user@example.com>`.
pub fn named(
    text: &str,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<(Option<String>, String)> {
    if text.contains(['\r', '\n']) {
        errors.push(FieldError::new(
            at,
            "header-injection",
            "an address may not contain CR or LF",
        ));
        return None;
    }
    let (name, address) = split_named(text);
    mailbox(address, at, errors).map(|address| (name.map(str::to_string), address))
}

/// `Display Name <user@example.com>` as its name and address; a bare address has no
/// name. Nothing is checked.
pub fn split_named(text: &str) -> (Option<&str>, &str) {
    let trimmed = text.trim();
    match trimmed.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
        Some((name, address)) => {
            let name = name.trim().trim_matches('"').trim();
            ((!name.is_empty()).then_some(name), address.trim())
        }
        None => (None, trimmed),
    }
}

/// Custom header fields: names of printable ASCII without `:`, no CR or LF anywhere,
/// none Postroad sets itself, none of `X-Postroad-*` (metadata has its own fields).
pub fn headers(
    given: &BTreeMap<String, String>,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, String)> {
    let at_headers = pointer(base, "headers");
    if given.len() > MAX_HEADERS {
        errors.push(FieldError::new(
            &at_headers,
            "too-many",
            format!("at most {MAX_HEADERS} header fields"),
        ));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(given.len());
    for (name, value) in given {
        let at = pointer(&at_headers, name);
        let lower = name.to_ascii_lowercase();
        let problem = if name.is_empty()
            || !name
                .bytes()
                .all(|b| (b'!'..=b'~').contains(&b) && b != b':')
        {
            Some((
                "invalid-header",
                "a header name is printable ASCII without spaces or ':'".to_string(),
            ))
        } else if value.contains(['\r', '\n']) {
            Some((
                "header-injection",
                format!("the value of {name} may not contain CR or LF"),
            ))
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            Some((
                "invalid-header",
                format!("the value of {name} has a control character"),
            ))
        } else if name.len() + 2 + value.len() > MAX_HEADER_LINE {
            Some((
                "too-large",
                format!("{name} is longer than {MAX_HEADER_LINE} characters"),
            ))
        } else if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("content-")
            || lower.starts_with("x-postroad-")
        {
            Some((
                "invalid-header",
                format!("{name} is set by Postroad or by its own field"),
            ))
        } else if lower == "message-id" && !is_message_id(value) {
            Some((
                "invalid-header",
                "a Message-ID is <left@right> without spaces".to_string(),
            ))
        } else {
            None
        };
        match problem {
            Some((code, detail)) => errors.push(FieldError::new(at, code, detail)),
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

/// The metadata fields, with the API key's tenant.
pub fn meta(
    fields: &MetaFields,
    tenant: Option<&str>,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Metadata {
    let mut meta = Metadata {
        tenant: tenant.map(str::to_string),
        ..Metadata::default()
    };
    if let Some(id) = fields.user_id {
        if id > metadata::MAX_USER_ID {
            errors.push(FieldError::new(
                pointer(base, "userId"),
                "invalid-value",
                metadata::MetadataError::UserId(id.to_string()).to_string(),
            ));
        }
        meta.user_id = Some(id);
    }
    if let Some(priority) = &fields.priority {
        match priority.parse::<Priority>() {
            Ok(p) => meta.priority = p,
            Err(e) => errors.push(FieldError::new(
                pointer(base, "priority"),
                "invalid-priority",
                e.to_string(),
            )),
        }
    }
    for (key, field, value, slot) in [
        (
            "emailType",
            "email type",
            &fields.email_type,
            &mut meta.email_type,
        ),
        ("campaign", "campaign", &fields.campaign, &mut meta.campaign),
        ("variant", "variant", &fields.variant, &mut meta.variant),
    ] {
        if let Some(value) = value {
            if let Err(e) = metadata::token(field, value) {
                errors.push(FieldError::new(
                    pointer(base, key),
                    "invalid-value",
                    e.to_string(),
                ));
            }
            *slot = Some(value.clone());
        }
    }
    if let Some(tags) = &fields.tags {
        let at = pointer(base, "tags");
        if tags.len() > MAX_TAGS {
            errors.push(FieldError::new(
                &at,
                "too-many",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        for (name, value) in tags {
            if let Err(e) = metadata::tag(name, value) {
                errors.push(FieldError::new(
                    pointer(&at, name),
                    "invalid-value",
                    e.to_string(),
                ));
            }
            meta.tags.push((name.clone(), value.clone()));
        }
    }
    meta
}

/// `<left@right>` of printable ASCII (RFC 5322 3.6.4, loosely).
fn is_message_id(value: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>@".contains(&b))
    };
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .and_then(|v| v.split_once('@'))
        .is_some_and(|(left, right)| ok(left) && ok(right))
}

/// At most 64 characters of `s`, for error details.
pub fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_split_and_checked() {
        let mut errors = Vec::new();
        assert_eq!(
            named("Team Postroad <team@example.com>", "/from", &mut errors),
            Some((Some("Team Postroad".into()), "team@example.com".into()))
        );
        assert_eq!(
            named("\"Q\" <q@example.com>", "/from", &mut errors)
                .unwrap()
                .0
                .as_deref(),
            Some("Q")
        );
        assert_eq!(
            named("a@example.com", "/from", &mut errors),
            Some((None, "a@example.com".into()))
        );
        assert!(errors.is_empty());
        assert_eq!(named("Ann <not-an-address>", "/from", &mut errors), None);
        assert_eq!(
            named("a@x.test\r\nBcc: v@x.test", "/replyTo", &mut errors),
            None
        );
        let codes: Vec<_> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("/from", "invalid-address"),
                ("/replyTo", "header-injection")
            ]
        );
    }

    #[test]
    fn header_injection_and_reserved_names_are_refused() {
        let given = BTreeMap::from([
            ("X-Campaign".to_string(), "spring".to_string()),
            (
                "X-Evil".to_string(),
                "a\r\nBcc: victim@example.com".to_string(),
            ),
            ("Bcc".to_string(), "x@example.com".to_string()),
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("X-Postroad-User-Id".to_string(), "1".to_string()),
            ("Bad Name".to_string(), "v".to_string()),
        ]);
        let mut errors = Vec::new();
        let kept = headers(&given, "", &mut errors);
        assert_eq!(kept, [("X-Campaign".to_string(), "spring".to_string())]);
        let codes: Vec<_> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("/headers/Bad Name", "invalid-header"),
                ("/headers/Bcc", "invalid-header"),
                ("/headers/Content-Type", "invalid-header"),
                ("/headers/X-Evil", "header-injection"),
                ("/headers/X-Postroad-User-Id", "invalid-header"),
            ]
        );
    }

    #[test]
    fn a_message_id_may_be_given_in_its_own_form() {
        for (value, ok) in [
            ("<order-42.1@shop.example>", true),
            ("order-42@shop.example", false),
            ("<a b@c>", false),
            ("<@c>", false),
            ("<a@b@c>", false),
        ] {
            let given = BTreeMap::from([("Message-ID".to_string(), value.to_string())]);
            let mut errors = Vec::new();
            let kept = headers(&given, "", &mut errors);
            assert_eq!((kept.len() == 1, errors.is_empty()), (ok, ok), "{value}");
        }
    }

    #[test]
    fn metadata_fields_are_checked_one_by_one() {
        let fields = MetaFields {
            user_id: Some(u64::MAX),
            email_type: Some("welcome mail".into()),
            priority: Some("urgent".into()),
            tags: Some(BTreeMap::from([
                ("ok".into(), "1".into()),
                ("bad name".into(), "2".into()),
            ])),
            ..MetaFields::default()
        };
        let mut errors = Vec::new();
        let meta = meta(&fields, Some("acme"), "", &mut errors);
        assert_eq!(meta.tenant.as_deref(), Some("acme"));
        let codes: Vec<_> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("/userId", "invalid-value"),
                ("/priority", "invalid-priority"),
                ("/emailType", "invalid-value"),
                ("/tags/bad name", "invalid-value"),
            ]
        );
    }
}
