//! `postroad serve`: open the queue, start the listeners, run until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postroad_queue::{Queue, Spool};
use tokio::sync::watch;

use crate::auth::Credentials;
use crate::config::{Config, TlsMode};
use crate::smtp::{Shared, SmtpServer};

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

    let shared = Shared {
        hostname: config.server.hostname.clone(),
        smtp: config.smtp.clone(),
        queue,
        tls,
        credentials,
    };
    let server = SmtpServer::bind(shared, &config.listeners).await?;

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections");
        let _ = stop.send(true);
    });
    tracing::info!(hostname = %config.server.hostname, "postroad ready");
    server
        .run(
            stopped,
            Duration::from_secs(config.server.shutdown_grace_secs),
        )
        .await;
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
