//! Spool behaviour that needs to tamper with the database file's records.

use bytes::Bytes;
use redb::ReadableTable;
use tempfile::TempDir;

use super::tables::{BODIES, ENVELOPES, SCHEDULE};
use super::{SPOOL_FILE, Spool, SpoolConfig};
use crate::{Envelope, MessageId, Priority, Queue, QueueError, Recipient};

async fn spool_with(n: usize) -> (TempDir, Spool, Vec<MessageId>) {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let env = Envelope::new(
            "s@example.com",
            vec![Recipient::new("r@example.net")],
            "192.0.2.1".parse().unwrap(),
        );
        ids.push(env.id);
        spool
            .enqueue(env, Bytes::from(format!("body {i}")))
            .await
            .unwrap();
    }
    (dir, spool, ids)
}

/// Runs `f` in a write transaction of its own, beside the spool's writer.
fn tamper(spool: &Spool, f: impl FnOnce(&redb::WriteTransaction)) {
    let txn = spool.inner.shared.db().unwrap().begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

#[tokio::test]
async fn corrupt_records_are_reported_and_skipped_never_a_panic() {
    let (_dir, spool, ids) = spool_with(4).await;
    let phantom = MessageId::new();
    tamper(&spool, |txn| {
        // 1: garbage envelope record; 2: body missing; a schedule key with no message.
        txn.open_table(ENVELOPES)
            .unwrap()
            .insert(
                ids[1].as_u128(),
                &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..],
            )
            .unwrap();
        txn.open_table(BODIES)
            .unwrap()
            .remove(ids[2].as_u128())
            .unwrap();
        txn.open_table(SCHEDULE)
            .unwrap()
            .insert((0, phantom.as_u128()), ())
            .unwrap();
    });

    assert!(matches!(
        spool.get(ids[1]).await,
        Err(QueueError::Corrupt { id, .. }) if id == ids[1]
    ));
    assert!(matches!(
        spool.get(ids[2]).await,
        Err(QueueError::Corrupt { id, .. }) if id == ids[2]
    ));
    assert!(matches!(
        spool.list(10).await,
        Err(QueueError::Corrupt { .. })
    ));

    let claimed: Vec<_> = spool
        .claim(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.envelope.id)
        .collect();
    assert_eq!(claimed, vec![ids[0], ids[3]]);
    assert_eq!(spool.metrics().corrupt, 3);
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.queued, stats.ready, stats.claimed), (5, 0, 2));
    // Set aside: not handed out again, and the good ones can still be resolved.
    assert!(spool.claim(10).await.unwrap().is_empty());
    spool.ack(ids[0]).await.unwrap();

    // Recovery forgets what was set aside; claim finds it corrupt again.
    spool.recover().await.unwrap();
    assert_eq!(spool.metrics().corrupt, 0);
    let claimed: Vec<_> = spool
        .claim(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.envelope.id)
        .collect();
    assert_eq!(claimed, vec![ids[3]]);
    assert_eq!(spool.metrics().corrupt, 3);
}

#[tokio::test]
async fn unknown_format_version_is_corrupt() {
    let (_dir, spool, ids) = spool_with(1).await;
    tamper(&spool, |txn| {
        let mut t = txn.open_table(ENVELOPES).unwrap();
        let mut rec = t.get(ids[0].as_u128()).unwrap().unwrap().value().to_vec();
        rec[0] = 200;
        t.insert(ids[0].as_u128(), rec.as_slice()).unwrap();
    });
    match spool.get(ids[0]).await {
        Err(QueueError::Corrupt { reason, .. }) => assert!(reason.contains("version 200")),
        other => panic!("{other:?}"),
    }
}

/// Set by `spool_files_are_owner_only_whatever_the_umask` for its child.
const UMASK_CHILD: &str = "POSTROAD_SPOOL_UMASK_CHILD_DIR";

/// The child: opens (and closes) a spool; does nothing unless started by the test below.
#[test]
fn umask_child() {
    if let Some(dir) = std::env::var_os(UMASK_CHILD) {
        drop(Spool::open(SpoolConfig::new(dir)).unwrap());
    }
}

/// Opens a spool in `dir` from a child process running under `umask`.
fn open_under_umask(umask: &str, dir: &std::path::Path) {
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            r#"umask "$0" && exec "$1" --exact spool::tests::umask_child"#,
        ])
        .arg(umask)
        .arg(std::env::current_exe().unwrap())
        .env(UMASK_CHILD, dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "child under umask {umask} failed");
}

/// The permission bits, in octal.
fn mode(path: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    format!(
        "{:04o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    )
}

#[test]
fn spool_files_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let parent = TempDir::new().unwrap();
    for umask in ["022", "000"] {
        let dir = parent.path().join(format!("umask-{umask}/spool"));
        open_under_umask(umask, &dir);
        assert_eq!(mode(&dir), "0700", "directory under umask {umask}");
        assert_eq!(
            mode(&dir.join(SPOOL_FILE)),
            "0600",
            "file under umask {umask}"
        );
    }

    // An existing spool that others can read is tightened.
    let dir = parent.path().join("umask-022/spool");
    let set = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set(&dir, 0o755);
    set(&dir.join(SPOOL_FILE), 0o644);
    open_under_umask("022", &dir);
    assert_eq!(mode(&dir), "0700");
    assert_eq!(mode(&dir.join(SPOOL_FILE)), "0600");
}

#[tokio::test]
async fn a_checkpoint_is_stored_with_its_messages_and_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(spool.checkpoint("campaign:c1").await.unwrap(), None);
    let batch = |n: usize| {
        (0..n)
            .map(|i| {
                let env = Envelope::new(
                    "s@example.com",
                    vec![Recipient::new(format!("r{i}@example.net"))],
                    "192.0.2.1".parse().unwrap(),
                );
                (env, Bytes::from(format!("body {i}")))
            })
            .collect::<Vec<_>>()
    };
    let mark = |value, previous| crate::Checkpoint {
        name: "campaign:c1".into(),
        value,
        previous,
    };
    spool
        .enqueue_checkpointed(batch(3), mark(3, None))
        .await
        .unwrap();
    spool
        .enqueue_checkpointed(batch(2), mark(5, Some(3)))
        .await
        .unwrap();
    assert_eq!(spool.checkpoint("campaign:c1").await.unwrap(), Some(5));
    assert_eq!(spool.checkpoint("campaign:other").await.unwrap(), None);
    drop(spool);

    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(spool.checkpoint("campaign:c1").await.unwrap(), Some(5));
    assert_eq!(spool.stats().await.unwrap().queued, 5);
    spool.clear_checkpoint("campaign:c1").await.unwrap();
    assert_eq!(spool.checkpoint("campaign:c1").await.unwrap(), None);
}

#[tokio::test]
async fn claims_take_every_due_high_message_then_normal_then_bulk() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let message = |priority, to: &str| {
        let mut env = Envelope::new(
            "s@example.com",
            vec![Recipient::new(to)],
            "192.0.2.1".parse().unwrap(),
        );
        env.meta.priority = priority;
        (env, Bytes::from_static(b"body"))
    };
    // A campaign's worth of bulk first, then the others.
    let bulk: Vec<_> = (0..50)
        .map(|i| message(Priority::Bulk, &format!("b{i}@x.test")))
        .collect();
    spool.enqueue_many(bulk).await.unwrap();
    let (normal, body) = message(Priority::Normal, "n@x.test");
    spool.enqueue(normal, body).await.unwrap();
    let (high, body) = message(Priority::High, "h@x.test");
    spool.enqueue(high.clone(), body).await.unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.queued, stats.ready), (52, 52));

    let first: Vec<String> = spool
        .claim(3)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.envelope.recipients[0].address.clone())
        .collect();
    assert_eq!(first, ["h@x.test", "n@x.test", "b0@x.test"]);

    // A high message deferred is not due yet: bulk goes meanwhile; a flush makes it due
    // and it is first again.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    spool.defer(high.clone(), later).await.unwrap();
    let next = spool.claim(1).await.unwrap();
    assert_eq!(next[0].envelope.recipients[0].address, "b1@x.test");
    assert_eq!(spool.flush().await.unwrap(), 1);
    let again = spool.claim(1).await.unwrap();
    assert_eq!(again[0].envelope.id, high.id);
    assert_eq!(spool.stats().await.unwrap().queued, 52);
}
