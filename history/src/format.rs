use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat};
use postroad_queue::{DeliveryEvent, Response};

use crate::RecipientStatus;

const EVENT_HEADERS: [&str; 8] = [
    "TIME (UTC)",
    "KIND",
    "MESSAGE ID",
    "RECIPIENT",
    "ATTEMPT",
    "REMOTE HOST",
    "REASON",
    "REPLY",
];

const STATUS_HEADERS: [&str; 9] = [
    "SENT (UTC)",
    "STATUS",
    "MESSAGE ID",
    "RECIPIENT",
    "ATTEMPTS",
    "USER",
    "TYPE",
    "REASON",
    "REPLY",
];

/// Renders events as an aligned table for a terminal, one line per event, in the
/// order given: time (ISO 8601, UTC, milliseconds), kind, message id, recipient,
/// attempt, remote host, the bounce reason and the reply. Multi-line replies are joined with ` / `, and
/// control characters (a remote server chooses the reply text) are shown as `?`, so
/// nothing in the output can drive the terminal. No rows gives `(no history)`.
pub fn format_rows(rows: &[DeliveryEvent]) -> String {
    let cells = rows.iter().map(|e| {
        [
            format_time(e.at_ms),
            e.kind.to_string(),
            e.message_id.to_string(),
            clean(&e.recipient),
            e.attempt.to_string(),
            e.remote_host.as_deref().map_or_else(|| "-".into(), clean),
            e.reason.as_deref().map_or_else(|| "-".into(), clean),
            reply_cell(e.reply.as_ref()),
        ]
    });
    table(EVENT_HEADERS, cells.collect(), 4)
}

/// Renders recipients' statuses the same way, one line per (message, recipient):
/// when the message was sent, its status, message id, recipient, attempts, the
/// sending application's user id and email type, and the reason and reply behind the
/// status.
pub fn format_statuses(rows: &[RecipientStatus]) -> String {
    let cells = rows.iter().map(|s| {
        [
            format_time(s.sent_at_ms),
            s.status.to_string(),
            s.message_id.to_string(),
            clean(&s.recipient),
            s.attempts.to_string(),
            s.meta.user_id.map_or_else(|| "-".into(), |u| u.to_string()),
            s.meta
                .email_type
                .as_deref()
                .map_or_else(|| "-".into(), clean),
            s.reason.as_deref().map_or_else(|| "-".into(), clean),
            reply_cell(s.reply.as_ref()),
        ]
    });
    table(STATUS_HEADERS, cells.collect(), 4)
}

fn reply_cell(reply: Option<&Response>) -> String {
    reply.map_or_else(|| "-".into(), |r| clean(&r.to_string()))
}

/// Left-aligned columns but column `numeric`, right-aligned; the last unpadded.
fn table<const N: usize>(headers: [&str; N], cells: Vec<[String; N]>, numeric: usize) -> String {
    if cells.is_empty() {
        return "(no history)\n".to_string();
    }
    let mut widths = headers.map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = headers.map(String::from);
    for row in std::iter::once(&header).chain(&cells) {
        for (i, cell) in row.iter().enumerate() {
            if i == N - 1 {
                out.push_str(cell);
            } else if i == numeric {
                let _ = write!(out, "{cell:>w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

fn format_time(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("@{at_ms}ms"),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str(" / ");
        }
        out.extend(line.chars().map(|c| if c.is_control() { '?' } else { c }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{EventKind, MessageId, Reply, Response};
    use uuid::Uuid;

    fn event(kind: EventKind, at_ms: u64, attempt: u32, reply: Option<Response>) -> DeliveryEvent {
        DeliveryEvent {
            event_id: Uuid::from_u128(at_ms as u128),
            kind,
            message_id: MessageId::from_u128(0x019a_c4d5_e3b8_7c1d_9a4f_0e2b_6c3d_8a71),
            sender: "app@example.test".into(),
            recipient: "bob@example.net".into(),
            domain: "example.net".into(),
            at_ms,
            attempt,
            remote_host: reply
                .as_ref()
                .map(|_| "mx1.example.net [192.0.2.1]:25".into()),
            reply,
            meta: Default::default(),
            provider_message_id: None,
            reason: None,
        }
    }

    #[test]
    fn renders_an_aligned_table() {
        let mut greylisted = event(
            EventKind::Deferred,
            1_767_225_660_123,
            1,
            Some(Response::Remote(Reply::new(
                451,
                "4.7.1",
                "Try again later\nGreylisted",
            ))),
        );
        greylisted.reason = Some("blocked".into());
        let rows = [
            event(EventKind::Queued, 1_767_225_600_000, 0, None),
            greylisted,
            event(
                EventKind::Delivered,
                1_767_229_200_456,
                12,
                Some(Response::Remote(Reply::new(
                    250,
                    "2.0.0",
                    "Ok \u{1b}[31mqueued",
                ))),
            ),
        ];
        let expected = "\
TIME (UTC)                KIND       MESSAGE ID                        RECIPIENT        ATTEMPT  REMOTE HOST                     REASON   REPLY
2026-01-01T00:00:00.000Z  queued     019ac4d5e3b87c1d9a4f0e2b6c3d8a71  bob@example.net        0  -                               -        -
2026-01-01T00:01:00.123Z  deferred   019ac4d5e3b87c1d9a4f0e2b6c3d8a71  bob@example.net        1  mx1.example.net [192.0.2.1]:25  blocked  451 4.7.1 Try again later / Greylisted
2026-01-01T01:00:00.456Z  delivered  019ac4d5e3b87c1d9a4f0e2b6c3d8a71  bob@example.net       12  mx1.example.net [192.0.2.1]:25  -        250 2.0.0 Ok ?[31mqueued
";
        assert_eq!(format_rows(&rows), expected);
    }

    #[test]
    fn no_rows() {
        assert_eq!(format_rows(&[]), "(no history)\n");
    }
}
