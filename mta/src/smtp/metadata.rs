//! Message metadata from SMTP clients: the `X-Postroad-*` header fields (as SES reads
//! `X-SES-MESSAGE-TAGS` and SendGrid `X-SMTPAPI`). Pure: no I/O, so it is fuzzed.
//!
//! | field | sets |
//! |---|---|
//! | `X-Postroad-User-Id: 12345` | `user_id` |
//! | `X-Postroad-Email-Type: welcome` | `email_type` |
//! | `X-Postroad-Priority: high` | `priority` (`high`, `normal`, `bulk`) |
//! | `X-Postroad-Tags: plan=pro, region=eu` | `tags` |
//! | `X-Postroad-Campaign: spring-sale` | `campaign` |
//! | `X-Postroad-Variant: B` | `variant` (A/B tests) |
//!
//! Every such field is removed from the message before it is queued, so none is ever
//! relayed. Only trusted clients (authenticated, or in `relay_networks`) set
//! metadata; from anyone else the fields are removed and ignored.

use postroad_queue::metadata::{self, Metadata, MetadataError};

use super::reply::{EnhancedCode, Reply};

/// The prefix of every Postroad header field name (compared without regard to case).
pub const PREFIX: &str = "X-Postroad-";

/// The known fields, by the name after [`PREFIX`], lower case.
const FIELDS: [&str; 6] = [
    "user-id",
    "email-type",
    "priority",
    "tags",
    "campaign",
    "variant",
];

/// Takes the `X-Postroad-*` fields out of the header section of `message` and, when
/// `trusted`, returns the metadata they set. A bad value (or an unknown or repeated
/// `X-Postroad-` field) from a trusted client is `550 5.6.0` naming the field.
pub fn take(message: &mut Vec<u8>, trusted: bool) -> Result<Metadata, Reply> {
    if hidden_behind_bare_cr(message) {
        // It would not be removed, and a next hop that ends lines at a bare CR would
        // read it as a field.
        return Err(Reply::new(
            550,
            "5.6.0",
            "X-Postroad- header field after a bare CR; end header lines with CRLF",
        ));
    }
    let fields = find(message);
    if fields.is_empty() {
        return Ok(Metadata::default());
    }
    let meta = if trusted {
        let mut meta = Metadata::default();
        let mut seen = [false; FIELDS.len()];
        for field in &fields {
            apply(&mut meta, &mut seen, field, message)?;
        }
        meta.validate()
            .map_err(|e| refuse(&format!("{PREFIX}Tags"), &e))?;
        meta
    } else {
        Metadata::default()
    };
    for field in fields.iter().rev() {
        message.drain(field.start..field.end);
    }
    Ok(meta)
}

/// One `X-Postroad-*` field: where it is (continuation lines and line ending
/// included), and where its value is.
struct Field {
    start: usize,
    end: usize,
    name_end: usize,
    value_start: usize,
}

/// Finds the Postroad fields in the header section (up to the first empty line).
fn find(message: &[u8]) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let first_end = line_end(message, pos);
        let line = &message[pos..first_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        // A field ends where the next line does not start with white space.
        let mut end = first_end;
        while end < message.len() && matches!(message[end], b' ' | b'\t') {
            end = line_end(message, end);
        }
        if let Some(colon) = memchr::memchr(b':', line)
            && colon >= PREFIX.len()
            && line[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
        {
            fields.push(Field {
                start: pos,
                end,
                name_end: pos + colon,
                value_start: pos + colon + 1,
            });
        }
        pos = end;
    }
    fields
}

/// Whether a bare CR (not followed by LF) in the header section is followed by an
/// `X-Postroad-` name.
fn hidden_behind_bare_cr(message: &[u8]) -> bool {
    let mut pos = 0;
    while pos < message.len() {
        let end = line_end(message, pos);
        let line = &message[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return false;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        for i in memchr::memchr_iter(b'\r', body) {
            let after = &body[i + 1..];
            if after.len() >= PREFIX.len()
                && after[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
            {
                return true;
            }
        }
        pos = end;
    }
    false
}

/// The end of the line starting at `pos` (after its `\n`, or the end of input).
fn line_end(message: &[u8], pos: usize) -> usize {
    memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1)
}

fn apply(
    meta: &mut Metadata,
    seen: &mut [bool; FIELDS.len()],
    field: &Field,
    message: &[u8],
) -> Result<(), Reply> {
    let name = String::from_utf8_lossy(&message[field.start..field.name_end]).into_owned();
    let name = name.trim_end().to_string();
    let Some(which) = FIELDS
        .iter()
        .position(|f| f.eq_ignore_ascii_case(&name[PREFIX.len()..]))
    else {
        return Err(Reply::owned(
            550,
            Some(EnhancedCode::new(5, 6, 0)),
            format!(
                "{name}: unknown header; Postroad reads {}",
                FIELDS.map(|f| format!("{PREFIX}{f}")).join(", ")
            ),
        ));
    };
    if std::mem::replace(&mut seen[which], true) {
        return Err(Reply::owned(
            550,
            Some(EnhancedCode::new(5, 6, 0)),
            format!("{name}: header given twice"),
        ));
    }
    let raw = &message[field.value_start..field.end];
    let Ok(raw) = std::str::from_utf8(raw) else {
        return Err(Reply::owned(
            550,
            Some(EnhancedCode::new(5, 6, 0)),
            format!("{name}: value is not UTF-8"),
        ));
    };
    // Unfold: the line breaks of continuation lines are not part of the value.
    let value: String = raw.replace(['\r', '\n'], "");
    let value = value.trim();
    let text = || Some(value.to_string());
    let result = match FIELDS[which] {
        "user-id" => metadata::parse_user_id(value).map(|id| meta.user_id = Some(id)),
        "email-type" => metadata::token("email type", value).map(|()| meta.email_type = text()),
        "priority" => value.parse().map(|p| meta.priority = p),
        "tags" => metadata::parse_tags(value).map(|t| meta.tags = t),
        "campaign" => metadata::token("campaign", value).map(|()| meta.campaign = text()),
        _ => metadata::token("variant", value).map(|()| meta.variant = text()),
    };
    result.map_err(|e| refuse(&name, &e))
}

fn refuse(name: &str, e: &MetadataError) -> Reply {
    Reply::owned(
        550,
        Some(EnhancedCode::new(5, 6, 0)),
        format!("{name}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use postroad_queue::Priority;

    use super::*;

    fn take_from(text: &str, trusted: bool) -> (Result<Metadata, Reply>, String) {
        let mut message = text.as_bytes().to_vec();
        let result = take(&mut message, trusted);
        (result, String::from_utf8(message).unwrap())
    }

    #[test]
    fn reads_and_removes_the_fields() {
        let (meta, rest) = take_from(
            "Received: from x\r\nX-Postroad-User-Id: 12345\r\nSubject: hi\r\n\
             x-postroad-email-type: welcome\r\nX-Postroad-Tags: plan=pro,\r\n  region=eu\r\n\
             X-POSTROAD-PRIORITY: High\r\nX-Postroad-Campaign: spring\r\n\
             X-Postroad-Variant: B\r\n\r\nX-Postroad-User-Id: 1 (in the body)\r\n",
            true,
        );
        assert_eq!(
            meta.unwrap(),
            Metadata {
                user_id: Some(12345),
                email_type: Some("welcome".into()),
                campaign: Some("spring".into()),
                variant: Some("B".into()),
                priority: Priority::High,
                tags: vec![
                    ("plan".into(), "pro".into()),
                    ("region".into(), "eu".into())
                ],
                tenant: None,
            }
        );
        assert_eq!(
            rest,
            "Received: from x\r\nSubject: hi\r\n\r\nX-Postroad-User-Id: 1 (in the body)\r\n"
        );
    }

    #[test]
    fn untrusted_clients_set_nothing_and_lose_the_fields() {
        let (meta, rest) = take_from(
            "X-Postroad-User-Id: 1\nX-Postroad-Bogus: ???\nSubject: x\n\nbody\n",
            false,
        );
        assert_eq!(meta.unwrap(), Metadata::default());
        assert_eq!(rest, "Subject: x\n\nbody\n");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, words) in [
            (
                "X-Postroad-Priority: urgent\r\n\r\n",
                "X-Postroad-Priority: priority must be",
            ),
            (
                "X-Postroad-User-Id: twelve\r\n\r\n",
                "X-Postroad-User-Id: user id must be",
            ),
            (
                "X-Postroad-Email-Type: a b\r\n\r\n",
                "X-Postroad-Email-Type: email type must",
            ),
            (
                "X-Postroad-Tags: plan\r\n\r\n",
                "X-Postroad-Tags: a tag is name=value",
            ),
            (
                "X-Postroad-Userid: 1\r\n\r\n",
                "X-Postroad-Userid: unknown header",
            ),
            (
                "X-Postroad-Variant: A\r\nX-Postroad-Variant: B\r\n\r\n",
                "given twice",
            ),
        ] {
            let (result, _) = take_from(text, true);
            let reply = result.unwrap_err();
            assert_eq!(reply.code, 550);
            assert_eq!(reply.enhanced, Some(EnhancedCode::new(5, 6, 0)));
            assert!(reply.text.contains(words), "{text:?}: {reply}");
        }
    }

    #[test]
    fn a_field_behind_a_bare_cr_is_refused() {
        for trusted in [true, false] {
            let (result, rest) =
                take_from("Subject: x\rX-Postroad-User-Id: 1\r\n\r\nbody", trusted);
            let reply = result.unwrap_err();
            assert_eq!(reply.enhanced, Some(EnhancedCode::new(5, 6, 0)));
            assert!(reply.text.contains("bare CR"), "{reply}");
            assert_eq!(rest, "Subject: x\rX-Postroad-User-Id: 1\r\n\r\nbody");
        }
        // Bare CRs elsewhere, and in the body, are no business of this check.
        let (meta, _) = take_from("Subject: a\rb\r\n\r\nx\rX-Postroad-Tags: a=1\r\n", true);
        assert_eq!(meta.unwrap(), Metadata::default());
    }

    #[test]
    fn many_fields_are_removed_in_one_pass() {
        let mut text = "X-Postroad-Junk: 1\n".repeat(100_000);
        text.push_str("Subject: kept\n\nbody\n");
        let (meta, rest) = take_from(&text, false);
        assert_eq!(meta.unwrap(), Metadata::default());
        assert_eq!(rest, "Subject: kept\n\nbody\n");
        let (_, rest) = take_from(
            "A: 1\nX-Postroad-Variant: B\nB: 2\nx-postroad-tags: a=1\n\nbody",
            true,
        );
        assert_eq!(rest, "A: 1\nB: 2\n\nbody");
    }

    #[test]
    fn messages_without_fields_are_untouched() {
        for text in [
            "",
            "Subject: x\r\n\r\nbody",
            "no header section at all",
            "\r\n\r\n",
        ] {
            let (meta, rest) = take_from(text, true);
            assert_eq!(meta.unwrap(), Metadata::default());
            assert_eq!(rest, text);
        }
    }
}
