//! Analytics in InfluxDB: a `postroad serve` writing points to an `influxd` of the
//! test's own, read back with InfluxQL; the database killed mid-run and started
//! again (points wait and arrive); a graceful stop writing what its last interval
//! counted; and a buffer too small for an outage, whose drops are counted on
//! `/metrics`.

mod common;

use std::time::Duration;

use common::free_port;
use common::http::{api_key, send_batch};
use common::influxdb::PrivateInfluxdb;
use common::relay_env::RelayEnv;
use serde_json::{Value, json};

const WAVE: usize = 20;
const WAIT: Duration = Duration::from_secs(60);
const DB: &str = "analytics";

fn influx_config(url: &str, extra: &str) -> String {
    format!("[influx]\nurl = \"{url}\"\ndatabase = \"{DB}\"\ninterval_secs = 1\n{extra}\n")
}

/// `WAVE` messages of campaign `spring`, each to one address that takes mail and
/// one whose domain has a null MX (bounced at once); the ids.
fn send_wave(env: &RelayEnv, key: &str, wave: usize) -> Vec<String> {
    let messages: Vec<_> = (0..WAVE)
        .map(|i| {
            json!({"from": "app@src.test",
                "to": [format!("a{wave}-{i}@fast.test"), format!("b{wave}-{i}@nullmx.test")],
                "subject": "Hello", "text": "Hi.", "emailType": "welcome", "campaign": "spring"})
        })
        .collect();
    send_batch(env.server.http, key, &messages)
}

fn wait_until(what: &str, done: impl FnMut() -> bool, log: impl Fn() -> String) {
    common::wait_until(what, WAIT, done, log);
}

fn sum(influx: &PrivateInfluxdb, field: &str) -> u64 {
    let q = format!(
        "SELECT sum(\"{field}\") FROM postroad_delivery WHERE email_type = 'welcome' \
         AND campaign = 'spring' AND host = 'mx.postroad.test'"
    );
    influx.scalar(DB, &q).unwrap_or_default() as u64
}

#[test]
fn points_reach_influxdb_and_wait_out_its_outage() {
    let mut influx = PrivateInfluxdb::start();
    let env = RelayEnv::start("", &influx_config(&influx.url(), ""));
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();

    let first = send_wave(&env, key, 1);
    let totals = |n| {
        move |influx: &PrivateInfluxdb| {
            (
                sum(influx, "queued"),
                sum(influx, "delivered"),
                sum(influx, "bounced"),
            ) == (2 * n, n, n)
        }
    };
    let n = WAVE as u64;
    wait_until(
        "the first wave's counts in InfluxDB",
        || totals(n)(&influx),
        || env.server.log(),
    );
    assert_eq!(first.len(), WAVE);

    // The deliveries' latencies, and the queue's counts, have their own points.
    let latencies = influx
        .scalar(DB, "SELECT sum(\"count\") FROM postroad_latency")
        .unwrap();
    assert_eq!(latencies as u64, n);
    let p95 = influx
        .scalar(DB, "SELECT max(\"p95\") FROM postroad_latency")
        .unwrap();
    assert!(p95 > 0.0 && p95 < WAIT.as_secs_f64(), "{p95}");
    let queue = influx.query(
        DB,
        "SELECT last(\"queued\"), last(\"dead_letter\") FROM postroad_queue",
    );
    assert!(queue["series"][0]["values"][0][1].is_number(), "{queue}");
    // Every point's rates agree with its counts.
    let points = influx.query(
        DB,
        "SELECT delivered, deferred, bounced, expired, delivery_rate, bounce_rate \
         FROM postroad_delivery WHERE bounced > 0 OR delivered > 0",
    );
    let rows = points["series"][0]["values"].as_array().unwrap();
    assert!(!rows.is_empty(), "{points}");
    for row in rows {
        let n = |i: usize| row[i].as_f64().unwrap();
        let (delivered, deferred, bounced, expired) = (n(1), n(2), n(3), n(4));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            close(n(5), delivered / (delivered + deferred + bounced + expired)),
            "{row}"
        );
        assert!(
            close(n(6), bounced / (delivered + bounced + expired)),
            "{row}"
        );
    }

    // InfluxDB goes away: mail is delivered meanwhile, points wait in the buffer.
    influx.kill();
    let second = send_wave(&env, key, 2);
    for (i, id) in second.iter().enumerate() {
        env.wait_for_event(id, &format!("a2-{i}@fast.test"), "delivered", WAIT);
    }
    wait_until(
        "a failed write to be logged",
        || {
            env.server
                .log()
                .contains("influx: write failed; points kept")
        },
        || env.server.log(),
    );
    influx.restart();
    wait_until(
        "both waves' counts in InfluxDB",
        || totals(2 * n)(&influx),
        || env.server.log(),
    );
    wait_until(
        "writes to be logged as working again",
        || env.server.log().contains("influx: writes work again"),
        || env.server.log(),
    );
    let text = env.metrics();
    assert!(
        text.contains("postroad_influx_points_total{outcome=\"written\"}"),
        "{text}"
    );
    assert!(!text.contains("outcome=\"dropped\""), "{text}");
}

#[test]
fn a_graceful_stop_writes_the_last_intervals_points() {
    let influx = PrivateInfluxdb::start();
    // No interval ends during the test: only the stop writes points.
    let mut env = RelayEnv::start(
        "",
        &influx_config(&influx.url(), "").replace("interval_secs = 1", "interval_secs = 3600"),
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let ids = send_wave(&env, key.trim(), 1);
    for (i, id) in ids.iter().enumerate() {
        env.wait_for_event(id, &format!("b1-{i}@nullmx.test"), "bounced", WAIT);
        env.wait_for_event(id, &format!("a1-{i}@fast.test"), "delivered", WAIT);
    }
    env.server.stop();
    let n = WAVE as u64;
    assert_eq!(
        (
            sum(&influx, "queued"),
            sum(&influx, "delivered"),
            sum(&influx, "bounced")
        ),
        (2 * n, n, n),
        "{}",
        env.server.log()
    );
}

#[test]
fn a_buffer_too_small_for_an_outage_drops_the_oldest_points_and_counts_them() {
    // Nothing listens at this address: every write fails.
    let url = format!("http://127.0.0.1:{}", free_port());
    let env = RelayEnv::start(
        "",
        &influx_config(&url, "batch_size = 1\nmax_buffered_points = 2"),
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    send_wave(&env, key.trim(), 1);
    let dropped = |text: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with("postroad_influx_points_total{outcome=\"dropped\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    wait_until(
        "drops to be counted",
        || dropped(&env.metrics()).is_some_and(|n| n > 0),
        || env.server.log(),
    );
    assert!(
        env.server.log().contains("influx: buffer full"),
        "{}",
        env.server.log()
    );
    let text = env.metrics();
    let buffered: Value = text
        .lines()
        .find(|l| l.starts_with("postroad_influx_buffered_points "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(Value::from)
        .unwrap_or(Value::Null);
    assert!(buffered.as_f64().is_some_and(|b| b <= 2.0), "{text}");
}
