//! The spool on a file system that fills up: enqueues fail while it is full, and once
//! space is freed the same `Spool` works again by itself: every acknowledged message is
//! there, no refused one, and a resolution recorded during the outage took effect.
//!
//! Needs root (it mounts a 16 MiB tmpfs); without it the test prints that it was
//! skipped, except under `CI=true`, where it fails.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use postroad_queue::testing::start;
use postroad_queue::{Envelope, MessageId, Queue, QueueError, Recipient, Spool, SpoolConfig};
use tempfile::TempDir;

const BODY: usize = 64 * 1024;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(out) if out.status.success() => return Some(Tmpfs { dir }),
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cannot mount a tmpfs (the test needs root): {why}");
        }
        eprintln!("skipped: needs root to mount a tmpfs ({why})");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !status.is_ok_and(|s| s.success()) {
            // Still busy (a panic left a file open): detach it so the directory goes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the file system holding `path` until a write fails with ENOSPC.
fn fill(path: &Path) -> u64 {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0x5a; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("ballast write failed: {e}"),
        }
    }
    // Whatever is left is less than a page: take it too, byte by byte.
    while let Ok(1) = file.write(&chunk[..1]) {
        written += 1;
    }
    written
}

fn envelope(rcpts: usize) -> Envelope {
    Envelope::new(
        "sender@example.com",
        (0..rcpts)
            .map(|i| Recipient::new(format!("rcpt-{i:05}@example.net")))
            .collect(),
        "192.0.2.7".parse().unwrap(),
    )
}

fn body(n: usize) -> Bytes {
    let mut b = format!("Subject: message {n}\r\n\r\n").into_bytes();
    b.resize(BODY, b'a' + (n % 26) as u8);
    Bytes::from(b)
}

struct Expect {
    acked: Vec<(MessageId, Bytes)>,
    refused: Vec<MessageId>,
    gone: MessageId,
    deferred: Envelope,
}

async fn check(spool: &Spool, expect: &Expect) {
    for (id, body) in &expect.acked {
        let (env, got) = spool
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged message {id} was lost"));
        assert_eq!((env.id, &got), (*id, body));
    }
    for id in &expect.refused {
        assert!(
            spool.get(*id).await.unwrap().is_none(),
            "refused message {id} is in the spool"
        );
    }
    assert!(
        spool.get(expect.gone).await.unwrap().is_none(),
        "the ack made during the outage was lost"
    );
    let (env, _) = spool.get(expect.deferred.id).await.unwrap().unwrap();
    assert_eq!(
        env, expect.deferred,
        "the defer made during the outage was lost"
    );
    let stats = spool.stats().await.unwrap();
    assert_eq!(stats.queued, expect.acked.len() as u64 + 1);
    assert_eq!(stats.deferred, 1, "the deferred message is not rescheduled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_recovers_by_itself_after_the_disk_was_full() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let test_started = Instant::now();
    let dir: PathBuf = fs.path().join("spool");
    let spool = Spool::open(SpoolConfig::new(&dir)).unwrap();

    // A message with a large envelope first: deferring it rewrites that envelope, which
    // needs fresh space as much as an enqueue does.
    let big = envelope(2000);
    spool.enqueue(big.clone(), body(100)).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..8 {
        let env = envelope(1);
        spool.enqueue(env.clone(), body(i)).await.unwrap();
        acked.push((env.id, body(i)));
    }
    let claimed = spool.claim(2).await.unwrap();
    let claimed: Vec<_> = claimed.iter().map(|c| c.envelope.id).collect();
    assert_eq!(claimed, vec![big.id, acked[0].0]);
    let gone = acked.remove(0).0;

    let ballast = fs.path().join("ballast");
    let filled = fill(&ballast);
    eprintln!("file system full after a ballast of {filled} bytes");

    // Full: enqueues fail (a few may still fit in space the file already has).
    let mut refused = Vec::new();
    let mut n = 1000;
    while refused.len() < 4 {
        assert!(n < 1100, "enqueues keep succeeding on a full file system");
        let env = envelope(1);
        n += 1;
        let started = Instant::now();
        match spool.enqueue(env.clone(), body(n)).await {
            Ok(()) => acked.push((env.id, body(n))),
            Err(QueueError::Storage(_)) => {
                assert!(started.elapsed() < Duration::from_secs(1));
                refused.push(env.id);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // Reads fail cleanly too while the writer reopens the database.
    for r in [
        spool.stats().await.map(|_| ()),
        spool.claim(1).await.map(|_| ()),
    ] {
        assert!(
            matches!(&r, Err(QueueError::Storage(e)) if e.starts_with("spool unavailable")),
            "{r:?}"
        );
    }

    // Resolve during the outage: the callers wait instead of failing.
    let mut deferred = big.clone();
    for r in &mut deferred.recipients {
        r.attempts += 1;
    }
    let until = SystemTime::now() + Duration::from_secs(3600);
    let defer = start({
        let (spool, deferred) = (spool.clone(), deferred.clone());
        async move { spool.defer(deferred, until).await }
    })
    .await;
    let ack = start({
        let spool = spool.clone();
        async move { spool.ack(gone).await }
    })
    .await;
    // Keep the disk full a while: the writer tries (and fails) to reopen a few times,
    // and enqueues keep failing quickly meanwhile (each answered after the writer took
    // both resolves).
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_millis(1500) {
        let env = envelope(1);
        let started = Instant::now();
        let r = spool.enqueue(env.clone(), body(2000)).await;
        assert!(matches!(r, Err(QueueError::Storage(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        refused.push(env.id);
        // Pacing, not a wait for anything: the writer's attempts are what is tested.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !defer.is_finished(),
        "defer answered while the disk is full"
    );
    assert!(!ack.is_finished(), "ack answered while the disk is full");

    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), defer)
        .await
        .expect("the parked defer was not applied after space was freed")
        .unwrap()
        .unwrap();
    ack.await.unwrap().unwrap();
    eprintln!("recovered {:?} after space was freed", freed.elapsed());

    // The same Spool works again.
    let env = envelope(1);
    spool.enqueue(env.clone(), body(3000)).await.unwrap();
    acked.push((env.id, body(3000)));
    assert!(spool.metrics().recoveries >= 1);
    let expect = Expect {
        acked,
        refused,
        gone,
        deferred,
    };
    check(&spool, &expect).await;
    assert_eq!(spool.stats().await.unwrap().claimed, 0);
    drop(spool);

    // And it is all durable.
    let spool = Spool::open(SpoolConfig::new(&dir)).unwrap();
    check(&spool, &expect).await;
    drop(spool);
    eprintln!("took {:?}", test_started.elapsed());
}
