//! Which message to send next, and when the run is over: a count (`-n`), a duration,
//! an open-loop rate (`--rate`, through the [`Pacer`]), or a stop (error, Ctrl-C).
//! Shared by every worker of `loadtest smtp` and `loadtest http`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::pacer::{Exhausted, Pacer, Ticket};

/// A message to send: its number and, in open loop, its place in the schedule.
pub struct Claim {
    pub seq: u64,
    pub ticket: Option<Ticket>,
}

pub struct Schedule {
    /// Most messages, if the run has a count.
    pub limit: Option<u64>,
    /// When the run ends, if it has a duration (closed loop; the pacer has its own).
    pub deadline: Option<Instant>,
    pub pacer: Option<Pacer>,
    next_seq: AtomicU64,
    stop: AtomicBool,
    stop_reason: Mutex<Option<String>>,
}

impl Schedule {
    pub fn new(limit: Option<u64>, deadline: Option<Instant>, pacer: Option<Pacer>) -> Self {
        Self {
            limit,
            deadline,
            pacer,
            next_seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Ends the run (the first reason given is kept).
    pub fn stop_with(&self, reason: impl Into<String>) {
        let mut r = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.stop.store(true, Relaxed);
    }

    /// Why the run ended: the stop reason, or the count reached.
    pub fn stop_reason(&self) -> String {
        self.stop_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| match self.limit {
                Some(n) => format!("all {n} messages sent"),
                None => "done".to_owned(),
            })
    }

    /// The next message to send, or None when the run is over. In open loop it
    /// returns once the message is due.
    pub async fn claim(&self) -> Option<Claim> {
        if self.stopped() {
            return None;
        }
        if let Some(pacer) = &self.pacer {
            return match pacer.claim() {
                Ok(ticket) => {
                    let stopped = async {
                        while !self.stopped() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = Pacer::wait(&ticket) => {}
                        _ = stopped => return None,
                    }
                    Some(Claim {
                        seq: ticket.seq,
                        ticket: Some(ticket),
                    })
                }
                Err(Exhausted::Duration) => {
                    self.stop_with("duration reached");
                    None
                }
                // not a stop: workers holding earlier numbers still send them
                Err(Exhausted::Count) => None,
            };
        }
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            self.stop_with("duration reached");
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Relaxed) + 1;
        if let Some(n) = self.limit
            && seq > n
        {
            // not a stop: workers holding earlier numbers still send them
            return None;
        }
        Some(Claim { seq, ticket: None })
    }

    /// Waits 10 ms doubling to 1 s (`n` counts the waits), cut short by a stop or the
    /// end of the run.
    pub async fn backoff(&self, n: &mut u32) {
        let mut left = Duration::from_millis(10 << (*n).min(7)).min(Duration::from_secs(1));
        *n += 1;
        if let Some(d) = self.deadline {
            left = left.min(d.saturating_duration_since(Instant::now()));
        }
        while !left.is_zero() && !self.stopped() {
            let step = left.min(Duration::from_millis(50));
            tokio::time::sleep(step).await;
            left -= step;
        }
    }
}
