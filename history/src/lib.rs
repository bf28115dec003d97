//! Postroad's delivery history: every [`DeliveryEvent`], stored one row per event, and
//! the queries behind `postroad history`.
//!
//! - [`HistoryStore`] owns the database (SQLite in WAL mode today, MySQL next): it
//!   applies the embedded migrations (`migrations/sqlite/`) at open, inserts batches
//!   idempotently (a replayed event, recognised by its `event_id`, is ignored) and
//!   answers queries by recipient and by message id.
//! - [`HistorySink`] is the history's [`postroad_queue::EventSink`]: the fan-out reads
//!   the queue's event outbox and hands it batches of up to `max_batch` events
//!   (waiting up to `flush_interval_ms` for a batch to fill), each stored in one
//!   transaction, never one round trip per event. A batch that fails is offered again;
//!   events leave the outbox only once stored.
//! - [`format_rows`] renders query results as the aligned table the CLI prints.
//!
//! ```no_run
//! # async fn demo(event: postroad_history::DeliveryEvent) -> postroad_history::Result<()> {
//! use postroad_history::{HistoryConfig, HistoryStore, format_rows};
//!
//! let config = HistoryConfig::default();
//! let store = HistoryStore::open(config.resolved_path("./postroad-data".as_ref())).await?;
//! store.insert(std::slice::from_ref(&event)).await?; // what HistorySink does per batch
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
mod sink;
mod store;

pub use config::HistoryConfig;
pub use format::format_rows;
pub use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Priority, Reply, Response,
};
pub use sink::HistorySink;
pub use store::{HistoryStore, InsertOutcome};

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
