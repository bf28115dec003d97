//! Inbound reports: bounces, delay warnings and complaints that reach a bounce domain
//! (by SMTP, or `POST /v1/inbound`) become events of the message and recipient they
//! are about. Which ones is told by the return path's VERP token, found in the
//! envelope recipient or quoted in the report (a feedback loop's report carries the
//! original's `Return-Path:`), and checked by its MAC against the message's
//! recipients as the history knows them, so a report whose body names nobody still
//! maps back, and a made-up address maps to nothing. What the report says (reason,
//! codes, the remote text) comes from the bounce classifier.
//!
//! The events are recorded durably in the queue (the spool's outbox, or the events
//! topic) before the report is acknowledged; when the history cannot be asked or the
//! queue cannot record, the report is refused with a temporary error so that its
//! sender tries again: nothing is lost.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use postroad_bounce::verp::{ReturnPaths, Token};
use postroad_bounce::{Analysis, Kind, Reason, Recipient as Reported};
use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Queue, Reply, Response, unix_ms,
};

/// Most return paths of one report that are looked at.
const MAX_TOKENS: usize = 8;

/// A recipient of a message as the history knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRecipient {
    pub recipient: String,
    pub sender: String,
    pub meta: Metadata,
}

/// Why the history could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Where the recipients of a sent message are found (the history).
#[async_trait]
pub trait MessageLookup: Send + Sync {
    /// The message's recipients; empty when it is unknown (or archived).
    async fn recipients(&self, id: MessageId) -> Result<Vec<KnownRecipient>, LookupError>;
}

/// Why a report was not taken; its sender should try again later.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot look the message up: {0}")]
    Lookup(#[from] LookupError),
    #[error("cannot record the events: {0}")]
    Queue(#[from] postroad_queue::QueueError),
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// Events recorded (bounced, deferred, complained).
    pub recorded: usize,
    /// Return paths whose MAC named no recipient of their message (made up, or for
    /// a message the history no longer has).
    pub unverified: usize,
    /// Reports that carried none of our return paths, or that say nothing to act on
    /// (an auto-reply, a delivery or relay notice, a message that is no report).
    pub ignored: usize,
}

/// Turns reports into events.
pub struct Reports {
    paths: Arc<ReturnPaths>,
    queue: Arc<dyn Queue>,
    lookup: Arc<dyn MessageLookup>,
}

impl Reports {
    pub fn new(
        paths: Arc<ReturnPaths>,
        queue: Arc<dyn Queue>,
        lookup: Arc<dyn MessageLookup>,
    ) -> Self {
        Self {
            paths,
            queue,
            lookup,
        }
    }

    /// Whether mail for `address` is a report (an address at a bounce domain).
    pub fn accepts(&self, address: &str) -> bool {
        self.paths.is_report_address(address)
    }

    /// Reads one report sent to `recipients` (envelope recipients at the bounce
    /// domains; may be empty over HTTP) and records its events.
    pub async fn receive(
        &self,
        recipients: &[String],
        raw: &[u8],
    ) -> Result<Received, IntakeError> {
        let analysis = postroad_bounce::analyse(raw);
        let mut tokens: Vec<Token> = recipients
            .iter()
            .filter(|r| self.paths.is_report_address(r))
            .filter_map(|r| self.paths.verp().token(r))
            .collect();
        for token in self.paths.tokens_in(raw, MAX_TOKENS) {
            if !tokens.contains(&token) && tokens.len() < MAX_TOKENS {
                tokens.push(token);
            }
        }
        let mut received = Received::default();
        if tokens.is_empty() || analysis.kind == Kind::AutoReply {
            received.ignored = 1;
            count(&analysis, "ignored");
            tracing::info!(kind = ?analysis.kind, tokens = tokens.len(), "report ignored: none of our return paths, or nothing to act on");
            return Ok(received);
        }
        let now = unix_ms(SystemTime::now());
        let mut events = Vec::new();
        for token in &tokens {
            let id = MessageId::from_u128(token.message_id);
            let known = self.lookup.recipients(id).await?;
            let Some(target) = self.target(token, &known, &analysis) else {
                received.unverified += 1;
                tracing::warn!(%id, "report names a return path no recipient of the message has");
                continue;
            };
            // A bounce that names nobody is about the recipient its return path names.
            let about = if analysis.recipients.is_empty() {
                Cow::Owned(postroad_bounce::analyse_for(raw, &target.recipient))
            } else {
                Cow::Borrowed(&analysis)
            };
            let detail = about
                .recipients
                .iter()
                .find(|r| r.recipient.eq_ignore_ascii_case(&target.recipient))
                .or_else(|| about.recipients.first());
            match detail.and_then(|d| event(id, &target, d, about.kind, now)) {
                Some(event) => events.push(event),
                None => received.ignored += 1,
            }
        }
        if !events.is_empty() {
            self.queue.record(events.clone()).await?;
        }
        received.recorded = events.len();
        for e in &events {
            tracing::info!(id = %e.message_id, to = %e.recipient, kind = %e.kind, reason = e.reason.as_deref().unwrap_or("-"), "report recorded");
        }
        count(
            &analysis,
            if events.is_empty() {
                "unmatched"
            } else {
                "recorded"
            },
        );
        Ok(received)
    }

    /// The recipient `token` names: one of the message's known recipients, or one the
    /// report itself names (a message the history no longer has).
    fn target(
        &self,
        token: &Token,
        known: &[KnownRecipient],
        analysis: &Analysis,
    ) -> Option<KnownRecipient> {
        let verp = self.paths.verp();
        known
            .iter()
            .find(|k| verp.names(token, &k.recipient))
            .cloned()
            .or_else(|| {
                analysis
                    .recipients
                    .iter()
                    .find(|r| verp.names(token, &r.recipient))
                    .map(|r| KnownRecipient {
                        recipient: r.recipient.clone(),
                        sender: String::new(),
                        meta: Metadata::default(),
                    })
            })
    }
}

/// The event a report's recipient gives, if any: a bounce, a delay warning
/// (`deferred`), a complaint; nothing for a delivery or relay notice.
fn event(
    id: MessageId,
    target: &KnownRecipient,
    detail: &Reported,
    kind: Kind,
    at_ms: u64,
) -> Option<DeliveryEvent> {
    let (kind, reason) = match kind {
        Kind::Complaint => (
            EventKind::Complained,
            detail
                .feedbacktype
                .clone()
                .unwrap_or_else(|| "abuse".into()),
        ),
        Kind::Bounce => match detail.action.as_deref() {
            Some("delivered" | "relayed" | "expanded") => return None,
            _ if detail.reason == Reason::Delivered => return None,
            Some("delayed") => (EventKind::Deferred, detail.reason.as_str().to_string()),
            _ => (EventKind::Bounced, detail.reason.as_str().to_string()),
        },
        Kind::AutoReply | Kind::Other => return None,
    };
    let domain = target
        .recipient
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    Some(DeliveryEvent {
        event_id: uuid::Uuid::now_v7(),
        kind,
        message_id: id,
        sender: target.sender.clone(),
        recipient: target.recipient.clone(),
        domain,
        at_ms,
        attempt: 0,
        remote_host: detail.remote_mta.clone(),
        reply: reply(detail),
        meta: target.meta.clone(),
        provider_message_id: None,
        reason: Some(reason),
    })
}

/// The remote's words as a reply: its reply code, status and text when it gave a
/// code, else a status and text without one.
fn reply(detail: &Reported) -> Option<Response> {
    let enhanced = EnhancedCode::parse(&detail.deliverystatus);
    let text = detail.diagnostic.clone();
    match detail.replycode.parse::<u16>() {
        Ok(code) if (200..600).contains(&code) => {
            Some(Response::Remote(Reply::owned(code, enhanced, text)))
        }
        _ => enhanced.map(|e| Response::local(e, text)),
    }
}

fn count(analysis: &Analysis, result: &'static str) {
    let kind = match analysis.kind {
        Kind::Bounce => "bounce",
        Kind::Complaint => "complaint",
        Kind::AutoReply => "autoreply",
        Kind::Other => "other",
    };
    metrics::counter!("postroad_reports_total", "kind" => kind, "result" => result).increment(1);
}
