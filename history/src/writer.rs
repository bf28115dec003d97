//! The batching history writer.
//!
//! One task owns the receiving end of a bounded channel. It waits for an event, then
//! collects more until it has `max_batch` or `flush_interval` has passed since the
//! first, and stores them with [`HistoryStore::insert`]: one transaction, a few
//! multi-row statements, one commit. Flush and shutdown requests travel through the
//! same channel, so they are ordered after the events their caller sent before them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postroad_queue::DeliveryEvent;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{HistoryConfig, HistoryError, HistoryStore, Result};

/// Counters of the writer since it started, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HistoryStats {
    /// Events taken from the channel.
    pub received: u64,
    /// Events stored (new rows).
    pub written: u64,
    /// Events ignored because their `event_id` was already stored (replays).
    pub duplicates: u64,
    /// Transactions committed (each one batch).
    pub transactions: u64,
    /// Failed write attempts (each is retried; see `history/README.md`).
    pub errors: u64,
    /// Events given up at shutdown because the database kept failing. Zero unless the
    /// database was broken while the writer stopped; each loss is logged as an error.
    pub lost: u64,
}

impl HistoryStats {
    /// Events received but not yet written (held in memory by the writer).
    pub fn pending(&self) -> u64 {
        self.received
            .saturating_sub(self.written + self.duplicates + self.lost)
    }
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    duplicates: AtomicU64,
    transactions: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HistoryStats {
        HistoryStats {
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

// Nearly every message is an event: boxing it would cost an allocation per event to
// save space in the rare control messages.
#[allow(clippy::large_enum_variant)]
enum Command {
    Event(DeliveryEvent),
    Flush(oneshot::Sender<Result<()>>),
    Shutdown(oneshot::Sender<Result<HistoryStats>>),
}

/// [`HistorySender::send`] failed: the writer has stopped. The event is handed back.
#[derive(Debug, thiserror::Error)]
#[error("the history writer has stopped")]
pub struct SendError(pub Box<DeliveryEvent>);

/// [`HistorySender::try_send`] failed. The event is handed back.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// `channel_capacity` events are already waiting for the writer.
    #[error("the history channel is full")]
    Full(Box<DeliveryEvent>),
    /// The writer has stopped.
    #[error("the history writer has stopped")]
    Closed(Box<DeliveryEvent>),
}

fn into_event(command: Command) -> Box<DeliveryEvent> {
    match command {
        Command::Event(event) => Box::new(event),
        // Only `send` and `try_send` put events in, and only they get them back.
        Command::Flush(_) | Command::Shutdown(_) => unreachable!("not an event"),
    }
}

/// Hands events to the history writer. Cheap to clone; the writer stops once every
/// clone is dropped (or on [`shutdown`](Self::shutdown)), after writing everything
/// already sent.
#[derive(Debug, Clone)]
pub struct HistorySender {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Event(e) => f.debug_tuple("Event").field(&e.event_id).finish(),
            Command::Flush(_) => f.write_str("Flush"),
            Command::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl HistorySender {
    /// Queues `event` for writing, waiting while the channel is full (backpressure).
    pub async fn send(&self, event: DeliveryEvent) -> Result<(), SendError> {
        self.tx
            .send(Command::Event(event))
            .await
            .map_err(|e| SendError(into_event(e.0)))
    }

    /// Queues `event` for writing if there is room now.
    pub fn try_send(&self, event: DeliveryEvent) -> Result<(), TrySendError> {
        self.tx
            .try_send(Command::Event(event))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(c) => TrySendError::Full(into_event(c)),
                mpsc::error::TrySendError::Closed(c) => TrySendError::Closed(into_event(c)),
            })
    }

    /// Writes everything this sender sent before the call now, without waiting for the
    /// batch to fill, and returns once it is committed. An error means the write
    /// failed: the events are still held by the writer and will be retried.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| HistoryError::WriterStopped)?;
        rx.await.map_err(|_| HistoryError::WriterStopped)?
    }

    /// Stops the writer for every sender: events already sent (by anyone) are written,
    /// later sends fail. Returns the writer's final counters once it has finished.
    pub async fn shutdown(self) -> Result<HistoryStats> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| HistoryError::WriterStopped)?;
        rx.await.map_err(|_| HistoryError::WriterStopped)?
    }

    /// The writer's counters now.
    pub fn stats(&self) -> HistoryStats {
        self.counters.snapshot()
    }

    /// Whether the writer has stopped (sends will fail).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// How the writer retries a failing database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts per round; the wait between them starts at `backoff` and doubles.
    pub attempts: u32,
    pub backoff: Duration,
    /// Pause after a failed round (doubling up to `max_pause`). The writer reads no
    /// events meanwhile once its batch is full, so senders feel backpressure.
    pub pause: Duration,
    pub max_pause: Duration,
    /// Failed rounds tolerated after shutdown was asked for, before giving up.
    pub shutdown_rounds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(100),
            pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(10),
            shutdown_rounds: 3,
        }
    }
}

/// Starts the batching writer task.
#[derive(Debug)]
pub struct HistoryWriter;

impl HistoryWriter {
    /// Spawns the writer on the current Tokio runtime. The task ends when every
    /// [`HistorySender`] is dropped or one calls [`HistorySender::shutdown`], after
    /// writing everything sent; it returns the final counters, or
    /// [`HistoryError::Unflushed`] if the database kept failing to the end.
    ///
    /// Out-of-range config values are clamped (the config loader rejects them first
    /// with [`HistoryConfig::validate`]).
    pub fn spawn(
        store: HistoryStore,
        config: &HistoryConfig,
    ) -> (HistorySender, JoinHandle<Result<HistoryStats>>) {
        Self::spawn_with(store, config, RetryPolicy::default())
    }

    pub(crate) fn spawn_with(
        store: HistoryStore,
        config: &HistoryConfig,
        retry: RetryPolicy,
    ) -> (HistorySender, JoinHandle<Result<HistoryStats>>) {
        let max_batch = config.max_batch.clamp(1, HistoryConfig::MAX_BATCH_LIMIT);
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            store,
            rx,
            max_batch,
            flush_interval: config.flush_interval(),
            retry,
            counters: counters.clone(),
            pending: Vec::with_capacity(max_batch),
            flush_waiters: Vec::new(),
            shutdown_waiters: Vec::new(),
            closing: false,
            drained: false,
            last_error: String::new(),
        };
        let handle = tokio::spawn(writer.run());
        (HistorySender { tx, counters }, handle)
    }
}

struct Writer {
    store: HistoryStore,
    rx: mpsc::Receiver<Command>,
    max_batch: usize,
    flush_interval: Duration,
    retry: RetryPolicy,
    counters: Arc<Counters>,
    /// Events received and not yet committed, in arrival order.
    pending: Vec<DeliveryEvent>,
    flush_waiters: Vec<oneshot::Sender<Result<()>>>,
    shutdown_waiters: Vec<oneshot::Sender<Result<HistoryStats>>>,
    /// Shutdown was asked for, or every sender is gone: drain and stop.
    closing: bool,
    /// The channel is closed and empty.
    drained: bool,
    last_error: String,
}

impl Writer {
    async fn run(mut self) -> Result<HistoryStats> {
        tracing::debug!(db = %self.store.location(), max_batch = self.max_batch, "history writer started");
        let mut failed_rounds = 0u32;
        let mut failed_rounds_closing = 0u32;
        loop {
            if self.closing {
                self.fill_closing().await;
            } else {
                self.gather().await;
            }
            if !self.pending.is_empty() {
                if self.write_round().await {
                    failed_rounds = 0;
                } else {
                    failed_rounds += 1;
                    self.answer_flushes();
                    if self.closing {
                        failed_rounds_closing += 1;
                        if failed_rounds_closing >= self.retry.shutdown_rounds {
                            return self.give_up().await;
                        }
                    }
                    tokio::time::sleep(self.pause(failed_rounds)).await;
                    continue;
                }
            }
            self.answer_flushes();
            if self.closing && self.drained {
                break;
            }
        }
        let stats = self.counters.snapshot();
        tracing::debug!(?stats, "history writer stopped");
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(Ok(stats));
        }
        Ok(stats)
    }

    fn pause(&self, failed_rounds: u32) -> Duration {
        let factor = 1u32 << failed_rounds.saturating_sub(1).min(16);
        self.retry
            .pause
            .saturating_mul(factor)
            .min(self.retry.max_pause)
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Event(event) => {
                Counters::add(&self.counters.received, 1);
                self.pending.push(event);
            }
            Command::Flush(waiter) => self.flush_waiters.push(waiter),
            Command::Shutdown(waiter) => {
                self.shutdown_waiters.push(waiter);
                if !self.closing {
                    tracing::debug!("history writer shutting down");
                    self.closing = true;
                    // Later sends fail; what is already in the channel is still read.
                    self.rx.close();
                }
            }
        }
    }

    /// Waits for the first event (unless some are pending already), then collects
    /// until the batch is full, `flush_interval` has passed, or a flush or shutdown
    /// is asked for.
    async fn gather(&mut self) {
        if self.pending.is_empty() {
            match self.rx.recv().await {
                Some(command) => self.accept(command),
                None => {
                    self.closing = true;
                    self.drained = true;
                    return;
                }
            }
        }
        let deadline = Instant::now() + self.flush_interval;
        while self.pending.len() < self.max_batch && self.flush_waiters.is_empty() && !self.closing
        {
            let command = match self.rx.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closing = true;
                    self.drained = true;
                    return;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::select! {
                        command = self.rx.recv() => match command {
                            Some(command) => command,
                            None => {
                                self.closing = true;
                                self.drained = true;
                                return;
                            }
                        },
                        () = tokio::time::sleep_until(deadline) => return,
                    }
                }
            };
            self.accept(command);
        }
    }

    /// While closing: takes what is left in the channel, up to a batch.
    async fn fill_closing(&mut self) {
        while !self.drained && self.pending.len() < self.max_batch {
            match self.rx.recv().await {
                Some(command) => self.accept(command),
                None => self.drained = true,
            }
        }
    }

    /// Writes the pending batch, retrying with backoff. On success the batch is gone;
    /// on failure it is kept for the next round.
    async fn write_round(&mut self) -> bool {
        let mut backoff = self.retry.backoff;
        for attempt in 1..=self.retry.attempts {
            match self.store.insert(&self.pending).await {
                Ok(outcome) => {
                    Counters::add(&self.counters.written, outcome.inserted);
                    Counters::add(&self.counters.duplicates, outcome.duplicates);
                    Counters::add(&self.counters.transactions, 1);
                    if outcome.duplicates > 0 {
                        tracing::debug!(
                            duplicates = outcome.duplicates,
                            "history: replayed events ignored"
                        );
                    }
                    self.pending.clear();
                    return true;
                }
                Err(error) => {
                    Counters::add(&self.counters.errors, 1);
                    self.last_error = error.to_string();
                    if attempt < self.retry.attempts {
                        tracing::warn!(
                            attempt, events = self.pending.len(), %error,
                            "history write failed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                    } else {
                        tracing::error!(
                            attempts = self.retry.attempts, events = self.pending.len(), %error,
                            "history write failed; keeping the batch for the next attempt"
                        );
                    }
                }
            }
        }
        false
    }

    /// Answers flush requests: done if nothing is pending, else the write failed.
    fn answer_flushes(&mut self) {
        for waiter in self.flush_waiters.drain(..) {
            let answer = if self.pending.is_empty() {
                Ok(())
            } else {
                Err(HistoryError::WriteFailed {
                    pending: self.pending.len(),
                    reason: self.last_error.clone(),
                })
            };
            let _ = waiter.send(answer);
        }
    }

    /// Shutdown with a database that keeps failing: count and log what is lost.
    async fn give_up(mut self) -> Result<HistoryStats> {
        let mut lost = self.pending.len() as u64;
        self.pending.clear();
        while let Some(command) = self.rx.recv().await {
            match command {
                Command::Event(_) => {
                    Counters::add(&self.counters.received, 1);
                    lost += 1;
                }
                Command::Flush(waiter) => {
                    let _ = waiter.send(Err(HistoryError::Unflushed { events: lost }));
                }
                Command::Shutdown(waiter) => self.shutdown_waiters.push(waiter),
            }
        }
        Counters::add(&self.counters.lost, lost);
        tracing::error!(
            events = lost, error = %self.last_error,
            "history writer stopping with events not written: the database kept failing"
        );
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(Err(HistoryError::Unflushed { events: lost }));
        }
        Err(HistoryError::Unflushed { events: lost })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{EventKind, MessageId};
    use uuid::Uuid;

    fn event(n: u64) -> DeliveryEvent {
        DeliveryEvent {
            event_id: Uuid::now_v7(),
            kind: EventKind::Delivered,
            message_id: MessageId::new(),
            sender: "app@example.test".into(),
            recipient: format!("user{n}@example.net"),
            domain: "example.net".into(),
            at_ms: 1_700_000_000_000 + n,
            attempt: 1,
            remote_host: None,
            reply: None,
            meta: Default::default(),
        }
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(5),
            pause: Duration::from_millis(10),
            max_pause: Duration::from_millis(20),
            shutdown_rounds: 2,
        }
    }

    /// Makes every insert fail until the returned connection drops the trigger.
    async fn break_inserts(path: &std::path::Path) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "CREATE TRIGGER injected_failure BEFORE INSERT ON email_history \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn
    }

    async fn repair_inserts(mut conn: sqlx::SqliteConnection) {
        sqlx::query("DROP TRIGGER injected_failure")
            .execute(&mut conn)
            .await
            .unwrap();
    }

    async fn rows(store: &HistoryStore) -> i64 {
        store
            .count_by_kind()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| *n as i64)
            .sum()
    }

    #[tokio::test]
    async fn a_failing_batch_is_kept_and_written_once_the_database_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let store = HistoryStore::open(&path).await.unwrap();
        let config = HistoryConfig {
            max_batch: 2,
            channel_capacity: 2,
            flush_interval_ms: 60_000,
            ..Default::default()
        };
        let (sender, handle) = HistoryWriter::spawn_with(store.clone(), &config, fast_retry());
        let breaker = break_inserts(&path).await;

        // A flush reports the failure; the event stays with the writer.
        sender.send(event(0)).await.unwrap();
        let failed = sender.flush().await;
        assert!(
            matches!(failed, Err(HistoryError::WriteFailed { pending: 1, .. })),
            "{failed:?}"
        );
        // One more event fills the writer's batch, which it cannot write; two more fill
        // the channel behind it, and then there is no room: backpressure, no drop.
        for n in 1..4 {
            sender.send(event(n)).await.unwrap();
        }
        assert!(matches!(
            sender.try_send(event(4)),
            Err(TrySendError::Full(_))
        ));
        let stats = sender.stats();
        assert_eq!(stats.written, 0);
        assert!(stats.errors >= 2, "{stats:?}");
        assert_eq!(rows(&store).await, 0);

        repair_inserts(breaker).await;
        sender.flush().await.unwrap();
        assert_eq!(rows(&store).await, 4);
        let stats = sender.shutdown().await.unwrap();
        assert_eq!((stats.received, stats.written, stats.lost), (4, 4, 0));
        assert_eq!(stats.pending(), 0);
        assert_eq!(handle.await.unwrap().unwrap(), stats);
    }

    #[tokio::test]
    async fn shutdown_with_a_broken_database_reports_what_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let store = HistoryStore::open(&path).await.unwrap();
        let config = HistoryConfig {
            flush_interval_ms: 60_000,
            ..Default::default()
        };
        let (sender, handle) = HistoryWriter::spawn_with(store.clone(), &config, fast_retry());
        let _breaker = break_inserts(&path).await;
        for n in 0..3 {
            sender.send(event(n)).await.unwrap();
        }
        let probe = sender.clone();
        let result = sender.shutdown().await;
        assert!(
            matches!(result, Err(HistoryError::Unflushed { events: 3 })),
            "{result:?}"
        );
        assert!(matches!(
            handle.await.unwrap(),
            Err(HistoryError::Unflushed { events: 3 })
        ));
        let stats = probe.stats();
        assert_eq!((stats.received, stats.written, stats.lost), (3, 0, 3));
        assert!(probe.is_closed());
        assert!(matches!(
            probe.try_send(event(9)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_batch_waits_for_the_flush_interval_then_is_written_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path().join("h.sqlite"))
            .await
            .unwrap();
        let config = HistoryConfig {
            flush_interval_ms: 100,
            ..Default::default()
        };
        let (sender, _handle) = HistoryWriter::spawn(store.clone(), &config);
        let start = std::time::Instant::now();
        sender.send(event(1)).await.unwrap();
        // No flush: the writer must write on its own once the interval has passed.
        let written = tokio::time::timeout(Duration::from_secs(30), async {
            while sender.stats().written == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(written.is_ok(), "the writer never wrote the batch");
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(sender.stats().transactions, 1);
    }
}
