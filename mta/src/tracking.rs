//! `[tracking]` for a server: the links' key (given, or generated into
//! `<data_dir>/tracking.key` at first start) and base URL.

use std::path::Path;
use std::sync::Arc;

use postroad_api::{Tracking, TrackingConfig};

use crate::secret_file::{self, SecretFile};

const KEY_FILE: SecretFile = SecretFile {
    name: "tracking.key",
    what: "tracking link key",
    check: secret_file::mac_key,
};

/// Tracking as configured; `None` without a base URL.
pub fn open(config: &TrackingConfig, data_dir: &Path) -> anyhow::Result<Option<Arc<Tracking>>> {
    if config.base_url.is_empty() {
        return Ok(None);
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let key = secret_file::given_or_generated(&config.secret, &KEY_FILE, data_dir)?;
    tracing::info!(base_url = %config.base_url, "tracking and one-click unsubscribe on");
    Ok(Some(Arc::new(Tracking::new(config, &key))))
}
