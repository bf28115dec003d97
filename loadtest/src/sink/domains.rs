//! What the sink keeps per recipient domain across fault changes: counters for the
//! domains with faults of their own (deliveries, throttle replies, other refusals: what
//! `loadtest e2e` samples each second to draw a sender's rate against the domain's
//! limits), and the connections holding each domain's mail (a domain's `conns` limit).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One domain's counters.
#[derive(Debug, Default)]
pub(super) struct DomainCounters {
    delivered: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
}

impl DomainCounters {
    /// A recipient of the domain accepted with its message.
    pub(super) fn delivered(&self) {
        self.delivered.fetch_add(1, Relaxed);
    }

    /// A `421 4.7.0` for the domain's rate or connection limit.
    pub(super) fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// Another 4xx/5xx for one of its recipients (an injected tempfail or permfail).
    pub(super) fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }
}

/// A domain's counters as [`crate::sink::SinkStats`] shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DomainStats {
    /// Recipients accepted.
    pub delivered: u64,
    /// `421 4.7.0` replies for its rate or connection limit.
    pub throttled: u64,
    /// Other refusals of its recipients (injected tempfails and permfails).
    pub refused: u64,
}

#[derive(Debug, Default)]
pub(super) struct Domains {
    counters: Mutex<HashMap<String, Arc<DomainCounters>>>,
    /// Connections that have had a recipient of the domain, by domain (lowercased).
    holding: Mutex<HashMap<String, usize>>,
}

impl Domains {
    /// The counters of `domain` (lowercased), made on first use.
    pub(super) fn counters(&self, domain: &str) -> Arc<DomainCounters> {
        lock(&self.counters)
            .entry(domain.to_string())
            .or_default()
            .clone()
    }

    pub(super) fn stats(&self) -> BTreeMap<String, DomainStats> {
        lock(&self.counters)
            .iter()
            .map(|(d, c)| {
                (
                    d.clone(),
                    DomainStats {
                        delivered: c.delivered.load(Relaxed),
                        throttled: c.throttled.load(Relaxed),
                        refused: c.refused.load(Relaxed),
                    },
                )
            })
            .collect()
    }

    /// Counts one more connection holding `domain`'s mail, unless `limit` are already.
    pub(super) fn hold(&self, domain: &str, limit: usize) -> bool {
        let mut holding = lock(&self.holding);
        let n = holding.entry(domain.to_string()).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection that held `domain`'s mail ended.
    pub(super) fn release(&self, domain: &str) {
        let mut holding = lock(&self.holding);
        if let Some(n) = holding.get_mut(domain) {
            *n -= 1;
            if *n == 0 {
                holding.remove(domain);
            }
        }
    }
}

/// The domains one connection holds; released when it ends.
pub(super) struct Holds {
    pub(super) shared: Arc<super::Shared>,
    pub(super) held: Vec<String>,
}

impl Drop for Holds {
    fn drop(&mut self) {
        for domain in &self.held {
            self.shared.domains.release(domain);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_up_to_the_limit_and_back() {
        let d = Domains::default();
        assert!(d.hold("a.test", 2));
        assert!(d.hold("a.test", 2));
        assert!(!d.hold("a.test", 2), "a third connection is over");
        assert!(d.hold("b.test", 1), "domains count apart");
        d.release("a.test");
        assert!(d.hold("a.test", 2));
        let c = d.counters("a.test");
        c.delivered();
        c.throttled();
        c.throttled();
        assert_eq!(
            d.stats()["a.test"],
            DomainStats {
                delivered: 1,
                throttled: 2,
                refused: 0
            }
        );
    }
}
