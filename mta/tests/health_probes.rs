//! What a load balancer or Kubernetes sees: `/healthz` and `/readyz` on the admin
//! endpoint answer without the token (nothing else does); ready means serving with a
//! queue that answers, and a server draining after SIGTERM says it is not ready while
//! it finishes what it holds. With `[log] format = "json"` every log line is a JSON
//! object, and the line of an accepted message carries its id.

mod common;

use common::{Client, Server, queued_id, run};
use serde_json::Value;

/// `curl URL`: (HTTP status, body as JSON).
fn get(url: &str) -> (u16, Value) {
    let (ok, out) = run(
        "curl",
        &["-sS", "--max-time", "10", "-w", "\n%{http_code}", url],
        None,
    );
    assert!(ok, "curl {url}: {out}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn probes_answer_without_the_token_and_readiness_ends_with_draining() {
    let mut server = Server::start("");
    let admin = server.admin_url();
    let (status, alive) = get(&format!("{admin}/healthz"));
    assert_eq!(
        (status, &alive["alive"]),
        (200, &Value::Bool(true)),
        "{alive}"
    );
    let (status, ready) = get(&format!("{admin}/readyz"));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        (&ready["ready"], &ready["state"], &ready["queue"]),
        (&Value::Bool(true), &"serving".into(), &"ok".into())
    );
    // Everything else still wants the token.
    let (status, _) = get(&format!("{admin}/v1/queue/stats"));
    assert_eq!(status, 401);

    // A message being received holds the shutdown (up to shutdown_grace_secs); the
    // server says it is draining meanwhile.
    let mut client = Client::greeted(server.relay);
    client.expect("EHLO client.test", 250);
    client.expect("MAIL FROM:<a@src.test>", 250);
    client.expect("RCPT TO:<b@example.test>", 250);
    client.expect("DATA", 354);
    client.send_raw(b"Subject: in flight\r\n\r\nHalf of it");
    server.terminate();
    server.wait_for_log("shutting down");
    let (status, draining) = get(&format!("{admin}/readyz"));
    assert_eq!(status, 503, "{draining}");
    assert_eq!(
        (&draining["ready"], &draining["state"]),
        (&Value::Bool(false), &"draining".into())
    );
    let (status, _) = get(&format!("{admin}/healthz"));
    assert_eq!(status, 200);
    // The message in flight is still taken.
    client.send_raw(b" and the rest.\r\n.\r\n");
    assert_eq!(client.reply().code, 250);
    server.stop();
}

#[test]
fn json_logs_are_one_object_per_line_with_the_message_id() {
    let mut server = Server::start("[log]\nformat = \"json\"\n");
    let mut client = Client::greeted(server.relay);
    let reply = client.send_mail(
        "a@src.test",
        &["b@example.test"],
        "Subject: hi\r\n\r\nHi.\r\n",
    );
    let id = queued_id(&reply).to_string();
    server.wait_for_log(&id);
    server.stop();
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    let queued = lines
        .iter()
        .find(|l| l["message"] == "queued")
        .unwrap_or_else(|| panic!("no queued line:\n{log}"));
    assert_eq!(queued["id"], id.as_str(), "{queued}");
}
