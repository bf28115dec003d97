//! The relay side: one consumer in the group, records held until due and claimed
//! (`high` before `normal` before `bulk`), offsets committed only past resolved
//! records, partitions paused under load (the bulk topic's at a smaller share).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio::sync::{Notify, watch};

use super::config::KafkaConfig;
use super::held::{Partition, RecordRef, State};
use super::record;
use crate::{QueueError, Result};

/// Limits for holding records in memory.
///
/// A partition is paused when it holds `per_partition` records. Past `bulk` records
/// from the bulk topic, its partitions are paused (a campaign's backlog waits there,
/// not in memory). Past `total` in all, the retry-tier and bulk partitions are paused
/// too (their records may wait hours for their due time), but never the send topic's:
/// a backlog of deferred or bulk mail must not stop new mail, whose records are due
/// at once and bounded per partition.
#[derive(Debug, Clone)]
pub struct HoldLimits {
    pub per_partition: usize,
    pub total: usize,
    pub bulk: usize,
    pub send_topic: Arc<str>,
    pub bulk_topic: Arc<str>,
}

pub struct Shared {
    state: Mutex<State>,
    /// Woken when held records arrive (the relay claims then).
    pub ready: Arc<Notify>,
    /// Woken when records are resolved (the consumer may resume partitions then).
    drained: Notify,
    limits: HoldLimits,
}

impl Shared {
    pub fn new(limits: HoldLimits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::new(limits.bulk_topic.clone())),
            ready: Arc::new(Notify::new()),
            drained: Notify::new(),
            limits,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn drained(&self) {
        self.drained.notify_one();
    }
}

/// rdkafka callbacks: rebalances, commit results, statistics (lag).
pub struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut state = self.shared.state();
        let assigned: HashSet<Partition> = state.partitions.keys().cloned().collect();
        state.lag.clear();
        for (name, topic) in statistics.topics {
            let name: Arc<str> = name.into();
            for (id, partition) in topic.partitions {
                let key = (name.clone(), id);
                if id >= 0 && partition.consumer_lag >= 0 && assigned.contains(&key) {
                    state.lag.insert(key, partition.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let commits = self.shared.state().commits(Some(partitions));
            if commits.count() > 0
                && !consumer.assignment_lost()
                && let Err(e) = consumer.commit(&commits, CommitMode::Sync)
            {
                tracing::warn!("commit before giving up partitions failed: {e}");
            }
            self.shared.state().revoke(partitions);
            tracing::info!(partitions = partitions.count(), "Kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.shared.state().assign(partitions);
                tracing::info!(partitions = partitions.count(), "Kafka partitions assigned");
            }
            Rebalance::Error(e) => tracing::error!("Kafka rebalance failed: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!("offset commit failed (will retry): {e}");
            self.shared.state().commit_failed(offsets);
        }
    }
}

pub type GroupConsumer = StreamConsumer<Context>;

/// Creates the group consumer and subscribes it to new mail and the retry tiers.
/// A consumer in `group` as the static member `instance_id` (none when empty) that
/// commits only when told to and starts a new group at the earliest offset; then the
/// caller's `own` properties, then the operator's `kafka.client`, which win.
pub(super) fn group_config(
    kafka: &KafkaConfig,
    group: &str,
    instance_id: &str,
    own: &[(&str, String)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // No transactions are used, and some brokers cannot answer read_committed.
        .set("isolation.level", "read_uncommitted")
        .set(
            "session.timeout.ms",
            kafka.session_timeout.as_millis().to_string(),
        )
        .set("fetch.wait.max.ms", kafka.fetch_wait_max_ms.to_string())
        .set_log_level(RDKafkaLogLevel::Warning);
    if !instance_id.is_empty() {
        config.set("group.instance.id", instance_id);
    }
    for (key, value) in own {
        config.set(*key, value);
    }
    for (key, value) in &kafka.client {
        config.set(key, value);
    }
    config
}

pub fn subscribe(
    kafka: &KafkaConfig,
    instance_id: &str,
    shared: Arc<Shared>,
) -> Result<GroupConsumer> {
    let own = [
        ("enable.auto.offset.store", "false".to_string()),
        ("statistics.interval.ms", kafka.lag_interval_ms.to_string()),
    ];
    let consumer: GroupConsumer = group_config(kafka, &kafka.group_id, instance_id, &own)
        .create_with_context(Context { shared })
        .map_err(|e| QueueError::Config(format!("cannot create the Kafka consumer: {e}")))?;
    consumer
        .subscribe(&kafka.consumed_topics())
        .map_err(|e| QueueError::Config(format!("cannot subscribe to the Kafka topics: {e}")))?;
    Ok(consumer)
}

/// What the consumer task does with a record it cannot decode.
pub type Quarantine = Box<dyn Fn(QueueError, RecordRef, Option<Bytes>, Bytes) + Send + Sync>;

/// Reads records into the held set, pauses and resumes partitions, commits resolved
/// offsets, until `shutdown`; then commits what is resolved one last time.
pub async fn run(
    consumer: GroupConsumer,
    shared: Arc<Shared>,
    commit_every: Duration,
    quarantine: Quarantine,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(commit_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let failed = tokio::select! {
            biased;
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            _ = tick.tick() => {
                commit(&consumer, &shared, CommitMode::Async);
                false
            }
            _ = shared.drained.notified() => {
                resume_drained(&consumer, &shared);
                false
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    take(&consumer, &shared, &message, &quarantine);
                    false
                }
                Err(e) => {
                    tracing::warn!("Kafka consumer: {e}");
                    true
                }
            },
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    commit(&consumer, &shared, CommitMode::Sync);
    tracing::info!("Kafka consumer stopped");
}

fn commit(consumer: &GroupConsumer, shared: &Shared, mode: CommitMode) {
    let commits = shared.state().commits(None);
    if commits.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&commits, mode) {
        tracing::warn!("offset commit failed (will retry): {e}");
        shared.state().commit_failed(&commits);
    }
}

/// Holds one record, pausing its partition (or all) when too much is held.
fn take(
    consumer: &GroupConsumer,
    shared: &Shared,
    message: &BorrowedMessage<'_>,
    quarantine: &Quarantine,
) {
    let partition: Partition = (message.topic().into(), message.partition());
    let offset = message.offset();
    let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    let decoded = record::decode(message.headers());
    let now = crate::unix_ms(std::time::SystemTime::now());
    let mut state = shared.state();
    // Not held when read just before a revocation (the next owner reads it again), or
    // held or claimed already.
    let Some((at, outstanding)) = state.admit(&partition, offset) else {
        return;
    };
    let limits = &shared.limits;
    let bulk = partition.0 == limits.bulk_topic;
    let due = match decoded {
        Ok((due, envelope)) => {
            state.read(at, due, envelope, body);
            Some(due)
        }
        Err(e) => {
            drop(state);
            let key = message.key().map(Bytes::copy_from_slice);
            quarantine(e, at, key, body);
            state = shared.state();
            None
        }
    };
    let mut pause = TopicPartitionList::new();
    if outstanding >= limits.per_partition
        && let Some(p) = state.partitions.get_mut(&partition)
        && !p.paused
    {
        p.paused = true;
        pause.add_partition(&partition.0, partition.1);
    }
    if bulk && state.bulk_outstanding >= limits.bulk {
        for (key, p) in &mut state.partitions {
            if !p.paused && key.0 == limits.bulk_topic {
                p.paused = true;
                pause.add_partition(&key.0, key.1);
            }
        }
    }
    if state.outstanding >= limits.total {
        for (key, p) in &mut state.partitions {
            if !p.paused && key.0 != limits.send_topic {
                p.paused = true;
                pause.add_partition(&key.0, key.1);
            }
        }
    }
    drop(state);
    if pause.count() > 0 {
        tracing::debug!(
            partitions = pause.count(),
            "pausing Kafka partitions: worker is full"
        );
        if let Err(e) = consumer.pause(&pause) {
            tracing::warn!("cannot pause Kafka partitions: {e}");
        }
    }
    if due.is_some_and(|due| due <= now) {
        shared.ready.notify_one();
    }
}

/// Resumes paused partitions that have drained to half their limit (retry-tier and
/// bulk partitions only once the worker as a whole has drained to half too, bulk ones
/// once the bulk records held have too).
fn resume_drained(consumer: &GroupConsumer, shared: &Shared) {
    let limits = &shared.limits;
    let mut state = shared.state();
    let total_drained = state.outstanding <= limits.total / 2;
    let bulk_drained = state.bulk_outstanding <= limits.bulk / 2;
    let mut resume = TopicPartitionList::new();
    for (key, p) in &mut state.partitions {
        let allowed = if key.0 == limits.send_topic {
            true
        } else if key.0 == limits.bulk_topic {
            total_drained && bulk_drained
        } else {
            total_drained
        };
        if p.paused && p.tracker.outstanding() <= limits.per_partition / 2 && allowed {
            p.paused = false;
            resume.add_partition(&key.0, key.1);
        }
    }
    drop(state);
    if resume.count() > 0 {
        tracing::debug!(partitions = resume.count(), "resuming Kafka partitions");
        if let Err(e) = consumer.resume(&resume) {
            tracing::warn!("cannot resume Kafka partitions: {e}");
        }
    }
}
