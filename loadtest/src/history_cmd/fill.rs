//! The synthetic history: which message, user, type and outcome row `i` has (a pure
//! function of `i`, so the queries can pick real users, types and ids without reading
//! anything back), and the fill that writes it through [`HistoryStore::insert`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{Months, NaiveDate, Utc};
use postroad_history::{
    DeliveryEvent, EventKind, HistoryQuery, HistoryStore, MessageId, Metadata, Reply, Response,
};
use tokio::sync::mpsc;

use super::Percentiles;

/// Email types, the first ones most common (by [`Synthetic::email_type`]).
pub const EMAIL_TYPES: [&str; 8] = [
    "receipt",
    "newsletter",
    "welcome",
    "password-reset",
    "digest",
    "promo",
    "alert",
    "invoice",
];

/// `rows` messages, one recipient each, evenly spread over the `months` ending at the
/// start of today (UTC): the same rows on every run of the same day.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub rows: u64,
    pub users: u64,
    pub start_ms: u64,
    pub span_ms: u64,
}

/// splitmix64: a well-mixed number from `i`.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Synthetic {
    pub fn new(rows: u64, months: u32, users: u64) -> Self {
        let end = Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc();
        let start = end - Months::new(months);
        let start_ms = start.timestamp_millis() as u64;
        Self {
            rows,
            users,
            start_ms,
            span_ms: end.timestamp_millis() as u64 - start_ms,
        }
    }

    /// The first day a message is sent on.
    pub fn first_day(&self) -> NaiveDate {
        chrono::DateTime::from_timestamp_millis(self.start_ms as i64)
            .map(|t| t.date_naive())
            .unwrap_or_default()
    }

    pub fn sent_ms(&self, i: u64) -> u64 {
        self.start_ms + (u128::from(i) * u128::from(self.span_ms) / u128::from(self.rows)) as u64
    }

    /// A UUIDv7 whose time is the message's sending time.
    pub fn message_id(&self, i: u64) -> MessageId {
        let bits = (u128::from(self.sent_ms(i)) << 80)
            | (0x7u128 << 76)
            | (0x2u128 << 62)
            | u128::from(i & ((1 << 62) - 1));
        MessageId::from_u128(bits)
    }

    pub fn user(&self, i: u64) -> u64 {
        mix(i) % self.users
    }

    pub fn recipient(user: u64) -> String {
        format!("user{user}@example{}.com", user % 500)
    }

    /// Types by a skewed share: half the mail is receipts and newsletters.
    pub fn email_type(i: u64) -> &'static str {
        let r = mix(i ^ 0xA5A5) % 100;
        let index = match r {
            0..=29 => 0,
            30..=49 => 1,
            50..=59 => 2,
            60..=69 => 3,
            70..=79 => 4,
            80..=89 => 5,
            90..=94 => 6,
            _ => 7,
        };
        EMAIL_TYPES[index]
    }

    /// 93% delivered, 5% bounced, 1% still deferred, 1% expired.
    pub fn outcome(i: u64) -> EventKind {
        match mix(i ^ 0x5A5A) % 100 {
            0..=92 => EventKind::Delivered,
            93..=97 => EventKind::Bounced,
            98 => EventKind::Deferred,
            _ => EventKind::Expired,
        }
    }

    /// Message `i`'s `queued` event and its outcome.
    pub fn events(&self, i: u64) -> [DeliveryEvent; 2] {
        let user = self.user(i);
        let recipient = Self::recipient(user);
        let domain = recipient
            .split_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let meta = Metadata {
            user_id: Some(user),
            email_type: Some(Self::email_type(i).to_string()),
            tenant: Some(format!("tenant{}", user % 10)),
            ..Metadata::default()
        };
        let sent = self.sent_ms(i);
        let id = self.message_id(i);
        let event = |kind, at_ms, attempt, reply: Option<Response>| DeliveryEvent {
            event_id: uuid::Uuid::from_u128(id.as_u128() ^ (u128::from(attempt) + 1)),
            kind,
            message_id: id,
            sender: "notifications@app.example".to_string(),
            recipient: recipient.clone(),
            domain: domain.clone(),
            at_ms,
            attempt,
            remote_host: reply
                .as_ref()
                .map(|_| format!("mx1.{domain} [192.0.2.{}]:25", user % 250)),
            reply,
            meta: meta.clone(),
            provider_message_id: None,
            reason: None,
        };
        let outcome = Self::outcome(i);
        let reply = match outcome {
            EventKind::Delivered => {
                Reply::owned(250, "2.0.0".parse().ok(), format!("Ok: queued as {i:X}"))
            }
            EventKind::Bounced => Reply::owned(550, "5.1.1".parse().ok(), "user unknown"),
            _ => Reply::owned(451, "4.7.1".parse().ok(), "try again later"),
        };
        [
            event(EventKind::Queued, sent, 0, None),
            event(outcome, sent + 1500, 1, Some(Response::Remote(reply))),
        ]
    }
}

/// What the fill measured.
pub struct FillReport {
    pub rows: u64,
    pub events: u64,
    pub elapsed: Duration,
    pub writers: usize,
    pub batch_events: usize,
    pub inserts: Percentiles,
}

impl FillReport {
    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "fill: {} rows, {} events in {:.1} s: {:.0} events/s ({:.0} rows/s), {} writer(s), \
             batches of {} events",
            self.rows,
            self.events,
            secs,
            self.events as f64 / secs,
            self.rows as f64 / secs,
            self.writers,
            self.batch_events,
        );
        println!("fill: one batch's transaction: {}", self.inserts);
    }
}

/// Whether the history holds any row.
pub async fn holds_rows(store: &HistoryStore) -> anyhow::Result<bool> {
    let page = store
        .query(&HistoryQuery {
            limit: 1,
            ..HistoryQuery::default()
        })
        .await?;
    Ok(!page.rows.is_empty())
}

/// Writes every row: batch `k` holds the `queued` events of messages `k*batch..` and
/// the outcomes of batch `k - 1`, so outcomes update rows written earlier, as in
/// production. Events are built by a generator task ahead of the writers.
pub async fn run(
    store: &HistoryStore,
    data: &Synthetic,
    batch: usize,
    writers: usize,
) -> anyhow::Result<FillReport> {
    let (tx, rx) = mpsc::channel::<Vec<DeliveryEvent>>(writers * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let generator = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut pending: Vec<DeliveryEvent> = Vec::new();
            let mut start = 0;
            while start < data.rows {
                let end = (start + batch as u64).min(data.rows);
                let mut events = std::mem::take(&mut pending);
                for i in start..end {
                    let [queued, outcome] = data.events(i);
                    events.push(queued);
                    pending.push(outcome);
                }
                if tx.blocking_send(events).is_err() {
                    return;
                }
                start = end;
            }
            let _ = tx.blocking_send(pending);
        })
    };
    let written = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let progress = {
        let written = written.clone();
        let total = data.rows * 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = written.load(Ordering::Relaxed);
                let secs = begun.elapsed().as_secs_f64();
                eprintln!(
                    "  {n} of {total} events ({:.0}%), {:.0} events/s",
                    n as f64 * 100.0 / total as f64,
                    n as f64 / secs
                );
            }
        })
    };
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, rx, written) = (store.clone(), rx.clone(), written.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let Some(events) = rx.lock().await.recv().await else {
                        return Ok::<_, anyhow::Error>(times);
                    };
                    let t = Instant::now();
                    store.insert(&events).await?;
                    times.push(t.elapsed());
                    written.fetch_add(events.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await??);
    }
    let elapsed = begun.elapsed();
    progress.abort();
    generator.await?;
    Ok(FillReport {
        rows: data.rows,
        events: written.load(Ordering::Relaxed),
        elapsed,
        writers,
        batch_events: batch * 2,
        inserts: Percentiles::of(times),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_spread_in_time_and_over_users_and_types() {
        let data = Synthetic::new(1000, 12, 100);
        assert!(data.sent_ms(0) < data.sent_ms(999));
        assert_eq!(
            postroad_history::status::sent_at_ms(data.message_id(7)),
            data.sent_ms(7)
        );
        let users: std::collections::HashSet<u64> = (0..1000).map(|i| data.user(i)).collect();
        assert!(users.len() > 90, "{}", users.len());
        let types: std::collections::HashSet<&str> = (0..1000).map(Synthetic::email_type).collect();
        assert_eq!(types.len(), EMAIL_TYPES.len());
        let [queued, outcome] = data.events(3);
        assert_eq!(queued.kind, EventKind::Queued);
        assert_ne!(queued.event_id, outcome.event_id);
        assert_eq!(queued.meta.user_id, Some(data.user(3)));
    }
}
