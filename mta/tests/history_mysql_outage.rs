//! The MySQL history going away under load: a `postroad serve` writing its history to
//! a MariaDB of the test's own, which is killed while mail is delivered and started
//! again later. Delivery goes on meanwhile, events wait in the outbox, and once the
//! database is back every event is in the history exactly once.

mod common;

use std::time::Duration;

use common::http::{api_key, curl, send_batch};
use common::mariadb::PrivateMariadb;
use common::relay_env::RelayEnv;
use serde_json::json;

const WAVE: usize = 100;
const WAIT: Duration = Duration::from_secs(120);

fn send_wave(port: u16, key: &str, wave: usize) {
    let messages: Vec<_> = (0..WAVE)
        .map(|i| {
            json!({"from": "app@src.test", "to": [format!("w{wave}-{i}@fast.test")],
                "subject": "Hello", "text": "Hi.", "emailType": "outage"})
        })
        .collect();
    send_batch(port, key, &messages);
}

/// (queued events, delivered events, recipients' rows, rows now `delivered`).
fn counts(db: &PrivateMariadb) -> (u64, u64, u64, u64) {
    let out = db.sql(
        "SELECT (SELECT COUNT(*) FROM postroad.email_events WHERE kind = 'queued'), \
         (SELECT COUNT(*) FROM postroad.email_events WHERE kind = 'delivered'), \
         (SELECT COUNT(*) FROM postroad.email_history), \
         (SELECT COUNT(*) FROM postroad.email_history WHERE status = 'delivered')",
    );
    let n: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (n[0], n[1], n[2], n[3])
}

fn wait_until(what: &str, done: impl FnMut() -> bool, log: impl Fn() -> String) {
    common::wait_until(what, WAIT, done, log);
}

#[test]
fn a_database_killed_mid_run_delays_the_history_and_loses_no_event() {
    let mut db = PrivateMariadb::start();
    let history = format!(
        "[history]\nbackend = \"mysql\"\nurl = \"{}\"\nmax_batch = 50\nflush_interval_ms = 20\n",
        db.url()
    );
    let migrate_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(migrate_config.path(), &history).unwrap();
    let (ok, out) = common::run(
        common::binary(),
        &[
            "migrate",
            "--config",
            migrate_config.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "postroad migrate: {out}");

    let env = RelayEnv::start("", &history);
    let port = env.server.http;
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();

    // Wave 1, and the database killed while its events are being written.
    send_wave(port, key, 1);
    db.kill();
    send_wave(port, key, 2);
    wait_until(
        "every message delivered while the database is down",
        || env.sink.messages().len() >= 2 * WAVE,
        || env.server.log(),
    );
    // The writer finds the database gone (its connection wait runs out) and keeps
    // the events for a retry.
    wait_until(
        "a failed history write while the database is down",
        || env.server.log().contains("event sink failed"),
        || env.server.log(),
    );

    db.restart();
    let total = 2 * WAVE as u64;
    wait_until(
        "the whole history written once the database is back",
        || counts(&db) == (total, total, total, total),
        || format!("{:?}\n{}", counts(&db), env.server.log()),
    );
    // Nothing more arrives afterwards (no replay was stored twice): the event fan-out
    // has nothing left in the outbox once the history holds it all.
    assert_eq!(counts(&db), (total, total, total, total));
    assert_eq!(
        env.sink.messages().len(),
        2 * WAVE,
        "each message delivered once"
    );
    // And the API reads it from MySQL.
    let (status, page) = curl(
        port,
        key,
        &[],
        "/v1/history?emailType=outage&status=delivered&limit=1000",
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["rows"].as_array().unwrap().len(), 2 * WAVE);
}
