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

/// Weighted body sizes, `BYTES=WEIGHT,...` (`4k`, `1m` suffixes allowed): the size of
/// message `seq` is a pure function of `seq`, like the domain of a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMix {
    /// (size in bytes, cumulative weight up to and including it)
    entries: Vec<(usize, u64)>,
    total: u64,
}

/// Largest body a size mix may ask for (64 MiB).
pub const MAX_BODY_SIZE: usize = 64 << 20;

impl SizeMix {
    /// Parses `SIZE=WEIGHT,...`; a size is bytes with an optional `k` (KiB) or `m`
    /// (MiB) suffix, a size without a weight weighs 1.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (size, weight) = match item.split_once(['=', ':']) {
                Some((s, w)) => (
                    s.trim(),
                    w.trim()
                        .parse::<u64>()
                        .map_err(|e| format!("{item:?}: bad weight: {e}"))?,
                ),
                None => (item, 1),
            };
            let size = parse_size(size).map_err(|e| format!("{item:?}: {e}"))?;
            if entries.iter().any(|(s, _)| *s == size) {
                return Err(format!("size {size} appears twice"));
            }
            if weight == 0 {
                continue;
            }
            total = total
                .checked_add(weight)
                .ok_or_else(|| format!("{item:?}: weights too large"))?;
            entries.push((size, total));
        }
        if entries.is_empty() {
            return Err(format!("no size with a positive weight in {spec:?}"));
        }
        Ok(Self { entries, total })
    }

    /// Index (into [`SizeMix::sizes`]) of the size of message `seq`.
    pub fn pick(&self, seq: u64) -> usize {
        if self.entries.len() == 1 {
            return 0;
        }
        // A different stream from the domain picks, so size and domain are independent.
        let x = crate::generator::splitmix64(seq ^ 0x0051_57e5) % self.total;
        self.entries.partition_point(|(_, cum)| *cum <= x)
    }

    /// The sizes, in the order given.
    pub fn sizes(&self) -> Vec<usize> {
        self.entries.iter().map(|(s, _)| *s).collect()
    }

    /// The weighted mean size in bytes.
    pub fn mean(&self) -> f64 {
        let mut prev = 0;
        let sum: f64 = self
            .entries
            .iter()
            .map(|(s, cum)| {
                let w = cum - prev;
                prev = *cum;
                *s as f64 * w as f64
            })
            .sum();
        sum / self.total as f64
    }
}

impl fmt::Display for SizeMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prev = 0;
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(s, cum)| {
                let w = cum - prev;
                prev = *cum;
                format!("{s}={w}")
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1 << 20),
            None => (lower.as_str(), 1),
        },
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(unit)
        .filter(|&b| b <= MAX_BODY_SIZE)
        .ok_or_else(|| format!("size {s:?} is above {MAX_BODY_SIZE} bytes"))
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn parse_display_and_mean() {
        let m = SizeMix::parse("1k=50, 10K=40 ,100k:10").unwrap();
        assert_eq!(m.sizes(), vec![1024, 10240, 102_400]);
        assert_eq!(m.to_string(), "1024=50,10240=40,102400=10");
        assert!((m.mean() - (1024.0 * 0.5 + 10240.0 * 0.4 + 102_400.0 * 0.1)).abs() < 1e-6);
        assert_eq!(SizeMix::parse("2m").unwrap().sizes(), vec![2 << 20]);
        for bad in ["", "1k=0", "x=1", "1k,1024", "65m", "1k=y"] {
            assert!(SizeMix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let m = SizeMix::parse("100=70,200=30").unwrap();
        let n = 100_000;
        let small = (0..n).filter(|&s| m.pick(s) == 0).count() as f64 / n as f64;
        assert!((small - 0.7).abs() < 0.01, "{small}");
        assert_eq!(
            m.pick(42),
            m.pick(42),
            "a pure function of the sequence number"
        );
    }
}
