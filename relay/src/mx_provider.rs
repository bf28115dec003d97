//! What the sites of one shaping provider (`[provider.NAME]`, recognised by MX suffix)
//! hold together, whatever MX set each of them delivers to: the provider's aggregate
//! message rate (`provider_max_message_rate`, shared through Redis when configured),
//! and a suspension of the whole provider by a reply rule with `scope = "provider"`.
//! Each site still runs under its own shape (limits per site) and adaptive control.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::pace::Pacer;
use crate::shaping::{Rate, Shaping};
use crate::shared_rate::SharedRate;

/// One provider's shared state.
pub struct MxProvider {
    name: String,
    rate: Mutex<Option<Rate>>,
    pacer: Pacer,
    shared: Option<SharedRate>,
    suspended: Mutex<Option<(Instant, String)>>,
}

impl MxProvider {
    fn new(name: &str, rate: Option<Rate>, redis: Option<&postroad_redis_link::RedisLink>) -> Self {
        Self {
            name: name.to_string(),
            rate: Mutex::new(rate),
            pacer: Pacer::new(rate.map(|r| r.per_sec())),
            // Its own key space: an HTTP provider may have the same name.
            shared: redis.map(|link| SharedRate::new(link.clone(), &format!("mx-provider:{name}"))),
            suspended: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn set_rate(&self, rate: Option<Rate>) {
        *lock(&self.rate) = rate;
        self.pacer.set_rate(rate.map(|r| r.per_sec()));
    }

    /// Waits for a send slot under the provider's aggregate rate (none: at once).
    pub async fn acquire(&self) {
        let Some(rate) = *lock(&self.rate) else {
            return;
        };
        self.pacer.acquire().await;
        if let Some(shared) = &self.shared {
            shared.acquire(rate.per_sec()).await;
        }
    }

    /// Holds every site of the provider until `until` (a later end wins).
    pub fn suspend(&self, until: Instant, why: String) {
        let mut suspended = lock(&self.suspended);
        if suspended.as_ref().is_none_or(|(at, _)| *at < until) {
            tracing::warn!(provider = %self.name, %why, for_secs = until.saturating_duration_since(Instant::now()).as_secs(), "provider suspended");
            *suspended = Some((until, why));
        }
    }

    /// The suspension in force: until when and why.
    pub fn suspended(&self, now: Instant) -> Option<(Instant, String)> {
        let mut suspended = lock(&self.suspended);
        if suspended.as_ref().is_some_and(|(until, _)| *until <= now) {
            *suspended = None;
        }
        suspended.clone()
    }
}

/// Every provider's shared state, made on first use and kept across reloads (a
/// suspension in force outlives a reload; the rate follows the file).
pub struct MxProviders {
    map: Mutex<HashMap<String, Arc<MxProvider>>>,
    redis: Option<postroad_redis_link::RedisLink>,
}

impl MxProviders {
    pub fn new(redis: Option<postroad_redis_link::RedisLink>) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            redis,
        }
    }

    /// The state of `name` under `shaping`.
    pub fn get(&self, name: &str, shaping: &Shaping) -> Arc<MxProvider> {
        lock(&self.map)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(MxProvider::new(
                    name,
                    shaping.provider_rate(name),
                    self.redis.as_ref(),
                ))
            })
            .clone()
    }

    /// Applies a reloaded file's aggregate rates.
    pub fn reshape(&self, shaping: &Shaping) {
        for (name, provider) in lock(&self.map).iter() {
            provider.set_rate(shaping.provider_rate(name));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FILE: &str = r#"
[provider.gmail]
match = [{ MXSuffix = ".google.com" }]
max_message_rate = "50/s"
provider_max_message_rate = "10/s"

[provider.yahoo]
match = [{ MXSuffix = ".yahoodns.net" }]
"#;

    #[tokio::test(start_paused = true)]
    async fn the_sites_of_a_provider_share_its_rate_and_its_suspension() {
        let shaping = Shaping::parse(FILE, "test.toml").unwrap();
        let providers = MxProviders::new(None);
        let gmail = providers.get("gmail", &shaping);
        assert!(Arc::ptr_eq(&gmail, &providers.get("gmail", &shaping)));
        // Ten slots a second for every site of the provider together.
        let start = tokio::time::Instant::now();
        let other_site = providers.get("gmail", &shaping);
        for _ in 0..10 {
            gmail.acquire().await;
            other_site.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1900));
        // No aggregate rate: no wait.
        let yahoo = providers.get("yahoo", &shaping);
        let at = tokio::time::Instant::now();
        for _ in 0..100 {
            yahoo.acquire().await;
        }
        assert_eq!(at.elapsed(), Duration::ZERO);
        // A reload that drops the rate frees it.
        let reloaded = Shaping::parse(
            "[provider.gmail]\nmatch = [{ MXSuffix = \".google.com\" }]\n",
            "b.toml",
        )
        .unwrap();
        providers.reshape(&reloaded);
        let at = tokio::time::Instant::now();
        for _ in 0..100 {
            gmail.acquire().await;
        }
        assert_eq!(at.elapsed(), Duration::ZERO);

        let now = Instant::now();
        gmail.suspend(now + Duration::from_secs(60), "rule x".into());
        gmail.suspend(now + Duration::from_secs(10), "shorter".into());
        let (until, why) = other_site.suspended(now).unwrap();
        assert_eq!(
            (until, why.as_str()),
            (now + Duration::from_secs(60), "rule x")
        );
        assert_eq!(other_site.suspended(now + Duration::from_secs(60)), None);
        assert_eq!(yahoo.suspended(now), None);
    }
}
