//! `serve --roles history`: the history written apart from delivery, by a process
//! reading the events topic as a consumer group into MySQL (the machine's MariaDB),
//! while other processes accept (`--roles ingress`) and deliver (`--roles relay`).
//! The history process is SIGKILLed mid-run and started again: every event is in the
//! history exactly once.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::kafka_env::{BROKER_PORT, KafkaEnv, submit};
use common::mariadb::MachineDatabase;

const THREADS: usize = 2;
const PER_THREAD: usize = 500;
const TOTAL: u64 = (THREADS * PER_THREAD) as u64;

/// (queued events, delivered events, recipients' rows, rows now delivered).
fn counts(db: &MachineDatabase) -> (u64, u64, u64, u64) {
    let d = &db.name;
    let out = db.sql(&format!(
        "SELECT (SELECT COUNT(*) FROM {d}.email_events WHERE kind = 'queued'), \
         (SELECT COUNT(*) FROM {d}.email_events WHERE kind = 'delivered'), \
         (SELECT COUNT(*) FROM {d}.email_history), \
         (SELECT COUNT(*) FROM {d}.email_history WHERE status = 'delivered')"
    ));
    let n: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (n[0], n[1], n[2], n[3])
}

#[test]
fn a_history_process_writes_every_event_once_though_killed_mid_run() {
    let env = KafkaEnv::start("history", BROKER_PORT, "tansu");
    let db = MachineDatabase::create(&format!("postroad_{}", env.prefix));
    let history = format!(
        "\n[history]\nbackend = \"mysql\"\nurl = \"{}\"\nmax_batch = 200\nflush_interval_ms = 50\n",
        db.url()
    );
    let config = format!("{}{history}", env.config("history-1", ""));
    let migrate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(migrate.path(), &config).unwrap();
    let (ok, out) = common::run(
        common::binary(),
        &["migrate", "--config", migrate.path().to_str().unwrap()],
        None,
    );
    assert!(ok, "postroad migrate: {out}");

    let ingress = env.ingress("in-1");
    let relay = env.relay("relay-1");
    let mut writer = Server::start_with(&config, &["--roles", "history"]);
    writer.wait_for_log("reading the events topic");

    let port = ingress.relay;
    let sender = std::thread::spawn(move || submit(&[port], THREADS, PER_THREAD, "history"));
    env.wait_delivered(TOTAL / 3, Duration::from_secs(120), &[&relay]);
    writer.kill();
    writer.restart();
    sender.join().unwrap();
    env.wait_delivered(TOTAL, Duration::from_secs(300), &[&relay]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let all = (TOTAL, TOTAL, TOTAL, TOTAL);
    while counts(&db) != all {
        assert!(
            Instant::now() < deadline,
            "history {:?}, not {all:?}, within 120 s; history process log:\n{}",
            counts(&db),
            writer.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The delivering processes left the history to the history role.
    assert!(relay.log().contains("no history role"), "{}", relay.log());
}
