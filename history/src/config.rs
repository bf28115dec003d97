use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{HistoryError, Result};

/// Which database holds the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A SQLite file in the data directory: nothing to set up.
    #[default]
    Sqlite,
    /// MySQL or MariaDB at `url`, tables partitioned by month.
    Mysql,
}

/// The `[history]` section: where delivery history is stored and how it is batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    pub backend: Backend,
    /// SQLite file holding the delivery history. Empty (the default) means
    /// `<server.data_dir>/history.sqlite`. `postroad history` reads the same file, also
    /// while the server is writing it.
    pub path: PathBuf,
    /// MySQL/MariaDB URL, `mysql://user:password@host:3306/database` (backend mysql).
    pub url: String,
    /// URL that queries (API, CLI) read from, e.g. a replica. Empty: `url`.
    pub read_url: String,
    /// Most connections to MySQL per pool (the writer's and the readers').
    pub max_connections: u32,
    /// Months of partitions kept ready ahead of the current one (backend mysql).
    pub partitions_ahead: u32,
    /// Most events written in one transaction (one fsync). Larger batches write faster
    /// under load; a batch is written as soon as it is full.
    pub max_batch: usize,
    /// Longest time, in milliseconds, the history waits for a batch to fill before
    /// writing what there is. Bounds how stale history can be at low load.
    pub flush_interval_ms: u64,
    /// `[history.archive]`: months older than the hot window go to object storage.
    pub archive: crate::archive::ArchiveConfig,
}

impl HistoryConfig {
    /// File name of the history database inside the data directory.
    pub const DEFAULT_FILE_NAME: &'static str = "history.sqlite";
    /// Largest accepted `max_batch`.
    pub const MAX_BATCH_LIMIT: usize = 100_000;

    /// The database file: `path`, or `<data_dir>/history.sqlite` when `path` is empty.
    pub fn resolved_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            data_dir.join(Self::DEFAULT_FILE_NAME)
        } else {
            self.path.clone()
        }
    }

    /// Where queries read: `read_url`, or `url` when that is empty.
    pub fn resolved_read_url(&self) -> &str {
        if self.read_url.is_empty() {
            &self.url
        } else {
            &self.read_url
        }
    }

    /// `flush_interval_ms` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Checks the values a config file can get wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(HistoryError::Config(reason));
        match self.backend {
            Backend::Mysql => {
                for (key, url) in [("url", &self.url), ("read_url", &self.read_url)] {
                    let unset_replica = key == "read_url" && url.is_empty();
                    if !unset_replica && !url.starts_with("mysql://") {
                        return bad(format!(
                            "history.{key} must be a mysql://user:password@host:port/database \
                             URL with backend = \"mysql\", not {:?}",
                            crate::redact(url)
                        ));
                    }
                }
            }
            Backend::Sqlite => {
                if !self.url.is_empty() || !self.read_url.is_empty() {
                    return bad(
                        "history.url and history.read_url are for backend = \"mysql\"; the \
                         SQLite history is history.path"
                            .into(),
                    );
                }
            }
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            return bad(format!(
                "history.max_connections must be between 1 and 1000, not {}",
                self.max_connections
            ));
        }
        if !(1..=24).contains(&self.partitions_ahead) {
            return bad(format!(
                "history.partitions_ahead must be between 1 and 24 months, not {}",
                self.partitions_ahead
            ));
        }
        if self.max_batch == 0 || self.max_batch > Self::MAX_BATCH_LIMIT {
            return Err(HistoryError::Config(format!(
                "history.max_batch must be between 1 and {}, not {}",
                Self::MAX_BATCH_LIMIT,
                self.max_batch
            )));
        }
        if self.flush_interval_ms > 60_000 {
            return Err(HistoryError::Config(format!(
                "history.flush_interval_ms must be at most 60000, not {}",
                self.flush_interval_ms
            )));
        }
        self.archive.validate()
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            path: PathBuf::new(),
            url: String::new(),
            read_url: String::new(),
            max_connections: 8,
            partitions_ahead: 3,
            max_batch: 1000,
            flush_interval_ms: 200,
            archive: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_path_resolution() {
        let c = HistoryConfig::default();
        c.validate().unwrap();
        assert_eq!(
            c.resolved_path(Path::new("/var/lib/postroad")),
            PathBuf::from("/var/lib/postroad/history.sqlite")
        );
        let c = HistoryConfig {
            path: "/srv/h.sqlite".into(),
            ..c
        };
        assert_eq!(
            c.resolved_path(Path::new("/var/lib/postroad")),
            PathBuf::from("/srv/h.sqlite")
        );
    }

    #[test]
    fn toml_section_defaults_and_unknown_keys() {
        let c: HistoryConfig = toml::from_str("max_batch = 50").unwrap();
        assert_eq!(c.max_batch, 50);
        assert_eq!(c.flush_interval_ms, 200);
        assert!(toml::from_str::<HistoryConfig>("max_bacth = 50").is_err());
    }

    #[test]
    fn mysql_reads_from_the_replica_when_there_is_one() {
        let c: HistoryConfig =
            toml::from_str("backend = \"mysql\"\nurl = \"mysql://root@127.0.0.1/h\"").unwrap();
        c.validate().unwrap();
        assert_eq!(c.resolved_read_url(), "mysql://root@127.0.0.1/h");
        let c = HistoryConfig {
            read_url: "mysql://root@replica/h".into(),
            ..c
        };
        c.validate().unwrap();
        assert_eq!(c.resolved_read_url(), "mysql://root@replica/h");
    }

    #[test]
    fn validation_rejects_bad_values() {
        for bad in [
            HistoryConfig {
                max_batch: 0,
                ..Default::default()
            },
            HistoryConfig {
                max_batch: 1_000_000,
                ..Default::default()
            },
            HistoryConfig {
                flush_interval_ms: 600_000,
                ..Default::default()
            },
            HistoryConfig {
                backend: Backend::Mysql,
                ..Default::default()
            },
            HistoryConfig {
                backend: Backend::Mysql,
                url: "postgres://db/x".into(),
                ..Default::default()
            },
            HistoryConfig {
                url: "mysql://db/x".into(),
                ..Default::default()
            },
            HistoryConfig {
                partitions_ahead: 0,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(HistoryError::Config(_))),
                "{bad:?}"
            );
        }
    }
}
