//! Provider webhook events into Postroad's events. SES (its event publishing, by way
//! of SNS) and SendGrid name the message by what Postroad gave them when sending: its
//! id and its metadata ([`postroad_queue::Metadata::to_token`]) in SES's message tags
//! and SendGrid's `custom_args`, which their events carry back. So each event maps to
//! an event of that message and recipient, with its tenant, email type and campaign,
//! without asking the history. Event ids derive from the provider's own ids for the
//! event, so a delivery the provider repeats records nothing twice.

use postroad_bounce::classify_reply;
use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Reply, Response,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Most events read from one delivery (SendGrid batches up to a thousand).
pub const MAX_EVENTS: usize = 10_000;

/// What a provider's delivery says.
#[derive(Debug, Default, PartialEq)]
pub struct Mapped {
    pub events: Vec<DeliveryEvent>,
    /// Events of mail Postroad did not send (no id of ours).
    pub unmatched: usize,
    /// Events with nothing to record (SendGrid's `processed`, an open of mail sent to
    /// several recipients at once, ...).
    pub ignored: usize,
}

/// The SES tag and SendGrid argument names (as the relay sets them).
const SES_ID_TAG: &str = "postroad-message-id";
const SES_META_PREFIX: &str = "postroad-meta-";
const SENDGRID_ID_ARG: &str = "postroad_message_id";
const SENDGRID_META_ARG: &str = "postroad_meta";

/// One SES event (the `Message` of an SNS notification), delivered as SNS message
/// `notification_id`.
pub fn from_ses(message: &str, notification_id: &str, now_ms: u64) -> Result<Mapped, String> {
    let v: Value = serde_json::from_str(message).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v["eventType"]
        .as_str()
        .or(v["notificationType"].as_str())
        .ok_or("no eventType")?;
    let mail = &v["mail"];
    let mut out = Mapped::default();
    let tag = |name: &str| mail["tags"][name][0].as_str();
    let Some(id) = tag(SES_ID_TAG).and_then(|t| t.parse::<MessageId>().ok()) else {
        out.unmatched = 1;
        return Ok(out);
    };
    let meta = {
        let mut pieces: Vec<(usize, &str)> = mail["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let i = k.strip_prefix(SES_META_PREFIX)?.parse().ok()?;
                Some((i, v[0].as_str()?))
            })
            .collect();
        pieces.sort();
        let token: String = pieces.into_iter().map(|(_, p)| p).collect();
        Metadata::from_token(&token).unwrap_or_default()
    };
    let ses_id = mail["messageId"].as_str().map(str::to_string);
    let sender = mail["source"].as_str().unwrap_or("").to_string();
    let destinations: Vec<&str> = mail["destination"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let base = Base {
        source: "ses",
        provider_event: notification_id,
        id,
        sender: &sender,
        meta: &meta,
        provider_message_id: ses_id.as_deref(),
    };
    let detail = &v[lower_first(kind).as_str()];
    let at = |d: &Value| iso_ms(d["timestamp"].as_str()).unwrap_or(now_ms);
    let remote = detail["reportingMTA"]
        .as_str()
        .map(|m| m.trim_start_matches("dsn; ").to_string());
    match kind {
        "Bounce" => {
            for r in recipients(&detail["bouncedRecipients"]) {
                let reply = diagnostic_reply(r["diagnosticCode"].as_str(), r["status"].as_str());
                out.events.push(base.event(
                    EventKind::Bounced,
                    address(&r["emailAddress"]),
                    at(detail),
                    remote.clone(),
                    reason_of(reply.as_ref(), detail["bounceSubType"].as_str()),
                    reply,
                ));
            }
        }
        "DeliveryDelay" => {
            for r in recipients(&detail["delayedRecipients"]) {
                let reply = diagnostic_reply(r["diagnosticCode"].as_str(), r["status"].as_str());
                out.events.push(base.event(
                    EventKind::Deferred,
                    address(&r["emailAddress"]),
                    at(detail),
                    remote.clone(),
                    reason_of(reply.as_ref(), detail["delayType"].as_str()),
                    reply,
                ));
            }
        }
        "Complaint" => {
            let feedback = detail["complaintFeedbackType"]
                .as_str()
                .unwrap_or("abuse")
                .to_ascii_lowercase();
            for r in recipients(&detail["complainedRecipients"]) {
                out.events.push(base.event(
                    EventKind::Complained,
                    address(&r["emailAddress"]),
                    at(detail),
                    None,
                    Some(feedback.clone()),
                    None,
                ));
            }
        }
        "Delivery" => {
            let reply = detail["smtpResponse"].as_str().and_then(smtp_reply);
            for r in detail["recipients"].as_array().into_iter().flatten() {
                out.events.push(base.event(
                    EventKind::Delivered,
                    r.as_str().unwrap_or(""),
                    at(detail),
                    remote.clone(),
                    None,
                    reply.clone(),
                ));
            }
        }
        "Open" | "Click" => match destinations.as_slice() {
            // Sent to several at once: SES cannot tell whose open it was.
            [one] => out.events.push(base.event(
                if kind == "Open" {
                    EventKind::Opened
                } else {
                    EventKind::Clicked
                },
                one,
                at(detail),
                None,
                None,
                None,
            )),
            _ => out.ignored += 1,
        },
        _ => out.ignored += 1,
    }
    out.events.retain(|e| e.recipient.contains('@'));
    Ok(out)
}

/// A SendGrid event batch (a JSON array of events).
pub fn from_sendgrid(body: &[u8], now_ms: u64) -> Result<Mapped, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let events = v.as_array().ok_or("not an array of events")?;
    if events.len() > MAX_EVENTS {
        return Err(format!("more than {MAX_EVENTS} events"));
    }
    let mut out = Mapped::default();
    for e in events {
        let Some(id) = e[SENDGRID_ID_ARG]
            .as_str()
            .and_then(|t| t.parse::<MessageId>().ok())
        else {
            out.unmatched += 1;
            continue;
        };
        let meta = e[SENDGRID_META_ARG]
            .as_str()
            .and_then(Metadata::from_token)
            .unwrap_or_default();
        let event_id = e["sg_event_id"].as_str().unwrap_or("");
        let sg_id = e["sg_message_id"]
            .as_str()
            .map(|m| m.split('.').next().unwrap_or(m).to_string());
        let base = Base {
            source: "sendgrid",
            provider_event: event_id,
            id,
            sender: "",
            meta: &meta,
            provider_message_id: sg_id.as_deref(),
        };
        let at = e["timestamp"]
            .as_u64()
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(now_ms);
        let rcpt = address(&e["email"]);
        let response = e["response"].as_str().or(e["reason"].as_str());
        let reply = diagnostic_reply(response, e["status"].as_str());
        let (kind, reason) = match e["event"].as_str().unwrap_or("") {
            "delivered" => (EventKind::Delivered, None),
            "deferred" => (EventKind::Deferred, reason_of(reply.as_ref(), None)),
            "bounce" => (EventKind::Bounced, reason_of(reply.as_ref(), None)),
            "dropped" => (EventKind::Bounced, Some("suppressed".to_string())),
            "spamreport" => (EventKind::Complained, Some("abuse".to_string())),
            "open" => (EventKind::Opened, None),
            "click" => (EventKind::Clicked, None),
            "unsubscribe" | "group_unsubscribe" => (EventKind::Unsubscribed, None),
            _ => {
                out.ignored += 1;
                continue;
            }
        };
        let reply = match kind {
            EventKind::Opened
            | EventKind::Clicked
            | EventKind::Complained
            | EventKind::Unsubscribed => None,
            _ => reply,
        };
        if rcpt.contains('@') {
            out.events
                .push(base.event(kind, rcpt, at, None, reason, reply));
        } else {
            out.ignored += 1;
        }
    }
    Ok(out)
}

/// What every event of one provider message shares.
struct Base<'a> {
    source: &'static str,
    provider_event: &'a str,
    id: MessageId,
    sender: &'a str,
    meta: &'a Metadata,
    provider_message_id: Option<&'a str>,
}

impl Base<'_> {
    fn event(
        &self,
        kind: EventKind,
        recipient: &str,
        at_ms: u64,
        remote_host: Option<String>,
        reason: Option<String>,
        reply: Option<Response>,
    ) -> DeliveryEvent {
        let recipient = recipient.trim().to_ascii_lowercase();
        DeliveryEvent {
            event_id: event_id(self.source, self.provider_event, kind, &recipient),
            kind,
            message_id: self.id,
            sender: self.sender.to_string(),
            domain: recipient
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            recipient,
            at_ms,
            attempt: 0,
            remote_host,
            reply,
            meta: self.meta.clone(),
            provider_message_id: self.provider_message_id.map(str::to_string),
            reason,
        }
    }
}

/// An event id that is the same every time the provider sends this event: a hash of
/// its source, its id there, the kind and the recipient (as a version 8 UUID).
fn event_id(source: &str, provider_event: &str, kind: EventKind, recipient: &str) -> uuid::Uuid {
    let digest = Sha256::new()
        .chain_update(source)
        .chain_update([0])
        .chain_update(provider_event)
        .chain_update([0])
        .chain_update(kind.as_str())
        .chain_update([0])
        .chain_update(recipient)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn recipients(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten().take(MAX_EVENTS)
}

fn address(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The reply behind a diagnostic (`smtp; 550 5.1.1 no such user`) and status.
fn diagnostic_reply(diagnostic: Option<&str>, status: Option<&str>) -> Option<Response> {
    let text = diagnostic
        .map(|d| {
            d.split_once(';').map_or(d, |(kind, rest)| {
                if kind.trim().eq_ignore_ascii_case("smtp") {
                    rest
                } else {
                    d
                }
            })
        })
        .unwrap_or("")
        .trim();
    if let Some(reply) = smtp_reply(text) {
        return Some(reply);
    }
    let enhanced = status.and_then(EnhancedCode::parse)?;
    Some(Response::local(enhanced, text))
}

/// `550 5.1.1 text` as a reply.
fn smtp_reply(text: &str) -> Option<Response> {
    let text = text.trim();
    let code: u16 = text.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    let rest = text[3..].trim_start_matches(['-', ' ']);
    let (enhanced, rest) = match rest.split_once(' ') {
        Some((first, rest)) => match EnhancedCode::parse(first) {
            Some(code) => (Some(code), rest),
            None => (None, rest),
        },
        None => (EnhancedCode::parse(rest), ""),
    };
    let rest = if enhanced.is_none() && !rest.is_empty() {
        text[3..].trim()
    } else {
        rest
    };
    Some(Response::Remote(Reply::owned(code, enhanced, rest.trim())))
}

/// The classifier's reason for a reply (and the provider's own word, when it gave one
/// and the reply says nothing).
fn reason_of(reply: Option<&Response>, provider_word: Option<&str>) -> Option<String> {
    let (code, enhanced, text) = match reply {
        Some(r) => (
            r.code(),
            r.enhanced().map(|e| e.to_string()),
            r.text().to_string(),
        ),
        None => (None, None, provider_word.unwrap_or("").to_string()),
    };
    Some(
        classify_reply(code, enhanced.as_deref(), &text)
            .0
            .as_str()
            .to_string(),
    )
}

fn lower_first(kind: &str) -> String {
    let mut chars = kind.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// ISO 8601 (`2026-12-07T10:00:00.123Z`) as Unix milliseconds.
fn iso_ms(text: Option<&str>) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(text?).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "019ac4d5e3b87c1d9a4f0e2b6c3d8a71";

    fn meta() -> Metadata {
        Metadata {
            tenant: Some("acme".into()),
            email_type: Some("order.shipped".into()),
            ..Metadata::default()
        }
    }

    fn ses(kind: &str, detail: Value, destinations: &[&str]) -> String {
        let token = meta().to_token();
        let (a, b) = token.split_at(token.len() / 2);
        let mut v = serde_json::json!({
            "eventType": kind,
            "mail": {
                "messageId": "0100019abc-ses",
                "source": "app@src.test",
                "destination": destinations,
                "tags": {
                    "postroad-message-id": [ID],
                    "postroad-meta-1": [b],
                    "postroad-meta-0": [a],
                    "ses:configuration-set": ["events"],
                },
            },
        });
        v[lower_first(kind)] = detail;
        v.to_string()
    }

    #[test]
    fn ses_events_map_to_the_message_and_recipient_with_its_metadata() {
        let bounce = ses(
            "Bounce",
            serde_json::json!({
                "bounceType": "Permanent", "bounceSubType": "General",
                "timestamp": "2026-12-07T10:00:00.000Z",
                "reportingMTA": "dsn; a1.amazonses.com",
                "bouncedRecipients": [{"emailAddress": "Bob@Example.NET", "action": "failed",
                    "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            }),
            &["bob@example.net"],
        );
        let m = from_ses(&bounce, "sns-1", 0).unwrap();
        assert_eq!(m.events.len(), 1);
        let e = &m.events[0];
        assert_eq!(e.kind, EventKind::Bounced);
        assert_eq!(e.message_id.to_string(), ID);
        assert_eq!(e.recipient, "bob@example.net");
        assert_eq!(e.reason.as_deref(), Some("userunknown"));
        assert_eq!(e.meta, meta());
        assert_eq!(e.provider_message_id.as_deref(), Some("0100019abc-ses"));
        assert_eq!(e.remote_host.as_deref(), Some("a1.amazonses.com"));
        assert_eq!(e.at_ms, 1_796_637_600_000);
        let Some(Response::Remote(r)) = &e.reply else {
            panic!("{:?}", e.reply)
        };
        assert_eq!((r.code, r.text.as_ref()), (550, "user unknown"));
        // The same notification again: the same event id (recorded once).
        assert_eq!(
            from_ses(&bounce, "sns-1", 0).unwrap().events[0].event_id,
            e.event_id
        );
        assert_ne!(
            from_ses(&bounce, "sns-2", 0).unwrap().events[0].event_id,
            e.event_id
        );

        let complaint = ses(
            "Complaint",
            serde_json::json!({"complaintFeedbackType": "abuse",
                "complainedRecipients": [{"emailAddress": "bob@example.net"}]}),
            &["bob@example.net"],
        );
        let c = &from_ses(&complaint, "sns-3", 5).unwrap().events[0];
        assert_eq!(
            (c.kind, c.reason.as_deref(), c.at_ms),
            (EventKind::Complained, Some("abuse"), 5)
        );
        let delay = ses(
            "DeliveryDelay",
            serde_json::json!({"delayType": "MailboxFull",
                "delayedRecipients": [{"emailAddress": "bob@example.net", "status": "4.2.2",
                    "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}]}),
            &["bob@example.net"],
        );
        let d = &from_ses(&delay, "sns-4", 0).unwrap().events[0];
        assert_eq!(
            (d.kind, d.reason.as_deref()),
            (EventKind::Deferred, Some("mailboxfull"))
        );
        let open = ses(
            "Open",
            serde_json::json!({"timestamp": "2026-12-07T10:00:00Z"}),
            &["bob@example.net"],
        );
        assert_eq!(
            from_ses(&open, "sns-5", 0).unwrap().events[0].kind,
            EventKind::Opened
        );
        let shared = ses("Click", serde_json::json!({}), &["a@x.test", "b@x.test"]);
        let m = from_ses(&shared, "sns-6", 0).unwrap();
        assert_eq!((m.events.len(), m.ignored), (0, 1));
        let stranger = r#"{"eventType":"Bounce","mail":{"messageId":"x","tags":{}},"bounce":{}}"#;
        assert_eq!(from_ses(stranger, "sns-7", 0).unwrap().unmatched, 1);
        assert!(from_ses("not json", "sns-8", 0).is_err());
    }

    #[test]
    fn sendgrid_batches_map_event_by_event() {
        let token = meta().to_token();
        let batch = serde_json::json!([
            {"email": "bob@example.net", "event": "bounce", "sg_event_id": "e1",
             "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001", "timestamp": 1796637600,
             "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist",
             "type": "bounce", "postroad_message_id": ID, "postroad_meta": token},
            {"email": "ann@example.net", "event": "open", "sg_event_id": "e2",
             "timestamp": 1796637601, "postroad_message_id": ID},
            {"email": "cy@example.net", "event": "processed", "sg_event_id": "e3",
             "postroad_message_id": ID},
            {"email": "dee@example.net", "event": "delivered", "sg_event_id": "e4"},
            {"email": "eve@example.net", "event": "spamreport", "sg_event_id": "e5",
             "postroad_message_id": ID},
            {"email": "flo@example.net", "event": "group_unsubscribe", "sg_event_id": "e6",
             "asm_group_id": 42, "postroad_message_id": ID},
        ]);
        let m = from_sendgrid(batch.to_string().as_bytes(), 0).unwrap();
        assert_eq!((m.events.len(), m.ignored, m.unmatched), (4, 1, 1));
        let b = &m.events[0];
        assert_eq!(
            (b.kind, b.reason.as_deref()),
            (EventKind::Bounced, Some("userunknown"))
        );
        assert_eq!(b.provider_message_id.as_deref(), Some("14c5d75ce93"));
        assert_eq!(b.meta, meta());
        assert_eq!(b.at_ms, 1_796_637_600_000);
        assert_eq!(m.events[1].kind, EventKind::Opened);
        assert_eq!(m.events[1].meta, Metadata::default());
        assert_eq!(m.events[2].kind, EventKind::Complained);
        assert_eq!(m.events[3].kind, EventKind::Unsubscribed);
        assert_eq!(m.events[3].recipient, "flo@example.net");
        assert!(from_sendgrid(b"{}", 0).is_err());
        assert!(from_sendgrid(b"[not json", 0).is_err());
    }

    #[test]
    fn replies_are_read_from_diagnostics() {
        let r = diagnostic_reply(Some("smtp; 550-5.7.1 blocked by policy"), None).unwrap();
        assert_eq!(r.to_string(), "550 5.7.1 blocked by policy");
        let r = diagnostic_reply(Some("X-Postfix; host unreachable"), Some("4.4.1")).unwrap();
        assert_eq!(
            (r.code(), r.enhanced().map(|e| e.to_string())),
            (None, Some("4.4.1".into()))
        );
        assert_eq!(diagnostic_reply(None, None), None);
        let r = smtp_reply("250 Ok queued").unwrap();
        assert_eq!((r.code(), r.text()), (Some(250), "Ok queued"));
    }
}
