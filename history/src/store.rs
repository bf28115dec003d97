//! [`HistoryStore`]: the history behind one interface, SQLite or MySQL.

use std::path::Path;
use std::str::FromStr;

use chrono::NaiveDate;
use postroad_queue::{DeliveryEvent, EventKind, MessageId};

use crate::config::Backend;
use crate::mysql::MysqlHistory;
use crate::partitions;
use crate::sqlite::SqliteHistory;
use crate::{HistoryConfig, HistoryError, HistoryQuery, Page, RecipientStatus, Result};

/// What one [`HistoryStore::insert`] wrote. (How many events were replays MySQL
/// does not tell: its affected-row count reports them as found.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Events now in the event log (new, or already there from an earlier try).
    pub events: u64,
    /// Recipients' rows written (one per message and recipient in the batch).
    pub recipients: u64,
}

/// How many recipients of a campaign's variant are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignStatus {
    pub variant: Option<String>,
    pub status: EventKind,
    /// Opened or clicked by a machine, not a person.
    pub machine: bool,
    pub recipients: u64,
}

/// What `postroad migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Where (file or redacted URL).
    pub location: String,
    /// Versions applied now; empty when the schema was current.
    pub applied: Vec<i64>,
}

/// The delivery history database. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    pub(crate) backend: Inner,
    location: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Inner {
    Sqlite(SqliteHistory),
    Mysql(MysqlHistory),
}

impl HistoryStore {
    /// Opens the history `config` names for writing, as `serve` does. SQLite: creates
    /// the file and applies pending migrations. MySQL: refuses a schema other than
    /// this build's (`postroad migrate` applies it) and adds the partitions the coming
    /// months need.
    pub async fn open(config: &HistoryConfig, data_dir: &Path) -> Result<Self> {
        match config.backend {
            Backend::Sqlite => Self::open_sqlite(config.resolved_path(data_dir)).await,
            Backend::Mysql => {
                let location = crate::redact(&config.url);
                let store = MysqlHistory::open_current(&config.url, config, &location).await?;
                if let Err(e) = store
                    .maintain_partitions(today(), config.partitions_ahead)
                    .await
                {
                    store.close().await;
                    return Err(e);
                }
                Ok(Self {
                    backend: Inner::Mysql(store),
                    location,
                })
            }
        }
    }

    /// Opens the history for queries only, as `postroad history` and the API do: the
    /// SQLite file read-only (also while the server writes it), or MySQL at
    /// `read_url`.
    pub async fn open_reader(config: &HistoryConfig, data_dir: &Path) -> Result<Self> {
        match config.backend {
            Backend::Sqlite => Self::open_read_only(config.resolved_path(data_dir)).await,
            Backend::Mysql => {
                let url = config.resolved_read_url();
                let location = crate::redact(url);
                let store = MysqlHistory::open_current(url, config, &location).await?;
                Ok(Self {
                    backend: Inner::Mysql(store),
                    location,
                })
            }
        }
    }

    /// Applies the migrations `config`'s database lacks (and, on MySQL, adds the
    /// coming months' partitions): `postroad migrate`.
    pub async fn migrate(config: &HistoryConfig, data_dir: &Path) -> Result<Migrated> {
        Self::migrate_from(config, data_dir, today()).await
    }

    /// Like [`HistoryStore::migrate`], for history that starts before today (an
    /// import, a benchmark's fill): a new MySQL database gets its monthly partitions
    /// from `first`'s month on, not from the current one. Partitions that exist are
    /// kept as they are.
    pub async fn migrate_from(
        config: &HistoryConfig,
        data_dir: &Path,
        first: NaiveDate,
    ) -> Result<Migrated> {
        match config.backend {
            Backend::Sqlite => {
                let path = config.resolved_path(data_dir);
                let (store, applied) = SqliteHistory::open(&path).await?;
                store.close().await;
                Ok(Migrated {
                    location: path.display().to_string(),
                    applied,
                })
            }
            Backend::Mysql => {
                let location = crate::redact(&config.url);
                let store = MysqlHistory::connect(&config.url, config, &location).await?;
                let applied = store.migrate(&location).await?;
                let first = first.min(today());
                let ahead = partitions::months_between(first, today()) + config.partitions_ahead;
                store.maintain_partitions(first, ahead).await?;
                store.close().await;
                Ok(Migrated { location, applied })
            }
        }
    }

    /// Opens (creating it if missing, migrating it) the SQLite history file at `path`.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self {
            backend: Inner::Sqlite(SqliteHistory::open(path).await?.0),
            location: path.display().to_string(),
        })
    }

    /// From a URL: `sqlite://file`, `sqlite::memory:` or `mysql://...` (whose schema
    /// must be current). Uses the default pool settings.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            return Ok(Self {
                backend: Inner::Sqlite(SqliteHistory::connect(url).await?),
                location: url.to_string(),
            });
        }
        if url.starts_with("mysql:") {
            let location = crate::redact(url);
            let store =
                MysqlHistory::open_current(url, &HistoryConfig::default(), &location).await?;
            return Ok(Self {
                backend: Inner::Mysql(store),
                location,
            });
        }
        Err(HistoryError::UnsupportedUrl(crate::redact(url)))
    }

    /// Opens an existing SQLite history file for reading only. Creates nothing and
    /// runs no migration.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self {
            backend: Inner::Sqlite(SqliteHistory::open_read_only(path).await?),
            location: path.display().to_string(),
        })
    }

    /// Where this store is (file path, or URL without its password), for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores `events` in one transaction: each into the event log unless its
    /// `event_id` is already there (replays are ignored), and each recipient's status
    /// moved forward (never back: see [`crate::status::rank`]). Either all of it is
    /// stored or, on error, none.
    pub async fn insert(&self, events: &[DeliveryEvent]) -> Result<InsertOutcome> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        match &self.backend {
            Inner::Sqlite(s) => s.insert(events).await,
            Inner::Mysql(s) => s.insert(events).await,
        }
    }

    /// One page of recipients' statuses matching `query`, newest message first.
    pub async fn query(&self, query: &HistoryQuery) -> Result<Page> {
        match &self.backend {
            Inner::Sqlite(s) => s.query(query).await,
            Inner::Mysql(s) => s.query(query).await,
        }
    }

    /// The status of every recipient of message `id`, ordered by recipient.
    pub async fn status_by_message_id(&self, id: MessageId) -> Result<Vec<RecipientStatus>> {
        match &self.backend {
            Inner::Sqlite(s) => s.statuses_of(id).await,
            Inner::Mysql(s) => s.statuses_of(id).await,
        }
    }

    /// The latest `limit` events of message `id` (its timeline), every recipient,
    /// oldest first.
    pub async fn by_message_id(&self, id: MessageId, limit: u32) -> Result<Vec<DeliveryEvent>> {
        match &self.backend {
            Inner::Sqlite(s) => s.events_of(id, limit).await,
            Inner::Mysql(s) => s.events_of(id, limit).await,
        }
    }

    /// How many events of each kind the event log holds, every kind listed (in
    /// [`EventKind::ALL`] order), zero counts included. Scans the table: for tests and
    /// operators, not for metrics.
    pub async fn count_by_kind(&self) -> Result<Vec<(EventKind, u64)>> {
        let rows = match &self.backend {
            Inner::Sqlite(s) => s.count_events().await?,
            Inner::Mysql(s) => s.count_events().await?,
        };
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

    /// Recipients of `campaign` by their current status, per variant; `machine`: the
    /// status is an open or click by a machine (a mail privacy proxy, a link scanner).
    pub async fn campaign_statuses(&self, campaign: &str) -> Result<Vec<CampaignStatus>> {
        let rows = match &self.backend {
            Inner::Sqlite(s) => s.campaign_statuses(campaign).await?,
            Inner::Mysql(s) => s.campaign_statuses(campaign).await?,
        };
        rows.into_iter()
            .map(|(variant, status, machine, n)| {
                let status = EventKind::from_str(&status)
                    .map_err(|reason| HistoryError::Corrupt { id: 0, reason })?;
                Ok(CampaignStatus {
                    variant,
                    status,
                    machine: machine != 0,
                    recipients: u64::try_from(n).unwrap_or(0),
                })
            })
            .collect()
    }

    /// MySQL: makes sure every month up to `ahead` months after `today` has its own
    /// partition (splitting the catch-all `p_future`). Returns the partitions added.
    /// SQLite has no partitions: nothing to do.
    pub async fn maintain_partitions(&self, today: NaiveDate, ahead: u32) -> Result<Vec<String>> {
        match &self.backend {
            Inner::Sqlite(_) => Ok(Vec::new()),
            Inner::Mysql(s) => s.maintain_partitions(today, ahead).await,
        }
    }

    /// Closes every connection, waiting for queries in progress. Later calls fail.
    pub async fn close(&self) {
        match &self.backend {
            Inner::Sqlite(s) => s.close().await,
            Inner::Mysql(s) => s.close().await,
        }
    }
}

/// Today's date in UTC.
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}
