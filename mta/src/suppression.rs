//! The suppression list in a running server: loaded from the application store beside
//! the history, kept fresh, and handed to the relay (which leaves listed recipients
//! unsent), the SMTP listeners (which may refuse them at RCPT) and the HTTP API.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use postroad_api::AppStore;
use postroad_api::RedisLink;
use postroad_queue::{Batching, DeliveryEvent, EventSink, SinkError};
use postroad_relay::SuppressionList;
use postroad_webhooks::suppression::Suppressions;

use crate::config::Config;

/// Loads the whole list (a few seconds for millions of entries: it is read once, then
/// only what changes).
pub async fn open(
    config: &Config,
    store: &AppStore,
    redis: Option<RedisLink>,
) -> anyhow::Result<Arc<Suppressions>> {
    let list = Suppressions::load(Arc::new(store.clone()), redis, config.suppression.clone())
        .await
        .context("cannot load the suppression list")?;
    Ok(list)
}

/// The list as the relay asks it.
pub struct ForRelay(pub Arc<Suppressions>);

#[async_trait]
impl SuppressionList for ForRelay {
    async fn suppressed(
        &self,
        tenant: Option<&str>,
        addresses: &[&str],
    ) -> Vec<Option<&'static str>> {
        self.0
            .check(tenant, addresses)
            .await
            .into_iter()
            .map(|reason| reason.map(|r| r.as_str()))
            .collect()
    }
}

/// The history's sink, then the list's, as one (for the Kafka events topic, which
/// feeds one sink): a batch is taken once both hold it; the history takes a batch
/// twice without harm (events have ids), the list too (entries are replaced).
pub struct HistoryThenList {
    pub history: Arc<dyn EventSink>,
    pub list: Arc<dyn EventSink>,
}

#[async_trait]
impl EventSink for HistoryThenList {
    fn name(&self) -> &'static str {
        "history+suppression"
    }

    fn batching(&self) -> Batching {
        self.history.batching()
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        self.history.write(events).await?;
        self.list.write(events).await
    }
}
