//! `postroad serve`: open the queue, start the listeners, run until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postroad_queue::{Queue, Spool};
use tokio::sync::watch;

use crate::auth::Credentials;
use crate::config::{Config, TlsMode};
use crate::smtp::{Shared, SmtpServer};
use postroad_history::{HistoryStore, HistoryWriter};
use postroad_relay::Relay;

use crate::events::EventBus;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            config.server.data_dir.display()
        )
    })?;

    let spool = Spool::open(config.spool.clone())
        .with_context(|| format!("cannot open the spool at {}", config.spool.dir.display()))?;
    let queue: Arc<dyn Queue> = Arc::new(spool.clone());
    queue.recover().await.context("spool recovery failed")?;
    if !config.spool.fsync {
        tracing::warn!("spool.fsync is off: acknowledged mail can be lost in a power failure");
    }

    let needs_tls = config.listeners.iter().any(|l| l.tls != TlsMode::None);
    let tls = if needs_tls {
        Some(crate::tls::acceptor(
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

    let history_path = config.history.resolved_path(&config.server.data_dir);
    let store = HistoryStore::open(&history_path)
        .await
        .with_context(|| format!("cannot open the history at {}", history_path.display()))?;
    let (history, history_task) = HistoryWriter::spawn(store, &config.history);
    drop(history_task); // the bus waits for the writer through `HistorySender::shutdown`
    let bus = EventBus::start(history);
    let events = Some(bus.sender());
    let relay = if config.relay.enabled {
        Some(Relay::new(
            config.relay.clone(),
            &config.server.hostname,
            queue.clone(),
            events.clone(),
        )?)
    } else {
        tracing::info!("relay.enabled is off: mail is accepted and queued, not delivered");
        None
    };

    let admin_queue = queue.clone();
    let shared = Shared {
        hostname: config.server.hostname.clone(),
        smtp: config.smtp.clone(),
        queue,
        tls,
        credentials,
        relay_waker: relay.as_ref().map(|r| r.waker()),
        events,
    };
    let server = SmtpServer::bind(shared, &config.listeners).await?;

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections");
        let _ = stop.send(true);
    });
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let admin = crate::admin::start(
        &config.admin,
        &config.server.data_dir,
        admin_queue,
        stopped.clone(),
    )
    .await?;
    let relay_task = relay.map(|relay| tokio::spawn(relay.run(stopped.clone(), grace)));
    tracing::info!(hostname = %config.server.hostname, "postroad ready");
    server.run(stopped, grace).await;
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    let _ = admin.await;
    bus.close().await;
    spool.shutdown().await.context("spool shutdown failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
