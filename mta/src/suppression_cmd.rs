//! `postroad suppression list|show|add|remove|import|export`: the suppression list,
//! kept beside the history (the data directory's `app.sqlite`, or the history's MySQL
//! database), also while servers run: with `[redis]` they see a change at once, else
//! within `suppression.refresh_secs`.
//!
//! Import and export speak CSV with a header row: `address` (required), `reason`,
//! `detail`, `expires_at` (RFC 3339, empty: never) on import, and on export also
//! `source` and `created_at`. A bad row is reported with its line number and skipped;
//! the good ones are imported in batches.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use postroad_webhooks::suppression::{Entry, Field, Suppressions, entry_by_hand, list_address};
use serde::Serialize;

use postroad_queue::rfc3339;

use crate::config::Config;
use crate::text_table::with_header;

/// Entries written to the store at once by `import`.
const IMPORT_BATCH: usize = 1000;
/// Entries read from the store at once by `list` and `export`.
const PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct SuppressionArgs {
    #[command(subcommand)]
    pub command: SuppressionCommand,
    /// Config file (for `server.data_dir`, `[history]` and `[redis]`).
    #[arg(long, short, env = "POSTROAD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, env = "POSTROAD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The tenant whose list it is (default: mail without a tenant, as SMTP's).
    #[arg(long, global = true, default_value = "")]
    pub tenant: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum SuppressionCommand {
    /// Print the tenant's entries in address order.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one address's entry (exit code 1 when it is not listed).
    Show { address: String },
    /// List addresses (an address already listed gets the new entry).
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
        /// hard-bounce, soft-bounce, complaint, unsubscribe or manual.
        #[arg(long, default_value = "manual")]
        reason: String,
        /// A note (at most 500 characters).
        #[arg(long, default_value = "")]
        detail: String,
        /// When the entries stop holding (RFC 3339); default: never.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Take addresses off the list: mail to them goes again.
    Remove {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Add the rows of a CSV file (`-`: standard input).
    Import { file: PathBuf },
    /// Write the tenant's entries as CSV on standard output.
    Export,
}

pub async fn run(args: SuppressionArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    crate::data_dir::prepare(&config.server.data_dir)?;
    let store = crate::app_store::open(&config).await?;
    let redis = config.redis.link().map_err(anyhow::Error::msg)?;
    let list = Suppressions::unloaded(Arc::new(store.clone()), redis, config.suppression.clone());
    let result = command(&list, &args.tenant, args.command).await;
    store.close().await;
    result
}

async fn command(
    list: &Suppressions,
    tenant: &str,
    command: SuppressionCommand,
) -> anyhow::Result<()> {
    let now = now_ms();
    match command {
        SuppressionCommand::List { json } => {
            let mut out = std::io::stdout().lock();
            let mut rows = Vec::new();
            each_entry(list, tenant, |entry| {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&Row::of(entry))?)?;
                } else {
                    rows.push(entry.clone());
                }
                Ok(())
            })
            .await?;
            if !json {
                write!(out, "{}", table(&rows))?;
            }
        }
        SuppressionCommand::Show { address } => {
            let address = list_address(&address).map_err(anyhow::Error::msg)?;
            match list.store().get(tenant, &address).await? {
                Some(entry) if entry.active(now) => {
                    println!("{}", serde_json::to_string_pretty(&Row::of(&entry))?)
                }
                _ => {
                    eprintln!("{address} is not listed");
                    std::process::exit(1);
                }
            }
        }
        SuppressionCommand::Add {
            addresses,
            reason,
            detail,
            expires,
        } => {
            let entries = addresses
                .iter()
                .map(|a| {
                    let row = ImportRow {
                        address: a.clone(),
                        reason: reason.clone(),
                        detail: detail.clone(),
                        expires_at: expires.clone().unwrap_or_default(),
                    };
                    row.entry(tenant, "cli", now).map_err(anyhow::Error::msg)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = entries.len();
            list.add(entries).await?;
            println!("listed {n}");
        }
        SuppressionCommand::Remove { addresses } => {
            let mut missing = 0;
            for address in addresses {
                let address = list_address(&address).map_err(anyhow::Error::msg)?;
                if list.remove(tenant, &address).await? {
                    println!("removed {address}");
                } else {
                    eprintln!("{address} is not listed");
                    missing += 1;
                }
            }
            anyhow::ensure!(missing == 0, "{missing} of the addresses were not listed");
        }
        SuppressionCommand::Import { file } => import(list, tenant, &file, now).await?,
        SuppressionCommand::Export => {
            let mut out = csv::Writer::from_writer(std::io::stdout().lock());
            out.write_record(EXPORT_HEADER)?;
            each_entry(list, tenant, |e| {
                let created = rfc3339(e.created_at_ms);
                let expires = e.expires_at_ms.map(rfc3339).unwrap_or_default();
                out.write_record([
                    e.address.as_str(),
                    e.reason.as_str(),
                    e.source.as_str(),
                    e.detail.as_str(),
                    created.as_str(),
                    expires.as_str(),
                ])?;
                Ok(())
            })
            .await?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The columns of `export` (import reads the same file).
pub const EXPORT_HEADER: [&str; 6] = [
    "address",
    "reason",
    "source",
    "detail",
    "created_at",
    "expires_at",
];

/// One CSV row of `import` (unknown columns, such as `source` and `created_at` of an
/// export, are ignored).
#[derive(Debug, serde::Deserialize)]
struct ImportRow {
    address: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    expires_at: String,
}

impl ImportRow {
    fn entry(self, tenant: &str, source: &str, now: u64) -> Result<Entry, String> {
        fn given(text: &str) -> Option<&str> {
            Some(text.trim()).filter(|t| !t.is_empty())
        }
        entry_by_hand(
            tenant,
            &self.address,
            given(&self.reason),
            self.detail,
            given(&self.expires_at),
            source,
            now,
        )
        .map_err(|(field, why)| match field {
            Field::Address => why,
            Field::Reason => format!("reason {why}"),
            Field::Detail => format!("detail: {why}"),
            Field::ExpiresAt => format!("expires_at {why}"),
        })
    }
}

async fn import(list: &Suppressions, tenant: &str, file: &PathBuf, now: u64) -> anyhow::Result<()> {
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(input);
    let headers = reader.byte_headers()?.clone();
    anyhow::ensure!(
        headers.iter().any(|h| h == b"address"),
        "{}: the header row has no `address` column",
        file.display()
    );
    let (mut imported, mut bad) = (0usize, 0usize);
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        let line = record.position().map_or(0, |p| p.line());
        let entry = record
            .deserialize::<ImportRow>(Some(&headers))
            .map_err(|e| e.to_string())
            .and_then(|row| row.entry(tenant, "import", now));
        match entry {
            Ok(entry) => batch.push(entry),
            Err(e) => {
                bad += 1;
                eprintln!("{}:{line}: {e}", file.display());
            }
        }
        if batch.len() == IMPORT_BATCH {
            imported += batch.len();
            list.add(std::mem::take(&mut batch)).await?;
        }
    }
    imported += batch.len();
    list.add(batch).await?;
    println!("imported {imported}; {bad} bad rows skipped");
    anyhow::ensure!(bad == 0, "{bad} rows were not imported");
    Ok(())
}

/// Calls `each` with every entry of the tenant's list, a page at a time.
async fn each_entry(
    list: &Suppressions,
    tenant: &str,
    mut each: impl FnMut(&Entry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let mut after: Option<String> = None;
    loop {
        let page = list.store().page(tenant, after.as_deref(), PAGE).await?;
        for entry in page.iter().filter(|e| e.active(now)) {
            each(entry)?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.address.clone()),
            _ => return Ok(()),
        }
    }
}

/// An entry as `list --json` and `show` print it.
#[derive(Serialize)]
struct Row<'a> {
    address: &'a str,
    reason: &'a str,
    source: &'a str,
    detail: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

impl<'a> Row<'a> {
    fn of(e: &'a Entry) -> Self {
        Self {
            address: &e.address,
            reason: e.reason.as_str(),
            source: &e.source,
            detail: &e.detail,
            created_at: rfc3339(e.created_at_ms),
            expires_at: e.expires_at_ms.map(rfc3339),
        }
    }
}

fn table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.address.clone(),
                e.reason.as_str().into(),
                e.source.clone(),
                rfc3339(e.created_at_ms),
                e.expires_at_ms
                    .map(rfc3339)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    with_header(["ADDRESS", "REASON", "SOURCE", "LISTED", "EXPIRES"], &rows)
}

fn now_ms() -> u64 {
    postroad_queue::unix_ms(std::time::SystemTime::now())
}
