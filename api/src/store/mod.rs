//! The API's application data in SQLite (`app.sqlite` in the data directory): API keys,
//! templates and idempotency records. Written rarely (a key or template change, one row
//! per idempotent request) and read through in-process caches on the hot path.

pub mod idempotency;
pub mod keys;
pub mod prefs;
pub mod templates;

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/app-sqlite");

/// The file name of the store in the data directory.
pub const FILE_NAME: &str = "app.sqlite";

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
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The application database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppStore {
    pool: SqlitePool,
}

impl AppStore {
    /// Opens (creating if missing) the store at `path` in WAL mode, with fsync'd
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
        Ok(Self { pool })
    }

    /// The store of the data directory `data_dir`.
    pub async fn open_in(data_dir: &Path) -> Result<Self> {
        Self::open(&data_dir.join(FILE_NAME)).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
