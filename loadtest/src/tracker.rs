//! End-to-end bookkeeping for `loadtest e2e`: which (message, recipient) pairs the MTA
//! acknowledged, which the sink received and how often, and how long each took.
//!
//! Generated recipients are numbered (`userN@domain`, N = (seq - 1) * K + i + 1 for
//! the i-th of K recipients of message `seq`), so one byte per recipient in a dense
//! vector holds everything: whether the MTA accepted it, and how many times the sink
//! got it. The sink may see a delivery before the generator has read the `250` (a
//! fast MTA delivers while its reply is in flight), so acceptance and delivery are
//! recorded independently and reconciled at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::generator::{parse_message_id, parse_recipient};
use crate::mix::DomainMix;
use crate::sink::DeliveryEvent;
use crate::stats::{Latency, LatencySummary};
use crate::timeline::Timeline;

const ACCEPTED: u8 = 0x80;
const COUNT: u8 = 0x7f;

/// Most entries in each sample list of the report.
const SAMPLES: usize = 20;

struct Inner {
    /// Per recipient index (N - 1): ACCEPTED | deliveries (saturating at 127).
    slots: Vec<u8>,
    accepted: u64,
    /// Accepted and not delivered yet.
    outstanding: u64,
    delivered: u64,
    duplicates: u64,
    /// Deliveries of messages from other runs or not made by the generator.
    foreign: u64,
    first_delivery_us: u64,
    last_delivery_us: u64,
    e2e: Latency,
}

/// Shared by the generator's connections and the sink.
pub struct Tracker {
    run_id: u64,
    recipients: u64,
    mix: Arc<DomainMix>,
    timeline: Arc<Timeline>,
    inner: Mutex<Inner>,
}

/// What [`Tracker::finish`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciled {
    /// (message, recipient) pairs the MTA acknowledged.
    pub expected: u64,
    /// Distinct pairs the sink received (acknowledged or not).
    pub delivered: u64,
    /// Acknowledged pairs the sink never received.
    pub lost: u64,
    /// Deliveries beyond the first of a pair.
    pub duplicates: u64,
    /// Pairs delivered although the MTA's acknowledgement never reached the
    /// generator (a connection error after the data, a rejected message): allowed.
    pub delivered_unacknowledged: u64,
    /// Deliveries the generator did not make (another run's leftovers, ...).
    pub foreign: u64,
    /// Submit (`X-Loadtest-Sent-At`) to first delivery, one sample per delivered pair.
    pub e2e_latency_ms: LatencySummary,
    /// Unix microseconds of the first and the last first-delivery (0: none).
    pub first_delivery_us: u64,
    pub last_delivery_us: u64,
    /// A few lost pairs, as "Message-ID recipient".
    pub lost_sample: Vec<String>,
    /// A few duplicated pairs, as "Message-ID recipient (N deliveries)".
    pub duplicate_sample: Vec<String>,
    /// Per recipient domain: [acknowledged, delivered, lost].
    pub by_domain: Vec<DomainCount>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DomainCount {
    pub domain: String,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
}

impl Tracker {
    pub fn new(run_id: u64, recipients: u64, mix: Arc<DomainMix>, timeline: Arc<Timeline>) -> Self {
        Self {
            run_id,
            recipients: recipients.max(1),
            mix,
            timeline,
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                accepted: 0,
                outstanding: 0,
                delivered: 0,
                duplicates: 0,
                foreign: 0,
                first_delivery_us: 0,
                last_delivery_us: 0,
                e2e: Latency::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The MTA acknowledged message `seq` for all its recipients but those whose
    /// positions (0-based, in RCPT order) are in `refused`.
    pub fn accepted(&self, seq: u64, refused: &[u64]) {
        let k = self.recipients;
        let first = (seq.saturating_sub(1) * k) as usize;
        let mut g = self.lock();
        if g.slots.len() < first + k as usize {
            let len = (first + k as usize).max(g.slots.len() * 5 / 4);
            g.slots.resize(len, 0);
        }
        for i in 0..k {
            if refused.contains(&i) {
                continue;
            }
            let slot = &mut g.slots[first + i as usize];
            if *slot & ACCEPTED != 0 {
                continue;
            }
            *slot |= ACCEPTED;
            let undelivered = *slot & COUNT == 0;
            g.accepted += 1;
            if undelivered {
                g.outstanding += 1;
            }
        }
    }

    /// The sink accepted a message; called by the sink for every message.
    pub fn delivered(&self, ev: &DeliveryEvent<'_>) {
        let ids = ev
            .message_id
            .and_then(parse_message_id)
            .filter(|(run, _)| *run == self.run_id);
        let Some((_, seq)) = ids else {
            self.lock().foreign += ev.recipients.len() as u64;
            return;
        };
        let latency = ev
            .sent_at_us
            .map(|s| Duration::from_micros(ev.received_at_us.saturating_sub(s)));
        let k = self.recipients;
        let mut g = self.lock();
        for rcpt in ev.recipients {
            let n = match parse_recipient(rcpt) {
                // it must be one of this message's recipients
                Some(n) if n >= 1 && (n - 1) / k == seq - 1 => n,
                _ => {
                    g.foreign += 1;
                    continue;
                }
            };
            let i = (n - 1) as usize;
            if g.slots.len() <= i {
                let len = (i + 1).max(g.slots.len() * 5 / 4);
                g.slots.resize(len, 0);
            }
            let slot = g.slots[i];
            let count = slot & COUNT;
            g.slots[i] = (slot & ACCEPTED) | (count + u8::from(count < COUNT));
            if count > 0 {
                g.duplicates += 1;
                continue;
            }
            g.delivered += 1;
            if slot & ACCEPTED != 0 {
                g.outstanding -= 1;
            }
            if g.first_delivery_us == 0 || ev.received_at_us < g.first_delivery_us {
                g.first_delivery_us = ev.received_at_us;
            }
            g.last_delivery_us = g.last_delivery_us.max(ev.received_at_us);
            if let Some(l) = latency {
                g.e2e.record(l);
            }
            self.timeline.delivered(ev.received_at_us, latency);
        }
    }

    /// (acknowledged, acknowledged and not yet delivered, distinct delivered,
    /// duplicates)
    pub fn progress(&self) -> (u64, u64, u64, u64) {
        let g = self.lock();
        (g.accepted, g.outstanding, g.delivered, g.duplicates)
    }

    /// Everything acknowledged so far has been delivered.
    pub fn drained(&self) -> bool {
        self.lock().outstanding == 0
    }

    /// Reconciles acknowledgements and deliveries.
    pub fn finish(&self) -> Reconciled {
        let g = self.lock();
        let k = self.recipients;
        let mut r = Reconciled {
            expected: g.accepted,
            delivered: g.delivered,
            duplicates: g.duplicates,
            foreign: g.foreign,
            e2e_latency_ms: g.e2e.summary(),
            first_delivery_us: g.first_delivery_us,
            last_delivery_us: g.last_delivery_us,
            ..Reconciled::default()
        };
        let mut by_domain: Vec<DomainCount> = self
            .mix
            .domains()
            .map(|d| DomainCount {
                domain: d.to_owned(),
                ..DomainCount::default()
            })
            .collect();
        let pair = |i: usize| {
            let n = i as u64 + 1;
            let seq = (n - 1) / k + 1;
            format!(
                "<{:016x}.{seq}@loadtest.invalid> user{n}@{}",
                self.run_id,
                self.mix.pick(n)
            )
        };
        for (i, &slot) in g.slots.iter().enumerate() {
            if slot == 0 {
                continue;
            }
            let accepted = slot & ACCEPTED != 0;
            let count = slot & COUNT;
            let domain = self.mix.pick(i as u64 + 1);
            let dc = by_domain.iter_mut().find(|d| d.domain == domain);
            if accepted {
                if let Some(dc) = dc {
                    dc.expected += 1;
                    if count == 0 {
                        dc.lost += 1;
                    } else {
                        dc.delivered += 1;
                    }
                }
                if count == 0 {
                    r.lost += 1;
                    if r.lost_sample.len() < SAMPLES {
                        r.lost_sample.push(pair(i));
                    }
                }
            } else if count > 0 {
                r.delivered_unacknowledged += 1;
            }
            if count > 1 && r.duplicate_sample.len() < SAMPLES {
                r.duplicate_sample
                    .push(format!("{} ({count} deliveries)", pair(i)));
            }
        }
        r.by_domain = by_domain;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(id: &'a str, rcpts: &'a [&'a str], sent: u64, recv: u64) -> DeliveryEvent<'a> {
        DeliveryEvent {
            message_id: Some(id),
            recipients: rcpts,
            received_at_us: recv,
            sent_at_us: Some(sent),
            size: 100,
        }
    }

    #[test]
    fn lost_duplicated_foreign_and_early_deliveries() {
        let mix = Arc::new(DomainMix::parse("a.test=1,b.test=1").unwrap());
        let tl = Arc::new(Timeline::new(1_000_000));
        let t = Tracker::new(0xfeed, 2, mix.clone(), tl.clone());
        let id = |seq: u64| format!("<{:016x}.{seq}@loadtest.invalid>", 0xfeed);
        let r = |n: u64| format!("user{n}@{}", mix.pick(n));
        // message 1: both recipients accepted, both delivered once
        t.accepted(1, &[]);
        t.delivered(&ev(&id(1), &[&r(1), &r(2)], 1_000_000, 1_010_000));
        // message 2: delivered before its 250 was read, and recipient 4 twice
        t.delivered(&ev(&id(2), &[&r(3)], 1_000_000, 1_020_000));
        t.delivered(&ev(&id(2), &[&r(4)], 1_000_000, 1_030_000));
        t.delivered(&ev(&id(2), &[&r(4)], 1_000_000, 2_500_000));
        assert_eq!(t.progress(), (2, 0, 4, 1));
        t.accepted(2, &[]);
        // message 3: recipient 6 refused at RCPT; recipient 5 never arrives
        t.accepted(3, &[1]);
        assert!(!t.drained());
        // message 4: never acknowledged, but delivered
        t.delivered(&ev(&id(4), &[&r(7)], 1_000_000, 1_040_000));
        // foreign: another run, a recipient of another message, a stranger
        t.delivered(&ev(
            "<00000000000000aa.1@loadtest.invalid>",
            &[&r(1)],
            0,
            1_050_000,
        ));
        t.delivered(&ev(&id(1), &[&r(9), "bob@a.test"], 0, 1_050_000));
        let f = t.finish();
        assert_eq!(f.expected, 5);
        assert_eq!(f.delivered, 5);
        assert_eq!(f.lost, 1);
        assert_eq!(f.lost_sample, vec![format!("{} {}", id(3), r(5))]);
        assert_eq!(f.duplicates, 1);
        assert_eq!(
            f.duplicate_sample,
            vec![format!("{} {} (2 deliveries)", id(2), r(4))]
        );
        assert_eq!(f.delivered_unacknowledged, 1);
        assert_eq!(f.foreign, 3);
        assert_eq!(f.e2e_latency_ms.count, 5);
        assert!((f.e2e_latency_ms.max - 40.0).abs() < 0.1);
        assert_eq!(
            (f.first_delivery_us, f.last_delivery_us),
            (1_010_000, 1_040_000)
        );
        let total: u64 = f.by_domain.iter().map(|d| d.expected).sum();
        let lost: u64 = f.by_domain.iter().map(|d| d.lost).sum();
        assert_eq!((total, lost), (5, 1));
        // the timeline got the first deliveries only
        let delivered: u64 = tl.seconds().iter().map(|s| s.delivered).sum();
        assert_eq!(delivered, 5);
    }
}
