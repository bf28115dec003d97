use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{HistoryError, Result};

/// The `[history]` section: where delivery history is stored and how it is batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// SQLite file holding the delivery history. Empty (the default) means
    /// `<server.data_dir>/history.sqlite`. `postroad history` reads the same file, also
    /// while the server is writing it.
    pub path: PathBuf,
    /// Most events written in one transaction (one fsync). Larger batches write faster
    /// under load; a batch is written as soon as it is full.
    pub max_batch: usize,
    /// Longest time, in milliseconds, the history waits for a batch to fill before
    /// writing what there is. Bounds how stale history can be at low load.
    pub flush_interval_ms: u64,
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

    /// `flush_interval_ms` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Checks the values a config file can get wrong.
    pub fn validate(&self) -> Result<()> {
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
        Ok(())
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            max_batch: 1000,
            flush_interval_ms: 200,
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
        ] {
            assert!(
                matches!(bad.validate(), Err(HistoryError::Config(_))),
                "{bad:?}"
            );
        }
    }
}
