//! The event sink that queues each event for the endpoints that want it: one write to
//! the store per batch of events, before the events may leave the queue's outbox, so
//! an event is never lost between the two (after a crash it is queued again, and an
//! event still waiting is not queued twice).

use std::sync::Arc;

use async_trait::async_trait;
use postroad_queue::{DeliveryEvent, EventSink, SinkError, unix_ms};

use super::{CustomerHooks, Pending, payload};

pub struct WebhookSink(pub Arc<CustomerHooks>);

#[async_trait]
impl EventSink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        let endpoints = self.0.endpoints();
        if endpoints.is_empty() {
            return Ok(());
        }
        let now = unix_ms(std::time::SystemTime::now());
        let mut rows = Vec::new();
        for event in events {
            let tenant = event.meta.tenant.as_deref().unwrap_or("");
            let mut json = None;
            for endpoint in endpoints.iter().filter(|e| e.wants(tenant, event.kind)) {
                let payload = json.get_or_insert_with(|| payload::to_json(event));
                rows.push(Pending {
                    endpoint_id: endpoint.id.clone(),
                    event_id: event.event_id.simple().to_string(),
                    payload: payload.clone(),
                    queued_at_ms: now,
                });
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.0
            .store()
            .enqueue(&rows)
            .await
            .map_err(|e| SinkError(format!("cannot queue webhook events: {e}")))?;
        metrics::counter!("postroad_webhook_events_queued_total").increment(rows.len() as u64);
        self.0.wake();
        Ok(())
    }
}
