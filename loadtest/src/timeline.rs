//! Per-second buckets of a run, for the charts of the HTML report and the `timeline`
//! of the JSON one: messages accepted, failed and delivered in each second, and the
//! p50/p99 of the latencies that ended in it.
//!
//! Seconds are counted from the start of the run on the wall clock (Unix
//! microseconds), so events seen by the generator and by an in-process sink land in
//! the same buckets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest run the timeline covers; later events go into its last second.
const MAX_SECONDS: usize = 7 * 86_400;

#[derive(Default)]
struct Slot {
    accepted: u64,
    failed: u64,
    delivered: u64,
    ack: Option<Histogram<u32>>,
    e2e: Option<Histogram<u32>>,
}

fn record(h: &mut Option<Histogram<u32>>, d: Duration) {
    // 2 significant digits are plenty for a chart; the histogram grows as needed.
    let h = h.get_or_insert_with(|| Histogram::new(2).expect("valid sigfig"));
    let us = (d.as_micros() as u64).max(1);
    // `record` grows the histogram; `saturating_record` would clamp to its current range
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the start of the run (this bucket is [t, t+1)).
    pub t: u64,
    /// How much of the second the run covered: 1, except for the last second of a
    /// run that ended inside it. Rates are counts / span.
    pub span_secs: f64,
    /// Messages acknowledged with 2xx in this second.
    pub accepted: u64,
    /// Messages rejected or lost to a connection error in this second.
    pub failed: u64,
    /// Deliveries (first ones) seen by the sink in this second (e2e).
    pub delivered: u64,
    /// Ack latency of the messages acknowledged in this second, ms.
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// Submit→delivered latency of the deliveries in this second, ms (e2e).
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
}

/// The buckets; shared by the connections and the sink.
pub struct Timeline {
    start_us: AtomicU64,
    slots: Mutex<Vec<Slot>>,
}

impl Timeline {
    /// A timeline whose second 0 starts at `start_us` (Unix microseconds).
    pub fn new(start_us: u64) -> Self {
        Self {
            start_us: AtomicU64::new(start_us),
            slots: Mutex::new(Vec::new()),
        }
    }

    pub fn start_us(&self) -> u64 {
        self.start_us.load(Relaxed)
    }

    /// Moves second 0 to `start_us`: for a timeline made before the run starts (the
    /// e2e sink needs it first); call it before recording anything.
    pub fn set_start(&self, start_us: u64) {
        self.start_us.store(start_us, Relaxed);
    }

    fn with_slot(&self, at_us: u64, f: impl FnOnce(&mut Slot)) {
        let i = ((at_us.saturating_sub(self.start_us())) / 1_000_000) as usize;
        let i = i.min(MAX_SECONDS - 1);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() <= i {
            slots.resize_with(i + 1, Slot::default);
        }
        f(&mut slots[i]);
    }

    /// A message acknowledged at `at_us` after `latency`.
    pub fn accepted(&self, at_us: u64, latency: Duration) {
        self.with_slot(at_us, |s| {
            s.accepted += 1;
            record(&mut s.ack, latency);
        });
    }

    /// A message rejected or lost at `at_us`.
    pub fn failed(&self, at_us: u64) {
        self.with_slot(at_us, |s| s.failed += 1);
    }

    /// A delivery seen at `at_us`, `latency` after it was submitted (when known).
    pub fn delivered(&self, at_us: u64, latency: Option<Duration>) {
        self.with_slot(at_us, |s| {
            s.delivered += 1;
            if let Some(l) = latency {
                record(&mut s.e2e, l);
            }
        });
    }

    /// Every second from 0 to the last one with an event.
    pub fn seconds(&self) -> Vec<Second> {
        self.seconds_until(None)
    }

    /// Every second from 0 to the last one with an event; the last one's span ends at
    /// `end_us` (the end of the run) when given.
    pub fn seconds_until(&self, end_us: Option<u64>) -> Vec<Second> {
        let ms = |h: &Option<Histogram<u32>>, q: f64| {
            h.as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let last = slots.len().saturating_sub(1);
        let start_us = self.start_us();
        let end = end_us.map(|e| e.saturating_sub(start_us) as f64 / 1e6);
        slots
            .iter()
            .enumerate()
            .map(|(t, s)| Second {
                t: t as u64,
                span_secs: match end {
                    Some(end) if t == last => (end - t as f64).clamp(0.001, 1.0),
                    _ => 1.0,
                },
                accepted: s.accepted,
                failed: s.failed,
                delivered: s.delivered,
                ack_p50_ms: ms(&s.ack, 0.50),
                ack_p99_ms: ms(&s.ack, 0.99),
                e2e_p50_ms: ms(&s.e2e, 0.50),
                e2e_p99_ms: ms(&s.e2e, 0.99),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_second() {
        let t = Timeline::new(10_000_000);
        for i in 0..100u64 {
            t.accepted(10_000_000 + i * 10_000, Duration::from_millis(i + 1)); // second 0
        }
        t.failed(11_500_000); // second 1
        t.delivered(13_999_999, Some(Duration::from_millis(20))); // second 3
        t.delivered(13_000_000, None);
        t.accepted(9_000_000, Duration::from_millis(1)); // before the start: second 0
        let s = t.seconds();
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].t, s[0].accepted, s[0].failed), (0, 101, 0));
        let p50 = s[0].ack_p50_ms.unwrap();
        let p99 = s[0].ack_p99_ms.unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!((98.0..=100.0).contains(&p99), "{p99}");
        assert_eq!((s[1].failed, s[1].ack_p50_ms), (1, None));
        assert_eq!(
            s[2],
            Second {
                t: 2,
                span_secs: 1.0,
                ..Second::default()
            }
        );
        assert!(s.iter().all(|s| s.span_secs == 1.0));
        // a run that ended 0.25 s into its last second
        let s = t.seconds_until(Some(13_250_000));
        assert_eq!(s[3].span_secs, 0.25);
        assert_eq!(s[2].span_secs, 1.0);
        assert_eq!(s[3].delivered, 2);
        let e = s[3].e2e_p50_ms.unwrap();
        assert!((19.8..=20.2).contains(&e), "{e}");
    }
}
