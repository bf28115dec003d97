//! Real clients (swaks, Python's smtplib) against the relay listener, checked by what
//! they see: every message acknowledged with `250 2.0.0 Ok: queued as <id>`.

mod common;

use std::sync::OnceLock;

use common::{Client, Server, run, swaks};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(""))
}

fn smtplib(scenario: &str) -> String {
    let script = common::scripts_dir().join("smtplib_client.py");
    let port = server().relay.to_string();
    let (ok, out) = run(
        "python3",
        &[script.to_str().unwrap(), &port, scenario],
        None,
    );
    assert!(ok, "smtplib scenario {scenario} failed:\n{out}");
    out
}

#[test]
fn greeting_and_ehlo_advertise_the_extensions() {
    let mut c = Client::connect(server().relay);
    let greeting = c.reply();
    assert_eq!(greeting.code, 220);
    assert!(
        greeting.to_string().contains("mx.postroad.test ESMTP"),
        "{greeting:?}"
    );
    let ehlo = c.expect("EHLO client.test", 250).to_string();
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
        "DSN",
    ] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}:\n{ehlo}");
    }
    c.expect("VRFY root", 502);
    c.expect("NOOP", 250);
    c.expect("RSET", 250);
    c.expect("QUIT", 221);
    assert!(c.is_closed());
}

#[test]
fn swaks_plain_and_pipelined() {
    let port = server().relay.to_string();
    for extra in [&[][..], &["--pipeline"][..]] {
        let mut args = vec![
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "s@swaks.test",
            "--to",
            "r@swaks.test",
        ];
        args.extend_from_slice(extra);
        let (ok, out) = swaks(&port, &args);
        assert!(
            ok && out.contains("250 2.0.0 Ok: queued as"),
            "{extra:?}:\n{out}"
        );
    }
}

#[test]
fn swaks_starttls_without_auth_from_an_allowed_network() {
    let port = server().relay.to_string();
    let (ok, out) = swaks(
        &port,
        &["--tls", "--from", "s@swaks.test", "--to", "r@swaks.test"],
    );
    assert!(ok && out.contains("queued as"), "{out}");
}

#[test]
fn swaks_8bit_body() {
    let port = server().relay.to_string();
    let (ok, out) = swaks(
        &port,
        &[
            "--from",
            "s@swaks.test",
            "--to",
            "r@swaks.test",
            "--header",
            "Content-Type: text/plain; charset=utf-8",
            "--body",
            "Grüße, 8-bit body ✓",
        ],
    );
    assert!(ok && out.contains("queued as"), "{out}");
}

/// UTF-8 addresses need SMTPUTF8 on MAIL (RFC 6531); swaks does not send it.
#[test]
fn utf8_sender_without_smtputf8_is_refused() {
    let port = server().relay.to_string();
    let (ok, out) = swaks(
        &port,
        &["--from", "jörg@absender.test", "--to", "r@swaks.test"],
    );
    assert!(!ok && out.contains("553 5.6.7"), "{out}");
}

#[test]
fn smtplib_multi_recipient() {
    assert!(smtplib("multi_recipient").starts_with("queued "));
}

#[test]
fn smtplib_8bitmime() {
    assert!(smtplib("8bit").starts_with("queued "));
}

#[test]
fn smtplib_utf8_addresses() {
    assert!(smtplib("utf8_addresses").starts_with("queued "));
}

#[test]
fn smtplib_dsn_parameters() {
    assert!(smtplib("dsn").starts_with("queued "));
}

#[test]
fn bdat_chunks_pipelined() {
    assert!(smtplib("bdat").starts_with("queued "));
}

#[test]
fn protocol_order_errors_have_clear_replies() {
    let mut c = Client::greeted(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 503);
    c.expect("EHLO client.test", 250);
    c.expect("RCPT TO:<a@b.test>", 503);
    c.expect("DATA", 503);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("MAIL FROM:<a@b.test>", 503);
    c.expect("DATA", 554);
    c.expect("RCPT TO:<>", 501);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.expect("RSET", 250);
    c.expect("DATA", 503);
    c.expect("MAIL FROM:<a@b.test> HOLDFOR=10", 555);
}

#[test]
fn null_sender_is_accepted() {
    let mut c = Client::greeted(server().relay);
    let r = c.send_mail("", &["bounce-target@b.test"], "Subject: bounce\n\nbody\n");
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn empty_message_is_accepted_at_once() {
    let mut c = Client::greeted(server().relay);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b".\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
}
