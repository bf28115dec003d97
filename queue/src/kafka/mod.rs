//! The Kafka backend: the queue that scales past one machine.
//!
//! Ingress produces each message (one record per recipient domain, keyed by the
//! domain) to the send topic and returns only once the broker acknowledged it
//! (`acks=all`, idempotent producer). Relay workers are one consumer group: each holds
//! the records it reads until they are due, hands them out through [`Queue::claim`],
//! and on [`Queue::resolve`] produces retries to a retry tier and dead letters to the
//! DLQ topic, then marks the record resolved. Offsets are committed only past records
//! that are all resolved (see [`tracker`]); a worker that dies is replaced by the
//! records after its last commit being read again: delivery is at least once.
//!
//! No Kafka transactions are used (not every Kafka-compatible broker has them).

pub mod config;
mod consumer;
mod dlq;
mod events;
mod held;
mod producer;
mod record;
pub mod tracker;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{ClientConfig, consumer::BaseConsumer, consumer::Consumer as _};
use tokio::sync::{Mutex, Notify, watch};

pub use config::{Compression, KafkaConfig, RetryTier, TopicConfig, TopicsConfig};
use consumer::{HoldLimits, Shared};
pub use events::EventConsumer;
use held::RecordRef;
use producer::Producer;

use crate::{
    Claimed, DeadLetter, DeliveryEvent, Envelope, Gauge, MessageId, Queue, QueueError, QueueStats,
    RecoveryReport, Resolution, Result, unix_ms,
};

/// How long to wait between attempts to produce a resolution while the broker is away.
const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Longest dead-letter reason kept in a DLQ record header.
const MAX_REASON_BYTES: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A handle on the Kafka backend (producer always; group consumer for relay workers).
pub struct KafkaQueue {
    config: KafkaConfig,
    producer: Arc<Producer>,
    shared: Arc<Shared>,
    consuming: bool,
    stop: watch::Sender<bool>,
    consumer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Events for the in-process sinks; the durable copy is the events topic.
    events: crate::memory_outbox::MemoryOutbox,
}

impl KafkaQueue {
    /// Connects to the brokers and checks that every topic exists. With `consume_as`
    /// (the worker's `group.instance.id`, empty for dynamic membership) it also joins
    /// the relay consumer group.
    pub async fn connect(config: KafkaConfig, consume_as: Option<String>) -> Result<Arc<Self>> {
        config.validate().map_err(QueueError::Config)?;
        check_topics(&config).await?;
        let producer = Arc::new(Producer::new(&config)?);
        let shared = Shared::new(HoldLimits {
            per_partition: config.max_held_per_partition,
            total: config.max_held,
            bulk: config.max_held_bulk,
            send_topic: config.topics.send.name.as_str().into(),
            bulk_topic: config.topics.bulk.name.as_str().into(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut task = None;
        if let Some(instance_id) = &consume_as {
            let consumer = consumer::subscribe(&config, instance_id, shared.clone())?;
            let quarantine = quarantine(
                producer.clone(),
                shared.clone(),
                config.topics.dlq.name.clone(),
                stopped.clone(),
            );
            task = Some(tokio::spawn(consumer::run(
                consumer,
                shared.clone(),
                Duration::from_millis(config.commit_interval_ms),
                quarantine,
                stopped,
            )));
            tracing::info!(group = %config.group_id, instance = %instance_id, topics = ?config.consumed_topics(), "joined the Kafka relay group");
        }
        Ok(Arc::new(Self {
            config,
            producer,
            shared,
            consuming: consume_as.is_some(),
            stop,
            consumer_task: Mutex::new(task),
            events: Default::default(),
        }))
    }

    /// Largest message (body) that fits in a record with room for its envelope.
    pub fn max_message_size(&self) -> usize {
        self.config.max_record_bytes.saturating_sub(16 * 1024)
    }

    /// Writes events to the events topic (JSON, keyed by message id, the event id in a
    /// header so consumers can drop replays) and waits until the brokers have them
    /// (with `publish_events` off, does nothing); then hands them to the in-process
    /// sinks. The topic is the durable outbox: an event is published before the change
    /// it reports is acknowledged.
    async fn record_events(&self, events: Vec<DeliveryEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if self.config.publish_events {
            let topic = &self.config.topics.events.name;
            let sends = events.iter().map(|event| async move {
                let payload = serde_json::to_vec(event).map_err(|e| {
                    QueueError::Storage(format!("cannot encode event {}: {e}", event.event_id))
                })?;
                let event_id = event.event_id.to_string();
                let headers = OwnedHeaders::new().insert(Header {
                    key: record::EVENT_ID_HEADER,
                    value: Some(event_id.as_bytes()),
                });
                let key = event.message_id.to_string();
                self.producer
                    .send(topic, key.as_bytes(), &payload, headers)
                    .await
            });
            futures_util::future::try_join_all(sends).await?;
        }
        self.events.push(events);
        Ok(())
    }

    /// Consumer lag per partition this worker owns, from the latest statistics.
    pub fn lag(&self) -> Vec<((Arc<str>, i32), i64)> {
        self.shared.state().lag()
    }

    /// Stops consuming (committing what is resolved) and flushes the producer.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.consumer_task.lock().await.take() {
            let _ = task.await;
        }
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    }

    async fn send_message(
        &self,
        topic: &str,
        envelope: &Envelope,
        body: &[u8],
        due_ms: u64,
        reason: Option<&str>,
    ) -> Result<()> {
        let size = record::record_size(envelope, body.len()) + reason.map_or(0, str::len);
        if size > self.config.max_record_bytes {
            return Err(QueueError::TooLarge {
                size,
                max: self.config.max_record_bytes,
            });
        }
        let key = envelope
            .recipients
            .first()
            .map(|r| r.domain())
            .unwrap_or_default();
        let headers = record::headers(envelope, due_ms, reason)?;
        self.producer
            .send(topic, key.as_bytes(), body, headers)
            .await
    }

    /// Produces what a resolution needs, retrying while the broker is unreachable:
    /// the record's offset must not be committed before these are durable.
    async fn produce_resolution(&self, claimed: &Claimed, resolution: &Resolution) -> Result<()> {
        let now = SystemTime::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let retry = async {
                match &resolution.retry {
                    Some((envelope, until)) => {
                        let secs = until.duration_since(now).unwrap_or_default().as_secs();
                        let topic = self.config.retry_topic(secs);
                        self.send_message(topic, envelope, &claimed.body, unix_ms(*until), None)
                            .await
                    }
                    None => Ok(()),
                }
            };
            let dead = async {
                match &resolution.dead {
                    Some((recipients, reason)) => {
                        let mut envelope = claimed.envelope.clone();
                        envelope.recipients = recipients.clone();
                        let topic = &self.config.topics.dlq.name;
                        let reason = truncate(reason, MAX_REASON_BYTES);
                        self.send_message(
                            topic,
                            &envelope,
                            &claimed.body,
                            unix_ms(now),
                            Some(reason),
                        )
                        .await
                    }
                    None => Ok(()),
                }
            };
            let (retry, dead) = tokio::join!(retry, dead);
            match retry.and(dead) {
                Ok(()) => return Ok(()),
                // Not a broker outage: retrying cannot help.
                Err(e @ (QueueError::TooLarge { .. } | QueueError::Corrupt { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    if *self.stop.borrow() {
                        return Err(QueueError::ShuttingDown);
                    }
                    tracing::warn!(id = %claimed.envelope.id, "cannot record a delivery outcome in Kafka, retrying in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RESOLVE_RETRY_MAX);
                }
            }
        }
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn enqueue(&self, envelope: Envelope, body: Bytes) -> Result<()> {
        let due = envelope.received_at_ms;
        let events = crate::queued_events(&envelope);
        let topic = self.config.new_mail_topic(envelope.meta.priority);
        let parts = record::split_by_domain(envelope);
        for (_, part) in &parts {
            let size = record::record_size(part, body.len());
            if size > self.config.max_record_bytes {
                return Err(QueueError::TooLarge {
                    size,
                    max: self.config.max_record_bytes,
                });
            }
        }
        let sends = parts
            .iter()
            .map(|(_, part)| self.send_message(topic, part, &body, due, None));
        // The message first: its queued events are recorded only once it is stored.
        futures_util::future::try_join_all(sends).await?;
        self.record_events(events).await
    }

    async fn enqueue_many(&self, messages: Vec<(Envelope, Bytes)>) -> Result<()> {
        let sends = messages
            .into_iter()
            .map(|(envelope, body)| self.enqueue(envelope, body));
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }

    async fn claim(&self, max: usize) -> Result<Vec<Claimed>> {
        if !self.consuming {
            return Ok(Vec::new());
        }
        let now = unix_ms(SystemTime::now());
        Ok(self.shared.state().claim(max, now, &held::ALL_LANES))
    }

    async fn claim_urgent(&self, max: usize) -> Result<Vec<Claimed>> {
        if !self.consuming {
            return Ok(Vec::new());
        }
        let now = unix_ms(SystemTime::now());
        Ok(self.shared.state().claim(max, now, &held::URGENT_LANES))
    }

    async fn resolve(&self, id: MessageId, resolution: Resolution) -> Result<()> {
        // The claim is needed for the body; take it out while producing, so a
        // concurrent resolution of the same id fails instead of writing twice.
        let (at, claimed) = self.shared.state().take_claim(id)?;
        let mut resolution = resolution;
        let events = std::mem::take(&mut resolution.events);
        // The events first: if the resolution cannot be produced after them, the
        // message is resolved again later and the repeat has new event ids, but no
        // retry or dead-letter record is ever produced twice.
        let produced = match self.record_events(events).await {
            Ok(()) => self.produce_resolution(&claimed, &resolution).await,
            Err(e) => Err(e),
        };
        if let Err(e) = produced {
            self.shared.state().restore_claim(id, at, claimed);
            return Err(e);
        }
        self.shared.state().resolved(&at);
        self.shared.drained();
        Ok(())
    }

    async fn recover(&self) -> Result<RecoveryReport> {
        // Nothing to recover locally: what was claimed and not committed is read again
        // from the group's committed offsets.
        Ok(RecoveryReport::default())
    }

    async fn check(&self) -> Result<()> {
        self.producer.reach(Duration::from_secs(2)).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        let (ready, deferred, claimed) = self.shared.state().counts(unix_ms(SystemTime::now()));
        Ok(QueueStats {
            queued: ready + deferred + claimed,
            ready,
            deferred,
            claimed,
            dead_letters: 0,
        })
    }

    fn gauges(&self) -> Vec<Gauge> {
        let mut gauges: Vec<Gauge> = self
            .lag()
            .into_iter()
            .map(|((topic, partition), lag)| Gauge {
                name: "postroad_kafka_consumer_lag",
                help: "Records in a partition this worker owns that are past its committed offset",
                labels: vec![
                    ("topic", topic.to_string()),
                    ("partition", partition.to_string()),
                ],
                value: lag as f64,
            })
            .collect();
        gauges.push(Gauge {
            name: "postroad_kafka_local_events_dropped",
            help: "Events the in-process sinks (local history, metrics) fell too far behind to get",
            labels: Vec::new(),
            value: self.events.dropped() as f64,
        });
        gauges
    }

    async fn record(&self, events: Vec<DeliveryEvent>) -> Result<()> {
        self.record_events(events).await
    }

    async fn events_after(&self, after: u64, max: usize) -> Result<Vec<(u64, DeliveryEvent)>> {
        Ok(self.events.after(after, max))
    }

    async fn events_taken(&self, upto: u64) -> Result<()> {
        self.events.taken(upto);
        Ok(())
    }

    fn events_committed(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    fn ready_signal(&self) -> Option<Arc<Notify>> {
        Some(self.shared.ready.clone())
    }

    fn max_message_size(&self) -> Option<usize> {
        Some(KafkaQueue::max_message_size(self))
    }

    async fn get(&self, _id: MessageId) -> Result<Option<(Envelope, Bytes)>> {
        Err(unsupported("looking up a queued message"))
    }

    async fn list(&self, _limit: usize) -> Result<Vec<Envelope>> {
        Err(unsupported("listing queued messages"))
    }

    async fn flush(&self) -> Result<u64> {
        let flushed = self.shared.state().flush(unix_ms(SystemTime::now()));
        self.shared.ready.notify_one();
        Ok(flushed)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let config = self.config.clone();
        let read = tokio::task::spawn_blocking(move || dlq::read(&config, limit, None))
            .await
            .map_err(|e| QueueError::Storage(format!("reading dead letters failed: {e}")))??;
        Ok(read.into_iter().map(|(dead, _)| dead).collect())
    }

    async fn get_dead_letter(&self, id: MessageId) -> Result<Option<(DeadLetter, Bytes)>> {
        let config = self.config.clone();
        let read = tokio::task::spawn_blocking(move || dlq::read(&config, usize::MAX, Some(id)))
            .await
            .map_err(|e| QueueError::Storage(format!("reading dead letters failed: {e}")))??;
        Ok(read.into_iter().next())
    }

    async fn requeue_dead_letter(&self, _id: MessageId) -> Result<MessageId> {
        Err(unsupported(
            "requeueing a dead letter (it would stay in the DLQ topic and could be requeued twice)",
        ))
    }

    async fn purge_dead_letter(&self, _id: MessageId) -> Result<()> {
        Err(unsupported(
            "purging a dead letter (Kafka records go with the topic's retention)",
        ))
    }
}

fn unsupported(what: &'static str) -> QueueError {
    QueueError::Unsupported(format!(
        "{what} is not available with the Kafka backend: the messages are records in Kafka topics"
    ))
}

/// Sends a record the consumer cannot decode to the DLQ as it is (with the reason),
/// then lets its offset be committed. Retries while the broker is away.
fn quarantine(
    producer: Arc<Producer>,
    shared: Arc<Shared>,
    dlq: String,
    stopped: watch::Receiver<bool>,
) -> consumer::Quarantine {
    Box::new(
        move |error: QueueError, at: RecordRef, key: Option<Bytes>, body: Bytes| {
            tracing::error!(topic = %at.partition.0, partition = at.partition.1, offset = at.offset, "undecodable record moved to {dlq}: {error}");
            let (producer, shared, dlq, stopped) = (
                producer.clone(),
                shared.clone(),
                dlq.clone(),
                stopped.clone(),
            );
            tokio::spawn(async move {
                let reason = format!(
                    "undecodable record from {}[{}]@{}: {error}",
                    at.partition.0, at.partition.1, at.offset
                );
                loop {
                    let headers = OwnedHeaders::new().insert(Header {
                        key: record::REASON_HEADER,
                        value: Some(reason.as_bytes()),
                    });
                    match producer
                        .send(&dlq, key.as_deref().unwrap_or_default(), &body, headers)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if *stopped.borrow() => {
                            tracing::warn!("undecodable record left uncommitted at shutdown: {e}");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("cannot move an undecodable record to {dlq}: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                shared.state().resolved(&at);
                shared.drained();
            });
        },
    )
}

/// What `postroad kafka init` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExists,
}

fn admin_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in &config.client {
        client.set(key, value);
    }
    client
}

/// Creates every topic the backend uses with its configured partition count; topics
/// that exist already are left as they are.
pub async fn init_topics(config: &KafkaConfig) -> Result<Vec<(String, TopicOutcome)>> {
    config.validate().map_err(QueueError::Config)?;
    let admin: AdminClient<DefaultClientContext> = admin_config(config)
        .create()
        .map_err(|e| QueueError::Config(format!("cannot create a Kafka admin client: {e}")))?;
    let topics: Vec<NewTopic<'_>> = config
        .all_topics()
        .into_iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(config.topics.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| QueueError::Unavailable(format!("cannot create Kafka topics: {e}")))?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(name) => Ok((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                Ok((name, TopicOutcome::AlreadyExists))
            }
            Err((name, code)) => Err(QueueError::Unavailable(format!(
                "cannot create Kafka topic {name}: {code}"
            ))),
        })
        .collect()
}

/// Fails unless every topic the backend uses exists (a clear error beats a worker that
/// waits for records on a topic nobody created).
async fn check_topics(config: &KafkaConfig) -> Result<()> {
    let client = admin_config(config);
    let names: Vec<String> = config
        .all_topics()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let brokers = config.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client
            .create()
            .map_err(|e| QueueError::Config(format!("cannot create a Kafka client: {e}")))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| {
                QueueError::Unavailable(format!("cannot reach the Kafka brokers {brokers}: {e}"))
            })?;
        let missing: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| {
                !metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == *name && t.error().is_none())
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(QueueError::Config(format!(
                "Kafka topics missing: {} (create them with `postroad kafka init`)",
                missing.join(", ")
            )))
        }
    })
    .await
    .map_err(|e| QueueError::Storage(format!("topic check failed: {e}")))?
}
