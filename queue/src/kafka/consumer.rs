//! The relay side: one consumer in the group, records held until due and claimed
//! (`high` before `normal` before `bulk`), offsets committed only past resolved
//! records, partitions paused under load (the bulk topic's at a smaller share).

use std::collections::{BTreeMap, HashMap, HashSet};
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
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};

use super::config::KafkaConfig;
use super::record;
use super::tracker::OffsetTracker;
use crate::{Claimed, Envelope, MessageId, Priority, QueueError, Result};

/// The held records' lanes, most urgent first.
const LANES: usize = 3;
/// What [`State::claim`] takes from for a claim: every lane.
pub const ALL_LANES: [usize; 3] = [0, 1, 2];
/// For an urgent claim: no bulk.
pub const URGENT_LANES: [usize; 2] = [0, 1];

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

/// A topic and partition.
pub type Partition = (Arc<str>, i32);

/// Where a claimed record came from, to resolve its offset later.
#[derive(Debug, Clone)]
pub struct RecordRef {
    pub partition: Partition,
    pub offset: i64,
    /// The assignment the record was read under; a resolution from an older one does
    /// not touch the partition's (new) tracker.
    pub generation: u64,
}

struct Held {
    at: RecordRef,
    envelope: Envelope,
    body: Bytes,
}

struct PartitionState {
    tracker: OffsetTracker,
    generation: u64,
    paused: bool,
}

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

/// What the consumer task, the rebalance callbacks and the claiming relay share.
#[derive(Default)]
pub struct State {
    partitions: HashMap<Partition, PartitionState>,
    /// Records read and not claimed, by lane (high, normal, bulk), each by (due time,
    /// arrival) so due ones come first.
    held: [BTreeMap<(u64, u64), Held>; LANES],
    /// Claimed records: where each came from, and the message (a retry or dead letter
    /// is produced from it on resolution).
    claimed: HashMap<MessageId, (RecordRef, Claimed)>,
    arrivals: u64,
    generation: u64,
    /// Records read and not resolved, in all partitions.
    outstanding: usize,
    /// Of those, from the bulk topic.
    bulk_outstanding: usize,
    bulk_topic: Arc<str>,
    lag: BTreeMap<Partition, i64>,
}

impl State {
    fn new(bulk_topic: Arc<str>) -> Self {
        Self {
            bulk_topic,
            ..Self::default()
        }
    }

    /// Up to `max` held records of `lanes` due at `now_ms`, the lanes in turn (every
    /// due `high` record before any `normal` one...), at most one per message id at a
    /// time.
    pub fn claim(&mut self, max: usize, now_ms: u64, lanes: &[usize]) -> Vec<Claimed> {
        let mut taken = Vec::new();
        let mut ids = HashSet::new();
        for &lane in lanes {
            for (key, held) in &self.held[lane] {
                if taken.len() == max || key.0 > now_ms {
                    break;
                }
                let id = held.envelope.id;
                if !self.claimed.contains_key(&id) && ids.insert(id) {
                    taken.push((lane, *key));
                }
            }
        }
        taken
            .into_iter()
            .filter_map(|(lane, key)| self.held[lane].remove(&key))
            .map(|held| {
                let claimed = Claimed {
                    envelope: held.envelope,
                    body: held.body,
                };
                self.claimed
                    .insert(claimed.envelope.id, (held.at, claimed.clone()));
                claimed
            })
            .collect()
    }

    /// Takes a message's claim (for resolution).
    pub fn take_claim(&mut self, id: MessageId) -> Result<(RecordRef, Claimed)> {
        self.claimed.remove(&id).ok_or(QueueError::NotClaimed(id))
    }

    /// Puts back a claim whose resolution could not be completed.
    pub fn restore_claim(&mut self, id: MessageId, at: RecordRef, claimed: Claimed) {
        self.claimed.insert(id, (at, claimed));
    }

    /// A record is resolved: its offset may be committed once those before it are.
    pub fn resolved(&mut self, at: &RecordRef) {
        if let Some(p) = self.partitions.get_mut(&at.partition)
            && p.generation == at.generation
            && p.tracker.resolve(at.offset)
        {
            self.outstanding -= 1;
            if at.partition.0 == self.bulk_topic {
                self.bulk_outstanding -= 1;
            }
        }
    }

    fn read(&mut self, at: RecordRef, due_ms: u64, envelope: Envelope, body: Bytes) {
        self.arrivals += 1;
        let key = (due_ms, self.arrivals);
        self.held[lane(envelope.meta.priority)].insert(key, Held { at, envelope, body });
    }

    /// Makes every held record due now; returns how many were waiting.
    pub fn flush(&mut self, now_ms: u64) -> u64 {
        let mut flushed = 0;
        for lane in 0..LANES {
            let waiting: Vec<_> = self.held[lane]
                .keys()
                .filter(|k| k.0 > now_ms)
                .copied()
                .collect();
            for key in &waiting {
                if let Some(held) = self.held[lane].remove(key) {
                    self.arrivals += 1;
                    self.held[lane].insert((0, self.arrivals), held);
                }
            }
            flushed += waiting.len() as u64;
        }
        flushed
    }

    pub fn counts(&self, now_ms: u64) -> (u64, u64, u64) {
        let held: usize = self.held.iter().map(BTreeMap::len).sum();
        let ready: usize = self
            .held
            .iter()
            .map(|lane| lane.keys().take_while(|k| k.0 <= now_ms).count())
            .sum();
        let (ready, held) = (ready as u64, held as u64);
        (ready, held - ready, self.claimed.len() as u64)
    }

    pub fn lag(&self) -> Vec<(Partition, i64)> {
        self.lag.iter().map(|(p, l)| (p.clone(), *l)).collect()
    }

    fn assign(&mut self, partitions: &TopicPartitionList) {
        self.generation += 1;
        for elem in partitions.elements() {
            let key: Partition = (elem.topic().into(), elem.partition());
            self.partitions.entry(key).or_insert(PartitionState {
                tracker: OffsetTracker::default(),
                generation: self.generation,
                paused: false,
            });
        }
    }

    /// Forgets revoked partitions: their unclaimed records are dropped (the next owner
    /// reads them from the committed offset), claims in flight still resolve.
    fn revoke(&mut self, partitions: &TopicPartitionList) {
        for elem in partitions.elements() {
            let key: Partition = (elem.topic().into(), elem.partition());
            if let Some(p) = self.partitions.remove(&key) {
                self.outstanding -= p.tracker.outstanding();
                if key.0 == self.bulk_topic {
                    self.bulk_outstanding -= p.tracker.outstanding();
                }
            }
            self.lag.remove(&key);
        }
        let partitions = &self.partitions;
        for lane in &mut self.held {
            lane.retain(|_, held| partitions.contains_key(&held.at.partition));
        }
    }

    /// The offsets that moved since the last commit.
    fn commits(&mut self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in &mut self.partitions {
            if let Some(only) = only
                && only.find_partition(topic, *partition).is_none()
            {
                continue;
            }
            if let Some(offset) = p.tracker.take_commit() {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
            }
        }
        tpl
    }

    fn commit_failed(&mut self, offsets: &TopicPartitionList) {
        for elem in offsets.elements() {
            let key: Partition = (elem.topic().into(), elem.partition());
            if let Some(p) = self.partitions.get_mut(&key) {
                p.tracker.forget_commit();
            }
        }
    }
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
    let Some(p) = state.partitions.get_mut(&partition) else {
        return; // read just before a revocation; the next owner reads it again
    };
    if !p.tracker.read(offset) {
        return; // already held or claimed
    }
    let at = RecordRef {
        partition: partition.clone(),
        offset,
        generation: p.generation,
    };
    let outstanding = p.tracker.outstanding();
    state.outstanding += 1;
    let limits = &shared.limits;
    let bulk = partition.0 == limits.bulk_topic;
    if bulk {
        state.bulk_outstanding += 1;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipient;

    const BULK_TOPIC: &str = "email-send-bulk";

    fn assigned() -> State {
        let mut state = State::new(BULK_TOPIC.into());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("email-send", 0);
        tpl.add_partition(BULK_TOPIC, 0);
        state.assign(&tpl);
        state
    }

    /// Reads a record of `priority` at `offset` of its topic's partition 0, as the
    /// consumer task does; its recipient names it.
    fn read(state: &mut State, name: &str, priority: Priority, offset: i64) {
        let topic = if priority == Priority::Bulk {
            BULK_TOPIC
        } else {
            "email-send"
        };
        let partition: Partition = (topic.into(), 0);
        let p = state.partitions.get_mut(&partition).unwrap();
        assert!(p.tracker.read(offset));
        let at = RecordRef {
            partition: partition.clone(),
            offset,
            generation: p.generation,
        };
        state.outstanding += 1;
        if topic == BULK_TOPIC {
            state.bulk_outstanding += 1;
        }
        let mut envelope = Envelope::new(
            "s@a.test",
            vec![Recipient::new(format!("{name}@b.test"))],
            "127.0.0.1".parse().unwrap(),
        );
        envelope.meta.priority = priority;
        state.read(at, 0, envelope, Bytes::new());
    }

    fn names(claimed: &[Claimed]) -> Vec<String> {
        claimed
            .iter()
            .map(|c| c.envelope.recipients[0].address.replace("@b.test", ""))
            .collect()
    }

    #[test]
    fn claims_take_high_then_normal_then_bulk_and_urgent_claims_no_bulk() {
        let mut state = assigned();
        read(&mut state, "bulk1", Priority::Bulk, 0);
        read(&mut state, "normal1", Priority::Normal, 0);
        read(&mut state, "bulk2", Priority::Bulk, 1);
        read(&mut state, "high1", Priority::High, 1);
        read(&mut state, "normal2", Priority::Normal, 2);
        let urgent = state.claim(10, 1, &URGENT_LANES);
        assert_eq!(names(&urgent), ["high1", "normal1", "normal2"]);
        assert!(state.claim(10, 1, &URGENT_LANES).is_empty());
        let rest = state.claim(1, 1, &ALL_LANES);
        assert_eq!(names(&rest), ["bulk1"]);
        assert_eq!(names(&state.claim(10, 1, &ALL_LANES)), ["bulk2"]);
        assert_eq!(state.counts(1), (0, 0, 5));
    }

    #[test]
    fn bulk_records_are_counted_until_resolved_or_revoked() {
        let mut state = assigned();
        read(&mut state, "bulk1", Priority::Bulk, 0);
        read(&mut state, "bulk2", Priority::Bulk, 1);
        read(&mut state, "high1", Priority::High, 0);
        assert_eq!((state.outstanding, state.bulk_outstanding), (3, 2));
        let claimed = state.claim(10, 1, &ALL_LANES);
        assert_eq!(names(&claimed), ["high1", "bulk1", "bulk2"]);
        let (at, _) = state.take_claim(claimed[1].envelope.id).unwrap();
        state.resolved(&at);
        assert_eq!((state.outstanding, state.bulk_outstanding), (2, 1));
        let (at, _) = state.take_claim(claimed[0].envelope.id).unwrap();
        state.resolved(&at);
        assert_eq!((state.outstanding, state.bulk_outstanding), (1, 1));
        let mut bulk = TopicPartitionList::new();
        bulk.add_partition(BULK_TOPIC, 0);
        state.revoke(&bulk);
        assert_eq!((state.outstanding, state.bulk_outstanding), (0, 0));
    }
}
