//! Events are never lost or doubled by a crash: SIGKILL while mail is being accepted
//! and delivered, restart, and the history holds one `queued` and one final event
//! (delivered) for every recipient of every acknowledged message.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::relay_env::RelayEnv;
use common::{Client, Reply, queued_id};
use postroad_history::{EventKind, HistoryStore, MessageId};
use postroad_loadtest::sink::Faults;

const ROUNDS: usize = 3;
const SENDERS: usize = 4;

/// Sends messages until the server dies (or `stop`); returns the acknowledged ids.
fn send_until_the_server_dies(port: u16, stop: Arc<AtomicBool>) -> Vec<MessageId> {
    let mut acked = Vec::new();
    let code = |r: Option<Reply>| r.map_or(0, |r| r.code);
    let mut c = Client::connect(port);
    if code(c.try_reply()) != 220 || code(c.try_cmd("EHLO crash.test")) != 250 {
        return acked;
    }
    while !stop.load(Ordering::Relaxed) {
        if code(c.try_cmd("MAIL FROM:<s@src.test>")) != 250
            || code(c.try_cmd("RCPT TO:<one@later.test>")) != 250
            || code(c.try_cmd("RCPT TO:<two@later.test>")) != 250
            || code(c.try_cmd("DATA")) != 354
        {
            break;
        }
        let sent = c.send_raw_checked(b"Subject: crash\r\n\r\nevents must survive\r\n.\r\n");
        match c.try_reply().filter(|r| sent && r.code == 250) {
            Some(reply) => acked.push(queued_id(&reply)),
            None => break,
        }
    }
    acked
}

/// Per acknowledged message: how many events of each kind its recipients have.
async fn events_of(
    store: &HistoryStore,
    ids: &[MessageId],
) -> HashMap<MessageId, HashMap<(String, EventKind), usize>> {
    let mut all = HashMap::new();
    for &id in ids {
        let mut counts = HashMap::new();
        for e in store.by_message_id(id, 1000).await.unwrap() {
            *counts.entry((e.recipient, e.kind)).or_insert(0) += 1;
        }
        all.insert(id, counts);
    }
    all
}

fn final_count(counts: &HashMap<(String, EventKind), usize>, rcpt: &str) -> usize {
    [EventKind::Delivered, EventKind::Bounced, EventKind::Expired]
        .iter()
        .map(|&k| counts.get(&(rcpt.to_string(), k)).copied().unwrap_or(0))
        .sum()
}

#[test]
fn sigkill_during_delivery_loses_and_doubles_no_event() {
    let mut env = RelayEnv::start("", "");
    // Slow replies after the data keep deliveries in flight when the kill comes.
    let slow = Faults {
        delay: Duration::from_millis(30),
        ..Faults::default()
    };
    env.sink
        .set_faults(
            Faults::default(),
            HashMap::from([("later.test".into(), slow)]),
        )
        .unwrap();
    let mut acked = Vec::new();
    for _ in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                let (port, stop) = (env.server.relay, stop.clone());
                std::thread::spawn(move || send_until_the_server_dies(port, stop))
            })
            .collect();
        std::thread::sleep(common::kill_moment(200, 700));
        env.server.kill();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            acked.extend(s.join().unwrap());
        }
        env.server.restart();
    }
    assert!(
        acked.len() > 50,
        "the load was too light to mean anything: {} messages",
        acked.len()
    );

    // After the last restart everything is delivered and recorded.
    let path = env.server.data_dir().join("history.sqlite");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(HistoryStore::open_read_only(&path)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let counts = rt.block_on(events_of(&store, &acked));
        let done = counts.values().all(|c| {
            final_count(c, "one@later.test") >= 1 && final_count(c, "two@later.test") >= 1
        });
        if done {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged message reached its final event; server log:\n{}",
            env.server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (id, c) in &counts {
        for rcpt in ["one@later.test", "two@later.test"] {
            let queued = c.get(&(rcpt.to_string(), EventKind::Queued)).copied();
            assert_eq!(queued, Some(1), "{id} {rcpt}: queued events {c:?}");
            assert_eq!(final_count(c, rcpt), 1, "{id} {rcpt}: final events {c:?}");
        }
    }
    rt.block_on(store.close());
    env.server.stop();
    println!(
        "{} acknowledged messages over {ROUNDS} SIGKILLs: one queued and one final event each",
        acked.len()
    );
}
