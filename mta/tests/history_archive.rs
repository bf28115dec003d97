//! `postroad history archive` and `serve`'s own archival against moto's S3 server:
//! an old month of a SQLite history archived by the CLI, listed, restored and shown
//! again by `postroad history`; then `serve` archives another old month by itself.

mod common;

use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{Server, binary, run};
use postroad_history::{DeliveryEvent, EventKind, HistoryStore, MessageId, Metadata};
use serde_json::Value;
use uuid::Uuid;

/// `n` messages sent from `first_day` on, each queued and delivered to one recipient.
fn old_mail(first_day: &str, n: u64) -> Vec<DeliveryEvent> {
    let start = chrono::NaiveDate::parse_from_str(first_day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis() as u64;
    let mut events = Vec::new();
    for i in 0..n {
        let sent = start + i * 60_000;
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, sent / 1000, 0);
        let id = MessageId::from_u128(Uuid::new_v7(ts).as_u128());
        for (kind, at) in [
            (EventKind::Queued, sent),
            (EventKind::Delivered, sent + 900),
        ] {
            events.push(DeliveryEvent {
                event_id: Uuid::now_v7(),
                kind,
                message_id: id,
                sender: "app@src.test".into(),
                recipient: format!("r{i}@example.net"),
                domain: "example.net".into(),
                at_ms: at,
                attempt: u32::from(kind == EventKind::Delivered),
                remote_host: None,
                reply: None,
                meta: Metadata::default(),
                provider_message_id: None,
                reason: None,
            });
        }
    }
    events
}

fn fill(server: &Server, events: &[DeliveryEvent]) {
    let path = server.data_dir().join("history.sqlite");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = HistoryStore::open_sqlite(&path).await.unwrap();
        store.insert(events).await.unwrap();
        store.close().await;
    });
}

fn postroad(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    let config = server.config_path.to_str().unwrap().to_string();
    all.extend(["--json", "--config", &config]);
    let (ok, out) = run(binary(), &all, None);
    assert!(ok, "postroad {args:?}:\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("postroad {args:?}: {e}:\n{out}"))
}

#[test]
fn the_cli_archives_lists_and_restores_and_serve_archives_by_itself() {
    let moto = Moto::start("mail");
    let mut server = Server::configure(&moto.archive_section("mail", "postroad"), &[]);
    std::fs::create_dir_all(server.data_dir()).unwrap();
    let january = old_mail("2026-01-01", 40);
    fill(&server, &january);

    let done = postroad(&server, &["history", "archive", "run"]);
    assert_eq!(done[0]["month"], "2026-01", "{done:#}");
    assert_eq!(done[0]["archived"]["events"], 80, "{done:#}");
    assert_eq!(done[0]["archived"]["recipients"], 40, "{done:#}");
    let listed = postroad(&server, &["history", "archive", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed[0]["sha256"], done[0]["archived"]["sha256"]);
    let id = january[0].message_id.to_string();
    let gone = postroad(&server, &["history", "--message-id", &id]);
    assert_eq!(gone["events"], serde_json::json!([]), "{gone:#}");

    let restored = postroad(&server, &["history", "archive", "restore", "2026-01"]);
    assert_eq!(
        (restored["events"].as_u64(), restored["parts"].as_u64()),
        (Some(80), Some(1))
    );
    let back = postroad(&server, &["history", "--message-id", &id]);
    let kinds: Vec<&str> = back["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["queued", "delivered"], "{back:#}");
    let config = server.config_path.to_str().unwrap();
    let (ok, out) = run(
        binary(),
        &[
            "history", "archive", "restore", "1999-13", "--config", config,
        ],
        None,
    );
    assert!(!ok && out.contains("not a month"), "{out}");

    // Another old month: `serve` archives it at start; the restored one it keeps.
    fill(&server, &old_mail("2026-02-01", 10));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = postroad(&server, &["history", "archive", "list"]);
        let months: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["month"].as_str().unwrap())
            .collect();
        if months == ["2026-01", "2026-02"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve archived {months:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.wait_for_log("history month archived");
    let still = postroad(&server, &["history", "--message-id", &id]);
    assert_eq!(still["events"].as_array().unwrap().len(), 2, "{still:#}");
    server.stop();
}
