//! Events from the spool's outbox to sinks: every sink gets every event, a stalled or
//! failing sink holds up nobody and loses nothing, events leave the outbox only once
//! every sink has them, and what no sink took survives a restart.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use postroad_queue::{
    DeliveryEvent, Envelope, EventKind, EventSink, Fanout, Queue, Recipient, Resolution, SinkError,
    Spool, SpoolConfig,
};
use tempfile::TempDir;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Records what it takes; can be held (a stalled sink) or fail its first writes.
#[derive(Default)]
struct Recorder {
    taken: Mutex<Vec<DeliveryEvent>>,
    failures_left: AtomicU32,
    writes: AtomicU32,
    gate: Option<Semaphore>,
}

impl Recorder {
    fn held() -> Self {
        Self {
            gate: Some(Semaphore::new(0)),
            ..Self::default()
        }
    }

    fn failing(times: u32) -> Self {
        Self {
            failures_left: AtomicU32::new(times),
            ..Self::default()
        }
    }

    fn ids(&self) -> Vec<Uuid> {
        let taken = self.taken.lock().unwrap();
        taken.iter().map(|e| e.event_id).collect()
    }
}

#[async_trait]
impl EventSink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError("injected failure".into()));
        }
        self.taken.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

fn open(dir: &TempDir) -> Spool {
    Spool::open(SpoolConfig::new(dir.path())).unwrap()
}

/// Enqueues `n` messages of two recipients each; returns their envelopes.
async fn enqueue(spool: &Spool, n: usize) -> Vec<Envelope> {
    let mut all = Vec::new();
    for i in 0..n {
        let env = Envelope::new(
            "s@example.com",
            vec![
                Recipient::new("a@example.net"),
                Recipient::new("b@example.org"),
            ],
            "192.0.2.1".parse().unwrap(),
        );
        spool
            .enqueue(
                env.clone(),
                Bytes::from(format!("Subject: {i}\r\n\r\nx\r\n")),
            )
            .await
            .unwrap();
        all.push(env);
    }
    all
}

/// Waits (at most 30 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

async fn outbox_len(spool: &Spool) -> usize {
    spool.events_after(0, 100_000).await.unwrap().len()
}

/// Waits (at most 30 s) until the outbox is empty.
async fn outbox_drains(spool: &Spool) {
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while outbox_len(spool).await > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the outbox still has events every sink took"
    );
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

#[tokio::test]
async fn every_sink_gets_every_event_once_then_the_outbox_empties() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let queue: Arc<dyn Queue> = Arc::new(spool.clone());
    let envelopes = enqueue(&spool, 30).await;
    // Resolve ten of them, with a delivered event per recipient.
    let claimed = spool.claim(10).await.unwrap();
    let mut expected: Vec<Uuid> = Vec::new();
    for c in &claimed {
        let events: Vec<DeliveryEvent> = c
            .envelope
            .recipients
            .iter()
            .map(|r| DeliveryEvent::new(EventKind::Delivered, &c.envelope, r, 1))
            .collect();
        expected.extend(events.iter().map(|e| e.event_id));
        let resolution = Resolution {
            events,
            ..Resolution::default()
        };
        spool.resolve(c.envelope.id, resolution).await.unwrap();
    }
    let recorded = spool.events_after(0, 1000).await.unwrap();
    assert_eq!(recorded.len(), 60 + 20);
    // Queued events come with their message's data; numbered by commit (the events of
    // one commit share a number), in order.
    let queued: Vec<_> = recorded
        .iter()
        .filter(|(_, e)| e.kind == EventKind::Queued)
        .collect();
    assert_eq!(queued.len(), 60);
    assert_eq!(queued[0].1.message_id, envelopes[0].id);
    assert!(recorded.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(
        recorded[0].0, recorded[1].0,
        "one message's two events, one commit"
    );
    expected.extend(queued.iter().map(|(_, e)| e.event_id));

    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    let fanout = Fanout::start(queue, vec![a.clone(), b.clone()]);
    until("both sinks have 80 events", || {
        a.ids().len() >= 80 && b.ids().len() >= 80
    })
    .await;
    outbox_drains(&spool).await;
    fanout.close(Duration::from_secs(5)).await;
    assert_eq!(sorted(a.ids()), sorted(expected.clone()));
    assert_eq!(sorted(b.ids()), sorted(expected));
}

#[tokio::test]
async fn a_stalled_sink_holds_up_neither_the_queue_nor_the_other_sink() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let stalled = Arc::new(Recorder::held());
    let healthy = Arc::new(Recorder::default());
    let fanout = Fanout::start(
        Arc::new(spool.clone()),
        vec![stalled.clone(), healthy.clone()],
    );
    // Enqueues go on while one sink takes nothing.
    enqueue(&spool, 50).await;
    until("the healthy sink has everything", || {
        healthy.ids().len() == 100
    })
    .await;
    assert!(stalled.ids().is_empty());
    // The outbox keeps what the stalled sink has not taken.
    assert_eq!(outbox_len(&spool).await, 100);
    stalled.gate.as_ref().unwrap().add_permits(1000);
    until("the stalled sink caught up", || stalled.ids().len() == 100).await;
    outbox_drains(&spool).await;
    fanout.close(Duration::from_secs(5)).await;
    assert_eq!(sorted(stalled.ids()), sorted(healthy.ids()));
}

#[tokio::test]
async fn a_failing_sink_is_offered_the_batch_again_and_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    enqueue(&spool, 20).await;
    let flaky = Arc::new(Recorder::failing(3));
    let fanout = Fanout::start(Arc::new(spool.clone()), vec![flaky.clone()]);
    until("the flaky sink has everything", || flaky.ids().len() == 40).await;
    assert!(flaky.writes.load(Ordering::SeqCst) >= 4);
    fanout.close(Duration::from_secs(5)).await;
    let mut unique = sorted(flaky.ids());
    unique.dedup();
    assert_eq!(unique.len(), 40, "an event was taken twice");
}

#[tokio::test]
async fn events_no_sink_took_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let before = {
        let spool = open(&dir);
        enqueue(&spool, 5).await;
        let recorded = spool.events_after(0, 100).await.unwrap();
        spool.shutdown().await.unwrap();
        recorded
    };
    assert_eq!(before.len(), 10);
    let spool = open(&dir);
    let after = spool.events_after(0, 100).await.unwrap();
    assert_eq!(after, before);
    // Numbering goes on after what is stored.
    enqueue(&spool, 1).await;
    let all = spool.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 12);
    assert!(all[10].0 > before[9].0);
    // Reading after a number starts at the next commit.
    let later = spool.events_after(before[9].0, 100).await.unwrap();
    assert_eq!(later, all[10..]);
    let sink = Arc::new(Recorder::default());
    let fanout = Fanout::start(Arc::new(spool.clone()), vec![sink.clone()]);
    until("the sink has everything", || sink.ids().len() == 12).await;
    fanout.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn recorded_events_are_durable_and_reach_the_sinks() {
    let dir = TempDir::new().unwrap();
    let recorded = {
        let spool = open(&dir);
        let envelope = enqueue(&spool, 1).await.remove(0);
        // An asynchronous bounce of the (long delivered) message, and a complaint.
        let mut bounce = DeliveryEvent::new(
            EventKind::Bounced,
            &envelope,
            &envelope.recipients[0],
            1_800_000_000_000,
        );
        bounce.reason = Some("userunknown".into());
        let complaint = DeliveryEvent {
            reason: Some("abuse".into()),
            ..DeliveryEvent::new(
                EventKind::Complained,
                &envelope,
                &envelope.recipients[1],
                1_800_000_001_000,
            )
        };
        spool
            .record(vec![bounce.clone(), complaint.clone()])
            .await
            .unwrap();
        spool.record(Vec::new()).await.unwrap();
        spool.shutdown().await.unwrap();
        vec![bounce, complaint]
    };
    let spool = open(&dir);
    let stored: Vec<DeliveryEvent> = spool
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(stored.len(), 4, "two queued events, then the two recorded");
    assert_eq!(stored[2..], recorded[..]);
    let sink = Arc::new(Recorder::default());
    let fanout = Fanout::start(Arc::new(spool.clone()), vec![sink.clone()]);
    until("the sink has everything", || sink.ids().len() == 4).await;
    fanout.close(Duration::from_secs(5)).await;
    outbox_drains(&spool).await;
}

#[tokio::test]
async fn without_sinks_events_are_dropped_from_the_outbox() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let fanout = Fanout::start(Arc::new(spool.clone()), Vec::new());
    enqueue(&spool, 5).await;
    outbox_drains(&spool).await;
    fanout.close(Duration::from_secs(5)).await;
}
