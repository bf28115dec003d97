//! Postroad's queue: the message envelope, the [`Queue`] interface every backend
//! implements, and the embedded on-disk [`spool`].
//!
//! Ingress calls [`Queue::enqueue`] and acknowledges the client only after it returns;
//! relay workers [`Queue::claim`] ready work and resolve each claimed message with
//! [`Queue::ack`], [`Queue::defer`] or [`Queue::dead_letter`].

mod envelope;
mod event;
pub mod fanout;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
mod memory_outbox;
pub mod metadata;
pub mod sink;
pub mod spool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use envelope::{DsnRet, Envelope, MessageId, Notify, Recipient};
pub use event::{DeliveryEvent, EventKind};
pub use fanout::Fanout;
pub use metadata::{Metadata, MetadataError, Priority};
pub use sink::{Batching, EventSink, SinkError};
pub use smtp_wire::{EnhancedCode, LocalReason, Reply, Response};
pub use spool::{Spool, SpoolConfig, SpoolMetrics};

/// Everything that can go wrong in a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("corrupt record for message {id}: {reason}")]
    Corrupt { id: MessageId, reason: String },
    #[error("message {0} is not in the queue")]
    NotFound(MessageId),
    #[error("message {0} is not claimed by this worker")]
    NotClaimed(MessageId),
    #[error("the queue is shutting down")]
    ShuttingDown,
    #[error("spool at {} is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error("invalid queue configuration: {0}")]
    Config(String),
    /// The backend cannot store messages right now (broker unreachable, buffer full);
    /// clients should try again later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The message does not fit in one queue record.
    #[error("message of {size} bytes is larger than the queue's record limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The backend does not offer this operation.
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Helpers for tests of code that uses the queue (not part of the API).
#[doc(hidden)]
pub mod testing {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use tokio::task::JoinHandle;

    /// Spawns `fut` and returns once its first poll has run: a queue operation has then
    /// been handed to the backend (the spool's writer channel had room), so operations
    /// started later are queued behind it.
    pub async fn start<F>(fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (sent, started) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut fut = pin!(fut);
            let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            let _ = sent.send(());
            match first {
                Poll::Ready(out) => out,
                Poll::Pending => fut.await,
            }
        });
        let _ = started.await;
        task
    }
}

/// The spool's record decoders, for the fuzz targets in `fuzz/` only: not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::spool::tables;
    use crate::{DeadLetter, Envelope, MessageId, Result};

    pub fn encode_envelope(envelope: &Envelope, due_ms: u64) -> Result<Vec<u8>> {
        tables::encode_envelope(envelope, due_ms)
    }

    pub fn decode_due(id: MessageId, record: &[u8]) -> Result<u64> {
        tables::decode_due(id, record)
    }

    pub fn decode_envelope(id: MessageId, record: &[u8]) -> Result<(u64, Envelope)> {
        tables::decode_envelope(id, record)
    }

    pub fn encode_dead_letter(dead: &DeadLetter) -> Result<Vec<u8>> {
        tables::encode_dead_letter(dead)
    }

    pub fn decode_dead_letter(id: MessageId, record: &[u8]) -> Result<DeadLetter> {
        tables::decode_dead_letter(id, record)
    }
}

/// A message handed to a worker by [`Queue::claim`]: its envelope and body.
///
/// The claim lasts until the worker resolves it, or until the process restarts
/// (recovery makes every unresolved message ready again: delivery is at least once).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub envelope: Envelope,
    pub body: Bytes,
}

/// Why a message was moved to the dead-letter store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub envelope: Envelope,
    /// Unix milliseconds at which the message was dead-lettered.
    pub at_ms: u64,
    pub reason: String,
}

/// What [`Queue::recover`] found at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Messages waiting for delivery (ready now or deferred to a later time).
    pub queued: u64,
    /// Messages in the dead-letter store.
    pub dead_letters: u64,
}

/// Counts of what the queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub queued: u64,
    pub ready: u64,
    pub deferred: u64,
    pub claimed: u64,
    pub dead_letters: u64,
}

/// How a claimed message is resolved, in one atomic change.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// The message with the recipients still to try (attempt counts updated), and when
    /// to try again; `None` when no recipient is left to try.
    pub retry: Option<(Envelope, SystemTime)>,
    /// Recipients that failed for good (bounced or expired) and why: kept in the
    /// dead-letter store, with the body, for an operator to inspect, requeue or purge.
    pub dead: Option<(Vec<Recipient>, String)>,
    /// What happened to each recipient: recorded with the change, in the same
    /// transaction (see [`Queue::events_after`]).
    pub events: Vec<DeliveryEvent>,
}

/// The `queued` events of a message just accepted: one per recipient.
pub fn queued_events(envelope: &Envelope) -> Vec<DeliveryEvent> {
    envelope
        .recipients
        .iter()
        .map(|r| DeliveryEvent::new(EventKind::Queued, envelope, r, envelope.received_at_ms))
        .collect()
}

/// A metric a backend exports (rendered on the admin endpoint's `/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A named position stored with a batch of messages (how far a campaign's expansion
/// got), set to `value`; `previous` is what it was before (restored if the write
/// fails after reaching the disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub name: String,
    pub value: u64,
    pub previous: Option<u64>,
}

/// The interface both queue backends (embedded spool, Kafka) implement.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores a message, with a `queued` event per recipient; when this returns `Ok`
    /// both are durable (fsync'd, or acknowledged by the broker) and the client may be
    /// told so.
    async fn enqueue(&self, envelope: Envelope, body: Bytes) -> Result<()>;

    /// Stores several messages (distinct ids) in one durable write, each with its
    /// `queued` events; `Ok` means every one is durable. The spool commits them in one
    /// transaction (one fsync; on error none is stored). Backends without transactions
    /// store them one by one (Kafka: produced concurrently): on error some may be
    /// stored, and are then delivered, as after a lost SMTP reply.
    async fn enqueue_many(&self, messages: Vec<(Envelope, Bytes)>) -> Result<()> {
        for (envelope, body) in messages {
            self.enqueue(envelope, body).await?;
        }
        Ok(())
    }

    /// Stores `messages` as [`Queue::enqueue_many`] does, and sets the named position
    /// `checkpoint` in the same durable write where the backend can (the spool: one
    /// transaction, so after a crash the checkpoint says exactly which messages are
    /// stored). Backends that cannot only store the messages, and
    /// [`Queue::checkpoint`] answers `None` there.
    async fn enqueue_checkpointed(
        &self,
        messages: Vec<(Envelope, Bytes)>,
        checkpoint: Checkpoint,
    ) -> Result<()> {
        let _ = checkpoint;
        self.enqueue_many(messages).await
    }

    /// The value a checkpoint was last set to by [`Queue::enqueue_checkpointed`];
    /// `None` if it never was, was cleared, or the backend keeps none.
    async fn checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let _ = name;
        Ok(None)
    }

    /// Forgets a checkpoint (its work is done).
    async fn clear_checkpoint(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }

    /// Hands out up to `max` messages whose due time has come and that nobody holds:
    /// `high` ones first, then `normal`, then `bulk` where the backend keeps lanes.
    async fn claim(&self, max: usize) -> Result<Vec<Claimed>>;

    /// As [`Queue::claim`], but no `bulk` message: what the relay asks while bulk mail
    /// holds its share of the deliveries in flight. Backends without lanes claim as
    /// usual.
    async fn claim_urgent(&self, max: usize) -> Result<Vec<Claimed>> {
        self.claim(max).await
    }

    /// Resolves a claimed message (see [`Resolution`]); with neither retry nor dead
    /// recipients, the message is simply done and forgotten.
    async fn resolve(&self, id: MessageId, resolution: Resolution) -> Result<()>;

    /// The message is done for every recipient (delivered or reported): forget it.
    async fn ack(&self, id: MessageId) -> Result<()> {
        self.resolve(id, Resolution::default()).await
    }

    /// Tries the recipients in `envelope` again at `until`.
    async fn defer(&self, envelope: Envelope, until: SystemTime) -> Result<()> {
        let id = envelope.id;
        self.resolve(
            id,
            Resolution {
                retry: Some((envelope, until)),
                ..Resolution::default()
            },
        )
        .await
    }

    /// Moves every recipient of a claimed message to the dead-letter store.
    async fn dead_letter(&self, envelope: &Envelope, reason: String) -> Result<()> {
        self.resolve(
            envelope.id,
            Resolution {
                dead: Some((envelope.recipients.clone(), reason)),
                ..Resolution::default()
            },
        )
        .await
    }

    /// Records events that no change of a queued message brings (an asynchronous
    /// bounce, a complaint, a provider's report): when this returns `Ok` they are
    /// durable, as a resolution's are, and reach every sink.
    async fn record(&self, events: Vec<DeliveryEvent>) -> Result<()>;

    /// The events recorded by enqueues and resolutions that the sinks have not all
    /// taken yet, numbered after `after` (0: from the first), in order, at most `max`.
    /// The embedded spool keeps them in its outbox table across restarts.
    async fn events_after(&self, after: u64, max: usize) -> Result<Vec<(u64, DeliveryEvent)>>;

    /// Every durable sink has the events numbered up to `upto`: forget them.
    async fn events_taken(&self, upto: u64) -> Result<()>;

    /// The number of the last event recorded durably; changes as events are recorded.
    fn events_committed(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Backend-specific gauges (e.g. Kafka consumer lag per partition).
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }

    /// Notified when claimable messages arrive, for backends that learn of new work
    /// on their own (the Kafka consumer); `None` when the caller must poll.
    fn ready_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// The largest message body the backend can store, when it is smaller than any
    /// configured SMTP limit would be (Kafka's record size).
    fn max_message_size(&self) -> Option<usize> {
        None
    }

    /// Whether the backend answers now (its storage, or a broker), for readiness probes;
    /// why not. Should answer within a couple of seconds.
    async fn check(&self) -> Result<()> {
        self.stats().await.map(|_| ())
    }

    /// Called once at start: releases claims from a previous run and counts what is held.
    async fn recover(&self) -> Result<RecoveryReport>;

    /// Counts of queued, ready, deferred, claimed and dead-lettered messages.
    async fn stats(&self) -> Result<QueueStats>;

    /// A queued message (not a dead letter) by id, claimed or not.
    async fn get(&self, id: MessageId) -> Result<Option<(Envelope, Bytes)>>;

    /// Up to `limit` queued messages' envelopes, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<Envelope>>;

    /// Makes every deferred message due now; returns how many were deferred.
    async fn flush(&self) -> Result<u64>;

    /// Up to `limit` dead letters, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// A dead letter with its body.
    async fn get_dead_letter(&self, id: MessageId) -> Result<Option<(DeadLetter, Bytes)>>;

    /// Queues a dead letter's recipients again, due now, with fresh attempt counts and
    /// the maximum age counted from now; returns the id it is queued under.
    async fn requeue_dead_letter(&self, id: MessageId) -> Result<MessageId>;

    /// Deletes a dead letter for good.
    async fn purge_dead_letter(&self, id: MessageId) -> Result<()>;
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-12-07T09:30:00.000Z`).
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix milliseconds of a [`SystemTime`] (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
