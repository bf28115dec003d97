//! `[http]`: the HTTP API listener and its limits.

use std::net::SocketAddr;
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch: 1000,
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            default_from: String::new(),
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
        Ok(())
    }
}
