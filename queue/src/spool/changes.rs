//! What each [`Op`] changes, inside the write transaction of its batch: the spool's
//! tables (and the event outbox) opened once per transaction, and one method per op.

use bytes::Bytes;
use redb::{ReadableTable, StorageError, Table};

use super::outbox::{EventLog, Outbox};
use super::tables::{
    BODIES, CHECKPOINTS, DEAD_LETTERS, ENVELOPES, LANES, SCHEDULE, decode_dead_letter,
    decode_envelope, encode_dead_letter, encode_envelope, later_in, schedule_key,
};
use super::writer::{Op, Output};
use crate::{DeadLetter, Envelope, MessageId, Priority, QueueError, Recipient, Result};

/// The open tables of one write transaction.
pub(super) struct Tables<'txn> {
    bodies: Table<'txn, u128, &'static [u8]>,
    envelopes: Table<'txn, u128, &'static [u8]>,
    schedule: Table<'txn, (u64, u128), ()>,
    dead_letters: Table<'txn, u128, &'static [u8]>,
    checkpoints: Table<'txn, &'static str, u64>,
    outbox: Outbox<'txn>,
}

/// The outer error is a storage failure (abort the batch); the inner one is this op's
/// own failure (not found, corrupt), decided before the op changed anything.
type OpResult = std::result::Result<Result<Output>, StorageError>;

impl<'txn> Tables<'txn> {
    /// Opens (creating if missing) every table.
    pub(super) fn open(
        txn: &'txn redb::WriteTransaction,
        events: &'txn EventLog,
    ) -> std::result::Result<Self, redb::TableError> {
        Ok(Tables {
            bodies: txn.open_table(BODIES)?,
            envelopes: txn.open_table(ENVELOPES)?,
            schedule: txn.open_table(SCHEDULE)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            checkpoints: txn.open_table(CHECKPOINTS)?,
            outbox: Outbox::open(txn, events)?,
        })
    }

    pub(super) fn apply(&mut self, op: &Op) -> OpResult {
        match op {
            Op::Enqueue {
                envelope,
                body,
                due_ms,
                events,
            } => {
                let output = self.enqueue(envelope, body, *due_ms)?;
                // A repeated enqueue (same id) had its events written the first time.
                if matches!(output, Ok(Output::Done)) {
                    self.outbox.append(events);
                }
                Ok(output)
            }
            Op::Resolve {
                id,
                retry,
                dead,
                at_ms,
                events,
            } => {
                let output = self.resolve(*id, retry.as_ref(), dead.as_ref(), *at_ms)?;
                if output.is_ok() {
                    self.outbox.append(events);
                }
                Ok(output)
            }
            Op::Record { events } => {
                self.outbox.append(events);
                Ok(Ok(Output::Done))
            }
            Op::EventsTaken { upto } => {
                self.outbox.remove_upto(*upto)?;
                Ok(Ok(Output::Done))
            }
            Op::Flush { now_ms } => self.flush(*now_ms),
            Op::RequeueDead { id, now_ms } => self.requeue_dead(*id, *now_ms),
            Op::PurgeDead { id } => self.purge_dead(*id),
            Op::Checkpoint { name, value, .. } => {
                self.set_checkpoint(name, *value)?;
                Ok(Ok(Output::Done))
            }
        }
    }

    /// Sets (or with `None` removes) a named position.
    pub(super) fn set_checkpoint(
        &mut self,
        name: &str,
        value: Option<u64>,
    ) -> std::result::Result<(), StorageError> {
        match value {
            Some(value) => self.checkpoints.insert(name, value)?,
            None => self.checkpoints.remove(name)?,
        };
        Ok(())
    }

    /// See [`Outbox::forget_messages`].
    pub(super) fn forget_events_of(
        &mut self,
        messages: &[u128],
    ) -> std::result::Result<usize, StorageError> {
        self.outbox.forget_messages(messages)
    }

    /// Writes what the ops gathered for the outbox: call once, after the last op.
    pub(super) fn finish(&mut self) -> std::result::Result<(), StorageError> {
        self.outbox.finish()
    }

    /// The schedule key of the stored envelope record: `None` if there is no record.
    fn stored_key(
        &self,
        id: MessageId,
    ) -> std::result::Result<Option<Result<(u64, u128)>>, StorageError> {
        Ok(self.envelopes.get(id.as_u128())?.map(|record| {
            decode_envelope(id, record.value())
                .map(|(due, e)| schedule_key(e.meta.priority, due, id.as_u128()))
        }))
    }

    fn stored_dead_letter(
        &self,
        id: MessageId,
    ) -> std::result::Result<Option<Result<DeadLetter>>, StorageError> {
        Ok(self
            .dead_letters
            .get(id.as_u128())?
            .map(|record| decode_dead_letter(id, record.value())))
    }

    fn enqueue(&mut self, envelope: &Envelope, body: &Bytes, due_ms: u64) -> OpResult {
        let id = envelope.id;
        let record = match encode_envelope(envelope, due_ms) {
            Ok(record) => record,
            Err(e) => return Ok(Err(e)),
        };
        // The same id again (a retried enqueue): replace it, keeping one schedule key.
        let output = match self.stored_key(id)? {
            Some(Ok(old)) => {
                self.schedule.remove(old)?;
                Output::Replaced
            }
            Some(Err(e)) => return Ok(Err(e)),
            None => Output::Done,
        };
        let key = id.as_u128();
        self.envelopes.insert(key, record.as_slice())?;
        self.bodies.insert(key, body.as_ref())?;
        self.schedule
            .insert(schedule_key(envelope.meta.priority, due_ms, key), ())?;
        Ok(Ok(output))
    }

    /// Removes what a refused enqueue left (its commit failed, maybe after its data had
    /// reached the file): envelope, schedule key, and the body unless a dead letter
    /// keeps it. Whether there was anything to remove.
    pub(super) fn remove_refused(&mut self, key: u128) -> std::result::Result<bool, StorageError> {
        let id = MessageId::from_u128(key);
        match self.stored_key(id)? {
            None => return Ok(false),
            Some(Ok(scheduled)) => {
                self.schedule.remove(scheduled)?;
            }
            Some(Err(e)) => {
                // Cannot name its schedule key; claim skips a key without an envelope.
                tracing::error!(%id, error = %e, "refused message has a corrupt envelope record");
            }
        }
        self.envelopes.remove(key)?;
        if self.dead_letters.get(key)?.is_none() {
            self.bodies.remove(key)?;
        }
        Ok(true)
    }

    fn resolve(
        &mut self,
        id: MessageId,
        retry: Option<&(Envelope, u64)>,
        dead: Option<&(Vec<Recipient>, String)>,
        at_ms: u64,
    ) -> OpResult {
        let key = id.as_u128();
        let decoded = self
            .envelopes
            .get(key)?
            .map(|record| decode_envelope(id, record.value()));
        let (due, stored) = match decoded {
            None => return Ok(Err(QueueError::NotFound(id))),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(found)) => found,
        };
        // Encode everything first: an op that fails changes nothing.
        let retry_record =
            match retry.map(|(envelope, due)| (encode_envelope(envelope, *due), *due)) {
                Some((Err(e), _)) => return Ok(Err(e)),
                Some((Ok(record), due)) => Some((record, due)),
                None => None,
            };
        let lane = stored.meta.priority;
        let dead_record = match dead {
            None => None,
            Some((recipients, reason)) => {
                let letter = match self.stored_dead_letter(id)? {
                    Some(Err(e)) => return Ok(Err(e)),
                    // Some recipients were dead-lettered before: add these to them,
                    // once each (a resolve re-applied after a storage failure may
                    // already be in).
                    Some(Ok(mut letter)) => {
                        for recipient in recipients {
                            let known = &letter.envelope.recipients;
                            if !known.iter().any(|r| r.address == recipient.address) {
                                letter.envelope.recipients.push(recipient.clone());
                            }
                        }
                        letter.reason = reason.clone();
                        letter.at_ms = at_ms;
                        letter
                    }
                    None => DeadLetter {
                        envelope: Envelope {
                            recipients: recipients.clone(),
                            ..stored
                        },
                        at_ms,
                        reason: reason.clone(),
                    },
                };
                match encode_dead_letter(&letter) {
                    Ok(record) => Some(record),
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        self.schedule.remove(schedule_key(lane, due, key))?;
        if let Some(record) = dead_record {
            self.dead_letters.insert(key, record.as_slice())?;
        }
        match retry_record {
            Some((record, due)) => {
                self.envelopes.insert(key, record.as_slice())?;
                self.schedule.insert(schedule_key(lane, due, key), ())?;
            }
            None => {
                self.envelopes.remove(key)?;
                // The body stays while a dead letter refers to it (for requeue).
                if self.dead_letters.get(key)?.is_none() {
                    self.bodies.remove(key)?;
                }
            }
        }
        Ok(Ok(Output::Done))
    }

    fn flush(&mut self, now_ms: u64) -> OpResult {
        let mut later = Vec::new();
        for lane in LANES {
            for entry in self.schedule.range(later_in(lane, now_ms))? {
                let (key, _) = entry?;
                later.push(key.value());
            }
        }
        for &(scheduled, key) in &later {
            let id = MessageId::from_u128(key);
            let decoded = self
                .envelopes
                .get(key)?
                .map(|r| decode_envelope(id, r.value()));
            let (record, priority) = match decoded {
                Some(Ok((_, envelope))) => {
                    (encode_envelope(&envelope, now_ms), envelope.meta.priority)
                }
                Some(Err(e)) => (Err(e), Priority::Normal),
                None => continue,
            };
            let record = match record {
                Ok(record) => record,
                Err(e) => return Ok(Err(e)),
            };
            self.schedule.remove((scheduled, key))?;
            self.schedule
                .insert(schedule_key(priority, now_ms, key), ())?;
            self.envelopes.insert(key, record.as_slice())?;
        }
        Ok(Ok(Output::Count(later.len() as u64)))
    }

    fn requeue_dead(&mut self, id: MessageId, now_ms: u64) -> OpResult {
        let key = id.as_u128();
        let mut letter = match self.stored_dead_letter(id)? {
            None => return Ok(Err(QueueError::NotFound(id))),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(letter)) => letter,
        };
        let Some(body) = self.bodies.get(key)?.map(|b| b.value().to_vec()) else {
            return Ok(Err(QueueError::Corrupt {
                id,
                reason: "dead letter without a body".into(),
            }));
        };
        // Still queued for other recipients: queue these as a new message, so the two
        // never overwrite each other's envelope.
        let still_queued = self.envelopes.get(key)?.is_some();
        let new_id = if still_queued { MessageId::new() } else { id };
        let envelope = &mut letter.envelope;
        envelope.id = new_id;
        envelope.requeued_at_ms = Some(now_ms);
        for recipient in &mut envelope.recipients {
            recipient.attempts = 0;
        }
        let record = match encode_envelope(envelope, now_ms) {
            Ok(record) => record,
            Err(e) => return Ok(Err(e)),
        };
        let new_key = new_id.as_u128();
        self.dead_letters.remove(key)?;
        if still_queued {
            self.bodies.insert(new_key, body.as_slice())?;
        }
        self.envelopes.insert(new_key, record.as_slice())?;
        self.schedule
            .insert(schedule_key(envelope.meta.priority, now_ms, new_key), ())?;
        Ok(Ok(Output::Id(new_id)))
    }

    fn purge_dead(&mut self, id: MessageId) -> OpResult {
        let key = id.as_u128();
        if self.dead_letters.remove(key)?.is_none() {
            return Ok(Err(QueueError::NotFound(id)));
        }
        if self.envelopes.get(key)?.is_none() {
            self.bodies.remove(key)?;
        }
        Ok(Ok(Output::Done))
    }
}
