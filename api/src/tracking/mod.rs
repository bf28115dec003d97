//! Open and click tracking and one-click unsubscribe (RFC 8058): the links a message
//! carries (made here when it is built) and what their requests record
//! ([`crate::routes::tracking`]).
//!
//! `[tracking]`: with `base_url` set, messages that ask for it get an open pixel and
//! rewritten links, and bulk messages (and those that ask) a `List-Unsubscribe` header
//! with a one-click URL. Every link is a token signed with `secret`: nothing is stored
//! per message, any node of a cluster with the same key answers it.

pub mod links;
pub mod machine;
pub mod token;
pub mod unsubscribe;

use std::time::Duration;

use serde::{Deserialize, Serialize};

type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

use postroad_queue::{MessageId, Metadata};
pub use token::{Claims, Purpose, Signer, TokenError};

/// `[tracking]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Where readers reach the HTTP API from outside (`https://t.example.com`): the
    /// start of every tracking and unsubscribe link. Empty: no tracking, no
    /// `List-Unsubscribe`.
    pub base_url: String,
    /// The key of the links' tokens, at least 16 characters; empty: generated into
    /// `<data_dir>/tracking.key` at first start. Every node of a cluster needs the same
    /// (`POSTROAD__TRACKING__SECRET`).
    pub secret: String,
    /// Opens and clicks this soon after the message was queued are a machine's (a
    /// gateway's link scanner, a privacy proxy), recorded with reason `machine`.
    #[serde(rename = "machine_window_secs", with = "Secs")]
    pub machine_window: Duration,
    /// The mailbox, at the first `[bounces]` domain, of `List-Unsubscribe`'s `mailto:`
    /// (`unsubscribe@bounces.example.com?subject=TOKEN`): mail to it with the token
    /// in its subject unsubscribes like the one-click URL. Empty, or no bounce domain:
    /// the header carries the URL only.
    pub unsubscribe_mailbox: String,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            secret: String::new(),
            machine_window: Duration::from_secs(2),
            unsubscribe_mailbox: "unsubscribe".into(),
        }
    }
}

impl TrackingConfig {
    /// Rejects what cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.base_url.is_empty() {
            let url = url::Url::parse(&self.base_url)
                .map_err(|e| format!("tracking.base_url {:?}: {e}", self.base_url))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host().is_none()
                || url.query().is_some()
            {
                return Err(format!(
                    "tracking.base_url {:?} must be an http(s) URL without a query",
                    self.base_url
                ));
            }
        }
        let mailbox = &self.unsubscribe_mailbox;
        if !mailbox.is_empty()
            && (mailbox.len() > 64
                || mailbox.starts_with('.')
                || mailbox.ends_with('.')
                || mailbox.contains("..")
                || !mailbox
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        {
            return Err(format!(
                "tracking.unsubscribe_mailbox {mailbox:?} must be a plain local part (letters, digits, '.', '-', '_'; at most 64)"
            ));
        }
        if !self.secret.is_empty() && self.secret.len() < 16 {
            return Err("tracking.secret must be at least 16 characters long".into());
        }
        Ok(())
    }

    /// The config with its secret hidden, for printing.
    pub fn redacted(&self) -> Self {
        Self {
            secret: if self.secret.is_empty() {
                String::new()
            } else {
                "(set; not shown)".into()
            },
            ..self.clone()
        }
    }
}

/// Makes and reads the links of one key and base URL.
#[derive(Debug)]
pub struct Tracking {
    base: String,
    signer: Signer,
    machine_window: Duration,
    /// Where `List-Unsubscribe`'s `mailto:` goes, if anywhere.
    unsubscribe_address: Option<String>,
}

/// What a message asks of tracking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub opens: bool,
    pub clicks: bool,
    pub unsubscribe: bool,
}

impl Tracking {
    /// `config` must be valid and have a base URL; `key` is its secret (or the
    /// generated one).
    pub fn new(config: &TrackingConfig, key: &str) -> Self {
        Self {
            base: config.base_url.trim_end_matches('/').to_string(),
            signer: Signer::new(key.as_bytes()),
            machine_window: config.machine_window,
            unsubscribe_address: None,
        }
    }

    /// Adds a `mailto:` of `address` (which Postroad receives mail for) to every
    /// `List-Unsubscribe`.
    pub fn with_unsubscribe_address(mut self, address: String) -> Self {
        self.unsubscribe_address = Some(address);
        self
    }

    /// Where `List-Unsubscribe`'s `mailto:` goes, if anywhere.
    pub fn unsubscribe_address(&self) -> Option<&str> {
        self.unsubscribe_address.as_deref()
    }

    pub fn machine_window(&self) -> Duration {
        self.machine_window
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.signer.verify(token)
    }

    fn url(&self, path: &str, claims: &Claims) -> Option<String> {
        Some(self.link(path, &self.signer.sign(claims)?))
    }

    fn link(&self, path: &str, token: &str) -> String {
        format!("{}/{path}/{token}", self.base)
    }

    /// The message's links for `recipient`: the HTML with its pixel and wrapped links
    /// (as asked), and the `List-Unsubscribe` value; `None` when a token cannot carry
    /// a field (one over 65,535 bytes).
    pub fn dress(
        &self,
        message: MessageId,
        sender: &str,
        recipient: &str,
        meta: &Metadata,
        html: Option<&str>,
        wanted: Wanted,
    ) -> Option<Dressed> {
        let claims = |purpose, link| Claims {
            purpose,
            message,
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            meta: Metadata {
                user_id: meta.user_id,
                email_type: meta.email_type.clone(),
                tenant: meta.tenant.clone(),
                campaign: meta.campaign.clone(),
                variant: meta.variant.clone(),
                ..Metadata::default()
            },
            link,
        };
        let html = match html {
            Some(html) if wanted.opens || wanted.clicks => {
                let pixel = if wanted.opens {
                    let url = self.url("t/o", &claims(Purpose::Open, None))?;
                    Some(format!(
                        "<img src=\"{url}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none;border:0\">"
                    ))
                } else {
                    None
                };
                let mut failed = false;
                let decorated = links::decorate(
                    html,
                    |index, target| {
                        if !wanted.clicks {
                            return None;
                        }
                        let url = self.url(
                            "t/c",
                            &claims(Purpose::Click, Some((index, target.to_string()))),
                        );
                        // A target too long for a token stays as it is.
                        failed |= url.is_none() && target.len() <= token::MAX_URL;
                        url
                    },
                    pixel.as_deref(),
                );
                if failed {
                    return None;
                }
                Some(decorated.html)
            }
            Some(html) => Some(html.to_string()),
            None => None,
        };
        let list_unsubscribe = if wanted.unsubscribe {
            let token = self.signer.sign(&claims(Purpose::Unsubscribe, None))?;
            let url = format!("<{}>", self.link("u", &token));
            Some(match &self.unsubscribe_address {
                // Folded: each URI on its own line.
                Some(address) => format!("{url},\r\n <mailto:{address}?subject={token}>"),
                None => url,
            })
        } else {
            None
        };
        Some(Dressed {
            html,
            list_unsubscribe,
        })
    }
}

/// A message's tracked parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dressed {
    pub html: Option<String>,
    /// `List-Unsubscribe`'s value (the one-click URL in angle brackets, then the
    /// `mailto:` when there is an unsubscribe address); sent with
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    pub list_unsubscribe: Option<String>,
}
