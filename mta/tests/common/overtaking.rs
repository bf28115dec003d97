//! What the priority tests check of the sink's log: that every urgent message
//! overtook most of a bulk backlog, and how long each took from submission.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use postroad_loadtest::sink::ReceivedMessage;

/// Now, in Unix microseconds (the sink's clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Checks that each urgent message (a key of `submitted`: recipient → submission
/// time) arrived with more than a tenth of the `bulk` messages (recipients starting
/// `reader`) still after it; `log` explains a failure. Returns the urgent messages'
/// submit-to-receiver times in milliseconds, sorted, and their p50 and p95 as a line.
pub fn urgent_overtook(
    messages: &[ReceivedMessage],
    submitted: &HashMap<String, u64>,
    bulk: usize,
    log: impl Fn() -> String,
) -> String {
    let mut delays_ms: Vec<f64> = Vec::new();
    for m in messages
        .iter()
        .filter(|m| submitted.contains_key(&m.recipients[0]))
    {
        let sent = submitted[&m.recipients[0]];
        delays_ms.push(m.received_at_us.saturating_sub(sent) as f64 / 1000.0);
        // Behind the backlog it would arrive with the last bulk messages.
        let bulk_after = messages
            .iter()
            .filter(|b| {
                b.recipients[0].starts_with("reader") && b.received_at_us > m.received_at_us
            })
            .count();
        assert!(
            bulk_after > bulk / 10,
            "{} arrived with only {bulk_after} bulk messages after it:\n{}",
            m.recipients[0],
            log()
        );
    }
    assert_eq!(delays_ms.len(), submitted.len());
    delays_ms.sort_by(f64::total_cmp);
    let p95 = delays_ms[(delays_ms.len() * 95).div_ceil(100) - 1];
    format!(
        "submit to receiver p50 {:.0} ms, p95 {p95:.0} ms, max {:.0} ms",
        delays_ms[delays_ms.len() / 2],
        delays_ms[delays_ms.len() - 1]
    )
}
