//! The envelope: everything about a message except its body.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Metadata;

/// A time-ordered message id (UUIDv7), shown as 32 lowercase hex digits.
///
/// Ids sort by creation time, so the spool's keys stay append-mostly.
///
/// Serialized as its 32-hex-digit text in human-readable formats (JSON, TOML) and as 16
/// raw bytes in binary ones (postcard).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new id for a message accepted now.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_u128(v: u128) -> Self {
        Self(Uuid::from_u128(v))
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.simple(), f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.as_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = std::borrow::Cow::<str>::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(|b| Self(Uuid::from_bytes(b)))
        }
    }
}

/// DSN `RET=` (RFC 3461): what a bounce should carry of the original message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DsnRet {
    Full,
    Headers,
}

/// DSN `NOTIFY=` (RFC 3461) for one recipient. All false means the client gave none
/// (the default: failure, and maybe delay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    pub never: bool,
}

/// One envelope recipient, with its DSN parameters and how many delivery attempts it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub notify: Notify,
    /// DSN `ORCPT=` address (the `rfc822;` address type is implied and not stored).
    pub orcpt: Option<String>,
    pub attempts: u32,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            notify: Notify::default(),
            orcpt: None,
            attempts: 0,
        }
    }

    /// The domain part of the address, lowercased (empty when there is none).
    pub fn domain(&self) -> String {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Everything about one message except its body. A message sent to many recipients is
/// stored once, with all of them here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: MessageId,
    /// The reverse path; empty for the null sender (`MAIL FROM:<>`, bounces).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// The authenticated SMTP identity (or API key owner), if any.
    pub auth_identity: Option<String>,
    pub client_ip: IpAddr,
    /// What the client said in EHLO/HELO.
    pub helo: String,
    /// Unix milliseconds at which the message was accepted.
    pub received_at_ms: u64,
    /// Unix milliseconds at which an operator requeued it from the dead-letter store;
    /// its maximum queue age then counts from here.
    pub requeued_at_ms: Option<u64>,
    /// Size in bytes of the stored body (including the `Received:` header we added).
    pub size: u64,
    /// The body has 8-bit content (`BODY=8BITMIME`).
    pub body_8bit: bool,
    /// The envelope needs SMTPUTF8 (`SMTPUTF8` on MAIL).
    pub smtputf8: bool,
    pub dsn_ret: Option<DsnRet>,
    pub dsn_envid: Option<String>,
    /// User id, email type, tenant, campaign, variant, priority and tags.
    pub meta: Metadata,
}

impl Envelope {
    /// Unix milliseconds from which the maximum queue age counts: acceptance, or the
    /// last requeue from the dead-letter store.
    pub fn age_base_ms(&self) -> u64 {
        self.requeued_at_ms.unwrap_or(self.received_at_ms)
    }
}

impl Envelope {
    /// An envelope for a message accepted now, with a new id; every optional field is
    /// empty and `size` is 0 (set it to the stored body's length).
    pub fn new(sender: impl Into<String>, recipients: Vec<Recipient>, client_ip: IpAddr) -> Self {
        Self {
            id: MessageId::new(),
            sender: sender.into(),
            recipients,
            auth_identity: None,
            client_ip,
            helo: String::new(),
            received_at_ms: crate::unix_ms(std::time::SystemTime::now()),
            requeued_at_ms: None,
            size: 0,
            body_8bit: false,
            smtputf8: false,
            dsn_ret: None,
            dsn_envid: None,
            meta: Metadata::default(),
        }
    }
}
