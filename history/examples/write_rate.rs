//! Quick measurement of the history sink: events per second through
//! `HistorySink::write`, in batches of `max_batch` as the event fan-out hands them over,
//! into a fresh SQLite file (fsync'd commits included) or, with `HISTORY_MYSQL` set to a
//! server URL, into a fresh database on that MySQL/MariaDB server (dropped afterwards).
//!
//! ```sh
//! cargo run --release -p postroad-history --example write_rate -- [EVENTS] [MAX_BATCH] [DIR]
//! HISTORY_MYSQL=mysql://root@127.0.0.1:3306 cargo run --release -p postroad-history \
//!     --example write_rate -- [EVENTS] [MAX_BATCH]
//! ```
//!
//! Defaults: 100000 events, max_batch 1000 (the config default), a temporary directory.
//! Events are built before the clock starts (two per message: queued, then delivered
//! with a remote host and reply), so the number is the writer's and the database's.

use std::time::Instant;

use postroad_history::{
    Backend, DeliveryEvent, EventKind, HistoryConfig, HistorySink, HistoryStore, MessageId,
    Metadata, Reply, Response,
};
use postroad_queue::EventSink;
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let max_batch: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let dir = match args.next() {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("history.sqlite");

    let start_ms = 1_767_225_600_000u64;
    let batch: Vec<DeliveryEvent> = (0..events)
        .map(|i| {
            let message = i / 2;
            let delivered = i % 2 == 1;
            DeliveryEvent {
                event_id: Uuid::now_v7(),
                kind: if delivered {
                    EventKind::Delivered
                } else {
                    EventKind::Queued
                },
                message_id: MessageId::from_u128(
                    0x0190_0000_0000_7000_8000_0000_0000_0000 + message as u128,
                ),
                sender: "newsletter@shop.example".into(),
                recipient: format!("customer{message}@example{}.net", message % 97),
                domain: format!("example{}.net", message % 97),
                at_ms: start_ms + i as u64,
                attempt: u32::from(delivered),
                remote_host: delivered.then(|| {
                    format!(
                        "mx{}.example{}.net [192.0.2.{}]:25",
                        message % 3,
                        message % 97,
                        message % 250
                    )
                }),
                reply: delivered.then(|| {
                    let text = format!("Ok: queued as {message:016X}");
                    Response::Remote(Reply::owned(250, "2.0.0".parse().ok(), text))
                }),
                meta: Metadata {
                    user_id: Some(message as u64 % 1_000_000),
                    email_type: Some("welcome".into()),
                    tenant: Some("acme".into()),
                    campaign: Some("spring-sale".into()),
                    ..Metadata::default()
                },
                provider_message_id: None,
                reason: None,
            }
        })
        .collect();

    let mysql = std::env::var("HISTORY_MYSQL").ok().map(|server| {
        let server = server.trim_end_matches('/').to_string();
        let database = format!("postroad_write_rate_{}", std::process::id());
        (server, database)
    });
    let config = match &mysql {
        Some((server, database)) => {
            execute(server, &format!("CREATE DATABASE {database}")).await?;
            HistoryConfig {
                backend: Backend::Mysql,
                url: format!("{server}/{database}"),
                max_batch,
                ..Default::default()
            }
        }
        None => HistoryConfig {
            path: path.clone(),
            max_batch,
            ..Default::default()
        },
    };
    HistoryStore::migrate(&config, dir.path()).await?;
    let store = HistoryStore::open(&config, dir.path()).await?;
    let sink = HistorySink::new(store.clone(), &config);
    let start = Instant::now();
    let mut transactions = 0u64;
    for chunk in batch.chunks(max_batch.max(1)) {
        sink.write(chunk).await?;
        transactions += 1;
    }
    let elapsed = start.elapsed();
    let written = store
        .count_by_kind()
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum::<u64>();
    store.close().await;
    let storage = match &mysql {
        Some((server, database)) => {
            execute(server, &format!("DROP DATABASE {database}")).await?;
            format!("into {} (database dropped)", store.location())
        }
        None => {
            let bytes: u64 = std::fs::read_dir(dir.path())?
                .filter_map(|f| f.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            format!(
                "{:.1} MiB on disk ({} bytes/event) at {}",
                bytes as f64 / (1024.0 * 1024.0),
                bytes / written.max(1),
                path.display()
            )
        }
    };
    println!(
        "{} events in {:.2} s: {:.0} events/s; {} transactions (avg {:.0} events each); {}",
        written,
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
        transactions,
        written as f64 / transactions.max(1) as f64,
        storage,
    );
    Ok(())
}

/// Runs one statement on the server at `server` (no database selected).
async fn execute(server: &str, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(server).await?;
    sqlx::query(sql).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
