//! `postroad plan`: the capacity planner. From the mail a deployment must carry and
//! the per-core rates Postroad's own benchmarks measured (`rates.json`, written by
//! `loadtest`), it sizes ingress nodes, relay workers, history writers, Kafka,
//! MySQL, Redis and InfluxDB and prices them (`prices.toml`). The model and its
//! assumptions are in the README's "Capacity planner" section and in [`model`].

pub mod cost;
pub mod model;
pub mod prices;
pub mod quantity;
pub mod rates;
pub mod report;

use std::path::PathBuf;

use clap::Args;

use quantity::{count, positive_count, positive_number, share, size};

/// Flags of `postroad plan`. Counts take k, M, G suffixes (`10M`, `1.5k`); sizes
/// B, KiB, MiB, GiB, TiB or kB, MB, GB, TB (`20KiB`, `5MB`).
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Messages submitted per day, campaigns included.
    #[arg(long, value_name = "N", default_value = "10M", value_parser = positive_count)]
    pub emails_per_day: f64,
    /// Recipients per message on average.
    #[arg(long, value_name = "N", default_value = "1", value_parser = positive_count)]
    pub recipients_per_message: f64,
    /// Average message size (what is queued, stored in Kafka and sent).
    #[arg(long, value_name = "SIZE", default_value = "20KiB", value_parser = size)]
    pub message_size: f64,
    /// Recipients of the largest campaign, delivered within --campaign-hours on top
    /// of the transactional peak (0: no campaign).
    #[arg(long, value_name = "N", default_value = "1M", value_parser = count)]
    pub campaign_recipients: f64,
    /// Hours the largest campaign must be delivered in.
    #[arg(long, value_name = "HOURS", default_value = "1", value_parser = positive_number)]
    pub campaign_hours: f64,
    /// The busiest hour's rate over the day's average.
    #[arg(long, value_name = "FACTOR", default_value = "3", value_parser = positive_number)]
    pub peak_factor: f64,
    /// Days of history kept in MySQL (`history.archive.hot_days`).
    #[arg(long, value_name = "DAYS", default_value = "90", value_parser = positive_number)]
    pub history_days: f64,
    /// Days of history kept at all: older than --history-days, months are archived to
    /// object storage as gzip NDJSON.
    #[arg(long, value_name = "DAYS", default_value = "365", value_parser = positive_number)]
    pub retention_days: f64,
    /// Events stored per recipient: queued and the outcome, plus deferrals, opens,
    /// clicks and complaints on average.
    #[arg(long, value_name = "N", default_value = "3", value_parser = positive_number)]
    pub events_per_recipient: f64,
    /// Target utilisation of CPUs, connections, disks, memory and brokers at the
    /// peak (the rest is headroom).
    #[arg(long, value_name = "SHARE", default_value = "0.6", value_parser = share)]
    pub utilisation: f64,
    /// Cores of an ingress node.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ingress_cores: u32,
    /// Cores of a relay worker (and of a history writer).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub relay_cores: u32,
    /// Seconds a delivery holds a connection to a real receiver (with connection
    /// reuse and pipelining).
    #[arg(long, value_name = "SECS", default_value = "0.3", value_parser = positive_number)]
    pub connection_secs: f64,
    /// Connections one relay worker keeps busy: the site pools' limits
    /// (relay/shaping.toml) bind first at the biggest receiver; Gmail's 10 per
    /// worker for ~30% of a consumer list's mail make about 32.
    #[arg(long, value_name = "N", default_value = "32", value_parser = positive_count)]
    pub connections_per_worker: f64,
    /// Kafka replication factor.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub kafka_replication: u32,
    /// Days Kafka keeps records (retries wait up to relay.max_queue_age_secs, 5 days).
    #[arg(long, value_name = "DAYS", default_value = "7", value_parser = positive_number)]
    pub kafka_retention_days: f64,
    /// Bytes per second one partition takes (an assumption, not measured here).
    #[arg(long, value_name = "SIZE", default_value = "5MB", value_parser = size)]
    pub kafka_partition_write: f64,
    /// Bytes per second one broker writes, replicas included (an assumption).
    #[arg(long, value_name = "SIZE", default_value = "50MB", value_parser = size)]
    pub kafka_broker_write: f64,
    /// Disk of one broker.
    #[arg(long, value_name = "SIZE", default_value = "4TiB", value_parser = size)]
    pub kafka_broker_disk: f64,
    /// Addresses on the suppression lists (Redis hashes).
    #[arg(long, value_name = "N", default_value = "1M", value_parser = count)]
    pub suppression_entries: f64,
    /// Users with stored preferences (Redis hashes `user:prefs:<id>`).
    #[arg(long, value_name = "N", default_value = "0", value_parser = count)]
    pub preference_users: f64,
    /// Email types in use (InfluxDB tags; postroad tags at most 100, the rest "other").
    #[arg(long, value_name = "N", default_value = "20", value_parser = count)]
    pub email_types: f64,
    /// Campaigns a month (each its own InfluxDB series).
    #[arg(long, value_name = "N", default_value = "30", value_parser = count)]
    pub campaigns_per_month: f64,
    /// The measured rates (JSON written by `loadtest e2e|history --rates-out`)
    /// [default: deploy/plan/rates.json, built in].
    #[arg(long, value_name = "FILE")]
    pub rates: Option<PathBuf>,
    /// Unit prices per month (TOML) [default: deploy/plan/prices.example.toml, built
    /// in: illustrative list prices].
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl PlanArgs {
    pub fn inputs(&self) -> model::Inputs {
        model::Inputs {
            emails_per_day: self.emails_per_day,
            recipients_per_message: self.recipients_per_message,
            message_bytes: self.message_size,
            campaign_recipients: self.campaign_recipients,
            campaign_hours: self.campaign_hours,
            peak_factor: self.peak_factor,
            history_days: self.history_days,
            retention_days: self.retention_days,
            events_per_recipient: self.events_per_recipient,
            utilisation: self.utilisation,
            ingress_cores: self.ingress_cores,
            relay_cores: self.relay_cores,
            connection_secs: self.connection_secs,
            connections_per_worker: self.connections_per_worker,
            kafka_replication: self.kafka_replication,
            kafka_retention_days: self.kafka_retention_days,
            kafka_partition_write_bytes: self.kafka_partition_write,
            kafka_broker_write_bytes: self.kafka_broker_write,
            kafka_broker_disk_bytes: self.kafka_broker_disk,
            suppression_entries: self.suppression_entries,
            preference_users: self.preference_users,
            email_types: self.email_types,
            campaigns_per_month: self.campaigns_per_month,
            partitions_ahead: postroad_history::HistoryConfig::default().partitions_ahead,
        }
    }
}

/// The plan for `args`.
pub fn build(args: &PlanArgs) -> anyhow::Result<report::Report> {
    let rates = rates::load(args.rates.as_deref())?;
    let prices = prices::load(args.prices.as_deref())?;
    let inputs = args.inputs();
    let sizing = model::plan(&inputs, &rates.rates);
    let cost = cost::cost(&sizing, &prices);
    Ok(report::Report {
        inputs,
        rates,
        sizing,
        cost,
    })
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let report = build(&args)?;
    if args.json {
        print!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
