//! The history as an event sink: each batch from the outbox is one idempotent
//! multi-row insert in one transaction.

use async_trait::async_trait;
use postroad_queue::{Batching, DeliveryEvent, EventSink, SinkError};

use crate::{HistoryConfig, HistoryStore};

pub struct HistorySink {
    store: HistoryStore,
    batching: Batching,
}

impl HistorySink {
    pub fn new(store: HistoryStore, config: &HistoryConfig) -> Self {
        Self {
            store,
            batching: Batching {
                max_batch: config.max_batch,
                linger: config.flush_interval(),
            },
        }
    }
}

#[async_trait]
impl EventSink for HistorySink {
    fn name(&self) -> &'static str {
        "history"
    }

    fn batching(&self) -> Batching {
        self.batching
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        let outcome = self
            .store
            .insert(events)
            .await
            .map_err(|e| SinkError(e.to_string()))?;
        tracing::debug!(
            written = outcome.inserted,
            duplicates = outcome.duplicates,
            "history batch stored"
        );
        Ok(())
    }
}
