//! What every request handler shares.

use std::net::IpAddr;
use std::sync::Arc;

use postroad_queue::{Queue, QueueError};
use tokio::sync::{Notify, Semaphore};

use crate::ApiConfig;
use crate::auth::{Caller, KeyRing};
use crate::compat::ses::SesKeys;
use crate::history::HistoryReader;
use crate::prefs::PrefStore;
use crate::problem::{Kind, Problem};
use crate::redis_link::RedisLink;
use crate::render::Templates;
use crate::store::AppStore;
use crate::submit::{Context, Prepared};

/// Limits of the SMTP side that HTTP submissions obey too.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub max_message_size: usize,
    pub max_recipients: usize,
}

/// Everything the API needs from the process that runs it.
#[derive(Clone)]
pub struct Deps {
    pub hostname: String,
    /// Whom this process's campaign leases name: the same after a restart where only
    /// one process at a time can have it (a spool's data directory), so a restarted
    /// process goes on at once; unique per process otherwise (a crashed one's lease
    /// then runs out before another takes over).
    pub campaign_owner: String,
    pub limits: MessageLimits,
    pub queue: Arc<dyn Queue>,
    pub store: AppStore,
    /// Woken after each enqueue, so a relay in this process starts delivering at once.
    pub relay_waker: Option<Arc<Notify>>,
    /// `[redis]`: the shared template cache and the user preferences; `None`: templates
    /// cached in process only, preferences in the embedded store.
    pub redis: Option<RedisLink>,
    /// Where `GET /v1/history` and `GET /v1/messages/{id}` read; `None`: those routes
    /// answer 404.
    pub history: Option<Arc<dyn HistoryReader>>,
    /// What `GET /v1/alerts` reports; `None`: that route answers 404.
    pub alerts: Option<Arc<dyn crate::alerts::AlertSource>>,
    /// `POST /webhooks/ses` and `/webhooks/sendgrid`; `None`: they answer 404.
    pub provider_hooks: Option<Arc<postroad_webhooks::ProviderHooks>>,
    /// The suppression list: `/v1/suppressions`, and which recipients of a message are
    /// listed (so will not be sent to); `None`: those routes answer 404.
    pub suppressions: Option<Arc<postroad_webhooks::suppression::Suppressions>>,
    /// The tenants' webhook endpoints: `/v1/webhooks`; `None`: those routes answer 404.
    pub webhooks: Option<Arc<postroad_webhooks::customer::CustomerHooks>>,
    /// `POST /v1/inbound` (with `[bounces]` domains); `None`: it answers 404.
    pub reports: Option<Arc<postroad_webhooks::Reports>>,
    /// `[tracking]` with a base URL: tracked links and `List-Unsubscribe` in messages,
    /// and the routes that answer them; `None`: messages get neither and `/t/...`,
    /// `/u/...` answer 404.
    pub tracking: Option<Arc<crate::tracking::Tracking>>,
    /// The certificate for `http.tls` (required when it is on).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub(crate) struct Inner {
    pub config: ApiConfig,
    pub deps: Deps,
    pub keys: KeyRing,
    pub templates: Templates,
    pub prefs: PrefStore,
    /// Access keys of the SES compatible route.
    pub ses_keys: SesKeys,
    /// Requests handled now (`http.max_concurrent_requests`).
    pub requests: Arc<Semaphore>,
    /// Wakes the campaign expander (a campaign created or resumed).
    pub campaign_wake: Arc<Notify>,
}

#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn context<'a>(&'a self, caller: &'a Caller, client_ip: IpAddr) -> Context<'a> {
        Context {
            hostname: &self.deps.hostname,
            default_from: &self.config.default_from,
            max_message_size: self.deps.limits.max_message_size,
            max_recipients: self.deps.limits.max_recipients,
            client_ip,
            caller,
            tracking: self.deps.tracking.as_deref(),
        }
    }

    /// Makes `messages` durable in one write; the answer to give when that fails.
    pub(crate) async fn enqueue(&self, messages: Vec<Prepared>) -> Result<(), Problem> {
        let batch = messages.into_iter().map(|p| (p.envelope, p.body)).collect();
        let result = self.deps.queue.enqueue_many(batch).await;
        match result {
            Ok(()) => {
                if let Some(waker) = &self.deps.relay_waker {
                    waker.notify_one();
                }
                Ok(())
            }
            Err(QueueError::TooLarge { size, max }) => Err(Problem::new(Kind::PayloadTooLarge)
                .detail(format!(
                    "a message of {size} bytes is over the queue's limit of {max}"
                ))),
            Err(e) => Err(Problem::queue_unavailable("enqueue", e)),
        }
    }
}
