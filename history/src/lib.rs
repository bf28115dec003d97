//! Postroad's delivery history: every [`DeliveryEvent`] the relay emits, stored one row
//! per event, and the queries behind `postroad history`.
//!
//! - [`HistoryStore`] owns the database (SQLite in WAL mode today, MySQL next): it
//!   applies the embedded migrations (`migrations/sqlite/`) at open, inserts batches
//!   idempotently (a replayed event, recognised by its `event_id`, is ignored) and
//!   answers queries by recipient and by message id.
//! - [`HistoryWriter::spawn`] starts the batching writer: the relay hands events to a
//!   [`HistorySender`] (a bounded channel), and the writer stores them in one
//!   transaction per batch of up to `max_batch` events or `flush_interval_ms`, never
//!   one round trip per event. It flushes everything pending on shutdown and keeps a
//!   failed batch for the next attempt instead of dropping it.
//! - [`format_rows`] renders query results as the aligned table the CLI prints.
//!
//! ```no_run
//! # async fn demo(event: postroad_history::DeliveryEvent) -> postroad_history::Result<()> {
//! use postroad_history::{HistoryConfig, HistoryStore, HistoryWriter, format_rows};
//!
//! let config = HistoryConfig::default();
//! let store = HistoryStore::open(config.resolved_path("./postroad-data".as_ref())).await?;
//! let (history, _writer) = HistoryWriter::spawn(store.clone(), &config);
//! history.send(event.clone()).await.ok(); // the relay, once per state change
//! let stats = history.shutdown().await?; // at server shutdown: writes what is pending
//!
//! // `postroad history --message-id ...`
//! let reader = HistoryStore::open_read_only("./postroad-data/history.sqlite").await?;
//! print!("{}", format_rows(&reader.by_message_id(event.message_id, 100).await?));
//! # Ok(()) }
//! ```
//!
//! See `history/README.md` for the schema, the batching and the durability choice.

mod config;
mod format;
mod store;
mod writer;

pub use config::HistoryConfig;
pub use format::format_rows;
pub use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Priority, Reply, Response,
};
pub use store::{HistoryStore, InsertOutcome};
pub use writer::{HistorySender, HistoryStats, HistoryWriter, SendError, TrySendError};

/// Everything that can go wrong in the history store or its writer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("history database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no history database at {0}")]
    NotFound(String),
    #[error("{0} is not a Postroad history database (no email_history table)")]
    NotHistory(String),
    #[error("unsupported history database URL {0:?} (expected sqlite:...)")]
    UnsupportedUrl(String),
    #[error("corrupt history row {id}: {reason}")]
    Corrupt { id: i64, reason: String },
    #[error("invalid history configuration: {0}")]
    Config(String),
    #[error("history write failed; {pending} events are kept and will be retried: {reason}")]
    WriteFailed { pending: usize, reason: String },
    #[error("history writer stopped with {events} events not written (database kept failing)")]
    Unflushed { events: u64 },
    #[error("the history writer has stopped")]
    WriterStopped,
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;
