//! The spool's single writer thread and its group commit.
//!
//! Every change (enqueue, ack, defer, dead letter) is sent here as an [`Op`] with a
//! oneshot for the answer. The thread blocks for the first op, drains whatever else is
//! already queued (up to `max_batch`), applies them all in one redb write transaction,
//! commits once (one fsync for the whole batch), and only then answers every waiter.
//! A group of ops sent as one message is never split across transactions (it may make
//! a batch larger than `max_batch`).
//!
//! A storage failure (I/O error, failed commit) poisons the redb handle; the writer then
//! closes and reopens the database and resumes (see [`super::recovery`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
pub(super) use super::changes::Tables;
use super::recovery::{Backoff, Pending};
use super::tables::storage;
use crate::{Envelope, MessageId, QueueError, Recipient, Result};

/// With `fsync = false`, one commit in this many is still durable: redb frees pages only
/// on durable commits, so an endless run of non-durable ones would grow the file forever.
const NON_DURABLE_RUN: u32 = 64;

/// One change to the spool.
pub(crate) enum Op {
    Enqueue {
        envelope: Envelope,
        body: Bytes,
        due_ms: u64,
        /// Its `queued` events, encoded for the outbox.
        events: Vec<u8>,
    },
    /// Resolves a claimed message: reschedule the recipients still to try, keep the
    /// ones that failed for good as a dead letter, forget the rest.
    Resolve {
        id: MessageId,
        retry: Option<(Envelope, u64)>,
        dead: Option<(Vec<Recipient>, String)>,
        at_ms: u64,
        /// The resolution's events, encoded for the outbox.
        events: Vec<u8>,
    },
    /// Events of their own (see [`Queue::record`](crate::Queue::record)), encoded
    /// for the outbox.
    Record {
        events: Vec<u8>,
    },
    /// Every durable sink has the outbox's events up to `upto`: remove them.
    EventsTaken {
        upto: u64,
    },
    /// Makes every deferred message due at `now_ms`.
    Flush {
        now_ms: u64,
    },
    /// Puts a dead letter back in the queue, due at `now_ms` (under a new id when the
    /// original message is still queued for other recipients).
    RequeueDead {
        id: MessageId,
        now_ms: u64,
    },
    PurgeDead {
        id: MessageId,
    },
    /// Sets a named position (`None`: removes it); `previous` is restored if the
    /// commit fails after reaching the file.
    Checkpoint {
        name: String,
        value: Option<u64>,
        previous: Option<u64>,
    },
}

impl Op {
    /// The message whose claim this op resolves, if it resolves one.
    pub(super) fn resolves(&self) -> Option<MessageId> {
        match self {
            Op::Resolve { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// What an op answers besides success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Done,
    /// An enqueue that replaced a message already stored under its id.
    Replaced,
    /// How many messages a flush made due.
    Count(u64),
    /// The id a requeued dead letter is queued under.
    Id(MessageId),
}

/// What the writer receives.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is an Op; boxing it would add an allocation per change"
)]
pub(crate) enum Msg {
    Op {
        op: Op,
        reply: oneshot::Sender<Result<Output>>,
    },
    /// Ops that go into the same transaction (one commit), however many they are:
    /// [`Queue::enqueue_many`](crate::Queue::enqueue_many).
    Group(Vec<(Op, oneshot::Sender<Result<Output>>)>),
    /// Stop taking new ops, apply those already queued, make everything durable, answer.
    Shutdown { reply: oneshot::Sender<Result<()>> },
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    db: Arc<Database>,
    rx: mpsc::Receiver<Msg>,
    fsync: bool,
    max_batch: usize,
) -> std::io::Result<JoinHandle<()>> {
    let writer = Writer {
        shared,
        db: Some(db),
        fsync,
        max_batch: max_batch.max(1),
        non_durable_run: 0,
        pending: Pending::default(),
        backoff: Backoff::default(),
    };
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || writer.run(rx))
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    /// The writer's own handle (the one in `shared` is for readers); `None` while the
    /// database is closed after a storage failure.
    pub(super) db: Option<Arc<Database>>,
    fsync: bool,
    max_batch: usize,
    /// Non-durable commits since the last durable one (only with `fsync = false`).
    pub(super) non_durable_run: u32,
    /// What a storage failure left to do once the database is back.
    pub(super) pending: Pending,
    pub(super) backoff: Backoff,
}

pub(super) type Reply = oneshot::Sender<Result<Output>>;
pub(super) type Batch = Vec<(Op, Reply)>;

/// Why a whole batch (transaction) failed.
pub(super) struct Failure {
    pub(super) error: QueueError,
    /// A storage failure: redb refuses further work on this handle, so the database
    /// must be closed and reopened.
    pub(super) fatal: bool,
    /// The op outcomes, when the failure came from the commit itself: the batch may
    /// have reached the file anyway.
    pub(super) in_commit: Option<Vec<Result<Output>>>,
}

impl Failure {
    /// Classifies a redb error from anything before the commit.
    pub(super) fn new(e: impl Into<redb::Error>) -> Failure {
        let e = e.into();
        let fatal = matches!(
            e,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_)
        );
        Failure {
            error: QueueError::Storage(e.to_string()),
            fatal,
            in_commit: None,
        }
    }

    /// A failed commit: always fatal (redb marks the database as needing recovery).
    pub(super) fn commit(e: redb::CommitError, outcomes: Vec<Result<Output>>) -> Failure {
        Failure {
            error: QueueError::Storage(format!("commit failed: {e}")),
            fatal: true,
            in_commit: Some(outcomes),
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Batch = Vec::with_capacity(self.max_batch);
        let mut shutdown_waiters = Vec::new();
        // `None` once every sender is gone, or after `close()` once the buffer is empty.
        while let Some(first) = rx.blocking_recv() {
            take(first, &mut batch, &mut shutdown_waiters, &mut rx);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(msg) => take(msg, &mut batch, &mut shutdown_waiters, &mut rx),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch);
            }
            if self.db.is_none() {
                self.recover(&mut rx, &mut shutdown_waiters);
            }
        }
        let result = match &self.db {
            None => Err(self.shared.unavailable()),
            Some(_) if self.non_durable_run > 0 => self.flush(),
            Some(_) => Ok(()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "final spool flush failed");
        }
        tracing::debug!("spool writer stopped");
        for waiter in shutdown_waiters {
            let _ = waiter.send(clone_result(&result));
        }
    }

    fn commit_batch(&mut self, batch: &mut Batch) {
        let durable = self.fsync || self.non_durable_run + 1 >= NON_DURABLE_RUN;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let Some(db) = &self.db else {
            // Not reached: `run` recovers before taking another batch.
            let failure = Failure::new(redb::Error::PreviousIo);
            return self.fail_batch(batch, failure);
        };
        match apply(db, &self.shared, batch, durability) {
            Ok(outcomes) => {
                self.non_durable_run = if durable { 0 } else { self.non_durable_run + 1 };
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.events.publish();
                self.shared
                    .ops
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::trace!(ops = batch.len(), durable, "spool batch committed");
                // Release resolved claims before answering, so a worker that deferred a
                // message to "now" can claim it again as soon as it hears back.
                {
                    let mut claims = self.shared.lock_claims();
                    for ((op, _), outcome) in batch.iter().zip(&outcomes) {
                        if let Some(id) = op.resolves()
                            && matches!(outcome, Ok(_) | Err(QueueError::NotFound(_)))
                        {
                            claims.held.remove(&id.as_u128());
                        }
                    }
                }
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(failure) if failure.fatal => self.fail_batch(batch, failure),
            Err(failure) => {
                let e = failure.error;
                tracing::error!(error = %e, ops = batch.len(), "spool commit failed");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(clone_error(&e)));
                }
            }
        }
    }

    /// A durable commit of nothing, making earlier non-durable commits durable.
    fn flush(&mut self) -> Result<()> {
        let db = self.db.as_ref().ok_or_else(|| self.shared.unavailable())?;
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(storage)?;
        self.non_durable_run = 0;
        Ok(())
    }
}

/// Applies a batch in one transaction and commits it. The outer error fails the whole
/// batch; the inner results are each op's own outcome.
fn apply(
    db: &Database,
    shared: &Shared,
    batch: &Batch,
    durability: Durability,
) -> std::result::Result<Vec<Result<Output>>, Failure> {
    let mut txn = db.begin_write().map_err(Failure::new)?;
    txn.set_durability(durability);
    let outcomes = {
        let mut tables = Tables::open(&txn, &shared.events).map_err(Failure::new)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (op, _) in batch {
            outcomes.push(tables.apply(op).map_err(Failure::new)?);
        }
        tables.finish().map_err(Failure::new)?;
        outcomes
    };
    // On any error above, dropping `txn` aborts it: nothing of the batch is kept.
    match txn.commit() {
        Ok(()) => Ok(outcomes),
        Err(e) => Err(Failure::commit(e, outcomes)),
    }
}

fn take(
    msg: Msg,
    batch: &mut Batch,
    shutdown_waiters: &mut Vec<oneshot::Sender<Result<()>>>,
    rx: &mut mpsc::Receiver<Msg>,
) {
    match msg {
        Msg::Op { op, reply } => batch.push((op, reply)),
        Msg::Group(ops) => batch.extend(ops),
        Msg::Shutdown { reply } => {
            // New sends fail from now on; what is already buffered is still received.
            rx.close();
            shutdown_waiters.push(reply);
        }
    }
}

/// `QueueError` is not `Clone` (it may one day carry sources); copy what waiters need.
pub(super) fn clone_error(e: &QueueError) -> QueueError {
    match e {
        QueueError::Storage(s) => QueueError::Storage(s.clone()),
        QueueError::Corrupt { id, reason } => QueueError::Corrupt {
            id: *id,
            reason: reason.clone(),
        },
        QueueError::NotFound(id) => QueueError::NotFound(*id),
        QueueError::NotClaimed(id) => QueueError::NotClaimed(*id),
        other => QueueError::Storage(other.to_string()),
    }
}

fn clone_result(r: &Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(clone_error(e)),
    }
}
