//! Archival to S3 on both backends, against moto's S3 server (PyPI `moto[server]`,
//! installed by `scripts/install-test-deps`): months past the hot window leave the
//! database only once their object is read back and checked, come back with
//! `restore`, and go again (as one part) after the restored days; an upload cut
//! mid-way (by a proxy that drops the connection after some bytes) leaves the month
//! in place, and the next pass archives it.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use common::{MysqlDb, event, message_at};
use postroad_history::archive::{Archive, ArchiveConfig, Outcome};
use postroad_history::{DeliveryEvent, EventKind, HistoryStore, MonthCounts, Reply, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn ms(day: &str) -> u64 {
    date(day)
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis() as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server on a port of its own, with one bucket.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(bucket: &str) -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (scripts/install-test-deps installs moto[server])");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new("curl")
            .args(["-sS", "--fail", "-X", "PUT"])
            .arg(format!("http://127.0.0.1:{port}/{bucket}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "create bucket: {out:?}");
        Self { child, port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to moto that, once limited, drops every connection after the given
/// number of request bytes, and refuses new ones, until healed.
struct CuttingProxy {
    port: u16,
    budget: Arc<AtomicI64>,
}

impl CuttingProxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let shared = budget.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let budget = shared.clone();
                tokio::spawn(async move {
                    if budget.load(Ordering::SeqCst) <= 0 {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if budget.fetch_sub(n as i64, Ordering::SeqCst) < n as i64 {
                                return;
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut from_server, &mut to_client);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Self { port, budget }
    }

    fn cut_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.budget.store(i64::MAX, Ordering::SeqCst);
    }
}

fn config(port: u16, prefix: &str) -> ArchiveConfig {
    ArchiveConfig {
        url: format!("s3://history/{prefix}"),
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        max_retries: 0,
        ..ArchiveConfig::default()
    }
}

/// `messages` messages sent through `month`, two recipients each: queued, then one
/// delivered and one bounced.
fn month_of_mail(first_day: &str, messages: u64) -> Vec<DeliveryEvent> {
    let start = ms(first_day);
    let mut events = Vec::new();
    for i in 0..messages {
        let sent = start + i * 1000;
        let m = message_at(sent);
        let (a, b) = (format!("a{i}@example.net"), format!("b{i}@example.org"));
        events.push(event(m, &a, EventKind::Queued, sent));
        events.push(event(m, &b, EventKind::Queued, sent));
        let mut delivered = event(m, &a, EventKind::Delivered, sent + 500);
        delivered.reply = Some(Response::Remote(Reply::new(250, "2.0.0", "ok")));
        delivered.meta.email_type = Some("receipt".into());
        events.push(delivered);
        let mut bounced = event(m, &b, EventKind::Bounced, sent + 700);
        bounced.reply = Some(Response::Remote(Reply::new(550, "5.1.1", "no such user")));
        events.push(bounced);
    }
    events
}

/// A history on each backend; MySQL with monthly partitions from January 2026.
async fn backends() -> Vec<(&'static str, HistoryStore, Guard)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = HistoryStore::open_sqlite(dir.path().join("history.sqlite"))
        .await
        .unwrap();
    let db = MysqlDb::create().await;
    let mysql = db.open_from(date("2026-01-01")).await;
    vec![
        ("sqlite", sqlite, Guard::Dir(dir)),
        ("mysql", mysql, Guard::Db(db)),
    ]
}

#[allow(dead_code)]
enum Guard {
    Dir(tempfile::TempDir),
    Db(MysqlDb),
}

async fn insert(store: &HistoryStore, events: &[DeliveryEvent]) {
    for batch in events.chunks(1000) {
        store.insert(batch).await.unwrap();
    }
}

async fn partitions(db: &Guard) -> Vec<String> {
    let Guard::Db(db) = db else { return Vec::new() };
    let mut conn = db.connection().await;
    sqlx::query_scalar(
        "SELECT DISTINCT PARTITION_NAME FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('email_history', 'email_events')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

fn counts(events: u64, recipients: u64) -> MonthCounts {
    MonthCounts { events, recipients }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_months_go_to_the_archive_checked_come_back_and_go_again() {
    let moto = Moto::start("history");
    let (jan, feb, jun) = (date("2026-01-01"), date("2026-02-01"), date("2026-06-01"));
    for (name, store, guard) in backends().await {
        let archive = Archive::open(&config(moto.port, name)).unwrap();
        let january = month_of_mail("2026-01-01", 50);
        insert(&store, &january).await;
        insert(&store, &month_of_mail("2026-02-01", 30)).await;
        insert(&store, &month_of_mail("2026-06-01", 20)).await;
        let first = january[0].message_id;
        let mut before = store.status_by_message_id(first).await.unwrap();

        // Mid-June with 90 hot days: January and February are past; June is not.
        let done = archive
            .archive_due(&store, date("2026-06-15"))
            .await
            .unwrap();
        let archived: Vec<(NaiveDate, u64, u64)> = done
            .iter()
            .map(|(month, outcome)| match outcome {
                Outcome::Archived(m) => (*month, m.events, m.recipients),
                other => panic!("{name}: {month}: {other:?}"),
            })
            .collect();
        assert_eq!(archived, [(jan, 200, 100), (feb, 120, 60)], "{name}");
        assert_eq!(
            store.month_counts(jan).await.unwrap(),
            counts(0, 0),
            "{name}"
        );
        assert_eq!(
            store.month_counts(feb).await.unwrap(),
            counts(0, 0),
            "{name}"
        );
        assert_eq!(
            store.month_counts(jun).await.unwrap(),
            counts(80, 40),
            "{name}"
        );
        let listed = archive.list().await.unwrap();
        let months: Vec<&str> = listed.iter().map(|m| m.month.as_str()).collect();
        assert_eq!(months, ["2026-01", "2026-02"], "{name}");
        assert!(
            listed
                .iter()
                .all(|m| m.sha256.len() == 64 && m.compressed_bytes > 0)
        );
        if name == "mysql" {
            let names = partitions(&guard).await;
            assert!(
                !names.iter().any(|p| p == "p202601" || p == "p202602"),
                "{names:?}"
            );
            assert!(names.iter().any(|p| p == "p202606"), "{names:?}");
        }
        // Nothing more is due.
        assert!(
            archive
                .archive_due(&store, date("2026-06-15"))
                .await
                .unwrap()
                .is_empty()
        );

        // January comes back: the same rows as before.
        let restored = archive
            .restore(&store, jan, date("2026-06-15"))
            .await
            .unwrap();
        assert_eq!((restored.parts, restored.events), (1, 200), "{name}");
        assert_eq!(
            store.month_counts(jan).await.unwrap(),
            counts(200, 100),
            "{name}"
        );
        let mut after = store.status_by_message_id(first).await.unwrap();
        for row in before.iter_mut().chain(after.iter_mut()) {
            row.id = 0;
        }
        assert_eq!(after, before, "{name}");
        let timeline = store.by_message_id(first, 100).await.unwrap();
        assert_eq!(timeline.len(), 4, "{name}");

        // Kept while restored; archived again a week on, as one part.
        let done = archive
            .archive_due(&store, date("2026-06-15"))
            .await
            .unwrap();
        assert_eq!(done, [(jan, Outcome::KeptRestored)], "{name}");
        let done = archive
            .archive_due(&store, date("2026-06-23"))
            .await
            .unwrap();
        assert!(
            matches!(done.as_slice(), [(m, Outcome::Archived(p))] if *m == jan && p.events == 200),
            "{name}: {done:?}"
        );
        let months: Vec<String> = archive
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.month)
            .collect();
        assert_eq!(months, ["2026-01", "2026-02"], "{name}");
        assert_eq!(
            store.month_counts(jan).await.unwrap(),
            counts(0, 0),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_mid_way_leaves_the_month_and_the_next_pass_archives_it() {
    let moto = Moto::start("history");
    let proxy = CuttingProxy::start(moto.port).await;
    let jan = date("2026-01-01");
    for (name, store, _guard) in backends().await {
        let archive = Archive::open(&config(proxy.port, name)).unwrap();
        insert(&store, &month_of_mail("2026-01-01", 3000)).await;
        let held = store.month_counts(jan).await.unwrap();
        assert_eq!(held, counts(12_000, 6000));

        // Enough for the small requests, not for the upload of the events.
        proxy.cut_after(20_000);
        let failed = archive.archive_due(&store, date("2026-06-15")).await;
        assert!(failed.is_err(), "{name}: {failed:?}");
        proxy.heal();
        assert_eq!(store.month_counts(jan).await.unwrap(), held, "{name}");
        assert!(archive.list().await.unwrap().is_empty(), "{name}");

        let done = archive
            .archive_due(&store, date("2026-06-15"))
            .await
            .unwrap();
        // (MySQL: February's empty partition goes too.)
        assert!(
            matches!(&done[0], (m, Outcome::Archived(p)) if *m == jan && p.events == 12_000),
            "{name}: {done:?}"
        );
        assert!(
            done[1..].iter().all(|(_, o)| *o == Outcome::Emptied),
            "{name}: {done:?}"
        );
        assert_eq!(archive.list().await.unwrap().len(), 1, "{name}");
        assert_eq!(
            store.month_counts(jan).await.unwrap(),
            counts(0, 0),
            "{name}"
        );
    }
}
