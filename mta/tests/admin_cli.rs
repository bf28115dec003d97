//! `postroad queue ...` and `postroad dlq ...` (the real binary) against a running
//! `postroad serve` and its admin endpoint.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, free_port, queued_id};
use postroad_queue::{MessageId, Queue, Resolution};

/// A server whose admin endpoint is on its own port, and which only queues (no relay),
/// so the queue holds exactly what the test put there.
struct Admin {
    server: Server,
    port: u16,
}

impl Admin {
    fn start() -> Admin {
        let port = free_port();
        let server = Server::start(&format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[relay]\nenabled = false\n"
        ));
        let admin = Admin { server, port };
        admin.wait_ready();
        admin
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the admin endpoint did not start on port {}:\n{}",
                self.port,
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postroad <args> --admin URL --data-dir DIR`.
    fn cli(&self, args: &[&str]) -> Output {
        let data_dir = self.server.data_dir();
        let mut all: Vec<&str> = args.to_vec();
        let url = self.url();
        all.extend(["--admin", &url, "--data-dir", data_dir.to_str().unwrap()]);
        postroad(&all, &[])
    }

    /// Like [`Admin::cli`], and it must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.success,
            "postroad {args:?} failed: {}\nserver log:\n{}",
            out.stderr,
            self.server.log()
        );
        out.stdout_text()
    }

    /// Like [`Admin::cli`], and it must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.success,
            "postroad {args:?} should fail: {}",
            out.stdout_text()
        );
        out.stderr
    }

    fn send(&self, to: &[&str], subject: &str) -> MessageId {
        let mut c = Client::greeted(self.server.relay);
        let body = format!("Subject: {subject}\n\nhello from {subject}\n");
        let reply = c.send_mail("sender@example.test", to, &body);
        c.expect("QUIT", 221);
        queued_id(&reply)
    }
}

struct Output {
    success: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
}

/// Runs the binary with no POSTROAD_* variables but `env`.
fn postroad(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("POSTROAD_ADMIN_URL")
        .env_remove("POSTROAD_ADMIN_TOKEN")
        .env_remove("POSTROAD_DATA_DIR")
        // The one-line error messages are checked: no backtrace after them.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run postroad");
    Output {
        success: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn operator_controls_the_queue_and_dead_letters() {
    let mut admin = Admin::start();
    let data_dir = admin.server.data_dir();

    // the token was generated, private
    let token_file = data_dir.join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("admin.token generated");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let first = admin.send(&["a@one.test", "b@two.test"], "first");
    let second = admin.send(&["c@three.test"], "second");
    let third = admin.send(&["d@four.test"], "third");

    // stats, text and JSON
    let text = admin.ok(&["queue", "stats"]);
    assert!(text.lines().next().unwrap().starts_with("queued"), "{text}");
    assert!(text.contains("3"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["queue", "stats", "--json"])).expect("--json prints JSON");
    assert_eq!(json["queued"], 3);
    assert_eq!(json["dead_letters"], 0);

    // list: a header and one row per message, oldest first
    let text = admin.ok(&["queue", "list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID "), "{text}");
    assert!(lines[0].contains("RECEIVED (UTC)"), "{text}");
    assert!(lines[1].starts_with(&first.to_string()), "{text}");
    assert!(lines[1].contains("<sender@example.test>"), "{text}");
    assert!(lines[1].contains("a@one.test"), "{text}");
    assert!(lines[2].starts_with(&second.to_string()), "{text}");
    assert!(lines[3].starts_with(&third.to_string()), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    let limited = admin.cli(&["queue", "list", "--limit", "1"]);
    assert!(limited.success, "{}", limited.stderr);
    assert_eq!(limited.stdout_text().lines().count(), 2);
    assert!(limited.stderr.contains("--limit"), "{}", limited.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["queue", "list", "--json"])).unwrap();
    assert_eq!(json["messages"].as_array().unwrap().len(), 3);
    assert_eq!(json["messages"][0]["id"], first.to_string());

    // inspect: the envelope and body; --raw the exact bytes
    let text = admin.ok(&["queue", "inspect", &first.to_string()]);
    assert!(text.contains("b@two.test"), "{text}");
    assert!(text.contains("hello from first"), "{text}");
    let raw = admin.cli(&["queue", "inspect", &first.to_string(), "--raw"]);
    assert!(raw.success, "{}", raw.stderr);
    assert!(raw.stdout.starts_with(b"Received: from client.test"));
    assert!(raw.stdout.ends_with(b"hello from first\r\n"));

    // errors, one line each
    let unknown = MessageId::new().to_string();
    let e = admin.fails(&["queue", "inspect", &unknown]);
    assert!(e.contains("404"), "{e}");
    let e = admin.fails(&["queue", "inspect", "not-an-id"]);
    assert!(e.contains("400") && e.contains("32 hex digits"), "{e}");
    let e = admin.fails(&["queue", "stats", "--token", "not-the-right-token-at-all"]);
    assert!(e.contains("401: wrong token"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // the URL and token from the environment
    let url = admin.url();
    let env = postroad(
        &["queue", "stats", "--data-dir", "/nonexistent"],
        &[
            ("POSTROAD_ADMIN_URL", url.as_str()),
            ("POSTROAD_ADMIN_TOKEN", token.as_str()),
        ],
    );
    assert!(env.success, "{}", env.stderr);

    // flush: nothing is deferred
    assert!(admin.ok(&["queue", "flush"]).contains("flushed: 0"));

    // dead-letter two messages behind the server's back, then restart it
    admin.server.stop();
    let e = admin.fails(&["queue", "stats"]);
    assert!(
        e.contains(&format!("cannot reach the admin endpoint at {url}"))
            && e.contains("is postroad serve running?"),
        "{e}"
    );
    {
        let spool = admin.server.open_spool();
        block_on(async {
            for c in spool.claim(10).await.unwrap() {
                let e = &c.envelope;
                if e.id == second || e.id == third {
                    let resolution = Resolution {
                        dead: Some((
                            e.recipients.clone(),
                            "550 5.1.1 <user>: Recipient address rejected".into(),
                        )),
                        ..Resolution::default()
                    };
                    spool.resolve(e.id, resolution).await.unwrap();
                }
            }
            spool.shutdown().await.unwrap();
        });
    }
    admin.server.restart();
    admin.wait_ready();

    let text = admin.ok(&["dlq", "list"]);
    assert!(text.contains("DEAD SINCE (UTC)"), "{text}");
    assert!(text.contains(&second.to_string()), "{text}");
    assert!(text.contains(&third.to_string()), "{text}");
    assert!(text.contains("550 5.1.1"), "{text}");
    let text = admin.ok(&["dlq", "inspect", &second.to_string()]);
    assert!(text.contains("Recipient address rejected"), "{text}");
    assert!(text.contains("hello from second"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["dlq", "list", "--json"])).unwrap();
    assert_eq!(json["dead_letters"].as_array().unwrap().len(), 2);

    // requeue one: back in the queue under the id printed
    let text = admin.ok(&["dlq", "requeue", &second.to_string()]);
    let new_id = text.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        text.starts_with(&format!("requeued {second} as ")),
        "{text}"
    );
    assert!(admin.ok(&["queue", "list"]).contains(&new_id));
    let e = admin.fails(&["dlq", "requeue", &second.to_string()]);
    assert!(e.contains("404"), "{e}");

    // purge the other
    assert!(
        admin
            .ok(&["dlq", "purge", &third.to_string()])
            .contains("purged")
    );
    assert!(admin.ok(&["dlq", "list"]).contains("no dead letters"));
    let json: serde_json::Value =
        serde_json::from_str(&admin.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!(json["dead_letters"], 0);
    assert_eq!(json["queued"], 2);

    admin.server.stop();
    assert!(
        admin.server.log().contains("admin endpoint listening"),
        "{}",
        admin.server.log()
    );
}

#[test]
fn no_token_no_access() {
    let dir = tempfile::tempdir().unwrap();
    let out = postroad(
        &[
            "dlq",
            "list",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin",
            "http://127.0.0.1:1",
        ],
        &[],
    );
    assert!(!out.success);
    assert!(out.stderr.contains("admin.token"), "{}", out.stderr);
    assert!(out.stderr.contains("--token"), "{}", out.stderr);
}
