//! The list as a process holds it: memory refreshed from the store, and with Redis a
//! hash per tenant shared by every node.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use postroad_queue::unix_ms;
use postroad_redis_link::RedisLink;

use super::{Change, Entry, Reason, StoreFailure, SuppressionConfig, SuppressionStore};

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

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_values_are_read_strictly() {
        assert_eq!(parse_redis_value("0:complaint", 5), Some(Reason::Complaint));
        assert_eq!(
            parse_redis_value("10:soft-bounce", 5),
            Some(Reason::SoftBounce)
        );
        assert_eq!(parse_redis_value("10:soft-bounce", 10), None);
        for bad in ["", "0", "x:manual", "0:nonsense"] {
            assert_eq!(parse_redis_value(bad, 5), None, "{bad:?}");
        }
    }
}
