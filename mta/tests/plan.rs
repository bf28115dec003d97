//! `postroad plan`, the capacity planner, as a user runs it: the issue's example
//! command gives JSON that agrees with the table; more mail never needs less of
//! anything; a faster rates file needs fewer relay workers; the minimums and the
//! partition rules hold; the cost is the sum of its lines priced from the prices file;
//! bad input is refused with a clear message and a failing exit code. The committed
//! rates and prices files load.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const EXAMPLE: &[&str] = &[
    "--emails-per-day",
    "10M",
    "--campaign-recipients",
    "1M",
    "--peak-factor",
    "3",
    "--history-days",
    "90",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Exit success, stdout, stderr.
fn plan(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postroad"))
        .arg("plan")
        .args(args)
        .output()
        .expect("run postroad plan");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = plan(&all);
    assert!(ok, "postroad plan {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn n(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {at}"))
}

/// The number in the table row that starts with `label` (its second column).
fn table_number(table: &str, label: &str) -> f64 {
    let line = table
        .lines()
        .find(|l| l.starts_with(label) && l[label.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"));
    let cell = line[label.len()..].split_whitespace().next().unwrap();
    cell.replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("{cell:?} in {line:?}: {e}"))
}

#[test]
fn the_example_prints_a_table_and_json_that_agree() {
    let (ok, table, err) = plan(EXAMPLE);
    assert!(ok, "{err}");
    let v = json(EXAMPLE);
    for (label, path) in [
        ("ingress nodes", "ingress.nodes"),
        ("relay workers", "relay.workers"),
        ("history writers", "history.writers"),
        ("kafka brokers", "kafka.brokers"),
        ("kafka partitions", "kafka.partitions"),
        ("mysql servers", "mysql.servers"),
        ("mysql partitions", "mysql.monthly_partitions"),
        ("influxdb series", "influxdb.series"),
        ("influxdb nodes", "influxdb.nodes"),
        ("peak deliveries", "load.peak_deliveries_per_sec"),
    ] {
        assert_eq!(
            table_number(&table, label),
            n(&v, path).round(),
            "{label}\n{table}"
        );
    }
    let gib = 1024f64.powi(3);
    assert!(
        (table_number(&table, "redis memory") - n(&v, "redis.provisioned_bytes") / gib).abs()
            < 0.01
    );
    assert!((table_number(&table, "total") - n(&v, "cost.total_monthly")).abs() < 0.01);
    // The issue's inputs are what the plan used.
    assert_eq!(n(&v, "inputs.emails_per_day"), 10e6);
    assert_eq!(n(&v, "inputs.campaign_recipients"), 1e6);
    assert_eq!(n(&v, "inputs.peak_factor"), 3.0);
    assert_eq!(n(&v, "inputs.history_days"), 90.0);
    // 10M a day × 3 / 86,400 s + 1M in an hour
    let peak = 10e6 * 3.0 / 86_400.0 + 1e6 / 3600.0;
    assert!((n(&v, "load.peak_deliveries_per_sec") - peak).abs() < 1e-6);
    assert!(n(&v, "mysql.bytes_per_month") > 0.0 && n(&v, "influxdb.series") > 0.0);
}

#[test]
fn more_mail_needs_at_least_as_much_of_everything() {
    let counts = [
        "ingress.nodes",
        "relay.workers",
        "history.writers",
        "kafka.brokers",
        "kafka.partitions",
        "mysql.bytes_per_month",
        "mysql.hot_bytes",
        "mysql.archived_bytes",
        "redis.provisioned_bytes",
        "influxdb.series",
        "cost.total_monthly",
    ];
    let mut previous: Option<Value> = None;
    for volume in ["100k", "1M", "10M", "50M", "200M"] {
        let v = json(&[
            "--emails-per-day",
            volume,
            "--campaign-recipients",
            "1M",
            "--suppression-entries",
            volume,
        ]);
        if let Some(p) = &previous {
            for c in counts {
                assert!(n(&v, c) >= n(p, c), "{c} fell at {volume}");
            }
        }
        previous = Some(v);
    }
    let small = json(&["--emails-per-day", "1M"]);
    let big = json(&["--emails-per-day", "200M"]);
    assert!(n(&big, "relay.workers") > n(&small, "relay.workers"));
    assert!(n(&big, "kafka.brokers") > n(&small, "kafka.brokers"));
}

/// The built-in rates with the relay's CPU cost divided by `speedup`.
fn rates_file(dir: &Path, name: &str, pipeline_speedup: f64) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("deploy/plan/rates.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let ingress = v["ingress"]["messages_per_cpu_sec"].as_f64().unwrap();
    let pipeline = v["pipeline"]["messages_per_cpu_sec"].as_f64().unwrap();
    let relay_cpu = 1.0 / pipeline - 1.0 / ingress;
    let faster = 1.0 / (1.0 / ingress + relay_cpu / pipeline_speedup);
    v["pipeline"]["messages_per_cpu_sec"] = faster.into();
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn a_faster_relay_needs_fewer_workers() {
    let dir = tempfile::tempdir().unwrap();
    let same = rates_file(dir.path(), "same.json", 1.0);
    let fast = rates_file(dir.path(), "fast.json", 4.0);
    // Many connections per worker: the CPU decides.
    let args = |rates: &Path| {
        json(&[
            "--emails-per-day",
            "5G",
            "--relay-cores",
            "1",
            "--connections-per-worker",
            "100000",
            "--rates",
            rates.to_str().unwrap(),
        ])
    };
    let (slow, fast) = (args(&same), args(&fast));
    assert_eq!(slow["relay"]["bound"], "cpu");
    assert!(
        n(&fast, "relay.workers") < n(&slow, "relay.workers"),
        "{} vs {}",
        n(&fast, "relay.workers"),
        n(&slow, "relay.workers")
    );
    assert!(
        n(&fast, "rates.relay_deliveries_per_cpu_sec")
            > n(&slow, "rates.relay_deliveries_per_cpu_sec")
    );
}

#[test]
fn minimums_and_partition_rules_hold() {
    for args in [
        &["--emails-per-day", "1k", "--campaign-recipients", "0"][..],
        EXAMPLE,
        &["--emails-per-day", "300M", "--kafka-replication", "5"][..],
    ] {
        let v = json(args);
        assert!(n(&v, "ingress.nodes") >= 2.0, "{args:?}");
        assert!(n(&v, "relay.workers") >= 2.0, "{args:?}");
        let brokers = n(&v, "kafka.brokers");
        assert!(
            brokers >= 3.0 && brokers >= n(&v, "kafka.replication"),
            "{args:?}"
        );
        let partitions = n(&v, "kafka.partitions");
        assert!(partitions >= n(&v, "relay.workers"), "{args:?}");
        assert_eq!(partitions % brokers, 0.0, "{args:?}");
        assert!(n(&v, "influxdb.nodes") >= 1.0);
    }
}

#[test]
fn the_cost_is_its_lines_priced_from_the_prices_file() {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        r#"currency = "EUR"
date = "2030-01-01"
source = "test prices"
vcpu_month = 10.0
kafka_broker_month = 100.0
kafka_storage_gib_month = 0.5
mysql_server_month = 200.0
mysql_storage_gib_month = 0.25
object_storage_gib_month = 0.01
redis_gib_month = 3.0
influxdb_node_month = 50.0
egress_gib = 0.02
"#,
    )
    .unwrap();
    let mut args = EXAMPLE.to_vec();
    args.extend(["--prices", prices.to_str().unwrap()]);
    let v = json(&args);
    let cost = &v["cost"];
    assert_eq!(cost["currency"], "EUR");
    assert_eq!(cost["prices_date"], "2030-01-01");
    let gib = 1024f64.powi(3);
    let expected = [
        (
            "ingress nodes",
            n(&v, "ingress.nodes") * n(&v, "ingress.cores_per_node"),
            10.0,
        ),
        (
            "relay workers",
            n(&v, "relay.workers") * n(&v, "relay.cores_per_worker"),
            10.0,
        ),
        (
            "history writers",
            n(&v, "history.writers") * n(&v, "history.cores_per_writer"),
            10.0,
        ),
        ("kafka brokers", n(&v, "kafka.brokers"), 100.0),
        ("kafka storage", n(&v, "kafka.disk_bytes") / gib, 0.5),
        ("mysql servers", n(&v, "mysql.servers"), 200.0),
        (
            "mysql storage",
            n(&v, "mysql.provisioned_bytes") * n(&v, "mysql.servers") / gib,
            0.25,
        ),
        ("history archive", n(&v, "mysql.archived_bytes") / gib, 0.01),
        ("redis memory", n(&v, "redis.provisioned_bytes") / gib, 3.0),
        ("influxdb nodes", n(&v, "influxdb.nodes"), 50.0),
        ("egress", n(&v, "egress_bytes_per_month") / gib, 0.02),
    ];
    let lines = cost["lines"].as_array().unwrap();
    assert_eq!(lines.len(), expected.len());
    let mut sum = 0.0;
    for (line, (item, quantity, price)) in lines.iter().zip(expected) {
        assert_eq!(line["item"], item);
        assert!((n(line, "quantity") - quantity).abs() < 1e-6, "{item}");
        assert_eq!(n(line, "unit_price"), price, "{item}");
        assert!(
            (n(line, "monthly") - quantity * price).abs() <= 0.005 + 1e-9,
            "{item}"
        );
        sum += n(line, "monthly");
    }
    assert!((n(cost, "total_monthly") - sum).abs() < 0.005);
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.json");
    let text = std::fs::read_to_string(repo().join("deploy/plan/rates.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["ingress"]["messages_per_cpu_sec"] = 0.into();
    std::fs::write(&zero, v.to_string()).unwrap();
    let missing = dir.path().join("missing.json");
    for (args, says) in [
        (vec!["--emails-per-day", "10X"], "--emails-per-day"),
        (vec!["--message-size", "big"], "--message-size"),
        (vec!["--peak-factor=-3"], "--peak-factor"),
        (vec!["--utilisation", "1.5"], "--utilisation"),
        (vec!["--emails-per-day", "0"], "must be above 0"),
        (
            vec!["--rates", missing.to_str().unwrap()],
            "cannot read the rates file",
        ),
        (
            vec!["--rates", zero.to_str().unwrap()],
            "ingress.messages_per_cpu_sec must be a number above 0",
        ),
        (
            vec!["--prices", missing.to_str().unwrap()],
            "cannot read the prices file",
        ),
    ] {
        let (ok, out, err) = plan(&args);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn the_committed_rates_and_prices_load() {
    let rates = repo().join("deploy/plan/rates.json");
    let prices = repo().join("deploy/plan/prices.example.toml");
    let v = json(&[
        "--rates",
        rates.to_str().unwrap(),
        "--prices",
        prices.to_str().unwrap(),
    ]);
    assert!(n(&v, "rates.relay_deliveries_per_cpu_sec") > 0.0);
    // The committed file is measured, and says where and how.
    for section in ["ingress", "pipeline", "history"] {
        let m = &v["rates"]["measured"][section];
        assert!(m["date"].is_string(), "{section}: {m}");
        assert!(m["machine"]["cores"].as_u64().is_some(), "{section}: {m}");
        assert!(
            m["command"]
                .as_str()
                .is_some_and(|c| c.contains("loadtest")),
            "{section}: {m}"
        );
    }
    // The built-in copies are the same files.
    let built_in = json(&[]);
    assert_eq!(built_in["relay"], v["relay"]);
    assert_eq!(
        built_in["cost"]["total_monthly"],
        v["cost"]["total_monthly"]
    );
}
