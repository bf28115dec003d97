//! Two relay processes (two `serve`s, each with its own spool) share one site limit
//! through the machine's Redis: `later.test` may take 100 messages a second, each
//! process has 600 for it at once, and together they deliver within 100/s plus 5%
//! (without Redis each would pace alone, 200/s together).

mod common;

use std::time::Duration;

use common::http::{api_key, send_batch};
use common::relay_env::{relay_section, start_peers, zone};
use common::{Server, free_port, wait_until};
use serde_json::{Value, json};

const RATE: f64 = 100.0;
const EACH: usize = 600;

#[test]
fn two_relay_processes_stay_within_one_shared_rate() {
    let (_rt, dns, sink) = start_peers(zone());
    let dir = tempfile::tempdir().unwrap();
    let shaping = dir.path().join("shaping.toml");
    // Adaptive control off: the limit alone decides the pace.
    std::fs::write(
        &shaping,
        format!(
            "[domain.\"later.test\"]\nmax_message_rate = \"{RATE}/s\"\nconnection_limit = 8\nadaptive = false\n"
        ),
    )
    .unwrap();
    let start = |n: usize| {
        let relay = relay_section(
            &dns,
            &sink,
            &format!("shaping_file = \"{}\"\n", shaping.display()),
        );
        let config = format!(
            "{relay}\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n[redis]\nurl = \"redis://127.0.0.1:6379/\"\n",
            free_port()
        );
        let server = Server::start(&config);
        let key = api_key(&server, &["create", "--name", &format!("node{n}")]);
        (server, key.trim().to_string())
    };
    let nodes = [start(0), start(1)];

    // Each node gets its whole share in one durable batch, so both push at once.
    for (n, (server, key)) in nodes.iter().enumerate() {
        let messages: Vec<Value> = (0..EACH)
            .map(|i| {
                json!({"from": "a@src.test", "to": [format!("n{n}r{i}@later.test")],
                    "subject": "shared", "text": "Hi.",
                    "headers": {"Message-ID": format!("<shared.{n}.{i}@src.test>")}})
            })
            .collect();
        send_batch(server.http, key, &messages);
    }
    let delivered = || {
        sink.messages()
            .into_iter()
            .filter(|m| {
                m.message_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("<shared."))
            })
            .collect::<Vec<_>>()
    };
    wait_until(
        "every message delivered",
        Duration::from_secs(120),
        || delivered().len() >= 2 * EACH,
        || format!("{}\n{}", nodes[0].0.log(), nodes[1].0.log()),
    );
    let all = delivered();
    assert_eq!(all.len(), 2 * EACH, "each message once");
    let mut times: Vec<u64> = all.iter().map(|m| m.received_at_us).collect();
    times.sort_unstable();
    let span = (times[times.len() - 1] - times[0]) as f64 / 1e6;
    let rate = (times.len() - 1) as f64 / span;
    eprintln!(
        "{} messages from two relay processes in {span:.2} s: {rate:.1}/s against a shared {RATE}/s",
        times.len()
    );
    assert!(
        rate <= RATE * 1.05,
        "two processes together sent {rate:.1}/s, over {RATE}/s + 5%"
    );
    // Both were sending during the same time, not one after the other.
    let last_of = |n: usize| {
        all.iter()
            .filter(|m| {
                m.message_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(&format!("<shared.{n}.")))
            })
            .map(|m| m.received_at_us)
            .max()
            .unwrap()
    };
    let first = times[0];
    for n in 0..2 {
        let done = (last_of(n) - first) as f64 / 1e6;
        assert!(
            done > span * 0.8,
            "node {n} finished after {done:.1} s of {span:.1} s: the rate was not shared"
        );
    }
}
