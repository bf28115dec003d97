//! Weighted recipient-domain mixes: `gmail.test=40,outlook.test=25,...`.
//!
//! The domain of recipient `userN@...` is a pure function of N (a hash of N picks a
//! domain in proportion to the weights), so a run is reproducible and a receiver can
//! tell which domain any recipient was meant for.

use std::fmt;

/// The mix `loadtest e2e` uses when none is given: a realistic split of consumer
/// mailbox providers, on `.test` names.
pub const DEFAULT_E2E_MIX: &str = "gmail.test=40,outlook.test=25,yahoo.test=15,other.test=20";

/// Recipient domains with integer weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMix {
    /// (domain, cumulative weight up to and including it)
    entries: Vec<(String, u64)>,
    total: u64,
}

impl DomainMix {
    /// One domain for every recipient.
    pub fn single(domain: &str) -> Self {
        Self {
            entries: vec![(domain.to_owned(), 1)],
            total: 1,
        }
    }

    /// Parses `DOMAIN=WEIGHT,DOMAIN=WEIGHT,...` (`:` works in place of `=`; a domain
    /// without a weight weighs 1). Weights are non-negative integers, not all zero;
    /// a domain may appear once.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (domain, weight) = match item.split_once(['=', ':']) {
                Some((d, w)) => {
                    let w: u64 = w
                        .trim()
                        .parse()
                        .map_err(|e| format!("{item:?}: bad weight: {e}"))?;
                    (d.trim(), w)
                }
                None => (item, 1),
            };
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(format!("{item:?}: bad domain"));
            }
            if entries.iter().any(|(d, _)| *d == domain) {
                return Err(format!("{domain} appears twice"));
            }
            if weight == 0 {
                continue;
            }
            total = total
                .checked_add(weight)
                .ok_or_else(|| format!("{item:?}: weights too large"))?;
            entries.push((domain, total));
        }
        if entries.is_empty() {
            return Err(format!("no domain with a positive weight in {spec:?}"));
        }
        Ok(Self { entries, total })
    }

    /// The domain of recipient number `n`.
    pub fn pick(&self, n: u64) -> &str {
        if self.entries.len() == 1 {
            return &self.entries[0].0;
        }
        let x = crate::generator::splitmix64(n) % self.total;
        let i = self.entries.partition_point(|(_, cum)| *cum <= x);
        &self.entries[i].0
    }

    /// The domains with their weights, in the order given.
    pub fn weights(&self) -> Vec<(&str, u64)> {
        let mut prev = 0;
        self.entries
            .iter()
            .map(|(d, cum)| {
                let w = cum - prev;
                prev = *cum;
                (d.as_str(), w)
            })
            .collect()
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(d, _)| d.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for DomainMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights()
            .iter()
            .map(|(d, w)| format!("{d}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let m = DomainMix::parse(DEFAULT_E2E_MIX).unwrap();
        assert_eq!(m.to_string(), DEFAULT_E2E_MIX);
        assert_eq!(m.len(), 4);
        let m = DomainMix::parse(" A.test:3 , b.test ,c.test=0").unwrap();
        assert_eq!(m.weights(), vec![("a.test", 3), ("b.test", 1)]);
        for bad in [
            "",
            "a.test=0",
            "a.test=x",
            "a.test,a.test",
            "bad domain=1",
            "=3",
        ] {
            assert!(DomainMix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let m = DomainMix::parse(DEFAULT_E2E_MIX).unwrap();
        let mut counts = std::collections::HashMap::new();
        let n = 100_000u64;
        for i in 1..=n {
            *counts.entry(m.pick(i).to_owned()).or_insert(0u64) += 1;
        }
        for (d, w) in m.weights() {
            let share = counts[d] as f64 / n as f64;
            let want = w as f64 / 100.0;
            assert!((share - want).abs() < 0.01, "{d}: {share} vs {want}");
        }
        // deterministic
        assert_eq!(m.pick(12345), m.pick(12345));
        assert_eq!(DomainMix::single("x.test").pick(7), "x.test");
    }
}
