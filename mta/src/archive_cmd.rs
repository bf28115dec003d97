//! `postroad history archive list|run|restore`: the months `[history.archive]` keeps
//! in object storage, archiving what is due now, and loading a month back.

use std::path::PathBuf;

use anyhow::Context;
use postroad_history::archive::{Archive, Outcome, parse_month};
use postroad_history::{HistoryStore, today};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub action: ArchiveAction,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (for `[history]`, `[history.archive]` and `server.data_dir`).
    #[arg(long, short, env = "POSTROAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveAction {
    /// The archived parts of each month: events, recipients, size, checksum.
    List,
    /// Archive the months older than history.archive.hot_days now (what `serve` does
    /// every history.archive.interval_secs), or one month whatever its age.
    Run {
        /// One month (YYYY-MM).
        #[arg(long)]
        month: Option<String>,
    },
    /// Load an archived month (YYYY-MM) back into the history database; it stays
    /// there history.archive.keep_restored_days before it is archived again.
    Restore { month: String },
}

pub async fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir.clone() {
        config.set_data_dir(dir);
    }
    anyhow::ensure!(
        config.history.archive.enabled(),
        "history.archive.url is not set: there is no archive"
    );
    let archive = Archive::open(&config.history.archive)?;
    if let ArchiveAction::List = args.action {
        let parts = archive.list().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&parts)?);
        } else {
            println!(
                "{:<8} {:>10} {:>10} {:>12}  archived at               sha256",
                "month", "events", "recipients", "bytes"
            );
            for p in &parts {
                println!(
                    "{:<8} {:>10} {:>10} {:>12}  {:<24}  {}",
                    p.month, p.events, p.recipients, p.compressed_bytes, p.archived_at, p.sha256
                );
            }
        }
        return Ok(());
    }
    let store = HistoryStore::open(&config.history, &config.server.data_dir)
        .await
        .context("cannot open the delivery history")?;
    let result = act(&archive, &store, &args).await;
    store.close().await;
    result
}

async fn act(archive: &Archive, store: &HistoryStore, args: &ArchiveArgs) -> anyhow::Result<()> {
    match &args.action {
        ArchiveAction::List => unreachable!("listed without the database"),
        ArchiveAction::Run { month } => {
            let done = match month {
                Some(month) => {
                    let month = parse_month(month)?;
                    let _lock = store
                        .try_archive_lock()
                        .await?
                        .context("another process is archiving the history; try again later")?;
                    vec![(month, archive.archive_month(store, month, today()).await?)]
                }
                None => archive.archive_due(store, today()).await?,
            };
            let shown: Vec<serde_json::Value> = done
                .iter()
                .map(|(month, outcome)| {
                    let month = month.format("%Y-%m").to_string();
                    match outcome {
                        Outcome::Archived(m) => serde_json::json!({"month": month, "archived": m}),
                        Outcome::Emptied => serde_json::json!({"month": month, "emptied": true}),
                        Outcome::KeptRestored => {
                            serde_json::json!({"month": month, "keptRestored": true})
                        }
                    }
                })
                .collect();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else if done.is_empty() {
                println!("nothing to archive");
            } else {
                for (month, outcome) in &done {
                    let month = month.format("%Y-%m");
                    match outcome {
                        Outcome::Archived(m) => println!(
                            "{month}: archived {} events of {} recipients ({} bytes) as {}",
                            m.events, m.recipients, m.compressed_bytes, m.object
                        ),
                        Outcome::Emptied => println!("{month}: nothing left; removed"),
                        Outcome::KeptRestored => println!("{month}: restored recently; kept"),
                    }
                }
            }
        }
        ArchiveAction::Restore { month } => {
            let month = parse_month(month)?;
            let restored = archive.restore(store, month, today()).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"month": month.format("%Y-%m").to_string(),
                        "parts": restored.parts, "events": restored.events})
                );
            } else {
                println!(
                    "{}: {} events from {} part(s) restored",
                    month.format("%Y-%m"),
                    restored.events,
                    restored.parts
                );
            }
        }
    }
    Ok(())
}
