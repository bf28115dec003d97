//! Provider webhooks in: `[webhooks.ses]` (SNS notifications of SES events) and
//! `[webhooks.sendgrid]` (SendGrid's signed event webhook). A delivery is checked
//! (signature, trust, age), mapped into events ([`crate::provider_events`]) and
//! recorded durably in the queue before it is answered; the event sinks (history,
//! metrics, ...) take it from there in the background. What cannot be recorded now is
//! answered 503, and the provider sends it again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postroad_queue::{Queue, unix_ms};
use serde::{Deserialize, Serialize};

use crate::provider_events::{self, Mapped};
use crate::sendgrid::PublicKey;
use crate::sns::{SnsMessage, Trust, Verifier};

/// `[webhooks]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub ses: SesConfig,
    pub sendgrid: SendGridConfig,
    /// `[webhooks.delivery]`: the tenants' own endpoints.
    pub delivery: crate::customer::DeliveryConfig,
}

/// `[webhooks.ses]`: `POST /webhooks/ses` for an SNS topic of SES events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SesConfig {
    pub enabled: bool,
    /// Topic ARNs accepted; empty: any (whose signature verifies).
    pub topics: Vec<String>,
    /// Hosts signing certificates are fetched from (HTTPS; `*` is one label).
    pub certificate_hosts: Vec<String>,
    /// Certificates known in advance, by their `SigningCertURL`: PEM files.
    pub certificates: BTreeMap<String, PathBuf>,
    /// Confirm a subscription by visiting its `SubscribeURL` (on a certificate host).
    pub confirm_subscriptions: bool,
}

impl Default for SesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            topics: Vec::new(),
            certificate_hosts: vec![
                "sns.*.amazonaws.com".into(),
                "sns.*.amazonaws.com.cn".into(),
            ],
            certificates: BTreeMap::new(),
            confirm_subscriptions: true,
        }
    }
}

/// `[webhooks.sendgrid]`: `POST /webhooks/sendgrid` for SendGrid's signed event
/// webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendGridConfig {
    /// The verification key from SendGrid's settings (base64); empty: route off.
    pub public_key: String,
    /// How far the signature's timestamp may be from now.
    pub max_age_secs: u64,
}

impl Default for SendGridConfig {
    fn default() -> Self {
        Self {
            public_key: String::new(),
            max_age_secs: 600,
        }
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.delivery.validate()?;
        if !self.sendgrid.public_key.is_empty() {
            PublicKey::from_base64(&self.sendgrid.public_key)
                .map_err(|e| format!("webhooks.sendgrid.public_key: {e}"))?;
        }
        if self.sendgrid.max_age_secs == 0 {
            return Err("webhooks.sendgrid.max_age_secs must be above 0".into());
        }
        if self.ses.enabled
            && self.ses.certificate_hosts.is_empty()
            && self.ses.certificates.is_empty()
        {
            return Err(
                "webhooks.ses: no certificate_hosts and no certificates: no signature could verify"
                    .into(),
            );
        }
        Ok(())
    }
}

/// How a delivery was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Recorded (200): events written, and what was left aside.
    Recorded {
        events: usize,
        unmatched: usize,
        ignored: usize,
    },
    /// An SNS subscription confirmed, or an unsubscription noted (200).
    Confirmed,
    /// Not trusted: bad or missing signature, unknown topic, stale (403).
    Refused(String),
    /// Not what the provider sends (400).
    Malformed(String),
    /// Cannot be recorded now; the provider should send it again (503).
    Unavailable(String),
    /// The route is not configured (404).
    Off,
}

/// The provider routes' work.
pub struct ProviderHooks {
    ses: Option<(Verifier, bool)>,
    sendgrid: Option<(PublicKey, Duration)>,
    queue: Arc<dyn Queue>,
    http: reqwest::Client,
}

impl ProviderHooks {
    /// Reads the certificate files; `Err` names what is wrong.
    pub fn new(config: &WebhooksConfig, queue: Arc<dyn Queue>) -> Result<Self, String> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot set up the webhooks' HTTP client: {e}"))?;
        let ses = if config.ses.enabled {
            let mut certificates = std::collections::HashMap::new();
            for (url, path) in &config.ses.certificates {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "webhooks.ses.certificates: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                certificates.insert(url.clone(), pem);
            }
            let trust = Trust {
                topics: config.ses.topics.clone(),
                certificates,
                hosts: config.ses.certificate_hosts.clone(),
            };
            let verifier = Verifier::new(trust, http.clone())
                .map_err(|e| format!("webhooks.ses.certificates: {e}"))?;
            Some((verifier, config.ses.confirm_subscriptions))
        } else {
            None
        };
        let sendgrid = if config.sendgrid.public_key.is_empty() {
            None
        } else {
            let key = PublicKey::from_base64(&config.sendgrid.public_key)
                .map_err(|e| format!("webhooks.sendgrid.public_key: {e}"))?;
            Some((key, Duration::from_secs(config.sendgrid.max_age_secs)))
        };
        Ok(Self {
            ses,
            sendgrid,
            queue,
            http,
        })
    }

    /// `POST /webhooks/ses`.
    pub async fn ses(&self, body: &[u8]) -> Answer {
        let Some((verifier, confirm)) = &self.ses else {
            return Answer::Off;
        };
        let message = match SnsMessage::parse(body) {
            Ok(m) => m,
            Err(e) => return Answer::Malformed(e.to_string()),
        };
        if let Err(e) = verifier.verify(&message).await {
            tracing::warn!(topic = %message.topic_arn, "ses webhook refused: {e}");
            count("ses", "refused");
            return match e {
                crate::sns::SnsError::Certificate(_) => Answer::Unavailable(e.to_string()),
                _ => Answer::Refused(e.to_string()),
            };
        }
        match message.kind.as_str() {
            "SubscriptionConfirmation" => {
                let url = message.subscribe_url.as_deref().unwrap_or("");
                if !*confirm || !verifier.allowed_url(url) {
                    tracing::warn!(topic = %message.topic_arn, %url, "SNS subscription not confirmed (webhooks.ses.confirm_subscriptions, certificate_hosts)");
                    return Answer::Confirmed;
                }
                match self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                {
                    Ok(_) => {
                        tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
                        count("ses", "confirmed");
                        Answer::Confirmed
                    }
                    Err(e) => Answer::Unavailable(format!("cannot confirm the subscription: {e}")),
                }
            }
            "UnsubscribeConfirmation" => {
                tracing::warn!(topic = %message.topic_arn, "SNS says this endpoint was unsubscribed");
                Answer::Confirmed
            }
            _ => {
                let mapped =
                    provider_events::from_ses(&message.message, &message.message_id, now_ms());
                self.record("ses", mapped).await
            }
        }
    }

    /// `POST /webhooks/sendgrid`, with its two signature headers.
    pub async fn sendgrid(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let Some((key, max_age)) = &self.sendgrid else {
            return Answer::Off;
        };
        let now = now_ms() / 1000;
        if let Err(e) = key.verify(timestamp, signature, body, now, *max_age) {
            tracing::warn!("sendgrid webhook refused: {e}");
            count("sendgrid", "refused");
            return Answer::Refused(e.to_string());
        }
        self.record("sendgrid", provider_events::from_sendgrid(body, now_ms()))
            .await
    }

    async fn record(&self, source: &'static str, mapped: Result<Mapped, String>) -> Answer {
        let mapped = match mapped {
            Ok(m) => m,
            Err(e) => return Answer::Malformed(e),
        };
        let events = mapped.events.len();
        if events > 0
            && let Err(e) = self.queue.record(mapped.events).await
        {
            tracing::error!(source, "cannot record webhook events: {e}");
            return Answer::Unavailable(e.to_string());
        }
        count(source, "recorded");
        Answer::Recorded {
            events,
            unmatched: mapped.unmatched,
            ignored: mapped.ignored,
        }
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn count(source: &'static str, result: &'static str) {
    metrics::counter!("postroad_provider_webhooks_total", "provider" => source, "result" => result)
        .increment(1);
}
