//! Defects an adversarial run found, each checked the way the attacker saw it: numbers
//! that wrapped, clients that hold a session by trickling or by never reading, and the
//! memory held by messages being received.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Client, Server};

const TIMEOUT_SECS: u64 = 2;

/// Short deadlines, so each can be reached quickly.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(&format!(
            "[smtp]\nidle_timeout_secs = {TIMEOUT_SECS}\ndata_timeout_secs = {TIMEOUT_SECS}\n\
             data_deadline_secs = {TIMEOUT_SECS}\nwrite_timeout_secs = {TIMEOUT_SECS}\n\
             max_commands_without_mail = 100000\n"
        ))
    })
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

/// The exact reproduction from the report: a 21-digit chunk size read as 5 let
/// `hello` be the chunk and `NOOP` run as a command.
#[test]
fn bdat_size_past_64_bits_is_a_syntax_error_not_a_small_chunk() {
    let mut stream = TcpStream::connect(("127.0.0.1", server().relay)).unwrap();
    stream
        .write_all(
            b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n\
              BDAT 184467440737095516165 LAST\r\nhelloNOOP\r\nQUIT\r\n",
        )
        .unwrap();
    let replies = read_to_close(&mut stream);
    let codes: Vec<&str> = replies
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    // Greeting, EHLO, MAIL, RCPT, BDAT refused, `helloNOOP` unknown, QUIT.
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "501", "500", "221"],
        "{replies}"
    );
    assert!(!replies.contains("queued"), "{replies}");
}

#[test]
fn mail_size_past_64_bits_is_over_the_limit() {
    let mut c = Client::greeted(server().relay);
    c.expect("EHLO x", 250);
    for size in ["99999999999999999999999999", "18446744073709551616"] {
        let r = c.expect(&format!("MAIL FROM:<a@b.test> SIZE={size}"), 552);
        assert!(r.to_string().contains("5.3.4"), "{r:?}");
    }
    c.expect("MAIL FROM:<a@b.test> SIZE=1000", 250);
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection;
/// returns what it said and how long the session lasted. Gives up (and fails) after
/// five times the timeout, which is what the old per-read timeout allowed forever.
fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (String, Duration) {
    let started = Instant::now();
    let limit = Duration::from_secs(5 * TIMEOUT_SECS);
    let mut reader = stream.try_clone().unwrap();
    let replies = std::thread::spawn(move || read_to_close(&mut reader));
    for byte in bytes.iter().cycle() {
        if stream.write_all(&[*byte]).is_err() || started.elapsed() > limit {
            break;
        }
        std::thread::sleep(gap);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let lasted = started.elapsed();
    (replies.join().unwrap(), lasted)
}

fn assert_cut_off(what: &str, replies: &str, lasted: Duration) {
    assert!(
        replies.contains("421 4.4.2"),
        "{what}: no timeout reply:\n{replies}"
    );
    assert!(
        lasted < Duration::from_secs(4 * TIMEOUT_SECS),
        "{what}: the session lasted {lasted:?} with a {TIMEOUT_SECS} s deadline"
    );
}

#[test]
fn a_command_line_trickled_in_is_cut_off_at_its_deadline() {
    let mut stream = TcpStream::connect(("127.0.0.1", server().relay)).unwrap();
    let (replies, lasted) = trickle(&mut stream, b"NOOP NOOP NOOP ", Duration::from_millis(200));
    assert_cut_off("command", &replies, lasted);
}

#[test]
fn data_trickled_in_is_cut_off_at_its_deadline() {
    let mut stream = TcpStream::connect(("127.0.0.1", server().relay)).unwrap();
    stream
        .write_all(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        .unwrap();
    let (replies, lasted) = trickle(&mut stream, b"Subject: x\r\n", Duration::from_millis(200));
    assert!(replies.contains("354"), "{replies}");
    assert_cut_off("DATA", &replies, lasted);
}

#[test]
fn bdat_chunks_trickled_in_are_cut_off_at_the_message_deadline() {
    let mut stream = TcpStream::connect(("127.0.0.1", server().relay)).unwrap();
    stream
        .write_all(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 100000 LAST\r\n")
        .unwrap();
    let (replies, lasted) = trickle(&mut stream, b"x", Duration::from_millis(200));
    assert_cut_off("BDAT", &replies, lasted);
}

/// A client that pipelines commands and never reads a reply: once the socket buffers
/// are full the server's write cannot finish, and the write timeout ends the session.
#[test]
fn a_client_that_never_reads_is_disconnected() {
    let mut stream = TcpStream::connect(("127.0.0.1", server().relay)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream.write_all(b"EHLO x\r\n").unwrap();
    let batch = b"MAIL FROM:<a@b.test>\r\nRSET\r\n".repeat(2000);
    let started = Instant::now();
    let limit = Duration::from_secs(30);
    let closed = loop {
        match stream.write(&batch) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if started.elapsed() > limit {
            break false;
        }
    };
    assert!(
        closed,
        "still connected after {limit:?} with a {TIMEOUT_SECS} s write timeout"
    );
}

/// Postfix's stress mode: when most connection slots are taken, idle sessions are
/// cut to the stress timeout instead of the (here one minute) idle timeout, until
/// enough have gone for the stress to be over.
#[test]
fn under_connection_stress_idle_sessions_make_room() {
    let server = Server::start(
        "[smtp]\nmax_connections = 10\nstress_threshold_percent = 50\nstress_timeout_secs = 1\n\
         idle_timeout_secs = 60\n",
    );
    let mut idle: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.relay)).unwrap();
            let mut greeting = [0u8; 64];
            let n = s.read(&mut greeting).unwrap();
            assert!(greeting[..n].starts_with(b"220"));
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut cut = Vec::new();
    while cut.is_empty() && started.elapsed() < Duration::from_secs(30) {
        for s in &mut idle {
            let mut reply = [0u8; 128];
            if let Ok(n) = s.read(&mut reply)
                && n > 0
            {
                cut.push((
                    String::from_utf8_lossy(&reply[..n]).into_owned(),
                    started.elapsed(),
                ));
            }
        }
    }
    assert!(!cut.is_empty(), "no idle session was cut under stress");
    for (reply, after) in &cut {
        assert!(reply.starts_with("421 4.4.2"), "{reply}");
        assert!(
            *after < Duration::from_secs(10),
            "cut after {after:?}, with a 1 s stress timeout and a 60 s idle timeout"
        );
    }
    assert!(server.log().contains("under connection stress"));
    // Once enough are gone the stress is over.
    server.wait_for_log("connection stress over");
}

/// `smtp.max_inflight_bytes`: while one message holds nearly the whole budget, a
/// second DATA waits for room and, finding none in time, gets `452 4.3.1`; once the
/// first is queued, the second goes through (growing its share as it arrives).
#[test]
fn messages_in_flight_stay_within_the_memory_budget() {
    let max = 1024 * 1024;
    let server = Server::start(&format!(
        "[smtp]\nmax_message_size = {max}\nmax_inflight_bytes = {}\ndata_timeout_secs = 2\n",
        max + 64 * 1024
    ));
    // A BDAT chunk is answered once it has been read, so when this reply comes the
    // server holds the chunk: all of the budget but 64 KiB.
    let mut big = Client::greeted(server.relay);
    big.expect("EHLO big.test", 250);
    big.expect("MAIL FROM:<a@b.test>", 250);
    big.expect("RCPT TO:<r@b.test>", 250);
    let chunk = max - 1000;
    big.send_raw(format!("BDAT {chunk}\r\n").as_bytes());
    big.send_raw(&vec![b'x'; chunk]);
    assert_eq!(big.reply().code, 250);

    // The second declares its size, so its first share is all of it: more than is left.
    let mut other = Client::greeted(server.relay);
    other.expect("EHLO other.test", 250);
    other.expect("MAIL FROM:<a@b.test> SIZE=720000", 250);
    other.expect("RCPT TO:<r@b.test>", 250);
    let r = other.cmd("DATA");
    assert_eq!(r.code, 452, "{r:?}");
    assert!(r.to_string().contains("4.3.1"), "{r:?}");
    assert!(server.log().contains("max_inflight_bytes is used up"));
    // The transaction is still open: the client may try again.
    let r = big.cmd("BDAT 0 LAST");
    assert!(r.to_string().contains("queued as"), "{r:?}");
    other.expect("DATA", 354);
    let line = format!("{}\r\n", "y".repeat(1022));
    for _ in 0..700 {
        other.send_raw(line.as_bytes());
    }
    other.send_raw(b".\r\n");
    let r = other.reply();
    assert!(r.to_string().contains("queued as"), "{r:?}");
}
