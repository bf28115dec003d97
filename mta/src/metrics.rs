//! Metrics through the [`metrics`] facade, rendered in the Prometheus text format by
//! `metrics-exporter-prometheus` on the admin endpoint's `/metrics`. Code anywhere
//! records with `metrics::counter!`/`histogram!`/`gauge!`; later exporters (InfluxDB)
//! read the same facade.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `postroad_events_total` | counter | `kind` (queued, delivered, deferred, bounced, expired, opened, clicked, complained, suppressed, unsubscribed), `email_type` (the first [`MAX_EMAIL_TYPES`] seen, then `other`; `none`), `destination` ([`destination_group`]) |
//! | `postroad_smtp_ack_seconds` | histogram | | time from the end of the data to the durable `250` |
//! | `postroad_delivery_seconds` | histogram | | time from acceptance to delivery, per delivered recipient |
//! | `postroad_smtp_connections` | gauge | | SMTP sessions open now |
//! | `postroad_smtp_turned_away_total` | counter | `reason` (connections, per_ip, banned) |
//! | `postroad_queue_messages` | gauge | `state` (ready, deferred, claimed, dead_letter) |
//! | `postroad_kafka_consumer_lag` | gauge | `topic`, `partition` (Kafka backend) |
//! | `postroad_influx_points_total` | counter | `outcome` (written, dropped, rejected) |
//! | `postroad_influx_buffered_points` | gauge | | points waiting for InfluxDB |
//! | `postroad_alert_firing` | gauge | `alert`, `severity` | 1 while the alert fires |

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use postroad_queue::{Batching, DeliveryEvent, EventSink, Gauge, QueueStats, SinkError};

/// Distinct `email_type` label values; further types count as `other`.
pub const MAX_EMAIL_TYPES: usize = 50;

/// Histogram buckets (seconds) for latencies from a millisecond to an hour.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0, 600.0, 3600.0,
];

/// The process's recorder: installed on first use, the same handle after.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics shows only queue gauges"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "postroad_events_total",
        "Recipient state changes, by kind, email type and destination group"
    );
    describe_histogram!(
        "postroad_smtp_ack_seconds",
        metrics::Unit::Seconds,
        "From the end of a message's data to its durable 250"
    );
    describe_histogram!(
        "postroad_delivery_seconds",
        metrics::Unit::Seconds,
        "From acceptance to delivery, per delivered recipient"
    );
    describe_gauge!("postroad_smtp_connections", "SMTP sessions open now");
    describe_counter!(
        "postroad_smtp_turned_away_total",
        "SMTP connections refused at accept, by reason"
    );
    describe_gauge!(
        "postroad_queue_messages",
        "Messages this process's queue holds, by state"
    );
    describe_counter!(
        "postroad_influx_points_total",
        "Analytics points written to InfluxDB, dropped (buffer full or shutdown) or rejected as malformed"
    );
    describe_gauge!(
        "postroad_influx_buffered_points",
        "Analytics points waiting to be written to InfluxDB"
    );
    describe_gauge!(
        "postroad_alert_firing",
        "1 while the alert fires, 0 otherwise (GET /v1/alerts has the details)"
    );
}

/// The `/metrics` text: the queue's counts and the backend's gauges as of now, and
/// everything recorded through the facade.
pub fn render(stats: &QueueStats, gauges: &[Gauge]) -> String {
    let handle = handle();
    for (state, value) in [
        ("ready", stats.ready),
        ("deferred", stats.deferred),
        ("claimed", stats.claimed),
        ("dead_letter", stats.dead_letters),
    ] {
        metrics::gauge!("postroad_queue_messages", "state" => state).set(value as f64);
    }
    for gauge in gauges {
        metrics::describe_gauge!(gauge.name, gauge.help);
        let labels: Vec<metrics::Label> = gauge
            .labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect();
        metrics::gauge!(gauge.name, labels).set(gauge.value);
    }
    handle.render()
}

/// A few label values for destination domains, so the label's cardinality stays small:
/// the big mailbox providers by name, everything else `other`.
pub fn destination_group(domain: &str) -> &'static str {
    let domain = domain.trim_end_matches('.');
    // `domain` is `base` or a subdomain of it, without regard to ASCII case.
    let under = |base: &str| {
        domain.len() >= base.len()
            && domain[domain.len() - base.len()..].eq_ignore_ascii_case(base)
            && (domain.len() == base.len()
                || domain.as_bytes()[domain.len() - base.len() - 1] == b'.')
    };
    let any = |bases: &[&str]| bases.iter().any(|b| under(b));
    if any(&["gmail.com", "googlemail.com"]) {
        "gmail"
    } else if any(&["outlook.com", "hotmail.com", "live.com", "msn.com"]) {
        "microsoft"
    } else if domain
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("yahoo."))
        || any(&["ymail.com", "rocketmail.com", "aol.com"])
    {
        "yahoo"
    } else if any(&["icloud.com", "me.com", "mac.com"]) {
        "apple"
    } else {
        "other"
    }
}

/// Counts events as they pass (an [`EventSink`] of the fan-out).
#[derive(Default)]
pub struct EventCounter {
    email_types: Mutex<HashSet<String>>,
}

impl EventCounter {
    /// The label for `email_type`: itself while fewer than [`MAX_EMAIL_TYPES`] are known.
    fn email_type_label(&self, email_type: Option<&str>) -> String {
        let Some(t) = email_type else {
            return "none".into();
        };
        let mut known = self
            .email_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.contains(t) || (known.len() < MAX_EMAIL_TYPES && known.insert(t.to_string())) {
            t.to_string()
        } else {
            "other".into()
        }
    }
}

#[async_trait]
impl EventSink for EventCounter {
    fn name(&self) -> &'static str {
        "metrics"
    }

    /// Counting is cheap; reading the outbox is not: large batches, a second apart.
    fn batching(&self) -> Batching {
        Batching {
            max_batch: 10_000,
            linger: std::time::Duration::from_secs(1),
        }
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        for e in events {
            let email_type = self.email_type_label(e.meta.email_type.as_deref());
            metrics::counter!(
                "postroad_events_total",
                "kind" => e.kind.as_str(),
                "email_type" => email_type,
                "destination" => destination_group(&e.domain),
            )
            .increment(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_groups_are_few() {
        for (domain, group) in [
            ("gmail.com", "gmail"),
            ("GoogleMail.com.", "gmail"),
            ("hotmail.com", "microsoft"),
            ("eu.outlook.com", "microsoft"),
            ("yahoo.co.uk", "yahoo"),
            ("aol.com", "yahoo"),
            ("icloud.com", "apple"),
            ("example.com", "other"),
            ("notgmail.com", "other"),
        ] {
            assert_eq!(destination_group(domain), group, "{domain}");
        }
    }

    #[test]
    fn email_type_labels_are_bounded() {
        let counter = EventCounter::default();
        assert_eq!(counter.email_type_label(None), "none");
        for i in 0..MAX_EMAIL_TYPES {
            assert_eq!(
                counter.email_type_label(Some(&format!("t{i}"))),
                format!("t{i}")
            );
        }
        assert_eq!(counter.email_type_label(Some("one-too-many")), "other");
        assert_eq!(counter.email_type_label(Some("t0")), "t0");
    }

    #[tokio::test]
    async fn the_text_has_queue_gauges_and_counted_events() {
        // The recorder must be in place before anything is counted (as `serve` does).
        handle();
        let stats = QueueStats {
            queued: 5,
            ready: 3,
            deferred: 1,
            claimed: 1,
            dead_letters: 2,
        };
        let lag = |partition: &str, value| Gauge {
            name: "postroad_kafka_consumer_lag",
            help: "lag",
            labels: vec![
                ("topic", "email-send".into()),
                ("partition", partition.into()),
            ],
            value,
        };
        let envelope = postroad_queue::Envelope::new(
            "s@example.com",
            vec![postroad_queue::Recipient::new("u@gmail.com")],
            "192.0.2.1".parse().unwrap(),
        );
        let mut event = DeliveryEvent::new(
            postroad_queue::EventKind::Delivered,
            &envelope,
            &envelope.recipients[0],
            1,
        );
        event.meta.email_type = Some("welcome".into());
        EventCounter::default().write(&[event]).await.unwrap();
        let text = render(&stats, &[lag("0", 7.0), lag("1", 0.0)]);
        assert!(
            text.contains("postroad_queue_messages{state=\"ready\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("postroad_queue_messages{state=\"dead_letter\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("postroad_kafka_consumer_lag{topic=\"email-send\",partition=\"0\"} 7"),
            "{text}"
        );
        assert!(
            text.contains(
                "postroad_events_total{kind=\"delivered\",email_type=\"welcome\",destination=\"gmail\"} 1"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE postroad_kafka_consumer_lag gauge")
                .count(),
            1
        );
    }
}
