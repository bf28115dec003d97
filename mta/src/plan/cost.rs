//! The monthly cost: each component's count × its unit price. Pure arithmetic.

use serde::Serialize;

use super::model::Sizing;
use super::prices::Loaded;

pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One priced line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub item: &'static str,
    pub quantity: f64,
    pub unit: &'static str,
    pub unit_price: f64,
    /// quantity × unit_price, in cents rounded.
    pub monthly: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub currency: String,
    /// The prices file.
    pub prices_file: String,
    pub prices_date: String,
    pub prices_source: String,
    pub lines: Vec<Line>,
    /// The sum of the lines.
    pub total_monthly: f64,
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn cost(s: &Sizing, prices: &Loaded) -> Cost {
    let p = &prices.prices;
    let vcpus = |count: u64, cores: u32| (count * u64::from(cores)) as f64;
    let line = |item, quantity: f64, unit, unit_price: f64| Line {
        item,
        quantity,
        unit,
        unit_price,
        monthly: cents(quantity * unit_price),
    };
    let lines = vec![
        line(
            "ingress nodes",
            vcpus(s.ingress.nodes, s.ingress.cores_per_node),
            "vCPU",
            p.vcpu_month,
        ),
        line(
            "relay workers",
            vcpus(s.relay.workers, s.relay.cores_per_worker),
            "vCPU",
            p.vcpu_month,
        ),
        line(
            "history writers",
            vcpus(s.history.writers, s.history.cores_per_writer),
            "vCPU",
            p.vcpu_month,
        ),
        line(
            "kafka brokers",
            s.kafka.brokers as f64,
            "broker",
            p.kafka_broker_month,
        ),
        line(
            "kafka storage",
            s.kafka.disk_bytes / GIB,
            "GiB",
            p.kafka_storage_gib_month,
        ),
        line(
            "mysql servers",
            s.mysql.servers as f64,
            "server",
            p.mysql_server_month,
        ),
        line(
            "mysql storage",
            s.mysql.provisioned_bytes * s.mysql.servers as f64 / GIB,
            "GiB",
            p.mysql_storage_gib_month,
        ),
        line(
            "history archive",
            s.mysql.archived_bytes / GIB,
            "GiB",
            p.object_storage_gib_month,
        ),
        line(
            "redis memory",
            s.redis.provisioned_bytes / GIB,
            "GiB",
            p.redis_gib_month,
        ),
        line(
            "influxdb nodes",
            s.influxdb.nodes as f64,
            "node",
            p.influxdb_node_month,
        ),
        line(
            "egress",
            s.egress_bytes_per_month / GIB,
            "GiB",
            p.egress_gib,
        ),
    ];
    let total_monthly = cents(lines.iter().map(|l| l.monthly).sum());
    Cost {
        currency: p.currency.clone(),
        prices_file: prices.source.clone(),
        prices_date: p.date.clone(),
        prices_source: p.source.clone(),
        lines,
        total_monthly,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{plan, tests};
    use super::*;

    #[test]
    fn the_total_is_the_sum_of_count_times_price() {
        let s = plan(&tests::inputs(), &tests::rates());
        let loaded = super::super::prices::load(None).unwrap();
        let p = &loaded.prices;
        let c = cost(&s, &loaded);
        let relay = c.lines.iter().find(|l| l.item == "relay workers").unwrap();
        assert_eq!(relay.quantity, (s.relay.workers * 2) as f64);
        assert_eq!(relay.monthly, cents(relay.quantity * p.vcpu_month));
        let sum: f64 = c.lines.iter().map(|l| l.monthly).sum();
        assert!((c.total_monthly - sum).abs() < 0.005);
        assert!(c.lines.iter().all(|l| l.monthly >= 0.0));
    }
}
