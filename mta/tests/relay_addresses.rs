//! Addresses are relayed as the client wrote them: a quoted local part keeps its quotes
//! on the next hop's RCPT line, and the domain is the one after the quoted part.
//! Postfix's `smtp-sink` is the next hop; it records each RCPT argument verbatim.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::relay_env::RelayEnv;
use common::{Client, free_port};

/// `smtp-sink` dumping every transaction into `dir`, killed on drop.
struct SmtpSink(Child);

impl SmtpSink {
    fn start(port: u16, dir: &Path) -> SmtpSink {
        let template = format!("{}/%Y%m%d%H%M%S.", dir.display());
        let child = Command::new("smtp-sink")
            .args([
                "-u",
                "nobody",
                "-d",
                &template,
                &format!("127.0.0.1:{port}"),
                "10",
            ])
            .spawn()
            .expect("run smtp-sink (postfix, installed by .ci/run)");
        // Ready once it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpSink(child)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `X-Rcpt-Args:` lines of every transaction smtp-sink has dumped so far.
fn recorded_recipients(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        all.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
                .map(str::to_string),
        );
    }
    all.sort();
    all
}

#[test]
fn quoted_local_parts_reach_the_next_hop_quoted_and_routed_by_their_domain() {
    // smtp-sink drops to `nobody`, which must be able to write here.
    let dump = tempfile::Builder::new()
        .prefix("postroad-smtp-sink")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let _sink = SmtpSink::start(port, dump.path());
    let env = RelayEnv::start(
        &format!(
            "[relay.routes.\"other.test\"]\nhost = \"127.0.0.1:{port}\"\n\
             [relay.routes.\"localhost\"]\nhost = \"127.0.0.1:{port}\"\n"
        ),
        "",
    );
    let mut c = Client::greeted(env.server.relay);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<\"the sender\"@sender.test>", 250);
    // With the quotes lost, the first is `a b@other.test` (a next hop refuses it) and
    // the second `user@other.test@localhost` (a source route through localhost).
    c.expect("RCPT TO:<\"a b\"@other.test>", 250);
    c.expect("RCPT TO:<\"user@other.test\"@localhost>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: quoted\r\n\r\nhello\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");

    let expected = [
        "<\"a b\"@other.test>".to_string(),
        "<\"user@other.test\"@localhost>".to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = recorded_recipients(dump.path());
    while seen != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = recorded_recipients(dump.path());
    }
    assert_eq!(seen, expected, "server log:\n{}", env.server.log());
    // The sender keeps its quotes too.
    let mails: Vec<String> = std::fs::read_dir(dump.path())
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.strip_prefix("X-Mail-Args: ").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !mails.is_empty()
            && mails
                .iter()
                .all(|m| m.starts_with("<\"the sender\"@sender.test>")),
        "{mails:?}"
    );
}
