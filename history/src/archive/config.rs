//! `[history.archive]`: where months older than the hot window go.

use serde::{Deserialize, Serialize};

use crate::{HistoryError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `s3://bucket/prefix`; empty: nothing is archived, the history keeps every month.
    pub url: String,
    /// An S3-compatible endpoint (MinIO, Ceph, a test's moto) instead of AWS's:
    /// `http://host:port` or `https://...`; path-style requests.
    pub endpoint: String,
    pub region: String,
    /// Credentials; empty: the standard AWS environment (`AWS_ACCESS_KEY_ID`, ...).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Days of history kept in the database; a month goes once all of it is older.
    pub hot_days: u32,
    /// How often `serve` looks for months to archive, in seconds.
    pub interval_secs: u64,
    /// Days a month loaded back by `postroad history archive restore` stays in the
    /// database before it is archived again.
    pub keep_restored_days: u32,
    /// Tries again of a failed request to the object store (with backoff, within 3
    /// minutes) before the pass gives up and the month waits for the next one.
    pub max_retries: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            hot_days: 90,
            interval_secs: 3600,
            keep_restored_days: 7,
            max_retries: 10,
        }
    }
}

impl ArchiveConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The bucket and the key prefix (without slashes at either end) of `url`.
    pub(crate) fn bucket_and_prefix(&self) -> Result<(&str, &str)> {
        let bad = || {
            HistoryError::Config(format!(
                "history.archive.url must be s3://bucket[/prefix], not {:?}",
                self.url
            ))
        };
        let rest = self.url.trim().strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        Ok((bucket, prefix.trim_matches('/')))
    }

    pub fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.bucket_and_prefix()?;
        let bad = |reason: String| Err(HistoryError::Config(reason));
        let endpoint = self.endpoint.as_str();
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(format!(
                "history.archive.endpoint must be an http:// or https:// URL, not {:?}",
                self.endpoint
            ));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return bad("history.archive.access_key_id and secret_access_key go together".into());
        }
        if self.hot_days < 1 {
            return bad("history.archive.hot_days must be at least 1".into());
        }
        if self.interval_secs == 0 {
            return bad("history.archive.interval_secs must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_a_bucket_and_an_optional_prefix() {
        let with = |url: &str| ArchiveConfig {
            url: url.into(),
            ..Default::default()
        };
        assert_eq!(
            with("s3://mail/history/eu/").bucket_and_prefix().unwrap(),
            ("mail", "history/eu")
        );
        assert_eq!(with("s3://mail").bucket_and_prefix().unwrap(), ("mail", ""));
        for bad in ["mail", "s3://", "s3:///x", "https://mail"] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
        assert!(ArchiveConfig::default().validate().is_ok());
    }
}
