//! A rolling restart of a whole cluster on the Kafka backend, under load: 2 ingress, 3
//! relay (static members `relay-0..2`, as a StatefulSet names them) and 1 history
//! process share a Kafka-protocol broker and MySQL. Four SMTP clients send without
//! pause to both ingress processes while every process is stopped with SIGTERM and
//! started again, one after the other (each relay only once the group has settled and
//! mail flows again), then one relay is SIGKILLed. Every acknowledged message must be
//! delivered and every one of its events must reach the history; duplicates and the
//! clients' error rate are reported.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka_env::{BROKER_PORT, DOMAINS, KafkaEnv};
use common::mariadb::MachineDatabase;
use common::{Client, Server};

const CLIENTS: usize = 4;
/// Deliveries that must happen between one restart and the next.
const PROGRESS: u64 = 100;
const WAIT: Duration = Duration::from_secs(120);

/// What the clients saw.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// (Message-ID, recipient) of every message answered `250`.
    acked: Mutex<Vec<(String, String)>>,
    /// Transactions that got a temporary refusal (`4xx`) at any step.
    refused: AtomicU64,
    /// Connections refused or closed before the greeting.
    unreachable: AtomicU64,
    /// Connections closed between the end of the data and the reply: the client
    /// cannot know whether the message was taken.
    cut: AtomicU64,
    attempts: AtomicU64,
}

enum Outcome {
    Acked,
    Refused,
    /// The connection is gone: connect again.
    Closed {
        after_data: bool,
    },
}

/// One transaction on an open session.
fn send_one(c: &mut Client, message_id: &str, rcpt: &str) -> Outcome {
    for (line, want) in [
        ("MAIL FROM:<load@src.test>".to_string(), 250),
        (format!("RCPT TO:<{rcpt}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        match c.try_cmd(&line) {
            None => return Outcome::Closed { after_data: false },
            Some(r) if r.code == want => {}
            Some(r) if (400..500).contains(&r.code) => {
                if r.code == 421 || c.try_cmd("RSET").is_none_or(|r| r.code != 250) {
                    return Outcome::Closed { after_data: false };
                }
                return Outcome::Refused;
            }
            Some(r) => panic!("{line} -> {r:?}"),
        }
    }
    let body = format!(
        "Message-ID: {message_id}\r\nSubject: rolling\r\n\r\n{}\r\n.\r\n",
        "x".repeat(400)
    );
    if !c.send_raw_checked(body.as_bytes()) {
        return Outcome::Closed { after_data: true };
    }
    match c.try_reply() {
        None => Outcome::Closed { after_data: true },
        Some(r) if r.code == 250 => Outcome::Acked,
        Some(r) if (400..500).contains(&r.code) => Outcome::Refused,
        Some(r) => panic!("end of data -> {r:?}"),
    }
}

/// A session: connected, greeted and EHLO answered; `None` while the server is away.
fn session(port: u16) -> Option<Client> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut c = Client::connect(port);
    if c.try_reply()?.code != 220 {
        return None;
    }
    (c.try_cmd("EHLO load.test")?.code == 250).then_some(c)
}

/// A client sending one message after another, to `ports` in turn whenever its
/// session ends, until `load.stop`.
fn client(t: usize, ports: [u16; 2], load: Arc<Load>) {
    let mut turn = t;
    let mut n = 0usize;
    while !load.stop.load(Ordering::SeqCst) {
        let port = ports[turn % ports.len()];
        turn += 1;
        let Some(mut c) = session(port) else {
            load.unreachable.fetch_add(1, Ordering::SeqCst);
            // The other ingress process is tried next; no busy loop while both restart.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !load.stop.load(Ordering::SeqCst) {
            n += 1;
            let message_id = format!("<roll-{t}-{n}@kafka.test>");
            let rcpt = format!("u{t}x{n}@d{}.test", (t + n) % DOMAINS);
            load.attempts.fetch_add(1, Ordering::SeqCst);
            match send_one(&mut c, &message_id, &rcpt) {
                Outcome::Acked => load.acked.lock().unwrap().push((message_id, rcpt)),
                Outcome::Refused => {
                    load.refused.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::Closed { after_data } => {
                    let counter = if after_data { &load.cut } else { &load.refused };
                    counter.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }
}

/// True when the relay's last word about its partitions since its log was `since`
/// bytes long (its last start) is an assignment.
fn settled(relay: &Server, since: usize) -> bool {
    let log = relay.log();
    let log = log.get(since..).unwrap_or_default();
    let assigned = log.rfind("Kafka partitions assigned");
    assigned.is_some() && assigned > log.rfind("Kafka partitions revoked")
}

struct Cluster {
    env: KafkaEnv,
    ingress: Vec<Server>,
    relays: Vec<Server>,
    /// Each relay's log length when it last started.
    relay_starts: Vec<usize>,
    history: Server,
}

impl Cluster {
    fn logs(&self) -> String {
        let named = self
            .ingress
            .iter()
            .map(|s| ("ingress", s))
            .chain(self.relays.iter().map(|s| ("relay", s)))
            .chain([("history", &self.history)]);
        named
            .map(|(role, s)| format!("==== {role} {}\n{}", s.config_path.display(), s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn delivered(&self) -> u64 {
        let s = self.env.sink.stats();
        s.messages - s.duplicates
    }

    /// Waits until the relay group has settled and `PROGRESS` more messages were
    /// delivered.
    fn wait_flowing(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self
            .relays
            .iter()
            .zip(&self.relay_starts)
            .all(|(r, &at)| settled(r, at))
        {
            assert!(
                Instant::now() < deadline,
                "{what}: the relay group did not settle within {WAIT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let from = self.delivered();
        while self.delivered() < from + PROGRESS {
            assert!(
                Instant::now() < deadline,
                "{what}: {} deliveries within {WAIT:?}, not {PROGRESS}\n{}",
                self.delivered() - from,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// (recipient, kind) of every queued and delivered event in the history.
fn history_events(db: &MachineDatabase) -> BTreeSet<(String, String)> {
    let out = db.sql(&format!(
        "SELECT DISTINCT recipient, kind FROM {}.email_events WHERE kind IN ('queued', 'delivered')",
        db.name
    ));
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(r, k)| (r.to_string(), k.to_string()))
        .collect()
}

#[test]
fn every_process_restarted_in_turn_under_load_loses_nothing() {
    let env = KafkaEnv::start("rolling", BROKER_PORT, "tansu");
    let db = MachineDatabase::create(&format!("postroad_{}", env.prefix.replace('-', "_")));
    let history = format!(
        "\n[history]\nbackend = \"mysql\"\nurl = \"{}\"\nflush_interval_ms = 50\n",
        db.url()
    );
    let config = |instance: &str| format!("{}{history}", env.config(instance, ""));
    let migrate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(migrate.path(), config("migrate")).unwrap();
    let (ok, out) = common::run(
        common::binary(),
        &["migrate", "--config", migrate.path().to_str().unwrap()],
        None,
    );
    assert!(ok, "postroad migrate: {out}");

    let ingress: Vec<Server> = (0..2)
        .map(|i| Server::start_with(&config(&format!("in-{i}")), &["--roles", "ingress"]))
        .collect();
    // Static members join one at a time, each waiting for its partitions.
    let relays: Vec<Server> = (0..3)
        .map(|i| env.relay_with(&config(&format!("relay-{i}"))))
        .collect();
    let history = Server::start_with(&config("history-0"), &["--roles", "history"]);
    history.wait_for_log("reading the events topic");
    let mut cluster = Cluster {
        env,
        ingress,
        relay_starts: vec![0; relays.len()],
        relays,
        history,
    };

    let load = Arc::new(Load::default());
    let ports = [cluster.ingress[0].relay, cluster.ingress[1].relay];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let load = load.clone();
            std::thread::spawn(move || client(t, ports, load))
        })
        .collect();
    cluster.wait_flowing("before the restarts");
    let started = Instant::now();

    for i in 0..cluster.ingress.len() {
        cluster.ingress[i].stop();
        cluster.ingress[i].restart();
        cluster.wait_flowing(&format!("after ingress {i}'s restart"));
    }
    for i in 0..cluster.relays.len() {
        cluster.relays[i].stop();
        cluster.relay_starts[i] = cluster.relays[i].log().len();
        cluster.relays[i].restart();
        cluster.wait_flowing(&format!("after relay {i}'s restart"));
    }
    cluster.history.stop();
    cluster.history.restart();
    cluster.history.wait_for_log("reading the events topic");
    cluster.wait_flowing("after the history process's restart");
    cluster.relays[1].kill();
    cluster.relay_starts[1] = cluster.relays[1].log().len();
    cluster.relays[1].restart();
    cluster.wait_flowing("after relay 1 was killed and started again");
    let restarts = started.elapsed();

    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let acked = load.acked.lock().unwrap().clone();
    let undelivered = |cluster: &Cluster| -> Vec<(String, String)> {
        acked
            .iter()
            .filter(|(id, rcpt)| cluster.env.sink.deliveries(id, rcpt) == 0)
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let missing = undelivered(&cluster);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never delivered, e.g. {:?}\n{}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)],
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every acknowledged message's events reach the history.
    let deadline = Instant::now() + WAIT;
    let missing_events = |events: &BTreeSet<(String, String)>| -> Vec<(String, &str)> {
        acked
            .iter()
            .flat_map(|(_, rcpt)| ["queued", "delivered"].map(|k| (rcpt.clone(), k)))
            .filter(|(rcpt, k)| !events.contains(&(rcpt.clone(), k.to_string())))
            .collect()
    };
    loop {
        let events = history_events(&db);
        let missing = missing_events(&events);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} events of acknowledged messages are not in the history, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let stats = cluster.env.sink.stats();
    let attempts = load.attempts.load(Ordering::SeqCst);
    let refused = load.refused.load(Ordering::SeqCst);
    let cut = load.cut.load(Ordering::SeqCst);
    println!(
        "rolling restart of 6 processes in {restarts:?}: {} acknowledged of {attempts} \
         transactions; {refused} refused with 4xx or closed before the data ({:.2}%), \
         {cut} cut after the data, {} connections refused; {} deliveries in all, {} \
         duplicates",
        acked.len(),
        100.0 * (refused + cut) as f64 / attempts.max(1) as f64,
        load.unreachable.load(Ordering::SeqCst),
        stats.messages,
        stats.duplicates,
    );
    assert!(acked.len() as u64 > 6 * PROGRESS);
}
