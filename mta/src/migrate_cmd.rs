//! `postroad migrate`: brings the history database (SQLite or MySQL) to this build's
//! schema and adds the coming months' partitions. `serve` migrates an embedded SQLite
//! history by itself but refuses a MySQL schema that is not current, so that one
//! deliberate step, not whichever node starts first, changes a shared database.

use std::path::PathBuf;

use anyhow::Context;
use postroad_history::HistoryStore;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Config file (for `[history]` and `server.data_dir`).
    #[arg(long, short, env = "POSTROAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    let migrated = HistoryStore::migrate(&config.history, &config.server.data_dir)
        .await
        .context("cannot migrate the delivery history")?;
    if migrated.applied.is_empty() {
        println!("history at {}: schema is current", migrated.location);
    } else {
        let versions: Vec<String> = migrated.applied.iter().map(i64::to_string).collect();
        println!(
            "history at {}: applied migrations {}",
            migrated.location,
            versions.join(", ")
        );
    }
    Ok(())
}
