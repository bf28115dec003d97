//! An outbox in memory, for backends whose durable outbox is elsewhere (Kafka: the
//! events topic): it numbers events for the in-process sinks and forgets them once
//! taken. Bounded: past [`MAX_HELD`] events the oldest are dropped with a warning and
//! counted in [`MemoryOutbox::dropped`]; the events topic still has them (when
//! `kafka.publish_events` is on), the in-process sinks do not.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::DeliveryEvent;

/// Most events held for sinks that have not taken them.
pub const MAX_HELD: usize = 200_000;

pub(crate) struct MemoryOutbox {
    held: Mutex<Held>,
    committed: watch::Sender<u64>,
}

#[derive(Default)]
struct Held {
    /// The number of the last event added.
    last: u64,
    events: VecDeque<(u64, DeliveryEvent)>,
    dropped: u64,
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
            committed: watch::Sender::new(0),
        }
    }
}

impl MemoryOutbox {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, events: impl IntoIterator<Item = DeliveryEvent>) {
        let last = {
            let mut held = self.held();
            for event in events {
                held.last += 1;
                let seq = held.last;
                held.events.push_back((seq, event));
            }
            let excess = held.events.len().saturating_sub(MAX_HELD);
            if excess > 0 {
                held.events.drain(..excess);
                held.dropped += excess as u64;
                tracing::warn!(
                    dropped = excess,
                    "in-process event sinks are too far behind; oldest events dropped from memory (the events topic has them)"
                );
            }
            held.last
        };
        self.committed.send_replace(last);
    }

    pub(crate) fn after(&self, after: u64, max: usize) -> Vec<(u64, DeliveryEvent)> {
        let held = self.held();
        let start = held.events.partition_point(|(seq, _)| *seq <= after);
        held.events.range(start..).take(max).cloned().collect()
    }

    pub(crate) fn taken(&self, upto: u64) {
        let mut held = self.held();
        let end = held.events.partition_point(|(seq, _)| *seq <= upto);
        held.events.drain(..end);
    }

    /// Events dropped because the in-process sinks were too far behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.held().dropped
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }
}
