//! Message rates shared by every relay process, with Redis (`[redis] url`): the
//! `max_message_rate` of a site is one GCRA (generic cell rate algorithm) in Redis per
//! site key (`postroad:rate:<site>`: its theoretical arrival time, in microseconds of
//! Redis's clock), run by a Lua script, so that all processes together stay within it.
//! A process takes its send slots in batches of a fifth of a second's worth: one round
//! trip per batch, never per message. Slots taken are always used (messages wait for
//! them), so the processes together send at most the rate plus one batch per process.
//!
//! Redis down: each process paces alone (its own pacer still holds the rate), and says
//! so once per outage. Without Redis the pacer alone holds the rate, per process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postroad_redis_link::RedisLink;

/// A batch is this much of the rate's worth of slots.
const BATCH_SPAN: Duration = Duration::from_millis(200);

/// Takes slots `want` at a time: returns `{granted, wait_us}` (when nothing is granted,
/// how long until a slot frees). ARGV: interval_us, burst_us, want, [now_us].
const SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = math.floor((now + burst - tat) / interval)
if room < 1 then
  return {0, tat - burst - now + interval}
end
local granted = math.min(want, room)
tat = tat + granted * interval
redis.call('SET', KEYS[1], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
return {granted, 0}
"#;

/// The slots of one site.
pub struct SharedRate {
    link: RedisLink,
    key: String,
    script: redis::Script,
    /// Slots taken and not used yet.
    local: Mutex<u64>,
    /// Set while Redis fails (said once).
    failing: AtomicBool,
}

/// What one script call gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u64,
    /// When nothing was granted: wait this long before asking again.
    pub wait: Duration,
}

impl SharedRate {
    pub fn new(link: RedisLink, site: &str) -> Self {
        Self {
            link,
            key: format!("postroad:rate:{site}"),
            script: redis::Script::new(SCRIPT),
            local: Mutex::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// Waits for a slot under `per_sec` shared by every process.
    pub async fn acquire(&self, per_sec: f64) {
        loop {
            {
                let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                if *local > 0 {
                    *local -= 1;
                    return;
                }
            }
            let want = (per_sec * BATCH_SPAN.as_secs_f64()).ceil().max(1.0) as u64;
            match self.take(per_sec, want, None).await {
                Ok(grant) if grant.granted > 0 => {
                    self.recovered();
                    let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                    *local += grant.granted - 1;
                    return;
                }
                Ok(grant) => {
                    self.recovered();
                    tokio::time::sleep(grant.wait.max(Duration::from_millis(1))).await;
                }
                Err(e) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(key = %self.key, error = %e, "shared rate unavailable; pacing this process alone");
                    }
                    return;
                }
            }
        }
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(key = %self.key, "shared rate available again");
        }
    }

    /// One script call: up to `want` slots at `per_sec` (burst: one batch). `now_us`
    /// stands in for Redis's clock in tests.
    pub async fn take(
        &self,
        per_sec: f64,
        want: u64,
        now_us: Option<u64>,
    ) -> Result<Grant, postroad_redis_link::RedisError> {
        let interval_us = (1e6 / per_sec).max(1.0) as u64;
        let burst_us = interval_us * want.max(1);
        let mut invocation = self.script.key(&self.key);
        invocation.arg(interval_us).arg(burst_us).arg(want);
        if let Some(now) = now_us {
            invocation.arg(now);
        }
        let (granted, wait_us): (u64, u64) = self.link.invoke(&invocation).await?;
        Ok(Grant {
            granted,
            wait: Duration::from_micros(wait_us),
        })
    }
}
