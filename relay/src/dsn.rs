//! Delivery status notifications (RFC 3464) Postroad sends to the sender of a message:
//! a `multipart/report` with a human-readable part, the `message/delivery-status`
//! fields per recipient, and the original's headers (`RET=HDRS`, the default) or the
//! whole message (`RET=FULL`, up to [`MAX_RETURNED`]). Sent for recipients that
//! bounced or expired unless their `NOTIFY` excludes failures (listeners and the HTTP
//! API can set `NEVER` for every recipient), and for deliveries when `NOTIFY=SUCCESS`
//! asked; never for mail with a null sender (reports are not reported on), and with a
//! null sender itself, so a DSN that cannot be delivered ends there.

use std::fmt::Write as _;

use bytes::Bytes;
use postroad_queue::{
    Claimed, DeliveryEvent, DsnRet, Envelope, MessageId, Queue, Recipient, Response,
};

/// Largest original returned whole; a bigger one is returned as its headers.
pub const MAX_RETURNED: usize = 10 * 1024 * 1024;

/// What happened to one recipient, for its DSN fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delivered,
}

/// One recipient's part of a notification.
pub struct Entry<'a> {
    pub recipient: &'a Recipient,
    pub action: Action,
    pub response: &'a Response,
    pub remote_host: Option<&'a str>,
    /// The attempt was the last one because the message was too old.
    pub expired: bool,
}

/// Whether `recipient`'s sender wants a notice of `action`.
pub fn wanted(envelope: &Envelope, recipient: &Recipient, action: Action) -> bool {
    if envelope.sender.is_empty() || recipient.notify.never {
        return false;
    }
    let given = recipient.notify.success || recipient.notify.failure || recipient.notify.delay;
    match action {
        Action::Failed => recipient.notify.failure || !given,
        Action::Delivered => recipient.notify.success,
    }
}

/// The notification to `envelope`'s sender about `entries`: its envelope (null sender,
/// one recipient) and its message.
pub fn notice(
    envelope: &Envelope,
    body: &[u8],
    entries: &[Entry<'_>],
    hostname: &str,
    now_ms: u64,
) -> (Envelope, Bytes) {
    let id = MessageId::new();
    let failed = entries.iter().any(|e| e.action == Action::Failed);
    let boundary = format!("{id}/{hostname}");
    let mut m = String::with_capacity(4096);
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Description: Notification\r\n\
         \r\n",
        sender = envelope.sender,
        subject = if failed {
            "Undelivered Mail Returned to Sender"
        } else {
            "Successful Mail Delivery Report"
        },
        date = rfc2822(now_ms),
    );
    human_part(&mut m, envelope, entries, hostname, failed);
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n"
    );
    if let Some(envid) = &envelope.dsn_envid {
        let _ = write!(m, "Original-Envelope-Id: {}\r\n", one_line(envid));
    }
    let _ = write!(m, "Arrival-Date: {}\r\n", rfc2822(envelope.received_at_ms));
    for e in entries {
        status_fields(&mut m, e, now_ms);
    }
    let whole = envelope.dsn_ret == Some(DsnRet::Full) && body.len() <= MAX_RETURNED;
    let original: &[u8] = if whole { body } else { headers_of(body) };
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Type: {}\r\n\
         Content-Description: {}\r\n\
         \r\n",
        if whole {
            "message/rfc822"
        } else {
            "text/rfc822-headers"
        },
        if whole {
            "Undelivered Message"
        } else {
            "Undelivered Message Headers"
        },
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(original);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let mut to = Recipient::new(envelope.sender.clone());
    // Nothing is reported about a report.
    to.notify.never = true;
    let mut notice = Envelope::new("", vec![to], envelope.client_ip);
    notice.id = id;
    notice.received_at_ms = now_ms;
    notice.size = out.len() as u64;
    notice.body_8bit = whole && envelope.body_8bit;
    notice.smtputf8 = envelope.smtputf8;
    notice.meta.email_type = Some("dsn".into());
    notice.meta.tenant = envelope.meta.tenant.clone();
    (notice, Bytes::from(out))
}

fn human_part(
    m: &mut String,
    envelope: &Envelope,
    entries: &[Entry<'_>],
    host: &str,
    failed: bool,
) {
    let _ = write!(m, "This is the mail system at host {host}.\r\n\r\n");
    if failed {
        let _ = write!(
            m,
            "Your message (id {}) could not be delivered to one or more\r\n\
             recipients. It is attached below.\r\n\r\n",
            envelope.id
        );
    } else {
        let _ = write!(
            m,
            "Your message (id {}) was delivered to the recipients below,\r\n\
             as you asked to be told.\r\n\r\n",
            envelope.id
        );
    }
    for e in entries {
        let why = match (e.action, e.expired) {
            (Action::Delivered, _) => "delivered".to_string(),
            (Action::Failed, true) => format!("gave up after retrying: {}", e.response),
            (Action::Failed, false) => e.response.to_string(),
        };
        let host = e
            .remote_host
            .map(|h| format!(" (host {})", one_line(h)))
            .unwrap_or_default();
        let _ = write!(
            m,
            "<{}>{host}: {}\r\n",
            one_line(&e.recipient.address),
            one_line(&why)
        );
    }
}

fn status_fields(m: &mut String, e: &Entry<'_>, now_ms: u64) {
    let _ = write!(
        m,
        "\r\nFinal-Recipient: rfc822; {}\r\n",
        one_line(&e.recipient.address)
    );
    if let Some(orcpt) = &e.recipient.orcpt {
        let _ = write!(m, "Original-Recipient: rfc822; {}\r\n", one_line(orcpt));
    }
    let status = match (e.action, e.response.enhanced()) {
        (Action::Delivered, _) => "2.0.0".to_string(),
        (Action::Failed, Some(code)) if code.to_string().starts_with('5') => code.to_string(),
        // A temporary reason that became final (expiry): the same detail, permanent.
        (Action::Failed, Some(code)) => format!("5{}", &code.to_string()[1..]),
        (Action::Failed, None) => "5.0.0".to_string(),
    };
    let action = match e.action {
        Action::Failed => "failed",
        Action::Delivered => "delivered",
    };
    let _ = write!(m, "Action: {action}\r\nStatus: {status}\r\n");
    if let Some(host) = e.remote_host {
        let name = host.split_whitespace().next().unwrap_or(host);
        let _ = write!(m, "Remote-MTA: dns; {}\r\n", one_line(name));
    }
    if let Response::Remote(reply) = e.response {
        let text = reply.to_string();
        let _ = write!(m, "Diagnostic-Code: smtp; {}\r\n", one_line(&text));
    }
    let _ = write!(m, "Last-Attempt-Date: {}\r\n", rfc2822(now_ms));
}

/// The header section of a message (up to and including the empty line), or all of it
/// when it has no body.
fn headers_of(body: &[u8]) -> &[u8] {
    memchr::memmem::find(body, b"\r\n\r\n")
        .map(|at| &body[..at + 2])
        .or_else(|| memchr::memmem::find(body, b"\n\n").map(|at| &body[..at + 1]))
        .unwrap_or(body)
}

/// Text made safe for one header line: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn rfc2822(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc2822()
}

/// Queues the DSNs for the `noticed` recipients of a message (indices into its envelope,
/// with what happened to each): one for the failures, one for the deliveries, before the
/// resolution is recorded, so that a crash in between sends them again after the
/// restart, never not at all.
pub async fn queue_notices(
    claimed: &Claimed,
    events: &[DeliveryEvent],
    noticed: &[(usize, Action, bool)],
    queue: &dyn Queue,
    helo_name: &str,
    now_ms: u64,
) {
    let envelope = &claimed.envelope;
    for kind in [Action::Failed, Action::Delivered] {
        let entries: Vec<Entry<'_>> = noticed
            .iter()
            .filter(|(_, action, _)| *action == kind)
            .filter_map(|&(index, action, expired)| {
                let recipient = &envelope.recipients[index];
                let event = events.iter().find(|e| e.recipient == recipient.address)?;
                Some(Entry {
                    recipient,
                    action,
                    response: event.reply.as_ref()?,
                    remote_host: event.remote_host.as_deref(),
                    expired,
                })
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let (notice, body) = notice(envelope, &claimed.body, &entries, helo_name, now_ms);
        let notice_id = notice.id;
        match queue.enqueue(notice, body).await {
            Ok(()) => {
                metrics::counter!("postroad_dsn_sent_total").increment(1);
                tracing::info!(id = %envelope.id, notice = %notice_id, to = %envelope.sender, recipients = entries.len(), "delivery status notification queued");
            }
            Err(e) => {
                metrics::counter!("postroad_dsn_errors_total").increment(1);
                tracing::error!(id = %envelope.id, to = %envelope.sender, "cannot queue the delivery status notification: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use postroad_queue::{EnhancedCode, Notify, Reply};

    use super::*;

    fn envelope(ret: Option<DsnRet>) -> Envelope {
        let mut bob = Recipient::new("bob@example.net");
        bob.orcpt = Some("Bob@Example.NET".into());
        let mut e = Envelope::new(
            "app@src.test",
            vec![bob, Recipient::new("ann@example.org")],
            "192.0.2.1".parse().unwrap(),
        );
        e.dsn_ret = ret;
        e.dsn_envid = Some("QQ314159".into());
        e
    }

    const BODY: &[u8] = b"From: app@src.test\r\nSubject: Hi\r\n\r\nthe body\r\n";

    #[test]
    fn a_failure_report_has_the_three_parts_and_every_field() {
        let e = envelope(None);
        let reply = Response::Remote(Reply::owned(
            550,
            Some(EnhancedCode::new(5, 1, 1)),
            "no such user\r\nreally",
        ));
        let (notice, body) = notice(
            &e,
            BODY,
            &[Entry {
                recipient: &e.recipients[0],
                action: Action::Failed,
                response: &reply,
                remote_host: Some("mx.example.net [192.0.2.9]:25"),
                expired: false,
            }],
            "mx.postroad.test",
            1_800_000_000_000,
        );
        assert_eq!(notice.sender, "");
        assert_eq!(notice.recipients[0].address, "app@src.test");
        assert!(notice.recipients[0].notify.never);
        assert_eq!(notice.size, body.len() as u64);
        let text = String::from_utf8(body.to_vec()).unwrap();
        for needle in [
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Auto-Submitted: auto-replied",
            "Reporting-MTA: dns; mx.postroad.test",
            "Original-Envelope-Id: QQ314159",
            "Final-Recipient: rfc822; bob@example.net",
            "Original-Recipient: rfc822; Bob@Example.NET",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.example.net",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Content-Type: text/rfc822-headers",
            "Subject: Hi",
        ] {
            assert!(text.contains(needle), "{needle}:\n{text}");
        }
        assert!(!text.contains("the body"), "headers only by default");
        // Our own classifier reads it back as the bounce it is.
        let read = postroad_bounce::analyse(&body);
        assert_eq!(read.recipients.len(), 1, "{read:?}");
        assert_eq!(read.recipients[0].recipient, "bob@example.net");
        assert_eq!(
            read.recipients[0].reason,
            postroad_bounce::Reason::UserUnknown
        );
        assert_eq!(read.recipients[0].deliverystatus, "5.1.1");
    }

    #[test]
    fn ret_full_returns_the_message_and_expiry_makes_the_status_permanent() {
        let e = envelope(Some(DsnRet::Full));
        let deferral = Response::local(EnhancedCode::new(4, 4, 1), "connection refused");
        let (_, body) = notice(
            &e,
            BODY,
            &[Entry {
                recipient: &e.recipients[1],
                action: Action::Failed,
                response: &deferral,
                remote_host: None,
                expired: true,
            }],
            "mx.postroad.test",
            1_800_000_000_000,
        );
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("Content-Type: message/rfc822"), "{text}");
        assert!(text.contains("the body"), "{text}");
        assert!(text.contains("Status: 5.4.1"), "{text}");
        assert!(text.contains("gave up after retrying"), "{text}");
        assert!(!text.contains("Diagnostic-Code"), "no server replied");
    }

    #[test]
    fn who_wants_a_notice() {
        let mut e = envelope(None);
        let plain = e.recipients[0].clone();
        assert!(wanted(&e, &plain, Action::Failed), "failures by default");
        assert!(!wanted(&e, &plain, Action::Delivered));
        let mut success_only = plain.clone();
        success_only.notify = Notify {
            success: true,
            ..Notify::default()
        };
        assert!(wanted(&e, &success_only, Action::Delivered));
        assert!(!wanted(&e, &success_only, Action::Failed));
        let mut never = plain.clone();
        never.notify.never = true;
        assert!(!wanted(&e, &never, Action::Failed));
        e.sender.clear();
        assert!(
            !wanted(&e, &plain, Action::Failed),
            "never to a null sender"
        );
    }
}
