//! Open and click tracking and one-click unsubscribe, seen from outside: a message
//! asking for them is built with a pixel, wrapped links and `List-Unsubscribe`; curl
//! follows its links as a reader's client would; the events are in the queue's outbox
//! and the address on the suppression list. Tokens that were changed, forged or used
//! for another purpose are 404 with nothing recorded.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Setup, TestApi};
use postroad_api::{Tracking, TrackingConfig};
use postroad_queue::{DeliveryEvent, EventKind, Queue};
use serde_json::json;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn api() -> TestApi {
    let config = TrackingConfig {
        base_url: "https://t.example.test/".into(),
        // Requests right after sending count as readers' here.
        machine_window: std::time::Duration::ZERO,
        ..TrackingConfig::default()
    };
    let tracking = Tracking::new(&config, "a tracking key of the test");
    let setup = Setup {
        tracking: Some(Arc::new(tracking)),
        ..Setup::default()
    };
    TestApi::start_with(setup, |_| {})
}

/// `(status, headers and body)` of curl's request to the API at `path` (a link's path).
fn curl(api: &TestApi, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-A", BROWSER])
        .args(args)
        .arg(api.url(path))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn events(api: &TestApi) -> Vec<DeliveryEvent> {
    api.runtime
        .block_on(api.spool.events_after(0, 10_000))
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

fn of_kind(api: &TestApi, kind: EventKind) -> Vec<DeliveryEvent> {
    events(api).into_iter().filter(|e| e.kind == kind).collect()
}

/// The decoded HTML part and the header fields of a queued message.
fn parts(api: &TestApi, id: &str) -> (String, Vec<(String, String)>) {
    let (_, body) = api.queued(id);
    let message = mail_parser::MessageParser::default().parse(&body).unwrap();
    let html = message
        .body_html(0)
        .map(|h| h.to_string())
        .unwrap_or_default();
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let raw = &body[h.offset_start as usize..h.offset_end as usize];
            (
                h.name.as_str().to_string(),
                String::from_utf8_lossy(raw).trim().to_string(),
            )
        })
        .collect();
    (html, headers)
}

/// The path (from `/t/...` or `/u/...`) of the first link in `text` after `marker`.
fn link_path(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {text}"));
    let end = text[at..]
        .find(['"', '>', '\'', ' '])
        .map_or(text.len(), |e| at + e);
    text[at..end]
        .trim_start_matches("https://t.example.test")
        .to_string()
}

#[test]
fn a_tracked_bulk_message_records_opens_clicks_and_one_click_unsubscribes() {
    let api = api();
    let html = "<html><body><p>Spring sale: <a href=\"https://shop.example/sale?a=1&amp;b=2\">shop</a> \
                or <a href=\"mailto:help@example.com\">write</a>.</p></body></html>";
    let reply = api.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": "ann@example.net", "subject": "Sale",
                "html": html, "text": "Spring sale: https://shop.example/sale",
                "priority": "bulk", "campaign": "spring", "variant": "b", "userId": 7,
                "tracking": {"opens": true, "clicks": true}}),
    );
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let id = reply.json["id"].as_str().unwrap().to_string();
    let (html, headers) = parts(&api, &id);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}: {headers:?}"))
    };
    let list_unsubscribe = header("List-Unsubscribe");
    assert!(
        list_unsubscribe.contains("<https://t.example.test/u/"),
        "{list_unsubscribe}"
    );
    assert!(header("List-Unsubscribe-Post").ends_with("List-Unsubscribe=One-Click"));
    assert!(html.contains("href=\"mailto:help@example.com\""), "{html}");
    assert!(
        !html.contains("shop.example"),
        "the link is not wrapped: {html}"
    );
    let pixel = link_path(&html, "https://t.example.test/t/o/");
    let click = link_path(&html, "https://t.example.test/t/c/");
    let unsubscribe = link_path(&list_unsubscribe, "https://t.example.test/u/");

    // The pixel: a GIF, never cached, and an open of this recipient with the metadata.
    let (status, text) = curl(&api, &[], &pixel);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: image/gif"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{text}"
    );
    let opened = of_kind(&api, EventKind::Opened);
    assert_eq!(opened.len(), 1, "{opened:?}");
    let open = &opened[0];
    assert_eq!(open.message_id.to_string(), id);
    assert_eq!(
        (open.recipient.as_str(), open.sender.as_str()),
        ("ann@example.net", "news@example.com")
    );
    assert_eq!(open.meta.campaign.as_deref(), Some("spring"));
    assert_eq!(open.meta.variant.as_deref(), Some("b"));
    assert_eq!(open.meta.user_id, Some(7));
    assert_eq!(open.reason, None, "a reader's open");

    // A link: to where it led (entities decoded), the click recorded.
    let (status, text) = curl(&api, &[], &click);
    assert_eq!(status, 302, "{text}");
    assert!(
        text.contains("location: https://shop.example/sale?a=1&b=2\r\n"),
        "{text}"
    );
    assert_eq!(of_kind(&api, EventKind::Clicked).len(), 1);
    // A link checker's HEAD request is a machine's click.
    let (status, _) = curl(&api, &["-I"], &click);
    assert_eq!(status, 302);
    let clicks = of_kind(&api, EventKind::Clicked);
    assert_eq!(clicks.len(), 2);
    assert_eq!(clicks[1].reason.as_deref(), Some("machine"));

    // Changed, forged and misused tokens: 404, nothing recorded.
    let before = events(&api).len();
    let mut changed = click.clone().into_bytes();
    let last = changed.len() - 3;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    let open_token = pixel.trim_start_matches("/t/o/");
    for path in [
        changed.as_str(),
        "/t/c/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/t/o/not-a-token",
        &format!("/t/c/{open_token}"),
        &format!("/u/{open_token}"),
    ] {
        let (status, text) = curl(&api, &[], path);
        assert_eq!(status, 404, "{path}: {text}");
        assert!(!text.to_ascii_lowercase().contains("location:"), "{text}");
    }
    assert_eq!(events(&api).len(), before, "a bad token recorded something");

    // The unsubscribe link's page changes nothing (link scanners fetch it) ...
    let (status, text) = curl(&api, &[], &unsubscribe);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("method=\"post\"") && text.contains("ann@example.net"),
        "{text}"
    );
    assert!(of_kind(&api, EventKind::Unsubscribed).is_empty());
    let listed = |api: &TestApi| {
        api.runtime
            .block_on(api.suppressions.check(None, &["ann@example.net"]))
            .remove(0)
    };
    assert_eq!(listed(&api), None);
    // ... the one-click POST (RFC 8058, as a mailbox provider sends it) unsubscribes at
    // once: no cookie, no redirect.
    let (status, text) = curl(
        &api,
        &["-X", "POST", "--data", "List-Unsubscribe=One-Click"],
        &unsubscribe,
    );
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("set-cookie") && !lower.contains("location:"),
        "{text}"
    );
    assert!(listed(&api).is_some(), "not on the suppression list");
    let gone = of_kind(&api, EventKind::Unsubscribed);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].meta.campaign.as_deref(), Some("spring"));
}

#[test]
fn tracking_is_refused_where_it_cannot_work() {
    let api = api();
    // Tracked links name one reader.
    let reply = api.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": ["a@example.net", "b@example.net"],
                "subject": "s", "html": "<a href=\"https://x.example\">x</a>",
                "tracking": {"clicks": true}}),
    );
    assert_eq!(reply.status, 422, "{:?}", reply.json);
    assert_eq!(
        reply.errors(),
        [("/tracking".to_string(), "one-recipient".to_string())]
    );
    // A bulk message carries its reader's unsubscribe link, so it has one reader too.
    let reply = api.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": ["a@example.net", "b@example.net"],
                "subject": "s", "text": "t", "priority": "bulk"}),
    );
    assert_eq!(reply.status, 422, "{:?}", reply.json);
    assert_eq!(
        reply.errors(),
        [("/priority".to_string(), "one-recipient".to_string())]
    );
    // Without [tracking], asking for it is an error; bulk mail goes without the header.
    let plain = TestApi::start(|_| {});
    let reply = plain.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": "a@example.net", "subject": "s",
                "text": "t", "tracking": {"opens": true}}),
    );
    assert_eq!(reply.status, 422, "{:?}", reply.json);
    assert_eq!(
        reply.errors(),
        [("/tracking".to_string(), "tracking-off".to_string())]
    );
    let reply = plain.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": ["a@example.net", "b@example.net"],
                "subject": "s", "text": "t", "priority": "bulk"}),
    );
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    // Unknown fields of tracking are named.
    let reply = api.post(
        "/v1/messages",
        &json!({"from": "news@example.com", "to": "a@example.net", "subject": "s",
                "text": "t", "tracking": {"open": true}}),
    );
    assert_eq!(reply.status, 422, "{:?}", reply.json);
}
