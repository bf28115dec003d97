//! A circuit breaker per provider: after `failures` consecutive failed requests (5xx,
//! network errors, timeouts) it opens and requests skip the provider (its mail goes
//! to the route's next transport, or waits) for `open_for`; then one probe request is
//! let through (half-open): its success closes the circuit, its failure opens it again.
//! Throttles and refusals of one message are answers, not failures.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; nothing else goes until it answers.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    failures: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            failures: failures.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a request go now? An open circuit past its time lets this one through as
    /// the probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// The provider answered (accepted, throttled, or refused one message).
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The request failed. Returns true when this opened the circuit.
    pub fn failed(&mut self, now: Instant) -> bool {
        let open = match self.state {
            State::Closed { failures } if failures + 1 < self.failures => {
                self.state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen => true,
            // A request sent before the circuit opened: it stays open as it is.
            State::Open { .. } => false,
        };
        if open {
            self.state = State::Open {
                until: now + self.open_for,
            };
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let start = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        assert!(!b.failed(start));
        b.succeeded(); // a success in between starts the count again
        assert!(!b.failed(start));
        assert!(!b.failed(start));
        assert!(b.allow(start));
        assert!(b.failed(start), "the third failure in a row opens it");
        assert!(!b.allow(start + Duration::from_secs(9)));
        // After the open time: one probe, nobody else.
        let later = start + Duration::from_secs(10);
        assert!(b.allow(later));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(!b.allow(later));
        // The probe fails: open again for the full time.
        assert!(b.failed(later));
        assert!(!b.allow(later + Duration::from_secs(5)));
        let probe = later + Duration::from_secs(10);
        assert!(b.allow(probe));
        b.succeeded();
        assert!(b.allow(probe));
        assert!(b.allow(probe));
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }
}
