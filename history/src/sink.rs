//! The history as an event sink: each batch from the outbox is one transaction of
//! multi-row statements; on MySQL it also keeps the coming months' partitions ready.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use postroad_queue::{Batching, DeliveryEvent, EventSink, SinkError};

use crate::{HistoryConfig, HistoryStore};

/// How often partition maintenance runs (it is one metadata query per table when
/// there is nothing to add).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

pub struct HistorySink {
    store: HistoryStore,
    batching: Batching,
    partitions_ahead: u32,
    last_maintenance: Mutex<Instant>,
}

impl HistorySink {
    /// A sink writing to `store`, which [`HistoryStore::open`] has just maintained.
    pub fn new(store: HistoryStore, config: &HistoryConfig) -> Self {
        Self {
            store,
            batching: Batching {
                max_batch: config.max_batch,
                linger: config.flush_interval(),
            },
            partitions_ahead: config.partitions_ahead,
            last_maintenance: Mutex::new(Instant::now()),
        }
    }

    /// Runs partition maintenance when it is due. A failure is logged and retried at
    /// the next batch: `p_future` takes any row meanwhile, so writes go on.
    async fn maintain_if_due(&self) {
        {
            let mut last = self.last_maintenance.lock().expect("not poisoned");
            if last.elapsed() < MAINTENANCE_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let today = crate::store::today();
        if let Err(e) = self
            .store
            .maintain_partitions(today, self.partitions_ahead)
            .await
        {
            tracing::warn!(error = %e, "history partition maintenance failed; retrying later");
            *self.last_maintenance.lock().expect("not poisoned") =
                Instant::now() - MAINTENANCE_EVERY + Duration::from_secs(60);
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
        self.maintain_if_due().await;
        let outcome = self
            .store
            .insert(events)
            .await
            .map_err(|e| SinkError(e.to_string()))?;
        tracing::debug!(
            events = outcome.events,
            recipients = outcome.recipients,
            "history batch stored"
        );
        Ok(())
    }
}
