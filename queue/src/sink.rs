//! Where events go: the [`EventSink`] interface every consumer of events implements
//! (the history now; metrics, webhooks and suppression next), fed by [`crate::fanout`].

use std::time::Duration;

use async_trait::async_trait;

use crate::DeliveryEvent;

/// A sink could not take a batch; it is offered again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// A consumer of events.
///
/// Batches come in event order. A batch that fails is offered again (after a
/// backoff) until it is taken, and after a restart a sink may see events it already
/// took: writes must be idempotent by [`DeliveryEvent::event_id`].
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Names the sink in logs.
    fn name(&self) -> &'static str;

    /// How the sink wants its batches.
    fn batching(&self) -> Batching {
        Batching::default()
    }

    /// Takes a batch; `Ok` only once the sink holds the events durably (for a sink
    /// that holds anything): then they may be removed from the outbox.
    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError>;
}

/// Batch size and patience of one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most events per [`EventSink::write`], except that the events of one queue
    /// commit are never split (a commit with more is one larger batch).
    pub max_batch: usize,
    /// How long to wait for a batch to fill when fewer events are waiting (zero: write
    /// at once).
    pub linger: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            linger: Duration::ZERO,
        }
    }
}
