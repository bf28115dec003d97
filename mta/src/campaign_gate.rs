//! Paused and cancelled campaigns, for the relay: read from the application store
//! every [`REFRESH`] (a few rows: only campaigns changed within the queue's longest
//! life), so a pause or cancel reaches every relay process within seconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postroad_api::AppStore;
use postroad_api::store::campaigns::state;
use postroad_relay::{CampaignGate, Gate};
use tokio_util::sync::CancellationToken;

/// How often the states are read again.
const REFRESH: Duration = Duration::from_secs(2);
/// Campaigns changed longer ago than this have no mail left in any queue.
const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct CampaignStates {
    store: AppStore,
    held: RwLock<HashMap<String, Gate>>,
}

impl CampaignStates {
    /// Reads the states once (failing: none held until the next read works).
    pub async fn load(store: AppStore) -> Arc<Self> {
        let states = Arc::new(Self {
            store,
            held: RwLock::default(),
        });
        states.refresh().await;
        states
    }

    async fn refresh(&self) {
        match self.store.held_campaigns(REMEMBER.as_millis() as u64).await {
            Ok(rows) => {
                let held = rows
                    .into_iter()
                    .map(|(id, s)| {
                        let gate = if s == state::CANCELLED {
                            Gate::Drop
                        } else {
                            Gate::Hold
                        };
                        (id, gate)
                    })
                    .collect();
                *self.held.write().unwrap_or_else(|e| e.into_inner()) = held;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the paused and cancelled campaigns"),
        }
    }

    /// Reads the states again every [`REFRESH`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => self.refresh().await,
            }
        }
    }
}

impl CampaignGate for CampaignStates {
    fn gate(&self, campaign: &str) -> Gate {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(campaign)
            .copied()
            .unwrap_or(Gate::Send)
    }
}
