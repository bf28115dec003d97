//! What the events put on the list.

use std::sync::Arc;

use async_trait::async_trait;
use postroad_queue::{DeliveryEvent, EventKind, EventSink, SinkError};

use super::{Entry, MAX_DETAIL, Reason, Suppressions};

/// The entry an event makes, if any: complaints and unsubscribes for good, bounces
/// that say the address does not exist for good, bounces that say the mailbox is full
/// or suspended for `soft_bounce_secs`; none for bounces about the sender (blocked,
/// policy, content, rate), whose next mail may well go.
pub fn entry_for(event: &DeliveryEvent, soft_bounce_secs: u64) -> Option<Entry> {
    let (reason, source, expires) = match event.kind {
        EventKind::Complained => (Reason::Complaint, "complaint", None),
        EventKind::Unsubscribed => (Reason::Unsubscribe, "unsubscribe", None),
        EventKind::Bounced => match event.reason.as_deref()? {
            "userunknown" | "hostunknown" | "hasmoved" | "notaccept" => {
                (Reason::HardBounce, "bounce", None)
            }
            "mailboxfull" | "suspend" => (
                Reason::SoftBounce,
                "bounce",
                Some(event.at_ms + soft_bounce_secs * 1000),
            ),
            _ => return None,
        },
        _ => return None,
    };
    let mut detail = match &event.reply {
        Some(reply) => reply.to_string(),
        None => event.reason.clone().unwrap_or_default(),
    };
    if let Some((at, _)) = detail.char_indices().nth(MAX_DETAIL) {
        detail.truncate(at);
    }
    Some(Entry {
        tenant: event.meta.tenant.clone().unwrap_or_default(),
        address: event.recipient.trim().to_ascii_lowercase(),
        reason,
        source: source.into(),
        detail,
        created_at_ms: event.at_ms,
        expires_at_ms: expires,
    })
}

/// The list as an event sink: what the events say goes on it (with
/// `suppression.from_events`).
pub struct SuppressionSink(pub Arc<Suppressions>);

#[async_trait]
impl EventSink for SuppressionSink {
    fn name(&self) -> &'static str {
        "suppression"
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        let mut entries: Vec<Entry> = events
            .iter()
            .filter_map(|e| entry_for(e, self.0.config().soft_bounce_secs))
            // A soft bounce never shortens an entry already there (a hard bounce's).
            .filter(|e| {
                e.expires_at_ms.is_none()
                    || matches!(
                        self.0.check_local(Some(&e.tenant), &e.address),
                        None | Some(Reason::SoftBounce)
                    )
            })
            .collect();
        // One entry per address: the last event's (a complaint after a bounce, say).
        let mut seen = std::collections::HashSet::new();
        entries.reverse();
        entries.retain(|e| seen.insert((e.tenant.clone(), e.address.clone())));
        entries.reverse();
        let n = entries.len();
        self.0
            .add(entries)
            .await
            .map_err(|e| SinkError(format!("cannot store suppressions: {e}")))?;
        if n > 0 {
            metrics::counter!("postroad_suppressions_added_total").increment(n as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use postroad_queue::{Envelope, Recipient, Reply};

    use super::*;

    fn event(kind: EventKind, reason: Option<&str>) -> DeliveryEvent {
        let mut envelope = Envelope::new(
            "app@src.test",
            vec![Recipient::new("Ann@Example.COM")],
            std::net::IpAddr::from([127, 0, 0, 1]),
        );
        envelope.meta.tenant = Some("acme".into());
        DeliveryEvent {
            reason: reason.map(String::from),
            reply: Some(Reply::owned(550, None, "5.1.1 no such user").into()),
            ..DeliveryEvent::new(kind, &envelope, &envelope.recipients[0], 1_000)
        }
    }

    #[test]
    fn events_list_what_they_say_about_the_address() {
        let hard = entry_for(&event(EventKind::Bounced, Some("userunknown")), 60).unwrap();
        assert_eq!(
            (hard.tenant.as_str(), hard.address.as_str(), hard.reason),
            ("acme", "ann@example.com", Reason::HardBounce)
        );
        assert_eq!((hard.expires_at_ms, hard.source.as_str()), (None, "bounce"));
        assert!(hard.detail.contains("no such user"), "{}", hard.detail);

        let soft = entry_for(&event(EventKind::Bounced, Some("mailboxfull")), 60).unwrap();
        assert_eq!(
            (soft.reason, soft.expires_at_ms),
            (Reason::SoftBounce, Some(61_000))
        );
        assert!(soft.active(60_999) && !soft.active(61_000));

        let complaint = entry_for(&event(EventKind::Complained, Some("abuse")), 60).unwrap();
        assert_eq!(
            (complaint.reason, complaint.source.as_str()),
            (Reason::Complaint, "complaint")
        );
        let gone = entry_for(&event(EventKind::Unsubscribed, None), 60).unwrap();
        assert_eq!(gone.reason, Reason::Unsubscribe);

        // About the sender, not the address; or not a failure at all.
        for (kind, reason) in [
            (EventKind::Bounced, Some("blocked")),
            (EventKind::Bounced, Some("policyviolation")),
            (EventKind::Bounced, None),
            (EventKind::Deferred, Some("userunknown")),
            (EventKind::Delivered, None),
            (EventKind::Opened, None),
        ] {
            assert_eq!(
                entry_for(&event(kind, reason), 60),
                None,
                "{kind:?} {reason:?}"
            );
        }
    }
}
