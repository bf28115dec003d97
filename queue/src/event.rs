//! Delivery events: every state change of one recipient of one message.
//!
//! Relay workers emit them; the history writer, metrics and (later) webhooks consume
//! them. Each event has its own time-ordered id so consumers can be idempotent: a
//! replayed event (at-least-once delivery) is recognised by `event_id`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use smtp_wire::Response;

use crate::{Envelope, MessageId, Metadata, Recipient};

/// What happened to a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Accepted into the queue.
    Queued,
    /// The receiving server accepted it (2xx).
    Delivered,
    /// A temporary failure; another attempt is scheduled.
    Deferred,
    /// A permanent failure (5xx, null MX, ...).
    Bounced,
    /// Still undelivered when the maximum queue age was reached.
    Expired,
    /// The recipient opened it (the tracking pixel was fetched).
    Opened,
    /// The recipient followed a tracked link.
    Clicked,
    /// The recipient reported it as spam (a feedback-loop report or a provider's
    /// complaint notice).
    Complained,
    /// Not sent: the address is on the suppression list (it bounced hard, complained
    /// or unsubscribed before, or an operator put it there), or its campaign was
    /// cancelled (reason `campaign-cancelled`).
    Suppressed,
    /// The recipient asked to receive no more mail of this kind (a provider's
    /// unsubscribe notice).
    Unsubscribed,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Queued,
        EventKind::Delivered,
        EventKind::Deferred,
        EventKind::Bounced,
        EventKind::Expired,
        EventKind::Opened,
        EventKind::Clicked,
        EventKind::Complained,
        EventKind::Suppressed,
        EventKind::Unsubscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Bounced => "bounced",
            EventKind::Expired => "expired",
            EventKind::Opened => "opened",
            EventKind::Clicked => "clicked",
            EventKind::Complained => "complained",
            EventKind::Suppressed => "suppressed",
            EventKind::Unsubscribed => "unsubscribed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// One state change of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    /// Unique and time-ordered (UUIDv7); consumers dedupe by it.
    pub event_id: Uuid,
    pub kind: EventKind,
    pub message_id: MessageId,
    pub sender: String,
    pub recipient: String,
    /// The recipient's domain, lowercased.
    pub domain: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Delivery attempts made for this recipient so far (0 for `queued`).
    pub attempt: u32,
    /// The host that answered (`mx1.example.com [192.0.2.1]:25`), if any.
    pub remote_host: Option<String>,
    /// What decided it: the server's reply, or a local reason (none for `queued`).
    pub reply: Option<Response>,
    /// The message's metadata (user id, email type, tenant, campaign, ...).
    pub meta: Metadata,
    /// The id a provider (SES, SendGrid) gave the message it accepted: what its
    /// webhooks name the message by.
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// Why, in the bounce classifier's words: for `bounced`, `deferred` and `expired`
    /// the reason (`userunknown`, `mailboxfull`, `ratelimited`, `expired`, ...), for
    /// `complained` the feedback type (`abuse`, `fraud`, ...), for `suppressed` the
    /// list's reason (`hard-bounce`, `complaint`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

impl DeliveryEvent {
    /// A new event (new id) of `kind` for `recipient` of `envelope`, happening at
    /// `at_ms`: no attempt, host or reply yet.
    pub fn new(kind: EventKind, envelope: &Envelope, recipient: &Recipient, at_ms: u64) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            kind,
            message_id: envelope.id,
            sender: envelope.sender.clone(),
            recipient: recipient.address.clone(),
            domain: recipient.domain(),
            at_ms,
            attempt: 0,
            remote_host: None,
            reply: None,
            meta: envelope.meta.clone(),
            provider_message_id: None,
            reason: None,
        }
    }
}
