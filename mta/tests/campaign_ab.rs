//! A/B variants of campaigns on a running server, by curl, with real opens through the
//! tracking pixel: variants assigned by weight and compared with their significance;
//! an A/B test that sends a sample first and the winner to the rest.

mod common;

use std::collections::BTreeMap;

use common::campaigns::{self, WAIT, received, wait_for};
use common::http::{api_key, curl};
use common::relay_env::RelayEnv;
use common::wait_until;
use serde_json::{Value, json};

/// A server with tracking (every open a reader's), a marketing key, and the template
/// `ab` whose subject is `subject_line` and whose HTML part is `html`.
fn start(html: &str) -> (RelayEnv, String) {
    let env = RelayEnv::start(
        "",
        "[tracking]\nbase_url = \"https://t.src.test\"\nmachine_window_secs = 0\n",
    );
    let key = api_key(&env.server, &["create", "--name", "marketing"])
        .trim()
        .to_string();
    let template = json!({"subject": "{{ subject_line }}", "text": "Hi.",
        "html": html, "from": "News <news@src.test>"});
    campaigns::put_template(env.server.http, &key, "ab", &template);
    (env, key)
}

#[test]
fn ab_variants_are_assigned_by_weight_and_compared_on_real_opens() {
    let (env, key) = start("<html><body><p>Hi {{ first }}.</p></body></html>");
    let key = key.as_str();

    let header = json!({"name": "Subject test", "emailType": "ab", "tracking": {"opens": true},
        "templateData": {"first": "you"},
        "variants": [{"name": "plain", "templateData": {"subject_line": "Our news"}},
                     {"name": "bold", "weight": 1, "templateData": {"subject_line": "Big news!"}}]});
    let mut body = format!("{header}\n");
    for i in 0..200 {
        body.push_str(&format!("{{\"address\": \"ab{i}@fast.test\"}}\n"));
    }
    let created = campaigns::create_inline(env.server.http, key, &body);
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(&env, key, &id, "all of it delivered", |c| {
        c["state"] == "sent" && c["results"]["delivered"] == 200
    });

    // Readers open most of the bold subject's mail, few of the plain one's.
    let mut opened = BTreeMap::from([("plain", 0u64), ("bold", 0u64)]);
    let mut sent = BTreeMap::from([("plain", 0u64), ("bold", 0u64)]);
    for (i, m) in env.sink.messages().into_iter().enumerate() {
        let text = String::from_utf8_lossy(&m.data).replace("=\r\n", "");
        let variant = if text.contains("Subject: Big news!") {
            "bold"
        } else {
            "plain"
        };
        assert!(
            variant == "bold" || text.contains("Subject: Our news"),
            "{text}"
        );
        *sent.get_mut(variant).unwrap() += 1;
        let reads = if variant == "bold" {
            i % 5 < 3
        } else {
            i % 10 == 0
        };
        if !reads {
            continue;
        }
        campaigns::open_pixel(env.server.http, &text);
        *opened.get_mut(variant).unwrap() += 1;
    }
    // Both variants got a fair share of the 200 (weights 1:1).
    assert!(sent.values().all(|&n| (60..=140).contains(&n)), "{sent:?}");

    let path = format!("/v1/campaigns/{id}/variants");
    let mut report = Value::Null;
    wait_until(
        "every open in the history",
        WAIT,
        || {
            report = curl(env.server.http, key, &[], &path).1;
            let seen: u64 = report["variants"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .map(|v| v["results"]["opened"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            seen == opened.values().sum::<u64>()
        },
        || env.server.log(),
    );
    for v in report["variants"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        assert_eq!(v["results"]["delivered"], json!(sent[name]), "{report}");
        assert_eq!(v["results"]["opened"], json!(opened[name]), "{report}");
    }
    let leader = &report["leader"];
    assert_eq!(
        (&leader["name"], &leader["runnerUp"]),
        (&json!("bold"), &json!("plain")),
        "{report}"
    );
    assert_eq!(leader["significant"], json!(true), "{report}");
    assert!(
        leader["verdict"]
            .as_str()
            .unwrap()
            .starts_with("bold leads plain"),
        "{report}"
    );
    let (status, clicks) = curl(env.server.http, key, &[], &format!("{path}?metric=clicked"));
    assert_eq!(status, 200, "{clicks}");
    assert!(
        clicks.get("leader").is_none(),
        "no clicks, no leader: {clicks}"
    );
    let (status, _) = curl(env.server.http, key, &[], &format!("{path}?metric=bounces"));
    assert_eq!(status, 422);
}

#[test]
fn an_ab_test_sends_its_sample_both_variants_then_the_winner_to_the_rest() {
    let (env, key) = start("<html><body><p>Hi.</p></body></html>");
    let key = key.as_str();
    let header = json!({"name": "Tested", "emailType": "ab", "tracking": {"opens": true},
        "variants": [{"name": "plain", "templateData": {"subject_line": "Our news"}},
                     {"name": "bold", "templateData": {"subject_line": "Big news!"}}],
        "test": {"share": 0.3, "waitSecs": 20}});
    let mut body = format!("{header}\n");
    for i in 0..300 {
        body.push_str(&format!("{{\"address\": \"t{i}@fast.test\"}}\n"));
    }
    let created = campaigns::create_inline(env.server.http, key, &body);
    let id = created["id"].as_str().unwrap().to_string();

    // The sample goes out; readers open it well within the test's 20 s.
    let testing = wait_for(&env, key, &id, "the sample queued", |c| {
        c["state"] == "testing"
    });
    let sample = testing["expansion"]["queued"].as_u64().unwrap();
    assert!((50..=130).contains(&sample), "30% of 300: {testing}");
    assert_eq!(testing["test"]["phase"], json!("waiting"), "{testing}");
    wait_until(
        "the sample delivered",
        WAIT,
        || env.sink.messages().len() as u64 == sample,
        || env.server.log(),
    );
    let subject = |m: &postroad_loadtest::sink::ReceivedMessage| {
        let text = String::from_utf8_lossy(&m.data).to_string();
        if text.contains("Subject: Big news!") {
            "bold"
        } else {
            "plain"
        }
    };
    let mut opened = 0;
    for m in env.sink.messages() {
        let text = String::from_utf8_lossy(&m.data).replace("=\r\n", "");
        if subject(&m) != "bold" {
            continue;
        }
        campaigns::open_pixel(env.server.http, &text);
        opened += 1;
    }
    let sampled: Vec<&str> = env.sink.messages().iter().map(subject).collect();
    assert!(
        sampled.contains(&"plain") && opened > 0,
        "both variants in the sample: {sampled:?}"
    );
    let variants = format!("/v1/campaigns/{id}/variants");
    wait_until(
        "the opens in the history",
        WAIT,
        || curl(env.server.http, key, &[], &variants).1["leader"]["name"] == "bold",
        || env.server.log(),
    );

    let done = wait_for(&env, key, &id, "the rest delivered", |c| {
        c["state"] == "sent" && c["results"]["delivered"] == 300
    });
    assert_eq!(
        (
            &done["test"]["winner"],
            &done["test"]["phase"],
            &done["expansion"]["queued"]
        ),
        (&json!("bold"), &json!("rest"), &json!(300)),
        "{done}"
    );
    let all = env.sink.messages();
    assert_eq!(received(&env).len(), 300);
    let rest: Vec<&str> = all[sample as usize..].iter().map(subject).collect();
    assert!(
        rest.iter().all(|s| *s == "bold"),
        "the rest got the winner only: {rest:?}"
    );
}
