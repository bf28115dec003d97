//! A provider's request slots, handed out by priority lane: when every slot is busy,
//! the next free one goes to a waiting `high` job before any `normal` one and to a
//! `normal` one before any `bulk` one (each lane in arrival order), so a campaign
//! that fills a provider's quota never holds a password reset behind its backlog.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use postroad_queue::Priority;
use tokio::sync::oneshot;

/// A number of slots and the jobs waiting for one, by lane.
pub struct PrioritySlots {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    free: usize,
    /// High, normal, bulk.
    waiting: [VecDeque<oneshot::Sender<Slot>>; 3],
}

/// A slot held; dropping it hands it to the most urgent waiter, or frees it.
pub struct Slot {
    inner: Option<Arc<Mutex<Inner>>>,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

impl PrioritySlots {
    pub fn new(slots: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                free: slots,
                waiting: Default::default(),
            })),
        }
    }

    /// A slot, once one is free for `priority`.
    pub async fn acquire(&self, priority: Priority) -> Slot {
        let wait = {
            let mut inner = lock(&self.inner);
            if inner.free > 0 {
                inner.free -= 1;
                return Slot {
                    inner: Some(self.inner.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            inner.waiting[lane(priority)].push_back(tx);
            rx
        };
        // The sender is only dropped after a slot was sent, or with the slots (never
        // while this handle lives): a slot always comes.
        match wait.await {
            Ok(slot) => slot,
            Err(_) => unreachable!("the slots outlive their waiters"),
        }
    }

    /// Jobs waiting for a slot.
    pub fn waiting(&self) -> usize {
        lock(&self.inner).waiting.iter().map(VecDeque::len).sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.inner.take() else {
            return;
        };
        let mut inner = lock(&shared);
        let mut slot = Slot {
            inner: Some(shared.clone()),
        };
        // The first waiter still waiting takes it; one that gave up (its future was
        // dropped) hands it back here and the next is asked.
        for lane in 0..3 {
            while let Some(waiter) = inner.waiting[lane].pop_front() {
                match waiter.send(slot) {
                    Ok(()) => return,
                    Err(back) => slot = back,
                }
            }
        }
        // No one waits: free it without running this again.
        slot.inner = None;
        inner.free += 1;
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_high_then_normal_then_bulk_each_in_arrival_order() {
        let slots = Arc::new(PrioritySlots::new(1));
        let first = slots.acquire(Priority::Bulk).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("bulk-1", Priority::Bulk),
            ("normal-1", Priority::Normal),
            ("bulk-2", Priority::Bulk),
            ("high-1", Priority::High),
            ("normal-2", Priority::Normal),
            ("high-2", Priority::High),
        ] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            // Each waits before the next asks.
            settle().await;
        }
        assert_eq!(slots.waiting(), 6);
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [
                "high-1", "high-2", "normal-1", "normal-2", "bulk-1", "bulk-2"
            ]
        );
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_a_slot() {
        let slots = Arc::new(PrioritySlots::new(1));
        let held = slots.acquire(Priority::Normal).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), slots.acquire(Priority::High));
        assert!(gave_up.await.is_err());
        drop(held);
        // The slot is free again, not lost to the waiter that left.
        let again = tokio::time::timeout(Duration::from_secs(5), slots.acquire(Priority::Bulk));
        assert!(again.await.is_ok());
    }

    #[tokio::test]
    async fn every_slot_is_used_before_anyone_waits() {
        let slots = PrioritySlots::new(3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slots.acquire(Priority::Bulk).await);
        }
        assert_eq!(held.len(), 3);
        assert_eq!(slots.waiting(), 0);
    }
}
