//! A queued message as SendGrid v3 `mail/send` JSON: SendGrid builds the MIME itself,
//! so the message is parsed (`mail-parser`) and mapped: From, Reply-To and Subject to
//! their fields, the text and HTML bodies to `content` (text first, as SendGrid
//! requires), attachments with their names, types and content ids, the other headers
//! to `headers` (except those SendGrid reserves), and one personalization per
//! recipient, so no recipient sees another's address. Postroad's message id goes in
//! `custom_args`, which SendGrid's event webhooks carry back.

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Map, Value, json};

use super::Submission;

/// SendGrid takes at most 1,000 personalizations per request.
pub const MAX_RECIPIENTS: usize = 1000;

/// The `custom_args` key with Postroad's message id.
pub const MESSAGE_ID_ARG: &str = "postroad_message_id";
/// The `custom_args` key with the message's metadata
/// ([`postroad_queue::Metadata::to_token`]).
pub const META_ARG: &str = "postroad_meta";

/// Headers SendGrid sets from other fields or refuses in `headers` (compared
/// lowercased); `content-*` headers of the top level go too (SendGrid writes the MIME).
const RESERVED: [&str; 15] = [
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
    "mime-version",
    "return-path",
    "sender",
];

/// Why a message cannot be mapped (it is bounced: no provider request could carry it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the message cannot be parsed")]
    Unparsable,
    #[error("the message has no From address")]
    NoFrom,
    #[error("no recipients")]
    NoRecipients,
    #[error("more than {MAX_RECIPIENTS} recipients in one request")]
    TooManyRecipients,
}

/// The request body for `submission`.
pub fn request(submission: &Submission<'_>) -> Result<Value, MappingError> {
    if submission.recipients.is_empty() {
        return Err(MappingError::NoRecipients);
    }
    if submission.recipients.len() > MAX_RECIPIENTS {
        return Err(MappingError::TooManyRecipients);
    }
    let message = MessageParser::default()
        .parse(submission.body)
        .ok_or(MappingError::Unparsable)?;
    let address = |addr: &mail_parser::Addr<'_>| {
        let mut out = Map::new();
        out.insert("email".into(), json!(addr.address.as_deref()?));
        if let Some(name) = addr.name.as_deref().filter(|n| !n.trim().is_empty()) {
            out.insert("name".into(), json!(name));
        }
        Some(Value::Object(out))
    };
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(address)
        .ok_or(MappingError::NoFrom)?;
    let personalizations: Vec<Value> = submission
        .recipients
        .iter()
        .map(|to| json!({"to": [{"email": to}]}))
        .collect();
    let mut body = Map::new();
    body.insert("personalizations".into(), json!(personalizations));
    body.insert("from".into(), from);
    if let Some(reply_to) = message.reply_to().and_then(|a| a.first()).and_then(address) {
        body.insert("reply_to".into(), reply_to);
    }
    // SendGrid requires a subject of at least one character.
    let subject = message.subject().map(str::trim).filter(|s| !s.is_empty());
    body.insert("subject".into(), json!(subject.unwrap_or(" ")));
    body.insert("content".into(), json!(content(&message)));
    let attachments = attachments(&message);
    if !attachments.is_empty() {
        body.insert("attachments".into(), json!(attachments));
    }
    let headers = headers(&message);
    if !headers.is_empty() {
        body.insert("headers".into(), Value::Object(headers));
    }
    let mut args = Map::new();
    args.insert(MESSAGE_ID_ARG.into(), json!(submission.id.to_string()));
    if !submission.meta.is_empty() {
        args.insert(META_ARG.into(), json!(submission.meta.to_token()));
    }
    body.insert("custom_args".into(), Value::Object(args));
    if let Some(kind) = &submission.meta.email_type {
        body.insert("categories".into(), json!([kind]));
    }
    Ok(Value::Object(body))
}

/// `text/plain` then `text/html`, each when the message has it; a message with
/// neither gets an empty-looking text (SendGrid requires content).
fn content(message: &mail_parser::Message<'_>) -> Vec<Value> {
    let mut content = Vec::new();
    let text = message
        .text_bodies()
        .find(|p| !p.is_text_html())
        .and_then(|p| p.text_contents());
    let html = message
        .html_bodies()
        .find(|p| p.is_text_html())
        .and_then(|p| p.text_contents());
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text/plain", "value": text}));
    }
    if let Some(html) = html.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text/html", "value": html}));
    }
    if content.is_empty() {
        content.push(json!({"type": "text/plain", "value": " "}));
    }
    content
}

fn attachments(message: &mail_parser::Message<'_>) -> Vec<Value> {
    message
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            let mut a = Map::new();
            a.insert(
                "content".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(part.contents())),
            );
            let name = part
                .attachment_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("attachment-{}", i + 1));
            a.insert("filename".into(), json!(name));
            if let Some(ct) = part.content_type() {
                let subtype = ct.subtype().unwrap_or("octet-stream");
                a.insert("type".into(), json!(format!("{}/{subtype}", ct.ctype())));
            }
            let inline = part.content_disposition().is_some_and(|d| d.is_inline());
            a.insert(
                "disposition".into(),
                json!(if inline { "inline" } else { "attachment" }),
            );
            if let Some(id) = part.content_id() {
                a.insert("content_id".into(), json!(id.trim_matches(['<', '>'])));
            }
            Value::Object(a)
        })
        .collect()
}

/// The message's own headers SendGrid lets through, unfolded; the first of a repeated
/// name.
fn headers(message: &mail_parser::Message<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, raw) in message.headers_raw() {
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str())
            || lower.starts_with("content-")
            || out.keys().any(|k| k.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let value: String = raw
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if value.is_empty() {
            continue;
        }
        out.insert(name.to_string(), json!(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(body: &[u8], recipients: Vec<&'static str>) -> Result<Value, MappingError> {
        let meta = postroad_queue::Metadata {
            email_type: Some("receipt".into()),
            ..Default::default()
        };
        request(&Submission {
            id: postroad_queue::MessageId::from_u128(7),
            recipients,
            body,
            meta: &meta,
        })
    }

    const MIXED: &[u8] = b"From: \"Shop\" <shop@example.com>\r\n\
Reply-To: help@example.com\r\n\
To: someone@example.net\r\n\
Subject: Your receipt\r\n\
Message-ID: <r1@example.com>\r\n\
List-Unsubscribe: <https://example.com/u/1>,\r\n <mailto:u@example.com>\r\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; b=abc\r\n\
X-Campaign: 42\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"m\"\r\n\
\r\n\
--m\r\n\
Content-Type: multipart/alternative; boundary=\"a\"\r\n\
\r\n\
--a\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Thanks.\r\n\
--a\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Thanks.</p>\r\n\
--a--\r\n\
--m\r\n\
Content-Type: application/pdf; name=\"receipt.pdf\"\r\n\
Content-Disposition: attachment; filename=\"receipt.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--m--\r\n";

    #[test]
    fn a_message_maps_to_the_fields_sendgrid_documents() {
        let v = submit(MIXED, vec!["a@example.net", "b@example.org"]).unwrap();
        assert_eq!(
            v["personalizations"],
            json!([{"to": [{"email": "a@example.net"}]}, {"to": [{"email": "b@example.org"}]}])
        );
        assert_eq!(
            v["from"],
            json!({"email": "shop@example.com", "name": "Shop"})
        );
        assert_eq!(v["reply_to"], json!({"email": "help@example.com"}));
        assert_eq!(v["subject"], "Your receipt");
        assert_eq!(v["content"][0]["type"], "text/plain");
        assert!(
            v["content"][0]["value"]
                .as_str()
                .unwrap()
                .starts_with("Thanks.")
        );
        assert_eq!(v["content"][1]["type"], "text/html");
        let a = &v["attachments"][0];
        assert_eq!(a["filename"], "receipt.pdf");
        assert_eq!(a["type"], "application/pdf");
        assert_eq!(a["disposition"], "attachment");
        let pdf = base64::engine::general_purpose::STANDARD
            .decode(a["content"].as_str().unwrap())
            .unwrap();
        assert!(pdf.starts_with(b"%PDF-1.4"));
        let headers = v["headers"].as_object().unwrap();
        assert_eq!(
            headers["List-Unsubscribe"],
            "<https://example.com/u/1>, <mailto:u@example.com>"
        );
        assert_eq!(
            headers["List-Unsubscribe-Post"],
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(headers["X-Campaign"], "42");
        assert_eq!(headers["Message-ID"], "<r1@example.com>");
        for reserved in [
            "DKIM-Signature",
            "To",
            "From",
            "Subject",
            "Content-Type",
            "MIME-Version",
        ] {
            assert!(!headers.contains_key(reserved), "{reserved}");
        }
        assert_eq!(
            v["custom_args"][MESSAGE_ID_ARG],
            postroad_queue::MessageId::from_u128(7).to_string()
        );
        assert_eq!(v["categories"], json!(["receipt"]));
        let meta =
            postroad_queue::Metadata::from_token(v["custom_args"][META_ARG].as_str().unwrap());
        assert_eq!(meta.unwrap().email_type.as_deref(), Some("receipt"));
    }

    #[test]
    fn what_cannot_be_mapped_says_why() {
        assert_eq!(
            submit(b"Subject: x\r\n\r\nbody\r\n", vec!["a@example.net"]),
            Err(MappingError::NoFrom)
        );
        assert_eq!(submit(MIXED, vec![]), Err(MappingError::NoRecipients));
        let many = vec!["a@example.net"; MAX_RECIPIENTS + 1];
        assert_eq!(submit(MIXED, many), Err(MappingError::TooManyRecipients));
        // A bare message: a placeholder subject and text, as SendGrid needs some.
        let v = submit(b"From: s@example.com\r\n\r\n", vec!["a@example.net"]).unwrap();
        assert_eq!(v["subject"], " ");
        assert_eq!(v["content"], json!([{"type": "text/plain", "value": " "}]));
    }
}
