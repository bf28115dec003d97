//! The history routes of a running `postroad serve`, driven by curl: a message's
//! status per recipient and its timeline, lists by user with keyset pages, what an
//! API key of a tenant may see, and the errors for bad parameters.

mod common;

use std::time::Duration;

use common::http::{api_key, curl, post_json};
use common::relay_env::RelayEnv;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn post(port: u16, key: &str, path: &str, body: &Value) -> Value {
    let (status, answer) = post_json(port, key, path, body);
    assert!(status == 202 || status == 200, "{status} {answer}");
    answer
}

fn get(port: u16, key: &str, path: &str) -> (u16, Value) {
    curl(port, key, &[], path)
}

fn pointers(problem: &Value) -> Vec<&str> {
    let mut p: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    p.sort();
    p
}

#[test]
fn a_message_shows_each_recipients_status_and_its_timeline_to_its_tenant_only() {
    let env = RelayEnv::start("", "");
    let port = env.server.http;
    let shop = api_key(&env.server, &["create", "--name", "shop"]);
    let acme = api_key(
        &env.server,
        &["create", "--name", "acme", "--tenant", "acme"],
    );
    let (shop, acme) = (shop.trim(), acme.trim());

    let mail = json!({"from": "news@src.test", "to": ["ann@fast.test", "bob@nullmx.test"],
        "subject": "Hello", "text": "Hi.", "emailType": "news"});
    let acme_id = post(port, acme, "/v1/messages", &mail)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shop_id = post(port, shop, "/v1/messages", &mail)["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&acme_id, &shop_id] {
        env.wait_for_event(id, "ann@fast.test", "delivered", WAIT);
        env.wait_for_event(id, "bob@nullmx.test", "bounced", WAIT);
    }

    let (status, message) = get(port, acme, &format!("/v1/messages/{acme_id}"));
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["id"], acme_id.as_str());
    let recipients = message["recipients"].as_array().unwrap();
    let statuses: Vec<(&str, &str)> = recipients
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("ann@fast.test", "delivered"),
            ("bob@nullmx.test", "bounced")
        ],
        "{message:#}"
    );
    assert_eq!(recipients[0]["reply"]["code"], 250, "{message:#}");
    assert_eq!(recipients[0]["tenant"], "acme");
    assert_eq!(recipients[0]["emailType"], "news");
    assert!(
        recipients[1]["reply"]["enhanced"]
            .as_str()
            .unwrap()
            .starts_with("5.")
    );
    let timeline: Vec<(&str, &str)> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["recipient"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(timeline.len(), 4, "{message:#}");
    assert!(
        timeline[..2].iter().all(|(kind, _)| *kind == "queued"),
        "{timeline:?}"
    );
    assert!(
        timeline.contains(&("delivered", "ann@fast.test")),
        "{timeline:?}"
    );
    assert!(
        timeline.contains(&("bounced", "bob@nullmx.test")),
        "{timeline:?}"
    );
    let times: Vec<&str> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );

    // A key without a tenant sees every message; a tenant's key only its own.
    assert_eq!(get(port, shop, &format!("/v1/messages/{acme_id}")).0, 200);
    let (status, problem) = get(port, acme, &format!("/v1/messages/{shop_id}"));
    assert_eq!(status, 404, "{problem}");
    let (_, listed) = get(port, acme, "/v1/history?recipient=ANN%40fast.test");
    let ids: Vec<&str> = listed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_id.as_str()], "{listed:#}");
    let (_, listed) = get(
        port,
        shop,
        "/v1/history?recipient=ann%40fast.test&status=delivered",
    );
    assert_eq!(listed["rows"].as_array().unwrap().len(), 2, "{listed:#}");
    let (_, bounced) = get(port, shop, "/v1/history?emailType=news&status=bounced");
    assert!(
        bounced["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["recipient"] == "bob@nullmx.test"),
        "{bounced:#}"
    );

    // Unknown ids, bad ids and no key.
    let (status, _) = get(port, shop, "/v1/messages/0193a4f2c7b87e31a0f6b2d9c4e5a6b7");
    assert_eq!(status, 404);
    let (status, problem) = get(port, shop, "/v1/messages/not-an-id?limit=0");
    assert_eq!(status, 422, "{problem}");
    assert_eq!(pointers(&problem), ["id", "limit"]);
    assert_eq!(get(port, "pr_wrong", "/v1/history").0, 401);
}

#[test]
fn a_users_messages_come_newest_first_in_keyset_pages() {
    let env = RelayEnv::start("", "");
    let port = env.server.http;
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();
    let user = 8_000_000 + u64::from(std::process::id());
    let mut sent = Vec::new();
    // One at a time, so each has its own (increasing) acceptance time.
    for i in 0..5 {
        let mail = json!({"from": "app@src.test", "to": [format!("u{i}@fast.test")],
            "subject": "Receipt", "text": "Thanks.", "userId": user, "emailType": "receipt"});
        sent.push(
            post(port, key, "/v1/messages", &mail)["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for (i, id) in sent.iter().enumerate() {
        env.wait_for_event(id, &format!("u{i}@fast.test"), "delivered", WAIT);
    }

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = format!("/v1/history?userId={user}&limit=2");
    loop {
        let (status, page) = get(port, key, &path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for row in page["rows"].as_array().unwrap() {
            assert_eq!(row["userId"], user);
            assert_eq!(row["status"], "delivered");
            seen.push(row["messageId"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/history?userId={user}&limit=2&cursor={next}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    // A time window: nothing was sent before 2000.
    let (_, empty) = get(
        port,
        key,
        &format!("/v1/history?userId={user}&to=2000-01-01T00:00:00Z"),
    );
    assert_eq!(empty["rows"], json!([]), "{empty}");
    assert!(empty.get("next").is_none());

    let (status, problem) = get(
        port,
        key,
        "/v1/history?status=read&limit=1001&from=yesterday&color=red&cursor=abc",
    );
    assert_eq!(status, 422, "{problem}");
    assert_eq!(pointers(&problem), ["color", "from", "limit", "status"]);
    let (status, problem) = get(port, key, "/v1/history?cursor=abc");
    assert_eq!((status, pointers(&problem)), (422, vec!["cursor"]));
}
