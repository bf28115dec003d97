//! Recovery from storage failures, with a storage backend that fails on demand: a
//! commit that fails after its data reached the file, resolves parked across the
//! failure, shutdown while the storage is broken.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use redb::StorageBackend;
use redb::backends::FileBackend;
use tempfile::TempDir;

use super::{SPOOL_FILE, Spool};
use crate::testing::start;
use crate::{Envelope, MessageId, Queue, QueueError, Recipient, Resolution};

/// Failures to inject, shared by every backend the spool opens.
#[derive(Debug, Default)]
struct Faults {
    /// `sync_data` fails: the commit's pages and header are written (to the page
    /// cache), then the commit fails, the "late" failure.
    sync: AtomicBool,
    /// Writes fail: nothing of the commit reaches the file.
    write: AtomicBool,
}

#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    faults: Arc<Faults>,
}

impl StorageBackend for Faulty {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        if self.faults.sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: no space left on device"));
        }
        self.file.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.faults.write.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: input/output error"));
        }
        self.file.write(offset, data)
    }
}

fn open_faulty(dir: &Path, faults: &Arc<Faults>) -> Spool {
    let path = dir.join(SPOOL_FILE);
    let faults = faults.clone();
    let open = move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| redb::DatabaseError::Storage(e.into()))?;
        redb::Database::builder().create_with_backend(Faulty {
            file: FileBackend::new(file)?,
            faults: faults.clone(),
        })
    };
    Spool::open_with(dir.to_path_buf(), Box::new(open), true, 512, 64).unwrap()
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope::new(
        "s@example.com",
        rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        "192.0.2.1".parse().unwrap(),
    )
}

fn is_unavailable(r: &crate::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(QueueError::Storage(s)) if s.starts_with("spool unavailable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_failure_is_recovered_without_resurrecting_the_refused_message() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let spool = open_faulty(dir.path(), &faults);
    let acked = envelope(&["a@example.net"]);
    spool
        .enqueue(acked.clone(), Bytes::from_static(b"acked"))
        .await
        .unwrap();
    assert_eq!(spool.claim(10).await.unwrap().len(), 1);

    faults.sync.store(true, Ordering::SeqCst);
    let refused = envelope(&["b@example.net"]);
    let e = spool
        .enqueue(refused.clone(), Bytes::from_static(b"refused"))
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::Storage(_)), "{e}");

    // Recovering: reads fail cleanly, a resolve waits, enqueues fail at once.
    assert!(is_unavailable(&spool.stats().await));
    assert!(is_unavailable(&spool.get(acked.id).await));
    assert!(is_unavailable(&spool.claim(10).await));
    let ack = start({
        let spool = spool.clone();
        async move { spool.ack(acked.id).await }
    })
    .await;
    let mut refused_ids = vec![refused.id];
    for _ in 0..3 {
        let env = envelope(&["c@example.net"]);
        refused_ids.push(env.id);
        let started = Instant::now();
        let r = spool.enqueue(env, Bytes::from_static(b"later")).await;
        assert!(matches!(r, Err(QueueError::Storage(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Those enqueues were answered after the writer took the ack: it is parked.
    assert!(
        !ack.is_finished(),
        "a resolve was answered while storage is broken"
    );
    assert!(spool.flush().await.is_err());

    faults.sync.store(false, Ordering::SeqCst);
    // The parked ack is answered once committed, after the readers have the new handle.
    ack.await.unwrap().unwrap();
    assert_eq!(spool.metrics().recoveries, 1);
    let fresh = envelope(&["d@example.net"]);
    spool
        .enqueue(fresh.clone(), Bytes::from_static(b"fresh"))
        .await
        .unwrap();

    let (acked, refused_ids, fresh) = (&acked, &refused_ids, &fresh);
    let check = |spool: Spool| async move {
        assert!(spool.get(acked.id).await.unwrap().is_none(), "ack lost");
        for id in refused_ids {
            assert!(spool.get(*id).await.unwrap().is_none(), "{id} resurrected");
        }
        let (env, body) = spool.get(fresh.id).await.unwrap().unwrap();
        assert_eq!((&env, body), (fresh, Bytes::from_static(b"fresh")));
        let stats = spool.stats().await.unwrap();
        assert_eq!((stats.queued, stats.claimed), (1, 0));
        // The outbox has the queued events of what was stored, none of what was refused.
        let events = spool.events_after(0, 1000).await.unwrap();
        let ids: Vec<MessageId> = events.iter().map(|(_, e)| e.message_id).collect();
        assert!(
            ids.iter().all(|id| !refused_ids.contains(id)),
            "events of refused messages: {ids:?}"
        );
        assert!(
            ids.contains(&acked.id) && ids.contains(&fresh.id),
            "{ids:?}"
        );
    };
    check(spool.clone()).await;
    drop(spool);
    check(Spool::open(super::SpoolConfig::new(dir.path())).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_whose_failed_commit_reached_the_file_are_reapplied_idempotently() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let spool = open_faulty(dir.path(), &faults);
    let partial = envelope(&["x@example.net", "y@example.net"]);
    let done = envelope(&["z@example.net"]);
    for env in [&partial, &done] {
        spool
            .enqueue(env.clone(), Bytes::from_static(b"body"))
            .await
            .unwrap();
    }
    assert_eq!(spool.claim(10).await.unwrap().len(), 2);

    faults.sync.store(true, Ordering::SeqCst);
    // The first commit (with the partial resolve, and maybe the ack) reaches the file
    // and fails; both are applied again after reopening.
    let mut retry = partial.clone();
    retry.recipients = vec![partial.recipients[1].clone()];
    retry.recipients[0].attempts = 1;
    let until = SystemTime::now() + Duration::from_secs(3600);
    let resolution = Resolution {
        retry: Some((retry.clone(), until)),
        dead: Some((vec![partial.recipients[0].clone()], "550 no".into())),
        events: Vec::new(),
    };
    let first = start({
        let spool = spool.clone();
        let id = partial.id;
        async move { spool.resolve(id, resolution).await }
    })
    .await;
    let second = start({
        let spool = spool.clone();
        let id = done.id;
        async move { spool.ack(id).await }
    })
    .await;
    assert!(
        spool
            .enqueue(envelope(&["w@example.net"]), Bytes::new())
            .await
            .is_err()
    );
    assert!(!first.is_finished() && !second.is_finished());

    faults.sync.store(false, Ordering::SeqCst);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    let (partial, retry, done) = (&partial, &retry, &done);
    let check = |spool: Spool| async move {
        let dead = spool.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            dead[0].envelope.recipients,
            vec![partial.recipients[0].clone()]
        );
        let (env, _) = spool.get(partial.id).await.unwrap().unwrap();
        assert_eq!(&env, retry);
        assert!(spool.get(done.id).await.unwrap().is_none());
        let stats = spool.stats().await.unwrap();
        assert_eq!(
            (
                stats.queued,
                stats.deferred,
                stats.claimed,
                stats.dead_letters
            ),
            (1, 1, 0, 1)
        );
    };
    check(spool.clone()).await;
    drop(spool);
    check(Spool::open(super::SpoolConfig::new(dir.path())).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_storage_is_broken_fails_parked_resolves_and_finishes() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let spool = open_faulty(dir.path(), &faults);
    let env = envelope(&["a@example.net"]);
    spool
        .enqueue(env.clone(), Bytes::from_static(b"body"))
        .await
        .unwrap();
    assert_eq!(spool.claim(1).await.unwrap().len(), 1);

    faults.write.store(true, Ordering::SeqCst);
    assert!(
        spool
            .enqueue(envelope(&["b@x.test"]), Bytes::new())
            .await
            .is_err()
    );
    let ack = start({
        let spool = spool.clone();
        let id = env.id;
        async move { spool.ack(id).await }
    })
    .await;
    let shutdown = tokio::time::timeout(Duration::from_secs(10), spool.shutdown())
        .await
        .expect("shutdown hung while storage was broken");
    assert!(shutdown.is_err());
    assert!(matches!(ack.await.unwrap(), Err(QueueError::Storage(_))));
    drop(spool);

    // The outcome was not recorded: the message is delivered again (at least once).
    faults.write.store(false, Ordering::SeqCst);
    let spool = Spool::open(super::SpoolConfig::new(dir.path())).unwrap();
    let claimed = spool.claim(10).await.unwrap();
    let ids: Vec<MessageId> = claimed.iter().map(|c| c.envelope.id).collect();
    assert_eq!(ids, vec![env.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_whose_commit_reached_the_file_leaves_its_checkpoint_as_it_was() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let spool = open_faulty(dir.path(), &faults);
    let mark = |value, previous| crate::Checkpoint {
        name: "campaign:c1".into(),
        value,
        previous,
    };
    let first = envelope(&["a@example.net"]);
    spool
        .enqueue_checkpointed(
            vec![(first.clone(), Bytes::from_static(b"1"))],
            mark(1000, None),
        )
        .await
        .unwrap();

    faults.sync.store(true, Ordering::SeqCst);
    let refused = envelope(&["b@example.net"]);
    let batch = vec![(refused.clone(), Bytes::from_static(b"2"))];
    let r = spool
        .enqueue_checkpointed(batch, mark(2000, Some(1000)))
        .await;
    assert!(matches!(r, Err(QueueError::Storage(_))), "{r:?}");
    faults.sync.store(false, Ordering::SeqCst);

    // Reads fail until the writer has reopened the file and settled what was refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let at = loop {
        match spool.checkpoint("campaign:c1").await {
            Ok(at) => break at,
            Err(_) => {
                assert!(Instant::now() < deadline, "the spool never recovered");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(at, Some(1000), "the refused batch's checkpoint stayed");
    assert!(spool.get(refused.id).await.unwrap().is_none());
    assert!(spool.get(first.id).await.unwrap().is_some());
}
