//! Open-loop pacing (`--rate`): message `seq` (1, 2, ...) is due at
//! `start + (seq - 1) / rate`, whatever happened to the messages before it.
//!
//! Connections take tickets in order and wait until each is due. When every connection
//! is busy, a ticket that is already due waits for a free connection, but its latency
//! still counts from its due time: a slow server shows up as growing latency instead
//! of as fewer messages sent (no coordinated omission, as in wrk2).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// A message's place in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub seq: u64,
    /// When it is due (tokio's clock, so tests can pause it).
    pub due: Instant,
    /// The same moment as Unix time in microseconds (for `X-Loadtest-Sent-At`).
    pub due_unix_us: u64,
}

/// Hands out tickets at a fixed rate; shared by every connection.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    start_unix_us: u64,
    rate: f64,
    limit: Option<u64>,
    /// No ticket is due at or after this offset from `start`.
    duration: Option<Duration>,
    next: AtomicU64,
}

/// Why [`Pacer::claim`] gave no ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// All `limit` tickets were given out.
    Count,
    /// The next ticket would be due after the run's duration.
    Duration,
}

impl Pacer {
    /// `rate` messages per second from `start` (which is `start_unix_us` on the wall
    /// clock); at most `limit` tickets, none due at or after `start + duration`.
    pub fn new(
        rate: f64,
        start: Instant,
        start_unix_us: u64,
        limit: Option<u64>,
        duration: Option<Duration>,
    ) -> Result<Self, String> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("bad rate {rate}: want messages per second > 0"));
        }
        Ok(Self {
            start,
            start_unix_us,
            rate,
            limit,
            duration,
            next: AtomicU64::new(1),
        })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How long after the start message `seq` is due.
    pub fn offset(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq.saturating_sub(1) as f64 / self.rate)
    }

    /// The next ticket in order (it may be due in the future: wait with
    /// [`Pacer::wait`]), or why there is none.
    pub fn claim(&self) -> Result<Ticket, Exhausted> {
        let seq = self.next.fetch_add(1, Relaxed);
        if self.limit.is_some_and(|n| seq > n) {
            return Err(Exhausted::Count);
        }
        let offset = self.offset(seq);
        if self.duration.is_some_and(|d| offset >= d) {
            return Err(Exhausted::Duration);
        }
        Ok(Ticket {
            seq,
            due: self.start + offset,
            due_unix_us: self.start_unix_us + offset.as_micros() as u64,
        })
    }

    /// Sleeps until the ticket is due (returns at once when it already is).
    pub async fn wait(ticket: &Ticket) {
        tokio::time::sleep_until(ticket.due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// `workers` connections take tickets and "send" each for `service` (on tokio's
    /// paused clock); returns (seq, started, latency from due, latency from start).
    async fn simulate(
        rate: f64,
        n: u64,
        workers: usize,
        service: Duration,
    ) -> Vec<(u64, Duration, Duration, Duration)> {
        let start = Instant::now();
        let pacer = Arc::new(Pacer::new(rate, start, 1_000_000, Some(n), None).unwrap());
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (pacer, out) = (pacer.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(t) = pacer.claim() {
                    Pacer::wait(&t).await;
                    let sent = Instant::now();
                    tokio::time::sleep(service).await; // the server's reply time
                    let done = Instant::now();
                    out.lock()
                        .unwrap()
                        .push((t.seq, sent - start, done - t.due, done - sent));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut v = out.lock().unwrap().clone();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_schedule_when_the_server_keeps_up() {
        // 10/s, one connection, 50 ms per message: every message goes out on time
        let v = simulate(10.0, 20, 1, Duration::from_millis(50)).await;
        assert_eq!(v.len(), 20);
        for (i, (seq, sent, from_due, from_send)) in v.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*sent, Duration::from_millis(100 * i as u64));
            assert_eq!(*from_due, Duration::from_millis(50));
            assert_eq!(*from_send, Duration::from_millis(50));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_schedule_when_connections_are_busy() {
        // 100/s due (every 10 ms), 2 connections of 50 ms each: capacity 40/s. The
        // server's own reply time stays 50 ms, but messages wait longer and longer
        // for a connection, and that wait is part of their latency.
        let v = simulate(100.0, 20, 2, Duration::from_millis(50)).await;
        assert_eq!(v.len(), 20);
        for (i, (seq, sent, from_due, from_send)) in v.iter().enumerate() {
            let i = i as u64;
            assert_eq!(*seq, i + 1);
            // the two connections take tickets in turn: 0 and 10 ms, then 50 and 60, ...
            let started = 50 * (i / 2) + 10 * (i % 2);
            assert_eq!(*sent, Duration::from_millis(started), "seq {seq}");
            assert_eq!(*from_send, Duration::from_millis(50));
            let due = 10 * i;
            assert_eq!(
                *from_due,
                Duration::from_millis(started + 50 - due),
                "seq {seq}"
            );
        }
        // the last message was due at 190 ms and answered at 510 ms
        assert_eq!(v[19].2, Duration::from_millis(320));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_and_unix_times() {
        let start = Instant::now();
        let p = Pacer::new(
            4.0,
            start,
            1_700_000_000_000_000,
            None,
            Some(Duration::from_secs(1)),
        )
        .unwrap();
        let seqs: Vec<Ticket> = std::iter::from_fn(|| p.claim().ok()).collect();
        assert_eq!(seqs.len(), 4); // due at 0, 250, 500, 750 ms; 1000 ms is out
        assert_eq!(seqs[3].due - start, Duration::from_millis(750));
        assert_eq!(seqs[3].due_unix_us, 1_700_000_000_750_000);
        assert_eq!(p.claim(), Err(Exhausted::Duration));
        let p = Pacer::new(1000.0, start, 0, Some(2), None).unwrap();
        assert!(p.claim().is_ok() && p.claim().is_ok());
        assert_eq!(p.claim(), Err(Exhausted::Count));
        assert!(Pacer::new(0.0, start, 0, None, None).is_err());
        assert!(Pacer::new(f64::NAN, start, 0, None, None).is_err());
    }
}
