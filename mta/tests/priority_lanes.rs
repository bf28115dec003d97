//! Transactional mail overtakes a campaign: with a 3,000-recipient campaign queued for
//! one slow site, `high` messages sent to the same site afterwards are delivered long
//! before the campaign's backlog is through (the queue hands out `high` first and the
//! site's connections take it before any waiting bulk job), and the time each took
//! from submission to the receiver is printed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::campaigns;
use common::http::{api_key, curl};
use common::relay_env::RelayEnv;
use common::wait_until;
use postroad_loadtest::sink::Faults;
use serde_json::json;

const BULK: usize = 3000;
const URGENT: usize = 10;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn high_priority_mail_is_not_held_up_by_a_campaigns_backlog() {
    let env = RelayEnv::start("", "");
    // Every reply of fast.test's receiver takes 20 ms: the campaign takes seconds.
    let slow = Faults {
        delay: Duration::from_millis(20),
        ..Faults::default()
    };
    let sites = HashMap::from([("fast.test".to_string(), slow)]);
    env.sink.set_faults(Faults::default(), sites).unwrap();
    let key = api_key(&env.server, &["create", "--name", "shop"]);
    let key = key.trim();
    let template = json!({"subject": "News", "text": "Hello.", "from": "news@src.test"});
    campaigns::put_template(env.server.http, key, "news", &template);

    let mut body = format!("{}\n", json!({"name": "Backlog", "emailType": "news"}));
    for i in 0..BULK {
        body.push_str(&format!("{{\"address\":\"reader{i}@fast.test\"}}\n"));
    }
    let path = env.server.data_dir().join("backlog.ndjson");
    std::fs::write(&path, body).unwrap();
    let file = format!("@{}", path.display());
    let created = campaigns::create_inline(env.server.http, key, &file);
    let id = created["id"].as_str().unwrap().to_string();
    wait_until(
        "the whole campaign queued",
        Duration::from_secs(60),
        || curl(env.server.http, key, &[], &format!("/v1/campaigns/{id}")).1["state"] == "sent",
        || env.server.log(),
    );

    // Password resets, while the backlog is being worked off.
    let mut submitted = HashMap::new();
    for i in 0..URGENT {
        let to = format!("urgent{i}@fast.test");
        let message = json!({"from": "shop@src.test", "to": to, "subject": "Your code",
            "text": "123456", "priority": "high"})
        .to_string();
        let send = [
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &message,
        ];
        submitted.insert(to.clone(), now_us());
        let (status, answer) = curl(env.server.http, key, &send, "/v1/messages");
        assert_eq!(status, 202, "{answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(
        "every message delivered",
        Duration::from_secs(120),
        || env.sink.messages().len() >= BULK + URGENT,
        || env.server.log(),
    );

    let messages = env.sink.messages();
    let last_bulk = messages
        .iter()
        .filter(|m| m.recipients[0].starts_with("reader"))
        .map(|m| m.received_at_us)
        .max()
        .unwrap();
    let mut delays_ms: Vec<f64> = Vec::new();
    for m in messages
        .iter()
        .filter(|m| m.recipients[0].starts_with("urgent"))
    {
        let sent = submitted[&m.recipients[0]];
        delays_ms.push(m.received_at_us.saturating_sub(sent) as f64 / 1000.0);
        // Behind the backlog it would arrive with the campaign's last messages.
        let bulk_after = messages
            .iter()
            .filter(|b| {
                b.recipients[0].starts_with("reader") && b.received_at_us > m.received_at_us
            })
            .count();
        assert!(
            bulk_after > BULK / 10,
            "{} arrived with only {bulk_after} campaign messages after it (the last at {last_bulk})",
            m.recipients[0]
        );
    }
    assert_eq!(delays_ms.len(), URGENT);
    delays_ms.sort_by(f64::total_cmp);
    let p95 = delays_ms[(delays_ms.len() * 95).div_ceil(100) - 1];
    println!(
        "{URGENT} high messages during a {BULK}-message campaign: submit to receiver p50 {:.0} ms, p95 {p95:.0} ms, max {:.0} ms",
        delays_ms[delays_ms.len() / 2],
        delays_ms[delays_ms.len() - 1]
    );
}
