//! The plan as a table (for people) and as JSON (for programs: stable field names,
//! numbers as numbers).

use serde::Serialize;

use super::cost::{Cost, GIB};
use super::model::{Inputs, MONTH_DAYS, Sizing};
use super::rates::{Loaded, Provenance};
use crate::text_table::{table, with_header};

/// Everything `postroad plan --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub inputs: Inputs,
    pub rates: Loaded,
    #[serde(flatten)]
    pub sizing: Sizing,
    pub cost: Cost,
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn text(&self) -> String {
        let (i, s, r) = (&self.inputs, &self.sizing, &self.rates);
        let l = &s.load;
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let mut out = format!(
            "postroad plan: {} messages/day, {} recipient(s) per message, {} each; campaign {} \
             recipients in {} h; peak ×{}\n",
            int(i.emails_per_day),
            num(i.recipients_per_message),
            bytes(i.message_bytes),
            int(i.campaign_recipients),
            num(i.campaign_hours),
            num(i.peak_factor)
        );
        out += &format!(
            "rates: {} (ingress {} messages/CPU-s, relay {} deliveries/CPU-s, history {} \
             events/s per writer, MySQL {} B per event and {} B per recipient){}\n\n",
            r.source,
            int(r.rates.ingress_messages_per_cpu_sec),
            int(r.rates.relay_deliveries_per_cpu_sec),
            int(r.rates.history_events_per_sec),
            int(r.rates.mysql_bytes_per_event),
            int(r.rates.mysql_bytes_per_recipient),
            measured_on(&r.measured.pipeline)
        );
        out += &table(&[
            vec!["load".into(), "per second".into(), "detail".into()],
            vec![
                "average deliveries".into(),
                int(l.avg_deliveries_per_sec),
                format!("{} a day", int(l.deliveries_per_day)),
            ],
            vec![
                "campaign deliveries".into(),
                int(l.campaign_deliveries_per_sec),
                format!(
                    "{} recipients in {} h",
                    int(i.campaign_recipients),
                    num(i.campaign_hours)
                ),
            ],
            vec![
                "peak submissions".into(),
                int(l.peak_submissions_per_sec),
                "average messages × peak factor + campaign".into(),
            ],
            vec![
                "peak deliveries".into(),
                int(l.peak_deliveries_per_sec),
                "average deliveries × peak factor + campaign".into(),
            ],
            vec![
                "peak events".into(),
                int(l.peak_events_per_sec),
                format!(
                    "{} per recipient; {} a day",
                    num(i.events_per_recipient),
                    int(l.events_per_day)
                ),
            ],
        ]);
        out.push('\n');
        let k = &s.kafka;
        let m = &s.mysql;
        let rows = vec![
            vec!["component".into(), "count".into(), "detail".into()],
            vec![
                "ingress nodes".into(),
                s.ingress.nodes.to_string(),
                format!(
                    "{} cores each; CPU needs {:.2} nodes at {} (at least 2)",
                    s.ingress.cores_per_node,
                    s.ingress.cpu_nodes,
                    pct(i.utilisation)
                ),
            ],
            vec![
                "relay workers".into(),
                s.relay.workers.to_string(),
                format!(
                    "{} cores each; CPU needs {:.2}, connections {:.2} ({} open, {} per \
                     worker): {} bound",
                    s.relay.cores_per_worker,
                    s.relay.cpu_workers,
                    s.relay.connection_workers,
                    int(s.relay.peak_connections),
                    num(i.connections_per_worker),
                    s.relay.bound
                ),
            ],
            vec![
                "history writers".into(),
                s.history.writers.to_string(),
                format!("{} cores each", s.history.cores_per_writer),
            ],
            vec![
                "kafka brokers".into(),
                k.brokers.to_string(),
                format!(
                    "by throughput {} ({}/s written at the peak), by storage {} ({} kept), at \
                     least 3",
                    k.brokers_by_throughput,
                    bytes(k.peak_write_bytes_per_sec),
                    k.brokers_by_storage,
                    bytes(k.stored_bytes)
                ),
            ],
            vec![
                "kafka partitions".into(),
                k.partitions.to_string(),
                format!(
                    "email-send: by throughput {}, at least one per relay worker, a multiple \
                     of the brokers",
                    k.partitions_by_throughput
                ),
            ],
            vec![
                "mysql servers".into(),
                m.servers.to_string(),
                format!(
                    "primary and replica, {} disk each ({} hot at {})",
                    bytes(m.provisioned_bytes),
                    bytes(m.hot_bytes),
                    pct(i.utilisation)
                ),
            ],
            vec![
                "mysql partitions".into(),
                m.monthly_partitions.to_string(),
                format!(
                    "monthly; {} a month, {} days hot",
                    bytes(m.bytes_per_month),
                    num(i.history_days)
                ),
            ],
            vec![
                "archived history".into(),
                gib(m.archived_bytes),
                format!(
                    "GiB of gzip NDJSON in object storage (up to {} days)",
                    num(i.retention_days)
                ),
            ],
            vec![
                "redis memory".into(),
                gib(s.redis.provisioned_bytes),
                format!(
                    "GiB for primary and replica ({} used: suppression {}, preferences {}, \
                     fixed {})",
                    bytes(s.redis.used_bytes),
                    bytes(s.redis.suppression_bytes),
                    bytes(s.redis.preference_bytes),
                    bytes(s.redis.fixed_bytes)
                ),
            ],
            vec![
                "influxdb series".into(),
                int(s.influxdb.series),
                format!(
                    "{} writing processes; postroad_delivery {}",
                    s.influxdb.hosts,
                    int(s.influxdb.delivery_series)
                ),
            ],
            vec![
                "influxdb nodes".into(),
                s.influxdb.nodes.to_string(),
                String::new(),
            ],
            vec![
                "egress".into(),
                gib(s.egress_bytes_per_month),
                format!("GiB a month ({:.1} days)", MONTH_DAYS),
            ],
        ];
        out += &table(&rows);
        out.push('\n');
        let c = &self.cost;
        out += &format!(
            "cost per month in {} (prices: {}, {}; {})\n",
            c.currency, c.prices_file, c.prices_date, c.prices_source
        );
        let mut lines: Vec<[String; 5]> = c
            .lines
            .iter()
            .map(|l| {
                [
                    l.item.to_string(),
                    num2(l.quantity),
                    l.unit.to_string(),
                    unit_price(l.unit_price),
                    money(l.monthly),
                ]
            })
            .collect();
        lines.push([
            "total".into(),
            String::new(),
            String::new(),
            String::new(),
            money(c.total_monthly),
        ]);
        out += &with_header(
            ["item", "quantity", "unit", "unit price", "per month"],
            &lines,
        );
        out
    }
}

/// ", measured DATE on CPU (N cores)" when the file says.
fn measured_on(p: &Provenance) -> String {
    let mut s = String::new();
    if let Some(date) = &p.date {
        s += &format!(", measured {date}");
    }
    if let Some(m) = &p.machine {
        let cpu = m.get("cpu_model").and_then(|v| v.as_str()).unwrap_or("?");
        let cores = m.get("cores").and_then(|v| v.as_u64()).unwrap_or(0);
        s += &format!(" on {cpu} ({cores} cores)");
    }
    s
}

/// A whole number with thousands separators (rounded up from .5).
pub fn int(x: f64) -> String {
    let n = x.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A number as short as it can be written (3, 0.3, 1.25).
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        int(x)
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Two decimals with thousands separators.
fn num2(x: f64) -> String {
    let whole = x.trunc();
    let cents = ((x - whole) * 100.0).round();
    let (whole, cents) = if cents >= 100.0 {
        (whole + 1.0, 0.0)
    } else {
        (whole, cents)
    };
    format!("{}.{:02}", int(whole), cents as u64)
}

fn money(x: f64) -> String {
    num2(x)
}

/// Two decimals, or up to four below 1 (0.115, 0.023).
fn unit_price(x: f64) -> String {
    if x < 1.0 && x > 0.0 {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0');
        if s.len() < 4 {
            format!("{x:.2}")
        } else {
            s.to_string()
        }
    } else {
        money(x)
    }
}

fn gib(x: f64) -> String {
    num2(x / GIB)
}

/// Bytes in binary units: 512 B, 20.0 KiB, 1.5 GiB, 3.2 TiB.
pub fn bytes(x: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = x;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(1_234_567.4), "1,234,567");
        assert_eq!(int(999.5), "1,000");
        assert_eq!(int(12.0), "12");
        assert_eq!(num(0.3), "0.3");
        assert_eq!(num(3.0), "3");
        assert_eq!(num2(1234.567), "1,234.57");
        assert_eq!(num2(0.999), "1.00");
        assert_eq!(unit_price(0.115), "0.115");
        assert_eq!(unit_price(0.1), "0.10");
        assert_eq!(unit_price(31.03), "31.03");
        assert_eq!(bytes(20480.0), "20.0 KiB");
        assert_eq!(bytes(100.0), "100 B");
        assert_eq!(bytes(1.5 * GIB), "1.5 GiB");
    }
}
