//! The suppression list in a running server: loaded from the application store beside
//! the history, kept fresh, and handed to the relay (which leaves listed recipients
//! unsent), the SMTP listeners (which may refuse them at RCPT) and the HTTP API.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use postroad_api::AppStore;
use postroad_api::RedisLink;
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
