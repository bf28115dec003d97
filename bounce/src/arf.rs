//! Complaints: ARF feedback reports (RFC 5965) and the older forwarded-complaint form
//! (a provider's "complaint about message from ..." with the original attached).

use crate::message::{Mail, parse_fields};
use crate::util::{find_addresses, first_address, split_typed};

/// One complained-about recipient.
#[derive(Debug, Default)]
pub(crate) struct Complaint {
    pub recipient: String,
    pub feedbacktype: String,
    pub reporting_mta: String,
}

/// Whether `mail` is a complaint.
pub(crate) fn is_complaint(mail: &Mail) -> bool {
    if !mail.feedback.is_empty() {
        return true;
    }
    let ct = mail
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("report-type=feedback-report") || ct.contains("report-type=\"feedback-report\"")
    {
        return true;
    }
    let subject = mail.header("subject").unwrap_or("").to_ascii_lowercase();
    let from = mail.header("from").unwrap_or("").to_ascii_lowercase();
    let forwarded =
        mail.original.is_some() || mail.texts.iter().any(|t| t.contains("\nReceived: "));
    forwarded
        && (subject.contains("complaint about message")
            || subject.contains("abuse report")
            || subject.contains("feedback report")
            || (from.contains("staff@hotmail.com")
                || from.contains("feedbackloop")
                || from.contains("complaints@")))
        || mail.texts.iter().any(|t| {
            t.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("feedback-type:"))
        })
}

/// The complained-about recipients of a complaint.
pub(crate) fn complaints(mail: &Mail) -> Vec<Complaint> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for body in &mail.feedback {
        fields.extend(parse_fields(body, 200));
    }
    if fields.is_empty() {
        for t in &mail.texts {
            if t.to_ascii_lowercase().contains("feedback-type:") {
                fields.extend(parse_fields(t, 200));
            }
        }
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mut feedbacktype = get("feedback-type").to_ascii_lowercase();
    if feedbacktype.is_empty() {
        feedbacktype = "abuse".to_owned();
    }
    let reporting_mta = split_typed(&get("reporting-mta")).1.to_ascii_lowercase();
    let mut rcpts: Vec<String> = Vec::new();
    for (n, v) in &fields {
        if (n == "original-rcpt-to" || n == "removal-recipient")
            && let Some(a) = first_address(split_typed(v).1)
            && !rcpts.contains(&a)
        {
            rcpts.push(a);
        }
    }
    if rcpts.is_empty()
        && let Some(orig) = original_headers(mail)
    {
        let hdrs = parse_fields(&orig, 200);
        for key in [
            "x-hmxmroriginalrecipient",
            "x-original-to",
            "to",
            "delivered-to",
        ] {
            if let Some((_, v)) = hdrs.iter().find(|(n, _)| n == key)
                && let Some(a) = first_address(v)
            {
                rcpts.push(a);
                break;
            }
        }
    }
    if rcpts.is_empty() {
        // Last resort: the first address of the report text that is not the reporter's.
        let me = mail.header("from").and_then(first_address);
        for t in &mail.texts {
            for a in find_addresses(t, 8) {
                if Some(&a) != me.as_ref() {
                    rcpts.push(a);
                    break;
                }
            }
            if !rcpts.is_empty() {
                break;
            }
        }
    }
    rcpts
        .into_iter()
        .take(crate::dsn::MAX_RECIPIENTS)
        .map(|recipient| Complaint {
            recipient,
            feedbacktype: feedbacktype.clone(),
            reporting_mta: reporting_mta.clone(),
        })
        .collect()
}

/// The original message's header block: an attached one, or one embedded in text.
fn original_headers(mail: &Mail) -> Option<String> {
    if let Some(o) = &mail.original {
        return Some(o.clone());
    }
    mail.texts.iter().find_map(|t| {
        let pos = t.find("\nReceived: ").or_else(|| t.find("\nFrom: "))?;
        Some(t[pos + 1..].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(raw: &str) -> Mail {
        crate::message::parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn arf_with_rcpt_to() {
        let m = mail(
            "From: fbl@example.net\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\n\n--b\nContent-Type: text/plain\n\nabuse report\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: opt-out\nVersion: 1\nOriginal-Rcpt-To: A@example.com\nOriginal-Rcpt-To: b@example.com\n--b\nContent-Type: text/rfc822-headers\n\nTo: c@example.com\n--b--\n",
        );
        assert!(is_complaint(&m));
        let c = complaints(&m);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].recipient, "a@example.com");
        assert_eq!(c[0].feedbacktype, "opt-out");
    }

    #[test]
    fn forwarded_complaint_uses_original_to() {
        let m = mail(
            "From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nTo: kiji@example.com\nFrom: n@example.org\n\nhi\n--b--\n",
        );
        assert!(is_complaint(&m));
        let c = complaints(&m);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].recipient, "kiji@example.com");
        assert_eq!(c[0].feedbacktype, "abuse");
    }
}
