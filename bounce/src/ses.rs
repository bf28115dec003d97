//! Amazon SES notifications delivered by e-mail (SNS e-mail subscriptions): a JSON
//! document (`notificationType` Bounce, Complaint or Delivery), sometimes wrapped in
//! an SNS envelope whose `Message` field holds the JSON as a string.

use serde_json::Value;

use crate::{Evidence, Kind, Reason, Recipient};

/// Parses an SES notification found in `text`.
pub(crate) fn parse(text: &str) -> Option<(Kind, Vec<Recipient>)> {
    if !text.contains("notificationType") && !text.contains("eventType") {
        return None;
    }
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end <= start {
        return None;
    }
    // SNS wraps long lines as "!\n "; JSON itself needs no line breaks.
    let json: String = text[start..=end].replace("!\n ", "").replace('\n', "");
    let mut v: Value = serde_json::from_str(&json).ok()?;
    if let Some(inner) = v.get("Message").and_then(Value::as_str) {
        v = serde_json::from_str(inner).ok()?;
    }
    let kind = v
        .get("notificationType")
        .or_else(|| v.get("eventType"))
        .and_then(Value::as_str)?
        .to_ascii_lowercase();
    match kind.as_str() {
        "bounce" => bounce(&v["bounce"]).map(|r| (Kind::Bounce, r)),
        "complaint" => complaint(&v["complaint"]).map(|r| (Kind::Complaint, r)),
        "delivery" => delivery(&v["delivery"]).map(|r| (Kind::Bounce, r)),
        _ => None,
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn bounce(b: &Value) -> Option<Vec<Recipient>> {
    let hint = match s(b, "bounceSubType") {
        "Suppressed" | "OnAccountSuppressionList" => Some(Reason::Suppressed),
        "MailboxFull" => Some(Reason::MailboxFull),
        "MessageTooLarge" => Some(Reason::EmailTooLarge),
        "ContentRejected" => Some(Reason::ContentError),
        "AttachmentRejected" => Some(Reason::SecurityError),
        "NoEmail" => Some(Reason::UserUnknown),
        _ => None,
    };
    let mta = crate::util::split_typed(s(b, "reportingMTA"))
        .1
        .to_ascii_lowercase();
    let list = b.get("bouncedRecipients")?.as_array()?;
    let out: Vec<Recipient> = list
        .iter()
        .take(crate::dsn::MAX_RECIPIENTS)
        .filter_map(|r| {
            let addr = crate::util::first_address(s(r, "emailAddress"))?;
            let (diag_type, diag) = crate::util::split_typed(s(r, "diagnosticCode"));
            Some(
                Evidence {
                    recipient: addr,
                    status: crate::util::find_status(s(r, "status")).unwrap_or_default(),
                    diagnostic: diag.to_owned(),
                    diag_type,
                    action: s(r, "action").to_ascii_lowercase(),
                    remote_mta: mta.clone(),
                    hint,
                    ..Evidence::default()
                }
                .finish(),
            )
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

fn complaint(c: &Value) -> Option<Vec<Recipient>> {
    let mut ftype = s(c, "complaintFeedbackType").to_ascii_lowercase();
    if ftype.is_empty() {
        ftype = "abuse".to_owned();
    }
    let out: Vec<Recipient> = c
        .get("complainedRecipients")?
        .as_array()?
        .iter()
        .take(crate::dsn::MAX_RECIPIENTS)
        .filter_map(|r| crate::util::first_address(s(r, "emailAddress")))
        .map(|recipient| Recipient {
            recipient,
            reason: Reason::Feedback,
            hardbounce: false,
            deliverystatus: String::new(),
            replycode: String::new(),
            diagnostic: String::new(),
            remote_mta: None,
            command: None,
            action: None,
            feedbacktype: Some(ftype.clone()),
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

fn delivery(d: &Value) -> Option<Vec<Recipient>> {
    let response = s(d, "smtpResponse");
    let out: Vec<Recipient> = d
        .get("recipients")?
        .as_array()?
        .iter()
        .take(crate::dsn::MAX_RECIPIENTS)
        .filter_map(|r| r.as_str().and_then(crate::util::first_address))
        .map(|recipient| Recipient {
            recipient,
            reason: Reason::Delivered,
            hardbounce: false,
            deliverystatus: crate::util::find_status(response).unwrap_or_default(),
            replycode: crate::util::find_reply(response).unwrap_or_default(),
            diagnostic: crate::util::one_line(response, crate::util::MAX_DIAGNOSTIC),
            remote_mta: None,
            command: None,
            action: Some("delivered".into()),
            feedbacktype: None,
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_notification() {
        let t = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"a@example.com","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}"#;
        let (kind, r) = parse(t).unwrap();
        assert_eq!(kind, Kind::Bounce);
        assert_eq!(r[0].reason, Reason::UserUnknown);
        assert!(r[0].hardbounce);
    }

    #[test]
    fn wrapped_complaint() {
        let inner = r#"{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"b@example.com"}],"complaintFeedbackType":"abuse"}}"#;
        let outer = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        let (kind, r) = parse(&format!("prefix\n{outer}\n--\nfooter")).unwrap();
        assert_eq!(kind, Kind::Complaint);
        assert_eq!(r[0].feedbacktype.as_deref(), Some("abuse"));
        assert!(parse("{\"notificationType\": broken").is_none());
    }
}
