//! What `loadtest e2e` reports: the reconciled figures of a run, as text, JSON and an
//! HTML page, and its verdict.

use super::*;

/// The spawned Postroad, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnInfo {
    pub binary: String,
    pub spool_fsync: bool,
    /// "mx" (through the DNS stub) or "smarthost".
    pub relay: String,
    pub work_dir: String,
    pub kept: bool,
    /// How it ended after SIGTERM.
    pub exit: String,
}

/// The e2e report; serialised as-is for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// The MTA's SMTP address.
    pub target: String,
    pub postroad: Option<SpawnInfo>,
    pub sink: String,
    pub dns: String,
    pub run_id: String,
    pub recipient_domains: String,
    pub connections: usize,
    pub message_size: usize,
    pub recipients_per_message: u32,
    /// `--rate`, if open loop.
    pub rate_per_sec: Option<f64>,

    pub messages_sent: u64,
    pub messages_accepted: u64,
    /// Messages accepted / load time (first send to last reply).
    pub accepted_per_sec: f64,
    /// Distinct deliveries / (first send to last first-delivery).
    pub delivered_per_sec: f64,
    pub load_secs: f64,
    /// First send to the last first-delivery.
    pub delivery_secs: f64,
    /// End of the load to the last first-delivery (0 when all were delivered during
    /// the load).
    pub drain_secs: f64,
    pub all_delivered: bool,

    /// (message, recipient) pairs the MTA accepted.
    pub deliveries_expected: u64,
    /// Distinct pairs the sink received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub delivered_unacknowledged: u64,
    pub foreign: u64,
    pub checksum_bad: u64,
    /// Every 4xx/5xx reply the sink sent (injected faults, and what follows them, such
    /// as a 554 to DATA when no recipient is left).
    pub sink_rejections: u64,
    pub sink_rejections_by_code: std::collections::BTreeMap<u16, u64>,

    /// Submit (X-Loadtest-Sent-At; the scheduled time in open loop) to receipt at the
    /// sink, one sample per delivered pair.
    pub e2e_latency_ms: LatencySummary,
    pub ack_latency_ms: LatencySummary,
    pub ack_latency_from: String,

    pub lost_sample: Vec<String>,
    pub duplicate_sample: Vec<String>,
    pub by_domain: Vec<DomainCount>,
    /// Why the run failed; empty when it did not.
    pub problems: Vec<String>,
    pub ok: bool,
    /// The spawned Postroad only accepted and queued (`--ingress-only`).
    pub ingress_only: bool,
    /// CPU seconds the spawned Postroad used from the start of the load to the end
    /// of the drain.
    pub postroad_cpu_secs: Option<f64>,
    /// The generator's own report (without its timeline: see `timeline`).
    pub load: Report,
    /// Per-second buckets: accepted, failed, delivered, ack and e2e p50/p99.
    pub timeline: Vec<Second>,
    /// The domains given faults of their own (`--sink-domain`): each second's
    /// deliveries, throttle replies and limit, and each phase's figures.
    pub limits: Vec<limits::DomainTrace>,
}

impl E2eReport {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let target = match &self.postroad {
            Some(p) => format!(
                "{} (spawned {}, spool.fsync = {}, relay by {})",
                self.target, p.binary, p.spool_fsync, p.relay
            ),
            None => format!("{} (already running)", self.target),
        };
        let _ = writeln!(s, "target       {target}");
        let _ = writeln!(s, "sink         {} (DNS stub {})", self.sink, self.dns);
        let _ = writeln!(
            s,
            "load         {}; {} connections",
            self.load.mode, self.connections
        );
        let _ = writeln!(s, "domains      {}", self.recipient_domains);
        let _ = writeln!(
            s,
            "accepted     {} of {} messages in {:.3} s: {:.1} msg/s",
            self.messages_accepted, self.messages_sent, self.load_secs, self.accepted_per_sec
        );
        if self.ingress_only {
            let _ = writeln!(
                s,
                "delivered    nothing: ingress only (relay.enabled = false), {} queued",
                self.deliveries_expected
            );
        } else {
            let _ = writeln!(
                s,
                "delivered    {} of {} deliveries in {:.3} s from the first send: {:.1}/s (drain {:.3} s after the load)",
                self.delivered,
                self.deliveries_expected,
                self.delivery_secs,
                self.delivered_per_sec,
                self.drain_secs
            );
            let _ = writeln!(s, "lost         {}", self.lost);
            for l in self.lost_sample.iter().take(5) {
                let _ = writeln!(s, "             {l}");
            }
        }
        if let Some(cpu) = self.postroad_cpu_secs {
            let _ = writeln!(
                s,
                "postroad cpu {cpu:.2} s (user + system, from the start of the load): {:.0} messages per CPU-second",
                self.messages_accepted as f64 / cpu.max(1e-9)
            );
        }
        let _ = writeln!(s, "duplicates   {}", self.duplicates);
        for l in self.duplicate_sample.iter().take(5) {
            let _ = writeln!(s, "             {l}");
        }
        if self.delivered_unacknowledged > 0 || self.foreign > 0 {
            let _ = writeln!(
                s,
                "also         {} delivered without an acknowledgement, {} not from this run",
                self.delivered_unacknowledged, self.foreign
            );
        }
        let codes: Vec<String> = self
            .sink_rejections_by_code
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(", "))
        };
        let _ = writeln!(
            s,
            "checksums    {} bad; sink rejections {}{codes}",
            self.checksum_bad, self.sink_rejections
        );
        let e = &self.e2e_latency_ms;
        let _ = writeln!(
            s,
            "e2e latency  p50 {:.3} ms, p90 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (submit -> delivered, n={})",
            e.p50, e.p90, e.p95, e.p99, e.max, e.count
        );
        let a = &self.ack_latency_ms;
        let _ = writeln!(
            s,
            "ack latency  p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (from {})",
            a.p50, a.p95, a.p99, a.max, self.ack_latency_from
        );
        for trace in &self.limits {
            for line in trace.text().lines() {
                let _ = writeln!(s, "limits       {line}");
            }
        }
        if self.ok && self.ingress_only {
            let _ = writeln!(s, "result       OK: every message accepted");
        } else if self.ok {
            let _ = writeln!(s, "result       OK: nothing lost, nothing duplicated");
        } else {
            let _ = writeln!(s, "result       FAILED: {}", self.problems.join("; "));
        }
        s
    }

    /// The `--html` page.
    pub fn html(&self, command: &str) -> String {
        use crate::html::{self, Chart, Page, item, section, series};
        let ms3 = |l: &LatencySummary| {
            format!(
                "p50 {:.2} / p90 {:.2} / p95 {:.2} / p99 {:.2} / max {:.2} ms",
                l.p50, l.p90, l.p95, l.p99, l.max
            )
        };
        let mut rows = vec![section("Setup"), item("MTA", &self.target)];
        if let Some(p) = &self.postroad {
            rows.push(item(
                "Postroad",
                format!(
                    "spawned {}, spool.fsync = {}, relay by {}",
                    p.binary, p.spool_fsync, p.relay
                ),
            ));
        }
        rows.extend([
            item("sink / DNS stub", format!("{} / {}", self.sink, self.dns)),
            item(
                "load",
                format!("{}; {} connections", self.load.mode, self.connections),
            ),
            item("recipient domains", &self.recipient_domains),
            section("Throughput"),
            item(
                "accepted",
                format!(
                    "{} of {} messages, {:.1} msg/s over {:.3} s",
                    self.messages_accepted,
                    self.messages_sent,
                    self.accepted_per_sec,
                    self.load_secs
                ),
            ),
            item(
                "delivered",
                format!(
                    "{} of {} deliveries, {:.1}/s over {:.3} s (first send to last delivery)",
                    self.delivered,
                    self.deliveries_expected,
                    self.delivered_per_sec,
                    self.delivery_secs
                ),
            ),
            item("drain after the load", format!("{:.3} s", self.drain_secs)),
            section("Integrity"),
            item("lost", self.lost),
            item("duplicates", self.duplicates),
            item(
                "delivered without acknowledgement",
                self.delivered_unacknowledged,
            ),
            item("bad checksums", self.checksum_bad),
            item(
                "result",
                if self.ok {
                    "OK".to_owned()
                } else {
                    format!("FAILED: {}", self.problems.join("; "))
                },
            ),
            section("Latency"),
            item("submit → delivered", ms3(&self.e2e_latency_ms)),
            item(
                &format!("ack (from {})", self.ack_latency_from),
                ms3(&self.ack_latency_ms),
            ),
        ]);
        for trace in &self.limits {
            rows.push(section(&format!("Limits of {}", trace.domain)));
            for p in &trace.phases {
                let limit = p
                    .limit
                    .map_or_else(|| "no limit".to_string(), |l| format!("{l:.0}/s"));
                let converge = p
                    .converge_secs
                    .map_or_else(|| "never reached 80%".to_string(), |c| format!("{c} s"));
                let share = p
                    .share_of_limit
                    .map(|s| format!(" ({:.0}% of the limit)", s * 100.0))
                    .unwrap_or_default();
                rows.push(item(
                    &format!("{}–{} s, limit {limit}", p.from_secs, p.to_secs),
                    format!(
                        "converged in {converge}; then {:.1}/s{share}; peak 5 s average {}; {:.1}% of attempts throttled",
                        p.delivered_per_sec,
                        p.peak_share_of_limit
                            .map_or_else(|| "-".into(), |s| format!("{:.0}% of the limit", s * 100.0)),
                        p.throttled_share * 100.0
                    ),
                ));
            }
        }
        let tl = &self.timeline;
        let mut charts = vec![
            Chart {
                title: "Rate per second".into(),
                unit: "messages/s".into(),
                series: vec![
                    series(tl, "accepted", html::BLUE, false, |s| {
                        html::rate(s, s.accepted)
                    }),
                    series(tl, "delivered", html::GREEN, true, |s| {
                        html::rate(s, s.delivered)
                    }),
                    series(tl, "failed", html::RED, true, |s| html::rate(s, s.failed)),
                ],
            },
            Chart {
                title: "Submit → delivered latency, by second of delivery".into(),
                unit: "ms".into(),
                series: vec![
                    series(tl, "p50", html::GREEN, false, |s| s.e2e_p50_ms),
                    series(tl, "p99", html::PURPLE, false, |s| s.e2e_p99_ms),
                ],
            },
            Chart {
                title: format!(
                    "Ack latency (from {}), by second of the reply",
                    self.ack_latency_from
                ),
                unit: "ms".into(),
                series: vec![
                    series(tl, "p50", html::BLUE, false, |s| s.ack_p50_ms),
                    series(tl, "p99", html::ORANGE, false, |s| s.ack_p99_ms),
                ],
            },
        ];
        charts.extend(self.limits.iter().map(limits_chart));
        let page = Page {
            title: format!("loadtest e2e: {}", self.target),
            subtitle: vec![command.to_owned()],
            rows,
            charts,
            notes: vec![
                "accepted: messages the MTA answered 250 to; delivered: (message, recipient) \
                 pairs the sink received for the first time. Submit → delivered runs from \
                 X-Loadtest-Sent-At (set when the data is written; the scheduled send time \
                 with --rate) to the end of the data at the sink. Each point is one second \
                 (the rate of a last, partial second is over the part the run covered, and \
                 not drawn when that is under 0.2 s)."
                    .into(),
                "Limits of a domain: what the sink accepted for it each second (by second \
                 since the start of the load), the 421 4.7.0 throttle replies it gave for \
                 its rate or connection limit, and the rate limit in force. A phase \
                 converged once the 5-second average of deliveries reached 80% of its \
                 limit."
                    .into(),
            ],
        };
        html::render(&page)
    }
}

/// A domain's rate over time against its limit.
pub(super) fn limits_chart(trace: &limits::DomainTrace) -> crate::html::Chart {
    use crate::html::{self, Chart, Series};
    let points = |f: &dyn Fn(&limits::DomainSecond) -> Option<f64>| {
        trace
            .seconds
            .iter()
            .map(|s| (s.t as f64, f(s)))
            .collect::<Vec<_>>()
    };
    Chart {
        title: format!("Rate at {} against its limit", trace.domain),
        unit: "messages/s".into(),
        series: vec![
            Series {
                name: "delivered".into(),
                color: html::GREEN,
                dashed: false,
                points: points(&|s| Some(s.delivered as f64)),
            },
            Series {
                name: "throttled (421)".into(),
                color: html::RED,
                dashed: false,
                points: points(&|s| Some(s.throttled as f64)),
            },
            Series {
                name: "limit".into(),
                color: html::PURPLE,
                dashed: true,
                points: points(&|s| s.limit),
            },
        ],
    }
}
