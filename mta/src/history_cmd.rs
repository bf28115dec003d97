//! `postroad history`: the delivery history of a recipient, a message or the messages
//! of one user of the sending application, read from the history database (also
//! while the server runs and writes it; on MySQL from `history.read_url`).

use std::path::PathBuf;

use anyhow::Context;
use postroad_history::{
    Cursor, EventKind, HistoryQuery, HistoryStore, MAX_LIMIT, format_rows, format_statuses,
};
use postroad_queue::MessageId;

use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true))]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    /// Messages sent to one recipient address (compared without regard to case).
    #[arg(long, group = "what")]
    pub recipient: Option<String>,
    /// One message (its queue id): each recipient's status, then every event.
    #[arg(long, group = "what", conflicts_with_all = ["recipient", "user_id", "status"])]
    pub message_id: Option<String>,
    /// Messages for one user of the sending application (X-Postroad-User-Id).
    #[arg(long, group = "what")]
    pub user_id: Option<u64>,
    /// Only messages in this status now: queued, deferred, delivered, bounced, expired,
    /// opened, clicked, complained, suppressed, unsubscribed.
    #[arg(long, group = "what", value_parser = parse_status)]
    pub status: Option<EventKind>,
    /// Only messages of this email type (X-Postroad-Email-Type).
    #[arg(long)]
    pub email_type: Option<String>,
    /// Only messages sent at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<u64>,
    /// Only messages sent before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<u64>,
    /// Most rows shown (at most 1000); with --message-id, most events.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Start after this position (printed after a full page).
    #[arg(long)]
    pub cursor: Option<Cursor>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Config file (for `[history]` and `server.data_dir`).
    #[arg(long, short, env = "POSTROAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// Months in object storage (`[history.archive]`): list, archive now, restore.
    Archive(crate::archive_cmd::ArchiveArgs),
}

fn parse_status(s: &str) -> Result<EventKind, String> {
    s.parse()
}

fn parse_time(s: &str) -> Result<u64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    if let Some(HistoryCommand::Archive(archive)) = args.command {
        return crate::archive_cmd::run(archive).await;
    }
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir.clone() {
        config.set_data_dir(dir);
    }
    anyhow::ensure!(
        args.limit >= 1 && args.limit <= MAX_LIMIT,
        "--limit must be between 1 and {MAX_LIMIT}"
    );
    let store = HistoryStore::open_reader(&config.history, &config.server.data_dir)
        .await
        .context("cannot open the delivery history (has postroad serve run with this config?)")?;
    let result = show(&store, &args).await;
    store.close().await;
    result
}

async fn show(store: &HistoryStore, args: &HistoryArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.message_id {
        let id: MessageId = id
            .parse()
            .map_err(|_| anyhow::anyhow!("{id:?} is not a message id (32 hex digits)"))?;
        let statuses = store.status_by_message_id(id).await?;
        let events = store.by_message_id(id, args.limit).await?;
        if args.json {
            let out = serde_json::json!({ "recipients": statuses, "events": events });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!("{}\n{}", format_statuses(&statuses), format_rows(&events));
        }
        return Ok(());
    }
    let query = HistoryQuery {
        user_id: args.user_id,
        email_type: args.email_type.clone(),
        status: args.status,
        recipient: args.recipient.clone(),
        tenant: None,
        from_ms: args.from,
        to_ms: args.to,
        limit: args.limit,
        cursor: args.cursor,
    };
    let page = store.query(&query).await?;
    if args.json {
        let out = serde_json::json!({
            "rows": page.rows,
            "next": page.next.map(|c| c.to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", format_statuses(&page.rows));
        if let Some(next) = page.next {
            println!("more: --cursor {next}");
        }
    }
    Ok(())
}
