//! One row per (message, recipient): the recipient's current status, and how a batch
//! of events folds into it.
//!
//! The status only moves forward: [`rank`] orders the statuses, and an event of a
//! lower rank than the stored one (a `deferred` arriving after `delivered`, from a
//! replay or a reordered consumer) changes nothing but the attempt count. Between
//! events of the same rank the later one wins.

use std::collections::HashMap;

use postroad_queue::{DeliveryEvent, EventKind, MessageId, Metadata, Response};
use serde::Serialize;

/// The current status of one recipient of one message (a row of `email_history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientStatus {
    /// The row's id: with `sent_at_ms`, the position of pagination cursors.
    #[serde(skip)]
    pub id: i64,
    pub message_id: MessageId,
    pub recipient: String,
    /// When the message was accepted (the time in its UUIDv7 id), Unix ms.
    pub sent_at_ms: u64,
    pub status: EventKind,
    /// When the current status was reached, Unix ms.
    pub status_at_ms: u64,
    pub attempts: u32,
    pub sender: String,
    pub domain: String,
    /// The server and reply behind the current status: none for an open, a click or
    /// a complaint (the event log keeps the delivery's).
    pub remote_host: Option<String>,
    pub reply: Option<Response>,
    pub meta: Metadata,
    /// The id the provider that accepted the message gave it (SES, SendGrid).
    pub provider_message_id: Option<String>,
    /// Why the current status (see [`postroad_queue::DeliveryEvent::reason`]).
    pub reason: Option<String>,
}

/// Orders statuses: a stored status is replaced only by one of the same or a higher
/// rank. Final outcomes outrank `delivered`, so a bounce reported after a `250`
/// (an asynchronous DSN) is what the recipient's row shows. What the recipient did
/// outranks them all (an open proves the mail arrived, whatever a DSN said), and a
/// complaint outranks an open or a click. A suppressed recipient was never sent to: it
/// ranks with the other final outcomes; an unsubscribe is the last word.
pub fn rank(kind: EventKind) -> u8 {
    match kind {
        EventKind::Queued => 0,
        EventKind::Deferred => 1,
        EventKind::Delivered => 2,
        EventKind::Bounced | EventKind::Expired | EventKind::Suppressed => 3,
        EventKind::Opened => 4,
        EventKind::Clicked => 5,
        EventKind::Complained => 6,
        EventKind::Unsubscribed => 7,
    }
}

/// When message `id` was accepted: the Unix milliseconds in its UUIDv7. Ids without
/// a time (not made by Postroad) count as 0, the Unix epoch, so every event of a
/// message agrees on it whatever its own time.
pub fn sent_at_ms(id: MessageId) -> u64 {
    let bits = id.as_u128();
    let version = (bits >> 76) & 0xf;
    if version == 7 { (bits >> 80) as u64 } else { 0 }
}

/// What a batch changes in one recipient's row: the winning event (highest rank,
/// then latest) and the most attempts seen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusUpdate<'a> {
    pub event: &'a DeliveryEvent,
    /// The winning event's position in the batch.
    pub index: usize,
    pub attempts: u32,
}

impl StatusUpdate<'_> {
    pub fn rank(&self) -> u8 {
        rank(self.event.kind)
    }
}

/// Folds `events` into one update per (message, recipient), in order of first
/// appearance, so a batch writes each row once.
pub(crate) fn fold(events: &[DeliveryEvent]) -> Vec<StatusUpdate<'_>> {
    let mut slots: HashMap<(MessageId, &str), usize> = HashMap::with_capacity(events.len());
    let mut updates: Vec<StatusUpdate<'_>> = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        match slots.entry((event.message_id, event.recipient.as_str())) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(updates.len());
                updates.push(StatusUpdate {
                    event,
                    index,
                    attempts: event.attempt,
                });
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                let update = &mut updates[*slot.get()];
                update.attempts = update.attempts.max(event.attempt);
                if wins(event, update.event) {
                    update.event = event;
                    update.index = index;
                }
            }
        }
    }
    updates
}

/// Whether `new` replaces `old` as a recipient's status.
fn wins(new: &DeliveryEvent, old: &DeliveryEvent) -> bool {
    (rank(new.kind), new.at_ms) >= (rank(old.kind), old.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        id: MessageId,
        rcpt: &str,
        kind: EventKind,
        at_ms: u64,
        attempt: u32,
    ) -> DeliveryEvent {
        DeliveryEvent {
            event_id: uuid::Uuid::now_v7(),
            kind,
            message_id: id,
            sender: "a@example.com".into(),
            recipient: rcpt.into(),
            domain: "example.net".into(),
            at_ms,
            attempt,
            remote_host: None,
            reply: None,
            meta: Metadata::default(),
            provider_message_id: None,
            reason: None,
        }
    }

    #[test]
    fn the_time_of_a_message_is_the_time_in_its_id() {
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let id = MessageId::new();
        let after = chrono::Utc::now().timestamp_millis() as u64;
        assert!((before..=after).contains(&sent_at_ms(id)));
        assert_eq!(sent_at_ms(MessageId::from_u128(12345)), 0);
    }

    #[test]
    fn a_batch_folds_to_the_highest_rank_then_the_latest() {
        let m = MessageId::new();
        let events = vec![
            event(m, "bob@example.net", EventKind::Queued, 10, 0),
            event(m, "eve@example.net", EventKind::Queued, 10, 0),
            event(m, "bob@example.net", EventKind::Deferred, 20, 1),
            event(m, "bob@example.net", EventKind::Delivered, 30, 2),
            // Reordered: an older deferral arrives after the delivery.
            event(m, "bob@example.net", EventKind::Deferred, 25, 3),
            event(m, "eve@example.net", EventKind::Deferred, 40, 1),
            event(m, "eve@example.net", EventKind::Deferred, 50, 2),
        ];
        let updates = fold(&events);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].event.recipient, "bob@example.net");
        assert_eq!(updates[0].event.kind, EventKind::Delivered);
        assert_eq!(updates[0].index, 3);
        assert_eq!(updates[0].attempts, 3);
        assert_eq!(updates[1].event.kind, EventKind::Deferred);
        assert_eq!(updates[1].event.at_ms, 50);
        assert_eq!(updates[1].index, 6);
        assert_eq!(updates[1].attempts, 2);
    }

    #[test]
    fn final_outcomes_outrank_delivery_and_delivery_outranks_deferral() {
        assert!(rank(EventKind::Queued) < rank(EventKind::Deferred));
        assert!(rank(EventKind::Deferred) < rank(EventKind::Delivered));
        assert!(rank(EventKind::Delivered) < rank(EventKind::Bounced));
        assert_eq!(rank(EventKind::Bounced), rank(EventKind::Expired));
        assert!(rank(EventKind::Bounced) < rank(EventKind::Opened));
        assert!(rank(EventKind::Opened) < rank(EventKind::Clicked));
        assert!(rank(EventKind::Clicked) < rank(EventKind::Complained));
    }
}
