//! The embedded backend: migrations at open (also from the one-row-per-event schema
//! of earlier versions), WAL, and the read-only reader the CLI uses.

mod common;

use std::path::{Path, PathBuf};

use common::{T0, event, many, message_at};
use postroad_history::{EventKind, HistoryConfig, HistoryError, HistoryStore};
use sqlx::Connection;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("history.sqlite")
}

async fn raw(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap()
}

fn migration_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn reopening_keeps_data_and_runs_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let events = many(42);
    {
        let store = HistoryStore::open_sqlite(&path).await.unwrap();
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
    assert_eq!(before.len(), migration_files().len());
    assert!(before.iter().all(|(_, ok, _)| *ok));

    // `postroad migrate` on a current file applies nothing.
    let config = HistoryConfig {
        path: path.clone(),
        ..Default::default()
    };
    let migrated = HistoryStore::migrate(&config, dir.path()).await.unwrap();
    assert!(migrated.applied.is_empty(), "{migrated:?}");
    let store = HistoryStore::open(&config, dir.path()).await.unwrap();
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
async fn a_history_of_the_one_row_per_event_schema_is_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // The schema of earlier versions: the first two migrations only.
    let old = tempfile::tempdir().unwrap();
    for file in &migration_files()[..2] {
        std::fs::copy(file, old.path().join(file.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    let mut conn = raw(&path).await;
    migrator.run(&mut conn).await.unwrap();
    let m = message_at(T0);
    let rows = [
        ("bob@example.net", "queued", T0, 0, None),
        ("bob@example.net", "deferred", T0 + 10, 1, Some(451)),
        ("bob@example.net", "delivered", T0 + 20, 2, Some(250)),
        ("bob@example.net", "deferred", T0 + 15, 2, Some(451)),
        ("eve@example.net", "queued", T0 + 1, 0, None),
        ("eve@example.net", "bounced", T0 + 30, 1, Some(550)),
    ];
    for (i, (rcpt, kind, at, attempt, code)) in rows.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO email_history (event_id, created_at, message_id, kind, sender, recipient, \
             domain, attempt, reply_code, reply_enhanced, reply_text, user_id, email_type) \
             VALUES (?, ?, ?, ?, 'app@example.test', ?, 'example.net', ?, ?, ?, ?, 7, 'welcome')",
        )
        .bind(uuid::Uuid::from_u128(i as u128 + 1).as_bytes().as_slice())
        .bind(at as i64)
        .bind(m.as_u128().to_be_bytes().as_slice())
        .bind(kind)
        .bind(rcpt)
        .bind(attempt)
        .bind(code)
        .bind(code.map(|c| format!("{}.0.0", c / 100)))
        .bind(code.map(|_| "text"))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = HistoryStore::open_sqlite(&path).await.unwrap();
    let statuses = store.status_by_message_id(m).await.unwrap();
    let got: Vec<_> = statuses
        .iter()
        .map(|s| {
            (
                s.recipient.as_str(),
                s.status,
                s.status_at_ms,
                s.attempts,
                s.sent_at_ms,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("bob@example.net", EventKind::Delivered, T0 + 20, 2, T0),
            ("eve@example.net", EventKind::Bounced, T0 + 30, 1, T0),
        ]
    );
    assert_eq!(statuses[0].meta.user_id, Some(7));
    let timeline = store.by_message_id(m, 100).await.unwrap();
    assert_eq!(timeline.len(), 6);
    // Oldest first, by event time: the late deferral sits before the delivery.
    assert_eq!(timeline[3].kind, EventKind::Deferred);
    assert_eq!(timeline[3].at_ms, T0 + 15);
    assert_eq!(timeline[4].kind, EventKind::Delivered);
    assert_eq!(timeline[0].meta.email_type.as_deref(), Some("welcome"));
    // New events keep moving the carried-over rows.
    store
        .insert(&[event(m, "eve@example.net", EventKind::Deferred, T0 + 99)])
        .await
        .unwrap();
    assert_eq!(
        store.status_by_message_id(m).await.unwrap()[1].status,
        EventKind::Bounced
    );
}

#[tokio::test]
async fn a_file_from_a_newer_postroad_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    HistoryStore::open_sqlite(&path)
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    for result in [
        HistoryStore::open_sqlite(&path).await,
        HistoryStore::open_read_only(&path).await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, HistoryError::Schema { .. }), "{err:?}");
        assert!(err.to_string().contains("99990101"), "{err}");
    }
}

#[tokio::test]
async fn the_cli_reads_read_only_while_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = HistoryStore::open_sqlite(&path).await.unwrap();
    let events = many(150);
    store.insert(&events).await.unwrap();

    let reader = HistoryStore::open_read_only(&path).await.unwrap();
    assert_eq!(
        reader
            .by_message_id(events[0].message_id, 1000)
            .await
            .unwrap(),
        events
    );
    // The server keeps writing while the reader is open.
    let more = many(5);
    store.insert(&more).await.unwrap();
    assert_eq!(
        reader
            .by_message_id(more[0].message_id, 1000)
            .await
            .unwrap(),
        more
    );
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
        let mut conn = raw(&other).await;
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
    let err = HistoryStore::connect("postgres://app:pw@db/history")
        .await
        .unwrap_err();
    assert!(matches!(err, HistoryError::UnsupportedUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("pw"), "{err}");
}
