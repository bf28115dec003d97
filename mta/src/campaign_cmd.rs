//! `postroad campaign list|show|pause|resume|cancel`: campaigns in the application
//! store (the data directory's `app.sqlite`, or the history's MySQL database), also
//! while servers run: a paused or cancelled campaign stops being expanded after the
//! batch in progress and the relays hold (paused) or drop (cancelled) its queued mail
//! within seconds; a resumed one is taken up within seconds.

use std::path::PathBuf;

use anyhow::Context;
use postroad_api::AppStore;
use postroad_api::campaigns::{CampaignView, Results};
use postroad_api::history::CampaignStatusCount;
use postroad_api::store::campaigns::{CampaignRecord, state};
use postroad_history::HistoryStore;

use crate::config::Config;
use crate::text_table::with_header;

#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    #[command(subcommand)]
    pub command: CampaignCommand,
    /// Config file (for `server.data_dir` and `[history]`).
    #[arg(long, short, env = "POSTROAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Only this tenant's campaigns (default: every tenant's).
    #[arg(long, global = true)]
    pub tenant: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum CampaignCommand {
    /// The newest campaigns with their progress.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One campaign: its list, expansion and results from the history, as JSON.
    Show { id: String },
    /// Queue no more of it and hold what is queued (also once it is sent).
    Pause { id: String },
    /// Go on with a paused campaign.
    Resume { id: String },
    /// Stop it for good: what is queued and not yet sent is dropped.
    Cancel { id: String },
}

pub async fn run(args: CampaignArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    crate::data_dir::prepare(&config.server.data_dir)?;
    let store = crate::app_store::open(&config).await?;
    let result = command(&config, &store, args.tenant.as_deref(), args.command).await;
    store.close().await;
    result
}

async fn command(
    config: &Config,
    store: &AppStore,
    tenant: Option<&str>,
    command: CampaignCommand,
) -> anyhow::Result<()> {
    let (id, verb) = match command {
        CampaignCommand::List { limit, json } => {
            let campaigns = store.campaigns(tenant, limit.max(1)).await?;
            let mut views = Vec::with_capacity(campaigns.len());
            for c in &campaigns {
                views.push(CampaignView::load(store, c, None).await?);
            }
            if json {
                for v in &views {
                    println!("{}", serde_json::to_string(v)?);
                }
            } else {
                print!("{}", table(&views));
            }
            return Ok(());
        }
        CampaignCommand::Show { id } => {
            let c = find(store, tenant, &id).await?;
            let history = HistoryStore::open_reader(&config.history, &config.server.data_dir)
                .await
                .context("cannot open the history")?;
            let counts = history.campaign_statuses(&c.id).await;
            history.close().await;
            let counts: Vec<CampaignStatusCount> = counts?
                .into_iter()
                .map(|s| CampaignStatusCount {
                    variant: s.variant,
                    status: s.status,
                    machine: s.machine,
                    recipients: s.recipients,
                })
                .collect();
            let v = CampaignView::load(store, &c, Some(Results::of(&counts))).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        CampaignCommand::Pause { id } => (id, "pause"),
        CampaignCommand::Resume { id } => (id, "resume"),
        CampaignCommand::Cancel { id } => (id, "cancel"),
    };
    let (from, to) = state::transition(verb).expect("a known action");
    let c = find(store, tenant, &id).await?;
    if !store.set_campaign_state(tenant, &id, from, to).await? {
        anyhow::bail!("campaign {id} is {}: cannot {verb} it", c.state);
    }
    println!("campaign {id}: {to}");
    Ok(())
}

async fn find(store: &AppStore, tenant: Option<&str>, id: &str) -> anyhow::Result<CampaignRecord> {
    store
        .campaign(tenant, id)
        .await?
        .with_context(|| format!("no campaign {id}"))
}

fn table(views: &[CampaignView]) -> String {
    let rows: Vec<[String; 7]> = views
        .iter()
        .map(|v| {
            [
                v.id.clone(),
                v.name.clone(),
                v.state.clone(),
                v.list.recipients.to_string(),
                v.expansion.queued.to_string(),
                v.expansion.suppressed.to_string(),
                format!("{:.1}%", v.expansion.percent),
            ]
        })
        .collect();
    with_header(
        [
            "ID",
            "NAME",
            "STATE",
            "RECIPIENTS",
            "QUEUED",
            "SUPPRESSED",
            "EXPANDED",
        ],
        &rows,
    )
}
