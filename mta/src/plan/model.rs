//! The capacity model: inputs and measured rates in, a plan out. Pure arithmetic, no
//! I/O; every formula is the one the README's "Capacity planner" section states.

use serde::Serialize;

/// Seconds in a day.
const DAY: f64 = 86_400.0;
/// Days in an average month (365 / 12).
pub const MONTH_DAYS: f64 = 365.0 / 12.0;
/// Bytes of one event on the `email-events` topic (its JSON: ids, addresses, reply,
/// metadata). An assumption, from the size of the events the tests see.
pub const EVENT_TOPIC_BYTES: f64 = 600.0;
/// Bytes of gzip NDJSON in object storage per byte the month held in MySQL (rows and
/// indexes). An assumption: the archive is the rows without indexes, compressed.
pub const ARCHIVE_RATIO: f64 = 0.1;
/// MySQL servers, each with the whole hot history: a primary and one replica.
pub const MYSQL_SERVERS: u64 = 2;
/// Redis holds everything twice: a primary and one replica.
pub const REDIS_COPIES: f64 = 2.0;
/// Redis memory of one suppression entry (a field of the tenant's hash: a 32-byte
/// address and `0:hard-bounce`), measured on Redis 7.0 (102 bytes), rounded up.
pub const REDIS_SUPPRESSION_BYTES: f64 = 110.0;
/// Redis memory of one user's preference hash (`user:prefs:<id>`, three fields),
/// measured on Redis 7.0 (170 bytes).
pub const REDIS_PREFERENCE_BYTES: f64 = 170.0;
/// Redis memory allowed for templates, shared rate schedules (one small key per
/// site and provider) and Redis's own overhead. An assumption.
pub const REDIS_FIXED_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
/// Destination groups an InfluxDB point is tagged with (`metrics::destination_group`:
/// gmail, microsoft, yahoo, apple, other).
pub const DESTINATION_GROUPS: f64 = 5.0;
/// Series one InfluxDB 1.x node serves comfortably. An assumption, after
/// InfluxData's single-node sizing guidance (moderate load: under a million series).
pub const INFLUX_SERIES_PER_NODE: f64 = 1_000_000.0;
/// Fewest ingress nodes and relay workers (one can fail).
pub const MIN_NODES: u64 = 2;
/// Fewest Kafka brokers.
pub const MIN_BROKERS: u64 = 3;

/// What the user tells the planner (flags; see `mod.rs` for their defaults).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    pub emails_per_day: f64,
    pub recipients_per_message: f64,
    pub message_bytes: f64,
    pub campaign_recipients: f64,
    pub campaign_hours: f64,
    pub peak_factor: f64,
    pub history_days: f64,
    pub retention_days: f64,
    pub events_per_recipient: f64,
    pub utilisation: f64,
    pub ingress_cores: u32,
    pub relay_cores: u32,
    pub connection_secs: f64,
    pub connections_per_worker: f64,
    pub kafka_replication: u32,
    pub kafka_retention_days: f64,
    pub kafka_partition_write_bytes: f64,
    pub kafka_broker_write_bytes: f64,
    pub kafka_broker_disk_bytes: f64,
    pub suppression_entries: f64,
    pub preference_users: f64,
    pub email_types: f64,
    pub campaigns_per_month: f64,
    /// Months of partitions MySQL keeps ready ahead (`history.partitions_ahead`).
    pub partitions_ahead: u32,
}

/// The rates the model runs on (from the rates file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    /// Messages one CPU-second of an ingress process takes in (SMTP, durable).
    pub ingress_messages_per_cpu_sec: f64,
    /// Deliveries one CPU-second of a relay process makes.
    pub relay_deliveries_per_cpu_sec: f64,
    /// Events one history writer stores per second (wall clock, into MySQL).
    pub history_events_per_sec: f64,
    /// Bytes MySQL holds per stored event (the event log's row and indexes).
    pub mysql_bytes_per_event: f64,
    /// Bytes MySQL holds per recipient (the status row and its indexes).
    pub mysql_bytes_per_recipient: f64,
}

/// The load the inputs describe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    pub deliveries_per_day: f64,
    pub avg_messages_per_sec: f64,
    pub avg_deliveries_per_sec: f64,
    pub campaign_deliveries_per_sec: f64,
    /// Transactional peak (average × peak factor) plus the campaign's rate.
    pub peak_submissions_per_sec: f64,
    pub peak_deliveries_per_sec: f64,
    pub peak_events_per_sec: f64,
    pub events_per_day: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ingress {
    pub nodes: u64,
    pub cores_per_node: u32,
    /// Nodes the CPU needs (before rounding up and the minimum).
    pub cpu_nodes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Relay {
    pub workers: u64,
    pub cores_per_worker: u32,
    pub cpu_workers: f64,
    pub connection_workers: f64,
    /// Connections open at the peak across all workers.
    pub peak_connections: f64,
    /// "cpu", "connections" or "minimum": what decided the count.
    pub bound: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// History writer processes (`serve --roles history`).
    pub writers: u64,
    pub cores_per_writer: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kafka {
    pub brokers: u64,
    /// Partitions of `email-send`.
    pub partitions: u64,
    pub replication: u32,
    /// Bytes written to the brokers per second at the peak, replicas included.
    pub peak_write_bytes_per_sec: f64,
    /// Bytes the brokers keep (retention × replication), both topics.
    pub stored_bytes: f64,
    pub brokers_by_throughput: u64,
    pub brokers_by_storage: u64,
    pub partitions_by_throughput: u64,
    /// Disk provisioned on every broker together.
    pub disk_bytes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mysql {
    pub servers: u64,
    pub bytes_per_day: f64,
    pub bytes_per_month: f64,
    /// The history's hot days (in the database).
    pub hot_bytes: f64,
    /// Disk per server: the hot bytes at the target utilisation.
    pub provisioned_bytes: f64,
    /// Archived months (gzip NDJSON in object storage) up to the retention.
    pub archived_bytes: f64,
    /// Monthly partitions a table holds: hot months, the current one, those ahead.
    pub monthly_partitions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redis {
    pub suppression_bytes: f64,
    pub preference_bytes: f64,
    pub fixed_bytes: f64,
    pub used_bytes: f64,
    /// Memory of primary and replica at the target utilisation.
    pub provisioned_bytes: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Influx {
    /// Processes writing points (ingress, relay, history).
    pub hosts: u64,
    pub delivery_series: f64,
    pub other_series: f64,
    pub series: f64,
    pub nodes: u64,
}

/// What the cluster needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub load: Load,
    pub ingress: Ingress,
    pub relay: Relay,
    pub history: History,
    pub kafka: Kafka,
    pub mysql: Mysql,
    pub redis: Redis,
    pub influxdb: Influx,
    /// Bytes sent to receivers per month (egress).
    pub egress_bytes_per_month: f64,
}

/// `x` rounded up to a whole count (a tiny tolerance keeps 3.0000000001 at 3).
pub fn whole(x: f64) -> u64 {
    (x - 1e-9).ceil().max(0.0) as u64
}

/// `n` rounded up to a multiple of `m`.
pub fn round_up_to(n: u64, m: u64) -> u64 {
    if m == 0 { n } else { n.div_ceil(m) * m }
}

pub fn load(i: &Inputs) -> Load {
    let deliveries_per_day = i.emails_per_day * i.recipients_per_message;
    let avg_messages_per_sec = i.emails_per_day / DAY;
    let avg_deliveries_per_sec = deliveries_per_day / DAY;
    let campaign_deliveries_per_sec = i.campaign_recipients / (i.campaign_hours * 3600.0);
    // A campaign is submitted one message per recipient (the API's template form),
    // at the pace it is delivered.
    let peak_submissions_per_sec =
        avg_messages_per_sec * i.peak_factor + campaign_deliveries_per_sec;
    let peak_deliveries_per_sec =
        avg_deliveries_per_sec * i.peak_factor + campaign_deliveries_per_sec;
    Load {
        deliveries_per_day,
        avg_messages_per_sec,
        avg_deliveries_per_sec,
        campaign_deliveries_per_sec,
        peak_submissions_per_sec,
        peak_deliveries_per_sec,
        peak_events_per_sec: peak_deliveries_per_sec * i.events_per_recipient,
        events_per_day: deliveries_per_day * i.events_per_recipient,
    }
}

pub fn plan(i: &Inputs, r: &Rates) -> Sizing {
    let load = load(i);
    let u = i.utilisation;

    let cpu_nodes = load.peak_submissions_per_sec
        / (r.ingress_messages_per_cpu_sec * f64::from(i.ingress_cores) * u);
    let ingress = Ingress {
        nodes: whole(cpu_nodes).max(MIN_NODES),
        cores_per_node: i.ingress_cores,
        cpu_nodes,
    };

    let cpu_workers = load.peak_deliveries_per_sec
        / (r.relay_deliveries_per_cpu_sec * f64::from(i.relay_cores) * u);
    let peak_connections = load.peak_deliveries_per_sec * i.connection_secs;
    let connection_workers = peak_connections / (i.connections_per_worker * u);
    let workers = whole(cpu_workers)
        .max(whole(connection_workers))
        .max(MIN_NODES);
    let bound = if workers == MIN_NODES && whole(cpu_workers.max(connection_workers)) < MIN_NODES {
        "minimum"
    } else if cpu_workers >= connection_workers {
        "cpu"
    } else {
        "connections"
    };
    let relay = Relay {
        workers,
        cores_per_worker: i.relay_cores,
        cpu_workers,
        connection_workers,
        peak_connections,
        bound,
    };

    let history = History {
        writers: whole(load.peak_events_per_sec / (r.history_events_per_sec * u)).max(1),
        cores_per_writer: i.relay_cores,
    };

    let kafka = kafka(i, &load, relay.workers);
    let mysql = mysql(i, r, &load);
    let redis = redis(i);
    let influxdb = influx(i, ingress.nodes + relay.workers + history.writers);
    Sizing {
        egress_bytes_per_month: load.deliveries_per_day * i.message_bytes * MONTH_DAYS,
        load,
        ingress,
        relay,
        history,
        kafka,
        mysql,
        redis,
        influxdb,
    }
}

fn kafka(i: &Inputs, load: &Load, relay_workers: u64) -> Kafka {
    let u = i.utilisation;
    let replication = f64::from(i.kafka_replication);
    let send_peak = load.peak_submissions_per_sec * i.message_bytes;
    let events_peak = load.peak_events_per_sec * EVENT_TOPIC_BYTES;
    let peak_write_bytes_per_sec = (send_peak + events_peak) * replication;
    let per_day =
        load.avg_messages_per_sec * DAY * i.message_bytes + load.events_per_day * EVENT_TOPIC_BYTES;
    let stored_bytes = per_day * i.kafka_retention_days * replication;
    let brokers_by_throughput = whole(peak_write_bytes_per_sec / (i.kafka_broker_write_bytes * u));
    let brokers_by_storage = whole(stored_bytes / (i.kafka_broker_disk_bytes * u));
    let brokers = brokers_by_throughput
        .max(brokers_by_storage)
        .max(MIN_BROKERS)
        .max(u64::from(i.kafka_replication));
    let partitions_by_throughput = whole(send_peak / i.kafka_partition_write_bytes);
    // Every relay worker needs a partition of its own.
    let partitions = round_up_to(partitions_by_throughput.max(relay_workers), brokers);
    Kafka {
        brokers,
        partitions,
        replication: i.kafka_replication,
        peak_write_bytes_per_sec,
        stored_bytes,
        brokers_by_throughput,
        brokers_by_storage,
        partitions_by_throughput,
        disk_bytes: brokers as f64 * i.kafka_broker_disk_bytes,
    }
}

fn mysql(i: &Inputs, r: &Rates, load: &Load) -> Mysql {
    let bytes_per_day = load.events_per_day * r.mysql_bytes_per_event
        + load.deliveries_per_day * r.mysql_bytes_per_recipient;
    let hot_days = i.history_days.min(i.retention_days);
    let hot_bytes = bytes_per_day * hot_days;
    let archived_days = (i.retention_days - hot_days).max(0.0);
    Mysql {
        servers: MYSQL_SERVERS,
        bytes_per_day,
        bytes_per_month: bytes_per_day * MONTH_DAYS,
        hot_bytes,
        provisioned_bytes: hot_bytes / i.utilisation,
        archived_bytes: bytes_per_day * archived_days * ARCHIVE_RATIO,
        monthly_partitions: whole(hot_days / MONTH_DAYS) + 1 + u64::from(i.partitions_ahead),
    }
}

fn redis(i: &Inputs) -> Redis {
    let suppression_bytes = i.suppression_entries * REDIS_SUPPRESSION_BYTES;
    let preference_bytes = i.preference_users * REDIS_PREFERENCE_BYTES;
    let used_bytes = suppression_bytes + preference_bytes + REDIS_FIXED_BYTES;
    Redis {
        suppression_bytes,
        preference_bytes,
        fixed_bytes: REDIS_FIXED_BYTES,
        used_bytes,
        provisioned_bytes: used_bytes * REDIS_COPIES / i.utilisation,
    }
}

fn influx(i: &Inputs, hosts: u64) -> Influx {
    // postroad_delivery: per host, each email type (and "none") to each destination
    // group without a campaign, and each campaign of the month (one email type each)
    // to each group.
    let per_host =
        (i.email_types + 1.0) * DESTINATION_GROUPS + i.campaigns_per_month * DESTINATION_GROUPS;
    let delivery_series = hosts as f64 * per_host;
    // postroad_latency and postroad_queue: one series each per host.
    let other_series = hosts as f64 * 2.0;
    let series = delivery_series + other_series;
    Influx {
        hosts,
        delivery_series,
        other_series,
        series,
        nodes: whole(series / INFLUX_SERIES_PER_NODE).max(1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn inputs() -> Inputs {
        Inputs {
            emails_per_day: 8_640_000.0, // 100/s on average
            recipients_per_message: 1.0,
            message_bytes: 20_000.0,
            campaign_recipients: 360_000.0, // 100/s over an hour
            campaign_hours: 1.0,
            peak_factor: 3.0,
            history_days: 90.0,
            retention_days: 365.0,
            events_per_recipient: 3.0,
            utilisation: 0.5,
            ingress_cores: 2,
            relay_cores: 2,
            connection_secs: 0.5,
            connections_per_worker: 10.0,
            kafka_replication: 3,
            kafka_retention_days: 7.0,
            kafka_partition_write_bytes: 1e6,
            kafka_broker_write_bytes: 10e6,
            kafka_broker_disk_bytes: 1e12,
            suppression_entries: 1e6,
            preference_users: 0.0,
            email_types: 9.0,
            campaigns_per_month: 10.0,
            partitions_ahead: 3,
        }
    }

    pub fn rates() -> Rates {
        Rates {
            ingress_messages_per_cpu_sec: 100.0,
            relay_deliveries_per_cpu_sec: 50.0,
            history_events_per_sec: 1000.0,
            mysql_bytes_per_event: 400.0,
            mysql_bytes_per_recipient: 300.0,
        }
    }

    #[test]
    fn load_is_the_transactional_peak_plus_the_campaign() {
        let l = load(&inputs());
        assert_eq!(l.avg_messages_per_sec, 100.0);
        assert_eq!(l.campaign_deliveries_per_sec, 100.0);
        assert_eq!(l.peak_submissions_per_sec, 400.0);
        assert_eq!(l.peak_deliveries_per_sec, 400.0);
        assert_eq!(l.peak_events_per_sec, 1200.0);
        let mut i = inputs();
        i.recipients_per_message = 2.0;
        let l = load(&i);
        assert_eq!(
            (l.peak_submissions_per_sec, l.peak_deliveries_per_sec),
            (400.0, 700.0)
        );
    }

    #[test]
    fn ingress_and_relay_follow_the_rates_and_connections() {
        let p = plan(&inputs(), &rates());
        // 400/s ÷ (100 × 2 cores × 0.5) = 4 nodes
        assert_eq!((p.ingress.cpu_nodes, p.ingress.nodes), (4.0, 4));
        // CPU: 400 ÷ (50 × 2 × 0.5) = 8; connections: 400 × 0.5 s ÷ (10 × 0.5) = 40
        assert_eq!(p.relay.cpu_workers, 8.0);
        assert_eq!(p.relay.connection_workers, 40.0);
        assert_eq!((p.relay.workers, p.relay.bound), (40, "connections"));
        let mut i = inputs();
        i.connections_per_worker = 1000.0;
        let p = plan(&i, &rates());
        assert_eq!((p.relay.workers, p.relay.bound), (8, "cpu"));
        // 1,200 events/s ÷ (1,000 × 0.5) = 2.4 → 3 writers
        assert_eq!(p.history.writers, 3);
    }

    #[test]
    fn minimums_hold_for_a_trickle() {
        let mut i = inputs();
        i.emails_per_day = 1000.0;
        i.campaign_recipients = 0.0;
        i.suppression_entries = 0.0;
        let p = plan(&i, &rates());
        assert_eq!(p.ingress.nodes, MIN_NODES);
        assert_eq!((p.relay.workers, p.relay.bound), (MIN_NODES, "minimum"));
        assert_eq!(p.kafka.brokers, MIN_BROKERS);
        assert_eq!(p.history.writers, 1);
        assert_eq!(p.influxdb.nodes, 1);
        assert_eq!(p.kafka.partitions % p.kafka.brokers, 0);
    }

    #[test]
    fn kafka_sizes_by_throughput_storage_and_workers() {
        let p = plan(&inputs(), &rates());
        // send: 400/s × 20 kB = 8 MB/s; events: 1,200/s × 600 B = 0.72 MB/s; ×3
        assert!((p.kafka.peak_write_bytes_per_sec - 26.16e6).abs() < 1.0);
        // 26.16 MB/s ÷ (10 MB/s × 0.5) = 5.2 → 6 brokers
        assert_eq!(p.kafka.brokers_by_throughput, 6);
        // a day: 8.64M × 20 kB + 25.92M events × 600 B = 188.352 GB; × 7 days × 3
        assert!((p.kafka.stored_bytes - 188.352e9 * 21.0).abs() < 1e3);
        assert_eq!(p.kafka.brokers_by_storage, 8); // 3.955 TB ÷ 0.5 TB
        assert_eq!(p.kafka.brokers, 8);
        // 8 MB/s ÷ 1 MB/s = 8 partitions, but 40 workers need 40 (a multiple of 8)
        assert_eq!(p.kafka.partitions_by_throughput, 8);
        assert_eq!(p.kafka.partitions, 40);
        assert_eq!(round_up_to(41, 8), 48);
    }

    #[test]
    fn mysql_keeps_hot_days_and_archives_the_rest() {
        let p = plan(&inputs(), &rates());
        // 25.92M events/day × 400 B + 8.64M recipients × 300 B
        assert_eq!(p.mysql.bytes_per_day, 12.96e9);
        assert!((p.mysql.hot_bytes - 12.96e9 * 90.0).abs() < 1.0);
        assert!((p.mysql.provisioned_bytes - 12.96e9 * 180.0).abs() < 1.0);
        assert!((p.mysql.archived_bytes - 12.96e9 * 275.0 * ARCHIVE_RATIO).abs() < 1.0);
        // 90 days: 3 months (2.96 rounded up), the current one, 3 ahead
        assert_eq!(p.mysql.monthly_partitions, 7);
    }

    #[test]
    fn redis_and_influx_count_entries_and_series() {
        let p = plan(&inputs(), &rates());
        assert_eq!(p.redis.suppression_bytes, 110e6);
        assert_eq!(
            p.redis.provisioned_bytes,
            (110e6 + REDIS_FIXED_BYTES) * 2.0 / 0.5
        );
        // hosts: 4 ingress + 40 relay + 3 history; per host (9 + 1) × 5 + 10 × 5 + 2
        assert_eq!(p.influxdb.hosts, 47);
        assert_eq!(p.influxdb.series, 47.0 * 102.0);
    }

    #[test]
    fn whole_rounds_up() {
        assert_eq!(whole(3.0), 3);
        assert_eq!(whole(3.000_000_000_01), 3);
        assert_eq!(whole(3.01), 4);
        assert_eq!(whole(0.0), 0);
    }
}
