//! The MySQL backend on the machine's MariaDB: the schema `serve` accepts, and the
//! monthly partitions kept ready across a month boundary (a fake clock: the dates
//! given to maintenance).

mod common;

use chrono::NaiveDate;
use common::{MysqlDb, event, message_at};
use postroad_history::{EventKind, HistoryError, HistoryStore};

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn ms(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis() as u64
}

async fn partitions(db: &MysqlDb, table: &str) -> Vec<(String, i64)> {
    let mut conn = db.connection().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT PARTITION_NAME FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY PARTITION_ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for name in names {
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} PARTITION ({name})"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        out.push((name, rows));
    }
    out
}

#[tokio::test]
async fn serve_refuses_a_database_postroad_migrate_has_not_prepared() {
    let db = MysqlDb::create().await;
    let none = "/nonexistent".as_ref();
    let err = HistoryStore::open(&db.config(), none).await.unwrap_err();
    assert!(matches!(err, HistoryError::Schema { .. }), "{err:?}");
    assert!(err.to_string().contains("postroad migrate"), "{err}");
    assert!(HistoryStore::open_reader(&db.config(), none).await.is_err());

    let first = HistoryStore::migrate(&db.config(), none).await.unwrap();
    assert_eq!(first.applied, [1, 2, 3, 4, 5, 6, 7]);
    assert!(!first.location.contains('@') || !first.location.contains(":***"));
    let again = HistoryStore::migrate(&db.config(), none).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    HistoryStore::open(&db.config(), none)
        .await
        .unwrap()
        .close()
        .await;

    // A schema from a newer postroad.
    let mut conn = db.connection().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = HistoryStore::open(&db.config(), none).await.unwrap_err();
    assert!(err.to_string().contains("99990101"), "{err}");
    let err = HistoryStore::migrate(&db.config(), none).await.unwrap_err();
    assert!(err.to_string().contains("newer postroad"), "{err}");

    // Nothing listens: a clear error naming where, without the password.
    let mut config = db.config();
    config.url = "mysql://app:hunter2@127.0.0.1:1/history".into();
    let err = HistoryStore::open(&config, none).await.unwrap_err();
    assert!(matches!(err, HistoryError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("app:***@127.0.0.1:1"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn months_get_their_partitions_ahead_of_time_across_a_month_boundary() {
    let db = MysqlDb::create().await;
    let store = db.open().await; // maintained for today: undo by a fresh table below
    store.close().await;
    // Start over at a known date: recreate the tables with only p_future.
    let mut conn = db.connection().await;
    for table in ["email_history", "email_events"] {
        sqlx::query(&format!("ALTER TABLE {table} REMOVE PARTITIONING"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!(
            "ALTER TABLE {table} PARTITION BY RANGE (TO_DAYS(sent_at)) \
             (PARTITION p_future VALUES LESS THAN MAXVALUE)"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let store = HistoryStore::connect(&db.url).await.unwrap();

    // Written before any maintenance: into p_future, moved by the first split.
    let early = message_at(ms("2026-12-20T10:00:00Z"));
    store
        .insert(&[event(
            early,
            "a@example.net",
            EventKind::Queued,
            ms("2026-12-20T10:00:00Z"),
        )])
        .await
        .unwrap();
    let added = store
        .maintain_partitions(date("2026-12-31"), 3)
        .await
        .unwrap();
    assert_eq!(added.len(), 10, "{added:?}");
    let names = |parts: Vec<(String, i64)>| parts.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names(partitions(&db, "email_history").await),
        [
            "p_before", "p202612", "p202701", "p202702", "p202703", "p_future"
        ]
    );

    // Mail of the last moment of the month, of the next ones, of long ago, and of the
    // furthest month kept ready.
    let at = |s: &str| {
        let t = ms(s);
        event(message_at(t), "b@example.net", EventKind::Queued, t)
    };
    store
        .insert(&[
            at("2026-12-31T23:59:59.999Z"),
            at("2027-01-01T00:00:00.000Z"),
            at("2027-03-31T12:00:00Z"),
            at("2025-06-01T00:00:00Z"),
        ])
        .await
        .unwrap();
    for table in ["email_history", "email_events"] {
        assert_eq!(
            partitions(&db, table).await,
            [
                ("p_before".to_string(), 1),
                ("p202612".to_string(), 2),
                ("p202701".to_string(), 1),
                ("p202702".to_string(), 0),
                ("p202703".to_string(), 1),
                ("p_future".to_string(), 0),
            ],
            "{table}"
        );
    }

    // The clock crosses into January: April is made ready; nothing else changes.
    assert!(
        store
            .maintain_partitions(date("2026-12-31"), 3)
            .await
            .unwrap()
            .is_empty()
    );
    let added = store
        .maintain_partitions(date("2027-01-01"), 3)
        .await
        .unwrap();
    assert_eq!(added, ["email_history.p202704", "email_events.p202704"]);
    store.insert(&[at("2027-04-15T08:00:00Z")]).await.unwrap();
    let parts = partitions(&db, "email_events").await;
    assert!(parts.contains(&("p202704".to_string(), 1)), "{parts:?}");
    assert_eq!(parts.last().unwrap(), &("p_future".to_string(), 0));
    // Every row is still found.
    let rows = store
        .query(&postroad_history::HistoryQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 6);
}

#[tokio::test]
async fn history_loaded_from_the_past_gets_a_partition_per_month_from_its_first() {
    let db = MysqlDb::create().await;
    let none = "/nonexistent".as_ref();
    let first = postroad_history::today() - chrono::Months::new(12);
    HistoryStore::migrate_from(&db.config(), none, first)
        .await
        .unwrap();
    let names: Vec<String> = partitions(&db, "email_events")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // p_before, the 12 months before this one, this one, 3 ahead (the default), p_future.
    assert_eq!(names.len(), 1 + 12 + 1 + 3 + 1, "{names:?}");
    assert_eq!(names[1], format!("p{}", first.format("%Y%m")));
    // Opening as serve does adds nothing more.
    let store = HistoryStore::open(&db.config(), none).await.unwrap();
    assert_eq!(partitions(&db, "email_history").await.len(), names.len());
    store.close().await;
}
