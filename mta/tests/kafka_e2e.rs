//! The Kafka backend end to end, against a real Kafka-protocol broker (tansu on
//! PostgreSQL storage, so records survive a broker restart): ingress and relay in
//! separate processes, a relay worker SIGKILLed mid-run, the broker stopped for 10 s
//! while clients submit.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka_env::{
    BROKER_PORT, DOMAINS, KafkaEnv, broker, cli_json, submit, wait_for_assignment,
};
use common::{Client, queued_id};

#[test]
fn two_ingress_and_two_relay_processes_deliver_20000_messages_exactly_once() {
    const THREADS: usize = 10;
    const PER_THREAD: usize = 2_000;
    const TOTAL: u64 = (THREADS * PER_THREAD) as u64;
    let env = KafkaEnv::start("e2e", BROKER_PORT, "tansu");
    let in1 = env.ingress("in-1");
    let in2 = env.ingress("in-2");
    let r1 = env.relay("relay-1");
    let r2 = env.relay("relay-2");
    // The first worker's partitions are split with the second.
    wait_for_assignment(&r1, 2);

    // SIZE advertises what fits in one record (max_record_bytes 1,000,000 less room
    // for the envelope), and more is refused before anything is written.
    let mut c = Client::greeted(in1.relay);
    let ehlo = c.cmd("EHLO size.test");
    assert!(ehlo.to_string().contains("SIZE 983616"), "{ehlo:?}");
    c.expect("MAIL FROM:<big@src.test> SIZE=2000000", 552);
    c.expect("QUIT", 221);

    let started = Instant::now();
    submit(&[in1.relay, in2.relay], THREADS, PER_THREAD, "once");
    let accepted = started.elapsed();
    let stats = env.wait_delivered(TOTAL, Duration::from_secs(300), &[&r1, &r2]);
    println!(
        "{TOTAL} messages: accepted in {accepted:?}, delivered in {:?}",
        started.elapsed()
    );
    assert_eq!(stats.messages - stats.duplicates, TOTAL);
    assert_eq!(
        stats.duplicates,
        0,
        "duplicates: {:?}",
        env.sink.duplicates()
    );
    assert_eq!(stats.checksum_bad, 0);
    // Both workers delivered: the partitions were really shared.
    for r in [&r1, &r2] {
        assert!(
            r.log().contains("status=delivered"),
            "a worker delivered nothing"
        );
    }

    // A bounce ends in the DLQ topic, and `postroad dlq` on any process reads it back.
    let mut c = Client::greeted(in2.relay);
    let reply = c.send_mail(
        "b@src.test",
        &["permfail@d3.test"],
        "Subject: bounce\r\n\r\nno such user\r\n",
    );
    let id = queued_id(&reply).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let list = cli_json(&in1, &["dlq", "list"]);
        let found = list["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["envelope"]["id"] == id.as_str())
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached the DLQ: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        listed["reason"].as_str().unwrap().contains("550"),
        "{listed}"
    );
    let inspected = cli_json(&in1, &["dlq", "inspect", &id]);
    assert!(
        inspected["body"].as_str().unwrap().contains("no such user"),
        "{inspected}"
    );
}

#[test]
fn a_relay_worker_killed_mid_run_loses_nothing() {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 1_000;
    const TOTAL: u64 = (THREADS * PER_THREAD) as u64;
    let env = KafkaEnv::start("kill", BROKER_PORT, "tansu");
    let ingress = env.ingress("in-1");
    let r1 = env.relay("relay-1");
    let mut r2 = env.relay("relay-2");
    wait_for_assignment(&r1, 2);

    let port = ingress.relay;
    let sender = std::thread::spawn(move || submit(&[port], THREADS, PER_THREAD, "kill"));
    env.wait_delivered(TOTAL / 4, Duration::from_secs(120), &[&r1, &r2]);
    r2.kill();
    let at_kill = env.sink.stats();
    // The killed worker comes back under its static id: the group gives it its
    // partitions again and it resumes from their committed offsets.
    r2.restart();
    wait_for_assignment(&r2, 2);
    sender.join().unwrap();
    let stats = env.wait_delivered(TOTAL, Duration::from_secs(300), &[&r1, &r2]);
    println!(
        "killed relay-2 after {} deliveries; {} duplicates (at-least-once: delivered, not yet committed)",
        at_kill.messages, stats.duplicates
    );
    assert_eq!(stats.messages - stats.duplicates, TOTAL);
}

#[test]
fn clients_get_451_while_the_broker_is_down_and_nothing_acknowledged_is_lost() {
    // A broker of its own: this test stops it.
    const PORT: u16 = 19092;
    broker(&["stop", "--port", "19092"]);
    broker(&[
        "start",
        "--storage",
        "postgres",
        "--port",
        "19092",
        "--db",
        "tansu_outage",
        "--fresh",
    ]);
    let env = KafkaEnv::start("outage", PORT, "tansu_outage");
    let ingress = env.ingress("in-1");
    let relay = env.relay("relay-1");

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
        let port = ingress.relay;
        std::thread::spawn(move || {
            let mut c = Client::greeted(port);
            c.expect("EHLO outage.test", 250);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                c.expect("MAIL FROM:<o@src.test>", 250);
                c.expect(&format!("RCPT TO:<u{n}@d{}.test>", n % DOMAINS), 250);
                c.expect("DATA", 354);
                c.send_raw(
                    format!("Message-ID: <outage-{n}@kafka.test>\r\n\r\nbody {n}\r\n.\r\n")
                        .as_bytes(),
                );
                let reply = c.reply();
                match reply.code {
                    250 => {
                        acked.lock().unwrap().insert(n);
                    }
                    451 => {
                        assert!(reply.to_string().contains("4.3.0"), "{reply:?}");
                        *refused.lock().unwrap() += 1;
                    }
                    _ => panic!("unexpected reply {reply:?}"),
                }
            }
            c.expect("QUIT", 221);
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let wait_acked = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} acked:\n{}",
                acked_count(),
                ingress.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_acked(200);
    let readyz = format!("{}/readyz", ingress.admin_url());
    let ready = |url: &str| {
        let (_, out) = common::run(
            "curl",
            &["-sS", "--max-time", "10", "-w", "\n%{http_code}", url],
            None,
        );
        out.ends_with("\n200")
    };
    assert!(ready(&readyz), "not ready before the outage");
    broker(&["stop", "--port", "19092"]);
    let acked_before = acked_count();
    let outage = Instant::now();
    // A load balancer stops sending here: the readiness probe says why.
    let (_, probe) = common::run("curl", &["-sS", "--max-time", "10", &readyz], None);
    assert!(
        probe.contains("\"ready\":false") && probe.contains("Kafka"),
        "{probe}"
    );
    // The outage under test: ten seconds without a broker.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    let refused_during = *refused.lock().unwrap();
    broker(&[
        "start",
        "--storage",
        "postgres",
        "--port",
        "19092",
        "--db",
        "tansu_outage",
    ]);
    wait_acked(acked_before + 200);
    assert!(ready(&readyz), "not ready again after the outage");
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();

    assert!(refused_during > 0, "no 451 while the broker was down");
    let acked = acked.lock().unwrap().clone();
    let missing = |env: &KafkaEnv| {
        acked
            .iter()
            .filter(|&&n| {
                let id = format!("<outage-{n}@kafka.test>");
                env.sink
                    .deliveries(&id, &format!("u{n}@d{}.test", n % DOMAINS))
                    == 0
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while missing(&env) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never delivered\nrelay:\n{}",
            missing(&env),
            acked.len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = env.sink.stats();
    println!(
        "{} acknowledged, {refused_during} refused with 451 during the outage, {} duplicates",
        acked.len(),
        stats.duplicates
    );
    broker(&["stop", "--port", "19092"]);
}
