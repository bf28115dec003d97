//! A delivery test bed: an authoritative DNS stub and a fault-injecting sink (both from
//! `postroad-loadtest`, run in-process), and a `postroad` whose relay resolves MX hosts
//! through the stub and delivers to the sink.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use postroad_loadtest::dns::{DnsHandle, DnsStub, Zone};
use postroad_loadtest::sink::{Faults, Sink, SinkConfig, SinkHandle};
use serde_json::Value;
use tokio::runtime::Runtime;

use super::{Server, free_port, run};

pub struct RelayEnv {
    pub rt: Runtime,
    pub sink: SinkHandle,
    pub dns: DnsHandle,
    pub server: Server,
    pub admin: u16,
}

/// Domains: `fast.test` and `implicit.test` (no MX, an A record) deliver to the sink;
/// `slow.test` too, through its own MX host name (so its own site), with 3 s replies;
/// `fallback.test` prefers an MX where nothing listens (127.0.0.2), then the sink;
/// `later.test` and `postfix.test` are like `fast.test` (tests give them faults or
/// another `mx_port`); `nullmx.test` has a null MX; `broken.test` answers SERVFAIL; `other.test` is not
/// in the zone (NXDOMAIN).
pub fn zone() -> Zone {
    let lo = Ipv4Addr::LOCALHOST;
    Zone::new("test")
        .ttl(60)
        .mx("fast.test", 10, "mx1.sink.test")
        .mx("fast.test", 20, "mx2.sink.test")
        .a("mx1.sink.test", lo)
        .a("mx2.sink.test", lo)
        .mx("slow.test", 10, "mx-slow.sink.test")
        .a("mx-slow.sink.test", lo)
        .a("implicit.test", lo)
        .mx("fallback.test", 10, "mx-dead.sink.test")
        .mx("fallback.test", 20, "mx1.sink.test")
        .a("mx-dead.sink.test", Ipv4Addr::new(127, 0, 0, 2))
        .mx("later.test", 10, "mx1.sink.test")
        .mx("postfix.test", 10, "mx1.sink.test")
        .null_mx("nullmx.test")
        .servfail("broken.test")
}

/// A runtime with the DNS stub serving `zone` and a verifying sink (3 s replies for
/// `slow.test`).
pub fn start_peers(zone: Zone) -> (Runtime, DnsHandle, SinkHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dns = rt
        .block_on(DnsStub::start("127.0.0.1:0".parse().unwrap(), vec![zone]))
        .unwrap();
    let mut domain_faults = HashMap::new();
    domain_faults.insert(
        "slow.test".to_string(),
        Faults {
            delay: Duration::from_secs(3),
            ..Faults::default()
        },
    );
    let sink = rt
        .block_on(Sink::start(SinkConfig {
            verify: true,
            keep_messages: true,
            domain_faults,
            ..SinkConfig::default()
        }))
        .unwrap();
    (rt, dns, sink)
}

/// The `[relay]` section for a server that resolves through `dns` and delivers to
/// `sink`: test defaults, a key in `relay_extra` replacing its default (`{sink}` in it
/// becomes the sink's address).
pub fn relay_section(dns: &DnsHandle, sink: &SinkHandle, relay_extra: &str) -> String {
    let dns_addr = dns.local_addr().to_string();
    let sink_port = sink.local_addr().port().to_string();
    let defaults = [
        ("nameservers", format!("[\"{dns_addr}\"]")),
        ("mx_port", sink_port),
        ("retry_first_secs", "1".into()),
        ("retry_max_secs", "2".into()),
        ("site_backoff_secs", "1".into()),
        ("command_timeout_secs", "10".into()),
        ("data_timeout_secs", "10".into()),
        ("poll_interval_ms", "50".into()),
        ("tls", "\"none\"".into()),
    ];
    let overridden = |key: &str| {
        relay_extra
            .lines()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut relay = String::from("[relay]\n");
    for (key, value) in defaults.iter().filter(|(k, _)| !overridden(k)) {
        relay.push_str(&format!("{key} = {value}\n"));
    }
    relay.push_str(&relay_extra.replace("{sink}", &sink.local_addr().to_string()));
    relay
}

impl RelayEnv {
    /// Starts DNS, sink and server; `relay_extra` goes into the `[relay]` section
    /// (`{sink}` in it becomes the sink's address), `extra` after it.
    pub fn start(relay_extra: &str, extra: &str) -> RelayEnv {
        let (rt, dns, sink) = start_peers(zone());
        let admin = free_port();
        let relay = relay_section(&dns, &sink, relay_extra);
        let config = format!("{relay}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{extra}");
        let server = Server::start(&config);
        RelayEnv {
            rt,
            sink,
            dns,
            server,
            admin,
        }
    }

    /// Runs `postroad ARGS --json` against this server and parses the output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let admin = format!("http://127.0.0.1:{}", self.admin);
        let data = self.server.data_dir();
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--json",
            "--admin",
            &admin,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        let (ok, out) = run(super::binary(), &all, None);
        assert!(ok, "postroad {args:?} failed:\n{out}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("postroad {args:?}: not JSON ({e}):\n{out}"))
    }

    /// `postroad history ARGS --json` on this server's data, parsed.
    pub fn history_json(&self, args: &[&str]) -> Value {
        let data = self.server.data_dir();
        let mut all = vec!["history"];
        all.extend_from_slice(args);
        all.extend(["--json", "--data-dir", data.to_str().unwrap()]);
        let (ok, out) = run(super::binary(), &all, None);
        assert!(ok, "postroad {all:?} failed:\n{out}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("postroad {all:?}: not JSON ({e}):\n{out}"))
    }

    /// The history of one message (`postroad history --message-id`), as JSON events.
    pub fn history(&self, id: &str) -> Vec<Value> {
        match self.history_json(&["--message-id", id]) {
            Value::Object(mut message) => match message.remove("events") {
                Some(Value::Array(events)) => events,
                other => panic!("history has no events array: {other:?}"),
            },
            other => panic!("history is not a JSON object: {other:?}"),
        }
    }

    /// Waits (at most `timeout`) until the message's history has an event of `kind`
    /// for `recipient`; returns the whole history then.
    pub fn wait_for_event(
        &self,
        id: &str,
        recipient: &str,
        kind: &str,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.history(id);
            if events
                .iter()
                .any(|e| e["kind"] == kind && e["recipient"] == recipient)
            {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} event for {recipient} of {id} within {timeout:?}; history: {events:#?}\nserver log:\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The admin endpoint's `/metrics` text (Prometheus format), fetched with curl.
    pub fn metrics(&self) -> String {
        let token = std::fs::read_to_string(self.server.data_dir().join("admin.token")).unwrap();
        let auth = format!("Authorization: Bearer {}", token.trim());
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        let (ok, text) = run("curl", &["-sS", "--fail", "-H", &auth, &url], None);
        assert!(ok, "GET /metrics: {text}");
        text
    }

    /// How many times the sink got (Message-ID, recipient).
    pub fn deliveries(&self, message_id: &str, recipient: &str) -> u32 {
        self.sink.deliveries(message_id, recipient)
    }
}
