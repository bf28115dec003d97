//! Never lose an acknowledged message: SIGKILL the server under load at random moments,
//! restart it, and find every message that got a 250 in the spool, byte for byte.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Client, Reply, Server, queued_id};
use postroad_queue::{MessageId, Queue};

const SENDERS: usize = 8;
const ROUNDS: usize = 3;

/// One client's messages until the server dies: (queue id, body as sent).
fn send_until_the_server_dies(
    port: u16,
    sender: usize,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(MessageId, String)> {
    let mut acked = Vec::new();
    let mut c = Client::connect(port);
    let code = |r: Option<Reply>| r.map_or(0, |r| r.code);
    if code(c.try_reply()) != 220 || code(c.try_cmd("EHLO crash.test")) != 250 {
        return acked;
    }
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = format!(
            "Subject: crash test {round}-{sender}-{n}\r\nX-Seq: {round}-{sender}-{n}\r\n\r\n{}\r\n",
            format!("payload line {round}/{sender}/{n} ").repeat(40)
        );
        if code(c.try_cmd("MAIL FROM:<crash@test.test>")) != 250
            || code(c.try_cmd("RCPT TO:<r@crash.test>")) != 250
            || code(c.try_cmd("DATA")) != 354
        {
            break;
        }
        c.send_raw(body.as_bytes());
        c.send_raw(b".\r\n");
        // Killed between DATA and the reply: not acknowledged, may or may not be kept.
        let Some(reply) = c.try_reply().filter(|r| r.code == 250) else {
            break;
        };
        acked.push((queued_id(&reply), body));
    }
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_message_survives_sigkill() {
    let mut server = Server::start("");
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (port, stop) = (server.relay, stop.clone());
                std::thread::spawn(move || send_until_the_server_dies(port, sender, round, stop))
            })
            .collect();
        std::thread::sleep(common::kill_moment(200, 1000));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            acked.extend(s.join().unwrap());
        }
        server.restart();
    }
    server.stop();
    assert!(
        acked.len() > 100,
        "the load was too light to mean anything: {} messages",
        acked.len()
    );

    let spool = server.open_spool();
    let stats = spool.stats().await.unwrap();
    assert!(
        stats.queued >= acked.len() as u64,
        "{stats:?} < {} acknowledged",
        acked.len()
    );
    for (id, body) in &acked {
        let (envelope, stored) = spool
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged message {id} is missing after SIGKILL"));
        assert_eq!(envelope.recipients[0].address, "r@crash.test");
        assert!(
            stored.ends_with(body.as_bytes()),
            "message {id} is not intact"
        );
    }
    println!(
        "{} acknowledged messages over {ROUNDS} SIGKILLs, all intact",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_tells_idle_clients_and_keeps_the_queue() {
    let mut server = Server::start("");
    let mut c = Client::greeted(server.relay);
    let id = queued_id(&c.send_mail("a@b.test", &["r@b.test"], "Subject: kept\n\nbody\n"));
    server.stop();
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("4.3.2")),
        (421, true),
        "{r:?}"
    );
    let spool = server.open_spool();
    assert!(spool.get(id).await.unwrap().is_some());
}
