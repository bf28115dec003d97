//! Counters, the ack-latency histogram, and the end-of-run report (text and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram tracks exactly; larger values are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Ack latencies in microseconds.
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
        }
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.hist.record(us).expect("clamped into range");
    }

    /// Adds another histogram's samples (one per connection, merged at the end).
    pub fn merge(&mut self, other: &Latency) {
        self.hist.add(&other.hist).expect("same bounds");
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                ms(self.hist.value_at_quantile(q))
            }
        };
        LatencySummary {
            count: self.hist.len(),
            mean: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: if self.hist.is_empty() {
                0.0
            } else {
                ms(self.hist.max())
            },
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Per-worker counters, merged at the end of the run.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Messages whose transaction was started (MAIL written).
    pub sent: u64,
    pub accepted: u64,
    /// Bytes of accepted messages (as stored: headers + body).
    pub accepted_bytes: u64,
    /// Rejected messages by the reply code that rejected them.
    pub rejected: BTreeMap<u16, u64>,
    /// Single recipients refused in messages that were still sent to others.
    pub rcpt_rejected: u64,
    /// Connection-level failures by kind (see `ClientError::kind`).
    pub errors: BTreeMap<&'static str, u64>,
    /// Messages lost to a connection error in the middle of their transaction.
    pub failed_in_flight: u64,
    pub connections: u64,
    pub last_error: Option<String>,
}

impl Counters {
    pub fn error(&mut self, kind: &'static str, msg: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.last_error = Some(msg);
    }

    pub fn reject(&mut self, code: u16) {
        *self.rejected.entry(code).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        self.accepted_bytes += o.accepted_bytes;
        for (k, v) in &o.rejected {
            *self.rejected.entry(*k).or_default() += v;
        }
        self.rcpt_rejected += o.rcpt_rejected;
        for (k, v) in &o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.failed_in_flight += o.failed_in_flight;
        self.connections += o.connections;
        if o.last_error.is_some() {
            self.last_error.clone_from(&o.last_error);
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The end-of-run report; serialised as-is for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// By reply code, e.g. {"550": 3}.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// By reply class, e.g. {"4xx": 1, "5xx": 3}.
    pub rejected_by_class: BTreeMap<String, u64>,
    pub rcpt_rejected: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub failed_in_flight: u64,
    pub connections_opened: u64,
    pub last_error: Option<String>,
    pub stop_reason: String,
    pub elapsed_secs: f64,
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
    pub accepted_bytes: u64,
    pub ack_latency_ms: LatencySummary,
    /// What ack latency is measured from: "end of data", or in open loop
    /// "scheduled send time".
    pub ack_latency_from: String,
    /// `--rate` (open loop), if given.
    pub rate_per_sec: Option<f64>,
    /// Open loop: how late transactions started after their scheduled time (waiting
    /// for a free connection).
    pub send_lag_ms: Option<LatencySummary>,
    /// The recipient domains, DOMAIN=WEIGHT,...
    pub recipient_domains: String,
    /// Per-second buckets (accepted, failed, ack p50/p99).
    pub timeline: Vec<crate::timeline::Second>,
}

impl Report {
    pub fn new(
        target: String,
        mode: String,
        connections: usize,
        c: &Counters,
        latency: &Latency,
        elapsed: Duration,
        stop_reason: String,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut by_class = BTreeMap::new();
        for (code, n) in &c.rejected {
            *by_class.entry(format!("{}xx", code / 100)).or_default() += n;
        }
        Self {
            target,
            mode,
            connections,
            sent: c.sent,
            accepted: c.accepted,
            rejected: c.rejected_total(),
            rejected_by_code: c
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            rejected_by_class: by_class,
            rcpt_rejected: c.rcpt_rejected,
            errors: c.errors_total(),
            errors_by_kind: c.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            failed_in_flight: c.failed_in_flight,
            connections_opened: c.connections,
            last_error: c.last_error.clone(),
            stop_reason,
            elapsed_secs: elapsed.as_secs_f64(),
            messages_per_sec: c.accepted as f64 / secs,
            mb_per_sec: c.accepted_bytes as f64 / 1e6 / secs,
            accepted_bytes: c.accepted_bytes,
            ack_latency_ms: latency.summary(),
            ack_latency_from: "end of data".into(),
            rate_per_sec: None,
            send_lag_ms: None,
            recipient_domains: String::new(),
            timeline: Vec::new(),
        }
    }

    /// Everything was accepted, and something was.
    pub fn success(&self) -> bool {
        self.accepted > 0 && self.accepted == self.sent && self.rejected == 0 && self.errors == 0
    }

    pub fn text(&self) -> String {
        fn map<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
            if m.is_empty() {
                return String::new();
            }
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("  ({})", parts.join(", "))
        }
        let l = &self.ack_latency_ms;
        let mut s = String::new();
        let _ = writeln!(s, "target       {} ({})", self.target, self.mode);
        let _ = writeln!(
            s,
            "connections  {} concurrent, {} opened",
            self.connections, self.connections_opened
        );
        let _ = writeln!(s, "sent         {}", self.sent);
        let _ = writeln!(s, "accepted     {}", self.accepted);
        let _ = writeln!(
            s,
            "rejected     {}{}",
            self.rejected,
            map(&self.rejected_by_code)
        );
        if self.rcpt_rejected > 0 {
            let _ = writeln!(s, "rcpt refused {}", self.rcpt_rejected);
        }
        let _ = writeln!(
            s,
            "errors       {}{}",
            self.errors,
            map(&self.errors_by_kind)
        );
        if self.failed_in_flight > 0 {
            let _ = writeln!(
                s,
                "in flight    {} messages lost to connection errors",
                self.failed_in_flight
            );
        }
        if let Some(e) = &self.last_error {
            let _ = writeln!(s, "last error   {e}");
        }
        let _ = writeln!(s, "stopped      {}", self.stop_reason);
        let _ = writeln!(s, "elapsed      {:.3} s", self.elapsed_secs);
        let _ = writeln!(
            s,
            "throughput   {:.1} msg/s, {:.2} MB/s",
            self.messages_per_sec, self.mb_per_sec
        );
        let _ = writeln!(
            s,
            "ack latency  p50 {:.3} ms, p90 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (mean {:.3} ms, n={})",
            l.p50, l.p90, l.p95, l.p99, l.max, l.mean, l.count
        );
        if let Some(rate) = self.rate_per_sec {
            let _ = writeln!(
                s,
                "open loop    {rate} msg/s scheduled; ack latency counts from the scheduled send time"
            );
        }
        if let Some(lag) = &self.send_lag_ms {
            let _ = writeln!(
                s,
                "send lag     p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (start of transaction after its scheduled time)",
                lag.p50, lag.p99, lag.max
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_1_to_100_ms() {
        let mut lat = Latency::default();
        for ms in 1..=100u64 {
            lat.record(Duration::from_millis(ms));
        }
        let s = lat.summary();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.01;
        assert_eq!(s.count, 100);
        assert!(near(s.p50, 50.0), "p50 {}", s.p50);
        assert!(near(s.p90, 90.0), "p90 {}", s.p90);
        assert!(near(s.p95, 95.0), "p95 {}", s.p95);
        assert!(near(s.p99, 99.0), "p99 {}", s.p99);
        assert!(near(s.max, 100.0), "max {}", s.max);
        assert!(near(s.mean, 50.5), "mean {}", s.mean);
    }

    #[test]
    fn outliers_and_empty() {
        assert_eq!(Latency::default().summary().p99, 0.0);
        let mut a = Latency::default();
        for _ in 0..99 {
            a.record(Duration::from_micros(500));
        }
        a.record(Duration::from_secs(2));
        let s = a.summary();
        assert!((s.p50 - 0.5).abs() < 0.01);
        assert!((s.max - 2000.0).abs() < 2.0);
        // clamped, not an error
        a.record(Duration::from_secs(100_000));
    }

    #[test]
    fn report_counts_and_classes() {
        let mut a = Counters {
            sent: 10,
            accepted: 6,
            accepted_bytes: 6_000_000,
            ..Default::default()
        };
        a.reject(550);
        a.reject(550);
        a.reject(451);
        let mut b = Counters {
            sent: 1,
            ..Default::default()
        };
        b.error("closed", "connection closed by server".into());
        b.failed_in_flight = 1;
        a.merge(&b);
        let r = Report::new(
            "x".into(),
            "DATA".into(),
            1,
            &a,
            &Latency::default(),
            Duration::from_secs(2),
            "done".into(),
        );
        assert_eq!((r.sent, r.accepted, r.rejected, r.errors), (11, 6, 3, 1));
        assert_eq!(r.rejected_by_code["550"], 2);
        assert_eq!(r.rejected_by_class["4xx"], 1);
        assert_eq!(r.rejected_by_class["5xx"], 2);
        assert!((r.messages_per_sec - 3.0).abs() < 1e-9);
        assert!((r.mb_per_sec - 3.0).abs() < 1e-9);
        assert!(!r.success());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ack_latency_ms"]["count"], 0);
        assert!(r.text().contains("550: 2"));
    }
}
