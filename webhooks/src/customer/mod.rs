//! Customer webhooks: tenants register endpoints (`/v1/webhooks`) for kinds of events;
//! each event of theirs is queued durably for each such endpoint ([`sink`]) and POSTed
//! to it in batches, in order, signed ([`signature`]), retried with backoff and, when
//! an endpoint has failed for `give_up_secs`, kept as dead letters to look at and send
//! again ([`dispatch`]). Each endpoint is delivered by one task at a time in the whole
//! cluster (a lease in the store), so its events arrive in the order they were
//! recorded; a slow or dead endpoint holds up only itself.

pub mod dispatch;
pub mod endpoint;
mod guard;
pub mod payload;
pub mod signature;
pub mod sink;
pub mod store;

use std::sync::{Arc, RwLock};

use base64::Engine;
use postroad_queue::{EventKind, unix_ms};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use dispatch::Dispatcher;
pub use endpoint::Endpoint;
pub use sink::WebhookSink;
pub use store::{DeadLetter, Pending, Queued, WebhookStore};

use crate::suppression::StoreFailure;

/// `[webhooks.delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Queue events for the registered endpoints and deliver them.
    pub enabled: bool,
    /// Most events per request.
    pub max_batch: usize,
    /// How long a request may take (connecting, sending, the answer).
    pub timeout_secs: u64,
    /// The wait after a batch's first failure; it doubles with each failure...
    pub retry_first_secs: u64,
    /// ...up to this.
    pub retry_max_secs: u64,
    /// A batch whose oldest event has waited this long when a request fails goes to
    /// the endpoint's dead letters.
    pub give_up_secs: u64,
    /// Most requests in progress at once, all endpoints together.
    pub concurrency: usize,
    /// Most endpoints per tenant.
    pub max_endpoints: usize,
    /// Allow endpoints on loopback, private and link-local addresses (by name or by
    /// number). Off, a tenant cannot make Postroad call the services of its network.
    pub allow_private_networks: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch: 100,
            timeout_secs: 10,
            retry_first_secs: 5,
            retry_max_secs: 600,
            give_up_secs: 86_400,
            concurrency: 32,
            max_endpoints: 20,
            allow_private_networks: false,
        }
    }
}

impl DeliveryConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("timeout_secs", self.timeout_secs),
            ("retry_first_secs", self.retry_first_secs),
            ("give_up_secs", self.give_up_secs),
            ("concurrency", self.concurrency as u64),
            ("max_endpoints", self.max_endpoints as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("webhooks.delivery.{key} must be above 0"));
        }
        if !(1..=1000).contains(&self.max_batch) {
            return Err("webhooks.delivery.max_batch must be 1 to 1000".into());
        }
        if self.retry_max_secs < self.retry_first_secs {
            return Err(
                "webhooks.delivery.retry_max_secs must be at least retry_first_secs".into(),
            );
        }
        Ok(())
    }
}

/// Why an endpoint cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A field is wrong: its name and why.
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("a tenant has at most {0} endpoints (webhooks.delivery.max_endpoints)")]
    TooMany(usize),
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

/// The endpoints and their store, as the API, the sink and the dispatcher share them.
pub struct CustomerHooks {
    store: Arc<dyn WebhookStore>,
    config: DeliveryConfig,
    /// Every tenant's endpoints, reloaded from the store every few seconds and at
    /// once after a change here.
    endpoints: RwLock<Arc<Vec<Endpoint>>>,
    /// Woken when events are queued, so the dispatcher starts at once.
    wake: Notify,
}

impl CustomerHooks {
    pub async fn load(
        store: Arc<dyn WebhookStore>,
        config: DeliveryConfig,
    ) -> Result<Arc<Self>, StoreFailure> {
        let hooks = Arc::new(Self {
            store,
            config,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            wake: Notify::new(),
        });
        hooks.reload().await?;
        Ok(hooks)
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn WebhookStore> {
        &self.store
    }

    /// Reads the endpoints from the store again.
    pub async fn reload(&self) -> Result<(), StoreFailure> {
        let all = self.store.endpoints(None).await?;
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
        Ok(())
    }

    /// Every tenant's endpoints as last loaded.
    pub fn endpoints(&self) -> Arc<Vec<Endpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers an endpoint for `tenant`: its events of `events` (empty: all) from
    /// now on. The answer carries the secret (shown this once by the API).
    pub async fn register(
        &self,
        tenant: &str,
        url: &str,
        events: Vec<EventKind>,
        description: &str,
    ) -> Result<Endpoint, RegisterError> {
        let url = endpoint::check_url(url).map_err(|e| RegisterError::Invalid("url", e))?;
        if !self.config.allow_private_networks
            && let Some(ip) = guard::literal_ip(&url)
            && !guard::is_public(ip)
        {
            return Err(RegisterError::Invalid(
                "url",
                format!("{ip} is not a public address (webhooks.delivery.allow_private_networks)"),
            ));
        }
        if description.chars().count() > endpoint::MAX_DESCRIPTION {
            return Err(RegisterError::Invalid(
                "description",
                format!("at most {} characters", endpoint::MAX_DESCRIPTION),
            ));
        }
        let existing = self.store.endpoints(Some(tenant)).await?;
        if existing.len() >= self.config.max_endpoints {
            return Err(RegisterError::TooMany(self.config.max_endpoints));
        }
        let endpoint = Endpoint {
            id: uuid::Uuid::now_v7().simple().to_string(),
            tenant: tenant.to_string(),
            url: url.to_string(),
            secret: new_secret(),
            events,
            description: description.to_string(),
            created_at_ms: unix_ms(std::time::SystemTime::now()),
        };
        self.store.create_endpoint(&endpoint).await?;
        self.reload().await?;
        Ok(endpoint)
    }

    /// Deletes a tenant's endpoint, its waiting events and dead letters.
    pub async fn remove(&self, tenant: &str, id: &str) -> Result<bool, StoreFailure> {
        let removed = self.store.delete_endpoint(tenant, id).await?;
        self.reload().await?;
        Ok(removed)
    }

    /// A tenant's endpoint by id, from the store.
    pub async fn endpoint(&self, tenant: &str, id: &str) -> Result<Option<Endpoint>, StoreFailure> {
        let all = self.store.endpoints(Some(tenant)).await?;
        Ok(all.into_iter().find(|e| e.id == id))
    }

    /// Tells the dispatcher that events are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// `whsec_` and 32 random bytes, base64url.
fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
