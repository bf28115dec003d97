use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Priority, Reply, Response,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use uuid::Uuid;

use crate::{HistoryError, Result};

/// The SQLite migrations, embedded in the binary and applied by [`HistoryStore::open`].
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Columns written per event, in the order [`insert_sql`] lists them.
const COLUMNS: &str = "event_id, created_at, message_id, kind, sender, recipient, domain, \
                       attempt, remote_host, reply_code, reply_enhanced, reply_text, tenant, campaign, \
                       user_id, email_type, variant, priority, tags";
const COLUMN_COUNT: usize = 19;

/// Most rows in one `INSERT` statement. SQLite allows 32766 bound variables per
/// statement (since 3.32; the bundled library is newer); 256 rows use 4864 of them.
/// A batch is split into statements of 256 rows and then of decreasing powers of two,
/// so only nine distinct statements exist and all stay in the prepared-statement cache.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 256;
const _: () = assert!(MAX_ROWS_PER_STATEMENT.is_power_of_two());
const _: () = assert!(MAX_ROWS_PER_STATEMENT * COLUMN_COUNT <= 32766);

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// One connection for the writer, the rest for queries.
const MAX_CONNECTIONS: u32 = 4;

const SELECT_COLUMNS: &str = "id, event_id, created_at, message_id, kind, sender, recipient, domain, \
                              attempt, remote_host, reply_code, reply_enhanced, reply_text, tenant, campaign, \
                              user_id, email_type, variant, priority, tags";

/// What one [`HistoryStore::insert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Rows added.
    pub inserted: u64,
    /// Events ignored because their `event_id` was already stored (replays).
    pub duplicates: u64,
}

/// The delivery history database. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    pool: SqlitePool,
    location: String,
}

impl HistoryStore {
    /// Opens (creating it and its parent directory if missing) the SQLite history file
    /// at `path`, switches it to WAL mode and applies pending migrations.
    ///
    /// Commits use `synchronous=FULL`: each batch's commit is fsync'd, so history a
    /// batch reported as written survives a power loss. The writer commits at most
    /// once per batch, which keeps this to a few fsyncs a second.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| HistoryError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_with(options, path.display().to_string()).await
    }

    /// Like [`open`](Self::open), from a URL: `sqlite://path/to/file.sqlite`, or
    /// `sqlite::memory:` for a throwaway database. (MySQL URLs come with the MySQL
    /// backend.)
    pub async fn connect(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(HistoryError::UnsupportedUrl(url.to_string()));
        }
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        Self::open_with(options, url.to_string()).await
    }

    /// Opens an existing history file for reading only, as `postroad history` does while
    /// the server may be writing it (WAL lets readers and the writer run together).
    /// Creates nothing and runs no migration.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
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
        let has_table: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'email_history'",
        )
        .fetch_optional(&pool)
        .await?;
        if has_table.is_none() {
            pool.close().await;
            return Err(HistoryError::NotHistory(location));
        }
        Ok(Self { pool, location })
    }

    async fn open_with(options: SqliteConnectOptions, location: String) -> Result<Self> {
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
        MIGRATOR.run(&pool).await?;
        tracing::debug!(db = %location, "history database open");
        Ok(Self { pool, location })
    }

    /// Where this store is (file path or URL), for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores `events` in one transaction, ignoring any whose `event_id` is already
    /// stored (also within `events`). Either all new events are stored or, on error,
    /// none is.
    pub async fn insert(&self, events: &[DeliveryEvent]) -> Result<InsertOutcome> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        let mut rest = events;
        while !rest.is_empty() {
            let n = statement_rows(rest.len());
            let (chunk, tail) = rest.split_at(n);
            inserted += insert_chunk(&mut tx, chunk).await?;
            rest = tail;
        }
        tx.commit().await?;
        Ok(InsertOutcome {
            inserted,
            duplicates: (events.len() as u64).saturating_sub(inserted),
        })
    }

    /// The latest `limit` events for `recipient` (compared without regard to ASCII
    /// case), oldest first.
    pub async fn by_recipient(&self, recipient: &str, limit: u32) -> Result<Vec<DeliveryEvent>> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM email_history WHERE recipient = ? \
             ORDER BY created_at DESC, event_id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(recipient)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows_to_events(rows, true)
    }

    /// The latest `limit` events of messages for the application's user `user_id`
    /// (of `email_type` only, when given), oldest first.
    pub async fn by_user(
        &self,
        user_id: u64,
        email_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryEvent>> {
        let user_id = i64::try_from(user_id).map_err(|_| HistoryError::Corrupt {
            id: 0,
            reason: format!("user id {user_id} is out of range"),
        })?;
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM email_history WHERE user_id = ? \
             AND (? IS NULL OR email_type = ?) \
             ORDER BY created_at DESC, event_id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(email_type)
            .bind(email_type)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows_to_events(rows, true)
    }

    /// The latest `limit` events of message `id`, every recipient, oldest first.
    pub async fn by_message_id(&self, id: MessageId, limit: u32) -> Result<Vec<DeliveryEvent>> {
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM email_history WHERE message_id = ? \
             ORDER BY created_at DESC, event_id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows_to_events(rows, true)
    }

    /// The latest event of each recipient of message `id` (the `message_status` view),
    /// ordered by recipient.
    pub async fn status_by_message_id(&self, id: MessageId) -> Result<Vec<DeliveryEvent>> {
        // The view has no sender/domain/tenant/campaign: take the whole row by event_id.
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM email_history WHERE event_id IN \
             (SELECT event_id FROM message_status WHERE message_id = ?) \
             ORDER BY recipient, created_at, event_id"
        );
        let rows = sqlx::query(&sql)
            .bind(id.as_u128().to_be_bytes().as_slice())
            .fetch_all(&self.pool)
            .await?;
        rows_to_events(rows, false)
    }

    /// How many events of each kind are stored, every kind listed (in
    /// [`EventKind::ALL`] order), zero counts included.
    pub async fn count_by_kind(&self) -> Result<Vec<(EventKind, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM email_history GROUP BY kind")
                .fetch_all(&self.pool)
                .await?;
        let mut counts: Vec<(EventKind, u64)> =
            EventKind::ALL.into_iter().map(|k| (k, 0)).collect();
        for (kind, n) in rows {
            let kind = EventKind::from_str(&kind)
                .map_err(|reason| HistoryError::Corrupt { id: 0, reason })?;
            if let Some(slot) = counts.iter_mut().find(|(k, _)| *k == kind) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// Closes every connection, waiting for queries in progress. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows for the next statement: all of them up to [`MAX_ROWS_PER_STATEMENT`], else the
/// largest power of two that fits, so statements come in few shapes.
fn statement_rows(remaining: usize) -> usize {
    if remaining >= MAX_ROWS_PER_STATEMENT {
        MAX_ROWS_PER_STATEMENT
    } else {
        1 << remaining.ilog2()
    }
}

/// `INSERT ... VALUES (?, ...), ... ON CONFLICT(event_id) DO NOTHING` for `rows` rows.
/// Built once per shape (see [`statement_rows`]).
fn insert_sql(rows: usize) -> &'static str {
    const SHAPES: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS_PER_STATEMENT);
    let all = SQL.get_or_init(|| {
        (0..SHAPES)
            .map(|shift| {
                let n = 1usize << shift;
                let row = format!("({})", vec!["?"; COLUMN_COUNT].join(", "));
                format!(
                    "INSERT INTO email_history ({COLUMNS}) VALUES {} \
                     ON CONFLICT (event_id) DO NOTHING",
                    vec![row; n].join(", ")
                )
            })
            .collect()
    });
    &all[rows.ilog2() as usize]
}

async fn insert_chunk(conn: &mut sqlx::SqliteConnection, chunk: &[DeliveryEvent]) -> Result<u64> {
    let message_ids: Vec<[u8; 16]> = chunk
        .iter()
        .map(|e| e.message_id.as_u128().to_be_bytes())
        .collect();
    let mut query = sqlx::query(insert_sql(chunk.len()));
    for (e, message_id) in chunk.iter().zip(&message_ids) {
        let reply = e.reply.as_ref();
        query = query
            .bind(e.event_id.as_bytes().as_slice())
            .bind(i64::try_from(e.at_ms).unwrap_or(i64::MAX))
            .bind(message_id.as_slice())
            .bind(e.kind.as_str())
            .bind(e.sender.as_str())
            .bind(e.recipient.as_str())
            .bind(e.domain.as_str())
            .bind(i64::from(e.attempt))
            .bind(e.remote_host.as_deref())
            .bind(reply.and_then(Response::code).map(i64::from))
            .bind(reply.and_then(Response::enhanced).map(|e| e.to_string()))
            .bind(reply.map(Response::text))
            .bind(e.meta.tenant.as_deref())
            .bind(e.meta.campaign.as_deref())
            .bind(e.meta.user_id.and_then(|id| i64::try_from(id).ok()))
            .bind(e.meta.email_type.as_deref())
            .bind(e.meta.variant.as_deref())
            .bind((e.meta.priority != Priority::Normal).then(|| e.meta.priority.as_str()))
            .bind(tags_text(&e.meta.tags));
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Tags as stored: `name=value` lines, or NULL for none.
fn tags_text(tags: &[(String, String)]) -> Option<String> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The metadata columns of a row.
fn row_metadata(row: &SqliteRow, corrupt: impl Fn(String) -> HistoryError) -> Result<Metadata> {
    let user_id: Option<i64> = row.try_get("user_id")?;
    let priority: Option<String> = row.try_get("priority")?;
    let tags: Option<String> = row.try_get("tags")?;
    let tags = tags
        .iter()
        .flat_map(|t| t.split('\n'))
        .map(|line| {
            line.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .ok_or_else(|| corrupt(format!("tag line {line:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Metadata {
        user_id: user_id
            .map(|id| u64::try_from(id).map_err(|_| corrupt(format!("user_id {id}"))))
            .transpose()?,
        email_type: row.try_get("email_type")?,
        tenant: row.try_get("tenant")?,
        campaign: row.try_get("campaign")?,
        variant: row.try_get("variant")?,
        priority: priority
            .map(|p| p.parse::<Priority>().map_err(|e| corrupt(e.to_string())))
            .transpose()?
            .unwrap_or_default(),
        tags,
    })
}

/// Decodes rows; `reverse` turns newest-first query order into oldest-first.
fn rows_to_events(rows: Vec<SqliteRow>, reverse: bool) -> Result<Vec<DeliveryEvent>> {
    let mut events = rows.iter().map(row_to_event).collect::<Result<Vec<_>>>()?;
    if reverse {
        events.reverse();
    }
    Ok(events)
}

fn row_to_event(row: &SqliteRow) -> Result<DeliveryEvent> {
    let id: i64 = row.try_get("id")?;
    let corrupt = |reason: String| HistoryError::Corrupt { id, reason };
    let uuid_bytes = |column: &str| -> Result<[u8; 16]> {
        let bytes: Vec<u8> = row.try_get(column)?;
        <[u8; 16]>::try_from(bytes.as_slice())
            .map_err(|_| corrupt(format!("{column} has {} bytes, not 16", bytes.len())))
    };
    let kind: String = row.try_get("kind")?;
    let kind = EventKind::from_str(&kind).map_err(corrupt)?;
    let at_ms: i64 = row.try_get("created_at")?;
    let attempt: i64 = row.try_get("attempt")?;
    let reply_code: Option<i64> = row.try_get("reply_code")?;
    let enhanced: Option<String> = row.try_get("reply_enhanced")?;
    let enhanced = enhanced
        .map(|e| EnhancedCode::from_str(&e).map_err(|e| corrupt(e.to_string())))
        .transpose()?;
    let text: Option<String> = row.try_get("reply_text")?;
    // A local reason has no reply code (rows written before there was a local
    // variant have 0).
    let reply = match (reply_code, enhanced, text) {
        (None, None, None) => None,
        (None | Some(0), Some(enhanced), text) => {
            Some(Response::local(enhanced, text.unwrap_or_default()))
        }
        (Some(code), enhanced, text) => {
            let code = u16::try_from(code)
                .ok()
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| corrupt(format!("reply_code {code}")))?;
            Some(Response::Remote(Reply::owned(
                code,
                enhanced,
                text.unwrap_or_default(),
            )))
        }
        (None, None, Some(_)) => return Err(corrupt("reply text without a code".into())),
    };
    Ok(DeliveryEvent {
        event_id: Uuid::from_bytes(uuid_bytes("event_id")?),
        kind,
        message_id: MessageId::from_u128(u128::from_be_bytes(uuid_bytes("message_id")?)),
        sender: row.try_get("sender")?,
        recipient: row.try_get("recipient")?,
        domain: row.try_get("domain")?,
        at_ms: u64::try_from(at_ms).map_err(|_| corrupt(format!("created_at {at_ms}")))?,
        attempt: u32::try_from(attempt).map_err(|_| corrupt(format!("attempt {attempt}")))?,
        remote_host: row.try_get("remote_host")?,
        reply,
        meta: row_metadata(row, corrupt)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for total in 1..=3000 {
            let mut rest = total;
            let mut statements = 0;
            while rest > 0 {
                let n = statement_rows(rest);
                assert!(n <= rest && n.is_power_of_two());
                shapes.insert(n);
                rest -= n;
                statements += 1;
            }
            // Full statements, then at most one per bit of the remainder.
            assert!(statements <= total / MAX_ROWS_PER_STATEMENT + 8, "{total}");
        }
        assert_eq!(shapes.len(), 9);
    }

    #[test]
    fn insert_sql_has_one_placeholder_per_value() {
        for n in [1, 2, 64, MAX_ROWS_PER_STATEMENT] {
            let sql = insert_sql(n);
            assert_eq!(sql.matches('?').count(), n * COLUMN_COUNT);
            assert!(sql.ends_with("ON CONFLICT (event_id) DO NOTHING"));
        }
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
    }
}
