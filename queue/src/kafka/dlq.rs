//! Reading the dead-letter topic back, for `postroad dlq list|inspect`.
//!
//! Dead letters are records in Kafka: they are read from each partition's start up to
//! its high watermark by a client that joins no group and commits nothing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::config::KafkaConfig;
use super::record;
use crate::{DeadLetter, MessageId, QueueError, Result};

/// The longest a listing may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Up to `limit` dead letters per partition (oldest first overall), or only the one with
/// `find`'s id. Blocking: call it from `spawn_blocking`.
pub fn read(
    config: &KafkaConfig,
    limit: usize,
    find: Option<MessageId>,
) -> Result<Vec<(DeadLetter, Bytes)>> {
    let topic = config.topics.dlq.name.as_str();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "postroad-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        // An end-of-partition event: offsets may have gaps before the high watermark.
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string());
    for (key, value) in &config.client {
        client.set(key, value);
    }
    let consumer: BaseConsumer = client
        .create()
        .map_err(|e| QueueError::Config(format!("cannot create a Kafka client: {e}")))?;
    let unavailable = |e| QueueError::Unavailable(format!("cannot read {topic}: {e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(unavailable)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // (partition, next offset to read, high watermark, records taken)
    let mut left = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(unavailable)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(unavailable)?;
            left.push((p, high, 0usize));
        }
    }
    if left.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl).map_err(unavailable)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut found = Vec::new();
    while !left.is_empty() {
        if Instant::now() >= deadline {
            return Err(QueueError::Unavailable(format!(
                "reading {topic} took longer than {READ_TIMEOUT:?}"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(p)) => {
                left.retain(|l| l.0 != p);
                continue;
            }
            Err(e) => return Err(unavailable(e)),
        };
        let Some(slot) = left.iter_mut().position(|l| l.0 == message.partition()) else {
            continue;
        };
        let (_, high, taken) = &mut left[slot];
        *taken += 1;
        let done = message.offset() + 1 >= *high || *taken >= limit;
        // A record that is not a dead letter of ours (or is damaged) is skipped.
        if let Ok((_, envelope)) = record::decode(message.headers()) {
            let wanted = find.is_none_or(|id| id == envelope.id);
            if wanted {
                let reason = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == record::REASON_HEADER))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let at_ms = message.timestamp().to_millis().unwrap_or(0).max(0) as u64;
                let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                found.push((
                    DeadLetter {
                        envelope,
                        at_ms,
                        reason,
                    },
                    body,
                ));
                if find.is_some() {
                    return Ok(found);
                }
            }
        }
        if done {
            left.remove(slot);
        }
    }
    found.sort_by_key(|(d, _)| d.at_ms);
    found.truncate(limit);
    Ok(found)
}
