//! The embedded on-disk spool: one [redb] database file, `<dir>/spool.redb`, written by
//! one thread with group commit.
//!
//! * **Durability.** [`Queue::enqueue`] (and `ack`, `defer`, `dead_letter`) return only
//!   after the redb transaction holding the change has committed with
//!   [`redb::Durability::Immediate`] (fsync). A message acknowledged to a client survives
//!   `SIGKILL` and power loss. Nothing is cached in front of the database.
//!
//!   A storage failure (disk full, I/O error, failed commit) fails the enqueues of the
//!   batch it hits (the client is told to try later) but needs no restart: the writer
//!   closes the database, reopens it with a backoff until the storage works again,
//!   first removes whatever a refused enqueue left in the file, and re-applies the
//!   resolves it parked meanwhile (their callers just wait). Until then enqueues fail
//!   at once and reads return "spool unavailable". Nothing acknowledged is lost and
//!   nothing refused comes back, unless the process stops while the storage is still
//!   broken (then refused ids are logged). See `recovery.rs`.
//! * **Files.** The directory is created with mode 0700 and `spool.redb` with 0600; an
//!   existing one that others can access is tightened, with a warning.
//! * **Group commit.** Changes go over a bounded channel to a single writer thread,
//!   which applies everything queued (up to [`SpoolConfig::max_batch`]) in one write
//!   transaction: concurrent enqueues share one fsync. A full channel makes senders wait
//!   (back-pressure) instead of growing memory.
//! * **Reads** (`claim`, `stats`, `get`, ...) use read transactions on the blocking pool;
//!   redb lets them run alongside the writer.
//! * **Claims** live in memory only: a claimed message stays in the database until it is
//!   acked, deferred or dead-lettered, and [`Queue::recover`] (or a restart) makes every
//!   unresolved message claimable again. Delivery is at least once.
//!
//! Tables: `bodies` (id → bytes), `envelopes` (id → version byte, due time, postcard
//! envelope), `schedule` ((due ms, id) → ()), `dead_letters` (id → version byte,
//! postcard [`DeadLetter`]); every change keeps them consistent in one transaction.

mod changes;
mod files;
mod legacy;
mod outbox;
mod queue_impl;
mod reads;
mod recovery;
pub(crate) mod tables;
mod writer;

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::SystemTime;

use bytes::Bytes;
use redb::{Database, DatabaseError, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::reads::{begin_read, load};
use self::tables::{
    BODIES, CHECKPOINTS, DEAD_LETTERS, ENVELOPES, SCHEDULE, decode_dead_letter, decode_envelope,
    storage,
};
use self::writer::{Msg, Op, Output};
use crate::{DeadLetter, Envelope, MessageId, QueueError, Result, unix_ms};

/// File name of the database inside [`SpoolConfig::dir`].
pub const SPOOL_FILE: &str = "spool.redb";

/// The `[spool]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory holding the spool database (`spool.redb`); created if missing. Empty
    /// (the default) means `<server.data_dir>/spool`, filled in by the config loader.
    pub dir: PathBuf,
    /// Make every commit durable (fsync) before answering. Default `true`.
    ///
    /// `false` is UNSAFE, for benchmarks only: an enqueue then returns before the
    /// message is on disk, and a crash or power loss loses recently accepted messages.
    pub fsync: bool,
    /// Most changes (enqueues, acks, ...) applied in one transaction, i.e. per fsync.
    /// Default 512.
    pub max_batch: usize,
    /// Changes that may wait for the writer; when this many are waiting, enqueuers wait
    /// too (back-pressure). Default 4096.
    pub queue_depth: usize,
    /// Size of redb's page cache in MiB. Default 64.
    pub cache_mib: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            fsync: true,
            max_batch: 512,
            queue_depth: 4096,
            cache_mib: 64,
        }
    }
}

impl SpoolConfig {
    /// The defaults, with the spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }
}

/// Counters of the spool's writer since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolMetrics {
    /// Write transactions committed (each one fsync when `fsync` is on).
    pub commits: u64,
    /// Changes (enqueues, acks, defers, dead letters) in those commits.
    pub ops: u64,
    /// Messages found corrupt by `claim` and set aside (not handed out) until the next
    /// [`Queue::recover`] or restart.
    pub corrupt: u64,
    /// Times the database was closed and reopened after a storage failure.
    pub recoveries: u64,
}

/// The embedded on-disk spool. Cheap to clone: clones share one database and writer.
///
/// Dropping the last clone stops the writer after it has applied every change already
/// sent, and closes the database (blocking briefly for the final commit). Call
/// [`Spool::shutdown`] from async code to wait for that without blocking.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
}

/// What the writer thread and the readers share.
pub(crate) struct Shared {
    /// The readers' handle; the writer swaps it when it reopens the database.
    db: RwLock<reads::DbSlot>,
    /// Opens the database file (again).
    pub(crate) open: Opener,
    dir: PathBuf,
    claims: Mutex<Claims>,
    pub(crate) commits: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    /// The outbox's sequence numbers.
    pub(crate) events: outbox::EventLog,
}

pub(crate) type Opener =
    Box<dyn Fn() -> std::result::Result<Database, DatabaseError> + Send + Sync + 'static>;

#[derive(Default)]
pub(crate) struct Claims {
    /// Messages handed out by `claim` and not yet resolved.
    pub(crate) held: HashSet<u128>,
    /// Messages `claim` found corrupt; skipped until `recover`.
    pub(crate) corrupt: HashSet<u128>,
}

impl Shared {
    /// The claims; a panic elsewhere while holding the lock cannot leave the sets in a
    /// state worse than a lost update, so a poisoned lock is used as is.
    pub(crate) fn lock_claims(&self) -> MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` and starts its writer thread.
    ///
    /// The directory is created with mode 0700 and the file with 0600; existing ones
    /// that group or others can access are tightened to that (with a warning).
    ///
    /// Fails with [`QueueError::Locked`] if another process (or another `Spool` in this
    /// one) has it open. Opening after a crash may take a while: redb verifies and
    /// repairs the file first.
    pub fn open(config: SpoolConfig) -> Result<Spool> {
        let SpoolConfig {
            dir,
            fsync,
            max_batch,
            queue_depth,
            cache_mib,
        } = config;
        if dir.as_os_str().is_empty() {
            return Err(QueueError::Config("spool.dir is empty".into()));
        }
        if max_batch == 0 {
            return Err(QueueError::Config(
                "spool.max_batch must be at least 1".into(),
            ));
        }
        if queue_depth == 0 {
            return Err(QueueError::Config(
                "spool.queue_depth must be at least 1".into(),
            ));
        }
        let io_err = |what: &str, path: &Path, e: std::io::Error| {
            QueueError::Storage(format!("{what} {}: {e}", path.display()))
        };
        files::prepare_dir(&dir).map_err(|e| io_err("cannot create spool directory", &dir, e))?;
        let path = dir.join(SPOOL_FILE);
        files::prepare_file(&path).map_err(|e| io_err("cannot create", &path, e))?;
        let cache_bytes = cache_mib.saturating_mul(1024 * 1024);
        let open = {
            let path = path.clone();
            move || {
                Database::builder()
                    .set_cache_size(cache_bytes)
                    .set_repair_callback(|_| {
                        tracing::warn!("spool was not closed cleanly; verifying and repairing it");
                    })
                    .create(&path)
            }
        };
        Self::open_with(dir, Box::new(open), fsync, max_batch, queue_depth)
    }

    /// Opens the database with `open` and starts the writer (the file is in place).
    pub(crate) fn open_with(
        dir: PathBuf,
        open: Opener,
        fsync: bool,
        max_batch: usize,
        queue_depth: usize,
    ) -> Result<Spool> {
        let path = dir.join(SPOOL_FILE);
        let db = open().map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => QueueError::Locked(dir.clone()),
            e => QueueError::Storage(format!("cannot open {}: {e}", path.display())),
        })?;
        // Make sure every table exists, so readers never see a missing one.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(BODIES).map_err(storage)?;
        txn.open_table(ENVELOPES).map_err(storage)?;
        txn.open_table(SCHEDULE).map_err(storage)?;
        txn.open_table(DEAD_LETTERS).map_err(storage)?;
        txn.open_table(CHECKPOINTS).map_err(storage)?;
        txn.open_table(outbox::OUTBOX).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let last_event = outbox::last_seq(&db.begin_read().map_err(storage)?)?;
        // A new file's directory entry must be durable too, or a crash could lose the
        // whole file along with everything committed to it.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                QueueError::Storage(format!(
                    "cannot sync spool directory {}: {e}",
                    dir.display()
                ))
            })?;

        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            db: RwLock::new(reads::DbSlot::Open(db.clone())),
            open,
            dir: dir.clone(),
            claims: Mutex::default(),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            events: outbox::EventLog::new(last_event),
        });
        let (tx, rx) = mpsc::channel(queue_depth);
        let writer = writer::spawn(shared.clone(), db, rx, fsync, max_batch)
            .map_err(|e| QueueError::Storage(format!("cannot start spool writer: {e}")))?;
        if !fsync {
            tracing::warn!(dir = %dir.display(), "spool fsync is OFF: accepted messages can be lost on a crash");
        }
        tracing::info!(dir = %dir.display(), max_batch, "spool open");
        Ok(Spool {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    /// The directory this spool lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The writer's counters (commits, changes, corrupt messages set aside).
    pub fn metrics(&self) -> SpoolMetrics {
        let shared = &self.inner.shared;
        SpoolMetrics {
            commits: shared.commits.load(Ordering::Relaxed),
            ops: shared.ops.load(Ordering::Relaxed),
            corrupt: shared.lock_claims().corrupt.len() as u64,
            recoveries: shared.recoveries.load(Ordering::Relaxed),
        }
    }

    async fn get_queued(&self, id: MessageId) -> Result<Option<(Envelope, Bytes)>> {
        self.read(move |shared| {
            let txn = begin_read(shared)?;
            load(&txn, id)
        })
        .await
    }

    async fn list_queued(&self, limit: usize) -> Result<Vec<Envelope>> {
        self.read(move |shared| {
            let txn = begin_read(shared)?;
            let table = txn.open_table(ENVELOPES).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(storage)?.take(limit) {
                let (key, record) = entry.map_err(storage)?;
                let id = MessageId::from_u128(key.value());
                out.push(decode_envelope(id, record.value())?.1);
            }
            Ok(out)
        })
        .await
    }

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.read(move |shared| {
            let txn = begin_read(shared)?;
            let table = txn.open_table(DEAD_LETTERS).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(storage)?.take(limit) {
                let (key, record) = entry.map_err(storage)?;
                out.push(decode_dead_letter(
                    MessageId::from_u128(key.value()),
                    record.value(),
                )?);
            }
            Ok(out)
        })
        .await
    }

    /// Stops taking changes, waits until every change already sent is committed (and,
    /// with `fsync = false`, made durable), and stops the writer. Later changes fail
    /// with [`QueueError::ShuttingDown`]; reads keep working until the spool is dropped.
    pub async fn shutdown(&self) -> Result<()> {
        let Some(tx) = &self.inner.tx else {
            return Ok(());
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Msg::Shutdown { reply }).await.is_err() {
            return Ok(()); // already shut down
        }
        rx.await.map_err(|_| {
            QueueError::Storage("the spool writer stopped before finishing its shutdown".into())
        })?
    }

    /// Stores `messages` (and `mark`, a checkpoint op) in one transaction.
    async fn enqueue_group(
        &self,
        messages: Vec<(Envelope, Bytes)>,
        mark: Option<Op>,
    ) -> Result<()> {
        let tx = self.inner.tx.as_ref().ok_or(QueueError::ShuttingDown)?;
        let due_ms = unix_ms(SystemTime::now());
        let mut ops = Vec::with_capacity(messages.len() + 1);
        let mut answers = Vec::with_capacity(messages.len() + 1);
        let enqueues = messages.into_iter().map(|(envelope, body)| {
            let events = outbox::Outbox::encode(&crate::queued_events(&envelope))?;
            Ok(Op::Enqueue {
                envelope,
                body,
                due_ms,
                events,
            })
        });
        for op in enqueues.chain(mark.map(Ok)) {
            let (reply, answer) = oneshot::channel();
            ops.push((op?, reply));
            answers.push(answer);
        }
        tx.send(Msg::Group(ops))
            .await
            .map_err(|_| QueueError::ShuttingDown)?;
        for answer in answers {
            answer.await.map_err(|_| {
                QueueError::Storage("the spool writer stopped before answering".into())
            })??;
        }
        Ok(())
    }

    async fn submit(&self, op: Op) -> Result<Output> {
        let tx = self.inner.tx.as_ref().ok_or(QueueError::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Op { op, reply })
            .await
            .map_err(|_| QueueError::ShuttingDown)?;
        rx.await
            .map_err(|_| QueueError::Storage("the spool writer stopped before answering".into()))?
    }

    /// Runs `f` on the blocking pool (redb reads do file I/O).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| QueueError::Storage(format!("spool read task failed: {e}")))?
    }

    fn ensure_claimed(&self, id: MessageId) -> Result<()> {
        if self.inner.shared.lock_claims().held.contains(&id.as_u128()) {
            Ok(())
        } else {
            Err(QueueError::NotClaimed(id))
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; joining
        // it means the file is closed (and its lock released) once the drop returns.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("spool writer thread panicked");
        }
    }
}
