//! Postroad's delivery history: one row per (message, recipient) with its current
//! status (`email_history`), the event log beside it (`email_events`), and the
//! queries behind `postroad history` and the API's `/v1/history`.
//!
//! - [`HistoryStore`] is the database behind one interface: SQLite in WAL mode (the
//!   embedded default, migrated at open) or MySQL/MariaDB with monthly partitions
//!   (`postroad migrate` applies its schema; partitions for the coming months are
//!   added by themselves). A batch of events is one transaction: the event log
//!   ignores replays (by `event_id`), and each recipient's status only moves forward
//!   ([`status::rank`]).
//! - [`HistorySink`] is the history's [`postroad_queue::EventSink`]: the fan-out reads
//!   the queue's event outbox and hands it batches of up to `max_batch` events
//!   (waiting up to `flush_interval_ms` for a batch to fill), each stored in one
//!   transaction of multi-row statements, never one round trip per event. A batch
//!   that fails is offered again; events leave the outbox only once stored.
//! - [`HistoryQuery`] lists statuses newest first, paginated by keyset ([`Cursor`]).
//! - [`format_rows`] and [`format_statuses`] render results as the CLI's tables.
//! - [`archive::Archive`] moves months older than the hot window to object storage
//!   (gzip NDJSON, checked before the month leaves the database) and back.
//!
//! ```no_run
//! # async fn demo(event: postroad_history::DeliveryEvent) -> postroad_history::Result<()> {
//! use postroad_history::{HistoryConfig, HistoryQuery, HistoryStore, format_statuses};
//!
//! let config = HistoryConfig::default();
//! let store = HistoryStore::open(&config, "./postroad-data".as_ref()).await?;
//! store.insert(std::slice::from_ref(&event)).await?; // what HistorySink does per batch
//!
//! // `postroad history --user-id 12345`
//! let reader = HistoryStore::open_reader(&config, "./postroad-data".as_ref()).await?;
//! let query = HistoryQuery { user_id: Some(12345), limit: 100, ..Default::default() };
//! print!("{}", format_statuses(&reader.query(&query).await?.rows));
//! # Ok(()) }
//! ```
//!
//! See `history/README.md` for the schema, the batching and the durability choice.

pub mod archive;
mod batch;
mod config;
mod format;
mod months;
mod mysql;
mod partitions;
mod query;
mod rows;
mod schema;
mod sink;
mod sqlite;
pub mod status;
mod store;
mod write;

pub use config::{Backend, HistoryConfig};
pub use format::{format_rows, format_statuses};
pub use months::MonthCounts;
pub use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Priority, Reply, Response,
};
pub use query::{Cursor, HistoryQuery, MAX_LIMIT, Page};
pub use sink::HistorySink;
pub use status::RecipientStatus;
pub use store::{CampaignStatus, HistoryStore, InsertOutcome, Migrated, today};

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
    #[error("{0} is not a Postroad history database (no migrations table)")]
    NotHistory(String),
    #[error("unsupported history database URL {0:?} (expected sqlite:... or mysql://...)")]
    UnsupportedUrl(String),
    #[error("cannot reach the history database at {location}: {source}")]
    Unreachable {
        location: String,
        source: sqlx::Error,
    },
    #[error("the history database at {location} cannot be used: {reason}")]
    Schema { location: String, reason: String },
    #[error("invalid history query: {0}")]
    Query(String),
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
    #[error("history archive: {0}")]
    Archive(String),
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

/// `url` without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            if user_info.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact("mysql://app:s3cr@t:x@db.internal:3306/history?ssl-mode=required"),
            "mysql://app:***@db.internal:3306/history?ssl-mode=required"
        );
        assert_eq!(
            super::redact("mysql://root@127.0.0.1/h"),
            "mysql://root@127.0.0.1/h"
        );
        assert_eq!(super::redact("sqlite::memory:"), "sqlite::memory:");
    }
}
