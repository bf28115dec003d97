//! The event outbox: every event of an enqueue (`queued`) or a resolution is written in
//! the same transaction as the queue change, and removed only once every durable sink
//! has it ([`crate::Queue::events_taken`]). A crash at any point loses no event: what
//! the sinks had not confirmed is read again at start.
//!
//! The events of one group commit are one record, so the outbox costs one insert and
//! (later) one removal per commit, not per event; its number is the position sinks
//! report.
//!
//! | table | key | value |
//! |---|---|---|
//! | `outbox` | record number (1, 2, ...) | `[version]` then per event `[len: u32 LE][postcard DeliveryEvent]` |

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};
use tokio::sync::watch;

use super::tables::storage;
use crate::{DeliveryEvent, MessageId, QueueError, Result};

pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Format versions of outbox records: 2 added [`DeliveryEvent::provider_message_id`]
/// and [`DeliveryEvent::reason`]; records of version 1 (written before) are still read.
const BATCH_V1: u8 = 1;
const BATCH_V2: u8 = 2;

/// An event as version 1 records hold it.
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct EventV1 {
    event_id: uuid::Uuid,
    kind: crate::EventKind,
    message_id: MessageId,
    sender: String,
    recipient: String,
    domain: String,
    at_ms: u64,
    attempt: u32,
    remote_host: Option<String>,
    reply: Option<crate::Response>,
    meta: crate::Metadata,
}

impl From<EventV1> for DeliveryEvent {
    fn from(e: EventV1) -> Self {
        DeliveryEvent {
            event_id: e.event_id,
            kind: e.kind,
            message_id: e.message_id,
            sender: e.sender,
            recipient: e.recipient,
            domain: e.domain,
            at_ms: e.at_ms,
            attempt: e.attempt,
            remote_host: e.remote_host,
            reply: e.reply,
            meta: e.meta,
            provider_message_id: None,
            reason: None,
        }
    }
}

/// The outbox's sequence numbers: the next to hand out, and the last committed.
pub(crate) struct EventLog {
    next: AtomicU64,
    committed: watch::Sender<u64>,
}

impl EventLog {
    /// Numbering continues after `last`, the highest key in the table (0 when empty).
    pub(crate) fn new(last: u64) -> Self {
        Self {
            next: AtomicU64::new(last + 1),
            committed: watch::Sender::new(last),
        }
    }

    /// Called after every successful commit: events numbered before now are durable.
    pub(crate) fn publish(&self) {
        let last = self.next.load(Ordering::Relaxed) - 1;
        self.committed.send_if_modified(|c| {
            let changed = *c != last;
            *c = last;
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }
}

/// The outbox table of one write transaction, and the record being gathered for it.
pub(crate) struct Outbox<'txn> {
    table: Table<'txn, u64, &'static [u8]>,
    log: &'txn EventLog,
    record: Vec<u8>,
}

impl<'txn> Outbox<'txn> {
    pub(crate) fn open(
        txn: &'txn redb::WriteTransaction,
        log: &'txn EventLog,
    ) -> std::result::Result<Self, redb::TableError> {
        Ok(Self {
            table: txn.open_table(OUTBOX)?,
            log,
            record: Vec::new(),
        })
    }

    /// Encodes events (by the caller, off the writer thread) as they go into a record:
    /// each length-prefixed. An event that cannot be encoded fails the op before it
    /// changes anything.
    pub(crate) fn encode(events: &[DeliveryEvent]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(events.len() * 256);
        for e in events {
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            out = postcard::to_extend(e, out).map_err(|err| {
                QueueError::Storage(format!("cannot encode event {}: {err}", e.event_id))
            })?;
            let len = u32::try_from(out.len() - at - 4)
                .map_err(|_| QueueError::Storage(format!("event {} is too large", e.event_id)))?;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        Ok(out)
    }

    /// Adds encoded events to this commit's record.
    pub(crate) fn append(&mut self, encoded: &[u8]) {
        if self.record.is_empty() && !encoded.is_empty() {
            self.record.push(BATCH_V2);
        }
        self.record.extend_from_slice(encoded);
    }

    /// Writes this commit's record (if it has events), under the next number.
    pub(crate) fn finish(&mut self) -> std::result::Result<(), redb::StorageError> {
        if self.record.is_empty() {
            return Ok(());
        }
        let seq = self.log.next.fetch_add(1, Ordering::Relaxed);
        self.table.insert(seq, self.record.as_slice())?;
        self.record.clear();
        Ok(())
    }

    /// Takes the events of `messages` out of every record (a refused enqueue whose
    /// failed commit reached the file left its `queued` events there). Reads the whole
    /// outbox: only for recovery, where it is small.
    pub(crate) fn forget_messages(
        &mut self,
        messages: &[u128],
    ) -> std::result::Result<usize, redb::StorageError> {
        let mut changed = Vec::new();
        for entry in self.table.iter()? {
            let (key, value) = entry?;
            let Ok(events) = decode(value.value()) else {
                continue;
            };
            let kept: Vec<DeliveryEvent> = events
                .iter()
                .filter(|e| !messages.contains(&e.message_id.as_u128()))
                .cloned()
                .collect();
            if kept.len() != events.len() {
                changed.push((key.value(), kept, events.len()));
            }
        }
        let mut removed = 0;
        for (key, kept, before) in changed {
            removed += before - kept.len();
            match Outbox::encode(&kept) {
                Ok(encoded) if !kept.is_empty() => {
                    let mut record = vec![BATCH_V1];
                    record.extend_from_slice(&encoded);
                    self.table.insert(key, record.as_slice())?;
                }
                _ => {
                    self.table.remove(key)?;
                }
            }
        }
        Ok(removed)
    }

    /// Removes every record up to and including `upto`.
    pub(crate) fn remove_upto(&mut self, upto: u64) -> std::result::Result<(), redb::StorageError> {
        self.table.retain_in(..=upto, |_, _| false)
    }
}

/// The highest sequence number in the outbox (0 when it is empty).
pub(crate) fn last_seq(txn: &ReadTransaction) -> Result<u64> {
    let table = match txn.open_table(OUTBOX) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(storage(e)),
    };
    Ok(table.last().map_err(storage)?.map_or(0, |(k, _)| k.value()))
}

/// The events of the records after `after`, in order, each with its record's number:
/// whole records, until `max` events are reached. A record that does not decode is
/// skipped with an error logged (no sink could take it; it stays until taken).
pub(crate) fn read_after(
    txn: &ReadTransaction,
    after: u64,
    max: usize,
) -> Result<Vec<(u64, DeliveryEvent)>> {
    let table = txn.open_table(OUTBOX).map_err(storage)?;
    let mut out = Vec::with_capacity(max.min(1024));
    for entry in table.range(after.saturating_add(1)..).map_err(storage)? {
        if out.len() >= max {
            break;
        }
        let (key, value) = entry.map_err(storage)?;
        let seq = key.value();
        match decode(value.value()) {
            Ok(events) => out.extend(events.into_iter().map(|e| (seq, e))),
            Err(reason) => {
                let nil = MessageId::from_u128(0);
                tracing::error!(seq, "{}", QueueError::Corrupt { id: nil, reason });
            }
        }
    }
    Ok(out)
}

fn decode(record: &[u8]) -> std::result::Result<Vec<DeliveryEvent>, String> {
    let (version, mut rest) = match record {
        [v @ (BATCH_V1 | BATCH_V2), rest @ ..] => (*v, rest),
        [v, ..] => return Err(format!("unknown outbox record format version {v}")),
        [] => return Err("empty outbox record".into()),
    };
    let mut events = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err("outbox record is truncated".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((event, tail)) = tail.split_at_checked(len) else {
            return Err("outbox record is truncated".into());
        };
        let decoded = if version == BATCH_V1 {
            postcard::from_bytes::<EventV1>(event).map(DeliveryEvent::from)
        } else {
            postcard::from_bytes::<DeliveryEvent>(event)
        };
        events.push(decoded.map_err(|e| format!("cannot decode outbox event: {e}"))?);
        rest = tail;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let envelope = crate::Envelope::new(
            "s@example.com",
            vec![
                crate::Recipient::new("a@example.net"),
                crate::Recipient::new("b@example.org"),
            ],
            "192.0.2.1".parse().unwrap(),
        );
        let events = crate::queued_events(&envelope);
        let mut record = vec![BATCH_V2];
        record.extend(Outbox::encode(&events).unwrap());
        record.extend(Outbox::encode(&events[..1]).unwrap());
        let decoded = decode(&record).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[..2], events[..]);
        assert_eq!(decoded[2], events[0]);
        // A version 1 record (written before provider message ids) still reads.
        let e = &events[0];
        let v1 = EventV1 {
            event_id: e.event_id,
            kind: e.kind,
            message_id: e.message_id,
            sender: e.sender.clone(),
            recipient: e.recipient.clone(),
            domain: e.domain.clone(),
            at_ms: e.at_ms,
            attempt: e.attempt,
            remote_host: Some("mx.example.net [192.0.2.9]:25".into()),
            reply: None,
            meta: e.meta.clone(),
        };
        let body = postcard::to_stdvec(&v1).unwrap();
        let mut old = vec![BATCH_V1];
        old.extend((body.len() as u32).to_le_bytes());
        old.extend(body);
        let read = decode(&old).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].event_id, e.event_id);
        assert_eq!(
            read[0].remote_host.as_deref(),
            Some("mx.example.net [192.0.2.9]:25")
        );
        assert_eq!(read[0].provider_message_id, None);
        for bad in [
            &record[..record.len() - 1],
            &record[..3],
            &[9, 0][..],
            &[][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
