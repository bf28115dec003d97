//! Talking to a test server's HTTP API: keys from `postroad api-key`, requests by curl.

use std::process::Command;

use serde_json::Value;

/// `postroad api-key ARGS` for this server (its config: the keys live beside its
/// history, in its data directory or its MySQL database); its standard output.
pub fn api_key(server: &super::Server, args: &[&str]) -> String {
    let mut all = vec!["api-key"];
    all.extend_from_slice(args);
    all.extend(["--config", server.config_path.to_str().unwrap()]);
    let out = Command::new(super::binary()).args(&all).output().unwrap();
    assert!(
        out.status.success(),
        "postroad {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl with `args` on `path`; `(HTTP status, body as JSON)`.
pub fn curl(port: u16, key: &str, args: &[&str], path: &str) -> (u16, Value) {
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

/// `POST` of `body` as JSON to `path`; `(HTTP status, body as JSON)`.
pub fn post_json(port: u16, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let args = [
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
    ];
    curl(port, key, &args, path)
}

/// `POST /v1/messages/batch` with `messages`, every one of which must be accepted;
/// their ids, in order.
pub fn send_batch(port: u16, key: &str, messages: &[Value]) -> Vec<String> {
    let body = serde_json::json!({ "messages": messages });
    let (status, answer) = post_json(port, key, "/v1/messages/batch", &body);
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(messages.len() as u64)),
        "{answer}"
    );
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}
