//! Hundreds of sessions of deterministic pseudo-random junk against one server: valid
//! commands mixed with random bytes, NULs, invalid UTF-8, huge lines, truncated DATA,
//! BDAT with wrong sizes, smuggling patterns and abrupt closes, cut into random TCP
//! writes. Every reply line must be well-formed SMTP, the server must never panic, and
//! it must still accept mail afterwards.
//!
//! A failure names the session and its seed; `FUZZ_SESSIONS_SEED=<n>` changes the base
//! seed (the default is fixed, so CI runs the same sessions every time).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, Server};

const SESSIONS: usize = 300;
const WORKERS: usize = 6;

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Scramble so that neighbouring seeds give unrelated streams; never zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`%.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Up to `max` random bytes.
    fn junk(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }

    /// Random case, as clients may send commands in any case.
    fn case(&mut self, word: &str) -> String {
        word.chars()
            .map(|c| {
                if self.chance(30) {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
            .collect()
    }
}

fn address(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => b"user\x00@example.test".to_vec(),
        2 => b"\xc3\x28bad-utf8@example.test".to_vec(),
        3 => "üñí@exämple.test".as_bytes().to_vec(),
        4 => b"\"quoted local\"@[192.0.2.1]".to_vec(),
        5 => b"@relay.test:route@example.test".to_vec(),
        6 => {
            let mut a = rng.junk(40);
            a.extend_from_slice(b"@x.test");
            a
        }
        7 => b"a@b".repeat(rng.below(200)),
        _ => format!("user{}@example.test", rng.below(1000)).into_bytes(),
    }
}

fn mail_params(rng: &mut Rng) -> String {
    let mut p = String::new();
    for _ in 0..rng.below(4) {
        p.push(' ');
        p.push_str(rng.pick(&[
            "SIZE=100",
            "SIZE=99999999999999999999999",
            "BODY=8BITMIME",
            "BODY=BINARYMIME",
            "SMTPUTF8",
            "RET=HDRS",
            "RET=FULL",
            "ENVID=abc+2Bdef",
            "ENVID=x+0D+0AQUIT",
            "ENVID=+00",
            "AUTH=<>",
            "MT-PRIORITY=3",
            "HOLDFOR=10",
            "BY=100;R",
            "FOO=BAR",
            "=",
            "SIZE=",
        ]));
    }
    p
}

fn rcpt_params(rng: &mut Rng) -> String {
    let mut p = String::new();
    for _ in 0..rng.below(3) {
        p.push(' ');
        p.push_str(rng.pick(&[
            "NOTIFY=SUCCESS,FAILURE",
            "NOTIFY=NEVER",
            "NOTIFY=BOGUS",
            "ORCPT=rfc822;r@b.test",
            "ORCPT=rfc822;r+0D+0AMAIL@b.test",
            "ORCPT=rfc822;+00",
            "ORCPT=x",
            "RRVS=2030-01-01T00:00:00Z",
        ]));
    }
    p
}

/// A body for DATA: random lines, dot lines, bare CR/LF, smuggling attempts.
fn body(rng: &mut Rng) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..rng.below(12) {
        match rng.below(10) {
            0 => b.extend_from_slice(b"..stuffed\r\n"),
            1 => b.extend_from_slice(b"\n.\r\nMAIL FROM:<smuggled@x.test>\r\n"),
            2 => b.extend_from_slice(b"\r.\r\nRCPT TO:<smuggled@x.test>\r\n"),
            3 => b.extend_from_slice(b"a\nb\rc\r\n"),
            4 => {
                let junk = rng.junk(300);
                b.extend_from_slice(&junk);
                b.extend_from_slice(b"\r\n");
            }
            5 => b.extend_from_slice(&b"x".repeat(rng.below(20_000))),
            6 => b.extend_from_slice(b"\x00\x00\xff\xfe\r\n"),
            _ => b.extend_from_slice(b"Subject: hello\r\n"),
        }
    }
    b
}

/// A transaction that the server accepts, ready for DATA or BDAT.
const SETUP: &[u8] = b"RSET\r\nEHLO ok.test\r\nMAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\n";

/// One piece of a session; returns the bytes and a short name for failure messages.
/// Body pieces start a valid transaction first half the time, so that they reach the
/// body code rather than only its refusals.
fn piece(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let (name, bytes) = raw_piece(rng);
    if (name.starts_with("bdat") || name.ends_with("data")) && rng.chance(50) {
        return (name, [SETUP, &bytes].concat());
    }
    (name, bytes)
}

fn raw_piece(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    let crlf = |mut v: Vec<u8>| {
        v.extend_from_slice(b"\r\n");
        v
    };
    match rng.below(24) {
        0 | 1 => {
            let verb = if rng.chance(80) { "EHLO" } else { "HELO" };
            let verb = rng.case(verb);
            let host = match rng.below(4) {
                0 => Vec::new(),
                1 => rng.junk(60),
                _ => b"client.example.test".to_vec(),
            };
            let mut v = format!("{verb} ").into_bytes();
            v.extend_from_slice(&host);
            ("hello", crlf(v))
        }
        2..=4 => {
            let mut v = format!("{}:<", rng.case("MAIL FROM")).into_bytes();
            v.extend_from_slice(&address(rng));
            v.push(b'>');
            v.extend_from_slice(mail_params(rng).as_bytes());
            ("mail", crlf(v))
        }
        5..=7 => {
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(3) {
                v.extend_from_slice(format!("{}:<", rng.case("RCPT TO")).as_bytes());
                v.extend_from_slice(&address(rng));
                v.push(b'>');
                v.extend_from_slice(rcpt_params(rng).as_bytes());
                v.extend_from_slice(b"\r\n");
            }
            ("rcpt", v)
        }
        8 | 9 => {
            let mut v = format!("{}\r\n", rng.case("DATA")).into_bytes();
            v.extend_from_slice(&body(rng));
            v.extend_from_slice(b".\r\n");
            ("data", v)
        }
        10 => {
            // No terminator: whatever follows is body, until the client closes.
            let mut v = b"DATA\r\n".to_vec();
            v.extend_from_slice(&body(rng));
            ("truncated data", v)
        }
        11 | 12 => {
            let size = rng.below(3000);
            let last = if rng.chance(50) { " LAST" } else { "" };
            let mut v = format!("{} {size}{last}\r\n", rng.case("BDAT")).into_bytes();
            v.extend_from_slice(&rng.bytes(size));
            ("bdat", v)
        }
        13 => {
            // The size says one thing, the bytes another.
            let size = rng.below(500);
            let sent = rng.below(1000);
            let mut v = format!("BDAT {size}{}\r\n", [" LAST", ""][rng.below(2)]).into_bytes();
            v.extend_from_slice(&rng.bytes(sent));
            ("bdat wrong size", v)
        }
        14 => {
            let size = rng.pick(&[
                "18446744073709551615",
                "18446744073709551614",
                "9223372036854775808",
                "9223372036854775807",
                "99999999999999999999999999",
                "-1",
                "0x10",
                "",
            ]);
            // After a first chunk, the session adds the size to what it has.
            let first = ["", "BDAT 5\r\nhello"][rng.below(2)];
            (
                "bdat absurd size",
                format!("{first}BDAT {size} LAST\r\nabc").into_bytes(),
            )
        }
        15 => ("random bytes", rng.junk(400)),
        16 => {
            let mut v = rng.junk(100);
            for b in v.iter_mut() {
                if rng.chance(50) {
                    *b = 0;
                }
            }
            ("nuls", crlf(v))
        }
        17 => {
            let mut v = b"NOOP ".to_vec();
            v.extend_from_slice(b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc");
            ("invalid utf-8", crlf(v))
        }
        18 => {
            let len = 1000 + rng.below(100_000);
            let mut v = format!("{} ", rng.case("NOOP")).into_bytes();
            v.extend_from_slice(&vec![b'A'; len]);
            if rng.chance(70) {
                v.extend_from_slice(b"\r\n");
            }
            ("huge line", v)
        }
        19 => {
            let cmd = rng.pick(&[
                "RSET",
                "NOOP",
                "NOOP hello",
                "HELP",
                "HELP MAIL",
                "VRFY postmaster",
                "EXPN list",
                "ETRN x",
                "LHLO x",
                "BURL imap://x LAST",
                "STARTTLS now",
                "QUIT now",
                "",
                " ",
                "MAIL",
                "RCPT",
                "MAIL FROM:",
                "RCPT TO:<<<>>>",
            ]);
            ("command", format!("{}\r\n", rng.case(cmd)).into_bytes())
        }
        20 => {
            let mut v = rng
                .pick(&["AUTH PLAIN", "AUTH LOGIN", "AUTH CRAM-MD5", "AUTH PLAIN ="])
                .as_bytes()
                .to_vec();
            v.extend_from_slice(b"\r\n");
            v.extend_from_slice(rng.pick(&["*", "dGVzdA==", "!!!", ""]).as_bytes());
            v.extend_from_slice(b"\r\n");
            ("auth", v)
        }
        21 => {
            let sep = rng.pick(&["\n", "\r", "\r\r\n", "\n\r"]);
            (
                "bare line ends",
                format!("NOOP{sep}RSET{sep}EHLO x{sep}").into_bytes(),
            )
        }
        22 if rng.chance(20) => {
            // Whatever follows goes into the TLS handshake.
            ("starttls", b"STARTTLS\r\n".to_vec())
        }
        _ => {
            // A complete, valid transaction, pipelined.
            let mut v = b"EHLO ok.test\r\nMAIL FROM:<a@ok.test>\r\nRCPT TO:<b@ok.test>\r\nDATA\r\n"
                .to_vec();
            v.extend_from_slice(b"Subject: ok\r\n\r\nbody\r\n.\r\n");
            ("transaction", v)
        }
    }
}

enum Ending {
    /// Half-close, then read until the server closes.
    HalfClose,
    /// QUIT, half-close, read until the server closes.
    Quit,
    /// Close without reading anything more.
    Abrupt,
}

/// Runs one session; returns what the server sent and whether it ended with a clean
/// close (then the last line must be complete).
fn run_session(port: u16, rng: &mut Rng) -> (Vec<&'static str>, Vec<u8>, bool) {
    let mut names = Vec::new();
    let mut script = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let (name, bytes) = piece(rng);
        names.push(name);
        script.extend_from_slice(&bytes);
    }
    let ending = match rng.below(10) {
        0..=5 => Ending::HalfClose,
        6 | 7 => Ending::Quit,
        _ => Ending::Abrupt,
    };
    if matches!(ending, Ending::Quit) {
        script.extend_from_slice(b"QUIT\r\n");
    }

    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A reset (the server closed with our input unread) or our timeout.
                Err(_) => return (got, false),
            }
        }
    });

    // Random write boundaries, so the server sees every kind of split.
    let mut writer = &stream;
    let mut rest = &script[..];
    while !rest.is_empty() {
        let most = if rng.chance(30) { 8 } else { 4096 };
        let n = (1 + rng.below(most)).min(rest.len());
        if writer.write_all(&rest[..n]).is_err() {
            break; // The server closed on us: fine.
        }
        rest = &rest[n..];
    }
    match ending {
        Ending::HalfClose | Ending::Quit => {
            let _ = stream.shutdown(Shutdown::Write);
        }
        Ending::Abrupt => {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    let (got, clean) = read.join().unwrap();
    let clean = clean && !matches!(ending, Ending::Abrupt);
    (names, got, clean)
}

/// Every complete line is `ddd ` or `ddd-` and text without CR or LF; a `-` line is
/// followed by one with the same code; the greeting is 220. Bytes after a `220` to
/// STARTTLS are TLS, not SMTP.
fn check_replies(got: &[u8], clean: bool) -> Result<(), String> {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = got;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..pos]);
        rest = &rest[pos + 2..];
        if lines
            .last()
            .is_some_and(|l| l.starts_with(b"220 2.0.0 Ready to start TLS"))
        {
            return check_lines(&lines);
        }
    }
    if clean && !rest.is_empty() {
        return Err(format!(
            "server closed after an incomplete line {:?}",
            String::from_utf8_lossy(rest)
        ));
    }
    check_lines(&lines)
}

fn check_lines(lines: &[&[u8]]) -> Result<(), String> {
    let mut continued: Option<&[u8]> = None;
    for (i, line) in lines.iter().enumerate() {
        let shown = String::from_utf8_lossy(line);
        let well_formed = line.len() >= 4
            && (b'2'..=b'5').contains(&line[0])
            && line[1..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-')
            && !line.contains(&b'\r')
            && !line.contains(&b'\n');
        if !well_formed {
            return Err(format!("malformed reply line {i}: {shown:?}"));
        }
        if i == 0 && !line.starts_with(b"220 ") {
            return Err(format!("greeting is not 220: {shown:?}"));
        }
        if let Some(code) = continued
            && code != &line[..3]
        {
            return Err(format!("multi-line reply changes code at {shown:?}"));
        }
        continued = (line[3] == b'-').then(|| &line[..3]);
    }
    Ok(())
}

#[test]
fn junk_sessions_get_well_formed_replies_and_never_crash_the_server() {
    let started = Instant::now();
    let mut server = Server::start("[smtp]\nmax_errors = 1000\nidle_timeout_secs = 5\n");
    let base: u64 = std::env::var("FUZZ_SESSIONS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let next = AtomicUsize::new(0);
    let (relay, submission) = (server.relay, server.submission);

    let lines = AtomicUsize::new(0);
    let queued = AtomicUsize::new(0);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= SESSIONS {
                            return failures;
                        }
                        let seed = base.wrapping_add(i as u64);
                        let mut rng = Rng::new(seed);
                        let port = if rng.chance(80) { relay } else { submission };
                        let (names, got, clean) = run_session(port, &mut rng);
                        let text = String::from_utf8_lossy(&got);
                        lines.fetch_add(text.matches("\r\n").count(), Ordering::Relaxed);
                        queued.fetch_add(text.matches("queued as").count(), Ordering::Relaxed);
                        if let Err(e) = check_replies(&got, clean) {
                            failures.push(format!(
                                "session {i} (seed {seed}, {names:?}): {e}\nserver said:\n{}",
                                String::from_utf8_lossy(&got[..got.len().min(2000)])
                            ));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions got malformed replies:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(server.is_running(), "the server died:\n{}", server.log());
    let mut c = Client::greeted(server.relay);
    let r = c.send_mail(
        "after@junk.test",
        &["still@serving.test"],
        "Subject: ok\n\nstill here\n",
    );
    assert!(
        r.code == 250 && r.to_string().contains("queued as"),
        "no longer accepting mail: {r:?}"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    eprintln!(
        "{SESSIONS} junk sessions ({} reply lines, {} messages queued) in {:?}",
        lines.into_inner(),
        queued.into_inner(),
        started.elapsed()
    );
}
