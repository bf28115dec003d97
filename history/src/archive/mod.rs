//! Archival of old history to object storage (`[history.archive]`, S3 or
//! S3-compatible, through `object_store`).
//!
//! A month goes once all of it is older than `hot_days`, oldest first. Its events
//! (each complete: the recipient's sender, domain and metadata with it, so a restore
//! rebuilds both tables through the ordinary writer) are written as gzip NDJSON to
//! `<prefix>/history/YYYY-MM/events-<ms>.ndjson.gz` by a multipart upload, read back
//! and checked (line count and SHA-256 of the uncompressed lines, against what was
//! sent and what the database holds), and only then described by
//! `manifest-<ms>.json` and removed from the database. Any failure before that leaves
//! the month in the database (and removes the unfinished object); the next pass
//! tries again. A month that gains rows after it was archived (a late open) gets a
//! second part; parts are never overwritten.
//!
//! `restore` loads every part of a month back (idempotent: replayed events are
//! ignored) and marks the month `restored.json`: it stays in the database for
//! `keep_restored_days`, then is archived again as one part replacing the old ones.

mod codec;
pub mod config;

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::{HistoryError, HistoryStore, Result};
use codec::{Decoder, Encoder};
pub use config::ArchiveConfig;

/// Events read from the database per query while exporting.
const EXPORT_PAGE: u32 = 5000;
/// Compressed bytes gathered before they go to the upload.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Parts of one upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Events per database transaction while restoring.
const RESTORE_BATCH: usize = 1000;
const FORMAT: u32 = 1;

/// What an archived part of a month holds (`manifest-<ms>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// `2026-01`.
    pub month: String,
    /// The events object, beside the manifest.
    pub object: String,
    pub events: u64,
    pub recipients: u64,
    /// SHA-256 (hex) of the uncompressed NDJSON.
    pub sha256: String,
    pub compressed_bytes: u64,
    /// RFC 3339.
    pub archived_at: String,
}

/// `restored.json`: the month is back in the database since that day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Restored {
    restored_on: NaiveDate,
}

/// What one pass did to one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Archived(Manifest),
    /// Nothing left in the month but an empty partition, now gone.
    Emptied,
    /// Restored recently: kept until `keep_restored_days` have passed.
    KeptRestored,
}

/// What `restore` loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub parts: usize,
    pub events: u64,
}

/// The archive: an object store and the prefix of its keys.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    config: ArchiveConfig,
}

fn month_key(month: NaiveDate) -> String {
    month.format("%Y-%m").to_string()
}

/// `2026-01` (or a full date) as the first of its month.
pub fn parse_month(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", text.trim()), "%Y-%m-%d")
        .map_err(|_| HistoryError::Config(format!("{text:?} is not a month (YYYY-MM)")))
}

fn store_error(what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Archive(format!("{what}: {e}"))
}

impl Archive {
    pub fn open(config: &ArchiveConfig) -> Result<Self> {
        let (bucket, prefix) = config.bucket_and_prefix()?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&config.region)
            .with_retry(RetryConfig {
                max_retries: config.max_retries,
                ..RetryConfig::default()
            });
        if !config.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key);
        }
        if !config.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&config.endpoint)
                .with_allow_http(config.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| store_error("cannot use history.archive", e))?;
        let root = if prefix.is_empty() {
            Path::from("history")
        } else {
            Path::from(format!("{prefix}/history"))
        };
        Ok(Self {
            store: Arc::new(store),
            root,
            config: config.clone(),
        })
    }

    fn month_dir(&self, month: NaiveDate) -> Path {
        self.root.clone().join(month_key(month))
    }

    /// Every archived part, oldest month first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let mut objects = self.store.list(Some(&self.root));
        let mut manifests = Vec::new();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| store_error("cannot list the archive", e))?;
            let name = meta.location.filename().unwrap_or_default();
            if name.starts_with("manifest-") && name.ends_with(".json") {
                manifests.push(self.read_json::<Manifest>(&meta.location).await?);
            }
        }
        manifests.sort_by(|a, b| (&a.month, &a.archived_at).cmp(&(&b.month, &b.archived_at)));
        Ok(manifests)
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(|e| store_error(&format!("cannot read {path}"), e))?
            .bytes()
            .await
            .map_err(|e| store_error(&format!("cannot read {path}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| store_error(&format!("{path} is not valid"), e))
    }

    async fn put_json(&self, path: &Path, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).expect("serializable");
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| store_error(&format!("cannot write {path}"), e))?;
        Ok(())
    }

    async fn parts_of(&self, month: NaiveDate) -> Result<Vec<Manifest>> {
        let key = month_key(month);
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|m| m.month == key)
            .collect())
    }

    async fn restored_on(&self, month: NaiveDate) -> Result<Option<NaiveDate>> {
        let path = self.month_dir(month).join("restored.json");
        match self.store.head(&path).await {
            Ok(_) => Ok(Some(self.read_json::<Restored>(&path).await?.restored_on)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&format!("cannot read {path}"), e)),
        }
    }

    /// Archives every month whose last day is more than `hot_days` before `today`,
    /// oldest first; stops at the first failure (the months after it wait).
    pub async fn archive_due(
        &self,
        history: &HistoryStore,
        today: NaiveDate,
    ) -> Result<Vec<(NaiveDate, Outcome)>> {
        let oldest_hot = today - chrono::Days::new(u64::from(self.config.hot_days));
        let before = NaiveDate::from_ymd_opt(
            chrono::Datelike::year(&oldest_hot),
            chrono::Datelike::month(&oldest_hot),
            1,
        )
        .expect("a first of the month");
        let Some(_lock) = history.try_archive_lock().await? else {
            tracing::debug!("another process is archiving the history");
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for month in history.months_before(before).await? {
            let outcome = self.archive_month(history, month, today).await?;
            done.push((month, outcome));
        }
        Ok(done)
    }

    /// Archives `month` now (whatever its age) and removes it from the database.
    pub async fn archive_month(
        &self,
        history: &HistoryStore,
        month: NaiveDate,
        today: NaiveDate,
    ) -> Result<Outcome> {
        let restored = self.restored_on(month).await?;
        if let Some(on) = restored {
            let keep = chrono::Days::new(u64::from(self.config.keep_restored_days));
            if today < on + keep {
                return Ok(Outcome::KeptRestored);
            }
        }
        let outcome = match self.export(history, month).await? {
            Some(manifest) => Outcome::Archived(manifest),
            None => Outcome::Emptied,
        };
        history.drop_month(month).await?;
        if restored.is_some() {
            // What was restored is all in the new part: the old parts go.
            let keep = match &outcome {
                Outcome::Archived(m) => Some(m.object.clone()),
                _ => None,
            };
            for old in self.parts_of(month).await? {
                if Some(&old.object) != keep.as_ref() {
                    self.delete_part(month, &old).await?;
                }
            }
            let marker = self.month_dir(month).join("restored.json");
            self.store
                .delete(&marker)
                .await
                .map_err(|e| store_error(&format!("cannot delete {marker}"), e))?;
        }
        match &outcome {
            Outcome::Archived(m) => tracing::info!(
                month = %m.month,
                events = m.events,
                recipients = m.recipients,
                bytes = m.compressed_bytes,
                "history month archived"
            ),
            _ => tracing::info!(month = %month_key(month), "empty history month removed"),
        }
        Ok(outcome)
    }

    async fn delete_part(&self, month: NaiveDate, part: &Manifest) -> Result<()> {
        let dir = self.month_dir(month);
        let stamp = part
            .object
            .trim_start_matches("events-")
            .trim_end_matches(".ndjson.gz");
        for name in [part.object.clone(), format!("manifest-{stamp}.json")] {
            let path = dir.clone().join(name);
            self.store
                .delete(&path)
                .await
                .map_err(|e| store_error(&format!("cannot delete {path}"), e))?;
        }
        Ok(())
    }

    /// Writes `month`'s events as a new part and checks it; `None` when the month has
    /// no events.
    async fn export(&self, history: &HistoryStore, month: NaiveDate) -> Result<Option<Manifest>> {
        let counts = history.month_counts(month).await?;
        if counts.events == 0 {
            return Ok(None);
        }
        let now = Utc::now();
        let object = format!("events-{}.ndjson.gz", now.timestamp_millis());
        let path = self.month_dir(month).join(object.as_str());
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| store_error(&format!("cannot start {path}"), e))?;
        let mut writer = WriteMultipart::new(upload);
        let digest = match self.upload(history, month, &mut writer).await {
            Ok(digest) => digest,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        };
        if let Err(e) = writer.wait_for_capacity(0).await {
            let _ = writer.abort().await;
            return Err(store_error(&format!("cannot upload {path}"), e));
        }
        writer
            .finish()
            .await
            .map_err(|e| store_error(&format!("cannot finish {path}"), e))?;
        let checked = async {
            let after = history.month_counts(month).await?;
            if digest.lines != counts.events || after != counts {
                return Err(HistoryError::Archive(format!(
                    "{}: {} events exported, the database held {} and now {} (events \
                     arrived meanwhile?); trying again later",
                    month_key(month),
                    digest.lines,
                    counts.events,
                    after.events
                )));
            }
            self.verify(&path, digest.lines, &digest.hex()).await
        }
        .await;
        let compressed_bytes = match checked {
            Ok(size) => size,
            Err(e) => {
                let _ = self.store.delete(&path).await;
                return Err(e);
            }
        };
        let manifest = Manifest {
            format: FORMAT,
            month: month_key(month),
            object: object.clone(),
            events: counts.events,
            recipients: counts.recipients,
            sha256: digest.hex(),
            compressed_bytes,
            archived_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let stamp = now.timestamp_millis();
        self.put_json(
            &self.month_dir(month).join(format!("manifest-{stamp}.json")),
            &manifest,
        )
        .await?;
        Ok(Some(manifest))
    }

    async fn upload(
        &self,
        history: &HistoryStore,
        month: NaiveDate,
        writer: &mut WriteMultipart,
    ) -> Result<codec::Digest256> {
        let io = |e: std::io::Error| HistoryError::Archive(format!("cannot compress: {e}"));
        let mut encoder = Encoder::new();
        let mut after = None;
        loop {
            let page = history.month_events(month, after, EXPORT_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.event_id);
            for event in &page {
                encoder.push(event).map_err(io)?;
            }
            if encoder.pending() >= UPLOAD_CHUNK {
                writer.write(&encoder.take());
                writer
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(|e| store_error("upload failed", e))?;
            }
        }
        let (tail, digest) = encoder.finish().map_err(io)?;
        writer.write(&tail);
        Ok(digest)
    }

    /// Reads `path` back: its lines and digest must be what was written. Returns its
    /// size.
    async fn verify(&self, path: &Path, lines: u64, sha256: &str) -> Result<u64> {
        let mut decoder = Decoder::new(false);
        let got = self
            .store
            .get(path)
            .await
            .map_err(|e| store_error(&format!("cannot read back {path}"), e))?;
        let size = got.meta.size;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| store_error(&format!("cannot read back {path}"), e))?;
            decoder
                .feed(&chunk)
                .map_err(|e| HistoryError::Archive(format!("{path}: {e}")))?;
        }
        let (digest, _) = decoder
            .finish()
            .map_err(|e| HistoryError::Archive(format!("{path}: {e}")))?;
        if digest.lines != lines || digest.hex() != sha256 {
            return Err(HistoryError::Archive(format!(
                "{path} read back as {} lines (sha256 {}), not the {lines} written ({sha256})",
                digest.lines,
                digest.hex()
            )));
        }
        Ok(size)
    }

    /// Loads every archived part of `month` back into `history` and marks it restored
    /// on `today`.
    pub async fn restore(
        &self,
        history: &HistoryStore,
        month: NaiveDate,
        today: NaiveDate,
    ) -> Result<RestoreOutcome> {
        let parts = self.parts_of(month).await?;
        if parts.is_empty() {
            return Err(HistoryError::Archive(format!(
                "no archived part of {} in {}",
                month_key(month),
                self.root
            )));
        }
        let mut total = 0;
        for part in &parts {
            total += self.restore_part(history, month, part).await?;
        }
        self.put_json(
            &self.month_dir(month).join("restored.json"),
            &Restored { restored_on: today },
        )
        .await?;
        Ok(RestoreOutcome {
            parts: parts.len(),
            events: total,
        })
    }

    async fn restore_part(
        &self,
        history: &HistoryStore,
        month: NaiveDate,
        part: &Manifest,
    ) -> Result<u64> {
        let path = self.month_dir(month).join(part.object.as_str());
        let bad = |e: String| HistoryError::Archive(format!("{path}: {e}"));
        let mut decoder = Decoder::new(true);
        let mut stream = self
            .store
            .get(&path)
            .await
            .map_err(|e| store_error(&format!("cannot read {path}"), e))?
            .into_stream();
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| store_error(&format!("cannot read {path}"), e))?;
            decoder.feed(&chunk).map_err(bad)?;
            batch.extend(decoder.events());
            while batch.len() >= RESTORE_BATCH {
                let rest = batch.split_off(RESTORE_BATCH);
                history.insert(&batch).await?;
                batch = rest;
            }
        }
        let (digest, rest) = decoder.finish().map_err(bad)?;
        batch.extend(rest);
        for chunk in batch.chunks(RESTORE_BATCH) {
            history.insert(chunk).await?;
        }
        if digest.lines != part.events || digest.hex() != part.sha256 {
            return Err(bad(format!(
                "{} lines (sha256 {}), but the manifest says {} ({})",
                digest.lines,
                digest.hex(),
                part.events,
                part.sha256
            )));
        }
        Ok(digest.lines)
    }
}
