//! `postroad serve`: open the queue, start the parts the roles asked for need (event
//! fan-out, InfluxDB writer, alert rules, history consumer, relay, admin endpoint,
//! HTTP API, SMTP ingress; see
//! [`crate::roles`]), run until SIGTERM/SIGINT, then stop them in reverse order.

use std::sync::Arc;

use anyhow::Context;
use postroad_queue::kafka::{EventConsumer, KafkaQueue};
use postroad_queue::{Queue, Spool};
use tokio_util::sync::CancellationToken;

use crate::analytics::alerts::Alerts;
use crate::analytics::influx::InfluxSink;
use crate::analytics::influx::writer::InfluxWriter;
use crate::auth::Credentials;
use crate::auth::throttle::AuthThrottle;
use crate::config::{Backend, Config, TlsMode};
use crate::history_reader::StoreReader;
use crate::roles::Parts;
use crate::smtp::budget::MemoryBudget;
use crate::smtp::{Shared, SmtpServer};
use postroad_api::alerts::AlertSource;
use postroad_api::tracking::unsubscribe::MailUnsubscribe;
use postroad_api::{Api, Deps, MessageLimits};
use postroad_history::{Backend as HistoryBackend, HistorySink, HistoryStore};
use postroad_queue::{EventSink, Fanout};
use postroad_relay::Relay;
use postroad_webhooks::customer::{CustomerHooks, Dispatcher, WebhookSink};
use postroad_webhooks::suppression::SuppressionSink;
use postroad_webhooks::{ProviderHooks, Reports};

use crate::campaign_gate::CampaignStates;
use crate::chain_sink::Chain;
use crate::suppression::ForRelay;

/// Which parts of Postroad this process runs (`serve --roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// SMTP listeners and the HTTP API: accept mail into the queue.
    pub ingress: bool,
    /// Relay workers: deliver what is in the queue.
    pub relay: bool,
    /// The history writer. With the spool, history is always written by the process
    /// that owns the spool; with Kafka, by the processes of this role, from the events
    /// topic.
    pub history: bool,
}

/// Where this process's history writer takes events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryFeed {
    /// The queue's outbox, through the event fan-out.
    Outbox,
    /// The Kafka events topic, as a member of `kafka.history_group_id`.
    EventsTopic,
    /// Not here: processes of the history role write it.
    Elsewhere,
}

impl HistoryFeed {
    fn of(config: &Config, roles: Roles) -> anyhow::Result<Self> {
        match config.queue.backend {
            Backend::Spool => {
                anyhow::ensure!(
                    roles.ingress || roles.relay,
                    "--roles history alone needs the Kafka backend: with the spool, the \
                     process that queues and delivers writes the history"
                );
                Ok(Self::Outbox)
            }
            Backend::Kafka if !roles.history => Ok(Self::Elsewhere),
            Backend::Kafka if config.kafka.publish_events => Ok(Self::EventsTopic),
            Backend::Kafka => {
                tracing::warn!(
                    "kafka.publish_events is off: the history holds this process's own \
                     events only, and loses those not yet written in a crash"
                );
                Ok(Self::Outbox)
            }
        }
    }
}

/// The queue backend this process opened, and how to close it.
enum OpenQueue {
    Spool(Spool),
    Kafka(Arc<KafkaQueue>),
}

impl OpenQueue {
    async fn open(config: &Config, consume: bool) -> anyhow::Result<(Self, Arc<dyn Queue>)> {
        match config.queue.backend {
            Backend::Spool => {
                let spool = Spool::open(config.spool.clone()).with_context(|| {
                    format!("cannot open the spool at {}", config.spool.dir.display())
                })?;
                if !config.spool.fsync {
                    tracing::warn!(
                        "spool.fsync is off: acknowledged mail can be lost in a power failure"
                    );
                }
                let queue: Arc<dyn Queue> = Arc::new(spool.clone());
                Ok((OpenQueue::Spool(spool), queue))
            }
            Backend::Kafka => {
                let consume_as = consume.then(|| config.kafka.instance_id.clone());
                let kafka = KafkaQueue::connect(config.kafka.clone(), consume_as)
                    .await
                    .with_context(|| {
                        format!("cannot use the Kafka queue at {}", config.kafka.brokers)
                    })?;
                let queue: Arc<dyn Queue> = kafka.clone();
                Ok((OpenQueue::Kafka(kafka), queue))
            }
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            OpenQueue::Spool(spool) => spool.shutdown().await.context("spool shutdown failed"),
            OpenQueue::Kafka(kafka) => {
                kafka.shutdown().await;
                Ok(())
            }
        }
    }
}

pub async fn serve(mut config: Config, roles: Roles) -> anyhow::Result<()> {
    // First of all: a SIGTERM that arrives while starting (a pod stopped as it comes up,
    // or the moment the listeners answer) is kept and honoured once started, instead of
    // killing the process with the default action.
    let stop_signals = StopSignals::install()?;
    crate::data_dir::prepare(&config.server.data_dir)?;
    let feed = HistoryFeed::of(&config, roles)?;

    let relaying = roles.relay && config.relay.enabled;
    let (backend, queue) = OpenQueue::open(&config, relaying).await?;
    queue.recover().await.context("queue recovery failed")?;
    if let Some(max) = queue.max_message_size()
        && max < config.smtp.max_message_size
    {
        tracing::info!(
            "smtp.max_message_size lowered from {} to {max} bytes: the queue's record limit",
            config.smtp.max_message_size
        );
        config.smtp.max_message_size = max;
    }

    let api_tls = roles.ingress && config.http.enabled && config.http.tls;
    let needs_tls = api_tls || config.listeners.iter().any(|l| l.tls != TlsMode::None);
    let tls = if needs_tls {
        Some(crate::tls::server_config(
            &config.tls,
            &config.server.data_dir,
            &config.server.hostname,
        )?)
    } else {
        None
    };
    let credentials = Credentials::new(&config.auth.users)?;
    if credentials.is_empty() {
        tracing::info!("no [auth] users configured: submission listeners will refuse MAIL");
    }

    let store = HistoryStore::open(&config.history, &config.server.data_dir)
        .await
        .context("cannot open the delivery history")?;
    tracing::info!(history = %store.location(), "delivery history open");
    let history_reads = open_history_reads(&config, &store).await?;
    crate::metrics::handle();
    let history_sink: Arc<dyn EventSink> =
        Arc::new(HistorySink::new(store.clone(), &config.history));
    // One link to Redis for the relay's shared rates, the suppression list and the API.
    let redis = config.redis.link().map_err(anyhow::Error::msg)?;
    // Keys, templates, the suppression list, webhook endpoints: beside the history.
    let app_store = crate::app_store::open(&config).await?;
    let suppressions = crate::suppression::open(&config, &app_store, redis.clone()).await?;
    let customer_hooks = if config.webhooks.delivery.enabled {
        Some(
            CustomerHooks::load(
                Arc::new(app_store.clone()),
                config.webhooks.delivery.clone(),
            )
            .await
            .context("cannot load the webhook endpoints")?,
        )
    } else {
        None
    };
    // Where the history is written, the events also grow the suppression list and go
    // to the tenants' webhook endpoints: one reader of the events for both (each is
    // a cheap filter for most events, and both live in the application store).
    let mut app_sinks: Vec<Arc<dyn EventSink>> = Vec::new();
    if config.suppression.from_events {
        app_sinks.push(Arc::new(SuppressionSink(suppressions.clone())));
    }
    if let Some(hooks) = &customer_hooks {
        app_sinks.push(Arc::new(WebhookSink(hooks.clone())));
    }
    let app_sink = Chain::of("suppression+webhooks", app_sinks);
    let mut sinks: Vec<Arc<dyn EventSink>> =
        vec![Arc::new(crate::metrics::EventCounter::default())];
    let influx = start_influx(&config, &mut sinks)?;
    let alerts = config.alerts.enabled.then(|| {
        let alerts = Arc::new(Alerts::new(&config.alerts));
        sinks.push(alerts.clone());
        alerts
    });
    let events_consumer = match feed {
        HistoryFeed::Outbox => {
            sinks.insert(0, history_sink.clone());
            sinks.extend(app_sink.clone());
            None
        }
        HistoryFeed::EventsTopic => Some(
            EventConsumer::subscribe(&config.kafka)
                .context("cannot read the Kafka events topic for the history")?,
        ),
        HistoryFeed::Elsewhere => {
            tracing::info!("no history role: history is written by `serve --roles history`");
            None
        }
    };
    let fanout = Fanout::start(queue.clone(), sinks);
    let return_paths = config.bounces.return_paths(&config.server.data_dir)?;
    let campaign_states = if relaying {
        Some(CampaignStates::load(app_store.clone()).await)
    } else {
        None
    };
    let relay = if relaying {
        let dkim = postroad_dkim::Signer::load(&config.dkim)?.map(Arc::new);
        if let Some(signer) = &dkim {
            tracing::info!(domains = signer.domains(), "dkim signing on");
        }
        let path = config.relay.shaping_file.clone();
        let shaping = postroad_relay::Shaping::load(path.as_deref())?;
        tracing::info!(source = %shaping.source, "shaping file loaded");
        Some(Relay::new(
            config.relay.clone(),
            &config.server.hostname,
            queue.clone(),
            dkim,
            shaping,
            redis.clone(),
            return_paths.clone(),
            Some(Arc::new(ForRelay(suppressions.clone()))),
            campaign_states
                .clone()
                .map(|s| s as Arc<dyn postroad_relay::CampaignGate>),
        )?)
    } else {
        if roles.relay {
            tracing::info!("relay.enabled is off: mail is accepted and queued, not delivered");
        } else if roles.ingress {
            tracing::info!("no relay role: mail is accepted and queued, not delivered");
        }
        None
    };

    let admin_queue = queue.clone();
    // Reports are read where mail is taken in; the history says which message.
    let reports = return_paths.filter(|_| roles.ingress).map(|paths| {
        let lookup = Arc::new(StoreReader(history_reads.clone()));
        Arc::new(Reports::new(paths, queue.clone(), lookup))
    });
    let tracking = if roles.ingress {
        crate::tracking::open(
            &config.tracking,
            &config.bounces.domains,
            &config.server.data_dir,
        )?
    } else {
        None
    };
    // Mail to List-Unsubscribe's mailto: comes in with the reports.
    let unsubscribe = tracking
        .clone()
        .filter(|_| reports.is_some())
        .and_then(|t| MailUnsubscribe::new(t, Some(suppressions.clone()), queue.clone()))
        .map(Arc::new);
    let api = if roles.ingress && config.http.enabled {
        let provider_hooks =
            ProviderHooks::new(&config.webhooks, queue.clone()).map_err(anyhow::Error::msg)?;
        let campaign_owner = match &backend {
            OpenQueue::Spool(_) => format!(
                "{}:{}",
                config.server.hostname,
                config.server.data_dir.display()
            ),
            _ => format!(
                "{}:{}:{:08x}",
                config.server.hostname,
                std::process::id(),
                rand::random::<u32>()
            ),
        };
        let deps = Deps {
            hostname: config.server.hostname.clone(),
            campaign_owner,
            limits: MessageLimits {
                max_message_size: config.smtp.max_message_size,
                max_recipients: config.smtp.max_recipients,
            },
            queue: queue.clone(),
            store: app_store.clone(),
            relay_waker: relay.as_ref().map(|r| r.waker()),
            redis,
            history: Some(Arc::new(StoreReader(history_reads.clone()))),
            alerts: alerts.clone().map(|a| a as Arc<dyn AlertSource>),
            provider_hooks: Some(Arc::new(provider_hooks)),
            reports: reports.clone(),
            suppressions: Some(suppressions.clone()),
            webhooks: customer_hooks.clone(),
            tracking,
            tls: tls.clone().filter(|_| api_tls),
        };
        Some(bind_api(&config, deps).await?)
    } else {
        None
    };
    let shared = Shared {
        hostname: config.server.hostname.clone(),
        smtp: config.smtp.clone(),
        queue,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        credentials,
        auth_throttle: AuthThrottle::new(config.auth.throttle.clone()),
        budget: MemoryBudget::new(config.smtp.inflight_budget()),
        relay_waker: relay.as_ref().map(|r| r.waker()),
        reports,
        unsubscribe,
        refuse_listed: config
            .suppression
            .reject_at_rcpt
            .then(|| suppressions.clone()),
    };
    let server = if roles.ingress {
        Some(SmtpServer::bind(shared, &config.listeners).await?)
    } else {
        tracing::info!("no ingress role: no SMTP listeners");
        None
    };

    let grace = config.server.shutdown_grace;
    let mut parts = Parts::default();
    // Started before the fan-out so it stops after it: the last events reach the
    // InfluxDB sink before its final points are written.
    if let Some((writer, sink)) = influx {
        let queue = admin_queue.clone();
        parts.start("influx", move |stop| writer.run(sink, queue, stop));
    }
    parts.start("events", move |stop| async move {
        stop.cancelled().await;
        // What is recorded but not yet taken waits in the outbox for next time.
        fanout.close(grace).await;
    });
    if let Some(alerts) = alerts {
        let queue = admin_queue.clone();
        parts.start("alerts", move |stop| alerts.run(queue, stop));
    }
    if config.history.archive.enabled() && feed != HistoryFeed::Elsewhere {
        let archive = postroad_history::archive::Archive::open(&config.history.archive)
            .context("cannot use history.archive")?;
        let (store, every) = (store.clone(), config.history.archive.interval_secs);
        parts.start("archive", move |stop| {
            archive_every(archive, store, std::time::Duration::from_secs(every), stop)
        });
    }
    if let Some(consumer) = events_consumer {
        let sinks = std::iter::once(history_sink).chain(app_sink).collect();
        let sink = Chain::of("history+", sinks).expect("the history sink");
        parts.start("history", move |stop| consumer.run(sink, stop));
    }
    {
        let list = suppressions.clone();
        parts.start("suppression", move |stop| list.run(stop));
    }
    if let Some(states) = campaign_states {
        parts.start("campaign-states", move |stop| states.run(stop));
    }
    if let Some(hooks) = customer_hooks.filter(|_| feed != HistoryFeed::Elsewhere) {
        let owner = format!("{}:{}", config.server.hostname, std::process::id());
        let dispatcher = Dispatcher::new(hooks, &owner).map_err(anyhow::Error::msg)?;
        parts.start("webhooks", move |stop| dispatcher.run(stop));
    }
    let control = relay.as_ref().map(|relay| {
        let reloader = Arc::new(crate::shaping::Reloader {
            relay: relay.clone(),
            path: config.relay.shaping_file.clone(),
        });
        reloader.clone().on_sighup();
        reloader as Arc<dyn crate::admin::RelayControl>
    });
    if let Some(relay) = relay {
        parts.start("relay", move |stop| relay.run(stop, grace));
    }
    let admin = CancellationToken::new();
    let health = crate::admin::health::Health::new();
    let endpoint = crate::admin::start(
        &config.admin,
        &config.server.data_dir,
        admin_queue,
        control,
        health.clone(),
        admin.clone(),
    )
    .await?;
    parts.adopt("admin", admin, endpoint);
    if let Some(api) = api {
        parts.start("http", move |stop| api.run(stop));
    }
    if let Some(server) = server {
        parts.start("smtp", move |stop| server.run(stop, grace));
    }
    health.serving();
    tracing::info!(hostname = %config.server.hostname, "postroad ready");
    stop_signals.wait().await;
    health.draining();
    tracing::info!("shutting down: no new connections");
    parts.stop().await;
    store.close().await;
    history_reads.close().await;
    app_store.close().await;
    backend.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// With `[influx] url`: the sink that counts events for InfluxDB (added to `sinks`)
/// and the writer that sends its points.
fn start_influx(
    config: &Config,
    sinks: &mut Vec<Arc<dyn EventSink>>,
) -> anyhow::Result<Option<(InfluxWriter, Arc<InfluxSink>)>> {
    if !config.influx.enabled() {
        return Ok(None);
    }
    let writer =
        InfluxWriter::new(&config.influx, &config.server.hostname).map_err(anyhow::Error::msg)?;
    let sink = Arc::new(InfluxSink::default());
    sinks.push(sink.clone());
    tracing::info!(url = %postroad_history::redact(&config.influx.url), database = %config.influx.database, "analytics points go to InfluxDB");
    Ok(Some((writer, sink)))
}

/// Archives the months past the hot window now and every `every` after; a failure
/// leaves the month in the database for the next pass.
async fn archive_every(
    archive: postroad_history::archive::Archive,
    store: HistoryStore,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let pass = archive.archive_due(&store, postroad_history::today());
        tokio::select! {
            done = pass => if let Err(e) = done {
                tracing::warn!(error = %e, "history archival failed; the month stays in the database and is tried again later");
            },
            // An unfinished pass removes nothing: the month is archived again next time.
            _ = stop.cancelled() => return,
        }
    }
}

/// Where history queries read: MySQL's `history.read_url` when it names a replica,
/// else the store the history is written to.
async fn open_history_reads(config: &Config, store: &HistoryStore) -> anyhow::Result<HistoryStore> {
    let history = &config.history;
    if history.backend == HistoryBackend::Mysql && !history.read_url.is_empty() {
        let reads = HistoryStore::open_reader(history, &config.server.data_dir)
            .await
            .context("cannot open the history replica (history.read_url)")?;
        tracing::info!(history = %reads.location(), "history queries read from the replica");
        Ok(reads)
    } else {
        Ok(store.clone())
    }
}

/// Binds `[http] listen` for the API with what it needs from this process.
async fn bind_api(config: &Config, deps: Deps) -> anyhow::Result<Api> {
    let api = Api::bind(config.http.clone(), deps).await?;
    let address = api.local_addr().unwrap_or(config.http.listen);
    let scheme = if config.http.tls { "https" } else { "http" };
    tracing::info!(%address, scheme, "http api listening");
    Ok(api)
}

/// SIGTERM and SIGINT, caught from the start of `serve`.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(ingress: bool, relay: bool, history: bool) -> Roles {
        Roles {
            ingress,
            relay,
            history,
        }
    }

    #[test]
    fn the_history_is_fed_from_the_outbox_or_the_events_topic_by_the_roles() {
        let mut config = Config::default();
        let all = roles(true, true, true);
        assert_eq!(HistoryFeed::of(&config, all).unwrap(), HistoryFeed::Outbox);
        let relay_only = roles(false, true, false);
        assert_eq!(
            HistoryFeed::of(&config, relay_only).unwrap(),
            HistoryFeed::Outbox
        );
        let err = HistoryFeed::of(&config, roles(false, false, true)).unwrap_err();
        assert!(err.to_string().contains("needs the Kafka backend"), "{err}");

        config.queue.backend = Backend::Kafka;
        assert_eq!(
            HistoryFeed::of(&config, all).unwrap(),
            HistoryFeed::EventsTopic
        );
        assert_eq!(
            HistoryFeed::of(&config, relay_only).unwrap(),
            HistoryFeed::Elsewhere
        );
        config.kafka.publish_events = false;
        assert_eq!(HistoryFeed::of(&config, all).unwrap(), HistoryFeed::Outbox);
    }
}
