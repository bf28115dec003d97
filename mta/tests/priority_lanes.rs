//! Transactional mail overtakes a campaign: with a 3,000-recipient campaign queued for
//! one slow site, `high` messages sent to the same site afterwards are delivered long
//! before the campaign's backlog is through (the queue hands out `high` first and the
//! site's connections take it before any waiting bulk job), and the time each took
//! from submission to the receiver is printed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::campaigns;
use common::http::{api_key, curl, post_json};
use common::overtaking::{self, now_us};
use common::relay_env::RelayEnv;
use common::wait_until;
use postroad_loadtest::sink::Faults;
use serde_json::json;

const BULK: usize = 3000;
const URGENT: usize = 10;

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
            "text": "123456", "priority": "high"});
        submitted.insert(to.clone(), now_us());
        let (status, answer) = post_json(env.server.http, key, "/v1/messages", &message);
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
    let times = overtaking::urgent_overtook(&messages, &submitted, BULK, || {
        format!("the campaign's last message arrived at {last_bulk}")
    });
    println!("{URGENT} high messages during a {BULK}-message campaign: {times}");
}
