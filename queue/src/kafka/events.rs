//! The events topic read by a consumer group into one sink: what `serve --roles
//! history` runs, so history writing scales apart from delivery.
//!
//! Records are read in batches of the sink's size and written with retries (the sink
//! down: the batch waits, with backoff, and nothing further is read). Offsets are
//! committed only after the sink has stored a batch, so a crash, a rebalance or an
//! outage re-reads events, never skips them; the history drops replays by event id.
//! The offsets committed are those of the records in the stored batch, never the
//! consumer's position (which runs ahead of what the sink holds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::KafkaConfig;
use super::consumer::group_config;
use crate::sink::EventSink;
use crate::{DeliveryEvent, QueueError, Result};

/// First wait after a failed write or read; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A member of `kafka.history_group_id` on the events topic.
pub struct EventConsumer {
    consumer: StreamConsumer,
    topic: String,
}

impl EventConsumer {
    /// Joins `kafka.history_group_id` on the events topic (read from the start when
    /// the group has no committed offsets), as the static member `kafka.instance_id`:
    /// restarted under the same id, it gets its partitions back at once.
    pub fn subscribe(kafka: &KafkaConfig) -> Result<Self> {
        // Offsets are never stored behind our back: librdkafka stores the offset of each
        // record it hands out, also those a closing consumer drains and drops, and a
        // commit in flight would take them. Only what the sink holds is committed.
        let own = [("enable.auto.offset.store", "false".to_string())];
        let config = group_config(kafka, &kafka.history_group_id, &kafka.instance_id, &own);
        let consumer: StreamConsumer = config.create().map_err(|e| {
            QueueError::Config(format!("cannot create the Kafka events consumer: {e}"))
        })?;
        let topic = kafka.topics.events.name.clone();
        consumer.subscribe(&[&topic]).map_err(|e| {
            QueueError::Config(format!("cannot subscribe to the events topic {topic}: {e}"))
        })?;
        Ok(Self { consumer, topic })
    }

    /// Feeds `sink` until `stop`. A batch being written when `stop` comes is not
    /// committed: the group reads it again.
    pub async fn run(self, sink: Arc<dyn EventSink>, stop: CancellationToken) {
        let batching = sink.batching();
        let max_batch = batching.max_batch.max(1);
        let mut skipped = 0u64;
        tracing::info!(topic = %self.topic, sink = sink.name(), "reading the events topic");
        loop {
            let mut events = Vec::with_capacity(max_batch);
            // Partition → (first, last) offset read into this batch.
            let mut read = BTreeMap::new();
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            match first {
                Ok(m) => skipped += decode(&m, &mut events, &mut read),
                Err(e) => {
                    tracing::warn!("cannot read the events topic: {e}");
                    // Read errors are transient (librdkafka reconnects): a short pause.
                    let mut wait = FIRST_BACKOFF;
                    if !pause(&stop, &mut wait).await {
                        return;
                    }
                    continue;
                }
            }
            let deadline = Instant::now() + batching.linger;
            while events.len() < max_batch {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => skipped += decode(&m, &mut events, &mut read),
                    Ok(Err(e)) => {
                        tracing::warn!("cannot read the events topic: {e}");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !write(&*sink, &events, &stop).await {
                return;
            }
            tracing::debug!(events = events.len(), offsets = ?read, "events stored");
            // The batch is stored: commit past its records, and only them.
            let mut past = TopicPartitionList::new();
            for (partition, (_, last)) in &read {
                let _ =
                    past.add_partition_offset(&self.topic, *partition, Offset::Offset(last + 1));
            }
            if let Err(e) = self.consumer.commit(&past, CommitMode::Async) {
                tracing::warn!(
                    "cannot commit the events topic's offsets (they are read again): {e}"
                );
            }
            if skipped > 0 {
                tracing::warn!(
                    skipped,
                    "records of the events topic that are not events were skipped"
                );
                skipped = 0;
            }
        }
    }
}

/// Writes `events` until the sink takes them; false if `stop` came first.
async fn write(sink: &dyn EventSink, events: &[DeliveryEvent], stop: &CancellationToken) -> bool {
    if events.is_empty() {
        return true;
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        match sink.write(events).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(
                    sink = sink.name(),
                    events = events.len(),
                    "event sink failed ({e}); retrying in {backoff:?}"
                );
                if !pause(stop, &mut backoff).await {
                    return false;
                }
            }
        }
    }
}

/// Waits `backoff` (then doubles it); false if `stop` came first.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Adds the record's event to `events` and its offset to `read`; 1 if it is not an
/// event (skipped), else 0.
fn decode(
    m: &BorrowedMessage<'_>,
    events: &mut Vec<DeliveryEvent>,
    read: &mut BTreeMap<i32, (i64, i64)>,
) -> u64 {
    read.entry(m.partition())
        .and_modify(|(_, last)| *last = m.offset())
        .or_insert((m.offset(), m.offset()));
    match m.payload().map(serde_json::from_slice::<DeliveryEvent>) {
        Some(Ok(event)) => {
            events.push(event);
            0
        }
        Some(Err(e)) => {
            tracing::debug!(
                partition = m.partition(),
                offset = m.offset(),
                "not an event: {e}"
            );
            1
        }
        None => 1,
    }
}
