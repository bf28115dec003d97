//! The MySQL/MariaDB backend: the tables of `migrations/mysql/`, partitioned by month.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use postroad_queue::{DeliveryEvent, MessageId};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::query::Query;

use crate::partitions::{self, plan};
use crate::query::{Filter, Value, clamp_limit};
use crate::rows::{EVENT_SELECT, EventRow, STATUS_SELECT, StatusRow, with_times};
use crate::schema::{self, Applied};
use crate::write::{self, Conflicts, Dialect, Param, Statements};
use crate::{
    HistoryConfig, HistoryError, HistoryQuery, InsertOutcome, Page, RecipientStatus, Result,
};

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/mysql");

/// Longest wait for a pooled connection (MySQL down: the batch fails and is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a batch's transaction may take before it is abandoned and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The partitioned tables.
const TABLES: [&str; 2] = ["email_history", "email_events"];

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(&Conflicts {
        // A replayed event (same id, same sent_at) changes nothing.
        replayed_event: "ON DUPLICATE KEY UPDATE event_id = event_id",
        update_status: "ON DUPLICATE KEY UPDATE",
        incoming: |column| format!("VALUES({column})"),
        greatest: "GREATEST",
        choose: "IF",
    })
});

impl Dialect for MySql {
    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn bind<'q>(
        query: Query<'q, Self, MySqlArguments>,
        param: Param<'q>,
    ) -> Query<'q, Self, MySqlArguments> {
        match param {
            Param::Blob(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
            Param::Int(v) => query.bind(v),
            Param::Time(ms) => query.bind(datetime(ms)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MysqlHistory {
    pub(crate) pool: MySqlPool,
}

impl MysqlHistory {
    /// Connects (one connection now, to fail early with a clear error; more as
    /// needed up to `history.max_connections`).
    pub async fn connect(url: &str, config: &HistoryConfig, location: &str) -> Result<Self> {
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| HistoryError::Config(format!("history URL {location}: {e}")))?
            .charset("utf8mb4")
            .timezone(Some("+00:00".to_string()));
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| HistoryError::Unreachable {
                location: location.to_string(),
                source,
            })?;
        Ok(Self { pool })
    }

    /// Connects and refuses a schema other than this build's.
    pub async fn open_current(url: &str, config: &HistoryConfig, location: &str) -> Result<Self> {
        let store = Self::connect(url, config, location).await?;
        let pending = match store.applied().await {
            Ok(applied) => schema::pending(applied.as_deref(), &MIGRATOR, location),
            Err(e) => Err(e),
        };
        if let Err(e) = pending.and_then(|p| schema::require_current(&p, location)) {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    async fn applied(&self) -> Result<Option<Vec<Applied>>> {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query_as(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows))
    }

    /// Applies pending migrations; returns their versions.
    pub async fn migrate(&self, location: &str) -> Result<Vec<i64>> {
        let pending = schema::pending(self.applied().await?.as_deref(), &MIGRATOR, location)?;
        MIGRATOR.run(&self.pool).await?;
        Ok(pending)
    }

    pub async fn maintain_partitions(&self, today: NaiveDate, ahead: u32) -> Result<Vec<String>> {
        let mut added = Vec::new();
        for table in TABLES {
            let names = self.partition_names(table).await?;
            if !names.iter().any(|n| n == partitions::FUTURE) {
                return Err(HistoryError::Schema {
                    location: table.to_string(),
                    reason: format!("it has no {} partition to split", partitions::FUTURE),
                });
            }
            if let Some(split) = plan(&names, today, ahead) {
                sqlx::query(&split.sql(table)).execute(&self.pool).await?;
                tracing::info!(table, partitions = ?split.added(), "history partitions added");
                added.extend(split.added().into_iter().map(|p| format!("{table}.{p}")));
            }
        }
        Ok(added)
    }

    /// `table`'s partitions, in order.
    pub(crate) async fn partition_names(&self, table: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT PARTITION_NAME FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY PARTITION_ORDINAL_POSITION",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn insert(&self, events: &[DeliveryEvent]) -> Result<InsertOutcome> {
        match tokio::time::timeout(WRITE_TIMEOUT, write::write(&self.pool, events)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HistoryError::WriteFailed {
                pending: events.len(),
                reason: format!("MySQL took longer than {WRITE_TIMEOUT:?}"),
            }),
        }
    }

    pub async fn query(&self, query: &HistoryQuery) -> Result<Page> {
        let filter = Filter::new(query).map_err(HistoryError::Query)?;
        let limit = clamp_limit(query.limit);
        let sql = format!(
            "SELECT {} FROM email_history WHERE {} ORDER BY sent_at DESC, id DESC LIMIT ?",
            with_times(STATUS_SELECT, to_ms),
            filter.sql
        );
        let mut q = sqlx::query_as::<MySql, StatusRow>(&sql);
        for value in filter.values {
            q = match value {
                Value::Int(v) => q.bind(v),
                Value::Text(v) => q.bind(v),
                Value::Time(ms) => q.bind(datetime(ms)),
            };
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let rows = rows
            .into_iter()
            .map(StatusRow::decode)
            .collect::<Result<_>>()?;
        Ok(Page::new(rows, limit))
    }

    pub async fn statuses_of(&self, id: MessageId) -> Result<Vec<RecipientStatus>> {
        let sql = format!(
            "SELECT {} FROM email_history WHERE message_id = ? AND sent_at = ? \
             ORDER BY recipient, id",
            with_times(STATUS_SELECT, to_ms)
        );
        let rows: Vec<StatusRow> = sqlx::query_as(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
            .bind(datetime(crate::status::sent_at_ms(id)))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StatusRow::decode).collect()
    }

    pub async fn events_of(&self, id: MessageId, limit: u32) -> Result<Vec<DeliveryEvent>> {
        let sql = format!(
            "SELECT {} FROM email_events AS e JOIN email_history AS h \
             ON h.message_id = e.message_id AND h.recipient = e.recipient AND h.sent_at = e.sent_at \
             WHERE e.message_id = ? AND e.sent_at = ? \
             ORDER BY e.created_at DESC, e.event_id DESC LIMIT ?",
            with_times(EVENT_SELECT, to_ms)
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
            .bind(datetime(crate::status::sent_at_ms(id)))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .into_iter()
            .map(EventRow::decode)
            .collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }

    /// Recipients of `campaign` per (variant, status, whether the status came from a
    /// machine: a privacy proxy or a link scanner).
    pub async fn campaign_statuses(
        &self,
        campaign: &str,
    ) -> Result<Vec<(Option<String>, String, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT variant, status, CAST(COALESCE(reason = 'machine', 0) AS SIGNED) AS machine, COUNT(*) \
             FROM email_history WHERE campaign = ? GROUP BY variant, status, machine",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn count_events(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT kind, COUNT(*) FROM email_events GROUP BY kind")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A DATETIME(3) column as Unix milliseconds (the session time zone plays no part).
pub(crate) fn to_ms(column: &str) -> String {
    format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) DIV 1000 AS SIGNED)")
}

/// Unix milliseconds as a DATETIME(3) value (UTC). Out of range: the largest DATETIME.
pub(crate) fn datetime(ms: u64) -> NaiveDateTime {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| t.naive_utc())
        .filter(|t| t.date() <= NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date"))
        .unwrap_or_else(|| {
            NaiveDate::from_ymd_opt(9999, 12, 31)
                .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 999))
                .expect("a time")
        })
}
