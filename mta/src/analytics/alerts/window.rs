//! The last few minutes of events, in slots of [`SLOT_MS`] by the events' own time,
//! so alert rules see a sliding window: each evaluation sums the current, partly
//! filled slot and the whole slots before it that the window's width covers, so
//! what is summed spans at least the width and at most one slot more.

use std::collections::VecDeque;

use postroad_queue::DeliveryEvent;

use crate::analytics::counts::{Counts, Latency};

/// Width of one slot, and how often rules are evaluated.
pub const SLOT_MS: u64 = 10_000;

#[derive(Debug, Default)]
struct Slot {
    index: u64,
    counts: Counts,
    latency: Latency,
}

/// What a window holds, summed.
#[derive(Debug, Default)]
pub struct Totals {
    pub counts: Counts,
    pub latency: Latency,
}

#[derive(Debug)]
pub struct Window {
    slots: usize,
    /// Ordered by slot index, oldest first.
    ring: VecDeque<Slot>,
}

impl Window {
    /// A window of `width_ms` (rounded up to whole slots).
    pub fn new(width_ms: u64) -> Self {
        Self {
            slots: width_ms.div_ceil(SLOT_MS).max(1) as usize,
            ring: VecDeque::new(),
        }
    }

    /// Counts `event` in its slot. Events older than the window at `now_ms`, or
    /// from further in the future than its width (a clock gone wrong), are ignored.
    pub fn record(&mut self, event: &DeliveryEvent, now_ms: u64) {
        let index = event.at_ms / SLOT_MS;
        let now = now_ms / SLOT_MS;
        let width = self.slots as u64;
        if index + width < now || index > now + width {
            return;
        }
        let at = match self.ring.iter().rposition(|s| s.index <= index) {
            Some(i) if self.ring[i].index == index => i,
            Some(i) => {
                self.ring.insert(
                    i + 1,
                    Slot {
                        index,
                        ..Slot::default()
                    },
                );
                i + 1
            }
            None => {
                self.ring.push_front(Slot {
                    index,
                    ..Slot::default()
                });
                0
            }
        };
        let slot = &mut self.ring[at];
        slot.counts.add(event.kind, 1);
        slot.latency.record(event);
    }

    /// The sums of the slots inside the window ending at `now_ms`; older slots go.
    pub fn totals(&mut self, now_ms: u64) -> Totals {
        let now = now_ms / SLOT_MS;
        let width = self.slots as u64;
        while self.ring.front().is_some_and(|s| s.index + width < now) {
            self.ring.pop_front();
        }
        let mut totals = Totals::default();
        for slot in self.ring.iter().filter(|s| s.index <= now) {
            totals.counts.merge(&slot.counts);
            totals.latency.merge(&slot.latency);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, EventKind, Recipient};

    fn at(kind: EventKind, at_ms: u64) -> DeliveryEvent {
        let envelope = Envelope::new(
            "s@example.com",
            vec![Recipient::new("u@example.net")],
            "192.0.2.1".parse().unwrap(),
        );
        DeliveryEvent::new(kind, &envelope, &envelope.recipients[0], at_ms)
    }

    #[test]
    fn the_window_slides_by_the_events_time() {
        let t0 = 1_000_000 * SLOT_MS;
        let mut w = Window::new(60_000);
        w.record(&at(EventKind::Delivered, t0), t0);
        w.record(&at(EventKind::Delivered, t0 + 15_000), t0 + 15_000);
        // Late: recorded in its own, older slot.
        w.record(&at(EventKind::Bounced, t0 + 5_000), t0 + 20_000);
        // Too old, and from too far ahead.
        w.record(&at(EventKind::Bounced, t0 - 50_000), t0 + 20_000);
        w.record(&at(EventKind::Bounced, t0 + 90_000), t0 + 20_000);
        let totals = w.totals(t0 + 20_000);
        assert_eq!(totals.counts.get(EventKind::Delivered), 2);
        assert_eq!(totals.counts.get(EventKind::Bounced), 1);
        // A minute on, the first slot is still a whole minute old: in the window.
        let totals = w.totals(t0 + 60_000);
        assert_eq!(totals.counts.get(EventKind::Delivered), 2);
        // Ten seconds later it has left; the second slot has not.
        let totals = w.totals(t0 + 70_000);
        assert_eq!(totals.counts.get(EventKind::Delivered), 1);
        assert_eq!(totals.counts.get(EventKind::Bounced), 0);
        assert!(w.totals(t0 + 120_000).counts.is_empty());
    }
}
