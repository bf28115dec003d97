//! Adaptive control of one site, as TCP controls its window: a throttle reply (421, a
//! 4.7.x status, "rate limited" and the like) cuts the message rate to [`CUT`] of what
//! was being sent, at most once per [`COOLDOWN`] (the replies to messages already in
//! flight belong to the same overload). Without a throttle and with deliveries, the
//! rate grows back every [`RAISE_EVERY`] along CUBIC's curve (RFC 9438, in seconds,
//! scaled to the rate the cut was made from): quickly at first, flat near that rate,
//! which it reaches again after [`RECOVER`], then faster and faster above it, so a
//! receiver that raised its limit is found in seconds, and a cut made too deep heals
//! as fast. It never goes above the shape's `max_message_rate`. Throttles at connect,
//! or that speak of connections, cut the connection count instead; it grows back by
//! one every [`CONN_RAISE_EVERY`] without such a throttle. Without a configured rate,
//! the learned one is dropped after [`FORGET_AFTER`] without a throttle.

use std::time::Duration;

use tokio::time::Instant;

/// Share of the rate (and connections) kept at a cut.
pub const CUT: f64 = 0.7;
/// Shortest time between two cuts.
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// How often the rate rises while deliveries succeed.
pub const RAISE_EVERY: Duration = Duration::from_secs(1);
/// After a cut, the time the rate takes to return to the one it was cut from.
pub const RECOVER: Duration = Duration::from_secs(5);
/// How often one connection is given back.
pub const CONN_RAISE_EVERY: Duration = Duration::from_secs(5);
/// Without a configured rate, a learned one lasts this long after the last throttle.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
/// The lowest rate a cut goes to, messages per second.
const MIN_RATE: f64 = 0.1;
/// Sends per second are measured over this window...
const METER_WINDOW: Duration = Duration::from_secs(2);
/// ...or the time since the first send in it, when shorter, but not less than this.
const METER_MIN_SPAN: Duration = Duration::from_millis(100);

/// What a change asks the site to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Messages per second (`None`: unlimited).
    pub rate: Option<f64>,
    pub connections: usize,
}

/// One site's controller.
#[derive(Debug)]
pub struct Controller {
    enabled: bool,
    /// The shape's `max_message_rate` and `connection_limit`.
    rate_ceiling: Option<f64>,
    conn_ceiling: usize,
    now: Limits,
    /// The rate the last cut was made from (what the rate grows back to, then past).
    cut_from: f64,
    last_rate_cut: Option<Instant>,
    last_conn_cut: Option<Instant>,
    last_raise: Instant,
    last_conn_raise: Instant,
    /// The last throttle reply and when.
    last_throttle: Option<(Instant, String)>,
    meter: Meter,
}

impl Controller {
    pub fn new(
        enabled: bool,
        rate_ceiling: Option<f64>,
        conn_ceiling: usize,
        now: Instant,
    ) -> Self {
        Self {
            enabled,
            rate_ceiling,
            conn_ceiling,
            now: Limits {
                rate: rate_ceiling,
                connections: conn_ceiling,
            },
            cut_from: rate_ceiling.unwrap_or(0.0),
            last_rate_cut: None,
            last_conn_cut: None,
            last_raise: now,
            last_conn_raise: now,
            last_throttle: None,
            meter: Meter::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.now
    }

    /// New ceilings (a reloaded shaping file): what was learned stays below them.
    pub fn reshape(
        &mut self,
        enabled: bool,
        rate_ceiling: Option<f64>,
        conn_ceiling: usize,
    ) -> Limits {
        self.enabled = enabled;
        self.rate_ceiling = rate_ceiling;
        self.conn_ceiling = conn_ceiling;
        let learned = self.last_throttle.is_some() && enabled;
        self.now = Limits {
            rate: match (learned, self.now.rate, rate_ceiling) {
                (true, Some(r), Some(c)) => Some(r.min(c)),
                (true, Some(r), None) => Some(r),
                _ => rate_ceiling,
            },
            connections: if learned {
                self.now.connections.min(conn_ceiling)
            } else {
                conn_ceiling
            },
        };
        self.now
    }

    /// A message is about to be sent.
    pub fn sending(&mut self, now: Instant) {
        self.meter.add(now);
    }

    /// A throttle reply; `connections` when it came at connect or speaks of
    /// connections (the connection count is cut, else the rate). Returns the new limits
    /// when it cut them.
    pub fn throttled(&mut self, reply: String, connections: bool, now: Instant) -> Option<Limits> {
        self.last_throttle = Some((now, reply));
        let last = if connections {
            &mut self.last_conn_cut
        } else {
            &mut self.last_rate_cut
        };
        if !self.enabled || last.is_some_and(|at| now - at < COOLDOWN) {
            return None;
        }
        *last = Some(now);
        if connections {
            self.now.connections = ((self.now.connections as f64 * CUT) as usize).max(1);
            return Some(self.now);
        }
        let sending = self.meter.per_sec(now);
        let from = match self.now.rate {
            // Not sending as fast as allowed: cut from what was sent.
            Some(rate) if sending > 0.0 => rate.min(sending.max(MIN_RATE)),
            Some(rate) => rate,
            None => sending.max(MIN_RATE),
        };
        self.cut_from = from;
        self.now.rate = Some((from * CUT).max(MIN_RATE));
        Some(self.now)
    }

    /// Messages were delivered (any number, at `now`). Returns the new limits when
    /// they rose.
    pub fn delivered(&mut self, now: Instant) -> Option<Limits> {
        if !self.enabled {
            return None;
        }
        let calm = |cut: Option<Instant>, since: Duration| cut.is_none_or(|at| now - at >= since);
        let mut changed = false;
        if let Some(rate) = self.now.rate
            && let Some(cut) = self.last_rate_cut
            && now - self.last_raise >= RAISE_EVERY
            && now - cut >= RAISE_EVERY
        {
            self.last_raise = now;
            let raised = cubic(self.cut_from, now - cut).max(rate);
            self.now.rate = match self.rate_ceiling {
                Some(ceiling) => Some(raised.min(ceiling)),
                None if self
                    .last_throttle
                    .as_ref()
                    .is_some_and(|(at, _)| now - *at >= FORGET_AFTER) =>
                {
                    None
                }
                None => Some(raised),
            };
            changed = self.now.rate != Some(rate);
        }
        if self.now.connections < self.conn_ceiling
            && now - self.last_conn_raise >= CONN_RAISE_EVERY
            && calm(self.last_conn_cut, CONN_RAISE_EVERY)
        {
            self.last_conn_raise = now;
            self.now.connections += 1;
            changed = true;
        }
        changed.then_some(self.now)
    }

    /// `Some(why)` while the limits are held below the ceilings.
    pub fn backoff(&self) -> Option<String> {
        let below = self.now.rate != self.rate_ceiling || self.now.connections < self.conn_ceiling;
        if !below {
            return None;
        }
        let (_, reply) = self.last_throttle.as_ref()?;
        Some(format!("throttled: {reply}"))
    }
}

/// Sends counted per 100 ms slot over [`METER_WINDOW`].
#[derive(Debug, Default)]
struct Meter {
    /// (slot start, sends in it), oldest first.
    slots: std::collections::VecDeque<(Instant, u32)>,
}

impl Meter {
    const SLOT: Duration = Duration::from_millis(100);

    fn add(&mut self, now: Instant) {
        match self.slots.back_mut() {
            Some((start, n)) if now - *start < Self::SLOT => *n += 1,
            _ => self.slots.push_back((now, 1)),
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while self
            .slots
            .front()
            .is_some_and(|(start, _)| now - *start > METER_WINDOW)
        {
            self.slots.pop_front();
        }
    }

    /// Sends per second over the time the window covers: since its first send, at
    /// least [`METER_MIN_SPAN`] (a site that has just started sending, fast, is
    /// measured at its pace, not as if the second before had been idle).
    fn per_sec(&mut self, now: Instant) -> f64 {
        self.expire(now);
        let sends: u32 = self.slots.iter().map(|(_, n)| n).sum();
        let span = self
            .slots
            .front()
            .map_or(Duration::ZERO, |(start, _)| now - *start)
            .clamp(METER_MIN_SPAN, METER_WINDOW);
        sends as f64 / span.as_secs_f64()
    }
}

/// The rate `since` a cut from `from` (CUBIC's window function, RFC 9438 section 4.2,
/// with C scaled so that it starts at [`CUT`] of `from` and is back at `from` after
/// [`RECOVER`]).
fn cubic(from: f64, since: Duration) -> f64 {
    let k = RECOVER.as_secs_f64();
    let c = (1.0 - CUT) / k.powi(3);
    let t = since.as_secs_f64() - k;
    (from * (1.0 + c * t.powi(3))).max(MIN_RATE)
}

#[cfg(test)]
mod tests;
