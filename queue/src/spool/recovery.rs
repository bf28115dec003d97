//! How the writer gets over a storage failure (disk full, I/O error) without a restart.
//!
//! redb poisons a [`Database`] after an I/O error: every later transaction fails with
//! "Previous I/O error occurred". So on a storage failure the writer
//!
//! 1. closes the database: it marks the shared handle as recovering (readers fail fast
//!    with "spool unavailable") and drops its own; redb releases the file (and its
//!    `flock`) once the last reader has let go;
//! 2. answers the failed batch: enqueues and admin ops get the error (the SMTP client is
//!    told to try later), resolves are parked, to be applied later;
//! 3. waits with a backoff (100 ms doubling to 2 s), answering what arrives meanwhile the
//!    same way, and reopens the file (redb repairs it on open) until that works;
//! 4. commits, before anything else, one durable transaction that removes whatever a
//!    refused enqueue left in the file (a commit can fail after its data got there),
//!    puts back the checkpoints a refused batch set, and re-applies the parked resolves, then hands the new handle to the readers and
//!    answers the parked waiters.
//!
//! Re-applying a resolve is idempotent: one whose first commit did reach the file finds
//! the message gone (answered as done) or its retry already stored, and dead-lettered
//! recipients are never added twice. Claims are kept in memory and stay valid: the
//! reopened file holds the same messages.
//!
//! Shutdown while the storage is broken makes one last attempt; if that fails too, the
//! parked resolves get the error (their messages stay queued and are delivered again
//! after the restart) and the writer stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, Durability};
use tokio::sync::mpsc::Receiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;

use super::writer::{Batch, Failure, Msg, Op, Output, Reply, Tables, Writer, clone_error};
use crate::{MessageId, QueueError, Result};

/// First wait before reopening, doubled after every failed attempt up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// A failure this soon after a recovery goes on with the backoff where it was, instead
/// of starting over (storage that keeps failing, e.g. a file system that stays full
/// while small transactions still fit).
const CALM: Duration = Duration::from_secs(30);
/// How often the channel is checked while waiting between attempts: new enqueues are
/// refused within this long.
const POLL: Duration = Duration::from_millis(10);
/// How long the last attempt (at shutdown) waits for readers to release the old handle.
const LAST_ATTEMPT: Duration = Duration::from_secs(2);
/// A failing attempt is logged at `warn` when its error changes, and at least this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What a storage failure left for the writer to do once the database is back.
#[derive(Default)]
pub(super) struct Pending {
    /// Messages whose enqueue was refused but whose failed commit may have reached the
    /// file; removed by the first transaction after reopening.
    refused: Vec<u128>,
    /// Checkpoints set by a refused batch whose failed commit may have reached the
    /// file, with the values to restore (the messages they count are removed).
    checkpoints: Vec<(String, Option<u64>)>,
    /// Resolves not yet committed, with their waiters.
    parked: Batch,
}

/// The reopening backoff, carried over to a failure soon after a recovery.
#[derive(Default)]
pub(super) struct Backoff {
    /// The delay to go on with, and when the last recovery was.
    resume: Option<(Duration, Instant)>,
}

impl Backoff {
    fn first(&self) -> Duration {
        match self.resume {
            Some((delay, at)) if at.elapsed() < CALM => delay,
            _ => FIRST_DELAY,
        }
    }
}

enum Reopen {
    Done,
    /// A reader still holds the old handle, so redb's lock on the file is still taken.
    InUse,
    Failed(String),
}

impl Writer {
    /// A batch failed with a storage failure: close the database and answer the batch
    /// (resolves are parked). [`Writer::recover`] takes it from there.
    pub(super) fn fail_batch(&mut self, batch: &mut Batch, failure: Failure) {
        let Failure {
            error, in_commit, ..
        } = failure;
        tracing::warn!(error = %error, ops = batch.len(), "spool storage failure; closing the database to reopen it");
        self.shared.set_recovering(match &error {
            QueueError::Storage(reason) => reason.clone(),
            other => other.to_string(),
        });
        self.db = None;
        // Only a failed commit can have left anything in the file; an enqueue that
        // replaced an older copy of its message leaves that message stored either way.
        let outcomes = in_commit.unwrap_or_default();
        for (i, (op, reply)) in batch.drain(..).enumerate() {
            match &op {
                Op::Resolve { .. } => self.pending.parked.push((op, reply)),
                Op::Enqueue { envelope, .. } => {
                    if matches!(outcomes.get(i), Some(Ok(Output::Done))) {
                        self.pending.refused.push(envelope.id.as_u128());
                    }
                    let _ = reply.send(Err(clone_error(&error)));
                }
                Op::Checkpoint { name, previous, .. } => {
                    if outcomes.get(i).is_some() {
                        self.pending.checkpoints.push((name.clone(), *previous));
                    }
                    let _ = reply.send(Err(clone_error(&error)));
                }
                _ => {
                    let _ = reply.send(Err(clone_error(&error)));
                }
            }
        }
    }

    /// Reopens the database after [`Writer::fail_batch`], retrying with a backoff.
    /// Returns with the database open, or once the channel is closed (shutdown) and a
    /// last attempt failed.
    pub(super) fn recover(
        &mut self,
        rx: &mut Receiver<Msg>,
        shutdown_waiters: &mut Vec<oneshot::Sender<Result<()>>>,
    ) {
        let started = Instant::now();
        let mut delay = self.backoff.first();
        let mut attempts = 0u32;
        let mut warned: Option<(String, Instant)> = None;
        loop {
            let running = self.wait(rx, shutdown_waiters, delay);
            attempts += 1;
            let mut outcome = self.reopen();
            let last_until = Instant::now() + LAST_ATTEMPT;
            while !running && matches!(outcome, Reopen::InUse) && Instant::now() < last_until {
                std::thread::sleep(POLL);
                outcome = self.reopen();
            }
            let error = match outcome {
                Reopen::Done => {
                    self.backoff.resume = Some(((delay * 2).min(MAX_DELAY), Instant::now()));
                    tracing::info!(
                        attempts,
                        down_for = ?started.elapsed(),
                        "spool reopened after the storage failure; resuming"
                    );
                    return;
                }
                Reopen::InUse => "the old database handle is still in use".to_string(),
                Reopen::Failed(e) => e,
            };
            if !running {
                self.give_up(&error);
                return;
            }
            self.shared.set_recovering(error.clone());
            let warn = match &warned {
                Some((last, at)) => *last != error || at.elapsed() >= WARN_EVERY,
                None => true,
            };
            if warn {
                tracing::warn!(error = %error, attempts, retry_in = ?(delay * 2).min(MAX_DELAY), "cannot reopen the spool yet; retrying");
                warned = Some((error, Instant::now()));
            } else {
                tracing::debug!(error = %error, attempts, "cannot reopen the spool yet");
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// Waits `delay` before the next attempt, answering what arrives meanwhile. `false`
    /// once the channel is closed and drained (shutdown).
    fn wait(
        &mut self,
        rx: &mut Receiver<Msg>,
        shutdown_waiters: &mut Vec<oneshot::Sender<Result<()>>>,
        delay: Duration,
    ) -> bool {
        let until = Instant::now() + delay;
        loop {
            match rx.try_recv() {
                Ok(Msg::Op { op, reply }) => self.refuse_or_park(op, reply),
                Ok(Msg::Group(ops)) => {
                    for (op, reply) in ops {
                        self.refuse_or_park(op, reply);
                    }
                }
                Ok(Msg::Shutdown { reply }) => {
                    // What is already buffered is still received, then `Disconnected`.
                    rx.close();
                    shutdown_waiters.push(reply);
                }
                Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= until {
                        return true;
                    }
                    std::thread::sleep((until - now).min(POLL));
                }
            }
        }
    }

    fn refuse_or_park(&mut self, op: Op, reply: Reply) {
        if matches!(op, Op::Resolve { .. }) {
            self.pending.parked.push((op, reply));
        } else {
            let _ = reply.send(Err(self.shared.unavailable()));
        }
    }

    /// One attempt: open the file, commit what is pending, hand the handle out.
    fn reopen(&mut self) -> Reopen {
        let db = match (self.shared.open)() {
            Ok(db) => Arc::new(db),
            Err(DatabaseError::DatabaseAlreadyOpen) => return Reopen::InUse,
            Err(e) => return Reopen::Failed(e.to_string()),
        };
        let answers = match self.settle(&db) {
            Ok(answers) => answers,
            Err(failure) if failure.fatal => return Reopen::Failed(error_text(&failure.error)),
            Err(failure) => {
                // Not a storage failure (a corrupt record, say): applying the parked
                // resolves again would fail the same way. Fail them (their messages stay
                // claimed until a restart, as for any failed resolve) and go on.
                tracing::error!(error = %failure.error, resolves = self.pending.parked.len(), "cannot apply the parked resolves; failing them");
                for (_, reply) in self.pending.parked.drain(..) {
                    let _ = reply.send(Err(clone_error(&failure.error)));
                }
                match self.settle(&db) {
                    Ok(answers) => answers,
                    Err(failure) if failure.fatal => {
                        return Reopen::Failed(error_text(&failure.error));
                    }
                    Err(failure) => {
                        tracing::error!(error = %failure.error, ids = ?self.refused_ids(), "cannot remove refused messages from the spool");
                        self.pending.refused.clear();
                        Vec::new()
                    }
                }
            }
        };
        self.shared.set_open(db.clone());
        self.db = Some(db);
        self.non_durable_run = 0;
        self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
        for (reply, outcome) in answers {
            let _ = reply.send(outcome);
        }
        Reopen::Done
    }

    /// The first transaction on the reopened database: removes refused enqueues and
    /// applies the parked resolves, durably. On success, releases the claims those
    /// resolved and returns their answers.
    fn settle(
        &mut self,
        db: &Database,
    ) -> std::result::Result<Vec<(Reply, Result<Output>)>, Failure> {
        let mut txn = db.begin_write().map_err(Failure::new)?;
        txn.set_durability(Durability::Immediate);
        let (removed, outcomes) = {
            let mut tables = Tables::open(&txn, &self.shared.events).map_err(Failure::new)?;
            let mut removed = 0usize;
            for &key in &self.pending.refused {
                if tables.remove_refused(key).map_err(Failure::new)? {
                    removed += 1;
                }
            }
            for (name, previous) in &self.pending.checkpoints {
                tables
                    .set_checkpoint(name, *previous)
                    .map_err(Failure::new)?;
            }
            if removed > 0 {
                // Their queued events reached the file with them.
                tables
                    .forget_events_of(&self.pending.refused)
                    .map_err(Failure::new)?;
            }
            let mut outcomes = Vec::with_capacity(self.pending.parked.len());
            for (op, _) in &self.pending.parked {
                outcomes.push(match tables.apply(op).map_err(Failure::new)? {
                    // The commit that failed had reached the file after all.
                    Err(QueueError::NotFound(_)) => Ok(Output::Done),
                    outcome => outcome,
                });
            }
            tables.finish().map_err(Failure::new)?;
            (removed, outcomes)
        };
        txn.commit().map_err(|e| Failure::commit(e, Vec::new()))?;
        self.shared.events.publish();
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed refused messages that had reached the spool file before their commit failed"
            );
        }
        self.pending.refused.clear();
        self.pending.checkpoints.clear();
        let parked = std::mem::take(&mut self.pending.parked);
        if !parked.is_empty() {
            tracing::info!(
                resolves = parked.len(),
                "applied resolves parked during the storage failure"
            );
        }
        {
            let mut claims = self.shared.lock_claims();
            for ((op, _), outcome) in parked.iter().zip(&outcomes) {
                if let Some(id) = op.resolves()
                    && outcome.is_ok()
                {
                    claims.held.remove(&id.as_u128());
                }
            }
        }
        Ok(parked
            .into_iter()
            .zip(outcomes)
            .map(|((_, reply), outcome)| (reply, outcome))
            .collect())
    }

    /// Shutdown with the storage still broken: nothing more can be committed.
    fn give_up(&mut self, error: &str) {
        tracing::error!(
            error = %error,
            resolves = self.pending.parked.len(),
            "spool still unavailable at shutdown; unrecorded delivery outcomes are lost and those messages will be delivered again after a restart"
        );
        for (_, reply) in self.pending.parked.drain(..) {
            let _ = reply.send(Err(QueueError::Storage(format!(
                "spool unavailable at shutdown: {error}"
            ))));
        }
        if !self.pending.refused.is_empty() {
            tracing::error!(ids = ?self.refused_ids(), "these refused messages may have reached the spool file and reappear after a restart");
            self.pending.refused.clear();
        }
    }

    fn refused_ids(&self) -> Vec<MessageId> {
        self.pending
            .refused
            .iter()
            .map(|&key| MessageId::from_u128(key))
            .collect()
    }
}

fn error_text(e: &QueueError) -> String {
    match e {
        QueueError::Storage(s) => s.clone(),
        other => other.to_string(),
    }
}
