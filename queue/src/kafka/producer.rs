//! The producer: `acks=all`, idempotent, bounded buffer, and recreated when the
//! broker has put it in a state it cannot leave by itself.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use super::config::KafkaConfig;
use crate::{QueueError, Result};

/// Upper bound of the producer's buffer in KiB (`queue.buffering.max.kbytes`).
const MAX_BUFFERED_KIB: usize = 256 * 1024;

pub struct Producer {
    config: ClientConfig,
    inner: RwLock<Arc<FutureProducer>>,
    max_record_bytes: usize,
}

impl Producer {
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", kafka.linger_ms.to_string())
            .set("compression.type", kafka.compression.as_str())
            .set(
                "message.timeout.ms",
                kafka.produce_timeout.as_millis().to_string(),
            )
            // One record may be as large as the limit, plus protocol framing.
            .set(
                "message.max.bytes",
                (kafka.max_record_bytes + 64 * 1024).to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                kafka.max_buffered_records.to_string(),
            )
            .set("queue.buffering.max.kbytes", MAX_BUFFERED_KIB.to_string());
        for (key, value) in &kafka.client {
            config.set(key, value);
        }
        let producer = create(&config)?;
        Ok(Self {
            config,
            inner: RwLock::new(Arc::new(producer)),
            max_record_bytes: kafka.max_record_bytes,
        })
    }

    /// Asks a broker for the cluster's metadata: whether one answers within `timeout`.
    pub async fn reach(&self, timeout: std::time::Duration) -> Result<()> {
        let producer = self.current();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| QueueError::Unavailable(format!("no Kafka broker answers: {e}")))
        })
        .await
        .map_err(|e| QueueError::Unavailable(format!("the metadata request failed: {e}")))?
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends one record and waits for the broker's acknowledgement (all in-sync
    /// replicas). Fails at once when the producer's buffer is full; the caller checks
    /// the record's size against `max_record_bytes` first.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<()> {
        let producer = self.current();
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let result = match producer.send_result(record) {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            },
            Err((e, _)) => e,
        };
        Err(self.failed(&producer, topic, result))
    }

    /// Maps a send error, replacing the producer when it can no longer produce.
    fn failed(&self, producer: &Arc<FutureProducer>, topic: &str, e: KafkaError) -> QueueError {
        let code = e.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            return QueueError::TooLarge {
                size: 0,
                max: self.max_record_bytes,
            };
        }
        let fatal = producer.client().fatal_error();
        // An idempotent producer whose epoch the broker no longer knows (after an
        // outage longer than message.timeout.ms, some brokers answer every later
        // produce with one of these) never recovers: start a new one.
        let stuck = matches!(
            code,
            Some(
                RDKafkaErrorCode::Unknown
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::Fatal
            )
        );
        if fatal.is_some() || stuck {
            self.replace(producer);
        }
        QueueError::Unavailable(format!("cannot produce to {topic}: {e}"))
    }

    fn replace(&self, broken: &Arc<FutureProducer>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&inner, broken) {
            return; // another task replaced it already
        }
        match create(&self.config) {
            Ok(fresh) => {
                tracing::warn!("Kafka producer replaced after an unrecoverable error");
                *inner = Arc::new(fresh);
            }
            Err(e) => tracing::error!("cannot create a new Kafka producer: {e}"),
        }
    }

    /// Waits up to `timeout` for buffered records to be acknowledged.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.current().flush(timeout) {
            tracing::warn!("Kafka producer flush: {e}");
        }
    }
}

fn create(config: &ClientConfig) -> Result<FutureProducer> {
    config
        .create()
        .map_err(|e| QueueError::Config(format!("cannot create the Kafka producer: {e}")))
}
