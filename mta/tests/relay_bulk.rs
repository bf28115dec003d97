//! End to end: 10,000 messages in over SMTP, all delivered by MX to the sink exactly
//! once and intact, and the history complete.

mod common;

use std::time::{Duration, Instant};

use common::relay_env::RelayEnv;
use common::{Client, queued_id};
use postroad_history::{EventKind, HistoryStore};

const SENDERS: usize = 10;
const PER_SENDER: usize = 1_000;
const TOTAL: u64 = (SENDERS * PER_SENDER) as u64;

#[test]
fn ten_thousand_messages_in_are_ten_thousand_delivered() {
    let env = RelayEnv::start("", "");
    let port = env.server.relay;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            std::thread::spawn(move || {
                let mut c = Client::greeted(port);
                c.expect("EHLO bulk.test", 250);
                for n in 0..PER_SENDER {
                    c.expect("MAIL FROM:<bulk@src.test>", 250);
                    c.expect(&format!("RCPT TO:<u{n}@fast.test>"), 250);
                    c.expect("DATA", 354);
                    let body = format!("Message-ID: <bulk-{s}-{n}@relay.test>\r\nSubject: bulk {s} {n}\r\n\r\n{}\r\n.\r\n", "x".repeat(1000));
                    c.send_raw(body.as_bytes());
                    queued_id(&c.reply());
                }
                c.expect("QUIT", 221);
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }

    let stats = env
        .rt
        .block_on(
            env.sink
                .wait_until(Duration::from_secs(180), |s| s.messages >= TOTAL),
        )
        .unwrap_or_else(|s| {
            panic!(
                "only {} of {TOTAL} messages delivered: {s:?}\n{}",
                s.messages,
                env.server.log()
            )
        });
    assert_eq!(stats.messages, TOTAL);
    assert_eq!(stats.duplicates, 0, "{:?}", env.sink.duplicates());
    for s in 0..SENDERS {
        for n in [0, PER_SENDER / 2, PER_SENDER - 1] {
            assert_eq!(
                env.deliveries(
                    &format!("<bulk-{s}-{n}@relay.test>"),
                    &format!("u{n}@fast.test")
                ),
                1
            );
        }
    }

    // History: one queued and one delivered event per message, nothing else.
    let path = env.server.data_dir().join("history.sqlite");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = env.rt.block_on(async {
            let store = HistoryStore::open_read_only(&path).await.unwrap();
            let counts = store.count_by_kind().await.unwrap();
            store.close().await;
            counts
        });
        let count = |kind| {
            counts
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, n)| *n)
        };
        if count(EventKind::Delivered) == TOTAL && count(EventKind::Queued) == TOTAL {
            assert_eq!(
                count(EventKind::Bounced) + count(EventKind::Expired) + count(EventKind::Deferred),
                0,
                "{counts:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "history incomplete: {counts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
