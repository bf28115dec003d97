//! `[tracking]` for a server: the links' key (given, or generated into
//! `<data_dir>/tracking.key` at first start) and base URL.

use std::path::Path;
use std::sync::Arc;

use postroad_api::{Tracking, TrackingConfig};

use crate::secret_file::{self, SecretFile};

const KEY_FILE: SecretFile = SecretFile {
    name: "tracking.key",
    what: "tracking link key",
    check: check_secret,
};

fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < 16 {
        return Err("must be at least 16 characters long".into());
    }
    Ok(())
}

/// Tracking as configured; `None` without a base URL.
pub fn open(config: &TrackingConfig, data_dir: &Path) -> anyhow::Result<Option<Arc<Tracking>>> {
    if config.base_url.is_empty() {
        return Ok(None);
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let key = if config.secret.is_empty() {
        secret_file::load_or_create(&KEY_FILE, data_dir)?
    } else {
        config.secret.clone()
    };
    tracing::info!(base_url = %config.base_url, "tracking and one-click unsubscribe on");
    Ok(Some(Arc::new(Tracking::new(config, &key))))
}
