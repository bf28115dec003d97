//! Postroad's queue: the message envelope, the [`Queue`] interface every backend
//! implements, and the embedded on-disk [`spool`].
//!
//! Ingress calls [`Queue::enqueue`] and acknowledges the client only after it returns;
//! relay workers [`Queue::claim`] ready work and resolve each claimed message with
//! [`Queue::ack`], [`Queue::defer`] or [`Queue::dead_letter`].

mod envelope;
mod event;
pub mod spool;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use event::{DeliveryEvent, EventKind, RemoteReply};
pub use envelope::{DsnRet, Envelope, MessageId, Notify, Recipient};
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
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

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

/// The interface both queue backends (embedded spool, Kafka) implement.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores a message; when this returns `Ok` the message is durable (fsync'd, or
    /// acknowledged by the broker) and the client may be told so.
    async fn enqueue(&self, envelope: Envelope, body: Bytes) -> Result<()>;

    /// Hands out up to `max` messages whose due time has come and that nobody holds.
    async fn claim(&self, max: usize) -> Result<Vec<Claimed>>;

    /// The message is resolved for every recipient (delivered or bounced): forget it.
    async fn ack(&self, id: MessageId) -> Result<()>;

    /// Some recipients need another attempt: keep the message with the recipients still
    /// pending (as given in `envelope`) and make it ready again at `until`.
    async fn defer(&self, envelope: Envelope, until: SystemTime) -> Result<()>;

    /// Moves a message to the dead-letter store, with the reason.
    async fn dead_letter(&self, id: MessageId, reason: String) -> Result<()>;

    /// Called once at start: releases claims from a previous run and counts what is held.
    async fn recover(&self) -> Result<RecoveryReport>;

    /// Counts of queued, ready, deferred, claimed and dead-lettered messages.
    async fn stats(&self) -> Result<QueueStats>;
}

/// Unix milliseconds of a [`SystemTime`] (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
