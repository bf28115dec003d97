//! The shaping file at the binary's edge: `postroad check-shaping FILE`, and reloading
//! the file into a running relay (on SIGHUP and by the admin endpoint's
//! `POST /v1/shaping/reload`). A file that does not load leaves the running one in
//! place.

use std::path::PathBuf;
use std::sync::Arc;

use postroad_relay::shaping::Shaping;
use postroad_relay::{Relay, SiteView};

use crate::admin::RelayControl;

/// `postroad check-shaping FILE`: the file's layers, or why it does not load.
pub fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let shaping = Shaping::load(Some(path))?;
    print!("{}", shaping.summary());
    Ok(())
}

/// Reloads `relay.shaping_file` (or the built-in file) into the relay.
pub struct Reloader {
    pub relay: Arc<Relay>,
    pub path: Option<PathBuf>,
}

impl Reloader {
    /// Loads the file and applies it; the running one stays on error.
    pub fn reload(&self) -> Result<String, String> {
        match Shaping::load(self.path.as_deref()) {
            Ok(shaping) => {
                let summary = shaping.summary();
                self.relay.reload_shaping(shaping);
                Ok(summary)
            }
            Err(e) => {
                tracing::error!(error = %e, "shaping file not reloaded; the running one stays");
                Err(e.to_string())
            }
        }
    }

    /// Reloads on every SIGHUP until the process ends.
    pub fn on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot install the SIGHUP handler; reload shaping through the admin endpoint"
            );
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the shaping file");
                let _ = self.reload();
            }
        });
    }
}

impl RelayControl for Reloader {
    fn sites(&self) -> Vec<SiteView> {
        self.relay.sites()
    }

    fn providers(&self) -> Vec<postroad_relay::ProviderView> {
        self.relay.providers()
    }

    fn reload_shaping(&self) -> Result<String, String> {
        self.reload()
    }
}
