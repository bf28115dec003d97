//! The spool's read side: the readers' database handle (swapped by the writer when it
//! reopens the database after a storage failure) and the reads that need more than one
//! lookup (`claim`, `stats`, `recover`). Reads run on the blocking pool.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableTableMetadata};

use super::Shared;
use super::tables::{
    BODIES, CHECKPOINTS, DEAD_LETTERS, ENVELOPES, LANES, SCHEDULE, decode_envelope, due_in, storage,
};
use crate::{Claimed, Envelope, MessageId, QueueError, QueueStats, RecoveryReport, Result};

/// The readers' database handle.
pub(crate) enum DbSlot {
    Open(Arc<Database>),
    /// Closed after a storage failure, with the error, until the writer reopens it.
    Recovering(String),
}

impl Shared {
    /// The database, unless it is closed for recovery.
    pub(crate) fn db(&self) -> Result<Arc<Database>> {
        match &*self.db.read().unwrap_or_else(PoisonError::into_inner) {
            DbSlot::Open(db) => Ok(db.clone()),
            DbSlot::Recovering(reason) => Err(unavailable(reason)),
        }
    }

    /// The error for anything that needs the database while it is closed.
    pub(crate) fn unavailable(&self) -> QueueError {
        match &*self.db.read().unwrap_or_else(PoisonError::into_inner) {
            DbSlot::Recovering(reason) => unavailable(reason),
            DbSlot::Open(_) => unavailable("no details"),
        }
    }

    /// Drops the readers' handle (readers still using it keep it until they finish).
    pub(crate) fn set_recovering(&self, reason: String) {
        let old = std::mem::replace(
            &mut *self.db.write().unwrap_or_else(PoisonError::into_inner),
            DbSlot::Recovering(reason),
        );
        drop(old); // outside the lock
    }

    /// A named position set with messages; `None` if never set.
    pub(crate) fn checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let txn = begin_read(self)?;
        let table = txn.open_table(CHECKPOINTS).map_err(storage)?;
        Ok(table.get(name).map_err(storage)?.map(|v| v.value()))
    }

    pub(crate) fn set_open(&self, db: Arc<Database>) {
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = DbSlot::Open(db);
    }
}

fn unavailable(reason: &str) -> QueueError {
    QueueError::Storage(format!(
        "spool unavailable: recovering from a storage error ({reason})"
    ))
}

pub(crate) fn begin_read(shared: &Shared) -> Result<ReadTransaction> {
    shared.db()?.begin_read().map_err(storage)
}

/// Loads a queued message: `None` if it has no envelope record.
pub(crate) fn load(txn: &ReadTransaction, id: MessageId) -> Result<Option<(Envelope, Bytes)>> {
    let envelopes = txn.open_table(ENVELOPES).map_err(storage)?;
    let bodies = txn.open_table(BODIES).map_err(storage)?;
    let key = id.as_u128();
    let Some(record) = envelopes.get(key).map_err(storage)? else {
        return Ok(None);
    };
    let (_, envelope) = decode_envelope(id, record.value())?;
    let Some(body) = bodies.get(key).map_err(storage)? else {
        return Err(QueueError::Corrupt {
            id,
            reason: "the envelope has no body".into(),
        });
    };
    Ok(Some((envelope, Bytes::copy_from_slice(body.value()))))
}

impl Shared {
    /// Up to `max` due messages nobody holds, from `lanes` in turn (see [`LANES`]).
    pub(crate) fn claim(&self, max: usize, now_ms: u64, lanes: &[u64]) -> Result<Vec<Claimed>> {
        // Taking the claims lock before the read transaction, and the writer releasing
        // claims only after its commit, means a message resolved concurrently is either
        // still marked held here or already gone from this snapshot: never handed out
        // twice.
        let (txn, picked) = {
            let mut claims = self.lock_claims();
            let txn = begin_read(self)?;
            let schedule = txn.open_table(SCHEDULE).map_err(storage)?;
            let mut picked = Vec::new();
            'lanes: for &lane in lanes {
                for entry in schedule.range(due_in(lane, now_ms)).map_err(storage)? {
                    if picked.len() >= max {
                        break 'lanes;
                    }
                    let (key, _) = entry.map_err(storage)?;
                    let (_, id) = key.value();
                    if claims.held.contains(&id) || claims.corrupt.contains(&id) {
                        continue;
                    }
                    picked.push(id);
                }
            }
            claims.held.extend(&picked);
            (txn, picked)
        };

        let mut claimed = Vec::with_capacity(picked.len());
        let mut corrupt = Vec::new();
        let mut failure = None;
        for &key in &picked {
            let id = MessageId::from_u128(key);
            match load(&txn, id) {
                Ok(Some((envelope, body))) => claimed.push(Claimed { envelope, body }),
                Ok(None) => {
                    tracing::error!(%id, "spool schedule names a message with no envelope; skipping it");
                    corrupt.push(key);
                }
                Err(QueueError::Corrupt { id, reason }) => {
                    tracing::error!(%id, %reason, "corrupt message in the spool; skipping it");
                    corrupt.push(key);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_some() || !corrupt.is_empty() {
            let mut claims = self.lock_claims();
            for key in &corrupt {
                claims.held.remove(key);
                claims.corrupt.insert(*key);
            }
            if let Some(e) = failure {
                for key in &picked {
                    claims.held.remove(key);
                }
                return Err(e);
            }
        }
        Ok(claimed)
    }

    pub(crate) fn stats(&self, now_ms: u64) -> Result<QueueStats> {
        let (txn, held, corrupt) = {
            let claims = self.lock_claims();
            (
                begin_read(self)?,
                claims.held.clone(),
                claims.corrupt.clone(),
            )
        };
        let schedule = txn.open_table(SCHEDULE).map_err(storage)?;
        let dead = txn.open_table(DEAD_LETTERS).map_err(storage)?;
        let queued = schedule.len().map_err(storage)?;
        let mut due = 0u64;
        let mut ready = 0u64;
        for lane in LANES {
            for entry in schedule.range(due_in(lane, now_ms)).map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                let (_, id) = key.value();
                due += 1;
                if !held.contains(&id) && !corrupt.contains(&id) {
                    ready += 1;
                }
            }
        }
        Ok(QueueStats {
            queued,
            ready,
            deferred: queued.saturating_sub(due),
            claimed: held.len() as u64,
            dead_letters: dead.len().map_err(storage)?,
        })
    }

    pub(crate) fn recover(&self) -> Result<RecoveryReport> {
        // Fail before releasing anything while the database is closed: the writer may
        // hold parked resolves of claimed messages.
        let db = self.db()?;
        let txn = {
            let mut claims = self.lock_claims();
            let released = claims.held.len();
            claims.held.clear();
            claims.corrupt.clear();
            if released > 0 {
                tracing::info!(released, "released in-memory claims");
            }
            db.begin_read().map_err(storage)?
        };
        let schedule = txn.open_table(SCHEDULE).map_err(storage)?.len();
        let envelopes = txn.open_table(ENVELOPES).map_err(storage)?.len();
        let bodies = txn.open_table(BODIES).map_err(storage)?.len();
        let dead = txn.open_table(DEAD_LETTERS).map_err(storage)?.len();
        let (schedule, envelopes, bodies, dead) = (
            schedule.map_err(storage)?,
            envelopes.map_err(storage)?,
            bodies.map_err(storage)?,
            dead.map_err(storage)?,
        );
        // Bodies outnumber envelopes by the dead letters that keep theirs.
        if schedule != envelopes || bodies < envelopes {
            tracing::warn!(
                schedule,
                envelopes,
                bodies,
                "spool tables disagree; messages with missing parts are skipped by claim"
            );
        }
        tracing::info!(queued = schedule, dead_letters = dead, "spool recovered");
        Ok(RecoveryReport {
            queued: schedule,
            dead_letters: dead,
        })
    }
}
