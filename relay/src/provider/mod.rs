//! Delivery through HTTP providers beside direct SMTP: Amazon SES v2 (`SendEmail` with
//! the raw message, SigV4-signed) and SendGrid v3 (`mail/send`, the message mapped to
//! its JSON). Each configured provider (`[relay.providers.NAME]`) runs as a
//! [`ProviderLane`], a [`crate::transport::Transport`] with its own quota under
//! adaptive control, a circuit breaker and a pause; [`routing`] picks a message's
//! transports per domain, tenant and email type.
//!
//! How answers map: an accepted request delivers its recipients under the provider's
//! message id; a throttle (HTTP 429, SES `TooManyRequests`/`LimitExceeded`) or a
//! failure (5xx, network, timeout) defers them (to the route's next transport first);
//! a refusal of the message (SES `MessageRejected`, 400, 413) bounces them; an account
//! that cannot send (SES `AccountSuspended`/`SendingPaused`, refused credentials)
//! pauses the provider without bouncing anything.

mod circuit;
mod lane;
pub mod routing;
mod sendgrid;
pub mod sendgrid_json;
mod ses;
mod slots;

use std::collections::BTreeMap;
use std::time::Duration;

use postroad_queue::{EnhancedCode, MessageId, Metadata, Response};
use serde::{Deserialize, Serialize};

use crate::shaping::Rate;

pub use lane::{ProviderLane, ProviderView};

/// A `Duration` written as whole seconds in the config file (`*_secs` keys).
type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Ses,
    Sendgrid,
}

/// `[relay.providers.NAME]`: one provider account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `ses` or `sendgrid`.
    pub kind: ProviderKind,
    /// Base URL of the API; default `https://email.{region}.amazonaws.com` (SES),
    /// `https://api.sendgrid.com` (SendGrid).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// SES: the AWS region (`us-east-1`), also the SigV4 signing region.
    #[serde(default)]
    pub region: Option<String>,
    /// SES: credentials; when absent, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// (and `AWS_SESSION_TOKEN`) from the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// SES: the configuration set whose event destinations publish this mail's events.
    #[serde(default)]
    pub configuration_set: Option<String>,
    /// SendGrid: the API key (sent as a bearer token).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The account's sending quota, recipients per time (`"14/s"`, `"50,000/d"`);
    /// throttles lower the rate below it, success raises it back. None: no limit.
    #[serde(default)]
    pub max_message_rate: Option<Rate>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Time for one request, answer included (`timeout_secs`).
    #[serde(default = "default_timeout", rename = "timeout_secs", with = "Secs")]
    pub timeout: Duration,
    /// Consecutive failed requests (5xx, network) that open the circuit.
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit skips the provider before one probe
    /// (`circuit_open_secs`).
    #[serde(
        default = "default_circuit_open",
        rename = "circuit_open_secs",
        with = "Secs"
    )]
    pub circuit_open: Duration,
    /// How long the provider rests when its account cannot send (suspended, paused,
    /// credentials refused) before it is tried again (`pause_secs`).
    #[serde(default = "default_pause", rename = "pause_secs", with = "Secs")]
    pub pause: Duration,
}

fn default_concurrency() -> usize {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open() -> Duration {
    Duration::from_secs(30)
}
fn default_pause() -> Duration {
    Duration::from_secs(300)
}

impl ProviderConfig {
    /// A provider of `kind` with every other key at its default.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            configuration_set: None,
            api_key: None,
            max_message_rate: None,
            max_concurrency: default_concurrency(),
            timeout: default_timeout(),
            circuit_failures: default_circuit_failures(),
            circuit_open: default_circuit_open(),
            pause: default_pause(),
        }
    }

    /// Rejects what cannot work, naming the key (`relay.providers.NAME.KEY`).
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let key = |k: &str| format!("relay.providers.{name}.{k}");
        if name.is_empty()
            || name == routing::SMTP
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "relay.providers.{name:?}: a provider name is lowercase letters, digits, '-' and '_', and not {:?}",
                routing::SMTP
            ));
        }
        if self.max_concurrency == 0 {
            return Err(format!("{} must be above 0", key("max_concurrency")));
        }
        if self.timeout.is_zero() {
            return Err(format!("{} must be above 0", key("timeout_secs")));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(format!(
                "{}: {endpoint:?} is not an http(s) URL",
                key("endpoint")
            ));
        }
        let stray = |keys: &[(&str, bool)]| {
            keys.iter()
                .find(|(_, set)| *set)
                .map(|(k, _)| format!("{} is not a {:?} provider key", key(k), self.kind))
        };
        match self.kind {
            ProviderKind::Ses => {
                if self.region.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{} is required for SES", key("region")));
                }
                if let Some(e) = stray(&[("api_key", self.api_key.is_some())]) {
                    return Err(e);
                }
                if self.access_key_id.is_some() != self.secret_access_key.is_some() {
                    return Err(format!(
                        "{} and {} go together",
                        key("access_key_id"),
                        key("secret_access_key")
                    ));
                }
            }
            ProviderKind::Sendgrid => {
                if self.api_key.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{} is required for SendGrid", key("api_key")));
                }
                if let Some(e) = stray(&[
                    ("region", self.region.is_some()),
                    ("access_key_id", self.access_key_id.is_some()),
                    ("secret_access_key", self.secret_access_key.is_some()),
                    ("session_token", self.session_token.is_some()),
                    ("configuration_set", self.configuration_set.is_some()),
                ]) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Checks every provider and the routing rules against them.
pub fn validate(
    providers: &BTreeMap<String, ProviderConfig>,
    rules: &[routing::RoutingRule],
) -> Result<(), String> {
    for (name, provider) in providers {
        provider.validate(name)?;
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(providers)
            .map_err(|e| format!("relay.routing[{i}]: {e}"))?;
    }
    Ok(())
}

/// Sets each provider up as `serve` would (credentials included) without sending
/// anything: what `postroad check-config` runs.
pub fn check(providers: &BTreeMap<String, ProviderConfig>) -> Result<(), String> {
    let http = reqwest::Client::new();
    for (name, provider) in providers {
        Api::new(provider, http.clone()).map_err(|e| format!("relay.providers.{name}: {e}"))?;
    }
    Ok(())
}

impl ProviderConfig {
    /// The config with its secrets (secret key, session token, API key) replaced, for
    /// printing.
    pub fn redacted(&self) -> Self {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "(set; not shown)".to_string());
        Self {
            secret_access_key: hide(&self.secret_access_key),
            session_token: hide(&self.session_token),
            api_key: hide(&self.api_key),
            ..self.clone()
        }
    }
}

/// What one request carries: one message for some of its recipients.
pub struct Submission<'a> {
    pub id: MessageId,
    pub recipients: Vec<&'a str>,
    /// The message as queued (DKIM-signed when signing is on).
    pub body: &'a [u8],
    pub meta: &'a Metadata,
}

/// The provider took the message for every recipient of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// What its webhooks will call the message (SES `MessageId`, SendGrid
    /// `X-Message-Id`); none when its answer gave none.
    pub message_id: Option<String>,
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Try again (elsewhere first). `throttle`: the provider asked to slow down, for
    /// `hold` when it said how long; otherwise it failed (a circuit breaker failure).
    Temporary {
        response: Response,
        throttle: bool,
        hold: Option<Duration>,
    },
    /// This message will not be taken: bounce it.
    Permanent(Response),
    /// The account cannot send now: the provider rests, the mail waits or goes
    /// elsewhere.
    Paused(Response),
}

impl Refusal {
    pub fn failure(text: String) -> Self {
        Refusal::Temporary {
            response: Response::local(EnhancedCode::new(4, 4, 1), text),
            throttle: false,
            hold: None,
        }
    }

    pub fn throttle(text: String, hold: Option<Duration>) -> Self {
        Refusal::Temporary {
            response: Response::local(EnhancedCode::new(4, 7, 0), text),
            throttle: true,
            hold,
        }
    }

    pub fn permanent(enhanced: (u8, u16, u16), text: String) -> Self {
        let (class, subject, detail) = enhanced;
        Refusal::Permanent(Response::local(
            EnhancedCode::new(class, subject, detail),
            text,
        ))
    }

    pub fn paused(text: String) -> Self {
        Refusal::Paused(Response::local(EnhancedCode::new(4, 7, 0), text))
    }
}

/// The URL of `path` under `endpoint`, and its `host[:port]` (what events and logs
/// name the provider's server by).
fn api_url(endpoint: &str, path: &str) -> Result<(reqwest::Url, String), String> {
    let url = reqwest::Url::parse(&format!("{}{path}", endpoint.trim_end_matches('/')))
        .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return Err(format!("endpoint {endpoint:?} has no host")),
    };
    Ok((url, host))
}

/// Most of an error answer's body that is kept for the reply text.
const ERROR_TEXT_MAX: usize = 300;

/// An error answer's text, short and on one line.
fn short(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(ERROR_TEXT_MAX) {
        Some((at, _)) => format!("{}...", &trimmed[..at]),
        None => trimmed.to_string(),
    }
}

/// Most of an answer's body that is read.
const ANSWER_MAX: usize = 64 * 1024;

/// The answer's body, up to [`ANSWER_MAX`] bytes (the rest is not needed to judge it).
async fn read_limited(mut answer: reqwest::Response) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let room = ANSWER_MAX - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= ANSWER_MAX {
                    return Ok(body);
                }
            }
            Ok(None) => return Ok(body),
            // The status is known; a body cut short still tells what it can.
            Err(e) if !body.is_empty() => {
                tracing::debug!(error = %cause(&e), "provider answer cut short");
                return Ok(body);
            }
            Err(e) => {
                return Err(Refusal::failure(format!(
                    "reading the answer failed: {}",
                    cause(&e)
                )));
            }
        }
    }
}

/// `Retry-After` in seconds, when given.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An HTTP client error with its causes (reqwest's own text hides them).
fn cause(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The API a lane speaks.
enum Api {
    Ses(ses::Ses),
    SendGrid(sendgrid::SendGrid),
}

impl Api {
    fn new(config: &ProviderConfig, http: reqwest::Client) -> Result<Self, String> {
        Ok(match config.kind {
            ProviderKind::Ses => Api::Ses(ses::Ses::new(config, http)?),
            ProviderKind::Sendgrid => Api::SendGrid(sendgrid::SendGrid::new(config, http)?),
        })
    }

    fn host(&self) -> &str {
        match self {
            Api::Ses(api) => api.host(),
            Api::SendGrid(api) => api.host(),
        }
    }

    fn max_recipients(&self) -> usize {
        match self {
            Api::Ses(_) => ses::MAX_RECIPIENTS,
            Api::SendGrid(_) => sendgrid_json::MAX_RECIPIENTS,
        }
    }

    async fn send(&self, submission: &Submission<'_>) -> Result<Accepted, Refusal> {
        match self {
            Api::Ses(api) => api.send(submission).await,
            Api::SendGrid(api) => api.send(submission).await,
        }
    }
}
