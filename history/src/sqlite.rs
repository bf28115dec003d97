//! The embedded backend: one SQLite file in WAL mode, migrated at open.

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use postroad_queue::{DeliveryEvent, MessageId};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite};

use crate::query::{Filter, Value, clamp_limit};
use crate::rows::{EVENT_SELECT, EventRow, STATUS_SELECT, StatusRow, with_times};
use crate::schema::{self, Applied};
use crate::write::{self, Conflicts, Dialect, Param, Statements};
use crate::{HistoryError, HistoryQuery, InsertOutcome, Page, RecipientStatus, Result};

/// The SQLite migrations, embedded in the binary.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// One connection for the writer, the rest for queries.
const MAX_CONNECTIONS: u32 = 4;

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    Statements::new(&Conflicts {
        replayed_event: "ON CONFLICT (event_id) DO NOTHING",
        update_status: "ON CONFLICT (message_id, recipient) DO UPDATE SET",
        incoming: |column| format!("excluded.{column}"),
        greatest: "MAX",
        choose: "IIF",
    })
});

impl Dialect for Sqlite {
    fn statements() -> &'static Statements {
        &STATEMENTS
    }

    fn bind<'q>(
        query: Query<'q, Self, SqliteArguments<'q>>,
        param: Param<'q>,
    ) -> Query<'q, Self, SqliteArguments<'q>> {
        match param {
            Param::Blob(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
            Param::Int(v) => query.bind(v),
            Param::Time(ms) => query.bind(ms_i64(ms)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SqliteHistory {
    pub(crate) pool: SqlitePool,
}

impl SqliteHistory {
    /// Opens (creating it and its parent directory if missing) the file at `path`,
    /// switches it to WAL mode and applies pending migrations.
    ///
    /// Commits use `synchronous=FULL`: each batch's commit is fsync'd, so history a
    /// batch reported as written survives a power loss. Returns the migrations it
    /// applied.
    pub async fn open(path: &Path) -> Result<(Self, Vec<i64>)> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| HistoryError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_with(options, &path.display().to_string()).await
    }

    /// From a URL: `sqlite://path/to/file.sqlite`, or `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Ok(Self::open_with(options, url).await?.0)
    }

    /// Opens an existing file for reading only, as `postroad history` does while the
    /// server may be writing it. Creates nothing and runs no migration; refuses a file
    /// whose schema is not this build's.
    pub async fn open_read_only(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        if !path.is_file() {
            return Err(HistoryError::NotFound(location));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        if let Err(e) = store.require_history(&location).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Refuses a file that is not a history database of this build's schema.
    async fn require_history(&self, location: &str) -> Result<()> {
        let Some(applied) = self.applied().await? else {
            return Err(HistoryError::NotHistory(location.to_string()));
        };
        let pending = schema::pending(Some(&applied), &MIGRATOR, location)?;
        schema::require_current(&pending, location)
    }

    async fn open_with(options: SqliteConnectOptions, location: &str) -> Result<(Self, Vec<i64>)> {
        let in_memory = location.contains(":memory:") || location.contains("mode=memory");
        let options = options
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full)
            .optimize_on_close(true, 400);

        // WAL is a property of the file: set it once, on one connection, rather than
        // on every pool connection (switching needs an exclusive lock that the busy
        // timeout does not wait for).
        if !in_memory {
            let mut conn = options
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .connect()
                .await?;
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut conn)
                .await?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    db = %location, journal_mode = %mode,
                    "history database is not in WAL mode; readers will block the writer"
                );
            }
            conn.close().await?;
        }

        let mut pool_options = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .idle_timeout(None)
            .max_lifetime(None);
        if in_memory {
            // The database lives as long as one connection to it does.
            pool_options = pool_options.min_connections(1);
        }
        let pool = pool_options.connect_with(options).await?;
        let store = Self { pool };
        // A file from a newer postroad is refused before anything touches it.
        let pending = schema::pending(store.applied().await?.as_deref(), &MIGRATOR, location)?;
        MIGRATOR.run(&store.pool).await?;
        tracing::debug!(db = %location, migrated = ?pending, "history database open");
        Ok((store, pending))
    }

    /// The rows of `_sqlx_migrations`, or `None` when the file has no such table.
    async fn applied(&self) -> Result<Option<Vec<Applied>>> {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
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

    pub async fn insert(&self, events: &[DeliveryEvent]) -> Result<InsertOutcome> {
        write::write(&self.pool, events).await
    }

    pub async fn query(&self, query: &HistoryQuery) -> Result<Page> {
        let filter = Filter::new(query).map_err(HistoryError::Query)?;
        let limit = clamp_limit(query.limit);
        let sql = format!(
            "SELECT {} FROM email_history WHERE {} ORDER BY sent_at DESC, id DESC LIMIT ?",
            with_times(STATUS_SELECT, str::to_string),
            filter.sql
        );
        let mut q = sqlx::query_as::<Sqlite, StatusRow>(&sql);
        for value in filter.values {
            q = match value {
                Value::Int(v) => q.bind(v),
                Value::Text(v) => q.bind(v),
                Value::Time(ms) => q.bind(ms_i64(ms)),
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
            "SELECT {} FROM email_history WHERE message_id = ? ORDER BY recipient, id",
            with_times(STATUS_SELECT, str::to_string)
        );
        let rows: Vec<StatusRow> = sqlx::query_as(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StatusRow::decode).collect()
    }

    pub async fn events_of(&self, id: MessageId, limit: u32) -> Result<Vec<DeliveryEvent>> {
        let sql = format!(
            "SELECT {} FROM email_events AS e JOIN email_history AS h \
             ON h.message_id = e.message_id AND h.recipient = e.recipient \
             WHERE e.message_id = ? ORDER BY e.created_at DESC, e.event_id DESC LIMIT ?",
            with_times(EVENT_SELECT, str::to_string)
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
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
            "SELECT variant, status, COALESCE(reason = 'machine', 0) AS machine, COUNT(*) \
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

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
