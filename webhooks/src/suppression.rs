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
//! As an [`EventSink`] the list grows by itself from the events: a hard bounce or a
//! complaint adds a lasting entry, an unsubscribe one too, and a bounce that speaks of
//! the mailbox rather than of the sender (full, suspended) one that expires.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use postroad_queue::{DeliveryEvent, EventKind, EventSink, SinkError, unix_ms};
use postroad_redis_link::RedisLink;
use serde::{Deserialize, Serialize};

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

/// How often expired entries are forgotten.
const TIDY_EVERY: Duration = Duration::from_secs(3600);
/// How long the store keeps the row of an entry that expired or was removed: every
/// process reads the change long before (a process started later loads the whole list).
const KEEP_GONE: Duration = Duration::from_secs(7 * 86_400);

/// (tenant, address) → when it stops holding (`u64::MAX`: never) and why.
type Cache = HashMap<(String, String), (u64, Reason)>;

/// The list as every part of a process uses it.
pub struct Suppressions {
    store: Arc<dyn SuppressionStore>,
    redis: Option<RedisLink>,
    config: SuppressionConfig,
    cache: RwLock<Cache>,
    /// Where the next refresh asks from.
    watermark: std::sync::Mutex<u64>,
}

/// The Redis hash of a tenant's entries (field: address, value: [`redis_value`]).
fn redis_key(tenant: &str) -> String {
    format!("postroad:suppress:{tenant}")
}

/// `<expiry in Unix ms, 0: never>:<reason>`.
fn redis_value(entry: &Entry) -> String {
    format!(
        "{}:{}",
        entry.expires_at_ms.unwrap_or(0),
        entry.reason.as_str()
    )
}

/// The reason a [`redis_value`] gives if it holds at `now`.
fn parse_redis_value(value: &str, now: u64) -> Option<Reason> {
    let (until, reason) = value.split_once(':')?;
    let until: u64 = until.parse().ok()?;
    (until == 0 || until > now).then(|| Reason::parse(reason))?
}

impl Suppressions {
    /// Loads the whole list from the store.
    pub async fn load(
        store: Arc<dyn SuppressionStore>,
        redis: Option<RedisLink>,
        config: SuppressionConfig,
    ) -> Result<Arc<Self>, StoreFailure> {
        let list = Arc::new(Self::unloaded(store, redis, config));
        list.refresh().await?;
        Ok(list)
    }

    /// The list without its memory, for changing it (the command line): checks see
    /// Redis and what this value itself added only.
    pub fn unloaded(
        store: Arc<dyn SuppressionStore>,
        redis: Option<RedisLink>,
        config: SuppressionConfig,
    ) -> Self {
        Self {
            store,
            redis,
            config,
            cache: RwLock::new(HashMap::new()),
            watermark: std::sync::Mutex::new(0),
        }
    }

    pub fn config(&self) -> &SuppressionConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn SuppressionStore> {
        &self.store
    }

    /// Reads what changed in the store since the last time into the cache.
    pub async fn refresh(&self) -> Result<usize, StoreFailure> {
        let since = *lock(&self.watermark);
        let (changes, next) = self.store.changes(since).await?;
        let n = changes.len();
        let now = now_ms();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            match change {
                Change::Set(e) => {
                    let until = e.expires_at_ms.unwrap_or(u64::MAX);
                    if until > now {
                        cache.insert((e.tenant, e.address), (until, e.reason));
                    } else {
                        cache.remove(&(e.tenant, e.address));
                    }
                }
                Change::Removed { tenant, address } => {
                    cache.remove(&(tenant, address));
                }
            }
        }
        drop(cache);
        *lock(&self.watermark) = next;
        Ok(n)
    }

    /// Refreshes every `refresh_secs` until `stop`; every hour also forgets expired
    /// entries (memory and store: rows that expired or were removed a week ago).
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every = Duration::from_secs(self.config.refresh_secs);
        let mut tidy = tokio::time::interval(TIDY_EVERY);
        tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!("cannot refresh the suppression list: {e}");
                    }
                }
                _ = tidy.tick() => self.tidy().await,
            }
        }
    }

    async fn tidy(&self) {
        let now = now_ms();
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (until, _)| *until > now);
        let before = now.saturating_sub(KEEP_GONE.as_millis() as u64);
        match self.store.purge(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired and removed suppressions"),
            Err(e) => tracing::warn!("cannot purge expired suppressions: {e}"),
        }
    }

    /// Which of `addresses` are suppressed for `tenant` now, and why: the in-memory
    /// list, and with Redis the shared hash (one round trip for all of them; Redis
    /// unreachable, the memory alone answers).
    pub async fn check(&self, tenant: Option<&str>, addresses: &[&str]) -> Vec<Option<Reason>> {
        let tenant = tenant.unwrap_or("");
        let now = now_ms();
        let mut out: Vec<Option<Reason>> = {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            let mut key = (tenant.to_string(), String::new());
            addresses
                .iter()
                .map(|a| {
                    key.1.clear();
                    key.1.push_str(a);
                    key.1.make_ascii_lowercase();
                    cache
                        .get(&key)
                        .and_then(|(until, reason)| (*until > now).then_some(*reason))
                })
                .collect()
        };
        if let Some(redis) = &self.redis
            && out.iter().any(Option::is_none)
        {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(redis_key(tenant));
            for a in addresses {
                pipe.arg(a.to_ascii_lowercase());
            }
            match redis.query::<(Vec<Option<String>>,)>(&pipe).await {
                Ok((values,)) => {
                    for (s, v) in out.iter_mut().zip(values) {
                        if s.is_none() {
                            *s = v.and_then(|v| parse_redis_value(&v, now));
                        }
                    }
                }
                Err(e) => tracing::debug!("suppression hash unavailable: {e}"),
            }
        }
        out
    }

    /// Whether one address is suppressed, and why, from memory only (for SMTP's RCPT).
    pub fn check_local(&self, tenant: Option<&str>, address: &str) -> Option<Reason> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(
                tenant.unwrap_or("").to_string(),
                address.to_ascii_lowercase(),
            ))
            .and_then(|(until, reason)| (*until > now_ms()).then_some(*reason))
    }

    /// Adds entries: the store first (durable), then this process's memory and Redis.
    pub async fn add(&self, entries: Vec<Entry>) -> Result<(), StoreFailure> {
        if entries.is_empty() {
            return Ok(());
        }
        self.store.upsert(&entries).await?;
        {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            for e in &entries {
                cache.insert(
                    (e.tenant.clone(), e.address.clone()),
                    (e.expires_at_ms.unwrap_or(u64::MAX), e.reason),
                );
            }
        }
        if let Some(redis) = &self.redis {
            let mut pipe = redis::pipe();
            for e in &entries {
                pipe.cmd("HSET")
                    .arg(redis_key(&e.tenant))
                    .arg(&e.address)
                    .arg(redis_value(e))
                    .ignore();
            }
            if let Err(e) = redis.query::<()>(&pipe).await {
                tracing::warn!(
                    "cannot write the suppression hash (the store has the entries): {e}"
                );
            }
        }
        Ok(())
    }

    /// Removes an entry everywhere; whether there was one.
    pub async fn remove(&self, tenant: &str, address: &str) -> Result<bool, StoreFailure> {
        let address = address.to_ascii_lowercase();
        let removed = self.store.remove(tenant, &address).await?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), address.clone()));
        if let Some(redis) = &self.redis {
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL")
                .arg(redis_key(tenant))
                .arg(&address)
                .ignore();
            if let Err(e) = redis.query::<()>(&pipe).await {
                tracing::warn!("cannot remove {address} from the suppression hash: {e}");
            }
        }
        Ok(removed)
    }
}

/// The entry an event makes, if any: complaints and unsubscribes for good, bounces
/// that say the address does not exist for good, bounces that say the mailbox is full
/// or suspended for `soft_bounce_secs`; none for bounces about the sender (blocked,
/// policy, content, rate), whose next mail may well go.
pub fn entry_for(event: &DeliveryEvent, soft_bounce_secs: u64) -> Option<Entry> {
    let (reason, source, expires) = match event.kind {
        EventKind::Complained => (Reason::Complaint, "complaint", None),
        EventKind::Unsubscribed => (Reason::Unsubscribe, "unsubscribe", None),
        EventKind::Bounced => match event.reason.as_deref()? {
            "userunknown" | "hostunknown" | "hasmoved" | "notaccept" => {
                (Reason::HardBounce, "bounce", None)
            }
            "mailboxfull" | "suspend" => (
                Reason::SoftBounce,
                "bounce",
                Some(event.at_ms + soft_bounce_secs * 1000),
            ),
            _ => return None,
        },
        _ => return None,
    };
    let mut detail = match &event.reply {
        Some(reply) => reply.to_string(),
        None => event.reason.clone().unwrap_or_default(),
    };
    if let Some((at, _)) = detail.char_indices().nth(MAX_DETAIL) {
        detail.truncate(at);
    }
    Some(Entry {
        tenant: event.meta.tenant.clone().unwrap_or_default(),
        address: event.recipient.trim().to_ascii_lowercase(),
        reason,
        source: source.into(),
        detail,
        created_at_ms: event.at_ms,
        expires_at_ms: expires,
    })
}

/// The list as an event sink: what the events say goes on it (with
/// `suppression.from_events`).
pub struct SuppressionSink(pub Arc<Suppressions>);

#[async_trait]
impl EventSink for SuppressionSink {
    fn name(&self) -> &'static str {
        "suppression"
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        let mut entries: Vec<Entry> = events
            .iter()
            .filter_map(|e| entry_for(e, self.0.config.soft_bounce_secs))
            // A soft bounce never shortens an entry already there (a hard bounce's).
            .filter(|e| {
                e.expires_at_ms.is_none()
                    || matches!(
                        self.0.check_local(Some(&e.tenant), &e.address),
                        None | Some(Reason::SoftBounce)
                    )
            })
            .collect();
        // One entry per address: the last event's (a complaint after a bounce, say).
        let mut seen = std::collections::HashSet::new();
        entries.reverse();
        entries.retain(|e| seen.insert((e.tenant.clone(), e.address.clone())));
        entries.reverse();
        let n = entries.len();
        self.0
            .add(entries)
            .await
            .map_err(|e| SinkError(format!("cannot store suppressions: {e}")))?;
        if n > 0 {
            metrics::counter!("postroad_suppressions_added_total").increment(n as u64);
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use postroad_queue::{Envelope, Recipient, Reply};

    use super::*;

    fn event(kind: EventKind, reason: Option<&str>) -> DeliveryEvent {
        let mut envelope = Envelope::new(
            "app@src.test",
            vec![Recipient::new("Ann@Example.COM")],
            std::net::IpAddr::from([127, 0, 0, 1]),
        );
        envelope.meta.tenant = Some("acme".into());
        DeliveryEvent {
            reason: reason.map(String::from),
            reply: Some(Reply::owned(550, None, "5.1.1 no such user").into()),
            ..DeliveryEvent::new(kind, &envelope, &envelope.recipients[0], 1_000)
        }
    }

    #[test]
    fn events_list_what_they_say_about_the_address() {
        let hard = entry_for(&event(EventKind::Bounced, Some("userunknown")), 60).unwrap();
        assert_eq!(
            (hard.tenant.as_str(), hard.address.as_str(), hard.reason),
            ("acme", "ann@example.com", Reason::HardBounce)
        );
        assert_eq!((hard.expires_at_ms, hard.source.as_str()), (None, "bounce"));
        assert!(hard.detail.contains("no such user"), "{}", hard.detail);

        let soft = entry_for(&event(EventKind::Bounced, Some("mailboxfull")), 60).unwrap();
        assert_eq!(
            (soft.reason, soft.expires_at_ms),
            (Reason::SoftBounce, Some(61_000))
        );
        assert!(soft.active(60_999) && !soft.active(61_000));

        let complaint = entry_for(&event(EventKind::Complained, Some("abuse")), 60).unwrap();
        assert_eq!(
            (complaint.reason, complaint.source.as_str()),
            (Reason::Complaint, "complaint")
        );
        let gone = entry_for(&event(EventKind::Unsubscribed, None), 60).unwrap();
        assert_eq!(gone.reason, Reason::Unsubscribe);

        // About the sender, not the address; or not a failure at all.
        for (kind, reason) in [
            (EventKind::Bounced, Some("blocked")),
            (EventKind::Bounced, Some("policyviolation")),
            (EventKind::Bounced, None),
            (EventKind::Deferred, Some("userunknown")),
            (EventKind::Delivered, None),
            (EventKind::Opened, None),
        ] {
            assert_eq!(
                entry_for(&event(kind, reason), 60),
                None,
                "{kind:?} {reason:?}"
            );
        }
    }

    #[test]
    fn addresses_and_redis_values_are_read_strictly() {
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
        assert_eq!(parse_redis_value("0:complaint", 5), Some(Reason::Complaint));
        assert_eq!(
            parse_redis_value("10:soft-bounce", 5),
            Some(Reason::SoftBounce)
        );
        assert_eq!(parse_redis_value("10:soft-bounce", 10), None);
        for bad in ["", "0", "x:manual", "0:nonsense"] {
            assert_eq!(parse_redis_value(bad, 5), None, "{bad:?}");
        }
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
}
