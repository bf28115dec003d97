//! The `postroad` command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use postroad::config::Config;

#[derive(Parser)]
#[command(
    name = "postroad",
    version,
    about = "A high-performance SMTP mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MTA until SIGTERM or SIGINT (every role and the embedded spool unless
    /// told otherwise).
    Serve {
        /// TOML config file; without one, built-in defaults (see postroad.example.toml).
        #[arg(long, short, env = "POSTROAD_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (spool, generated TLS material); overrides server.data_dir.
        #[arg(long, env = "POSTROAD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Deliver everything to this host:port (like Postfix's relayhost); overrides
        /// relay.smarthost.
        #[arg(long, env = "POSTROAD_SMARTHOST")]
        smarthost: Option<String>,
        /// Roles this process runs, comma separated: `ingress` (SMTP listeners and the
        /// HTTP API), `relay` (delivery), `history` (with the Kafka backend: the events
        /// topic into the history, as a consumer group). Default: all three. With the
        /// Kafka backend, run as many of each as needed.
        #[arg(long, env = "POSTROAD_ROLES", value_delimiter = ',', default_values = ["ingress", "relay", "history"])]
        roles: Vec<RoleArg>,
    },
    /// Kafka backend tools.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// Print the argon2 hash of a password (read from stdin) for [[auth.users]].
    Passwd,
    /// Inspect and control the running server's queue (through its admin endpoint).
    Queue(postroad::admin::cli::QueueArgs),
    /// List, inspect, requeue or purge dead letters (through the admin endpoint).
    Dlq(postroad::admin::cli::DlqArgs),
    /// Show the delivery history of a recipient, a user or a message; `history
    /// archive list|run|restore` for the months in object storage.
    History(postroad::history_cmd::HistoryArgs),
    /// Bring the history database to this version's schema (MySQL needs it before
    /// `serve`; the embedded SQLite history is migrated by `serve` itself).
    Migrate(postroad::migrate_cmd::MigrateArgs),
    /// Create, list or revoke the HTTP API's bearer keys.
    ApiKey(postroad::api_key_cmd::ApiKeyArgs),
    /// Load a config file, check it and print the effective configuration.
    CheckConfig {
        #[arg(long, short, env = "POSTROAD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Campaigns: `campaign list|show|pause|resume|cancel`.
    Campaign(postroad::campaign_cmd::CampaignArgs),
    /// The suppression list: `suppression list|show|add|remove|import|export`.
    Suppression(postroad::suppression_cmd::SuppressionArgs),
    /// The tenants' webhook endpoints: `webhook list|dead ID|redrive ID`.
    Webhook(postroad::webhook_cmd::WebhookArgs),
    /// Classify bounces and complaints: `bounce classify FILE...`.
    Bounce(postroad::bounce_cmd::BounceArgs),
    /// The capacity planner: ingress nodes, relay workers, Kafka, MySQL, Redis,
    /// InfluxDB and the monthly cost for a mail volume, from measured per-core rates.
    Plan(Box<postroad::plan::PlanArgs>),
    /// Check a shaping file (relay.shaping_file) and print its layers.
    CheckShaping {
        /// The shaping file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    Ingress,
    Relay,
    History,
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Create the topics of `[kafka]` with their partition counts (existing topics are
    /// left as they are).
    Init {
        #[arg(long, short, env = "POSTROAD_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            smarthost,
            roles,
        } => {
            let mut config = Config::load(config.as_deref())?;
            init_tracing(config.log.format);
            if let Some(dir) = data_dir {
                config.set_data_dir(dir);
            }
            if let Some(host) = smarthost {
                config.relay.smarthost = Some(host);
                config.relay.validate().map_err(anyhow::Error::msg)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("postroad")
                .build()
                .context("cannot start the async runtime")?;
            let roles = postroad::serve::Roles {
                ingress: roles.contains(&RoleArg::Ingress),
                relay: roles.contains(&RoleArg::Relay),
                history: roles.contains(&RoleArg::History),
            };
            runtime.block_on(postroad::serve::serve(config, roles))
        }
        Command::Kafka {
            command: KafkaCommand::Init { config },
        } => {
            let config = Config::load(config.as_deref())?;
            init_tracing(config.log.format);
            config.kafka.validate().map_err(anyhow::Error::msg)?;
            let created = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(postroad_queue::kafka::init_topics(&config.kafka))
                .with_context(|| format!("cannot create topics at {}", config.kafka.brokers))?;
            for (topic, outcome) in created {
                let partitions = config
                    .kafka
                    .all_topics()
                    .into_iter()
                    .find(|t| t.0 == topic)
                    .map_or(0, |t| t.1);
                match outcome {
                    postroad_queue::kafka::TopicOutcome::Created => {
                        println!("created {topic} ({partitions} partitions)")
                    }
                    postroad_queue::kafka::TopicOutcome::AlreadyExists => {
                        println!("exists  {topic}")
                    }
                }
            }
            Ok(())
        }
        Command::Passwd => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password: ");
            }
            let mut password = String::new();
            stdin
                .lock()
                .read_line(&mut password)
                .context("cannot read the password")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!("{}", postroad::auth::hash_password(password));
            Ok(())
        }
        Command::Queue(args) => postroad::admin::cli::queue(args),
        Command::Dlq(args) => postroad::admin::cli::dlq(args),
        Command::History(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::history_cmd::run(args)),
        Command::Migrate(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::migrate_cmd::run(args)),
        Command::ApiKey(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::api_key_cmd::run(args)),
        Command::Campaign(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::campaign_cmd::run(args)),
        Command::Suppression(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::suppression_cmd::run(args)),
        Command::Webhook(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(postroad::webhook_cmd::run(args)),
        Command::CheckShaping { file } => postroad::shaping::check(&file),
        Command::Bounce(args) => postroad::bounce_cmd::run(args),
        Command::Plan(args) => postroad::plan::run(*args),
        Command::CheckConfig { config } => {
            let mut config = Config::load(config.as_deref())?;
            postroad_dkim::Signer::load(&config.dkim)?;
            postroad_relay::Shaping::load(config.relay.shaping_file.as_deref())?;
            postroad_relay::provider::check(&config.relay.providers).map_err(anyhow::Error::msg)?;
            for provider in config.relay.providers.values_mut() {
                *provider = provider.redacted();
            }
            config.bounces = config.bounces.redacted();
            config.tracking = config.tracking.redacted();
            if !config.admin.token.is_empty() {
                config.admin.token = "(set; not shown)".into();
            }
            for url in [&mut config.history.url, &mut config.history.read_url] {
                *url = postroad_history::redact(url);
            }
            print!(
                "{}",
                toml::to_string_pretty(&config).context("cannot print the config")?
            );
            Ok(())
        }
    }
}

fn init_tracing(format: postroad::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        postroad::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        postroad::config::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
