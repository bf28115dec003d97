//! `GET /v1/alerts` of a running `postroad serve`: half the mail bouncing fires the
//! delivery-rate and bounce-rate alerts (logged, on `/metrics`), good mail clears
//! them once the bad minutes leave the window; tenants' keys are refused.

mod common;

use std::time::{Duration, Instant};

use common::http::{api_key, curl, send_batch};
use common::relay_env::RelayEnv;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// `n` messages of one batch, each to the addresses `to(i)` gives.
fn send(env: &RelayEnv, key: &str, n: usize, to: impl Fn(usize) -> Vec<String>) {
    let messages: Vec<_> = (0..n)
        .map(|i| json!({"from": "app@src.test", "to": to(i), "subject": "Hi", "text": "Hi."}))
        .collect();
    send_batch(env.server.http, key, &messages);
}

fn alerts(env: &RelayEnv, key: &str) -> Value {
    let (status, report) = curl(env.server.http, key, &[], "/v1/alerts");
    assert_eq!(status, 200, "{report}");
    report
}

fn wait_for(env: &RelayEnv, key: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let report = alerts(env, key);
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {WAIT:?}: {report:#}\nserver log:\n{}",
            env.server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn firing(report: &Value) -> Vec<&str> {
    report["firing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn bounces_fire_the_rate_alerts_and_good_mail_clears_them() {
    let env = RelayEnv::start("", "[alerts]\nwindow_secs = 20\nmin_events = 10\n");
    let key = api_key(&env.server, &["create", "--name", "ops"]);
    let key = key.trim();
    let tenant = api_key(&env.server, &["create", "--name", "t", "--tenant", "acme"]);
    let (status, problem) = curl(env.server.http, tenant.trim(), &[], "/v1/alerts");
    assert_eq!(
        (status, problem["status"].as_u64()),
        (403, Some(403)),
        "{problem}"
    );

    let report = alerts(&env, key);
    assert_eq!(report["windowSeconds"], 20);
    let names: Vec<&str> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "DeliveryRateLow",
            "QueueDepthHigh",
            "BounceRateHigh",
            "SendLatencyHigh",
            "ComplaintRateHigh"
        ]
    );

    // Half of every message's recipients have a null MX: bounced at once.
    send(&env, key, 20, |i| {
        vec![format!("a{i}@fast.test"), format!("b{i}@nullmx.test")]
    });
    let report = wait_for(&env, key, "the rate alerts to fire", |r| {
        firing(r).contains(&"DeliveryRateLow") && firing(r).contains(&"BounceRateHigh")
    });
    let bounce = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "BounceRateHigh")
        .unwrap();
    assert_eq!(bounce["state"], "firing");
    assert_eq!(bounce["severity"], "critical");
    assert_eq!(bounce["threshold"], 0.1);
    assert!(bounce["value"].as_f64().unwrap() > 0.1, "{bounce}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(bounce["since"].as_str().unwrap()).is_ok(),
        "{bounce}"
    );
    assert!(
        env.server.log().contains("alert firing"),
        "{}",
        env.server.log()
    );
    let metrics = env.metrics();
    assert!(
        metrics.contains("postroad_alert_firing{alert=\"BounceRateHigh\",severity=\"critical\"} 1"),
        "{metrics}"
    );

    // Only good mail from now on: once the bounces are out of the window, the
    // alerts clear (and the delivery rate is judged on the good mail alone).
    let deadline = Instant::now() + WAIT;
    let report = loop {
        send(&env, key, 15, |i| vec![format!("good{i}@fast.test")]);
        let report = alerts(&env, key);
        let delivery = &report["alerts"][0];
        if firing(&report).is_empty() && delivery["state"] == "ok" {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the alerts to clear within {WAIT:?}: {report:#}\nserver log:\n{}",
            env.server.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(report["alerts"][0]["value"], 1.0, "{report:#}");
    assert!(
        env.server.log().contains("alert resolved"),
        "{}",
        env.server.log()
    );
    let metrics = env.metrics();
    assert!(
        metrics.contains("postroad_alert_firing{alert=\"BounceRateHigh\",severity=\"critical\"} 0"),
        "{metrics}"
    );
}
