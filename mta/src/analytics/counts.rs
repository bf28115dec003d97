//! What InfluxDB points and alert rules are computed from: events counted by kind,
//! the rates between those counts, and delivery latency as a histogram.
//!
//! | rate | of | over |
//! |---|---|---|
//! | delivery | `delivered` | delivery attempts: `delivered + deferred + bounced + expired` |
//! | bounce | `bounced` | resolved recipients: `delivered + bounced + expired` |
//! | open, click, complaint | `opened`, `clicked`, `complained` events | `delivered` |
//!
//! Opens and clicks are events, not distinct recipients: a recipient who opens twice
//! counts twice. The Prometheus rules in `deploy/prometheus/` compute the same rates
//! from `postroad_events_total`.

use hdrhistogram::Histogram;
use postroad_queue::{DeliveryEvent, EventKind};

/// Events of each kind, indexed in [`EventKind::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; EventKind::ALL.len()]);

fn index(kind: EventKind) -> usize {
    EventKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("ALL lists every kind")
}

impl Counts {
    pub fn add(&mut self, kind: EventKind, n: u64) {
        self.0[index(kind)] += n;
    }

    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[index(kind)]
    }

    pub fn merge(&mut self, other: &Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    /// Delivery attempts: every outcome the relay reports.
    pub fn attempts(&self) -> u64 {
        use EventKind::*;
        [Delivered, Deferred, Bounced, Expired]
            .into_iter()
            .map(|k| self.get(k))
            .sum()
    }

    /// Recipients whose delivery ended, one way or the other.
    pub fn resolved(&self) -> u64 {
        use EventKind::*;
        [Delivered, Bounced, Expired]
            .into_iter()
            .map(|k| self.get(k))
            .sum()
    }

    pub fn delivery_rate(&self) -> Option<f64> {
        ratio(self.get(EventKind::Delivered), self.attempts())
    }

    pub fn bounce_rate(&self) -> Option<f64> {
        ratio(self.get(EventKind::Bounced), self.resolved())
    }

    pub fn open_rate(&self) -> Option<f64> {
        ratio(self.get(EventKind::Opened), self.get(EventKind::Delivered))
    }

    pub fn click_rate(&self) -> Option<f64> {
        ratio(self.get(EventKind::Clicked), self.get(EventKind::Delivered))
    }

    pub fn complaint_rate(&self) -> Option<f64> {
        ratio(
            self.get(EventKind::Complained),
            self.get(EventKind::Delivered),
        )
    }
}

/// `part / whole`, or `None` when there is no whole to speak of.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Longest latency the histogram tells apart (a day, in ms); longer counts as a day.
const MAX_LATENCY_MS: u64 = 24 * 3600 * 1000;

/// From acceptance to delivery of delivered recipients, in milliseconds, to 2
/// significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_LATENCY_MS, 2).expect("valid bounds"))
    }
}

impl Latency {
    /// Records `event` if it is a delivery: the time since the message was accepted
    /// (the time in its UUIDv7 id).
    pub fn record(&mut self, event: &DeliveryEvent) {
        if event.kind != EventKind::Delivered {
            return;
        }
        let accepted = postroad_history::status::sent_at_ms(event.message_id);
        if accepted == 0 {
            return;
        }
        let ms = event
            .at_ms
            .saturating_sub(accepted)
            .clamp(1, MAX_LATENCY_MS);
        self.0.record(ms).expect("clamped into the bounds");
    }

    pub fn merge(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0.0 to 1.0) in seconds; `None` without deliveries.
    pub fn quantile_secs(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn max_secs(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.0.max() as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, MessageId, Recipient};

    fn counts(pairs: &[(EventKind, u64)]) -> Counts {
        let mut c = Counts::default();
        for (k, n) in pairs {
            c.add(*k, *n);
        }
        c
    }

    #[test]
    fn rates_have_the_documented_denominators() {
        use EventKind::*;
        let c = counts(&[
            (Queued, 1000),
            (Delivered, 900),
            (Deferred, 50),
            (Bounced, 40),
            (Expired, 10),
            (Opened, 450),
            (Clicked, 90),
            (Complained, 9),
        ]);
        assert_eq!(c.attempts(), 1000);
        assert_eq!(c.delivery_rate(), Some(0.9));
        assert_eq!(c.bounce_rate(), Some(40.0 / 950.0));
        assert_eq!(c.open_rate(), Some(0.5));
        assert_eq!(c.click_rate(), Some(0.1));
        assert_eq!(c.complaint_rate(), Some(0.01));
        let only_queued = counts(&[(Queued, 5)]);
        assert_eq!(only_queued.delivery_rate(), None);
        assert_eq!(only_queued.complaint_rate(), None);
        let mut merged = c;
        merged.merge(&only_queued);
        assert_eq!(merged.get(Queued), 1005);
    }

    #[test]
    fn latency_is_from_acceptance_to_delivery() {
        let envelope = Envelope::new(
            "s@example.com",
            vec![Recipient::new("u@example.net")],
            "192.0.2.1".parse().unwrap(),
        );
        let accepted = postroad_history::status::sent_at_ms(envelope.id);
        let mut latency = Latency::default();
        for (kind, after_ms) in [
            (EventKind::Queued, 0),
            (EventKind::Delivered, 1500),
            (EventKind::Delivered, 20_000),
            (EventKind::Deferred, 90_000),
        ] {
            let e = DeliveryEvent::new(
                kind,
                &envelope,
                &envelope.recipients[0],
                accepted + after_ms,
            );
            latency.record(&e);
        }
        assert_eq!(latency.count(), 2);
        let p50 = latency.quantile_secs(0.5).unwrap();
        assert!((1.49..=1.51).contains(&p50), "{p50}");
        let max = latency.max_secs().unwrap();
        assert!((19.9..=20.2).contains(&max), "{max}");
        // An id without a time (not Postroad's) is not guessed at.
        let mut foreign = DeliveryEvent::new(
            EventKind::Delivered,
            &envelope,
            &envelope.recipients[0],
            accepted,
        );
        foreign.message_id = MessageId::from_u128(7);
        latency.record(&foreign);
        assert_eq!(latency.count(), 2);
        assert_eq!(Latency::default().quantile_secs(0.95), None);
    }
}
