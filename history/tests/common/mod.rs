//! Shared by the history's test binaries: events, and a fresh database per test on
//! each backend (a SQLite file in a temporary directory; a database of its own on the
//! machine's MariaDB, 127.0.0.1:3306 as root, or `POSTROAD_TEST_MYSQL`).

#![allow(dead_code)]

use std::path::PathBuf;

use postroad_history::{
    Backend, DeliveryEvent, EventKind, HistoryConfig, HistoryStore, MessageId, Metadata,
};
use uuid::Uuid;

/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;

/// A new message id whose time (the message's `sent_at`) is `at_ms`.
pub fn message_at(at_ms: u64) -> MessageId {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at_ms / 1000,
        (at_ms % 1000) as u32 * 1_000_000,
    );
    MessageId::from_u128(Uuid::new_v7(ts).as_u128())
}

pub fn event(message_id: MessageId, recipient: &str, kind: EventKind, at_ms: u64) -> DeliveryEvent {
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
        meta: Metadata::default(),
        provider_message_id: None,
        reason: None,
    }
}

/// `n` recipients of one new message, queued.
pub fn many(n: usize) -> Vec<DeliveryEvent> {
    let message = message_at(T0);
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

/// The server's MariaDB, without a database.
pub fn mysql_server() -> String {
    std::env::var("POSTROAD_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// An empty database on the test server, dropped when this is.
pub struct MysqlDb {
    pub name: String,
    pub url: String,
}

impl MysqlDb {
    pub async fn create() -> Self {
        use sqlx::Connection;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "postroad_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let server = mysql_server();
        let mut conn = sqlx::MySqlConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("MariaDB at {server} is needed by these tests: {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    pub fn config(&self) -> HistoryConfig {
        HistoryConfig {
            backend: Backend::Mysql,
            url: self.url.clone(),
            ..Default::default()
        }
    }

    /// Migrated with monthly partitions from `first`'s month (as after an import),
    /// and opened as `serve` opens it.
    pub async fn open_from(&self, first: chrono::NaiveDate) -> HistoryStore {
        HistoryStore::migrate_from(&self.config(), "/nonexistent".as_ref(), first)
            .await
            .unwrap();
        HistoryStore::open(&self.config(), "/nonexistent".as_ref())
            .await
            .unwrap()
    }

    /// Migrated and opened as `serve` opens it.
    pub async fn open(&self) -> HistoryStore {
        HistoryStore::migrate(&self.config(), "/nonexistent".as_ref())
            .await
            .unwrap();
        HistoryStore::open(&self.config(), "/nonexistent".as_ref())
            .await
            .unwrap()
    }

    pub async fn connection(&self) -> sqlx::MySqlConnection {
        use sqlx::Connection;
        sqlx::MySqlConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot block on another: a thread.
        let (server, name) = (mysql_server(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A history on each backend, for tests that must hold on both.
pub struct Each {
    pub name: &'static str,
    pub store: HistoryStore,
    _dir: Option<tempfile::TempDir>,
    _db: Option<MysqlDb>,
}

pub async fn each_backend() -> Vec<Each> {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("history.sqlite");
    let sqlite = HistoryStore::open_sqlite(&path).await.unwrap();
    let db = MysqlDb::create().await;
    let mysql = db.open().await;
    vec![
        Each {
            name: "sqlite",
            store: sqlite,
            _dir: Some(dir),
            _db: None,
        },
        Each {
            name: "mysql",
            store: mysql,
            _dir: None,
            _db: Some(db),
        },
    ]
}
