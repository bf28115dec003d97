//! The memory budget for messages being received (`smtp.max_inflight_bytes`).
//!
//! Every DATA or BDAT transfer holds a [`Reservation`] covering the capacity of its
//! message buffer, taken before the buffer grows, so the memory held by messages in
//! flight never exceeds the budget, however many clients send at once.
//!
//! When the budget is used up:
//! * a new transfer waits for its first share (in arrival order) before it is told to
//!   go ahead (`354`, or before its first BDAT chunk is read);
//! * one growing transfer at a time waits for more, with its socket unread (TCP flow
//!   control slows the client); any other transfer that needs more while that one
//!   waits gives up at once (`452 4.3.1`, its data read and dropped), handing its memory
//!   back. Transfers that hold memory never all wait for each other, so some always
//!   finish, and under sustained overload the excess is refused quickly instead of
//!   stalling everyone;
//! * a wait that runs out ends in `452 4.3.1` too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in units of this many bytes (a semaphore counts `u32`
/// permits at a time).
const UNIT: usize = 1024;

/// The smallest share a transfer starts with or grows by (the initial message buffer
/// Postroad always had: most messages fit in it).
pub const MIN_SHARE: usize = 16 * 1024;

/// Bytes that may be held, shared by every session of the server.
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    /// One permit: the right of one growing transfer to wait for memory.
    grow_waiter: Arc<Semaphore>,
    total: usize,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let units = usize::try_from(bytes / UNIT as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(units)),
            grow_waiter: Arc::new(Semaphore::new(1)),
            total: units * UNIT,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    /// A reservation of nothing yet, to grow.
    pub fn empty(&self) -> Reservation {
        Reservation {
            units: self.units.clone(),
            grow_waiter: self.grow_waiter.clone(),
            permit: None,
            bytes: 0,
        }
    }

    /// A reservation of at least `bytes`, waiting until `deadline` for it.
    pub async fn reserve(&self, bytes: usize, deadline: Instant) -> Option<Reservation> {
        let mut reservation = self.empty();
        reservation
            .grow_to(bytes, deadline)
            .await
            .then_some(reservation)
    }
}

/// One transfer's share of the budget, given back on drop.
pub struct Reservation {
    units: Arc<Semaphore>,
    grow_waiter: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives everything back (the transfer no longer keeps its data).
    pub fn release(&mut self) {
        self.permit = None;
        self.bytes = 0;
    }

    /// Grows the reservation to at least `bytes`; false if the budget has no room (the
    /// reservation is unchanged). A first share waits until `deadline`; more for a
    /// transfer already holding some waits only if no other growing transfer is waiting
    /// (see the module docs), else it is refused at once.
    pub async fn grow_to(&mut self, bytes: usize, deadline: Instant) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        let more = (bytes - self.bytes).div_ceil(UNIT);
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        let permit = match self.units.clone().try_acquire_many_owned(more) {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = if self.bytes == 0 {
                    None
                } else {
                    match self.grow_waiter.clone().try_acquire_owned() {
                        Ok(slot) => Some(slot),
                        Err(_) => return false,
                    }
                };
                let acquire = self.units.clone().acquire_many_owned(more);
                match tokio::time::timeout_at(deadline.into(), acquire).await {
                    Ok(Ok(permit)) => permit,
                    // Timed out, or the semaphore was closed (never done).
                    _ => return false,
                }
            }
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes += more as usize * UNIT;
        true
    }
}

/// The smallest budget that holds one largest message and its trace header.
pub fn least_budget(max_message_size: usize) -> u64 {
    max_message_size as u64 + 64 * 1024
}

/// The default budget: a quarter of the memory this process may use (the cgroup limit
/// when there is one, else the machine's), and never less than two of the largest
/// messages (nor than [`least_budget`]).
pub fn default_budget(max_message_size: usize) -> u64 {
    let memory = [memory_total(), cgroup_limit()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(4 << 30);
    (memory / 4)
        .max(2 * max_message_size as u64)
        .max(least_budget(max_message_size))
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .into_iter()
    .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
}

/// How long a transfer may wait for memory: the client is waiting for a reply
/// meanwhile, so no longer than it waits for data, and well within the 2 minutes
/// RFC 5321 (4.5.3.2.2) gives it to wait for the `354`.
pub fn wait_deadline(data_timeout: Duration) -> Instant {
    Instant::now() + data_timeout.min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_never_exceed_the_budget_and_are_given_back() {
        let budget = MemoryBudget::new(256 * 1024);
        let soon = || Instant::now() + Duration::from_millis(20);
        let mut a = budget.reserve(100 * 1024, soon()).await.unwrap();
        let b = budget.reserve(100 * 1024, soon()).await.unwrap();
        assert_eq!(budget.available(), 56 * 1024);
        assert!(!a.grow_to(200 * 1024, soon()).await, "over the budget");
        assert_eq!(a.bytes(), 100 * 1024);
        assert!(budget.reserve(100 * 1024, soon()).await.is_none());
        drop(b);
        assert!(a.grow_to(200 * 1024, soon()).await);
        assert_eq!(budget.available(), 56 * 1024);
        drop(a);
        assert_eq!(budget.available(), budget.total());
    }

    #[tokio::test]
    async fn only_one_growing_transfer_waits_the_others_give_up_at_once() {
        let budget = Arc::new(MemoryBudget::new(256 * 1024));
        let later = || Instant::now() + Duration::from_secs(30);
        let mut a = budget.reserve(128 * 1024, later()).await.unwrap();
        let mut b = budget.reserve(128 * 1024, later()).await.unwrap();
        let waiter = tokio::spawn(async move {
            let grown = a
                .grow_to(192 * 1024, Instant::now() + Duration::from_secs(30))
                .await;
            (grown, a.bytes())
        });
        while budget.grow_waiter.available_permits() == 1 {
            tokio::task::yield_now().await;
        }
        // `a` waits for room; `b` needing more too is refused at once and gives its
        // memory back, which lets `a` grow.
        let started = Instant::now();
        assert!(!b.grow_to(192 * 1024, later()).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        b.release();
        assert_eq!(waiter.await.unwrap(), (true, 192 * 1024));
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_memory_when_another_is_dropped() {
        let budget = Arc::new(MemoryBudget::new(128 * 1024));
        let held = budget
            .reserve(128 * 1024, Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .reserve(64 * 1024, Instant::now() + Duration::from_secs(30))
                    .await
                    .map(|r| r.bytes())
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(64 * 1024));
    }

    #[test]
    fn default_is_at_least_two_messages() {
        assert!(default_budget(25 << 20) >= 50 << 20);
    }
}
