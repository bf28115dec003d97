//! `GET /metrics`: the queue's counts and the backend's gauges in the Prometheus text
//! exposition format.

use std::fmt::Write;

use postroad_queue::{Gauge, QueueStats};

/// Renders the queue counts and backend gauges (one HELP/TYPE block per metric name).
pub fn render(stats: &QueueStats, gauges: &[Gauge]) -> String {
    let mut out = String::new();
    out.push_str("# HELP postroad_queue_messages Messages this process's queue holds, by state\n");
    out.push_str("# TYPE postroad_queue_messages gauge\n");
    for (state, value) in [
        ("ready", stats.ready),
        ("deferred", stats.deferred),
        ("claimed", stats.claimed),
        ("dead_letter", stats.dead_letters),
    ] {
        let _ = writeln!(out, "postroad_queue_messages{{state=\"{state}\"}} {value}");
    }
    let mut last = "";
    for gauge in gauges {
        if gauge.name != last {
            let _ = writeln!(out, "# HELP {} {}", gauge.name, gauge.help);
            let _ = writeln!(out, "# TYPE {} gauge", gauge.name);
            last = gauge.name;
        }
        let labels: Vec<String> = gauge
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(
            out,
            "{}{{{}}} {}",
            gauge.name,
            labels.join(","),
            gauge.value
        );
    }
    out
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_labelled_gauges() {
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
        let text = render(&stats, &[lag("0", 7.0), lag("1", 0.0)]);
        assert!(text.contains("postroad_queue_messages{state=\"ready\"} 3\n"));
        assert!(text.contains("postroad_queue_messages{state=\"dead_letter\"} 2\n"));
        assert_eq!(
            text.matches("# TYPE postroad_kafka_consumer_lag gauge")
                .count(),
            1
        );
        assert!(
            text.contains("postroad_kafka_consumer_lag{topic=\"email-send\",partition=\"0\"} 7\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
