//! `[kafka]`: brokers, topics and client settings of the Kafka backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A `Duration` written as whole milliseconds in the config file (`*_ms` keys).
type Millis = serde_with::As<serde_with::DurationMilliSeconds<u64>>;

/// The Kafka backend's configuration (`[kafka]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Consumer group shared by every relay worker.
    pub group_id: String,
    /// Consumer group of the history writers (`serve --roles history`) on the events
    /// topic.
    pub history_group_id: String,
    /// Static group membership (`group.instance.id`): a worker restarting under the same
    /// id gets its partitions back without a rebalance. Must be unique per worker; empty
    /// means `server.hostname` (set it explicitly when several workers share a host).
    pub instance_id: String,
    /// Topic names and partition counts (used by `postroad kafka init`).
    pub topics: TopicsConfig,
    /// Retry tiers, shortest first: a deferred message goes to the longest tier not
    /// longer than its back-off, and is held by the consumer until its own due time.
    #[serde(rename = "retry_tier")]
    pub retry_tiers: Vec<RetryTier>,
    /// Record compression: `lz4` (default), `gzip` or `none`.
    pub compression: Compression,
    /// Largest record (envelope + message) the producer sends, in bytes; larger
    /// messages are refused at SMTP time with `552 5.3.4`. Keep it at or below the
    /// broker's `message.max.bytes`. Default 1,000,000 (Kafka's default).
    pub max_record_bytes: usize,
    /// How long an enqueue waits for the broker to acknowledge a record before the
    /// client is told `451 4.3.0` (`produce_timeout_ms`). Default 5000 ms.
    #[serde(rename = "produce_timeout_ms", with = "Millis")]
    pub produce_timeout: Duration,
    /// Producer batching delay (`linger.ms`). Default 2.
    pub linger_ms: u64,
    /// Records the producer may buffer before enqueues fail at once with `451`
    /// (`queue.buffering.max.messages`); bounds the producer's memory. Default 20,000.
    pub max_buffered_records: usize,
    /// Records a worker holds from one partition (waiting for their due time or a free
    /// delivery slot) before it pauses that partition. Default 1000.
    pub max_held_per_partition: usize,
    /// Records a worker holds in all before it pauses the retry tiers' and the bulk
    /// topic's partitions too (never the send topic's). Default 10,000.
    pub max_held: usize,
    /// Records a worker holds from the bulk topic before it pauses that topic's
    /// partitions: bulk mail's smaller share of what a worker reads ahead, so a
    /// campaign's backlog waits in the bulk topic while the send topic is always
    /// read. Default 2,000.
    pub max_held_bulk: usize,
    /// How often resolved offsets are committed, in milliseconds. Default 500.
    pub commit_interval_ms: u64,
    /// Consumer `session.timeout.ms` (`session_timeout_ms`). Default 45,000 ms
    /// (librdkafka's own): a static member restarted within it rejoins as the same
    /// member and keeps its partitions without a rebalance, so a rolling restart moves
    /// no partition; a crashed worker's partitions wait this long for it, or for a
    /// rebalance without it.
    #[serde(rename = "session_timeout_ms", with = "Millis")]
    pub session_timeout: Duration,
    /// Consumer `fetch.wait.max.ms`: the longest a fetch waits for new records. Keep it
    /// low: some brokers do not end a waiting fetch when records arrive. Default 20.
    pub fetch_wait_max_ms: u64,
    /// How often per-partition consumer lag is refreshed (`statistics.interval.ms`).
    /// Default 5000.
    pub lag_interval_ms: u64,
    /// Publish every delivery event to the events topic (for history, metrics and
    /// webhook consumers in other processes). Default true; false keeps events in the
    /// local history only, and saves the broker one record per event.
    pub publish_events: bool,
    /// Extra librdkafka properties for every client (producer, consumer, admin), e.g.
    /// `"security.protocol" = "ssl"`. They override Postroad's own settings.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "postroad-relay".into(),
            history_group_id: "postroad-history".into(),
            instance_id: String::new(),
            topics: TopicsConfig::default(),
            retry_tiers: RetryTier::defaults(),
            compression: Compression::Lz4,
            max_record_bytes: 1_000_000,
            produce_timeout: Duration::from_millis(5000),
            linger_ms: 2,
            max_buffered_records: 20_000,
            max_held_per_partition: 1000,
            max_held: 10_000,
            max_held_bulk: 2_000,
            commit_interval_ms: 500,
            session_timeout: Duration::from_millis(45_000),
            fetch_wait_max_ms: 20,
            lag_interval_ms: 5000,
            publish_events: true,
            client: BTreeMap::new(),
        }
    }
}

/// One topic: its name and the partition count `postroad kafka init` creates it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: i32,
}

impl TopicConfig {
    fn new(name: &str, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
        }
    }
}

/// The backend's topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// New mail, keyed by recipient domain. Default `email-send`, 100 partitions.
    pub send: TopicConfig,
    /// New `bulk` mail (campaigns), keyed by recipient domain, consumed with a smaller
    /// share (`max_held_bulk`) so it never stands in the way of the send topic's.
    /// Default `email-send-bulk`, 100 partitions.
    pub bulk: TopicConfig,
    /// Dead letters (bounced or expired recipients, with the message). Default
    /// `email-dlq`, 10 partitions.
    pub dlq: TopicConfig,
    /// Delivery events (JSON, keyed by message id) for history, metrics and webhook
    /// consumers. Default `email-events`, 20 partitions.
    pub events: TopicConfig,
    /// Outbound customer webhooks. Default `email-webhooks`, 20 partitions.
    pub webhooks: TopicConfig,
    /// Replication factor for `postroad kafka init`. Default 1.
    pub replication_factor: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            send: TopicConfig::new("email-send", 100),
            bulk: TopicConfig::new("email-send-bulk", 100),
            dlq: TopicConfig::new("email-dlq", 10),
            events: TopicConfig::new("email-events", 20),
            webhooks: TopicConfig::new("email-webhooks", 20),
            replication_factor: 1,
        }
    }
}

/// A retry topic and the delay it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryTier {
    pub topic: String,
    pub delay_secs: u64,
    pub partitions: i32,
}

impl RetryTier {
    fn defaults() -> Vec<Self> {
        [("1m", 60), ("10m", 600), ("1h", 3600), ("6h", 21_600)]
            .into_iter()
            .map(|(name, delay_secs)| Self {
                topic: format!("email-retry-{name}"),
                delay_secs,
                partitions: 20,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }
}

impl KafkaConfig {
    /// Checks what serde cannot: non-empty names, sane sizes, distinct topics.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        if self.group_id.trim().is_empty() {
            return Err("kafka.group_id is empty".into());
        }
        if self.history_group_id.trim().is_empty() || self.history_group_id == self.group_id {
            return Err(
                "kafka.history_group_id must be set, and differ from kafka.group_id".into(),
            );
        }
        if self.retry_tiers.is_empty() {
            return Err("kafka needs at least one [[kafka.retry_tier]]".into());
        }
        if !self
            .retry_tiers
            .windows(2)
            .all(|w| w[0].delay_secs < w[1].delay_secs)
        {
            return Err("kafka.retry_tier entries must be listed by increasing delay_secs".into());
        }
        let mut names: Vec<&str> = self.all_topics().into_iter().map(|t| t.0).collect();
        if names.iter().any(|n| n.trim().is_empty()) {
            return Err("a kafka topic name is empty".into());
        }
        for (name, partitions) in self.all_topics() {
            if partitions < 1 {
                return Err(format!("kafka topic {name}: partitions must be at least 1"));
            }
        }
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("kafka topic {} is configured twice", w[0]));
        }
        if self.topics.replication_factor < 1 {
            return Err("kafka.topics.replication_factor must be at least 1".into());
        }
        if self.max_record_bytes < 4096 {
            return Err("kafka.max_record_bytes must be at least 4096".into());
        }
        if self.produce_timeout.is_zero() || self.commit_interval_ms == 0 {
            return Err("kafka.produce_timeout_ms and commit_interval_ms must be positive".into());
        }
        if self.max_held_per_partition == 0
            || self.max_held == 0
            || self.max_held_bulk == 0
            || self.max_buffered_records == 0
        {
            return Err(
                "kafka.max_held, max_held_bulk, max_held_per_partition and max_buffered_records must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    /// Every topic with its partition count: send, bulk, retry tiers, DLQ, events,
    /// webhooks.
    pub fn all_topics(&self) -> Vec<(&str, i32)> {
        let t = &self.topics;
        let mut all = vec![
            (t.send.name.as_str(), t.send.partitions),
            (t.bulk.name.as_str(), t.bulk.partitions),
        ];
        all.extend(
            self.retry_tiers
                .iter()
                .map(|tier| (tier.topic.as_str(), tier.partitions)),
        );
        all.extend([
            (t.dlq.name.as_str(), t.dlq.partitions),
            (t.events.name.as_str(), t.events.partitions),
            (t.webhooks.name.as_str(), t.webhooks.partitions),
        ]);
        all
    }

    /// The topics a relay worker consumes: new mail, new bulk mail and every retry
    /// tier.
    pub fn consumed_topics(&self) -> Vec<&str> {
        [
            self.topics.send.name.as_str(),
            self.topics.bulk.name.as_str(),
        ]
        .into_iter()
        .chain(self.retry_tiers.iter().map(|t| t.topic.as_str()))
        .collect()
    }

    /// Where new mail of `priority` is produced: `bulk` to the bulk topic, the rest to
    /// the send topic.
    pub fn new_mail_topic(&self, priority: crate::Priority) -> &str {
        match priority {
            crate::Priority::Bulk => &self.topics.bulk.name,
            crate::Priority::High | crate::Priority::Normal => &self.topics.send.name,
        }
    }

    /// The retry topic for a message due `delay_secs` from now: the longest tier not
    /// longer than the delay (the consumer holds the record for the rest), else the
    /// shortest.
    pub fn retry_topic(&self, delay_secs: u64) -> &str {
        self.retry_tiers
            .iter()
            .rev()
            .find(|t| t.delay_secs <= delay_secs)
            .unwrap_or(&self.retry_tiers[0])
            .topic
            .as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_every_topic() {
        let c = KafkaConfig::default();
        c.validate().unwrap();
        let names: Vec<_> = c.all_topics().into_iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            [
                "email-send",
                "email-send-bulk",
                "email-retry-1m",
                "email-retry-10m",
                "email-retry-1h",
                "email-retry-6h",
                "email-dlq",
                "email-events",
                "email-webhooks"
            ]
        );
        assert_eq!(c.topics.send.partitions, 100);
        assert_eq!(c.topics.bulk.partitions, 100);
        assert_eq!(c.consumed_topics()[..2], ["email-send", "email-send-bulk"]);
        assert_eq!(c.new_mail_topic(crate::Priority::Bulk), "email-send-bulk");
        assert_eq!(c.new_mail_topic(crate::Priority::High), "email-send");
        assert_eq!(c.new_mail_topic(crate::Priority::Normal), "email-send");
        assert_eq!(c.topics.webhooks.partitions, 20);
    }

    #[test]
    fn retry_topic_is_the_longest_tier_not_longer_than_the_delay() {
        let c = KafkaConfig::default();
        assert_eq!(c.retry_topic(0), "email-retry-1m");
        assert_eq!(c.retry_topic(59), "email-retry-1m");
        assert_eq!(c.retry_topic(300), "email-retry-1m");
        assert_eq!(c.retry_topic(600), "email-retry-10m");
        assert_eq!(c.retry_topic(3599), "email-retry-10m");
        assert_eq!(c.retry_topic(86_400), "email-retry-6h");
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut c = KafkaConfig::default();
        c.retry_tiers.swap(0, 1);
        assert!(c.validate().unwrap_err().contains("increasing"));
        let mut c = KafkaConfig::default();
        c.topics.dlq.name = "email-send".into();
        assert!(c.validate().unwrap_err().contains("twice"));
        let mut c = KafkaConfig::default();
        c.topics.bulk.name = "email-send".into();
        assert!(c.validate().unwrap_err().contains("twice"));
        let c = KafkaConfig {
            max_held_bulk: 0,
            ..KafkaConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("max_held_bulk"));
        let mut c = KafkaConfig::default();
        c.topics.send.partitions = 0;
        assert!(c.validate().unwrap_err().contains("at least 1"));
        let mut c = KafkaConfig::default();
        c.retry_tiers.clear();
        assert!(c.validate().is_err());
    }
}
