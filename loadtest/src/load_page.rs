//! What a generator's run leaves beside its text summary: the command line that ran it
//! and the `--html` page of `loadtest smtp` and `loadtest http`.

use crate::stats::Report;

/// The command line, for the reports.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect();
    args.join(" ")
}

/// The `--html` page of a `loadtest smtp` or `loadtest http` run.
pub fn html_report(r: &Report, command: &str) -> String {
    use crate::html::{self, Chart, Page, item, section, series};
    let l = &r.ack_latency_ms;
    let ms = |v: f64| format!("{v:.3} ms");
    let mut rows = vec![
        section("Load"),
        item("target", &r.target),
        item("mode", &r.mode),
        item("recipient domains", &r.recipient_domains),
        item(
            "connections",
            format!(
                "{} concurrent, {} opened",
                r.connections, r.connections_opened
            ),
        ),
        section("Result"),
        item("sent", r.sent),
        item("accepted", r.accepted),
        item("rejected", r.rejected),
        item("errors", r.errors),
        item("elapsed", format!("{:.3} s", r.elapsed_secs)),
        item("accepted/s", format!("{:.1}", r.messages_per_sec)),
        item("MB/s", format!("{:.2}", r.mb_per_sec)),
        item("stopped", &r.stop_reason),
        section(&format!("Ack latency (from {})", r.ack_latency_from)),
        item("p50", ms(l.p50)),
        item("p90", ms(l.p90)),
        item("p95", ms(l.p95)),
        item("p99", ms(l.p99)),
        item("max", ms(l.max)),
        item("mean", ms(l.mean)),
    ];
    if let Some(lag) = &r.send_lag_ms {
        rows.push(item(
            "send lag p50 / p99 / max",
            format!("{:.3} / {:.3} / {:.3} ms", lag.p50, lag.p99, lag.max),
        ));
    }
    if let Some(e) = &r.last_error {
        rows.push(item("last error", e));
    }
    let tl = &r.timeline;
    let page = Page {
        title: format!("loadtest: {}", r.target),
        subtitle: vec![command.to_owned()],
        rows,
        charts: vec![
            Chart {
                title: "Rate per second".into(),
                unit: "messages/s".into(),
                series: vec![
                    series(tl, "accepted", html::BLUE, false, |s| {
                        html::rate(s, s.accepted)
                    }),
                    series(tl, "failed", html::RED, true, |s| html::rate(s, s.failed)),
                ],
            },
            Chart {
                title: format!("Ack latency per second (from {})", r.ack_latency_from),
                unit: "ms".into(),
                series: vec![
                    series(tl, "p50", html::BLUE, false, |s| s.ack_p50_ms),
                    series(tl, "p99", html::ORANGE, false, |s| s.ack_p99_ms),
                ],
            },
        ],
        notes: vec![
            "Each point is one second of the run (the rate of a last, partial second is over \
             the part the run covered, and not drawn when that is under 0.2 s). Latency \
             percentiles per second are over the messages acknowledged in that second."
                .into(),
        ],
    };
    html::render(&page)
}
