//! Spacing events to a rate that can change while they wait: a site's messages and
//! its new connections.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Spaces `acquire`s `1/rate` apart (a leaky bucket without burst); no rate, no wait.
#[derive(Debug)]
pub struct Pacer {
    /// Nanoseconds between two events; 0: unlimited.
    interval_ns: AtomicU64,
    next: Mutex<Instant>,
}

impl Pacer {
    /// `per_sec`: events per second, `None` for no limit.
    pub fn new(per_sec: Option<f64>) -> Self {
        let pacer = Self {
            interval_ns: AtomicU64::new(0),
            next: Mutex::new(Instant::now()),
        };
        pacer.set_rate(per_sec);
        pacer
    }

    /// Changes the rate; waits already promised keep their slot.
    pub fn set_rate(&self, per_sec: Option<f64>) {
        let ns = match per_sec {
            Some(r) if r.is_finite() && r > 0.0 => (1e9 / r).clamp(1.0, u64::MAX as f64) as u64,
            _ => 0,
        };
        self.interval_ns.store(ns, Ordering::Relaxed);
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        self.acquire_many(1).await;
    }

    /// Waits for the next `n` slots together (one request for `n` recipients): the
    /// wait is for the first, the `n - 1` after it are spoken for.
    pub async fn acquire_many(&self, n: usize) {
        let interval = self.interval_ns.load(Ordering::Relaxed);
        if interval == 0 || n == 0 {
            return;
        }
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + Duration::from_nanos(interval.saturating_mul(n as u64));
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_follow_the_rate_set_last() {
        let pacer = Pacer::new(Some(10.0));
        let start = Instant::now();
        for _ in 0..5 {
            pacer.acquire().await;
        }
        // The first is at once, then 100 ms apart.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        pacer.set_rate(Some(2.0));
        pacer.acquire().await; // the slot promised at the old rate
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        pacer.set_rate(None);
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        // Ten slots at once (after the one promised at 2/s, at 1.5 s), and the next
        // one waits for all ten.
        pacer.set_rate(Some(10.0));
        pacer.acquire_many(10).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }
}
