//! The HTTP API of a running `postroad serve`, driven by curl (HTTP/1.1 and h2c) with a
//! key from `postroad api-key create`: a templated message is rendered, queued,
//! delivered to the sink and found in the history by user id.

mod common;

use std::process::Command;
use std::time::Duration;

use common::relay_env::RelayEnv;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// `postroad api-key ARGS` for this server; its standard output.
fn api_key(env: &RelayEnv, args: &[&str]) -> String {
    let data = env.server.data_dir();
    let mut all = vec!["api-key"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", data.to_str().unwrap()]);
    let out = Command::new(common::binary()).args(&all).output().unwrap();
    assert!(
        out.status.success(),
        "postroad {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl with `args` on `path`; `(HTTP status, body as JSON)`.
fn curl(port: u16, key: &str, args: &[&str], path: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {key}");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{http_version}",
            "-H",
            &auth,
        ])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let code: u16 = status.split(' ').next().unwrap().parse().unwrap();
    if args.contains(&"--http2-prior-knowledge") {
        assert!(status.ends_with(" 2"), "not HTTP/2: {status}");
    }
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn a_templated_message_over_h2c_is_delivered_and_in_the_history() {
    let env = RelayEnv::start("", "");
    let port = env.server.http;
    let key = api_key(&env, &["create", "--name", "shop"])
        .trim()
        .to_string();
    assert!(key.starts_with("pr_"), "{key}");
    let listed = api_key(&env, &["list", "--json"]);
    assert!(
        listed.contains("\"shop\"") && !listed.contains(&key),
        "{listed}"
    );

    let template = json!({"subject": "Welcome, {{ name }}!", "text": "Hello {{ name }}.",
        "from": "Shop <shop@src.test>"})
    .to_string();
    let json = "Content-Type: application/json";
    let put = ["-X", "PUT", "-H", json, "--data-binary", &template];
    let (status, stored) = curl(port, &key, &put, "/v1/templates/welcome");
    assert_eq!(status, 201, "{stored}");

    let user_id = 7_000_000 + u64::from(std::process::id());
    let message = json!({"userId": user_id, "emailType": "welcome", "recipient": "new@fast.test",
        "templateData": {"name": "Ann"}, "priority": "high"})
    .to_string();
    let idempotent = [
        "-H",
        json,
        "-H",
        "Idempotency-Key: signup-1",
        "--data-binary",
        &message,
    ];
    let h2c: Vec<&str> = std::iter::once("--http2-prior-knowledge")
        .chain(idempotent)
        .collect();
    let (status, accepted) = curl(port, &key, &h2c, "/v1/messages");
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let (status, again) = curl(port, &key, &idempotent, "/v1/messages");
    assert_eq!(
        (status, &again),
        (202, &accepted),
        "a retry gets the first answer"
    );

    let events = env.wait_for_event(&id, "new@fast.test", "delivered", WAIT);
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["queued", "delivered"], "{events:#?}");
    assert_eq!(events[1]["meta"]["user_id"], user_id);
    assert_eq!(events[1]["meta"]["email_type"], "welcome");
    let received: Vec<_> = env
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.recipients.iter().any(|r| r == "new@fast.test"))
        .collect();
    assert_eq!(received.len(), 1, "delivered once");
    let text = String::from_utf8_lossy(&received[0].data);
    assert!(text.contains("Subject: Welcome, Ann!"), "{text}");
    assert!(text.contains("Hello Ann."), "{text}");

    let user = user_id.to_string();
    let data = env.server.data_dir();
    let (ok, out) = common::run(
        common::binary(),
        &[
            "history",
            "--user-id",
            &user,
            "--email-type",
            "welcome",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 2);

    // Revoked, the key stops working (the server rereads keys every 2 s).
    assert!(api_key(&env, &["revoke", "shop"]).starts_with("revoked"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, _) = curl(
            port,
            &key,
            &["-H", json, "--data-binary", &message],
            "/v1/messages",
        );
        if status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still works"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
