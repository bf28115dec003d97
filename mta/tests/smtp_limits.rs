//! Every limit answers with its documented reply, and no input can crash the server or
//! leave a session behind.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// Small limits so each can be reached quickly.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(
            "[smtp]\nmax_message_size = 2000\nmax_recipients = 3\nmax_line_length = 600\nmax_errors = 5\n\
             max_commands_without_mail = 8\nidle_timeout_secs = 2\ndata_timeout_secs = 2\n",
        )
    })
}

fn started(port: u16) -> Client {
    let mut c = Client::greeted(port);
    c.expect("EHLO limits.test", 250);
    c
}

#[test]
fn over_long_command_line_is_refused_and_the_session_goes_on() {
    let mut c = started(server().relay);
    let r = c.cmd(&format!("NOOP {}", "A".repeat(5000)));
    assert_eq!(
        (r.code, r.to_string().contains("5.5.2")),
        (500, true),
        "{r:?}"
    );
    c.expect("NOOP", 250);
}

#[test]
fn declared_size_over_the_limit_is_refused_at_mail() {
    let mut c = started(server().relay);
    let r = c.expect("MAIL FROM:<a@b.test> SIZE=2001", 552);
    assert!(r.to_string().contains("5.3.4"), "{r:?}");
    c.expect("MAIL FROM:<a@b.test> SIZE=2000", 250);
}

#[test]
fn data_over_the_limit_is_refused_after_the_final_dot() {
    let mut c = started(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.expect("DATA", 354);
    for _ in 0..100 {
        c.send_raw(b"0123456789012345678901234567890123456789\r\n");
    }
    c.send_raw(b".\r\n");
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("5.3.4")),
        (552, true),
        "{r:?}"
    );
    // The transaction is over; the session is not.
    c.expect("RCPT TO:<r@b.test>", 503);
    c.expect("MAIL FROM:<a@b.test>", 250);
}

#[test]
fn bdat_over_the_limit_is_refused_and_its_bytes_consumed() {
    let mut c = started(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.send_raw(b"BDAT 3000 LAST\r\n");
    c.send_raw(&vec![b'x'; 3000]);
    let r = c.reply();
    assert_eq!(r.code, 552, "{r:?}");
    c.expect("NOOP", 250);
}

#[test]
fn recipients_over_the_limit_get_452_and_the_rest_is_delivered() {
    let mut c = started(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 250);
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<r{i}@b.test>"), 250);
    }
    let r = c.expect("RCPT TO:<r3@b.test>", 452);
    assert!(r.to_string().contains("4.5.3"), "{r:?}");
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
}

#[test]
fn too_many_commands_without_mail_disconnects() {
    let mut c = started(server().relay); // EHLO is command 1
    for _ in 0..7 {
        c.expect("NOOP", 250);
    }
    let r = c.cmd("NOOP");
    assert_eq!(
        (r.code, r.to_string().contains("4.7.0")),
        (421, true),
        "{r:?}"
    );
    assert!(c.is_closed());
}

#[test]
fn too_many_errors_disconnects() {
    let mut c = started(server().relay);
    for _ in 0..4 {
        c.expect("BOGUS", 500);
    }
    let r = c.cmd("BOGUS");
    assert_eq!(r.code, 500);
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("too many errors")),
        (421, true),
        "{r:?}"
    );
    assert!(c.is_closed());
}

#[test]
fn idle_client_is_timed_out() {
    let mut c = started(server().relay);
    let started = Instant::now();
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("4.4.2")),
        (421, true),
        "{r:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(c.is_closed());
}

#[test]
fn stalled_data_is_timed_out() {
    let mut c = started(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: stalled\r\n\r\nhalf a messa");
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("4.4.2")),
        (421, true),
        "{r:?}"
    );
    assert!(c.is_closed());
}

#[test]
fn garbage_nul_bytes_and_invalid_utf8_get_errors_not_crashes() {
    let mut c = started(server().relay);
    for junk in [
        &b"\0\0\0\0\r\n"[..],
        b"\xff\xfe\xfd\xfc\r\n",
        b"MAIL FROM:<\xc3\x28@b.test>\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\r\n",
    ] {
        c.send_raw(junk);
        let r = c.reply();
        assert!(r.code >= 500 && r.code < 600, "{junk:?}: {r:?}");
    }
    // Still serving, this session and new ones.
    c.expect("NOOP", 250);
    Client::greeted(server().relay).expect("NOOP", 250);
}

#[test]
fn smuggling_bare_lf_dot_does_not_end_data() {
    let mut c = started(server().relay);
    c.expect("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<r@b.test>", 250);
    c.expect("DATA", 354);
    // "\n.\n" is not the end of data; the embedded commands are message text.
    c.send_raw(
        b"Subject: s\r\n\r\nx\n.\nMAIL FROM:<evil@b.test>\r\nRCPT TO:<v@b.test>\r\nDATA\r\n.\r\n",
    );
    let r = c.reply();
    assert_eq!(r.code, 250, "one message, not two: {r:?}");
    c.expect("NOOP", 250);
}

/// Its own server: one client IP may hold two connections.
#[test]
fn per_ip_limit_and_half_closed_sockets_release_their_slots() {
    let server = Server::start("[smtp]\nmax_connections_per_ip = 2\n");
    let mut a = Client::greeted(server.relay);
    let mut b = Client::greeted(server.relay);
    let mut third = Client::connect(server.relay);
    let r = third.reply();
    assert_eq!(
        (r.code, r.to_string().contains("4.7.0")),
        (421, true),
        "{r:?}"
    );
    assert!(third.is_closed());
    // Half-close both without QUIT: the server must end those sessions by itself.
    a.half_close();
    b.half_close();
    assert!(a.is_closed() && b.is_closed());
    // Once the server has closed them, their places are free again.
    Client::greeted(server.relay).expect("NOOP", 250);
    Client::greeted(server.relay).expect("NOOP", 250);
}

/// Its own server: two connections in total.
#[test]
fn total_connection_limit() {
    let server = Server::start("[smtp]\nmax_connections = 2\n");
    let _a = Client::greeted(server.relay);
    let _b = Client::greeted(server.submission);
    let mut c = Client::connect(server.relay);
    let r = c.reply();
    assert_eq!(
        (r.code, r.to_string().contains("too many connections")),
        (421, true),
        "{r:?}"
    );
}
