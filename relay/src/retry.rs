//! When to try again: exponential backoff with jitter, and expiry by queue age.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::RelayConfig;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    first: Duration,
    max: Duration,
    jitter: f64,
    max_age: Duration,
}

impl RetryPolicy {
    pub fn new(config: &RelayConfig) -> Self {
        Self {
            first: Duration::from_secs(config.retry_first_secs),
            max: Duration::from_secs(config.retry_max_secs),
            jitter: config.retry_jitter,
            max_age: Duration::from_secs(config.max_queue_age_secs),
        }
    }

    /// The interval before the next attempt, after `attempts` failed ones (≥ 1):
    /// `first`, doubling each time, capped at `max`, with ± `jitter` spread.
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        let base = self
            .first
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        base.mul_f64(factor)
    }

    /// True when a message counted from `age_base_ms` is older than the maximum age.
    pub fn expired(&self, age_base_ms: u64, now: SystemTime) -> bool {
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(age_base_ms);
        now.duration_since(base).is_ok_and(|age| age > self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(&RelayConfig {
            retry_first_secs: 300,
            retry_max_secs: 3600,
            retry_jitter: jitter,
            max_queue_age_secs: 5 * 24 * 3600,
            ..RelayConfig::default()
        })
    }

    #[test]
    fn postfix_like_schedule() {
        let p = policy(0.0);
        let secs: Vec<u64> = (1..=7).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [300, 600, 1200, 2400, 3600, 3600, 3600]);
        assert_eq!(p.delay(1000).as_secs(), 3600);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let p = policy(0.1);
        for _ in 0..1000 {
            let d = p.delay(1).as_secs_f64();
            assert!((270.0..=330.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn expiry_after_max_age() {
        let p = policy(0.0);
        let now = SystemTime::now();
        let ms = |d: Duration| postroad_queue::unix_ms(now - d);
        assert!(!p.expired(ms(Duration::from_secs(4 * 24 * 3600)), now));
        assert!(p.expired(ms(Duration::from_secs(5 * 24 * 3600 + 1)), now));
    }
}
