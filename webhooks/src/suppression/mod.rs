//! The suppression list: addresses mail must not go to, per tenant, with why (a hard
//! bounce, a complaint, an unsubscribe, an operator), where from, and since when; a
//! soft bounce's entry expires. The durable copy is a [`SuppressionStore`] (the
//! application database); every process keeps the whole list in memory, refreshed
//! from the store every few seconds, so a check costs no round trip; with Redis each
//! entry is also written to a shared hash per tenant that every process reads in one
//! round trip per batch of recipients, so an entry made on one node holds on every
//! node at once. An address is suppressed when either says so: Redis losing its data
//! never lets mail through.
//!
//! As an event sink ([`SuppressionSink`]) the list grows by itself from the events: a hard bounce or a
//! complaint adds a lasting entry, an unsubscribe one too, and a bounce that speaks of
//! the mailbox rather than of the sender (full, suspended) one that expires.

mod list;
mod sink;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use list::Suppressions;
pub use sink::{SuppressionSink, entry_for};

/// Why an address is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The address does not exist (or its domain takes no mail).
    HardBounce,
    /// The mailbox is full or suspended: for a while.
    SoftBounce,
    /// The recipient reported mail as spam.
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
    /// An operator or application put it there.
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard-bounce",
            Reason::SoftBounce => "soft-bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Reason::HardBounce,
            Reason::SoftBounce,
            Reason::Complaint,
            Reason::Unsubscribe,
            Reason::Manual,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The tenant whose list it is on; empty for mail without a tenant.
    pub tenant: String,
    /// Lowercased.
    pub address: String,
    pub reason: Reason,
    /// Where it came from: `bounce`, `complaint`, `unsubscribe`, `api`, `cli`,
    /// `import`, ...
    pub source: String,
    /// What said so (the bounce's reply, the feedback type), at most 500 characters.
    pub detail: String,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// When it stops holding (soft bounces); `None`: never.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// Whether it holds at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// Most characters of an entry's detail.
pub const MAX_DETAIL: usize = 500;
/// Longest address (RFC 5321's path limit).
pub const MAX_ADDRESS: usize = 320;

/// An address as the list keys it (trimmed, lowercased), or why it cannot be one.
pub fn list_address(text: &str) -> Result<String, String> {
    let address = text.trim();
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return Err(format!("an address of 1 to {MAX_ADDRESS} bytes"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an address has no spaces or control characters".into());
    }
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            Ok(address.to_lowercase())
        }
        _ => Err("an address is local-part@domain".into()),
    }
}

/// A field of an entry given by hand (the API, the command line) that cannot be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Address,
    Reason,
    Detail,
    ExpiresAt,
}

/// An entry given by hand, checked: `address` as [`list_address`] takes it, `reason`
/// by name (`None`: `manual`), `detail` at most [`MAX_DETAIL`] characters, `expires_at`
/// RFC 3339 (`None`: never). What is wrong, with the field and why.
pub fn entry_by_hand(
    tenant: &str,
    address: &str,
    reason: Option<&str>,
    detail: String,
    expires_at: Option<&str>,
    source: &str,
    now_ms: u64,
) -> Result<Entry, (Field, String)> {
    let address = list_address(address).map_err(|e| (Field::Address, e))?;
    let reason = match reason {
        None => Reason::Manual,
        Some(text) => Reason::parse(text).ok_or_else(|| {
            (
                Field::Reason,
                format!(
                    "{text:?}: one of hard-bounce, soft-bounce, complaint, unsubscribe, manual"
                ),
            )
        })?,
    };
    if detail.chars().count() > MAX_DETAIL {
        return Err((Field::Detail, format!("at most {MAX_DETAIL} characters")));
    }
    let expires_at_ms = match expires_at {
        None => None,
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                (
                    Field::ExpiresAt,
                    format!("{text:?}: not an RFC 3339 time ({e})"),
                )
            })?;
            let ms = u64::try_from(at.timestamp_millis())
                .map_err(|_| (Field::ExpiresAt, format!("{text:?}: before 1970")))?;
            Some(ms)
        }
    };
    Ok(Entry {
        tenant: tenant.to_string(),
        address,
        reason,
        source: source.to_string(),
        detail,
        created_at_ms: now_ms,
        expires_at_ms,
    })
}

/// One change of the list, as the store reports it for refreshing caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(Entry),
    Removed { tenant: String, address: String },
}

/// Why the store could not do it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreFailure(pub String);

/// The durable copy.
#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Adds or replaces entries.
    async fn upsert(&self, entries: &[Entry]) -> Result<(), StoreFailure>;
    /// Removes an entry; whether there was one.
    async fn remove(&self, tenant: &str, address: &str) -> Result<bool, StoreFailure>;
    async fn get(&self, tenant: &str, address: &str) -> Result<Option<Entry>, StoreFailure>;
    /// A tenant's entries in address order, after `after`, at most `limit`.
    async fn page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreFailure>;
    /// What changed at or after `since_ms` (Unix ms of the store's own clock of the
    /// change), and the time to ask from next.
    async fn changes(&self, since_ms: u64) -> Result<(Vec<Change>, u64), StoreFailure>;
    /// Deletes the rows of entries that expired, and of removals, before `before_ms`;
    /// how many.
    async fn purge(&self, before_ms: u64) -> Result<u64, StoreFailure>;
}

/// `[suppression]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// Keep the list from the events (hard bounces, complaints, unsubscribes, soft
    /// bounces) and hold mail to listed addresses. Off: the list is kept by hand only,
    /// and still holds.
    pub from_events: bool,
    /// How long a soft bounce keeps an address off.
    pub soft_bounce_secs: u64,
    /// How often each process reloads what changed in the store.
    pub refresh_secs: u64,
    /// SMTP: refuse a listed recipient at RCPT (`550 5.7.1`) instead of taking the
    /// mail and reporting it `suppressed`.
    pub reject_at_rcpt: bool,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        Self {
            from_events: true,
            soft_bounce_secs: 86_400,
            refresh_secs: 5,
            reject_at_rcpt: false,
        }
    }
}

impl SuppressionConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.soft_bounce_secs == 0 {
            return Err("suppression.soft_bounce_secs must be above 0".into());
        }
        if self.refresh_secs == 0 {
            return Err("suppression.refresh_secs must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_reasons_are_read_strictly() {
        assert_eq!(
            list_address(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "a b@example.com",
            "a\r@x.test",
        ] {
            assert!(list_address(bad).is_err(), "{bad:?}");
        }
        assert!(list_address(&format!("{}@x.test", "a".repeat(320))).is_err());
        for reason in [
            Reason::HardBounce,
            Reason::SoftBounce,
            Reason::Complaint,
            Reason::Unsubscribe,
            Reason::Manual,
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn entries_by_hand_name_their_bad_field() {
        let entry = |reason, detail: &str, expires| {
            entry_by_hand(
                "acme",
                "Ann@x.test",
                reason,
                detail.into(),
                expires,
                "api",
                7,
            )
        };
        let ok = entry(Some("complaint"), "FBL", Some("2999-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            (
                ok.address.as_str(),
                ok.reason,
                ok.source.as_str(),
                ok.created_at_ms
            ),
            ("ann@x.test", Reason::Complaint, "api", 7)
        );
        assert_eq!(ok.expires_at_ms, Some(32_472_144_000_000));
        assert_eq!(entry(None, "", None).unwrap().reason, Reason::Manual);
        let field = |r: Result<Entry, (Field, String)>| r.unwrap_err().0;
        assert_eq!(field(entry(Some("grumpy"), "", None)), Field::Reason);
        assert_eq!(field(entry(None, &"d".repeat(501), None)), Field::Detail);
        assert_eq!(field(entry(None, "", Some("tomorrow"))), Field::ExpiresAt);
        assert_eq!(
            field(entry(None, "", Some("1969-01-01T00:00:00Z"))),
            Field::ExpiresAt
        );
        let bad = entry_by_hand("", "nobody", None, String::new(), None, "cli", 0);
        assert_eq!(field(bad), Field::Address);
    }
}
