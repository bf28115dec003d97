//! Receiver limits that change during a run, and how the MTA's sending followed them:
//! `--sink-domain DOMAIN:FAULTS` gives a recipient domain faults of its own at the
//! sink (a rate above which it answers `421 4.7.0`, a connection limit, ...), and
//! `--sink-change SECS:DOMAIN:FAULTS` replaces them that many seconds into the load.
//! Each second the sink's counters of those domains are sampled (deliveries, throttle
//! replies, other refusals, the rate limit in force), and each stretch with one limit
//! (a phase) gets its figures: how long the sender took to converge on the limit, what
//! share of the limit it used from then on, and what share of its attempts were
//! throttled.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::sink::{Faults, SinkControl};

/// A phase has converged once the delivered rate, averaged over this many seconds,
/// reaches [`CONVERGED`] of the limit.
const WINDOW_SECS: usize = 5;
const CONVERGED: f64 = 0.8;

/// Faults per domain at the start of the load, and their changes.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    initial: HashMap<String, Faults>,
    /// (seconds into the load, domain, its faults from then on), in time order.
    changes: Vec<(u64, String, Faults)>,
}

impl Schedule {
    /// From `--sink-domain` and `--sink-change` values.
    pub fn parse(domains: &[String], changes: &[String]) -> anyhow::Result<Self> {
        let mut initial = HashMap::new();
        for spec in domains {
            let (domain, faults) = domain_faults(spec)
                .with_context(|| format!("--sink-domain {spec:?} (want DOMAIN:key=value,...)"))?;
            if initial.insert(domain.clone(), faults).is_some() {
                bail!("--sink-domain names {domain} twice");
            }
        }
        let mut timed = Vec::new();
        for spec in changes {
            let parsed = spec
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("no SECS:"))
                .and_then(|(secs, rest)| {
                    let secs: u64 = secs
                        .trim()
                        .parse()
                        .map_err(|_| anyhow::anyhow!("{secs:?} is not whole seconds"))?;
                    let (domain, faults) = domain_faults(rest)?;
                    Ok((secs, domain, faults))
                })
                .with_context(|| {
                    format!("--sink-change {spec:?} (want SECS:DOMAIN:key=value,...)")
                })?;
            timed.push(parsed);
        }
        timed.sort_by_key(|(secs, ..)| *secs);
        Ok(Self {
            initial,
            changes: timed,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.initial.is_empty() && self.changes.is_empty()
    }

    /// The domains with faults of their own at the start.
    pub fn initial(&self) -> HashMap<String, Faults> {
        self.initial.clone()
    }

    /// Whether any of its faults make the MTA defer (so it should retry soon).
    pub fn defers(&self) -> bool {
        self.initial
            .values()
            .chain(self.changes.iter().map(|(_, _, f)| f))
            .any(|f| {
                f.rate_limit.is_some() || f.max_connections.is_some() || f.tempfail_share > 0.0
            })
    }

    /// Every domain's faults `secs` into the load.
    fn at(&self, secs: u64) -> HashMap<String, Faults> {
        let mut faults = self.initial.clone();
        for (_, domain, f) in self.changes.iter().filter(|(at, ..)| *at <= secs) {
            faults.insert(domain.clone(), f.clone());
        }
        faults
    }
}

/// `DOMAIN:key=value,...`, the domain lowercased.
fn domain_faults(spec: &str) -> anyhow::Result<(String, Faults)> {
    let (domain, kv) = spec
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("no DOMAIN:"))?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        bail!("empty domain");
    }
    let faults = Faults::parse_kv(kv).map_err(anyhow::Error::msg)?;
    Ok((domain, faults))
}

/// One second of one domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DomainSecond {
    /// Seconds since the start of the load (this second is [t, t+1)).
    pub t: u64,
    pub delivered: u64,
    /// `421 4.7.0` for the domain's rate or connection limit.
    pub throttled: u64,
    /// Other refusals (injected tempfails, permfails).
    pub refused: u64,
    /// The sink's rate limit for the domain in this second (transactions/s).
    pub limit: Option<f64>,
}

/// A stretch of a run with one limit, and how the sender did in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Seconds since the start of the load: [from, to).
    pub from_secs: u64,
    pub to_secs: u64,
    pub limit: Option<f64>,
    /// From the phase's start until the delivered rate, averaged over 5 s, first
    /// reached 80% of the limit; none if it never did.
    pub converge_secs: Option<u64>,
    /// Delivered per second after converging, and that as a share of the limit.
    pub delivered_per_sec: f64,
    pub share_of_limit: Option<f64>,
    /// Highest 5-second average of the delivered rate, as a share of the limit.
    pub peak_share_of_limit: Option<f64>,
    /// Throttle replies / (deliveries + throttle replies) over the whole phase: how
    /// often the sender tried above the limit.
    pub throttled_share: f64,
    pub delivered: u64,
    pub throttled: u64,
}

/// What one domain went through.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainTrace {
    pub domain: String,
    pub seconds: Vec<DomainSecond>,
    pub phases: Vec<Phase>,
}

/// Applies the schedule's changes at their times and samples the domains each
/// second, until `stop` turns true; then the traces.
pub async fn follow(
    schedule: Schedule,
    sink: SinkControl,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<DomainTrace>> {
    let start = Instant::now();
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut before = sink.domain_stats();
    let mut limits = rate_limits(&schedule.at(0));
    let mut seconds: BTreeMap<String, Vec<DomainSecond>> = BTreeMap::new();
    for t in 0.. {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let now = sink.domain_stats();
        for (domain, counts) in &now {
            let was = before.get(domain).copied().unwrap_or_default();
            seconds
                .entry(domain.clone())
                .or_default()
                .push(DomainSecond {
                    t,
                    delivered: counts.delivered - was.delivered,
                    throttled: counts.throttled - was.throttled,
                    refused: counts.refused - was.refused,
                    limit: limits.get(domain).copied().flatten(),
                });
        }
        before = now;
        if stopping {
            break;
        }
        // The faults for the next second.
        if schedule.changes.iter().any(|(at, ..)| *at == t + 1) {
            let faults = schedule.at(t + 1);
            limits = rate_limits(&faults);
            sink.set_faults(Faults::default(), faults)?;
        }
    }
    Ok(seconds
        .into_iter()
        .map(|(domain, mut seconds)| {
            // Trailing seconds with nothing in them are after the domain's last mail.
            while seconds
                .last()
                .is_some_and(|s| s.delivered + s.throttled + s.refused == 0)
            {
                seconds.pop();
            }
            let phases = phases(&seconds);
            DomainTrace {
                domain,
                seconds,
                phases,
            }
        })
        .collect())
}

fn rate_limits(faults: &HashMap<String, Faults>) -> HashMap<String, Option<f64>> {
    faults
        .iter()
        .map(|(d, f)| (d.clone(), f.rate_limit))
        .collect()
}

/// Splits a domain's seconds where its limit changes, and judges each stretch.
pub fn phases(seconds: &[DomainSecond]) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut from = 0;
    while from < seconds.len() {
        let limit = seconds[from].limit;
        let len = seconds[from..]
            .iter()
            .take_while(|s| s.limit == limit)
            .count();
        phases.push(judge(&seconds[from..from + len]));
        from += len;
    }
    phases
}

fn judge(seconds: &[DomainSecond]) -> Phase {
    let limit = seconds[0].limit.filter(|l| *l > 0.0);
    let delivered: u64 = seconds.iter().map(|s| s.delivered).sum();
    let throttled: u64 = seconds.iter().map(|s| s.throttled).sum();
    // The average of the window ending at each second.
    let averages: Vec<f64> = (0..seconds.len())
        .map(|i| {
            let window = &seconds[(i + 1).saturating_sub(WINDOW_SECS)..=i];
            window.iter().map(|s| s.delivered as f64).sum::<f64>() / window.len() as f64
        })
        .collect();
    let converged_at = limit.and_then(|l| averages.iter().position(|a| *a >= CONVERGED * l));
    let after = &seconds[converged_at.unwrap_or(0)..];
    let delivered_per_sec =
        after.iter().map(|s| s.delivered as f64).sum::<f64>() / after.len().max(1) as f64;
    let peak = averages.iter().copied().fold(0.0, f64::max);
    Phase {
        from_secs: seconds[0].t,
        to_secs: seconds[seconds.len() - 1].t + 1,
        limit,
        converge_secs: converged_at.map(|i| i as u64),
        delivered_per_sec,
        share_of_limit: limit
            .filter(|_| converged_at.is_some())
            .map(|l| delivered_per_sec / l),
        peak_share_of_limit: limit.map(|l| peak / l),
        throttled_share: if delivered + throttled == 0 {
            0.0
        } else {
            throttled as f64 / (delivered + throttled) as f64
        },
        delivered,
        throttled,
    }
}

impl DomainTrace {
    /// One line per phase, for the text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.phases {
            let limit = p
                .limit
                .map_or_else(|| "no limit".to_string(), |l| format!("limit {l:.0}/s"));
            let converge = match p.converge_secs {
                Some(s) => format!("converged in {s} s"),
                None => "never reached 80% of it".into(),
            };
            let share = p
                .share_of_limit
                .map(|s| format!(" ({:.0}% of the limit)", s * 100.0))
                .unwrap_or_default();
            out.push_str(&format!(
                "{} {}-{} s, {limit}: {converge}, then {:.1}/s{share}; {:.1}% of attempts throttled\n",
                self.domain,
                p.from_secs,
                p.to_secs,
                p.delivered_per_sec,
                p.throttled_share * 100.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, delivered: u64, throttled: u64, limit: f64) -> DomainSecond {
        DomainSecond {
            t,
            delivered,
            throttled,
            refused: 0,
            limit: Some(limit),
        }
    }

    #[test]
    fn phases_split_where_the_limit_changes_and_measure_convergence() {
        // 100/s for 10 s: a climb to it by the 4th second (the 5 s average reaches 80
        // at t=6), then 90/s; then 200/s from t=10, reached at once.
        let mut seconds: Vec<DomainSecond> = [20, 60, 100, 120, 100, 90, 90, 90, 90, 90]
            .iter()
            .enumerate()
            .map(|(t, d)| second(t as u64, *d, if *d > 100 { 20 } else { 0 }, 100.0))
            .collect();
        seconds.extend((10..15).map(|t| second(t, 200, 0, 200.0)));
        let phases = phases(&seconds);
        assert_eq!(phases.len(), 2);
        let first = &phases[0];
        assert_eq!((first.from_secs, first.to_secs), (0, 10));
        assert_eq!(first.converge_secs, Some(4), "(20+60+100+120+100)/5 = 80");
        assert_eq!(first.delivered_per_sec, (100 + 90 * 5) as f64 / 6.0);
        assert_eq!(first.throttled, 20);
        assert!((first.throttled_share - 20.0 / 870.0).abs() < 1e-9);
        assert_eq!(first.peak_share_of_limit, Some(1.0));
        let second = &phases[1];
        assert_eq!((second.from_secs, second.converge_secs), (10, Some(0)));
        assert_eq!(second.share_of_limit, Some(1.0));
    }

    #[test]
    fn a_sender_that_never_gets_there_says_so() {
        let seconds: Vec<DomainSecond> = (0..8).map(|t| second(t, 10, 0, 100.0)).collect();
        let p = &phases(&seconds)[0];
        assert_eq!((p.converge_secs, p.share_of_limit), (None, None));
        assert_eq!(p.peak_share_of_limit, Some(0.1));
    }

    #[test]
    fn the_schedule_parses_and_names_its_mistakes() {
        let s = Schedule::parse(
            &["Slow.Test:rate=100,conns=4".into()],
            &[
                "60:slow.test:rate=200".into(),
                "30:other.test:tempfail=0.1".into(),
            ],
        )
        .unwrap();
        assert_eq!(s.initial()["slow.test"].rate_limit, Some(100.0));
        assert_eq!(s.at(59)["slow.test"].rate_limit, Some(100.0));
        assert_eq!(s.at(60)["slow.test"].rate_limit, Some(200.0));
        assert!(s.at(30).contains_key("other.test"));
        assert!(s.defers());
        for (domains, changes, expected) in [
            (vec!["slow.test"], vec![], "DOMAIN:"),
            (vec!["slow.test:speed=3"], vec![], "speed"),
            (vec!["a.test:rate=1", "a.test:rate=2"], vec![], "twice"),
            (vec![], vec!["soon:a.test:rate=1"], "whole seconds"),
            (vec![], vec!["5:a.test"], "DOMAIN:"),
        ] {
            let domains: Vec<String> = domains.into_iter().map(String::from).collect();
            let changes: Vec<String> = changes.into_iter().map(String::from).collect();
            let e = format!("{:#}", Schedule::parse(&domains, &changes).unwrap_err());
            assert!(e.contains(expected), "{domains:?} {changes:?}: {e}");
        }
    }
}
