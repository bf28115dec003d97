//! `postroad history`: what happened to a recipient, a message or the messages of one
//! user of the sending application, read straight from
//! the history database (also while the server runs and writes it).

use std::path::PathBuf;

use anyhow::Context;
use postroad_history::{HistoryStore, format_rows};
use postroad_queue::MessageId;

use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct HistoryArgs {
    /// Events of one recipient address.
    #[arg(long, group = "what")]
    pub recipient: Option<String>,
    /// Events of one message (its queue id).
    #[arg(long, group = "what")]
    pub message_id: Option<String>,
    /// Events of messages for one user of the sending application (X-Postroad-User-Id).
    #[arg(long, group = "what")]
    pub user_id: Option<u64>,
    /// With --user-id: only messages of this email type (X-Postroad-Email-Type).
    #[arg(long, requires = "user_id")]
    pub email_type: Option<String>,
    /// Most events shown.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Config file (for `history.path` and `server.data_dir`).
    #[arg(long, short, env = "POSTROAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    let path = config.history.resolved_path(&config.server.data_dir);
    anyhow::ensure!(
        path.exists(),
        "no history at {} (has postroad serve run with this data directory?)",
        path.display()
    );
    let store = HistoryStore::open_read_only(&path)
        .await
        .with_context(|| format!("cannot open the history at {}", path.display()))?;
    let events = match (&args.recipient, &args.message_id, args.user_id) {
        (Some(recipient), _, _) => store.by_recipient(recipient, args.limit).await?,
        (None, Some(id), _) => {
            let id: MessageId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("{id:?} is not a message id (32 hex digits)"))?;
            store.by_message_id(id, args.limit).await?
        }
        (None, None, Some(user)) => {
            let email_type = args.email_type.as_deref();
            store.by_user(user, email_type, args.limit).await?
        }
        (None, None, None) => unreachable!("clap requires one of them"),
    };
    store.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else if events.is_empty() {
        println!("no events");
    } else {
        print!("{}", format_rows(&events));
    }
    Ok(())
}
