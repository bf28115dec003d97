//! The event outbox: every event of an enqueue (`queued`) or a resolution is written in
//! the same transaction as the queue change, under a sequence number, and removed only
//! once every durable sink has it ([`crate::Queue::events_taken`]). A crash at any
//! point loses no event: what the sinks had not confirmed is read again at start.
//!
//! | table | key | value |
//! |---|---|---|
//! | `outbox` | sequence number (1, 2, ...) | `[version][postcard DeliveryEvent]` |

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};
use tokio::sync::watch;

use super::tables::storage;
use crate::{DeliveryEvent, MessageId, QueueError, Result};

pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Format version of outbox records.
const EVENT_V1: u8 = 1;

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

/// The outbox table of one write transaction.
pub(crate) struct Outbox<'txn> {
    table: Table<'txn, u64, &'static [u8]>,
    log: &'txn EventLog,
}

impl<'txn> Outbox<'txn> {
    pub(crate) fn open(
        txn: &'txn redb::WriteTransaction,
        log: &'txn EventLog,
    ) -> std::result::Result<Self, redb::TableError> {
        Ok(Self {
            table: txn.open_table(OUTBOX)?,
            log,
        })
    }

    /// Encodes every event first, so an event that cannot be encoded changes nothing.
    pub(crate) fn encode(events: &[DeliveryEvent]) -> Result<Vec<Vec<u8>>> {
        events
            .iter()
            .map(|e| {
                postcard::to_extend(e, vec![EVENT_V1]).map_err(|err| {
                    QueueError::Storage(format!("cannot encode event {}: {err}", e.event_id))
                })
            })
            .collect()
    }

    /// Appends encoded events.
    pub(crate) fn append(
        &mut self,
        records: &[Vec<u8>],
    ) -> std::result::Result<(), redb::StorageError> {
        for record in records {
            let seq = self.log.next.fetch_add(1, Ordering::Relaxed);
            self.table.insert(seq, record.as_slice())?;
        }
        Ok(())
    }

    /// Removes every event up to and including `upto`.
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

/// Up to `max` events after `after`, in order. A record that does not decode is skipped
/// with an error logged (it cannot be delivered to any sink; it stays until taken).
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
        match decode(value.value()) {
            Ok(event) => out.push((key.value(), event)),
            Err(reason) => {
                let nil = MessageId::from_u128(0);
                tracing::error!(
                    seq = key.value(),
                    "{}",
                    QueueError::Corrupt { id: nil, reason }
                );
            }
        }
    }
    Ok(out)
}

fn decode(record: &[u8]) -> std::result::Result<DeliveryEvent, String> {
    match record {
        [EVENT_V1, rest @ ..] => {
            postcard::from_bytes(rest).map_err(|e| format!("cannot decode outbox event: {e}"))
        }
        [v, ..] => Err(format!("unknown outbox event format version {v}")),
        [] => Err("empty outbox record".into()),
    }
}
