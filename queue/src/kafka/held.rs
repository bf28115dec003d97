//! What a relay worker holds of its partitions: records read and not yet claimed,
//! kept by lane (`high`, `normal`, `bulk`) and due time, the claimed ones until they
//! are resolved, and per partition the offsets that may be committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::{Offset, TopicPartitionList};

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

pub(super) struct PartitionState {
    pub(super) tracker: OffsetTracker,
    generation: u64,
    /// Paused by the consumer task (too much held).
    pub(super) paused: bool,
}

/// What a worker holds: its partitions, the records read and not claimed (by lane),
/// the claimed ones, and how many are outstanding. Shared by the consumer task, the
/// rebalance callbacks and the claiming relay.
#[derive(Default)]
pub struct State {
    pub(super) partitions: HashMap<Partition, PartitionState>,
    /// Records read and not claimed, by lane (high, normal, bulk), each by (due time,
    /// arrival) so due ones come first.
    held: [BTreeMap<(u64, u64), Held>; LANES],
    /// Claimed records: where each came from, and the message (a retry or dead letter
    /// is produced from it on resolution).
    claimed: HashMap<MessageId, (RecordRef, Claimed)>,
    arrivals: u64,
    generation: u64,
    /// Records read and not resolved, in all partitions.
    pub(super) outstanding: usize,
    /// Of those, from the bulk topic.
    pub(super) bulk_outstanding: usize,
    bulk_topic: Arc<str>,
    pub(super) lag: BTreeMap<Partition, i64>,
}

impl State {
    pub(super) fn new(bulk_topic: Arc<str>) -> Self {
        Self {
            bulk_topic,
            ..Self::default()
        }
    }

    /// Counts the record at `offset` of `partition` as read and outstanding; where it
    /// is, and how many its partition now has outstanding. `None` when the partition
    /// is not (or no longer) this worker's, or the record is held or claimed already.
    pub(super) fn admit(
        &mut self,
        partition: &Partition,
        offset: i64,
    ) -> Option<(RecordRef, usize)> {
        let p = self.partitions.get_mut(partition)?;
        if !p.tracker.read(offset) {
            return None;
        }
        let at = RecordRef {
            partition: partition.clone(),
            offset,
            generation: p.generation,
        };
        let outstanding = p.tracker.outstanding();
        self.outstanding += 1;
        if partition.0 == self.bulk_topic {
            self.bulk_outstanding += 1;
        }
        Some((at, outstanding))
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

    pub(super) fn read(&mut self, at: RecordRef, due_ms: u64, envelope: Envelope, body: Bytes) {
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

    pub(super) fn assign(&mut self, partitions: &TopicPartitionList) {
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
    pub(super) fn revoke(&mut self, partitions: &TopicPartitionList) {
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
    pub(super) fn commits(&mut self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
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

    pub(super) fn commit_failed(&mut self, offsets: &TopicPartitionList) {
        for elem in offsets.elements() {
            let key: Partition = (elem.topic().into(), elem.partition());
            if let Some(p) = self.partitions.get_mut(&key) {
                p.tracker.forget_commit();
            }
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
        let (at, _) = state.admit(&(topic.into(), 0), offset).unwrap();
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
