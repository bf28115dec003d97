//! Message rates shared by every relay process, with Redis (`[redis] url`): a rate
//! (a site's `max_message_rate`, a provider's) is one schedule in Redis per key
//! (`postroad:rate:<key>`: the time its next free slot starts, in microseconds of
//! Redis's clock; GCRA's theoretical arrival time), advanced by a Lua script. A process
//! reserves its send slots in batches of a fifth of a second's worth: one round trip
//! per batch, never per message. Reservations follow each other in the order they
//! were asked for, so the processes take turns (each gets a share) and together never
//! send faster than the rate: a slot is used at its time, and slots a process fell
//! behind on are given up rather than used late.
//!
//! Redis down: each process paces alone (its own pacer still holds the rate), and says
//! so once per outage. Without Redis the pacer alone holds the rate, per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postroad_redis_link::RedisLink;
use tokio::time::Instant;

/// A reservation is this much of the rate's worth of slots.
const BATCH_SPAN: Duration = Duration::from_millis(200);

/// Reserves `want` slots of `interval_us` after the last reservation (or now): returns
/// the microseconds until the first of them. ARGV: interval_us, want, [now_us].
const SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local start = tat
tat = tat + want * interval
redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
return start - now
"#;

/// The slots of one rate.
pub struct SharedRate {
    link: RedisLink,
    key: String,
    script: redis::Script,
    /// What is left of this process's reservation (one reserver at a time).
    reserved: tokio::sync::Mutex<Reserved>,
    /// Set while Redis fails (said once).
    failing: AtomicBool,
}

/// The unused part of a reservation: `left` slots, `interval` apart from `next`.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    next: Instant,
    left: u64,
    interval: Duration,
}

impl SharedRate {
    pub fn new(link: RedisLink, key: &str) -> Self {
        Self {
            link,
            key: format!("postroad:rate:{key}"),
            script: redis::Script::new(SCRIPT),
            reserved: tokio::sync::Mutex::new(Reserved {
                next: Instant::now(),
                left: 0,
                interval: Duration::ZERO,
            }),
            failing: AtomicBool::new(false),
        }
    }

    /// Waits for a slot under `per_sec` shared by every process.
    pub async fn acquire(&self, per_sec: f64) {
        let interval = interval(per_sec);
        let slot = {
            let mut reserved = self.reserved.lock().await;
            let now = Instant::now();
            // A slot more than an interval old is given up: used now it would add to
            // what the other processes send now.
            if reserved.interval != interval || reserved.next + interval < now {
                reserved.left = 0;
            }
            if reserved.left == 0 {
                let want = batch(per_sec);
                match self.reserve(per_sec, want, None).await {
                    Ok(wait) => {
                        self.recovered();
                        *reserved = Reserved {
                            next: now + wait,
                            left: want,
                            interval,
                        };
                    }
                    Err(e) => {
                        if !self.failing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(key = %self.key, error = %e, "shared rate unavailable; pacing this process alone");
                        }
                        return;
                    }
                }
            }
            let slot = reserved.next;
            reserved.next += interval;
            reserved.left -= 1;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(key = %self.key, "shared rate available again");
        }
    }

    /// One script call: reserves `want` slots at `per_sec` after those already
    /// reserved; how long until the first of them. `now_us` stands in for Redis's
    /// clock in tests.
    pub async fn reserve(
        &self,
        per_sec: f64,
        want: u64,
        now_us: Option<u64>,
    ) -> Result<Duration, postroad_redis_link::RedisError> {
        let mut invocation = self.script.key(&self.key);
        invocation
            .arg(interval(per_sec).as_micros() as u64)
            .arg(want.max(1));
        if let Some(now) = now_us {
            invocation.arg(now);
        }
        let wait_us: u64 = self.link.invoke(&invocation).await?;
        Ok(Duration::from_micros(wait_us))
    }
}

/// Time between two slots at `per_sec` (at least a microsecond).
fn interval(per_sec: f64) -> Duration {
    Duration::from_micros((1e6 / per_sec).max(1.0) as u64)
}

/// Slots reserved at once at `per_sec`: a fifth of a second's worth, at least one.
pub fn batch(per_sec: f64) -> u64 {
    (per_sec * BATCH_SPAN.as_secs_f64()).ceil().max(1.0) as u64
}
