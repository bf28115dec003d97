//! The spool as a [`Queue`]: each operation a write through the group-committing
//! writer thread or a read on the blocking pool.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::reads::begin_read;
use super::tables::{BODIES, DEAD_LETTERS, LANES, decode_dead_letter, storage};
use super::writer::{Op, Output};
use super::{Shared, Spool, outbox};
use crate::{
    Checkpoint, Claimed, DeadLetter, DeliveryEvent, Envelope, MessageId, Queue, QueueError,
    QueueStats, RecoveryReport, Resolution, Result, unix_ms,
};

#[async_trait]
impl Queue for Spool {
    async fn enqueue(&self, envelope: Envelope, body: Bytes) -> Result<()> {
        let due_ms = unix_ms(SystemTime::now());
        let events = outbox::Outbox::encode(&crate::queued_events(&envelope))?;
        self.submit(Op::Enqueue {
            envelope,
            body,
            due_ms,
            events,
        })
        .await
        .map(|_| ())
    }

    async fn enqueue_many(&self, messages: Vec<(Envelope, Bytes)>) -> Result<()> {
        self.enqueue_group(messages, None).await
    }

    async fn enqueue_checkpointed(
        &self,
        messages: Vec<(Envelope, Bytes)>,
        checkpoint: Checkpoint,
    ) -> Result<()> {
        let mark = Op::Checkpoint {
            name: checkpoint.name,
            value: Some(checkpoint.value),
            previous: checkpoint.previous,
        };
        self.enqueue_group(messages, Some(mark)).await
    }

    async fn checkpoint(&self, name: &str) -> Result<Option<u64>> {
        let name = name.to_string();
        self.read(move |shared| shared.checkpoint(&name)).await
    }

    async fn clear_checkpoint(&self, name: &str) -> Result<()> {
        self.submit(Op::Checkpoint {
            name: name.to_string(),
            value: None,
            previous: None,
        })
        .await
        .map(|_| ())
    }

    async fn claim(&self, max: usize) -> Result<Vec<Claimed>> {
        self.claim_lanes(max, LANES.len()).await
    }

    async fn claim_urgent(&self, max: usize) -> Result<Vec<Claimed>> {
        self.claim_lanes(max, 2).await
    }

    async fn resolve(&self, id: MessageId, resolution: Resolution) -> Result<()> {
        self.ensure_claimed(id)?;
        let now = SystemTime::now();
        let retry = match resolution.retry {
            Some((envelope, _)) if envelope.id != id => {
                return Err(QueueError::Storage(format!(
                    "resolve({id}) was given the envelope of {}",
                    envelope.id
                )));
            }
            Some((envelope, until)) => Some((envelope, unix_ms(until))),
            None => None,
        };
        let events = outbox::Outbox::encode(&resolution.events)?;
        self.submit(Op::Resolve {
            id,
            retry,
            dead: resolution.dead,
            at_ms: unix_ms(now),
            events,
        })
        .await
        .map(|_| ())
    }

    async fn record(&self, events: Vec<DeliveryEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = outbox::Outbox::encode(&events)?;
        self.submit(Op::Record { events }).await.map(|_| ())
    }

    async fn events_after(&self, after: u64, max: usize) -> Result<Vec<(u64, DeliveryEvent)>> {
        self.read(move |shared| outbox::read_after(&begin_read(shared)?, after, max))
            .await
    }

    async fn events_taken(&self, upto: u64) -> Result<()> {
        self.submit(Op::EventsTaken { upto }).await.map(|_| ())
    }

    fn events_committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.events.subscribe()
    }

    async fn get(&self, id: MessageId) -> Result<Option<(Envelope, Bytes)>> {
        self.get_queued(id).await
    }

    async fn list(&self, limit: usize) -> Result<Vec<Envelope>> {
        self.list_queued(limit).await
    }

    async fn flush(&self) -> Result<u64> {
        match self
            .submit(Op::Flush {
                now_ms: unix_ms(SystemTime::now()),
            })
            .await?
        {
            Output::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.list_dead(limit).await
    }

    async fn get_dead_letter(&self, id: MessageId) -> Result<Option<(DeadLetter, Bytes)>> {
        self.read(move |shared| {
            let txn = begin_read(shared)?;
            let dead = txn.open_table(DEAD_LETTERS).map_err(storage)?;
            let Some(record) = dead.get(id.as_u128()).map_err(storage)? else {
                return Ok(None);
            };
            let letter = decode_dead_letter(id, record.value())?;
            let bodies = txn.open_table(BODIES).map_err(storage)?;
            let body = bodies
                .get(id.as_u128())
                .map_err(storage)?
                .map(|b| Bytes::copy_from_slice(b.value()))
                .ok_or_else(|| QueueError::Corrupt {
                    id,
                    reason: "dead letter without a body".into(),
                })?;
            Ok(Some((letter, body)))
        })
        .await
    }

    async fn requeue_dead_letter(&self, id: MessageId) -> Result<MessageId> {
        match self
            .submit(Op::RequeueDead {
                id,
                now_ms: unix_ms(SystemTime::now()),
            })
            .await?
        {
            Output::Id(new_id) => Ok(new_id),
            _ => Ok(id),
        }
    }

    async fn purge_dead_letter(&self, id: MessageId) -> Result<()> {
        self.submit(Op::PurgeDead { id }).await.map(|_| ())
    }

    async fn recover(&self) -> Result<RecoveryReport> {
        self.read(Shared::recover).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        let now_ms = unix_ms(SystemTime::now());
        self.read(move |shared| shared.stats(now_ms)).await
    }
}

impl Spool {
    /// Up to `max` due messages of the `lanes` most urgent lanes, the lanes in turn.
    async fn claim_lanes(&self, max: usize, lanes: usize) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now_ms = unix_ms(SystemTime::now());
        self.read(move |shared| shared.claim(max, now_ms, &LANES[..lanes]))
            .await
    }
}
