//! Throttling of failed SMTP AUTH, per client address and per username (the models:
//! Postfix's anvil, Stalwart's auto-ban).
//!
//! * The first `free_failures` failures of an address or a username are answered at
//!   once; each later one is answered after a delay that doubles (`delay_ms` up to
//!   `max_delay_ms`), whichever of the two has failed more.
//! * `ban_after` failures from one address within `window_secs` ban it for `ban_secs`:
//!   its connections are turned away with `421 4.7.0`, and so is an AUTH in a session
//!   it already has open.
//! * A username is never banned, only slowed down: the right password always works
//!   from an address that is not banned, so an attacker cannot lock a user out.
//! * Attempts still being checked count against the ban, so many parallel connections
//!   get no more tries than one.
//!
//! IPv6 clients are counted per /64, the block a single host usually has.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `[auth.throttle]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Throttle failed AUTH at all. Default true.
    pub enabled: bool,
    /// Failures of one address or username answered without delay. Default 3.
    pub free_failures: u32,
    /// Delay before answering the first failure past `free_failures`, in ms; it
    /// doubles with each further failure. Default 1000.
    pub delay_ms: u64,
    /// Longest delay, in ms. Default 16000.
    pub max_delay_ms: u64,
    /// Failures from one address within `window_secs` that ban it. Default 10.
    pub ban_after: u32,
    /// The window failures are counted in, in seconds. Default 600.
    pub window_secs: u64,
    /// How long a ban lasts, in seconds. Default 900.
    pub ban_secs: u64,
    /// Addresses and usernames tracked at most; past it the oldest records are
    /// forgotten (bans last). Default 100000.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            free_failures: 3,
            delay_ms: 1000,
            max_delay_ms: 16_000,
            ban_after: 10,
            window_secs: 600,
            ban_secs: 900,
            max_tracked: 100_000,
        }
    }
}

impl ThrottleConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled {
            for (key, value) in [
                ("auth.throttle.ban_after", u64::from(self.ban_after)),
                ("auth.throttle.window_secs", self.window_secs),
                ("auth.throttle.ban_secs", self.ban_secs),
                ("auth.throttle.max_tracked", self.max_tracked as u64),
            ] {
                if value == 0 {
                    return Err(format!("{key} must be above 0"));
                }
            }
            if self.max_delay_ms < self.delay_ms {
                return Err("auth.throttle.max_delay_ms must not be below delay_ms".into());
            }
        }
        Ok(())
    }
}

/// Why an AUTH attempt may not even be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address is banned for this much longer.
    Banned(Duration),
    /// As many attempts as the address has left are being checked already.
    Busy,
}

/// Failures of one address or username in the current window.
#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    in_flight: u32,
    banned_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            failures: 0,
            in_flight: 0,
            banned_until: None,
        }
    }

    /// Starts a new window when the old one is over.
    fn roll(&mut self, now: Instant, window: Duration) {
        if now.duration_since(self.window_start) > window {
            self.window_start = now;
            self.failures = 0;
        }
        // A ban served wipes the slate: the address starts a new window.
        if self.banned_until.is_some_and(|until| until <= now) {
            self.banned_until = None;
            self.window_start = now;
            self.failures = 0;
        }
    }

    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && self.banned_until.is_none_or(|until| until <= now)
            && now.duration_since(self.window_start) > window
    }
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Record>,
    users: HashMap<String, Record>,
}

/// The throttle, shared by every session.
pub struct AuthThrottle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

/// An attempt being checked; report its result with [`AuthThrottle::finish`].
#[derive(Debug)]
pub struct Attempt {
    address: IpAddr,
    user: String,
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.window_secs)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How much longer `ip` is banned, if it is.
    pub fn banned(&self, ip: IpAddr) -> Option<Duration> {
        if !self.config.enabled {
            return None;
        }
        let now = Instant::now();
        let state = self.state();
        let until = state.addresses.get(&client_key(ip))?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Registers an attempt by `ip` for `user`, unless the address is banned or has as
    /// many attempts in flight as it has tries left.
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt, Refusal> {
        let attempt = Attempt {
            address: client_key(ip),
            user: user.to_string(),
        };
        if !self.config.enabled {
            return Ok(attempt);
        }
        let now = Instant::now();
        let window = self.window();
        let mut state = self.state();
        let record = current(&mut state.addresses, attempt.address, now, window);
        if let Some(until) = record.banned_until {
            return Err(Refusal::Banned(until - now));
        }
        if record.failures + record.in_flight >= self.config.ban_after {
            return Err(Refusal::Busy);
        }
        record.in_flight += 1;
        self.prune(&mut state, now);
        Ok(attempt)
    }

    /// Reports how an attempt ended; returns how long to wait before answering it.
    pub fn finish(&self, attempt: Attempt, success: bool) -> Duration {
        if !self.config.enabled {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let window = self.window();
        let mut state = self.state();
        let address = current(&mut state.addresses, attempt.address, now, window);
        address.in_flight = address.in_flight.saturating_sub(1);
        if success {
            state.users.remove(&attempt.user);
            return Duration::ZERO;
        }
        address.failures += 1;
        let address_failures = address.failures;
        if address_failures >= self.config.ban_after && address.banned_until.is_none() {
            address.banned_until = Some(now + Duration::from_secs(self.config.ban_secs));
            tracing::warn!(client = %attempt.address, failures = address_failures, ban_secs = self.config.ban_secs, "too many failed AUTH attempts; address banned");
        }
        let user = current(&mut state.users, attempt.user, now, window);
        user.failures += 1;
        let worst = address_failures.max(user.failures);
        self.prune(&mut state, now);
        self.delay(worst)
    }

    /// The delay before answering the `failures`-th failure.
    fn delay(&self, failures: u32) -> Duration {
        let Some(past_free) = failures.checked_sub(self.config.free_failures + 1) else {
            return Duration::ZERO;
        };
        let factor = 1u64.checked_shl(past_free.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.config
                .delay_ms
                .saturating_mul(factor)
                .min(self.config.max_delay_ms),
        )
    }

    /// Keeps the maps within `max_tracked`: forgets finished records first, then the
    /// oldest unbanned ones.
    fn prune(&self, state: &mut State, now: Instant) {
        let max = self.config.max_tracked;
        let window = self.window();
        prune_map(&mut state.addresses, max, now, window);
        prune_map(&mut state.users, max, now, window);
    }
}

/// The record of `key` in its current window (a new one if there is none).
fn current<K: Eq + Hash>(
    map: &mut HashMap<K, Record>,
    key: K,
    now: Instant,
    window: Duration,
) -> &mut Record {
    let record = map.entry(key).or_insert_with(|| Record::new(now));
    record.roll(now, window);
    record
}

fn prune_map<K: Eq + Hash + Clone>(
    map: &mut HashMap<K, Record>,
    max: usize,
    now: Instant,
    window: Duration,
) {
    if map.len() <= max {
        return;
    }
    map.retain(|_, r| !r.idle(now, window));
    if map.len() > max {
        let mut unbanned: Vec<(Instant, K)> = map
            .iter()
            .filter(|(_, r)| r.banned_until.is_none() && r.in_flight == 0)
            .map(|(k, r)| (r.window_start, k.clone()))
            .collect();
        unbanned.sort_unstable_by_key(|(start, _)| *start);
        let excess = map.len() - max;
        for (_, key) in unbanned.into_iter().take(excess) {
            map.remove(&key);
        }
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> AuthThrottle {
        AuthThrottle::new(ThrottleConfig {
            free_failures: 2,
            delay_ms: 100,
            max_delay_ms: 350,
            ban_after: 5,
            ..ThrottleConfig::default()
        })
    }

    fn fail(t: &AuthThrottle, ip: &str, user: &str) -> Duration {
        let attempt = t.begin(ip.parse().unwrap(), user).unwrap();
        t.finish(attempt, false)
    }

    #[test]
    fn delays_grow_then_the_address_is_banned() {
        let t = throttle();
        let delays: Vec<u64> = (0..5)
            .map(|_| fail(&t, "192.0.2.1", "app").as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 350]);
        let ip = "192.0.2.1".parse().unwrap();
        assert!(t.banned(ip).is_some());
        assert!(matches!(t.begin(ip, "app"), Err(Refusal::Banned(_))));
        // Another address is not banned, and the right password works there at once.
        let other = t.begin("192.0.2.2".parse().unwrap(), "app").unwrap();
        assert_eq!(t.finish(other, true), Duration::ZERO);
    }

    #[test]
    fn a_username_is_slowed_down_from_any_address_but_never_banned() {
        let t = throttle();
        for i in 0..3 {
            fail(&t, &format!("198.51.100.{i}"), "app");
        }
        // The fourth failure, from a fresh address, is delayed for the username's sake.
        assert_eq!(fail(&t, "198.51.100.9", "app"), Duration::from_millis(200));
        let attempt = t.begin("198.51.100.10".parse().unwrap(), "app").unwrap();
        assert_eq!(t.finish(attempt, true), Duration::ZERO);
        // Success forgets the username's failures.
        assert_eq!(fail(&t, "198.51.100.11", "app"), Duration::ZERO);
    }

    #[test]
    fn a_served_ban_starts_a_new_window() {
        let t = AuthThrottle::new(ThrottleConfig {
            ban_after: 2,
            ban_secs: 1,
            ..ThrottleConfig::default()
        });
        let ip = "192.0.2.1".parse().unwrap();
        let mut record = Record::new(Instant::now());
        record.failures = 2;
        record.banned_until = Some(Instant::now());
        t.state().addresses.insert(ip, record);
        let attempt = t.begin(ip, "app").expect("the ban is over");
        assert_eq!(t.finish(attempt, false), Duration::ZERO);
        assert!(
            t.banned(ip).is_none(),
            "one failure after a ban is not a new ban"
        );
    }

    #[test]
    fn parallel_attempts_count_against_the_ban() {
        let t = throttle();
        let ip = "203.0.113.5".parse().unwrap();
        let attempts: Vec<_> = (0..5).map(|_| t.begin(ip, "app").unwrap()).collect();
        assert_eq!(t.begin(ip, "app").unwrap_err(), Refusal::Busy);
        for a in attempts {
            t.finish(a, false);
        }
        assert!(t.banned(ip).is_some());
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let t = throttle();
        for i in 0..5 {
            fail(&t, &format!("2001:db8:1:2::{i}"), "x");
        }
        assert!(t.banned("2001:db8:1:2:ffff::1".parse().unwrap()).is_some());
        assert!(t.banned("2001:db8:1:3::1".parse().unwrap()).is_none());
    }

    #[test]
    fn tracking_is_bounded() {
        let t = AuthThrottle::new(ThrottleConfig {
            max_tracked: 10,
            ..ThrottleConfig::default()
        });
        for i in 0..100u32 {
            fail(
                &t,
                &std::net::Ipv4Addr::from(i).to_string(),
                &format!("u{i}"),
            );
        }
        let state = t.state();
        assert!(state.addresses.len() <= 10 && state.users.len() <= 10);
    }

    #[test]
    fn disabled_never_delays_or_bans() {
        let t = AuthThrottle::new(ThrottleConfig {
            enabled: false,
            ..ThrottleConfig::default()
        });
        for _ in 0..50 {
            assert_eq!(fail(&t, "192.0.2.1", "app"), Duration::ZERO);
        }
        assert!(t.banned("192.0.2.1".parse().unwrap()).is_none());
    }
}
