//! The write path both backends share: a batch is one transaction holding the event
//! log's rows and then one status row per recipient, as multi-row statements of few
//! shapes (see [`crate::batch`]). What differs per backend is in [`Dialect`]: how a
//! value is bound (times are integers in SQLite, `DATETIME(3)` in MySQL) and the
//! conflict clauses.

use postroad_queue::DeliveryEvent;
use sqlx::query::Query;
use sqlx::{Database, Executor, IntoArguments, Pool};

use crate::batch::{Insert, chunks};
use crate::rows::Written;
use crate::status::{StatusUpdate, fold};
use crate::{InsertOutcome, Result};

/// The event log's columns, in the order [`event_row`] gives their values.
const EVENT_COLUMNS: [&str; 13] = [
    "event_id",
    "sent_at",
    "message_id",
    "recipient",
    "created_at",
    "kind",
    "attempt",
    "remote_host",
    "reply_code",
    "reply_enhanced",
    "reply_text",
    "provider_message_id",
    "reason",
];

/// `email_history`'s written columns, in the order [`status_row`] gives their values.
const STATUS_COLUMNS: [&str; 22] = [
    "sent_at",
    "message_id",
    "recipient",
    "status",
    "status_rank",
    "status_at",
    "attempts",
    "sender",
    "domain",
    "remote_host",
    "reply_code",
    "reply_enhanced",
    "reply_text",
    "tenant",
    "campaign",
    "user_id",
    "email_type",
    "variant",
    "priority",
    "tags",
    "provider_message_id",
    "reason",
];

/// The columns that describe the current status: replaced together when an incoming
/// status wins, kept together when it loses. `status_at` is last because MySQL
/// evaluates assignments left to right, each seeing those before it, and the
/// condition reads it.
const STATUS_DETAIL: [&str; 7] = [
    "status",
    "remote_host",
    "reply_code",
    "reply_enhanced",
    "reply_text",
    "reason",
    "status_at",
];

/// One bound value.
pub(crate) enum Param<'a> {
    Blob(&'a [u8]),
    Text(Option<&'a str>),
    Int(Option<i64>),
    /// Unix milliseconds.
    Time(u64),
}

/// How a backend's SQL differs where the writer is concerned.
pub(crate) struct Conflicts {
    /// The event log's clause for a replayed event (same id): change nothing.
    pub replayed_event: &'static str,
    /// Opens the status row's update: `ON CONFLICT ... DO UPDATE SET` or its MySQL
    /// equivalent.
    pub update_status: &'static str,
    /// The incoming row's value of a column.
    pub incoming: fn(&str) -> String,
    /// The larger of two values (`MAX` or `GREATEST`).
    pub greatest: &'static str,
    /// The conditional (`IIF` or `IF`).
    pub choose: &'static str,
}

/// The two statements of the write path, in every shape.
pub(crate) struct Statements {
    events: Insert,
    statuses: Insert,
}

impl Statements {
    pub fn new(c: &Conflicts) -> Self {
        let new = c.incoming;
        let wins = format!(
            "({}, {}) >= (status_rank, status_at)",
            new("status_rank"),
            new("status_at")
        );
        let mut sets = vec![format!(
            "attempts = {}(attempts, {})",
            c.greatest,
            new("attempts")
        )];
        // Once known, a provider's message id stays (later events, opens say, have none).
        sets.push(format!(
            "provider_message_id = COALESCE({}, provider_message_id)",
            new("provider_message_id")
        ));
        sets.extend(
            STATUS_DETAIL
                .iter()
                .map(|col| format!("{col} = {}({wins}, {}, {col})", c.choose, new(col))),
        );
        sets.push(format!(
            "status_rank = {}(status_rank, {})",
            c.greatest,
            new("status_rank")
        ));
        Self {
            events: Insert::new("email_events", &EVENT_COLUMNS, c.replayed_event),
            statuses: Insert::new(
                "email_history",
                &STATUS_COLUMNS,
                &format!("{} {}", c.update_status, sets.join(", ")),
            ),
        }
    }
}

/// A backend the writer can write to.
pub(crate) trait Dialect: Database {
    fn statements() -> &'static Statements;

    fn bind<'q>(
        query: Query<'q, Self, <Self as Database>::Arguments<'q>>,
        param: Param<'q>,
    ) -> Query<'q, Self, <Self as Database>::Arguments<'q>>;
}

/// Stores `events` in one transaction: each into the event log unless it is there
/// already, and each recipient's status moved forward.
pub(crate) async fn write<DB: Dialect>(
    pool: &Pool<DB>,
    events: &[DeliveryEvent],
) -> Result<InsertOutcome>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    let statements = DB::statements();
    let written: Vec<Written<'_>> = events.iter().map(Written::of).collect();
    let updates = fold(events);
    let mut tx = pool.begin().await?;
    let mut offset = 0;
    for chunk in chunks(events) {
        let rows = chunk
            .iter()
            .zip(&written[offset..])
            .map(|(e, w)| event_row(e, w));
        offset += chunk.len();
        execute(&mut *tx, &statements.events, chunk.len(), rows).await?;
    }
    for chunk in chunks(&updates) {
        let rows = chunk.iter().map(|u| status_row(u, &written[u.index]));
        execute(&mut *tx, &statements.statuses, chunk.len(), rows).await?;
    }
    tx.commit().await?;
    Ok(InsertOutcome {
        events: events.len() as u64,
        recipients: updates.len() as u64,
    })
}

async fn execute<'q, DB: Dialect, const N: usize>(
    conn: &mut DB::Connection,
    insert: &'q Insert,
    rows: usize,
    values: impl Iterator<Item = [Param<'q>; N]>,
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> <DB as Database>::Arguments<'a>: IntoArguments<'a, DB>,
{
    let mut query = sqlx::query::<DB>(insert.sql(rows));
    for param in values.flatten() {
        query = DB::bind(query, param);
    }
    query.execute(conn).await?;
    Ok(())
}

fn event_row<'a>(e: &'a DeliveryEvent, w: &'a Written<'a>) -> [Param<'a>; 13] {
    [
        Param::Blob(&w.event_id),
        Param::Time(w.sent_at_ms),
        Param::Blob(&w.message_id),
        Param::Text(Some(&e.recipient)),
        Param::Time(e.at_ms),
        Param::Text(Some(e.kind.as_str())),
        Param::Int(Some(i64::from(e.attempt))),
        Param::Text(e.remote_host.as_deref()),
        Param::Int(w.reply_code),
        Param::Text(w.reply_enhanced.as_deref()),
        Param::Text(w.reply_text),
        Param::Text(e.provider_message_id.as_deref()),
        Param::Text(e.reason.as_deref()),
    ]
}

fn status_row<'a>(u: &StatusUpdate<'a>, w: &'a Written<'a>) -> [Param<'a>; 22] {
    let e = u.event;
    [
        Param::Time(w.sent_at_ms),
        Param::Blob(&w.message_id),
        Param::Text(Some(&e.recipient)),
        Param::Text(Some(e.kind.as_str())),
        Param::Int(Some(i64::from(u.rank()))),
        Param::Time(e.at_ms),
        Param::Int(Some(i64::from(u.attempts))),
        Param::Text(Some(&e.sender)),
        Param::Text(Some(&e.domain)),
        Param::Text(e.remote_host.as_deref()),
        Param::Int(w.reply_code),
        Param::Text(w.reply_enhanced.as_deref()),
        Param::Text(w.reply_text),
        Param::Text(e.meta.tenant.as_deref()),
        Param::Text(e.meta.campaign.as_deref()),
        Param::Int(w.user_id),
        Param::Text(e.meta.email_type.as_deref()),
        Param::Text(e.meta.variant.as_deref()),
        Param::Text(w.priority),
        Param::Text(w.tags.as_deref()),
        Param::Text(e.provider_message_id.as_deref()),
        Param::Text(e.reason.as_deref()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_columns_move_together_and_the_rank_last() {
        let s = Statements::new(&Conflicts {
            replayed_event: "ON CONFLICT (event_id) DO NOTHING",
            update_status: "ON CONFLICT (message_id, recipient) DO UPDATE SET",
            incoming: |c| format!("excluded.{c}"),
            greatest: "MAX",
            choose: "IIF",
        });
        let sql = s.statuses.sql(1);
        assert_eq!(sql.matches('?').count(), STATUS_COLUMNS.len());
        let sets = sql.split_once("DO UPDATE SET ").unwrap().1;
        let assigned: Vec<&str> = sets
            .split(", ")
            .filter_map(|s| s.split_once(" = ").map(|(c, _)| c))
            .collect();
        assert_eq!(assigned.first(), Some(&"attempts"));
        assert_eq!(assigned.last(), Some(&"status_rank"));
        assert_eq!(assigned[assigned.len() - 2], "status_at");
        assert_eq!(assigned.len(), STATUS_DETAIL.len() + 3);
    }
}
