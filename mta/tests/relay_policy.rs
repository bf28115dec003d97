//! No open relay: who may send through which listener, with real clients (swaks,
//! smtplib) and a line-level client for the exact replies.

mod common;

use std::sync::OnceLock;

use common::{Client, PASSWORD, Server, USER, run, swaks};

/// Loopback is NOT in relay_networks here, so 127.0.0.1 is an outside client.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start("[smtp]\nrelay_networks = [\"192.0.2.0/24\"]\n"))
}

#[test]
fn unauthenticated_outside_client_is_denied_for_every_recipient() {
    let mut c = Client::greeted(server().relay);
    c.expect("EHLO outside.test", 250);
    c.expect("MAIL FROM:<spammer@outside.test>", 250);
    for rcpt in [
        "victim@elsewhere.test",
        "postmaster@mx.postroad.test",
        "root@localhost",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(r.code, 554, "{rcpt}: {r:?}");
        assert!(
            r.to_string().contains("5.7.1") && r.to_string().contains("Relay access denied"),
            "{r:?}"
        );
    }
    let r = c.expect("DATA", 554);
    assert!(r.to_string().contains("no valid recipients"), "{r:?}");
}

#[test]
fn swaks_without_auth_is_refused_by_the_relay_listener() {
    let port = server().relay.to_string();
    let (ok, out) = swaks(
        &port,
        &["--from", "a@outside.test", "--to", "b@elsewhere.test"],
    );
    assert!(!ok, "relay must refuse:\n{out}");
    assert!(out.contains("554 5.7.1"), "{out}");
}

#[test]
fn swaks_starttls_auth_plain_may_relay() {
    let port = server().relay.to_string();
    let (ok, out) = swaks(
        &port,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--from",
            "app@inside.test",
            "--to",
            "b@elsewhere.test",
        ],
    );
    assert!(
        ok && out.contains("235 2.7.0") && out.contains("queued as"),
        "{out}"
    );
}

#[test]
fn swaks_auth_login_on_submission_with_pipelining() {
    let port = server().submission.to_string();
    let (ok, out) = swaks(
        &port,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--pipeline",
            "--from",
            "app@inside.test",
            "--to",
            "c@elsewhere.test",
        ],
    );
    assert!(ok && out.contains("queued as"), "{out}");
}

#[test]
fn swaks_implicit_tls_on_the_submissions_listener() {
    let port = server().submissions.to_string();
    let (ok, out) = swaks(
        &port,
        &[
            "--tlsc",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--from",
            "app@inside.test",
            "--to",
            "d@elsewhere.test",
        ],
    );
    assert!(ok && out.contains("queued as"), "{out}");
}

#[test]
fn wrong_password_is_refused() {
    let port = server().submission.to_string();
    let (ok, out) = swaks(
        &port,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            "not-the-password",
            "--from",
            "app@inside.test",
            "--to",
            "c@elsewhere.test",
        ],
    );
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
}

#[test]
fn smtplib_starttls_login_on_submission() {
    let script = common::scripts_dir().join("smtplib_client.py");
    let port = server().submission.to_string();
    let (ok, out) = run(
        "python3",
        &[script.to_str().unwrap(), &port, "starttls_auth"],
        None,
    );
    assert!(ok && out.starts_with("queued "), "{out}");
}

#[test]
fn submission_requires_auth_before_mail() {
    let mut c = Client::greeted(server().submission);
    c.expect("EHLO app.test", 250);
    let r = c.expect("MAIL FROM:<app@inside.test>", 530);
    assert!(r.to_string().contains("5.7.0"), "{r:?}");
}

#[test]
fn auth_is_neither_offered_nor_accepted_without_tls() {
    let mut c = Client::greeted(server().submission);
    let r = c.expect("EHLO app.test", 250);
    assert!(!r.to_string().contains("AUTH"), "{r:?}");
    assert!(r.to_string().contains("STARTTLS"), "{r:?}");
    let r = c.expect("AUTH PLAIN AGFwcABzM2NyZXQtcHc=", 538);
    assert!(r.to_string().contains("5.7.11"), "{r:?}");
}
