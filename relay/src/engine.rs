//! The relay engine: claims ready messages, routes each recipient domain to a site,
//! and hands the sites their jobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use postroad_queue::{Claimed, Priority, Queue};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::ClientConfig;
use crate::config::RelayConfig;
use crate::deliver::{Context, Fallbacks, InFlight, Outcome, finish_without_jobs};
use crate::gate::{self, CampaignGate};
use crate::mx_provider::MxProviders;
use crate::provider::{ProviderLane, ProviderView, routing};
use crate::retry::RetryPolicy;
use crate::route::{RouteError, Router, RouterError};
use crate::shaping::Shaping;
use crate::site::{Site, SiteView, local_reply, site_key};
use crate::suppressed::SuppressionList;
use crate::transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid relay configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("cannot read relay.tls_ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot set up the providers' HTTP client: {0}")]
    Http(String),
}

/// The delivery engine. Cheap to share; `run` drives it.
pub struct Relay {
    ctx: Arc<Context>,
    /// Signs each claimed message (per its `From:` domain) before any send.
    dkim: Option<Arc<postroad_dkim::Signer>>,
    router: Router,
    shaping: RwLock<Arc<Shaping>>,
    /// With `[redis] url`: message rates shared by every relay process.
    redis: Option<postroad_redis_link::RedisLink>,
    sites: Mutex<HashMap<String, Arc<Site>>>,
    /// What the sites of each shaping provider share.
    mx_providers: Arc<MxProviders>,
    /// The HTTP providers routing rules can send through, by name.
    providers: BTreeMap<String, Arc<ProviderLane>>,
    /// Addresses not to send to.
    suppressions: Option<Arc<dyn SuppressionList>>,
    /// Campaigns whose mail waits (paused) or is not sent (cancelled).
    campaigns: Option<Arc<dyn CampaignGate>>,
    in_flight: Arc<Semaphore>,
    /// Bulk mail's share of `in_flight` (`relay.bulk_share`): while it is taken, only
    /// `high` and `normal` mail is claimed.
    bulk_in_flight: Arc<Semaphore>,
    wake: Arc<Notify>,
}

impl Relay {
    /// `helo_name` is used when `relay.helo_name` is empty. Each attempt's events (one
    /// per recipient) are recorded by the queue with the attempt's resolution. With
    /// `dkim`, every message is signed once per attempt, before its first send;
    /// `shaping` sets each site's limits; with `redis`, each site's `max_message_rate`
    /// is shared by every relay process; recipients on `suppressions` are resolved
    /// `suppressed` unsent; `campaigns` holds back paused campaigns' mail and drops
    /// cancelled ones' (see [`crate::gate`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RelayConfig,
        helo_name: &str,
        queue: Arc<dyn Queue>,
        dkim: Option<Arc<postroad_dkim::Signer>>,
        shaping: Shaping,
        redis: Option<postroad_redis_link::RedisLink>,
        return_paths: Option<Arc<postroad_bounce::verp::ReturnPaths>>,
        suppressions: Option<Arc<dyn SuppressionList>>,
        campaigns: Option<Arc<dyn CampaignGate>>,
    ) -> Result<Arc<Self>, RelayError> {
        config.validate().map_err(RelayError::Config)?;
        let router = Router::new(&config)?;
        let client = ClientConfig {
            helo_name: if config.helo_name.is_empty() {
                helo_name.to_string()
            } else {
                config.helo_name.clone()
            },
            tls: config.tls,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
            tls_roots: Arc::new(crate::tls_roots::load(config.tls_ca_file.as_deref())?),
        };
        let providers = providers(&config, redis.as_ref())?;
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        let bulk_share = (config.max_in_flight as f64 * config.bulk_share).ceil() as usize;
        let bulk_in_flight = Arc::new(Semaphore::new(bulk_share.max(1)));
        // A backend that learns of new work by itself (Kafka) wakes the claim loop.
        let wake = queue.ready_signal().unwrap_or_default();
        Ok(Arc::new(Self {
            ctx: Arc::new(Context {
                retry: RetryPolicy::new(&config),
                config,
                client,
                queue,
                return_paths,
            }),
            dkim,
            router,
            shaping: RwLock::new(Arc::new(shaping)),
            mx_providers: Arc::new(MxProviders::new(redis.clone())),
            redis,
            sites: Mutex::new(HashMap::new()),
            providers,
            suppressions,
            campaigns,
            in_flight,
            bulk_in_flight,
            wake,
        }))
    }

    /// Call after enqueueing so ready mail is picked up without waiting for the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims and delivers until `shutdown` is cancelled, then waits up to `grace` for
    /// the messages in flight to be resolved. Unresolved ones stay in the queue and are
    /// delivered after the next start (at least once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let max = self.ctx.config.max_in_flight;
        let poll = Duration::from_millis(self.ctx.config.poll_interval_ms);
        tracing::info!(max_in_flight = max, "relay started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let room = self
                .in_flight
                .available_permits()
                .min(self.ctx.config.claim_batch);
            if room == 0 {
                // Wait for a message to finish (or shutdown).
                tokio::select! {
                    permit = self.in_flight.acquire() => drop(permit),
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            // Bulk mail holding its whole share: claim only the other lanes.
            let claim = if self.bulk_in_flight.available_permits() == 0 {
                self.ctx.queue.claim_urgent(room).await
            } else {
                self.ctx.queue.claim(room).await
            };
            let claimed = match claim {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!("cannot claim from the queue: {e}");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = self.wake.notified() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let sorted = gate::sort(self.campaigns.as_deref(), claimed);
            gate::hold(self.ctx.queue.as_ref(), sorted.held).await;
            let (claimed, cancelled): (Vec<Claimed>, Vec<bool>) = sorted.go_on.into_iter().unzip();
            let mut suppressed = match &self.suppressions {
                Some(list) => crate::suppressed::look_up(list.as_ref(), &claimed).await,
                None => Vec::new(),
            }
            .into_iter();
            for (message, cancelled) in claimed.into_iter().zip(cancelled) {
                let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                    break; // cannot happen: only this loop takes permits
                };
                // Soft: a bulk message claimed as the share filled goes without one.
                let bulk_permit = (message.envelope.meta.priority == Priority::Bulk)
                    .then(|| self.bulk_in_flight.clone().try_acquire_owned().ok())
                    .flatten();
                let mut listed = suppressed.next().unwrap_or_default();
                if cancelled {
                    listed = vec![Some(gate::CANCELLED); message.envelope.recipients.len()];
                }
                let relay = self.clone();
                tokio::spawn(async move {
                    let message = relay.sign(message).await;
                    relay
                        .dispatch(InFlight::new(message, permit, bulk_permit), &listed)
                        .await
                });
            }
        }
        let open = max - self.in_flight.available_permits();
        tracing::info!(
            in_flight = open,
            "relay stopping; waiting up to {grace:?} for deliveries in progress"
        );
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.in_flight.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries still in progress after the grace period; they will be retried after restart"
            );
        }
    }

    /// The message with its DKIM signatures (signing is CPU work: RSA takes about a
    /// millisecond, so it runs off the async threads). A signing error sends the
    /// message unsigned rather than holding it back, and says so.
    async fn sign(&self, mut message: Claimed) -> Claimed {
        let Some(signer) = self.dkim.clone() else {
            return message;
        };
        let body = message.body.clone();
        match tokio::task::spawn_blocking(move || signer.sign(&body)).await {
            Ok(Ok(Some(signed))) => {
                metrics::counter!("postroad_dkim_signed_total").increment(1);
                message.body = bytes::Bytes::from(signed);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                metrics::counter!("postroad_dkim_errors_total").increment(1);
                tracing::error!(id = %message.envelope.id, error = %e, "dkim signing failed; sending unsigned");
            }
            Err(e) => {
                metrics::counter!("postroad_dkim_errors_total").increment(1);
                tracing::error!(id = %message.envelope.id, error = %e, "dkim signing task failed; sending unsigned");
            }
        }
        message
    }

    /// Routes each recipient domain of a message and queues its jobs at the first
    /// transport of its route (an SMTP site or a provider), the rest as fallbacks.
    /// `suppressed` says, per recipient, why it is not to be sent to (if it is not).
    async fn dispatch(&self, message: Arc<InFlight>, suppressed: &[Option<&'static str>]) {
        for (i, why) in suppressed.iter().enumerate() {
            if let Some(why) = why {
                message.set(&[i], &Outcome::suppressed(why));
            }
        }
        let by_domain = group_by_domain(&message.claimed, suppressed);
        let mut placed: Vec<(Arc<dyn Transport>, Vec<usize>, Fallbacks)> = Vec::new();
        for (domain, recipients) in by_domain {
            let mut transports = match self.transports(&domain, &message.claimed).await {
                Ok(transports) => transports,
                Err(outcome) => {
                    message.set(&recipients, &outcome);
                    continue;
                }
            };
            let first = transports.remove(0);
            for chunk in recipients.chunks(first.max_recipients(&self.ctx).max(1)) {
                placed.push((first.clone(), chunk.to_vec(), transports.clone()));
            }
        }
        if placed.is_empty() {
            finish_without_jobs(message, &self.ctx);
            return;
        }
        let (firsts, groups): (Vec<_>, Vec<_>) = placed
            .into_iter()
            .map(|(first, recipients, rest)| (first, (recipients, rest)))
            .unzip();
        for (first, job) in firsts.into_iter().zip(message.jobs(groups)) {
            first.submit(job, &self.ctx);
        }
    }

    /// The route of `domain`'s recipients of a message, at least one transport; or the
    /// outcome they get when there is none: direct SMTP to a null MX bounces, a DNS
    /// failure defers (unless a provider of the route can take the mail).
    async fn transports(
        &self,
        domain: &str,
        claimed: &Claimed,
    ) -> Result<Vec<Arc<dyn Transport>>, Outcome> {
        let names = routing::route(
            &self.ctx.config.routing,
            domain,
            &claimed.envelope.meta,
            claimed.envelope.id,
        );
        let mut transports: Vec<Arc<dyn Transport>> = Vec::with_capacity(names.len());
        let mut unroutable = None;
        for name in names {
            if name != routing::SMTP {
                // Validation made sure every name is a provider.
                if let Some(lane) = self.providers.get(name) {
                    transports.push(lane.clone());
                }
                continue;
            }
            match self.router.route(domain).await {
                Ok(destination) => transports.push(self.site(domain, destination)),
                Err(RouteError::Temporary(reply)) => {
                    unroutable = Some(Outcome::deferred(reply, None))
                }
                Err(RouteError::Permanent(reply)) => return Err(Outcome::bounced(reply, None)),
            }
        }
        if transports.is_empty() {
            return Err(unroutable.unwrap_or_else(|| {
                Outcome::deferred(
                    local_reply("4.3.5", "no transport for this mail".into()),
                    None,
                )
            }));
        }
        Ok(transports)
    }

    /// The site that delivers `domain`'s mail to `destination`: the MX set's, or the
    /// domain's own when it has a shaping entry.
    fn site(&self, domain: &str, destination: crate::route::Destination) -> Arc<Site> {
        let shaping = self.shaping();
        let own = shaping.has_domain(domain).then(|| domain.to_string());
        let key = site_key(own.as_deref(), &destination);
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        match sites.get(&key) {
            Some(site) => {
                site.update(destination);
                site.clone()
            }
            None => {
                let site = Site::new(
                    destination,
                    own,
                    &shaping,
                    self.redis.as_ref(),
                    &self.mx_providers,
                );
                sites.insert(key, site.clone());
                site
            }
        }
    }

    fn shaping(&self) -> Arc<Shaping> {
        self.shaping
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a new shaping file to every site (its jobs keep their place; a domain
    /// that gained or lost an entry of its own moves to its new site with its next
    /// message).
    pub fn reload_shaping(&self, shaping: Shaping) {
        let shaping = Arc::new(shaping);
        *self.shaping.write().unwrap_or_else(|e| e.into_inner()) = shaping.clone();
        self.mx_providers.reshape(&shaping);
        for site in self.all_sites() {
            site.reshape(&shaping);
        }
        tracing::info!(source = %shaping.source, "shaping reloaded");
    }

    /// The sites, out of the lock.
    fn all_sites(&self) -> Vec<Arc<Site>> {
        self.sites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The configured providers, by name.
    pub fn providers(&self) -> Vec<ProviderView> {
        self.providers.values().map(|p| p.view()).collect()
    }

    /// Every site this relay has delivered to since it started, by key.
    pub fn sites(&self) -> Vec<SiteView> {
        let mut views: Vec<SiteView> = self.all_sites().iter().map(|s| s.view()).collect();
        views.sort_by(|a, b| a.site.cmp(&b.site));
        views
    }
}

/// A lane per configured provider, sharing one HTTP client (its connection pool).
fn providers(
    config: &RelayConfig,
    redis: Option<&postroad_redis_link::RedisLink>,
) -> Result<BTreeMap<String, Arc<ProviderLane>>, RelayError> {
    if config.providers.is_empty() {
        return Ok(BTreeMap::new());
    }
    let http = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| RelayError::Http(e.to_string()))?;
    config
        .providers
        .iter()
        .map(|(name, provider)| {
            ProviderLane::new(name, provider, http.clone(), redis)
                .map(|lane| (name.clone(), lane))
                .map_err(RelayError::Config)
        })
        .collect()
}

/// Recipient indices by lowercased domain, in a stable order, without the suppressed.
fn group_by_domain(
    claimed: &Claimed,
    suppressed: &[Option<&'static str>],
) -> BTreeMap<String, Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, recipient) in claimed.envelope.recipients.iter().enumerate() {
        if suppressed.get(i).is_none_or(Option::is_none) {
            groups.entry(recipient.domain()).or_default().push(i);
        }
    }
    groups
}
