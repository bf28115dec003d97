//! A real MTA as the MX: Postroad resolves `postfix.test` through the DNS stub and
//! delivers to a private Postfix instance (scripts/postfix/instance), which accepts the
//! mail into its maildir.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::relay_env::RelayEnv;
use common::{Client, free_port, queued_id};

const MESSAGES: usize = 20;

fn instance_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postfix/instance")
}

/// A Postfix MX for `postfix.test`, stopped (and its files removed) on drop.
struct Postfix {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Postfix {
    fn start(port: u16) -> Postfix {
        // Every parent of the instance directory must be enterable by the postfix user.
        let parent = tempfile::Builder::new()
            .prefix("postroad-postfix")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join("mx");
        let out = Command::new(instance_script())
            .args([
                "start",
                dir.to_str().unwrap(),
                "--mode",
                "mx",
                "--port",
                &port.to_string(),
                "--domain",
                "postfix.test",
            ])
            .output()
            .expect("run scripts/postfix/instance");
        assert!(
            out.status.success(),
            "postfix did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Postfix {
            dir,
            _parent: parent,
        }
    }

    fn count(&self) -> usize {
        let out = Command::new(instance_script())
            .args(["count", self.dir.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(instance_script())
            .args(["stop", self.dir.to_str().unwrap(), "--purge"])
            .output();
    }
}

#[test]
fn postfix_as_the_mx_accepts_every_message() {
    let port = free_port();
    let postfix = Postfix::start(port);
    let env = RelayEnv::start(&format!("mx_port = {port}\ntls = \"opportunistic\"\n"), "");

    let mut ids = Vec::new();
    let mut c = Client::greeted(env.server.relay);
    c.expect("EHLO postfix-test.test", 250);
    for n in 0..MESSAGES {
        c.expect("MAIL FROM:<sender@src.test>", 250);
        c.expect(&format!("RCPT TO:<user{n}@postfix.test>"), 250);
        c.expect("DATA", 354);
        c.send_raw(format!("Message-ID: <pf-{n}@relay.test>\r\nSubject: to postfix {n}\r\n\r\nhello postfix\r\n.\r\n").as_bytes());
        ids.push(queued_id(&c.reply()).to_string());
    }
    for (n, id) in ids.iter().enumerate() {
        let events = env.wait_for_event(
            id,
            &format!("user{n}@postfix.test"),
            "delivered",
            Duration::from_secs(60),
        );
        let delivered = events.iter().find(|e| e["kind"] == "delivered").unwrap();
        // Postfix's own words: it queued the message under its id.
        assert!(
            delivered["reply"]["text"]
                .as_str()
                .unwrap()
                .contains("queued as"),
            "{delivered}"
        );
    }
    // And Postfix has really delivered them into its maildir.
    let deadline = Instant::now() + Duration::from_secs(60);
    while postfix.count() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "postfix delivered {} of {MESSAGES}",
            postfix.count()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(postfix.count(), MESSAGES);
}
