//! Several event sinks as one: one reader of the events for sinks that are cheap and
//! idempotent, and the one sink a feed that takes only one is given (the Kafka events
//! topic).

use std::sync::Arc;

use async_trait::async_trait;
use postroad_queue::{Batching, DeliveryEvent, EventSink, SinkError};

/// Sinks that take each batch in turn: it is taken once all of them hold it, so each
/// must take a batch twice without harm (the history: events have ids; the suppression
/// list: entries are replaced; the webhooks: an event still waiting is not queued
/// again). Batches as the first wants them.
pub struct Chain {
    pub name: &'static str,
    pub sinks: Vec<Arc<dyn EventSink>>,
}

impl Chain {
    /// The sinks as one (the sink itself when there is only one); `None` for none.
    pub fn of(name: &'static str, sinks: Vec<Arc<dyn EventSink>>) -> Option<Arc<dyn EventSink>> {
        match sinks.len() {
            0 => None,
            1 => sinks.into_iter().next(),
            _ => Some(Arc::new(Chain { name, sinks })),
        }
    }
}

#[async_trait]
impl EventSink for Chain {
    fn name(&self) -> &'static str {
        self.name
    }

    fn batching(&self) -> Batching {
        self.sinks.first().map(|s| s.batching()).unwrap_or_default()
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.write(events).await?;
        }
        Ok(())
    }
}
