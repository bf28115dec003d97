//! `[tracking]` for a server: the links' key (given, or generated into
//! `<data_dir>/tracking.key` at first start), base URL and unsubscribe address (its
//! mailbox at the first bounce domain, whose mail Postroad receives).

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
pub fn open(
    config: &TrackingConfig,
    bounce_domains: &[String],
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<Tracking>>> {
    if config.base_url.is_empty() {
        return Ok(None);
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let key = secret_file::given_or_generated(&config.secret, &KEY_FILE, data_dir)?;
    let mut tracking = Tracking::new(config, &key);
    let mailbox = &config.unsubscribe_mailbox;
    if let Some(domain) = bounce_domains.first().filter(|_| !mailbox.is_empty()) {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        tracking = tracking.with_unsubscribe_address(format!("{mailbox}@{domain}"));
    }
    tracing::info!(base_url = %config.base_url, mailto = tracking.unsubscribe_address().unwrap_or("-"), "tracking and one-click unsubscribe on");
    Ok(Some(Arc::new(tracking)))
}
