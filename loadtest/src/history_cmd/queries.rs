//! Timing the history's reads as the API runs them: one client, one query at a time,
//! parameters drawn from what the fill wrote.

use std::time::{Duration, Instant};

use postroad_history::{EventKind, HistoryQuery, HistoryStore};
use rand::Rng;

use super::Percentiles;
use super::fill::{EMAIL_TYPES, Synthetic};

const DAY_MS: u64 = 86_400_000;

pub struct QueryReport {
    pub kinds: Vec<(&'static str, Percentiles, f64)>,
}

impl QueryReport {
    pub fn print(&self) {
        for (name, p, rows) in &self.kinds {
            println!("query {name}: {p}; {rows:.1} rows per answer");
        }
    }
}

/// `queries` of each kind, after as many unmeasured ones to warm the caches.
pub async fn run(
    store: &HistoryStore,
    data: &Synthetic,
    queries: usize,
    limit: u32,
) -> anyhow::Result<QueryReport> {
    let mut rng = rand::rng();
    let mut kinds = Vec::new();
    type Pick = fn(&Synthetic, &mut rand::rngs::ThreadRng, u32) -> HistoryQuery;
    let lists: [(&'static str, Pick); 4] = [
        ("by user (userId, newest first)", |d, r, limit| {
            HistoryQuery {
                user_id: Some(r.random_range(0..d.users)),
                limit,
                ..HistoryQuery::default()
            }
        }),
        ("by recipient", |d, r, limit| HistoryQuery {
            recipient: Some(Synthetic::recipient(r.random_range(0..d.users))),
            limit,
            ..HistoryQuery::default()
        }),
        ("status=bounced in a 7-day window", |d, r, limit| {
            let (from, to) = window(d, r, 7 * DAY_MS);
            HistoryQuery {
                status: Some(EventKind::Bounced),
                from_ms: Some(from),
                to_ms: Some(to),
                limit,
                ..HistoryQuery::default()
            }
        }),
        ("emailType in a 1-day window", |d, r, limit| {
            let (from, to) = window(d, r, DAY_MS);
            HistoryQuery {
                email_type: Some(EMAIL_TYPES[r.random_range(0..EMAIL_TYPES.len())].to_string()),
                from_ms: Some(from),
                to_ms: Some(to),
                limit,
                ..HistoryQuery::default()
            }
        }),
    ];
    for (name, pick) in lists {
        let mut times = Vec::with_capacity(queries);
        let mut rows = 0usize;
        for round in 0..queries * 2 {
            let query = pick(data, &mut rng, limit);
            let t = Instant::now();
            let page = store.query(&query).await?;
            let took = t.elapsed();
            if round >= queries {
                times.push(took);
                rows += page.rows.len();
            }
        }
        kinds.push((
            name,
            Percentiles::of(times),
            rows as f64 / queries.max(1) as f64,
        ));
    }
    let mut times: Vec<Duration> = Vec::with_capacity(queries);
    let mut rows = 0usize;
    for round in 0..queries * 2 {
        let id = data.message_id(rng.random_range(0..data.rows));
        let t = Instant::now();
        let statuses = store.status_by_message_id(id).await?;
        let events = store.by_message_id(id, 1000).await?;
        let took = t.elapsed();
        if round >= queries {
            times.push(took);
            rows += statuses.len() + events.len();
        }
    }
    kinds.push((
        "one message (statuses + timeline)",
        Percentiles::of(times),
        rows as f64 / queries.max(1) as f64,
    ));
    Ok(QueryReport { kinds })
}

/// A random window of `len` ms within the filled time span.
fn window(d: &Synthetic, r: &mut rand::rngs::ThreadRng, len: u64) -> (u64, u64) {
    let latest = d.span_ms.saturating_sub(len).max(1);
    let from = d.start_ms + r.random_range(0..latest);
    (from, from + len)
}
