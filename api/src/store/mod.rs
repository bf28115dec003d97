//! The API's application data: API keys, templates, idempotency records, user
//! preferences, the suppression list, customer webhook endpoints and their outboxes,
//! recipient lists and campaigns.
//! In SQLite (`app.sqlite` in the data directory) by default; in the history's MySQL
//! database (its migrations `0002_app_data`, `0005_suppressions`, `0006_webhooks` and
//! `0007_campaigns`)
//! when the history is on MySQL, so every node of a cluster shares it. Written rarely (a key or template change, one row per idempotent request, a
//! suppression) and read through in-process caches on the hot path.
//!
//! Both backends run the same SQL text (`?` placeholders, `REPLACE INTO` for upserts,
//! unique violations told apart by sqlx); [`on_pool!`] runs it on whichever is open.
//! Identifiers compare byte for byte on both, so on MySQL their columns have a binary
//! collation, which sqlx reports as binary: they are read as bytes ([`text`]).

pub mod campaigns;
pub mod idempotency;
pub mod keys;
pub mod lists;
pub mod prefs;
pub mod suppressions;
pub mod templates;
pub mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/app-sqlite");

/// The file name of the store in the data directory.
pub const FILE_NAME: &str = "app.sqlite";
/// The tables a MySQL database must have (created by `postroad migrate`).
const MYSQL_TABLES: [&str; 12] = [
    "api_keys",
    "templates",
    "idempotency",
    "user_prefs",
    "template_announcements",
    "suppressions",
    "webhook_endpoints",
    "webhook_outbox",
    "webhook_dead",
    "recipient_lists",
    "list_recipients",
    "campaigns",
];
/// Connections to MySQL: the store is off the hot path, a few are plenty.
const MYSQL_CONNECTIONS: u32 = 8;
/// Longest wait for a pooled MySQL connection (MySQL down: the request fails with 503).
const MYSQL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("invalid database URL {location}: {reason}")]
    Url { location: String, reason: String },
    #[error("cannot reach {location}: {source}")]
    Unreachable {
        location: String,
        source: sqlx::Error,
    },
    #[error("{location} lacks the API tables ({missing}); run `postroad migrate`")]
    Schema { location: String, missing: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Mysql(MySqlPool),
}

/// Runs `$body` with `$pool` bound to the open backend's pool (the same SQL on both).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Mysql($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Which pool is open, for [`on_pool!`].
pub(crate) enum Backend<'a> {
    Sqlite(&'a SqlitePool),
    Mysql(&'a MySqlPool),
}

/// The application database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppStore {
    pool: Pool,
    location: String,
}

impl AppStore {
    /// Opens (creating if missing) the SQLite store at `path` in WAL mode, with fsync'd
    /// commits, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Full);
        // Switch the file to WAL on one connection before the pool opens several (the
        // switch needs an exclusive lock that the busy timeout does not wait for).
        let first = options
            .clone()
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await?;
        first.close().await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            location: path.display().to_string(),
        })
    }

    /// The SQLite store of the data directory `data_dir`.
    pub async fn open_in(data_dir: &Path) -> Result<Self> {
        Self::open(&data_dir.join(FILE_NAME)).await
    }

    /// Connects to the MySQL/MariaDB database at `url` (`location` is how to name it in
    /// errors and logs, without its password). Its schema belongs to the history's
    /// migrations, applied by `postroad migrate`: tables missing is an error here.
    pub async fn open_mysql(url: &str, location: &str) -> Result<Self> {
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url {
                location: location.to_string(),
                reason: e.to_string(),
            })?
            .charset("utf8mb4");
        let pool = MySqlPoolOptions::new()
            .max_connections(MYSQL_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(MYSQL_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Unreachable {
                location: location.to_string(),
                source,
            })?;
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
        )
        .fetch_all(&pool)
        .await?;
        let missing: Vec<&str> = MYSQL_TABLES
            .into_iter()
            .filter(|table| !present.iter().any(|p| p == table))
            .collect();
        if !missing.is_empty() {
            pool.close().await;
            return Err(StoreError::Schema {
                location: location.to_string(),
                missing: missing.join(", "),
            });
        }
        Ok(Self {
            pool: Pool::Mysql(pool),
            location: location.to_string(),
        })
    }

    /// Where the store is (a file path, or a MySQL URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Mysql(pool) => pool.close().await,
        }
    }

    /// How a transaction that reads and then writes begins: SQLite takes the write lock
    /// at once (two that both read first could not both write), MySQL locks rows as it
    /// goes.
    fn begin_write(&self) -> &'static str {
        match &self.pool {
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Mysql(_) => "BEGIN",
        }
    }

    fn pool(&self) -> Backend<'_> {
        match &self.pool {
            Pool::Sqlite(pool) => Backend::Sqlite(pool),
            Pool::Mysql(pool) => Backend::Mysql(pool),
        }
    }
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An identifier column read as bytes, as text.
fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("an identifier is not UTF-8".into()))
}

/// Whether `error` is a duplicate primary or unique key, on either backend.
fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}
