//! The HTTP API of a running `postroad serve`, driven by curl (HTTP/1.1 and h2c) with a
//! key from `postroad api-key create`: a templated message is rendered, queued,
//! delivered to the sink and found in the history by user id.

mod common;

use std::time::Duration;

use common::http::{api_key, curl};
use common::relay_env::RelayEnv;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_templated_message_over_h2c_is_delivered_and_in_the_history() {
    let env = RelayEnv::start("", "");
    let port = env.server.http;
    let key = api_key(&env.server, &["create", "--name", "shop"])
        .trim()
        .to_string();
    assert!(key.starts_with("pr_"), "{key}");
    let listed = api_key(&env.server, &["list", "--json"]);
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
    // One row per recipient of the message, with its current status.
    let rows = serde_json::from_str::<Value>(&out).unwrap()["rows"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(rows[0]["status"], "delivered", "{out}");

    // Revoked, the key stops working (the server rereads keys every 2 s).
    assert!(api_key(&env.server, &["revoke", "shop"]).starts_with("revoked"));
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

#[test]
fn with_http_tls_the_api_speaks_https_with_http2_and_http1() {
    let port = common::free_port();
    let env = RelayEnv::start(
        "",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntls = true\n"),
    );
    let key = api_key(&env.server, &["create", "--name", "tls"])
        .trim()
        .to_string();
    let message = json!({"from": "a@src.test", "to": "tls@fast.test", "subject": "s",
        "text": "over https"})
    .to_string();
    let auth = format!("Authorization: Bearer {key}");
    let url = format!("https://127.0.0.1:{port}/v1/messages");
    let mut ids = Vec::new();
    for version in ["--http2", "--http1.1"] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-k",
                version,
                "--max-time",
                "20",
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .args(["-H", &auth, "-H", "Content-Type: application/json"])
            .args(["--data-binary", &message, &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let expected = if version == "--http2" {
            "202 2"
        } else {
            "202 1.1"
        };
        assert!(
            text.ends_with(expected),
            "{version}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let accepted: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        ids.push(accepted["id"].as_str().unwrap().to_string());
    }
    // Plain HTTP on the TLS port gets no answer of the API.
    let (status, _) = curl(
        port,
        &key,
        &["-H", "Content-Type: application/json"],
        "/v1/messages",
    );
    assert_ne!(status, 202);
    for id in &ids {
        env.wait_for_event(id, "tls@fast.test", "delivered", WAIT);
    }
}
