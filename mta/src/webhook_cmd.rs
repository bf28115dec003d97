//! `postroad webhook list|dead ID|redrive ID`: the operator's view of every tenant's
//! webhook endpoints (beside the history, as the API keys are): their backlog, the
//! events given up on, and sending those again. Running servers deliver what is
//! queued again within a second.

use std::path::PathBuf;

use postroad_api::AppStore;
use postroad_queue::rfc3339;
use serde::Serialize;

use crate::config::Config;
use crate::text_table::with_header;

/// Dead letters printed per page read.
const PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    pub command: WebhookCommand,
    /// Config file (for `server.data_dir` and `[history]`).
    #[arg(long, short, env = "POSTROAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON (lines, for `dead`) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Every tenant's endpoints: URL, event types, events waiting, dead letters.
    List,
    /// An endpoint's dead letters, oldest first: when, why, and the event.
    Dead { id: String },
    /// Queue an endpoint's dead letters again.
    Redrive { id: String },
}

#[derive(Serialize)]
struct Row {
    id: String,
    tenant: String,
    url: String,
    events: String,
    waiting: u64,
    dead_letters: u64,
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    crate::data_dir::prepare(&config.server.data_dir)?;
    let store = crate::app_store::open(&config).await?;
    let result = command(&store, args.command, args.json).await;
    store.close().await;
    result
}

async fn command(store: &AppStore, command: WebhookCommand, json: bool) -> anyhow::Result<()> {
    let known = |id: &str, all: &[postroad_webhooks::customer::Endpoint]| {
        anyhow::ensure!(all.iter().any(|e| e.id == id), "no webhook endpoint {id}");
        Ok(())
    };
    match command {
        WebhookCommand::List => {
            let endpoints = store.webhook_endpoints(None).await?;
            let counts = store.webhook_counts().await?;
            let rows: Vec<Row> = endpoints
                .into_iter()
                .map(|e| {
                    let (waiting, dead_letters) = counts
                        .iter()
                        .find(|(id, _, _)| *id == e.id)
                        .map_or((0, 0), |(_, w, d)| (*w, *d));
                    Row {
                        events: match e.events_text() {
                            all if all.is_empty() => "all".into(),
                            some => some,
                        },
                        id: e.id,
                        tenant: e.tenant,
                        url: e.url,
                        waiting,
                        dead_letters,
                    }
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let cells: Vec<[String; 6]> = rows
                    .into_iter()
                    .map(|r| {
                        [
                            r.id,
                            if r.tenant.is_empty() {
                                "-".into()
                            } else {
                                r.tenant
                            },
                            r.waiting.to_string(),
                            r.dead_letters.to_string(),
                            r.events,
                            r.url,
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    with_header(["ID", "TENANT", "WAITING", "DEAD", "EVENTS", "URL"], &cells)
                );
            }
        }
        WebhookCommand::Dead { id } => {
            known(&id, &store.webhook_endpoints(None).await?)?;
            let mut after = 0;
            let mut cells = Vec::new();
            loop {
                let page = store.webhook_dead_letters(&id, after, PAGE).await?;
                for d in &page {
                    let event: serde_json::Value =
                        serde_json::from_str(&d.payload).unwrap_or_default();
                    if json {
                        let line = serde_json::json!({
                            "seq": d.seq,
                            "queued_at": rfc3339(d.queued_at_ms),
                            "failed_at": rfc3339(d.failed_at_ms),
                            "error": d.error,
                            "event": event,
                        });
                        println!("{line}");
                    } else {
                        cells.push([
                            d.seq.to_string(),
                            rfc3339(d.failed_at_ms),
                            event["type"].as_str().unwrap_or("?").to_string(),
                            event["recipient"].as_str().unwrap_or("?").to_string(),
                            d.error.clone(),
                        ]);
                    }
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = last.seq,
                    _ => break,
                }
            }
            if !json {
                print!(
                    "{}",
                    with_header(["SEQ", "FAILED", "TYPE", "RECIPIENT", "ERROR"], &cells)
                );
            }
        }
        WebhookCommand::Redrive { id } => {
            known(&id, &store.webhook_endpoints(None).await?)?;
            let now = postroad_queue::unix_ms(std::time::SystemTime::now());
            let n = store.redrive_webhook_events(&id, now).await?;
            println!("queued {n} events again for {id}");
        }
    }
    Ok(())
}
