//! The spool's writer through its public API: group commit, back-pressure, one
//! commit for a batch, shutdown, fsync off, locking and configuration.

mod common;

use std::collections::HashSet;

use postroad_queue::{Queue, QueueError, Spool, SpoolConfig};
use tempfile::TempDir;

use common::{body, enqueue_n, envelope, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let spool = spool.clone();
        tasks.spawn(async move {
            let env = envelope(&["a@example.net"]);
            let id = env.id;
            spool.enqueue(env, body(i)).await.map(|()| id)
        });
    }
    let mut ids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        ids.insert(r.unwrap().unwrap());
    }
    let metrics = spool.metrics();
    eprintln!("200 concurrent enqueues: {} commits", metrics.commits);
    assert_eq!(metrics.ops, 200);
    assert!(
        metrics.commits < 200,
        "200 concurrent enqueues took {} commits: no group commit",
        metrics.commits
    );
    let listed: HashSet<_> = spool
        .list(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_queue_depth_applies_back_pressure_without_losing_anything() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig {
        queue_depth: 1,
        max_batch: 2,
        ..SpoolConfig::new(dir.path())
    })
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let spool = spool.clone();
        tasks.spawn(async move { spool.enqueue(envelope(&["a@example.net"]), body(i)).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(spool.stats().await.unwrap().queued, 50);
    assert_eq!(spool.metrics().ops, 50);
}

#[tokio::test]
async fn a_second_open_fails_with_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let err = Spool::open(SpoolConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, QueueError::Locked(ref d) if d == dir.path()));
    assert_eq!(
        err.to_string(),
        format!(
            "spool at {} is in use by another process",
            dir.path().display()
        )
    );
    drop(spool);
    // Released on drop.
    open(&dir);
}

#[tokio::test]
async fn bad_config_is_rejected() {
    let dir = TempDir::new().unwrap();
    for config in [
        SpoolConfig::default(),
        SpoolConfig {
            max_batch: 0,
            ..SpoolConfig::new(dir.path())
        },
        SpoolConfig {
            queue_depth: 0,
            ..SpoolConfig::new(dir.path())
        },
    ] {
        assert!(matches!(Spool::open(config), Err(QueueError::Config(_))));
    }
}

#[test]
fn config_from_toml() {
    let c: SpoolConfig = toml::from_str("").unwrap();
    assert_eq!(c, SpoolConfig::default());
    assert!(c.fsync);
    assert_eq!((c.max_batch, c.queue_depth), (512, 4096));
    let c: SpoolConfig = toml::from_str("dir = \"/var/spool/postroad\"\nmax_batch = 64").unwrap();
    assert_eq!(c.dir, std::path::Path::new("/var/spool/postroad"));
    assert_eq!(c.max_batch, 64);
    assert!(c.fsync);
    assert!(toml::from_str::<SpoolConfig>("fsnyc = false").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_applies_queued_changes_and_refuses_new_ones() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let spool = spool.clone();
        tasks.spawn(async move {
            let env = envelope(&["a@example.net"]);
            let id = env.id;
            (id, spool.enqueue(env, body(i)).await)
        });
    }
    spool.shutdown().await.unwrap();
    let mut acknowledged = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (id, Ok(())) => acknowledged.push(id),
            (_, Err(QueueError::ShuttingDown)) => {}
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    assert!(matches!(
        spool.enqueue(envelope(&["a@example.net"]), body(0)).await,
        Err(QueueError::ShuttingDown)
    ));
    spool.shutdown().await.unwrap(); // twice is fine
    drop(spool);

    let spool = open(&dir);
    let stored = spool.recover().await.unwrap().queued;
    assert!(stored >= acknowledged.len() as u64);
    for id in acknowledged {
        assert!(
            spool.get(id).await.unwrap().is_some(),
            "acknowledged {id} lost"
        );
    }
}

#[tokio::test]
async fn without_fsync_a_graceful_drop_still_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig {
        fsync: false,
        ..SpoolConfig::new(dir.path())
    })
    .unwrap();
    let ids = enqueue_n(&spool, 100).await;
    drop(spool);
    let spool = open(&dir);
    assert_eq!(spool.recover().await.unwrap().queued, 100);
    for id in ids {
        assert!(spool.get(id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn enqueue_many_is_one_commit_larger_than_max_batch_with_events_for_each() {
    let dir = TempDir::new().unwrap();
    let mut config = SpoolConfig::new(dir.path());
    config.max_batch = 8;
    let spool = Spool::open(config).unwrap();
    let messages: Vec<_> = (0..100)
        .map(|i| (envelope(&["a@example.net", "b@example.org"]), body(i)))
        .collect();
    let ids: Vec<_> = messages.iter().map(|(e, _)| e.id).collect();
    let before = spool.metrics().commits;
    spool.enqueue_many(messages).await.unwrap();
    assert_eq!(spool.metrics().commits - before, 1, "one transaction");
    assert_eq!(spool.stats().await.unwrap().queued, 100);
    drop(spool);

    let spool = open(&dir);
    for (i, id) in ids.iter().enumerate() {
        let (_, stored) = spool.get(*id).await.unwrap().expect("durable");
        assert_eq!(stored, body(i));
    }
    let events = spool.events_after(0, 1000).await.unwrap();
    assert_eq!(events.len(), 200, "a queued event per recipient");
}
