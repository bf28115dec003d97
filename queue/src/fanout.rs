//! The fan-out from the queue's event outbox to the sinks.
//!
//! Each sink has its own reader with its own position in the outbox, so a slow or
//! failing sink only falls behind; it never holds up delivery (events wait on disk, in
//! the outbox) or another sink. A batch a sink fails to take is offered again with an
//! exponential backoff, never dropped. Events leave the outbox once every sink has
//! taken them. On shutdown each reader passes on what is recorded, within the grace
//! period; what is left stays in the outbox for the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sink::EventSink;
use crate::{DeliveryEvent, Queue};

/// First wait after a failure (of a sink or of the outbox); doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The running fan-out.
pub struct Fanout {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The position up to which each sink has taken events, and the outbox trim.
struct Progress {
    taken: Vec<AtomicU64>,
    trimmed: AtomicU64,
}

impl Progress {
    /// Lowest position every sink has reached.
    fn common(&self) -> u64 {
        self.taken
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

impl Fanout {
    /// Starts one reader per sink. With no sink, recorded events are dropped from the
    /// outbox as they come (nothing consumes them).
    pub fn start(queue: Arc<dyn Queue>, sinks: Vec<Arc<dyn EventSink>>) -> Self {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let progress = Arc::new(Progress {
            taken: sinks.iter().map(|_| AtomicU64::new(0)).collect(),
            trimmed: AtomicU64::new(0),
        });
        if sinks.is_empty() {
            tasks.spawn(discard(queue.clone(), cancel.clone()));
        }
        for (i, sink) in sinks.into_iter().enumerate() {
            let reader = Reader {
                queue: queue.clone(),
                sink,
                index: i,
                progress: progress.clone(),
                cancel: cancel.clone(),
            };
            tasks.spawn(reader.run());
        }
        tasks.close();
        Self { cancel, tasks }
    }

    /// Stops the readers once they have passed on what is recorded (events recorded
    /// from now on wait for the next start), waiting at most `grace`.
    pub async fn close(self, grace: Duration) {
        self.cancel.cancel();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "event sinks did not catch up before shutdown; the rest stays in the outbox"
            );
        }
    }
}

struct Reader {
    queue: Arc<dyn Queue>,
    sink: Arc<dyn EventSink>,
    index: usize,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

impl Reader {
    async fn run(self) {
        let name = self.sink.name();
        let batching = self.sink.batching();
        let max = batching.max_batch.max(1);
        let mut committed = self.queue.events_committed();
        let mut position = 0u64;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let seen = *committed.borrow_and_update();
            let batch = match self.queue.events_after(position, max).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(sink = name, "cannot read the event outbox: {e}");
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(&(last, _)) = batch.last() else {
                // Everything recorded so far is passed on (numbers may have gaps).
                position = position.max(seen);
                if self.cancel.is_cancelled() {
                    return;
                }
                tokio::select! {
                    changed = committed.changed() => if changed.is_err() { return },
                    () = self.cancel.cancelled() => {}
                }
                continue;
            };
            let mut batch = batch;
            if batch.len() < max && !batching.linger.is_zero() && !self.cancel.is_cancelled() {
                // Let the batch fill a little: fewer, larger writes at low load. Only
                // what came after it is read again.
                tokio::select! {
                    () = tokio::time::sleep(batching.linger) => {}
                    () = self.cancel.cancelled() => {}
                }
                if let Ok(more) = self.queue.events_after(last, max - batch.len()).await {
                    batch.extend(more);
                }
            }
            let last = batch.last().map_or(last, |&(seq, _)| seq);
            let events: Vec<DeliveryEvent> = batch.into_iter().map(|(_, e)| e).collect();
            backoff = FIRST_BACKOFF;
            loop {
                match self.sink.write(&events).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(
                            sink = name,
                            events = events.len(),
                            "event sink failed ({e}); retrying in {backoff:?}"
                        );
                        if self.cancel.is_cancelled() || !self.pause(&mut backoff).await {
                            return;
                        }
                    }
                }
            }
            position = last;
            self.progress.taken[self.index].store(last, Ordering::Release);
            self.trim().await;
        }
    }

    /// Removes from the outbox what every sink has taken.
    async fn trim(&self) {
        let common = self.progress.common();
        if self.progress.trimmed.fetch_max(common, Ordering::AcqRel) >= common {
            return;
        }
        if let Err(e) = self.queue.events_taken(common).await {
            // Taken events left in the outbox are offered again after a restart.
            tracing::warn!("cannot remove taken events from the outbox: {e}");
            self.progress
                .trimmed
                .fetch_min(common - 1, Ordering::AcqRel);
        }
    }

    /// Waits `backoff` (then doubles it); false when shutdown came first.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.cancel.cancelled() => false,
        }
    }
}

/// With no sink: forgets events as they are recorded.
async fn discard(queue: Arc<dyn Queue>, cancel: CancellationToken) {
    let mut committed = queue.events_committed();
    loop {
        let seen = *committed.borrow_and_update();
        if seen > 0
            && let Err(e) = queue.events_taken(seen).await
        {
            tracing::warn!("cannot remove events from the outbox: {e}");
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}
