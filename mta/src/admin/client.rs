//! A blocking client of the admin endpoint, for `postroad queue ...` and `postroad dlq
//! ...`: plain HTTP (the endpoint is meant for loopback), one request per call, every
//! failure a one-line [`anyhow`] message.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use postroad_queue::{DeadLetter, Envelope, MessageId};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    BodyEncoding, DeadLetterDetail, DeadLetterList, ErrorBody, Flushed, MessageDetail, MessageList,
    Purged, Requeued,
};

/// Where the CLI looks for the admin endpoint by default.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8025";

/// Largest answer read (a list of many big envelopes, a message body in base64).
const MAX_ANSWER_BYTES: u64 = 512 * 1024 * 1024;

/// The queue's counts, as `GET /v1/queue/stats` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub queued: u64,
    pub ready: u64,
    pub deferred: u64,
    pub claimed: u64,
    pub dead_letters: u64,
}

/// An answer other than 2xx from the endpoint: its status and `error` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusError {
    pub status: u16,
    pub message: String,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status == 401 {
            write!(
                f,
                "401: {}: pass --token or POSTROAD_ADMIN_TOKEN, or --data-dir with the \
                 server's data directory (for its admin.token)",
                self.message
            )
        } else {
            write!(f, "{}: {}", self.status, self.message)
        }
    }
}

impl std::error::Error for StatusError {}

/// One admin API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    Stats,
    List { limit: usize },
    Inspect { id: &'a str, raw: bool },
    Flush,
    DeadLetters { limit: usize },
    InspectDeadLetter { id: &'a str, raw: bool },
    Requeue { id: &'a str },
    Purge { id: &'a str },
    Sites,
    Providers,
    ReloadShaping,
}

impl Call<'_> {
    /// The HTTP method and the path with its query.
    pub fn method_and_path(&self) -> (&'static str, String) {
        let raw = |raw: bool| if raw { "?raw=1" } else { "" };
        match self {
            Call::Stats => ("GET", "/v1/queue/stats".into()),
            Call::List { limit } => ("GET", format!("/v1/queue/messages?limit={limit}")),
            Call::Inspect { id, raw: r } => ("GET", format!("/v1/queue/messages/{id}{}", raw(*r))),
            Call::Flush => ("POST", "/v1/queue/flush".into()),
            Call::DeadLetters { limit } => ("GET", format!("/v1/dlq?limit={limit}")),
            Call::InspectDeadLetter { id, raw: r } => ("GET", format!("/v1/dlq/{id}{}", raw(*r))),
            Call::Requeue { id } => ("POST", format!("/v1/dlq/{id}/requeue")),
            Call::Purge { id } => ("DELETE", format!("/v1/dlq/{id}")),
            Call::Sites => ("GET", "/v1/queue/sites".into()),
            Call::Providers => ("GET", "/v1/queue/providers".into()),
            Call::ReloadShaping => ("POST", "/v1/shaping/reload".into()),
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            Call::Inspect { id, .. }
            | Call::InspectDeadLetter { id, .. }
            | Call::Requeue { id }
            | Call::Purge { id } => Some(id),
            _ => None,
        }
    }
}

/// A connection-less client of one admin endpoint.
pub struct AdminClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// A client of the endpoint at `base_url` (`http://host:port`), sending `token`.
    pub fn new(base_url: &str, token: &str) -> anyhow::Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let Some(rest) = base.strip_prefix("http://") else {
            anyhow::bail!(
                "invalid admin URL {base_url:?}: expected http://HOST:PORT (the admin endpoint \
                 speaks plain HTTP)"
            );
        };
        anyhow::ensure!(
            !rest.is_empty() && !rest.contains(['/', '?', '#']),
            "invalid admin URL {base_url:?}: expected http://HOST:PORT"
        );
        anyhow::ensure!(!token.is_empty(), "the admin token is empty");
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token may hold only visible ASCII characters"
        );
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Loopback: never through a proxy named in the environment.
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .user_agent(concat!("postroad/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            base,
            authorization: format!("Bearer {token}"),
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// The endpoint's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Makes `call` and returns the JSON text of a 2xx answer.
    pub fn call_text(&self, call: &Call<'_>) -> anyhow::Result<String> {
        if let Some(id) = call.id() {
            anyhow::ensure!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "invalid message id {id:?}: expected 32 hex digits"
            );
        }
        let (method, path) = call.method_and_path();
        let url = format!("{}{path}", self.base);
        let auth = self.authorization.as_str();
        let sent = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_empty(),
            "DELETE" => self.agent.delete(&url).header("Authorization", auth).call(),
            _ => self.agent.get(&url).header("Authorization", auth).call(),
        };
        let mut response = sent.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| anyhow::anyhow!("cannot read the answer of {}: {e}", self.base))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                let text = text.trim();
                if text.is_empty() {
                    "no error message".into()
                } else {
                    text.chars().take(200).collect()
                }
            });
        Err(StatusError { status, message }.into())
    }

    /// Makes `call` and decodes its answer.
    fn call<T: DeserializeOwned>(&self, call: &Call<'_>) -> anyhow::Result<T> {
        let text = self.call_text(call)?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "unexpected answer from the admin endpoint at {} (is it a postroad of the same \
                 version?)",
                self.base
            )
        })
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the admin endpoint at {}: is postroad serve running? ({e})",
            self.base
        )
    }

    pub fn stats(&self) -> anyhow::Result<Stats> {
        self.call(&Call::Stats)
    }

    /// Up to `limit` queued envelopes, oldest first.
    pub fn list(&self, limit: usize) -> anyhow::Result<Vec<Envelope>> {
        Ok(self.call::<MessageList>(&Call::List { limit })?.messages)
    }

    /// A queued message and its body (the exact bytes when `raw`, else lossy UTF-8).
    pub fn inspect(&self, id: &str, raw: bool) -> anyhow::Result<(Envelope, Vec<u8>)> {
        let detail: MessageDetail = self.call(&Call::Inspect { id, raw })?;
        let body = decode_body(detail.body, detail.body_encoding)?;
        Ok((detail.envelope, body))
    }

    /// Makes every deferred message due now; returns how many there were.
    pub fn flush(&self) -> anyhow::Result<u64> {
        Ok(self.call::<Flushed>(&Call::Flush)?.flushed)
    }

    /// Up to `limit` dead letters, oldest first.
    pub fn dead_letters(&self, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(self
            .call::<DeadLetterList>(&Call::DeadLetters { limit })?
            .dead_letters)
    }

    /// A dead letter and its body (the exact bytes when `raw`, else lossy UTF-8).
    pub fn inspect_dead_letter(
        &self,
        id: &str,
        raw: bool,
    ) -> anyhow::Result<(DeadLetter, Vec<u8>)> {
        let detail: DeadLetterDetail = self.call(&Call::InspectDeadLetter { id, raw })?;
        let body = decode_body(detail.body, detail.body_encoding)?;
        Ok((detail.dead_letter, body))
    }

    /// Queues a dead letter again; returns the id it is queued under.
    pub fn requeue(&self, id: &str) -> anyhow::Result<MessageId> {
        Ok(self.call::<Requeued>(&Call::Requeue { id })?.requeued_as)
    }

    /// Deletes a dead letter for good.
    pub fn purge(&self, id: &str) -> anyhow::Result<MessageId> {
        Ok(self.call::<Purged>(&Call::Purge { id })?.purged)
    }

    /// The relay's sites, as JSON objects (see `postroad_relay::SiteView`).
    pub fn sites(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let list: serde_json::Value = self.call(&Call::Sites)?;
        match list.get("sites") {
            Some(serde_json::Value::Array(sites)) => Ok(sites.clone()),
            _ => anyhow::bail!("unexpected answer from the admin endpoint at {}", self.base),
        }
    }

    /// The relay's providers, as JSON objects (see `postroad_relay::ProviderView`).
    pub fn providers(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let list: serde_json::Value = self.call(&Call::Providers)?;
        match list.get("providers") {
            Some(serde_json::Value::Array(providers)) => Ok(providers.clone()),
            _ => anyhow::bail!("unexpected answer from the admin endpoint at {}", self.base),
        }
    }

    /// Reloads the shaping file; the summary of the file now in force.
    pub fn reload_shaping(&self) -> anyhow::Result<String> {
        Ok(self
            .call::<super::ShapingReloaded>(&Call::ReloadShaping)?
            .summary)
    }
}

fn decode_body(body: String, encoding: BodyEncoding) -> anyhow::Result<Vec<u8>> {
    match encoding {
        BodyEncoding::Text => Ok(body.into_bytes()),
        BodyEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(body)
            .context("the admin endpoint sent a body that is not valid base64"),
    }
}
