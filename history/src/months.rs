//! Whole months of history, as archival needs them: how many events and recipients a
//! month holds, its events a page at a time, which old months still have rows, and
//! removing a month once it is archived (on MySQL its partition goes: emptied, then
//! merged into `p_before`, so a late event for that month lands where the next pass
//! finds it).

use chrono::{Months, NaiveDate, NaiveTime};
use postroad_queue::DeliveryEvent;
use uuid::Uuid;

use crate::mysql::{datetime, to_ms};
use crate::partitions::{self, BEFORE, name_of};
use crate::rows::{EVENT_SELECT, EventRow, with_times};
use crate::store::Inner;
use crate::{HistoryError, HistoryStore, Result};

/// Rows a range `DELETE` removes per statement (months kept in `p_before`, SQLite).
const DELETE_CHUNK: u32 = 10_000;

/// Held while one process archives: MySQL's named lock `postroad_history_archive` on
/// a connection taken out of the pool (closing it when this drops releases the
/// lock); nothing on SQLite, whose file has one server.
pub struct ArchiveLock {
    _connection: Option<sqlx::MySqlConnection>,
}

/// What a month holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonthCounts {
    pub events: u64,
    /// Rows of `email_history`: (message, recipient) pairs.
    pub recipients: u64,
}

/// `[first day of month, first day of the next)` in Unix ms.
fn bounds(month: NaiveDate) -> (u64, u64) {
    let ms = |d: NaiveDate| {
        d.and_time(NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
            .max(0) as u64
    };
    (ms(month), ms(month + Months::new(1)))
}

fn month_of_key(key: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d").ok()
}

impl HistoryStore {
    /// The archival lock, unless another process holds it.
    pub async fn try_archive_lock(&self) -> Result<Option<ArchiveLock>> {
        match &self.backend {
            Inner::Mysql(m) => {
                let mut connection = m.pool.acquire().await?.detach();
                let got: Option<i64> =
                    sqlx::query_scalar("SELECT GET_LOCK('postroad_history_archive', 0)")
                        .fetch_one(&mut connection)
                        .await?;
                Ok((got == Some(1)).then(|| ArchiveLock {
                    _connection: Some(connection),
                }))
            }
            Inner::Sqlite(_) => Ok(Some(ArchiveLock { _connection: None })),
        }
    }

    /// The events and recipients of the messages sent in `month`.
    pub async fn month_counts(&self, month: NaiveDate) -> Result<MonthCounts> {
        let (from, to) = bounds(month);
        let count = |table: &str| {
            format!("SELECT COUNT(*) FROM {table} WHERE sent_at >= ? AND sent_at < ?")
        };
        let (events, recipients): (i64, i64) = match &self.backend {
            Inner::Mysql(m) => {
                let one = |sql: String| async move {
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(datetime(from))
                        .bind(datetime(to))
                        .fetch_one(&m.pool)
                        .await
                };
                (
                    one(count("email_events")).await?,
                    one(count("email_history")).await?,
                )
            }
            Inner::Sqlite(s) => {
                let one = |sql: String| async move {
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(from as i64)
                        .bind(to as i64)
                        .fetch_one(&s.pool)
                        .await
                };
                (
                    one(count("email_events")).await?,
                    one(count("email_history")).await?,
                )
            }
        };
        Ok(MonthCounts {
            events: events as u64,
            recipients: recipients as u64,
        })
    }

    /// Up to `limit` events of messages sent in `month`, each complete (its
    /// recipient's sender, domain and metadata), in event id order after `after`.
    pub async fn month_events(
        &self,
        month: NaiveDate,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<DeliveryEvent>> {
        let (from, to) = bounds(month);
        let after = after.unwrap_or(Uuid::nil()).into_bytes();
        let rows: Vec<EventRow> = match &self.backend {
            Inner::Mysql(m) => {
                let sql = format!(
                    "SELECT {} FROM email_events AS e JOIN email_history AS h \
                     ON h.message_id = e.message_id AND h.recipient = e.recipient AND h.sent_at = e.sent_at \
                     WHERE e.sent_at >= ? AND e.sent_at < ? AND e.event_id > ? \
                     ORDER BY e.event_id LIMIT ?",
                    with_times(EVENT_SELECT, to_ms)
                );
                sqlx::query_as(&sql)
                    .bind(datetime(from))
                    .bind(datetime(to))
                    .bind(after.as_slice())
                    .bind(i64::from(limit))
                    .fetch_all(&m.pool)
                    .await?
            }
            Inner::Sqlite(s) => {
                let sql = format!(
                    "SELECT {} FROM email_events AS e JOIN email_history AS h \
                     ON h.message_id = e.message_id AND h.recipient = e.recipient \
                     WHERE e.sent_at >= ? AND e.sent_at < ? AND e.event_id > ? \
                     ORDER BY e.event_id LIMIT ?",
                    with_times(EVENT_SELECT, str::to_string)
                );
                sqlx::query_as(&sql)
                    .bind(from as i64)
                    .bind(to as i64)
                    .bind(after.as_slice())
                    .bind(i64::from(limit))
                    .fetch_all(&s.pool)
                    .await?
            }
        };
        rows.into_iter().map(EventRow::decode).collect()
    }

    /// The months before `before` (a first of the month) that still have rows, or
    /// (MySQL) a partition of their own, oldest first.
    pub async fn months_before(&self, before: NaiveDate) -> Result<Vec<NaiveDate>> {
        let (cutoff, _) = bounds(before);
        let mut months: Vec<NaiveDate> = match &self.backend {
            Inner::Mysql(m) => {
                let names = m.partition_names("email_events").await?;
                let mut months: Vec<NaiveDate> = names
                    .iter()
                    .filter_map(|n| partitions::month_of(n))
                    .filter(|month| *month < before)
                    .collect();
                if names.iter().any(|n| n == BEFORE) {
                    let keys: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT DISTINCT DATE_FORMAT(sent_at, '%Y-%m') FROM email_events PARTITION ({BEFORE}) WHERE sent_at < ? \
                         UNION SELECT DISTINCT DATE_FORMAT(sent_at, '%Y-%m') FROM email_history PARTITION ({BEFORE}) WHERE sent_at < ?"
                    ))
                    .bind(datetime(cutoff))
                    .bind(datetime(cutoff))
                    .fetch_all(&m.pool)
                    .await?;
                    months.extend(keys.iter().filter_map(|k| month_of_key(k)));
                }
                months
            }
            Inner::Sqlite(s) => {
                let keys: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT strftime('%Y-%m', sent_at / 1000, 'unixepoch') FROM email_events WHERE sent_at < ? \
                     UNION SELECT DISTINCT strftime('%Y-%m', sent_at / 1000, 'unixepoch') FROM email_history WHERE sent_at < ?",
                )
                .bind(cutoff as i64)
                .bind(cutoff as i64)
                .fetch_all(&s.pool)
                .await?;
                keys.iter().filter_map(|k| month_of_key(k)).collect()
            }
        };
        months.sort();
        months.dedup();
        Ok(months)
    }

    /// Removes every row of `month` from both tables. On MySQL, a month with its own
    /// partition is emptied and the partition merged into `p_before` (which must be
    /// right before it: months go oldest first); a partition holding rows of other
    /// months is refused, as emptying it would lose them.
    pub async fn drop_month(&self, month: NaiveDate) -> Result<()> {
        let (from, to) = bounds(month);
        match &self.backend {
            Inner::Mysql(m) => {
                for table in ["email_events", "email_history"] {
                    let names = m.partition_names(table).await?;
                    let own = name_of(month);
                    let Some(at) = names.iter().position(|n| *n == own) else {
                        // In p_before: by range, a chunk at a time.
                        loop {
                            let done = sqlx::query(&format!(
                                "DELETE FROM {table} WHERE sent_at >= ? AND sent_at < ? LIMIT {DELETE_CHUNK}"
                            ))
                            .bind(datetime(from))
                            .bind(datetime(to))
                            .execute(&m.pool)
                            .await?;
                            if done.rows_affected() < u64::from(DELETE_CHUNK) {
                                break;
                            }
                        }
                        continue;
                    };
                    let schema_error = |reason: String| HistoryError::Schema {
                        location: format!("{table} partition {own}"),
                        reason,
                    };
                    if at == 0 || names[at - 1] != BEFORE {
                        return Err(schema_error(format!(
                            "archival removes the oldest month first, but {} comes before it",
                            if at == 0 {
                                "nothing"
                            } else {
                                names[at - 1].as_str()
                            }
                        )));
                    }
                    let in_partition: i64 = sqlx::query_scalar(&format!(
                        "SELECT COUNT(*) FROM {table} PARTITION ({own})"
                    ))
                    .fetch_one(&m.pool)
                    .await?;
                    let in_month: i64 = sqlx::query_scalar(&format!(
                        "SELECT COUNT(*) FROM {table} WHERE sent_at >= ? AND sent_at < ?"
                    ))
                    .bind(datetime(from))
                    .bind(datetime(to))
                    .fetch_one(&m.pool)
                    .await?;
                    if in_partition != in_month {
                        return Err(schema_error(format!(
                            "it holds {in_partition} rows but the month has {in_month}: rows of \
                             other months would be lost (was a partition dropped by hand?)"
                        )));
                    }
                    sqlx::query(&format!("ALTER TABLE {table} TRUNCATE PARTITION {own}"))
                        .execute(&m.pool)
                        .await?;
                    let end = month + Months::new(1);
                    sqlx::query(&format!(
                        "ALTER TABLE {table} REORGANIZE PARTITION {BEFORE}, {own} INTO \
                         (PARTITION {BEFORE} VALUES LESS THAN (TO_DAYS('{end}')))"
                    ))
                    .execute(&m.pool)
                    .await?;
                    tracing::info!(table, partition = %own, "history partition archived and dropped");
                }
            }
            Inner::Sqlite(s) => {
                let mut tx = s.pool.begin().await?;
                for table in ["email_events", "email_history"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE sent_at >= ? AND sent_at < ?"
                    ))
                    .bind(from as i64)
                    .bind(to as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_its_first_day_to_the_next_months() {
        let (from, to) = bounds("2026-02-01".parse().unwrap());
        assert_eq!(from, 1_769_904_000_000);
        assert_eq!(to - from, 28 * 86_400_000);
        assert_eq!(month_of_key("2026-02"), "2026-02-01".parse().ok());
        assert_eq!(month_of_key("2026-13"), None);
    }
}
