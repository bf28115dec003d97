//! `loadtest history`: fills a history database with synthetic delivery history (by
//! default 10 million recipients' rows over 12 months for 1 million users, written
//! through the history's own writer, so the fill measures its sustained events/s), then
//! times the queries `GET /v1/history` and `GET /v1/messages/{id}` run, and prints
//! their p50/p95/p99.
//!
//! ```sh
//! loadtest history --url mysql://root@127.0.0.1:3306/postroad_bench
//! loadtest history --url mysql://root@127.0.0.1:3306/postroad_bench --queries-only
//! ```

mod fill;
mod queries;
mod rates;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use postroad_history::{Backend, HistoryConfig, HistoryStore};

pub use fill::Synthetic;

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The history database: `mysql://user@host:3306/database` (created when missing)
    /// or a SQLite file path.
    #[arg(long)]
    pub url: String,
    /// Recipients' rows to write (one message, one recipient each; two events per
    /// row: `queued`, then the outcome in a later batch).
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Months the messages are spread over, ending now.
    #[arg(long, default_value_t = 12)]
    pub months: u32,
    /// Distinct users (`userId`) the messages go to.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Messages per writer batch (each batch holds their `queued` events and the
    /// outcomes of the batch before: twice as many events).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent writers (as many history processes would be). 1 is what one
    /// `postroad serve` runs.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Queries of each kind to time.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Rows per page of the list queries.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Do not fill: time the queries on what the database holds (from an earlier
    /// fill of the same day with the same --rows, --months and --users).
    #[arg(long)]
    pub queries_only: bool,
    /// Drop the database (MySQL) or file (SQLite) first when it holds rows.
    #[arg(long)]
    pub fresh: bool,
    /// After the fill, record events/s, events per CPU-second of this process and the
    /// bytes the database holds per event as the "history" section of this rates file
    /// (for `postroad plan --rates`; other sections are kept).
    #[arg(long, value_name = "FILE", conflicts_with = "queries_only")]
    pub rates_out: Option<PathBuf>,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        args.rows > 0 && args.users > 0,
        "--rows and --users must be positive"
    );
    anyhow::ensure!((1..=120).contains(&args.months), "--months is 1 to 120");
    anyhow::ensure!(
        args.batch > 0 && args.writers > 0,
        "--batch and --writers must be positive"
    );
    let data = Synthetic::new(args.rows, args.months, args.users);
    let config = history_config(&args.url);
    let dir = PathBuf::from(".");
    if !args.queries_only {
        prepare(&args, &config).await?;
        HistoryStore::migrate_from(&config, &dir, data.first_day())
            .await
            .context("cannot migrate the history database")?;
    }
    let store = HistoryStore::open(&config, &dir)
        .await
        .context("cannot open the history database")?;
    println!("history at {}", store.location());
    if !args.queries_only {
        anyhow::ensure!(
            !fill::holds_rows(&store).await?,
            "the database holds history already: pass --fresh to start over, or --queries-only"
        );
        let cpu_before = crate::rates_file::own_cpu_secs();
        let report = fill::run(&store, &data, args.batch, args.writers).await?;
        let cpu = crate::rates_file::own_cpu_secs()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        report.print();
        if let Some(path) = &args.rates_out {
            rates::write(path, &config, &report, cpu).await?;
        }
    }
    let report = queries::run(&store, &data, args.queries, args.limit).await?;
    report.print();
    store.close().await;
    Ok(std::process::ExitCode::SUCCESS)
}

fn history_config(url: &str) -> HistoryConfig {
    if url.starts_with("mysql://") {
        HistoryConfig {
            backend: Backend::Mysql,
            url: url.to_string(),
            max_connections: 16,
            ..HistoryConfig::default()
        }
    } else {
        HistoryConfig {
            path: PathBuf::from(url.trim_start_matches("sqlite://")),
            ..HistoryConfig::default()
        }
    }
}

/// Creates the MySQL database when missing (dropping it first with `--fresh`), or
/// removes the SQLite file with `--fresh`.
async fn prepare(args: &HistoryArgs, config: &HistoryConfig) -> anyhow::Result<()> {
    match config.backend {
        Backend::Sqlite => {
            if args.fresh {
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = config.path.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
            }
            Ok(())
        }
        Backend::Mysql => {
            use sqlx::Connection;
            let (server, database) = config
                .url
                .rsplit_once('/')
                .filter(|(_, db)| {
                    !db.is_empty() && db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .context("--url must name a database of letters, digits and _")?;
            let mut conn = sqlx::MySqlConnection::connect(server)
                .await
                .with_context(|| {
                    format!("cannot connect to {}", postroad_history::redact(server))
                })?;
            if args.fresh {
                sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
                    .execute(&mut conn)
                    .await?;
            }
            sqlx::query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            Ok(())
        }
    }
}

/// Percentiles of a set of durations, in ms.
pub(crate) struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Self {
            count: samples.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p95, self.p99, self.max, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(Vec::new()).count, 0);
    }
}
