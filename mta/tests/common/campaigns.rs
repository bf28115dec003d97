//! Campaigns through a test server's HTTP API, by curl: templates, campaigns sent with
//! their recipients, their progress, what the sink got, tracked opens.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::http::curl;
use super::relay_env::RelayEnv;
use super::{run, wait_until};

/// How long a campaign test waits for anything.
pub const WAIT: Duration = Duration::from_secs(60);

/// `PUT /v1/templates/{email_type}` with `template`, which must be stored.
pub fn put_template(http: u16, key: &str, email_type: &str, template: &Value) {
    let body = template.to_string();
    let put = [
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
    ];
    let (status, stored) = curl(http, key, &put, &format!("/v1/templates/{email_type}"));
    assert_eq!(status, 201, "{stored}");
}

/// `POST /v1/campaigns` with `data` (NDJSON: the campaign, then its recipients; or
/// `@FILE`), which must be created; the campaign.
pub fn create_inline(http: u16, key: &str, data: &str) -> Value {
    let create = [
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        data,
    ];
    let (status, created) = curl(http, key, &create, "/v1/campaigns");
    assert_eq!(status, 201, "{created}");
    created
}

/// `GET /v1/campaigns/{id}`, which must answer.
pub fn campaign(http: u16, key: &str, id: &str) -> Value {
    let (status, c) = curl(http, key, &[], &format!("/v1/campaigns/{id}"));
    assert_eq!(status, 200, "{c}");
    c
}

/// Waits until `done` holds for the campaign; returns it then.
pub fn wait_for(
    env: &RelayEnv,
    key: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        what,
        WAIT,
        || {
            *last.borrow_mut() = campaign(env.server.http, key, id);
            done(&last.borrow())
        },
        || format!("campaign: {:#}\n{}", last.borrow(), env.server.log()),
    );
    last.into_inner()
}

/// How many messages the sink got per recipient.
pub fn received(env: &RelayEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in env.sink.messages() {
        for r in m.recipients {
            *counts.entry(r).or_insert(0) += 1;
        }
    }
    counts
}

/// Opens a delivered message as a reader's browser would: fetches the tracking pixel
/// of `text` (its `base` is `https://t.src.test`) from the server on `http`.
pub fn open_pixel(http: u16, text: &str) {
    let token = text
        .split("https://t.src.test/t/o/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no pixel in {text}"));
    let url = format!("http://127.0.0.1:{http}/t/o/{token}");
    let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0";
    let (ok, out) = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-A",
            browser,
            &url,
        ],
        None,
    );
    assert!(ok && out.trim() == "200", "{out}");
}
