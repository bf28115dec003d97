//! The `[relay]` section: routing, DNS, connection pools, timeouts, retries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A `Duration` written as whole seconds in the config file (`*_secs` keys).
type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

use crate::client::TlsPolicy;
use crate::provider::ProviderConfig;
use crate::provider::routing::RoutingRule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Deliver queued mail. Off: Postroad only accepts and queues (an ingress-only node).
    pub enabled: bool,
    /// Send everything to this `host:port` instead of MX hosts (Postfix's `relayhost`).
    pub smarthost: Option<String>,
    /// Per-domain static routes: `"example.com" = { host = "smtp.example.net:2525" }`.
    pub routes: BTreeMap<String, RouteConfig>,
    /// DNS servers (`ip:port`) for MX/A lookups; empty = the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Port used for MX hosts (25 on the Internet; tests point it at a sink).
    pub mx_port: u16,
    /// Name sent in EHLO; empty = `server.hostname`.
    pub helo_name: String,
    /// TLS policy for MX and smarthost deliveries: `none`, `opportunistic`, `required`,
    /// `verify` (required, with a certificate valid for the MX host name).
    pub tls: TlsPolicy,
    /// Extra trusted CA certificates (PEM) for `verify`, besides the system store.
    pub tls_ca_file: Option<PathBuf>,
    /// The shaping file: connections, messages per connection, message and connection
    /// rates, idle time and TLS per site, provider and domain. `None`: the built-in one.
    pub shaping_file: Option<PathBuf>,
    /// Most recipients in one SMTP transaction (RFC 5321 requires servers take 100).
    pub max_recipients_per_transaction: usize,
    /// Time for a TCP connection to be established (`connect_timeout_secs`).
    #[serde(rename = "connect_timeout_secs", with = "Secs")]
    pub connect_timeout: Duration,
    /// The wait for each reply (`command_timeout_secs`; RFC 5321 4.5.3.2: 5 minutes).
    #[serde(rename = "command_timeout_secs", with = "Secs")]
    pub command_timeout: Duration,
    /// Time to send the data and get the final reply (`data_timeout_secs`; RFC 5321
    /// 4.5.3.2.6: 10 minutes).
    #[serde(rename = "data_timeout_secs", with = "Secs")]
    pub data_timeout: Duration,
    /// Seconds a site whose hosts all refused connections is left alone before the
    /// next attempt (its mail is deferred meanwhile).
    pub site_backoff_secs: u64,
    /// First retry after a temporary failure, in seconds; each retry doubles it.
    pub retry_first_secs: u64,
    /// Longest interval between retries, in seconds.
    pub retry_max_secs: u64,
    /// Share of random jitter on each retry interval (0.1 = ±10%).
    pub retry_jitter: f64,
    /// Seconds after which undelivered mail expires (dead-lettered).
    pub max_queue_age_secs: u64,
    /// Messages claimed from the queue and not yet resolved, at most.
    pub max_in_flight: usize,
    /// Share of `max_in_flight` that `bulk` mail may hold (0 < share <= 1); the rest
    /// is kept for `high` and `normal` mail, claimed first.
    pub bulk_share: f64,
    /// Messages claimed from the queue at once.
    pub claim_batch: usize,
    /// Milliseconds between queue polls when there is nothing to do.
    pub poll_interval_ms: u64,
    /// HTTP providers (`[relay.providers.NAME]`, `kind = "ses"` or `"sendgrid"`) that
    /// routing rules can send through.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Which transports carry which mail (`[[relay.routing]]`, first match wins); no
    /// match: direct SMTP.
    pub routing: Vec<RoutingRule>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            smarthost: None,
            routes: BTreeMap::new(),
            nameservers: Vec::new(),
            mx_port: 25,
            helo_name: String::new(),
            tls: TlsPolicy::Opportunistic,
            tls_ca_file: None,
            shaping_file: None,
            max_recipients_per_transaction: 100,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            site_backoff_secs: 60,
            retry_first_secs: 300,
            retry_max_secs: 3600,
            retry_jitter: 0.1,
            max_queue_age_secs: 5 * 24 * 3600,
            max_in_flight: 10_000,
            bulk_share: 0.8,
            claim_batch: 512,
            poll_interval_ms: 100,
            providers: BTreeMap::new(),
            routing: Vec::new(),
        }
    }
}

/// A static route for one domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `host:port` to deliver the domain's mail to.
    pub host: String,
    /// TLS policy for this route; default: `relay.tls`.
    #[serde(default)]
    pub tls: Option<TlsPolicy>,
}

impl RelayConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            (
                "relay.max_recipients_per_transaction",
                self.max_recipients_per_transaction,
            ),
            ("relay.max_in_flight", self.max_in_flight),
            ("relay.claim_batch", self.claim_batch),
        ] {
            if value == 0 {
                return Err(format!("{key} must be above 0"));
            }
        }
        if !(self.bulk_share > 0.0 && self.bulk_share <= 1.0) {
            return Err("relay.bulk_share must be above 0 and at most 1".into());
        }
        if !(0.0..1.0).contains(&self.retry_jitter) {
            return Err("relay.retry_jitter must be in [0, 1)".into());
        }
        if self.retry_first_secs == 0 || self.retry_max_secs < self.retry_first_secs {
            return Err(
                "relay.retry_first_secs must be above 0 and at most relay.retry_max_secs".into(),
            );
        }
        if let Some(host) = &self.smarthost {
            crate::route::parse_host_port(host, 25).map_err(|e| format!("relay.smarthost: {e}"))?;
        }
        for (domain, route) in &self.routes {
            crate::route::parse_host_port(&route.host, 25)
                .map_err(|e| format!("relay.routes.{domain:?}: {e}"))?;
        }
        crate::provider::validate(&self.providers, &self.routing)
    }
}
