//! Two `postroad serve` nodes with their history on one MySQL database (the machine's
//! MariaDB) share the API's data too: a key made once works on both and is revoked on
//! both, a template stored through one renders on the other, and a request retried on
//! the other node with the same Idempotency-Key gets the first answer and queues
//! nothing new.

mod common;

use std::time::Duration;

use common::Server;
use common::http::curl;
use common::mariadb::MachineDatabase;
use common::{binary, run, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const JSON: &str = "Content-Type: application/json";

fn postroad(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--config", server.config_path.to_str().unwrap()]);
    let (ok, out) = run(binary(), &all, None);
    assert!(ok, "postroad {all:?}:\n{out}");
    out
}

fn post(
    server: &Server,
    key: &str,
    path: &str,
    body: &serde_json::Value,
    headers: &[&str],
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let mut args = vec!["-H", JSON, "--data-binary", &body];
    for header in headers {
        args.extend(["-H", header]);
    }
    curl(server.http, key, &args, path)
}

#[test]
fn nodes_on_one_mysql_share_keys_templates_and_idempotent_answers() {
    let db = MachineDatabase::create(&format!("postroad_shared_store_{}", std::process::id()));
    let history = format!("[history]\nbackend = \"mysql\"\nurl = \"{}\"\n", db.url());
    let mut a = Server::configure(&history, &[]);
    let mut b = Server::configure(&history, &[]);

    // The API tables come with the history's schema, in one deliberate step.
    let (ok, out) = run(
        binary(),
        &[
            "api-key",
            "list",
            "--config",
            a.config_path.to_str().unwrap(),
        ],
        None,
    );
    assert!(!ok && out.contains("postroad migrate"), "{out}");
    postroad(&a, &["migrate"]);
    a.restart();
    b.restart();

    let out = postroad(&a, &["api-key", "create", "--name", "app"]);
    let key = out.lines().next().unwrap().trim().to_string();
    assert!(key.starts_with("pr_"), "{out}");

    let template = json!({"subject": "Welcome, {{ name }}", "text": "Hello {{ name }}."});
    let (status, stored) = curl(
        a.http,
        &key,
        &[
            "-X",
            "PUT",
            "-H",
            JSON,
            "--data-binary",
            &template.to_string(),
        ],
        "/v1/templates/welcome",
    );
    assert_eq!(status, 201, "{stored}");
    let (status, listed) = curl(b.http, &key, &[], "/v1/templates");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["templates"][0]["emailType"], "welcome", "{listed}");

    let welcome = json!({"userId": 7, "emailType": "welcome", "recipient": "ann@example.test",
        "from": "app@example.test", "templateData": {"name": "Ann"}});
    let (status, answer) = post(&b, &key, "/v1/messages", &welcome, &[]);
    assert_eq!(
        status, 202,
        "rendered on the node that did not store it: {answer}"
    );

    let receipt = json!({"from": "app@example.test", "to": ["bob@example.test"],
        "subject": "Your order", "text": "Thanks."});
    let retry = ["Idempotency-Key: order-77"];
    let (status, first) = post(&a, &key, "/v1/messages", &receipt, &retry);
    assert_eq!(status, 202, "{first}");
    let (status, again) = post(&b, &key, "/v1/messages", &receipt, &retry);
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        again, first,
        "the retry on the other node gets the first answer"
    );
    let mut changed = receipt.clone();
    changed["subject"] = json!("Another order");
    let (status, reused) = post(&b, &key, "/v1/messages", &changed, &retry);
    assert_eq!(status, 422, "{reused}");

    // Each node's history goes to the shared database in order: once node b's last
    // message is there, everything b queued before it is too. Three messages in all:
    // the retry queued nothing.
    let (_, last) = post(&b, &key, "/v1/messages", &receipt, &[]);
    let ids: Vec<String> = [&answer, &first, &last]
        .iter()
        .map(|a| format!("'{}'", a["id"].as_str().unwrap().to_ascii_uppercase()))
        .collect();
    let counts = || {
        let out = db.sql(&format!(
            "SELECT COUNT(DISTINCT message_id), COUNT(DISTINCT IF(HEX(message_id) IN ({}), message_id, NULL)) \
             FROM {}.email_history",
            ids.join(","),
            db.name
        ));
        let n: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
        (n[0], n[1])
    };
    wait_until(
        "the three messages reach the history",
        WAIT,
        || counts().1 == 3,
        || format!("{}\n{}", a.log(), b.log()),
    );
    assert_eq!(counts(), (3, 3), "the retried request queued nothing");

    postroad(&b, &["api-key", "revoke", "app"]);
    for node in [&a, &b] {
        wait_until(
            "a revoked key is refused",
            WAIT,
            || curl(node.http, &key, &[], "/v1/templates").0 == 401,
            || node.log(),
        );
    }
}
