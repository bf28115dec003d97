//! `loadtest history --rates-out FILE`: what the fill measured, as the "history"
//! section of the rates file `postroad plan` reads: events stored per second by the
//! writers (wall clock), per CPU-second of this process (the writers and the event
//! generator; the database's own CPU is not in it), and the bytes the database holds:
//! per event (the event log, `email_events`) and per recipient (the status rows,
//! `email_history`), tables and indexes after `ANALYZE TABLE` (MySQL). With SQLite the
//! whole file counts as events.

use std::path::Path;

use anyhow::Context as _;
use postroad_history::{Backend, HistoryConfig};
use serde_json::{Map, json};

use super::fill::FillReport;
use crate::rates_file;

pub async fn write(
    path: &Path,
    config: &HistoryConfig,
    fill: &FillReport,
    cpu_secs: Option<f64>,
) -> anyhow::Result<()> {
    let stored = stored_bytes(config).await?;
    let events = fill.events as f64;
    let rows = fill.rows as f64;
    let secs = fill.elapsed.as_secs_f64();
    let mut s = Map::new();
    s.insert("events_per_sec".into(), json!(events / secs));
    if let Some(cpu) = cpu_secs.filter(|c| *c > 0.0) {
        s.insert("events_per_cpu_sec".into(), json!(events / cpu));
        s.insert("cpu_secs".into(), json!(cpu));
    }
    s.insert(
        "bytes_per_event".into(),
        json!(stored.events as f64 / events),
    );
    s.insert(
        "bytes_per_recipient".into(),
        json!(stored.recipients as f64 / rows),
    );
    s.insert("events_table_bytes".into(), json!(stored.events));
    s.insert("recipients_table_bytes".into(), json!(stored.recipients));
    s.insert("other_tables_bytes".into(), json!(stored.other));
    s.insert("events".into(), json!(fill.events));
    s.insert("rows".into(), json!(fill.rows));
    s.insert("wall_secs".into(), json!(secs));
    s.insert("writers".into(), json!(fill.writers));
    s.insert("batch_events".into(), json!(fill.batch_events));
    s.insert(
        "backend".into(),
        json!(match config.backend {
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }),
    );
    s.insert(
        "what".into(),
        json!(
            "loadtest history's fill through the history writer (two events per recipient: \
             queued, then the outcome in a later batch); events_per_sec is wall clock with \
             the writers given, events_per_cpu_sec counts this process only (writers and \
             generator, not the database server); bytes_per_event is the event log's table \
             and indexes over the events written, bytes_per_recipient the status rows' table \
             and indexes over the recipients written (MySQL: data_length + index_length \
             after ANALYZE TABLE)"
        ),
    );
    if let Backend::Mysql = config.backend {
        s.insert("server_version".into(), json!(mysql_version(config).await?));
    }
    rates_file::update(path, "history", rates_file::stamped(s))
}

/// Bytes of the event log, the status rows and everything else.
struct Stored {
    events: u64,
    recipients: u64,
    other: u64,
}

async fn stored_bytes(config: &HistoryConfig) -> anyhow::Result<Stored> {
    match config.backend {
        Backend::Sqlite => {
            let mut total = 0;
            for suffix in ["", "-wal"] {
                let mut p = config.path.clone().into_os_string();
                p.push(suffix);
                total += std::fs::metadata(&p).map_or(0, |m| m.len());
            }
            Ok(Stored {
                events: total,
                recipients: 0,
                other: 0,
            })
        }
        Backend::Mysql => {
            use sqlx::Connection as _;
            let mut conn = sqlx::MySqlConnection::connect(&config.url)
                .await
                .context("connecting to measure the tables")?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&mut conn)
            .await?;
            for t in &tables {
                // Fresh statistics: information_schema's sizes come from them.
                sqlx::query(&format!("ANALYZE TABLE `{t}`"))
                    .execute(&mut conn)
                    .await?;
            }
            let sizes: Vec<(String, i64)> = sqlx::query_as(
                "SELECT CAST(table_name AS CHAR), CAST(data_length + index_length AS SIGNED) \
                 FROM information_schema.tables WHERE table_schema = DATABASE()",
            )
            .fetch_all(&mut conn)
            .await?;
            conn.close().await?;
            let mut stored = Stored {
                events: 0,
                recipients: 0,
                other: 0,
            };
            for (table, bytes) in sizes {
                let bytes = bytes.max(0) as u64;
                match table.as_str() {
                    "email_events" => stored.events += bytes,
                    "email_history" => stored.recipients += bytes,
                    _ => stored.other += bytes,
                }
            }
            Ok(stored)
        }
    }
}

async fn mysql_version(config: &HistoryConfig) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::MySqlConnection::connect(&config.url).await?;
    let v: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(v)
}
