//! `[http]`: the HTTP API listener and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Whether `postroad serve` (ingress role) starts the HTTP API.
    pub enabled: bool,
    /// Address of the listener: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub listen: SocketAddr,
    /// Largest request body, in bytes; larger gets `413`.
    pub max_body_bytes: usize,
    /// Most messages in one `POST /v1/messages/batch`.
    pub max_batch: usize,
    /// Most rows in one recipient list (`POST /v1/lists`, or a campaign with its
    /// recipients); a list is read as a stream, so `max_body_bytes` does not apply.
    pub max_list_rows: u64,
    /// Requests handled at once; more get `503` with `Retry-After` at once, never a
    /// queue without bound.
    pub max_concurrent_requests: usize,
    /// How long a client has to send its whole request body (`request_timeout_secs`);
    /// slower gets `408`. The durable write that follows is not cut short.
    #[serde(rename = "request_timeout_secs", with = "Secs")]
    pub request_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered (`idempotency_ttl_secs`).
    #[serde(rename = "idempotency_ttl_secs", with = "Secs")]
    pub idempotency_ttl: Duration,
    /// Sender used when neither the request nor its template names one; empty: the
    /// request must name one.
    pub default_from: String,
    /// Serve HTTPS with the certificate of `[tls]` (HTTP/1.1 and HTTP/2 by ALPN)
    /// instead of plain HTTP and h2c.
    pub tls: bool,
    /// `[[http.ses_keys]]`: access keys that may sign requests to the Amazon SES v2
    /// compatible route; none: that route answers every request 403.
    pub ses_keys: Vec<SesKey>,
}

/// An access key for `POST /v2/email/outbound-emails` (SigV4, signing name `ses`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesKey {
    /// What clients put in their credentials as `aws_access_key_id`.
    pub access_key_id: String,
    /// The secret itself; or give `secret_access_key_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_access_key: String,
    /// A file holding the secret (a mounted Kubernetes Secret); read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// The one region the key may sign for (`us-east-1`); none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Tenant of the mail sent with this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl std::fmt::Debug for SesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SesKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("region", &self.region)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl SesKey {
    /// The secret, from the config or its file.
    pub fn secret(&self) -> Result<String, String> {
        match &self.secret_access_key_file {
            None => Ok(self.secret_access_key.clone()),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    format!(
                        "http.ses_keys {}: cannot read secret_access_key_file {}: {e}",
                        self.access_key_id,
                        path.display()
                    )
                }),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch: 1000,
            max_list_rows: 10_000_000,
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            default_from: String::new(),
            tls: false,
            ses_keys: Vec::new(),
        }
    }
}

impl ApiConfig {
    /// Rejects values the API cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("http.max_body_bytes", self.max_body_bytes),
            ("http.max_batch", self.max_batch),
            ("http.max_concurrent_requests", self.max_concurrent_requests),
        ] {
            if value == 0 {
                return Err(format!("{key} must be above 0"));
            }
        }
        if self.max_list_rows == 0 {
            return Err("http.max_list_rows must be above 0".into());
        }
        if self.request_timeout.is_zero() {
            return Err("http.request_timeout_secs must be above 0".into());
        }
        if self.idempotency_ttl.is_zero() {
            return Err("http.idempotency_ttl_secs must be above 0".into());
        }
        if !self.default_from.is_empty() {
            smtp_wire::parse_mailbox(&self.default_from)
                .map_err(|e| format!("http.default_from {e}"))?;
        }
        let mut ids = std::collections::HashSet::new();
        for key in &self.ses_keys {
            let id = &key.access_key_id;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "http.ses_keys: access_key_id {id:?} must be letters and digits"
                ));
            }
            if !ids.insert(id) {
                return Err(format!("http.ses_keys: access_key_id {id} is given twice"));
            }
            if key.secret_access_key.is_empty() == key.secret_access_key_file.is_none() {
                return Err(format!(
                    "http.ses_keys {id}: give exactly one of secret_access_key and secret_access_key_file"
                ));
            }
            if let Some(tenant) = &key.tenant {
                postroad_queue::metadata::token("tenant", tenant)
                    .map_err(|e| format!("http.ses_keys {id}: {e}"))?;
            }
        }
        Ok(())
    }
}
