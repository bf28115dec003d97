//! A Kafka test bed: a tansu broker on 127.0.0.1 (PostgreSQL storage, started by
//! `scripts/kafka/broker` when not running), topics of their own for each test, the
//! DNS stub and sink of [`super::relay_env`], and any number of `postroad serve
//! --roles ingress|relay` processes sharing them.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use postroad_loadtest::dns::{DnsHandle, Zone};
use postroad_loadtest::sink::{SinkHandle, SinkStats};
use tokio::runtime::Runtime;

use super::relay_env::{relay_section, start_peers};
use super::{Client, Server, queued_id};

/// Domains `d0.test` .. `d{DOMAINS-1}.test`, all delivering to the sink, so records
/// spread over the partitions.
pub const DOMAINS: usize = 16;

/// The main broker, shared by the tests that do not stop it.
pub const BROKER_PORT: u16 = 9092;

pub struct KafkaEnv {
    pub rt: Runtime,
    pub sink: SinkHandle,
    pub dns: DnsHandle,
    /// Per-test prefix of topic names and the consumer group.
    pub prefix: String,
    pub broker_port: u16,
}

fn zone() -> Zone {
    let mut zone = Zone::new("test")
        .ttl(60)
        .a("mx1.sink.test", Ipv4Addr::LOCALHOST);
    for d in 0..DOMAINS {
        zone = zone.mx(&format!("d{d}.test"), 10, "mx1.sink.test");
    }
    zone
}

/// Runs `scripts/kafka/broker ARGS`, panicking with its output on failure.
pub fn broker(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka/broker");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run scripts/kafka/broker");
    assert!(
        out.status.success(),
        "scripts/kafka/broker {args:?} failed (is tansu installed? scripts/kafka/install):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl KafkaEnv {
    /// Uses the broker on `port` (starting it on PostgreSQL storage when it is not
    /// running; `db` names its database), and creates this test's topics.
    pub fn start(name: &str, port: u16, db: &str) -> KafkaEnv {
        let port_arg = port.to_string();
        broker(&[
            "start",
            "--storage",
            "postgres",
            "--port",
            &port_arg,
            "--db",
            db,
        ]);
        let (rt, dns, sink) = start_peers(zone());
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let env = KafkaEnv {
            rt,
            sink,
            dns,
            prefix: format!("{name}-{}", &unique[20..]),
            broker_port: port,
        };
        env.init_topics();
        env
    }

    /// The `[queue]`/`[kafka]`/`[relay]` config of a process with this instance id.
    pub fn config(&self, instance: &str, kafka_extra: &str) -> String {
        let p = &self.prefix;
        format!(
            r#"{relay}
[queue]
backend = "kafka"

[kafka]
brokers = "127.0.0.1:{port}"
group_id = "{p}-relay"
history_group_id = "{p}-history"
instance_id = "{instance}"
commit_interval_ms = 200
produce_timeout_ms = 3000
{kafka_extra}

[kafka.topics]
send = {{ name = "{p}-send", partitions = 8 }}
bulk = {{ name = "{p}-bulk", partitions = 4 }}
dlq = {{ name = "{p}-dlq", partitions = 1 }}
events = {{ name = "{p}-events", partitions = 2 }}
webhooks = {{ name = "{p}-webhooks", partitions = 1 }}

[[kafka.retry_tier]]
topic = "{p}-retry-1m"
delay_secs = 60
partitions = 2
"#,
            relay = relay_section(&self.dns, &self.sink, ""),
            port = self.broker_port,
        )
    }

    fn init_topics(&self) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kafka.toml");
        std::fs::write(&path, self.config("init", "")).unwrap();
        let (ok, out) = super::run(
            super::binary(),
            &["kafka", "init", "--config", path.to_str().unwrap()],
            None,
        );
        assert!(ok, "postroad kafka init failed:\n{out}");
        assert!(
            out.contains(&format!("created {}-send (8 partitions)", self.prefix)),
            "{out}"
        );
    }

    pub fn ingress(&self, instance: &str) -> Server {
        Server::start_with(&self.config(instance, ""), &["--roles", "ingress"])
    }

    /// Starts a relay worker and waits until the group gave it partitions (static
    /// members must join one at a time with some brokers).
    pub fn relay(&self, instance: &str) -> Server {
        self.relay_with(&self.config(instance, ""))
    }

    /// Like [`KafkaEnv::relay`], with a config of the test's own.
    pub fn relay_with(&self, config: &str) -> Server {
        let server = Server::start_with(config, &["--roles", "relay"]);
        wait_for_assignment(&server, 1);
        server
    }

    /// Waits until the sink has `n` distinct (Message-ID, recipient) deliveries;
    /// panics with the counters and the workers' logs when they do not come in time.
    pub fn wait_delivered(&self, n: u64, timeout: Duration, workers: &[&Server]) -> SinkStats {
        let result = self.rt.block_on(
            self.sink
                .wait_until(timeout, |s| s.messages - s.duplicates >= n),
        );
        result.unwrap_or_else(|s| {
            let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
            panic!(
                "{} of {n} delivered within {timeout:?}: {s:?}\nworker logs:\n{}",
                s.messages - s.duplicates,
                logs.join("\n----\n")
            )
        })
    }
}

/// Waits until the server has logged `n` partition assignments in all.
pub fn wait_for_assignment(server: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.log().matches("Kafka partitions assigned").count() < n {
        assert!(
            Instant::now() < deadline,
            "relay worker got no partitions within 90 s:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `postroad ARGS --json` against this server's admin endpoint.
pub fn cli_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(&server.config_path).unwrap()).unwrap();
    let listen = config["admin"]["listen"].as_str().unwrap().to_string();
    let admin = format!("http://{listen}");
    let data = server.data_dir();
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--json",
        "--admin",
        &admin,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (ok, out) = super::run(super::binary(), &all, None);
    assert!(ok, "postroad {args:?} failed:\n{out}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("postroad {args:?}: not JSON ({e}):\n{out}"))
}

/// Sends `per_thread` messages on each of `threads` connections, spreading the
/// connections over `ports`; every message has its own Message-ID and domain.
pub fn submit(ports: &[u16], threads: usize, per_thread: usize, tag: &str) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let port = ports[t % ports.len()];
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut c = Client::greeted(port);
                c.expect("EHLO load.test", 250);
                for n in 0..per_thread {
                    let domain = (t * per_thread + n) % DOMAINS;
                    c.expect("MAIL FROM:<load@src.test>", 250);
                    c.expect(&format!("RCPT TO:<u{n}@d{domain}.test>"), 250);
                    c.expect("DATA", 354);
                    let body = format!(
                        "Message-ID: <{tag}-{t}-{n}@kafka.test>\r\nSubject: {t} {n}\r\n\r\n{}\r\n.\r\n",
                        "x".repeat(500)
                    );
                    c.send_raw(body.as_bytes());
                    queued_id(&c.reply());
                }
                c.expect("QUIT", 221);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
