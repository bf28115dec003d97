//! The operator's queue control: an admin HTTP endpoint inside `postroad serve`
//! ([`server`]) and the `postroad queue ...` / `postroad dlq ...` commands that talk to
//! it ([`client`], [`cli`]).
//!
//! The endpoint speaks JSON over plain HTTP, by default on `127.0.0.1:8025`. Every
//! request carries `Authorization: Bearer <token>`; the token is `admin.token` from the
//! config or, when that is empty, a random one generated at first start into
//! `<data_dir>/admin.token` (mode 0600), which the CLI reads from the same place.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/queue/stats` | [`QueueStats`](postroad_queue::QueueStats) |
//! | `GET /v1/queue/messages?limit=N` | [`MessageList`] (oldest first) |
//! | `GET /v1/queue/messages/{id}[?raw=1]` | [`MessageDetail`] |
//! | `POST /v1/queue/flush` | [`Flushed`] |
//! | `GET /v1/dlq?limit=N` | [`DeadLetterList`] (oldest first) |
//! | `GET /v1/dlq/{id}[?raw=1]` | [`DeadLetterDetail`] |
//! | `POST /v1/dlq/{id}/requeue` | [`Requeued`] |
//! | `DELETE /v1/dlq/{id}` | [`Purged`] |
//!
//! Errors are `{"error": "..."}` with 400 (bad id or query), 401 (missing or wrong
//! token), 404 (unknown id or path), 405, 500 (storage) or 503 (shutting down).

pub mod cli;
pub mod client;
pub mod health;
pub mod server;
mod sites;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use postroad_queue::{DeadLetter, Envelope, MessageId, Queue};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use server::serve_admin;

/// File name of the generated token inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// Where the admin endpoint listens by default (and where the CLI looks for it).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);
const DEFAULT_PORT: u16 = 8025;

/// Most envelopes or dead letters one list request returns (a larger `limit` is capped).
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Envelopes or dead letters a list request returns without `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// Shortest token accepted in `admin.token`.
pub const MIN_TOKEN_LEN: usize = 16;

/// The `[admin]` section of the configuration: the operator's HTTP endpoint for queue
/// and dead-letter control (`postroad queue ...`, `postroad dlq ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin HTTP endpoint. Default `127.0.0.1:8025`. An address other
    /// than loopback is refused unless `token` is set explicitly.
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry (at least 16 visible ASCII
    /// characters). Empty (the default): a random 32-byte hex token is generated at first
    /// start into `<data_dir>/admin.token` (mode 0600) and reused after; the CLI reads
    /// it from there.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            token: String::new(),
        }
    }
}

impl AdminConfig {
    /// Checks the section on its own (call it from the config's validation).
    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_empty() {
            if !self.listen.ip().is_loopback() {
                return Err(format!(
                    "admin.listen = {} is not a loopback address: set admin.token explicitly \
                     to expose the admin endpoint beyond this machine",
                    self.listen
                ));
            }
            return Ok(());
        }
        check_token(&self.token).map_err(|e| format!("admin.token {e}"))
    }
}

/// Why a token cannot be used (empty = usable).
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("must be at least {MIN_TOKEN_LEN} characters long"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("may hold only visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

/// The token the admin endpoint requires: `config.token` when set; otherwise the one in
/// `<data_dir>/admin.token`, generated (32 random bytes as hex, file mode 0600) when
/// the file does not exist yet.
pub fn load_or_create_token(config: &AdminConfig, data_dir: &Path) -> anyhow::Result<String> {
    if !config.token.is_empty() {
        check_token(&config.token).map_err(|e| anyhow::anyhow!("admin.token {e}"))?;
        return Ok(config.token.clone());
    }
    crate::secret_file::load_or_create(&ADMIN_TOKEN, data_dir)
}

/// Reads a token file: `None` when it does not exist.
pub(crate) fn read_token_file(path: &Path) -> anyhow::Result<Option<String>> {
    crate::secret_file::read(&ADMIN_TOKEN, path)
}

/// The generated admin token's file.
const ADMIN_TOKEN: crate::secret_file::SecretFile = crate::secret_file::SecretFile {
    name: TOKEN_FILE,
    what: "admin token",
    check: check_token,
};

/// Starts the admin endpoint for `postroad serve`: loads or creates the token, binds
/// `config.listen` and serves until `shutdown` is cancelled. The returned task ends once
/// the endpoint has stopped (in-flight requests finished).
pub async fn start(
    config: &AdminConfig,
    data_dir: &Path,
    queue: Arc<dyn Queue>,
    relay: Option<Arc<dyn RelayControl>>,
    health: Arc<health::Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    config.validate().map_err(anyhow::Error::msg)?;
    let token = load_or_create_token(config, data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the admin endpoint (admin.listen)",
                config.listen
            )
        })?;
    let address = listener.local_addr().unwrap_or(config.listen);
    if config.token.is_empty() {
        tracing::info!(%address, token_file = %data_dir.join(TOKEN_FILE).display(), "admin endpoint listening");
    } else {
        tracing::info!(%address, "admin endpoint listening (token from admin.token)");
    }
    Ok(tokio::spawn(serve_admin(
        listener, token, queue, relay, health, shutdown,
    )))
}

/// What the admin endpoint asks of this process's relay, when it runs one.
pub trait RelayControl: Send + Sync {
    /// Every site delivered to since start, with its limits and state.
    fn sites(&self) -> Vec<postroad_relay::SiteView>;
    /// The configured HTTP providers, with their state.
    fn providers(&self) -> Vec<postroad_relay::ProviderView>;
    /// Reads the shaping file again and applies it; its summary, or why the running
    /// file stays.
    fn reload_shaping(&self) -> Result<String, String>;
}

/// `GET /v1/queue/sites`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteList {
    pub sites: Vec<postroad_relay::SiteView>,
}

/// `GET /v1/queue/providers`.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderList {
    pub providers: Vec<postroad_relay::ProviderView>,
}

/// `POST /v1/shaping/reload`: the file now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapingReloaded {
    pub summary: String,
}

/// `GET /v1/queue/messages`: queued envelopes, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageList {
    pub messages: Vec<Envelope>,
}

/// `GET /v1/dlq`: dead letters, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
}

/// How a message body is given in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// UTF-8 text; bytes that are not UTF-8 were replaced by U+FFFD (lossy).
    Text,
    /// Standard base64 of the exact bytes (`?raw=1`).
    Base64,
}

/// `GET /v1/queue/messages/{id}`: a queued message with its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetail {
    pub envelope: Envelope,
    pub body: String,
    pub body_encoding: BodyEncoding,
}

/// `GET /v1/dlq/{id}`: a dead letter (envelope, `at_ms`, `reason`) with its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub dead_letter: DeadLetter,
    pub body: String,
    pub body_encoding: BodyEncoding,
}

/// `POST /v1/queue/flush`: how many deferred messages were made due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flushed {
    pub flushed: u64,
}

/// `POST /v1/dlq/{id}/requeue`: the id the message is queued under again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeued {
    pub requeued_as: MessageId,
}

/// `DELETE /v1/dlq/{id}`: the dead letter deleted for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub purged: MessageId,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
