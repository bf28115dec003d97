//! A site's waiting jobs by priority lane: a connection takes every waiting `high`
//! job before any `normal` one and every `normal` one before any `bulk` one, each lane
//! in arrival order, so a password reset never waits behind a campaign's backlog for
//! the same site.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use postroad_queue::Priority;
use tokio::sync::Notify;

/// Jobs (anything with a priority) waiting for a connection.
pub struct Lanes<J> {
    /// High, normal, bulk.
    waiting: Mutex<[VecDeque<J>; 3]>,
    ready: Notify,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

impl<J> Default for Lanes<J> {
    fn default() -> Self {
        Lanes {
            waiting: Mutex::new([VecDeque::new(), VecDeque::new(), VecDeque::new()]),
            ready: Notify::new(),
        }
    }
}

impl<J> Lanes<J> {
    pub fn push(&self, priority: Priority, job: J) {
        self.lock()[lane(priority)].push_back(job);
        self.ready.notify_one();
    }

    /// The first job of the most urgent lane, waiting for one at most `timeout`.
    pub async fn pop(&self, timeout: Duration) -> Option<J> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            // Registered before looking: a push after the look wakes this waiter.
            ready.as_mut().enable();
            if let Some(job) = self.try_pop() {
                return Some(job);
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                return None;
            }
        }
    }

    fn try_pop(&self) -> Option<J> {
        let mut waiting = self.lock();
        let job = waiting.iter_mut().find_map(VecDeque::pop_front);
        let more = waiting.iter().any(|l| !l.is_empty());
        drop(waiting);
        if more {
            // Another waiter may take the rest.
            self.ready.notify_one();
        }
        job
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [VecDeque<J>; 3]> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_most_urgent_lane_goes_first_each_in_arrival_order() {
        let lanes = Lanes::default();
        for i in 0..3 {
            lanes.push(Priority::Bulk, format!("bulk{i}"));
        }
        lanes.push(Priority::Normal, "normal".to_string());
        lanes.push(Priority::High, "high".to_string());
        let mut order = Vec::new();
        while let Some(job) = lanes.pop(Duration::from_millis(10)).await {
            order.push(job);
        }
        assert_eq!(order, ["high", "normal", "bulk0", "bulk1", "bulk2"]);
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_push() {
        let lanes = std::sync::Arc::new(Lanes::default());
        let waiter = tokio::spawn({
            let lanes = lanes.clone();
            async move { lanes.pop(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        lanes.push(Priority::High, 7);
        assert_eq!(waiter.await.unwrap(), Some(7));
        assert_eq!(lanes.pop(Duration::from_millis(1)).await, None::<i32>);
    }
}
