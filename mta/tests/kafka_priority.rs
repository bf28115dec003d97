//! Transactional mail overtakes bulk mail on Kafka too: 3,000 `bulk` messages for one
//! slow site are queued (to the bulk topic), a relay worker starts on them, then
//! `high` messages to the same site are sent; each is delivered while most of the
//! bulk backlog still waits. The
//! worker holds few records (100 per partition, 200 bulk), so the backlog is mostly
//! unread in Kafka: in one shared topic, a paused partition would keep a `high`
//! record behind the bulk ones before it. The time each took from submission to the
//! receiver is printed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kafka_env::{BROKER_PORT, DOMAINS, KafkaEnv};
use common::overtaking::{self, now_us};
use common::{Client, queued_id};
use postroad_loadtest::sink::Faults;

const BULK: usize = 3000;
const URGENT: usize = 10;

/// Sends one message with `priority` to `rcpt` on an open session.
fn send(c: &mut Client, rcpt: &str, priority: &str, n: usize) {
    c.expect("MAIL FROM:<shop@src.test>", 250);
    c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    c.expect("DATA", 354);
    let body = format!(
        "Message-ID: <{priority}-{n}@kafka.test>\r\nX-Postroad-Priority: {priority}\r\n\
         Subject: {priority} {n}\r\n\r\nHello.\r\n.\r\n"
    );
    c.send_raw(body.as_bytes());
    queued_id(&c.reply());
}

#[test]
fn high_priority_mail_is_not_held_up_by_a_bulk_backlog_on_kafka() {
    let env = KafkaEnv::start("priority", BROKER_PORT, "tansu");
    // Every reply of every test domain's receiver (one site: one MX host) takes 20 ms.
    let slow = Faults {
        delay: Duration::from_millis(20),
        ..Faults::default()
    };
    let sites = (0..DOMAINS)
        .map(|d| (format!("d{d}.test"), slow.clone()))
        .collect();
    env.sink.set_faults(Faults::default(), sites).unwrap();
    let ingress = env.ingress("ingress-0");

    // The campaign's backlog, over four connections, before any worker reads it.
    let port = ingress.relay;
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::greeted(port);
                c.expect("EHLO shop.test", 250);
                for n in (t..BULK).step_by(4) {
                    send(
                        &mut c,
                        &format!("reader{n}@d{}.test", n % DOMAINS),
                        "bulk",
                        n,
                    );
                }
                c.expect("QUIT", 221);
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let held = "max_held_per_partition = 100\nmax_held_bulk = 200\n";
    let relay = env.relay_with(&env.config("relay-0", held));

    // Password resets, while the backlog is being worked off.
    let mut submitted = HashMap::new();
    let mut c = Client::greeted(port);
    c.expect("EHLO shop.test", 250);
    for n in 0..URGENT {
        let to = format!("urgent{n}@d{}.test", n % DOMAINS);
        submitted.insert(to.clone(), now_us());
        send(&mut c, &to, "high", n);
        std::thread::sleep(Duration::from_millis(100));
    }
    c.expect("QUIT", 221);
    env.wait_delivered(
        (BULK + URGENT) as u64,
        Duration::from_secs(180),
        &[&ingress, &relay],
    );

    let messages = env.sink.messages();
    let times = overtaking::urgent_overtook(&messages, &submitted, BULK, || relay.log());
    println!("Kafka: {URGENT} high messages during a {BULK}-message bulk backlog: {times}");
}
