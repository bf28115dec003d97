//! `postroad api-key create|list|revoke`: the HTTP API's bearer keys, kept beside the
//! history (the data directory's `app.sqlite`, or the history's MySQL database), also
//! while servers run: they pick changes up within seconds.

use std::path::PathBuf;

use postroad_api::AppStore;
use postroad_api::store::keys::ApiKey;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    pub command: ApiKeyCommand,
    /// Config file (for `server.data_dir` and `[history]`).
    #[arg(long, short, env = "POSTROAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it (on standard output, the only time it is shown).
    Create {
        /// What the key is for (shown in lists, usable with revoke).
        #[arg(long)]
        name: String,
        /// Messages submitted with the key are sent for this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the keys (never the keys themselves: their first characters).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key, by id, name or prefix (must match exactly one active key).
    Revoke { key: String },
}

pub async fn run(args: ApiKeyArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    crate::data_dir::prepare(&config.server.data_dir)?;
    let store = crate::app_store::open(&config).await?;
    let result = command(&store, args.command).await;
    store.close().await;
    result
}

async fn command(store: &AppStore, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { name, tenant } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            if let Some(tenant) = &tenant {
                postroad_queue::metadata::token("tenant", tenant)?;
            }
            let (key, record) = store.create_key(&name, tenant.as_deref()).await?;
            println!("{key}");
            eprintln!(
                "created API key {} ({}); it is shown only now: store it",
                record.id, record.name
            );
        }
        ApiKeyCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", table(&keys));
            }
        }
        ApiKeyCommand::Revoke { key } => match store.revoke_key(&key).await? {
            Some(revoked) => println!("revoked {} ({})", revoked.id, revoked.name),
            None => anyhow::bail!("no single active key has the id, name or prefix {key:?}"),
        },
    }
    Ok(())
}

fn table(keys: &[ApiKey]) -> String {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let mut out = format!(
        "{:<32}  {:<16}  {:<12}  {:<10}  {:<19}  {}\n",
        "ID", "NAME", "TENANT", "PREFIX", "CREATED", "REVOKED"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<32}  {:<16}  {:<12}  {:<10}  {:<19}  {}\n",
            k.id,
            k.name,
            k.tenant.as_deref().unwrap_or("-"),
            k.prefix,
            time(k.created_at_ms),
            k.revoked_at_ms.map(time).unwrap_or_else(|| "-".into()),
        ));
    }
    out
}
