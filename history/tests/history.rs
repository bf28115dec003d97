//! The history store and writer against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};

use postroad_history::{
    DeliveryEvent, EventKind, HistoryConfig, HistoryError, HistorySink, HistoryStore, MessageId,
    Reply, Response,
};
use postroad_queue::EventSink;
use sqlx::Connection;
use uuid::Uuid;

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn event(message_id: MessageId, recipient: &str, kind: EventKind, at_ms: u64) -> DeliveryEvent {
    let domain = recipient.rsplit('@').next().unwrap().to_ascii_lowercase();
    DeliveryEvent {
        event_id: Uuid::now_v7(),
        kind,
        message_id,
        sender: "app@example.test".into(),
        recipient: recipient.into(),
        domain,
        at_ms,
        attempt: match kind {
            EventKind::Queued => 0,
            _ => 1,
        },
        remote_host: None,
        reply: None,
        meta: Default::default(),
    }
}

fn many(n: usize) -> Vec<DeliveryEvent> {
    let message = MessageId::new();
    (0..n)
        .map(|i| {
            event(
                message,
                &format!("user{i}@example.net"),
                EventKind::Queued,
                T0 + i as u64,
            )
        })
        .collect()
}

async fn raw(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

async fn row_count(path: &Path) -> i64 {
    let mut conn = raw(path).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM email_history")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("history.sqlite")
}

#[tokio::test]
async fn replayed_events_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = HistoryStore::open(&path).await.unwrap();
    let events = many(300);

    let first = store.insert(&events).await.unwrap();
    assert_eq!((first.inserted, first.duplicates), (300, 0));
    // A replay, and a replay inside one batch.
    let again = store.insert(&events).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 300));
    let doubled = many(10);
    let mut batch = doubled.clone();
    batch.extend(doubled.iter().cloned());
    let within = store.insert(&batch).await.unwrap();
    assert_eq!((within.inserted, within.duplicates), (10, 10));

    // Through the sink (as the fan-out offers a batch again), mixed with new events.
    let sink = HistorySink::new(store.clone(), &HistoryConfig::default());
    let mixed: Vec<DeliveryEvent> = events.iter().take(50).cloned().chain(many(25)).collect();
    sink.write(&mixed).await.unwrap();
    assert_eq!(row_count(&path).await, 300 + 10 + 25);
    // Each event is stored once.
    let stored = store
        .by_message_id(events[0].message_id, 1000)
        .await
        .unwrap();
    assert_eq!(stored, events);
}

#[tokio::test]
async fn queries_by_recipient_and_message_id_return_rows_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(db(&dir)).await.unwrap();
    let m1 = MessageId::new();
    let m2 = MessageId::new();
    let bob = "Bob@Example.NET";
    let mut deferred = event(m1, bob, EventKind::Deferred, T0 + 60_000);
    deferred.remote_host = Some("mx1.example.net [192.0.2.1]:25".into());
    deferred.reply = Some(Response::Remote(Reply::new(
        451,
        "4.7.1",
        "Greylisted\nTry again later",
    )));
    deferred.meta.tenant = Some("acme".into());
    deferred.meta.campaign = Some("spring-sale".into());
    deferred.meta.user_id = Some(12345);
    deferred.meta.email_type = Some("welcome".into());
    deferred.meta.priority = postroad_history::Priority::High;
    deferred.meta.tags = vec![
        ("plan".into(), "pro".into()),
        ("region".into(), "eu".into()),
    ];
    let mut delivered = event(m1, bob, EventKind::Delivered, T0 + 600_000);
    delivered.attempt = 2;
    delivered.reply = Some(Response::Remote(Reply::new(250, "", "ok")));
    let mut no_mx = event(m1, "carol@broken.example", EventKind::Bounced, T0 + 1000);
    no_mx.reply = Some(Response::local(
        postroad_history::EnhancedCode::new(5, 1, 10),
        "null MX",
    ));
    let timeline = vec![
        event(m1, bob, EventKind::Queued, T0),
        event(m1, "carol@broken.example", EventKind::Queued, T0),
        no_mx,
        deferred,
        delivered,
        event(m2, bob, EventKind::Queued, T0 + 700_000),
        event(m2, bob, EventKind::Delivered, T0 + 700_500),
        event(m2, "dave@example.org", EventKind::Queued, T0 + 700_000),
    ];
    // Written out of order, in two batches: queries order by event time.
    let mut shuffled = timeline.clone();
    shuffled.reverse();
    store.insert(&shuffled[..3]).await.unwrap();
    store.insert(&shuffled[3..]).await.unwrap();

    let bobs: Vec<DeliveryEvent> = [0, 3, 4, 5, 6].map(|i| timeline[i].clone()).into();
    assert_eq!(store.by_recipient(bob, 100).await.unwrap(), bobs);
    // Recipients compare without regard to ASCII case (as MySQL's collation does).
    assert_eq!(
        store.by_recipient("bob@example.net", 100).await.unwrap(),
        bobs
    );
    // A limit keeps the latest rows, still oldest first.
    assert_eq!(
        store.by_recipient(bob, 2).await.unwrap(),
        bobs[3..].to_vec()
    );
    assert!(
        store
            .by_recipient("nobody@example.net", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let m1_rows: Vec<DeliveryEvent> = timeline[..5].to_vec();
    assert_eq!(store.by_message_id(m1, 100).await.unwrap(), m1_rows);
    assert_eq!(
        store.by_message_id(m2, 100).await.unwrap(),
        vec![
            timeline[5].clone(),
            timeline[7].clone(),
            timeline[6].clone()
        ]
    );
    assert!(
        store
            .by_message_id(MessageId::new(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The latest state per recipient.
    let status = store.status_by_message_id(m1).await.unwrap();
    assert_eq!(status, vec![timeline[4].clone(), timeline[2].clone()]);

    let counts = store.count_by_kind().await.unwrap();
    assert_eq!(
        counts,
        vec![
            (EventKind::Queued, 4),
            (EventKind::Delivered, 2),
            (EventKind::Deferred, 1),
            (EventKind::Bounced, 1),
            (EventKind::Expired, 0),
        ]
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_runs_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let events = many(42);
    {
        let store = HistoryStore::open(&path).await.unwrap();
        store.insert(&events).await.unwrap();
        store.close().await;
    }
    let applied = || async {
        let mut conn = raw(&path).await;
        sqlx::query_as::<_, (i64, bool, String)>(
            "SELECT version, success, installed_on FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    let before = applied().await;
    let files =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite"))
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|e| e == "sql")
            })
            .count();
    assert_eq!(before.len(), files);
    assert!(before.iter().all(|(_, ok, _)| *ok));

    let store = HistoryStore::open(&path).await.unwrap();
    assert_eq!(applied().await, before, "migrations ran again");
    assert_eq!(
        store
            .by_message_id(events[0].message_id, 100)
            .await
            .unwrap(),
        events
    );
    let mut conn = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn the_cli_reads_read_only_while_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = HistoryStore::open(&path).await.unwrap();
    let events = many(150);
    store.insert(&events).await.unwrap();

    let reader = HistoryStore::open_read_only(&path).await.unwrap();
    let mut seen = reader
        .by_message_id(events[0].message_id, 1000)
        .await
        .unwrap();
    assert_eq!(seen, events);
    // The server keeps writing while the reader is open.
    let more = many(5);
    store.insert(&more).await.unwrap();
    seen = reader
        .by_message_id(more[0].message_id, 1000)
        .await
        .unwrap();
    assert_eq!(seen, more);
    assert!(
        reader.insert(&many(1)).await.is_err(),
        "read-only store wrote"
    );

    let missing = HistoryStore::open_read_only(dir.path().join("nope.sqlite")).await;
    assert!(
        matches!(missing, Err(HistoryError::NotFound(_))),
        "{missing:?}"
    );
    assert!(!dir.path().join("nope.sqlite").exists());
    let other = dir.path().join("other.sqlite");
    {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let wrong = HistoryStore::open_read_only(&other).await;
    assert!(
        matches!(wrong, Err(HistoryError::NotHistory(_))),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn in_memory_url_and_unsupported_urls() {
    let store = HistoryStore::connect("sqlite::memory:").await.unwrap();
    let events = many(3);
    store.insert(&events).await.unwrap();
    assert_eq!(
        store.by_message_id(events[0].message_id, 10).await.unwrap(),
        events
    );
    assert!(matches!(
        HistoryStore::connect("mysql://localhost/postroad").await,
        Err(HistoryError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn queries_by_user_and_email_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(db(&dir)).await.unwrap();
    let sent = |user: Option<u64>, email_type: &str, at: u64| {
        let mut e = event(
            MessageId::new(),
            "user@example.net",
            EventKind::Delivered,
            T0 + at,
        );
        e.meta.user_id = user;
        e.meta.email_type = Some(email_type.into());
        e
    };
    let events = vec![
        sent(Some(12345), "welcome", 1),
        sent(Some(12345), "digest", 2),
        sent(Some(777), "welcome", 3),
        sent(None, "welcome", 4),
        sent(Some(12345), "welcome", 5),
    ];
    store.insert(&events).await.unwrap();
    let ids = |found: Vec<DeliveryEvent>| found.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
    let of = |i: &[usize]| i.iter().map(|&i| events[i].event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.by_user(12345, None, 100).await.unwrap()),
        of(&[0, 1, 4])
    );
    assert_eq!(
        ids(store.by_user(12345, Some("welcome"), 100).await.unwrap()),
        of(&[0, 4])
    );
    // The latest ones, oldest first.
    assert_eq!(
        ids(store.by_user(12345, None, 2).await.unwrap()),
        of(&[1, 4])
    );
    assert!(store.by_user(1, None, 100).await.unwrap().is_empty());
    // What was stored reads back whole.
    assert_eq!(
        store.by_user(777, None, 1).await.unwrap(),
        vec![events[2].clone()]
    );
}
