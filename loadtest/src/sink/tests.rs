//! Tests of the sink: driven by the `loadtest smtp` generator where it fits, and by
//! the raw SMTP client where a test needs exact commands.

use super::*;
use crate::generator::{dot_stuff, fnv1a, verify};
use crate::smtp_client::{ClientError, SmtpClient};
use crate::smtp_cmd::{SmtpArgs, execute};
use crate::stats::Report;
use clap::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const T: Duration = Duration::from_secs(10);

async fn start(config: SinkConfig) -> SinkHandle {
    Sink::start(config).await.expect("sink starts")
}

fn verifying() -> SinkConfig {
    SinkConfig {
        verify: true,
        keep_messages: true,
        ..SinkConfig::default()
    }
}

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: SmtpArgs,
}

/// Runs `loadtest smtp` against the sink.
async fn generate(addr: SocketAddr, extra: &[&str]) -> Report {
    let addr = addr.to_string();
    let mut argv = vec!["t", "--addr", &addr, "--no-progress", "--timeout", "10"];
    argv.extend_from_slice(extra);
    execute(&TestCli::parse_from(argv).args)
        .await
        .expect("run")
        .report
}

async fn connect(addr: SocketAddr) -> SmtpClient {
    let mut c = SmtpClient::connect(addr, T, T).await.unwrap();
    c.greeting().await.unwrap();
    c.ehlo("client.test").await.unwrap();
    c
}

async fn cmd(c: &mut SmtpClient, line: &str) -> u16 {
    c.command(format!("{line}\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A message with Message-ID and a correct X-Loadtest-Checksum.
fn message(message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <a@b.test>\r\nMessage-ID: {message_id}\r\nX-Loadtest-Checksum: {:016x}\r\n\r\n{body}",
        fnv1a(body.as_bytes())
    )
    .into_bytes()
}

/// DATA with `msg` (stored form); the final reply code.
async fn data(c: &mut SmtpClient, msg: &[u8]) -> Result<u16, ClientError> {
    let code = c.command(b"DATA\r\n").await?;
    assert_eq!(code, 354, "{}", c.reply());
    c.write(&dot_stuff(msg)).await?;
    c.write(b".\r\n").await?;
    c.flush().await?;
    c.read_reply().await
}

/// MAIL, RCPTs, DATA: the RCPT codes and the data reply (None when no RCPT passed).
async fn transaction(c: &mut SmtpClient, rcpts: &[&str], msg: &[u8]) -> (Vec<u16>, Option<u16>) {
    assert_eq!(cmd(c, "MAIL FROM:<a@b.test>").await, 250);
    let mut codes = Vec::new();
    for r in rcpts {
        codes.push(cmd(c, &format!("RCPT TO:<{r}>")).await);
    }
    if !codes.contains(&250) {
        assert_eq!(cmd(c, "RSET").await, 250);
        return (codes, None);
    }
    (codes, Some(data(c, msg).await.unwrap()))
}

#[tokio::test]
async fn counts_and_verifies_generator_traffic() {
    let sink = start(verifying()).await;
    let r = generate(
        sink.local_addr(),
        &["-n", "120", "-c", "4", "--stamp", "--recipients", "2"],
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("DATA, pipelining"), "{}", r.mode);
    let r = generate(
        sink.local_addr(),
        &["-n", "80", "-c", "2", "--bdat", "--size", "70000"],
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("BDAT, pipelining"), "{}", r.mode);
    let r = generate(sink.local_addr(), &["-n", "10", "--pipelining", "off"]).await;
    assert!(r.success(), "{}", r.text());

    let s = sink.stats();
    assert_eq!(s.messages, 210);
    assert_eq!(s.transactions, 210);
    assert_eq!(s.recipients, 120 * 2 + 80 + 10);
    assert_eq!(s.checksum_ok, 210);
    assert_eq!((s.checksum_bad, s.checksum_missing), (0, 0));
    assert_eq!((s.duplicates, s.no_message_id), (0, 0));
    assert_eq!(s.connections, 4 + 2 + 8, "{s:?}"); // -c defaults to 8
    assert!(s.rejections.is_empty(), "{:?}", s.rejections);
    assert_eq!(s.e2e_latency_ms.count, 120);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 210);
    assert_eq!(s.bytes, msgs.iter().map(|m| m.size as u64).sum::<u64>());
    for m in &msgs {
        assert_eq!(m.checksum, ChecksumStatus::Ok);
        assert!(verify(&m.data).is_ok());
        assert_eq!(m.size, m.data.len());
        assert!(
            m.message_id
                .as_deref()
                .unwrap()
                .ends_with("@loadtest.invalid>")
        );
    }
    let stamped: Vec<_> = msgs.iter().filter(|m| m.sent_at_us.is_some()).collect();
    assert_eq!(stamped.len(), 120);
    for m in stamped {
        assert_eq!(m.recipients.len(), 2);
        let sent = m.sent_at_us.unwrap();
        assert!(sent <= m.received_at_us && m.received_at_us - sent < 60_000_000);
    }
    assert_eq!(msgs.iter().filter(|m| m.bdat).count(), 80);
    assert!(msgs.iter().filter(|m| m.bdat).all(|m| m.size > 70_000));
    let fin = sink.shutdown().await;
    assert_eq!(fin.messages, 210);
    assert_eq!(fin.active_connections, 0);
}

#[tokio::test]
async fn same_message_id_twice_is_one_duplicate() {
    let sink = start(verifying()).await;
    let mut c = connect(sink.local_addr()).await;
    let m = message("<dup-1@test>", "hello\r\n");
    for _ in 0..2 {
        let (rc, d) = transaction(&mut c, &["u1@x.test"], &m).await;
        assert_eq!((rc, d), (vec![250], Some(250)));
    }
    // the same message to someone else is not a duplicate
    assert_eq!(transaction(&mut c, &["u2@x.test"], &m).await.1, Some(250));
    // nor is a message without Message-ID
    let plain = b"Subject: x\r\n\r\nbody\r\n".to_vec();
    for _ in 0..2 {
        assert_eq!(
            transaction(&mut c, &["u1@x.test"], &plain).await.1,
            Some(250)
        );
    }
    c.quit().await;
    let s = sink.stats();
    assert_eq!(s.messages, 5);
    assert_eq!(s.duplicates, 1);
    assert_eq!(s.no_message_id, 2);
    assert_eq!(s.checksum_ok, 3);
    assert_eq!(s.checksum_missing, 2);
    assert_eq!(
        sink.duplicates(),
        vec![Duplicate {
            message_id: "<dup-1@test>".into(),
            recipient: "u1@x.test".into(),
            deliveries: 2
        }]
    );
    assert_eq!(sink.deliveries("<dup-1@test>", "U1@X.test"), 2);
    assert_eq!(sink.deliveries("<dup-1@test>", "u2@x.test"), 1);
}

#[tokio::test]
async fn checksum_verification_catches_a_corrupted_body() {
    let sink = start(verifying()).await;
    let mut c = connect(sink.local_addr()).await;
    let good = message("<c1@test>", "line one\r\n.dotted\r\n");
    let mut bad = message("<c2@test>", "line one\r\n.dotted\r\n");
    let n = bad.len();
    bad[n - 4] ^= 0x20;
    assert_eq!(transaction(&mut c, &["u@x.test"], &good).await.1, Some(250));
    assert_eq!(transaction(&mut c, &["u@x.test"], &bad).await.1, Some(250));
    // through BDAT as well
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<u@x.test>").await, 250);
    c.write(format!("BDAT {} LAST\r\n", bad.len()).as_bytes())
        .await
        .unwrap();
    c.write(&bad).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 250);
    c.quit().await;
    let s = sink.stats();
    assert_eq!((s.checksum_ok, s.checksum_bad), (1, 2));
    let msgs = sink.messages();
    assert_eq!(msgs[0].checksum, ChecksumStatus::Ok);
    assert_eq!(msgs[1].checksum, ChecksumStatus::Bad);
    // the sink stored the unstuffed form
    assert_eq!(msgs[0].data, good);
}

#[tokio::test]
async fn tempfail_and_permfail_local_parts() {
    let sink = start(SinkConfig::default()).await;
    let mut c = connect(sink.local_addr()).await;
    let (codes, d) = transaction(
        &mut c,
        &[
            "tempfail@x.test",
            "TempFail+123@y.test",
            "permfail@x.test",
            "permfail+a@x.test",
            "ok@x.test",
        ],
        b"\r\nhi\r\n",
    )
    .await;
    assert_eq!(codes, vec![451, 451, 550, 550, 250]);
    assert_eq!(d, Some(250));
    let text = c.reply().to_string();
    assert!(text.starts_with("250 2.0.0 Ok: queued as S"), "{text}");
    c.quit().await;
    let s = sink.stats();
    assert_eq!((s.rejected(451), s.rejected(550)), (2, 2));
    assert_eq!((s.messages, s.recipients), (1, 1));
}

#[tokio::test]
async fn shares_are_deterministic_with_a_seed_and_near_their_targets() {
    let mut counts = Vec::new();
    for _ in 0..2 {
        let sink = start(SinkConfig {
            faults: Faults {
                tempfail_share: 0.1,
                permfail_share: 0.05,
                ..Faults::default()
            },
            seed: 42,
            ..SinkConfig::default()
        })
        .await;
        let r = generate(sink.local_addr(), &["-n", "2000", "-c", "4"]).await;
        let s = sink.shutdown().await;
        assert_eq!(s.messages, r.accepted);
        assert_eq!(s.rejected(451) + s.rejected(550) + s.messages, 2000);
        counts.push((s.rejected(451), s.rejected(550)));
    }
    // same seed, same number of draws: the same counts, whatever the interleaving
    assert_eq!(counts[0], counts[1]);
    let (temp, perm) = counts[0];
    assert!((150..=250).contains(&temp), "451: {temp} of 2000");
    assert!((60..=140).contains(&perm), "550: {perm} of 2000");

    // another seed gives other draws
    let sink = start(SinkConfig {
        faults: Faults {
            tempfail_share: 0.1,
            permfail_share: 0.05,
            ..Faults::default()
        },
        seed: 7,
        ..SinkConfig::default()
    })
    .await;
    generate(sink.local_addr(), &["-n", "2000", "-c", "4"]).await;
    let s = sink.shutdown().await;
    assert_ne!((s.rejected(451), s.rejected(550)), counts[0]);
}

#[tokio::test]
async fn global_rate_limit_gives_421_at_mail_and_closes() {
    let sink = start(SinkConfig {
        faults: Faults {
            // one token per 1000 s: nothing refills during the test
            rate_limit: Some(0.001),
            rate_burst: Some(2.0),
            ..Faults::default()
        },
        ..SinkConfig::default()
    })
    .await;
    let mut c = connect(sink.local_addr()).await;
    for _ in 0..2 {
        assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
        assert_eq!(cmd(&mut c, "RSET").await, 250);
    }
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 421);
    assert!(c.reply().enhanced == smtp_wire::EnhancedCode::parse("4.7.0"));
    assert!(matches!(
        c.command(b"NOOP\r\n").await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    assert_eq!(sink.stats().rejected(421), 1);

    // the generator sees 421s too
    let r = generate(sink.local_addr(), &["-n", "3", "-c", "1"]).await;
    assert_eq!(r.rejected_by_code.get("421"), Some(&3), "{}", r.text());
}

#[tokio::test]
async fn domain_rate_limit_gives_421_at_rcpt() {
    let slow = Faults {
        rate_limit: Some(0.001),
        rate_burst: Some(1.0),
        ..Faults::default()
    };
    let sink = start(SinkConfig {
        domain_faults: HashMap::from([("Slow.Test".to_owned(), slow)]),
        ..SinkConfig::default()
    })
    .await;
    let mut c = connect(sink.local_addr()).await;
    // two recipients at slow.test in one transaction cost one token
    let (codes, d) = transaction(&mut c, &["a@slow.test", "b@slow.test"], b"\r\nx\r\n").await;
    assert_eq!((codes, d), (vec![250, 250], Some(250)));
    // other domains are not limited
    let (codes, _) = transaction(&mut c, &["a@fast.test"], b"\r\nx\r\n").await;
    assert_eq!(codes, vec![250]);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<a@fast.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<c@SLOW.test>").await, 421);
    assert!(c.command(b"NOOP\r\n").await.is_err());
    let s = sink.stats();
    assert_eq!((s.rejected(421), s.messages), (1, 2));
}

#[tokio::test]
async fn domain_connection_limit_and_counters() {
    let limited = Faults {
        max_connections: Some(2),
        permfail_share: 0.0,
        ..Faults::default()
    };
    let sink = start(SinkConfig {
        domain_faults: HashMap::from([("busy.test".to_owned(), limited)]),
        ..SinkConfig::default()
    })
    .await;
    let addr = sink.local_addr();
    let (mut a, mut b, mut c) = (
        connect(addr).await,
        connect(addr).await,
        connect(addr).await,
    );
    // Two connections carry busy.test's mail, on as many transactions as they like.
    for conn in [&mut a, &mut b] {
        let (codes, d) = transaction(conn, &["x@busy.test"], b"\r\nx\r\n").await;
        assert_eq!((codes, d), (vec![250], Some(250)));
    }
    let (codes, _) = transaction(&mut a, &["x2@busy.test"], b"\r\nx\r\n").await;
    assert_eq!(codes, vec![250]);
    // A third gets 421 4.7.0 at its first RCPT for the domain and is closed; other
    // domains are not counted.
    let (codes, _) = transaction(&mut c, &["y@other.test"], b"\r\nx\r\n").await;
    assert_eq!(codes, vec![250]);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<z@busy.test>").await, 421);
    assert!(c.command(b"NOOP\r\n").await.is_err());
    // One of the two leaves (the sink has closed it once only `a` is open): the next
    // connection gets its turn.
    assert_eq!(cmd(&mut b, "QUIT").await, 221);
    sink.wait_until(Duration::from_secs(5), |s| s.active_connections == 1)
        .await
        .unwrap();
    let mut d = connect(addr).await;
    let (codes, _) = transaction(&mut d, &["w@busy.test"], b"\r\nx\r\n").await;
    assert_eq!(codes, vec![250]);
    let busy = sink.domain_stats()["busy.test"];
    assert_eq!((busy.delivered, busy.throttled, busy.refused), (4, 1, 0));
    assert!(!sink.domain_stats().contains_key("other.test"));
    let f = Faults::parse_kv("conns=3").unwrap();
    assert_eq!(f.max_connections, Some(3));
    for bad in ["conns=0", "conns=1.5"] {
        assert!(Faults::parse_kv(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn dropdata_closes_mid_data_without_a_reply() {
    let sink = start(verifying()).await;
    // DATA
    let mut c = connect(sink.local_addr()).await;
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<ok@x.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<dropdata@x.test>").await, 250);
    assert!(matches!(
        data(&mut c, &message("<d1@test>", "body\r\n")).await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    // BDAT
    let mut c = connect(sink.local_addr()).await;
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<dropdata+2@x.test>").await, 250);
    c.write(b"BDAT 10 LAST\r\n0123456789").await.unwrap();
    c.flush().await.unwrap();
    assert!(matches!(
        c.read_reply().await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    let s = sink
        .wait_until(T, |s| s.active_connections == 0)
        .await
        .unwrap();
    assert_eq!((s.dropped, s.messages), (2, 0));
    assert!(s.rejections.is_empty());
}

#[tokio::test]
async fn drop_share_with_the_generator() {
    let sink = start(SinkConfig {
        faults: Faults {
            drop_share: 0.3,
            ..Faults::default()
        },
        seed: 3,
        ..SinkConfig::default()
    })
    .await;
    let r = generate(sink.local_addr(), &["-n", "200", "-c", "4"]).await;
    let s = sink
        .wait_until(T, |s| s.active_connections == 0)
        .await
        .unwrap();
    assert_eq!(s.messages, r.accepted);
    assert_eq!(s.dropped + s.messages, 200, "{}", r.text());
    assert_eq!(r.failed_in_flight, s.dropped);
    assert!((30..=90).contains(&s.dropped), "dropped {}", s.dropped);
}

#[tokio::test]
async fn tempfail_once_then_accepts_the_same_message() {
    let sink = start(verifying()).await;
    let mut c = connect(sink.local_addr()).await;
    let m1 = message("<once-1@test>", "one\r\n");
    let m2 = message("<once-2@test>", "two\r\n");
    let rcpts = ["tempfail-once@x.test", "other@x.test"];
    // SMTP: the whole message gets the 451 the first time
    assert_eq!(
        transaction(&mut c, &rcpts, &m1).await,
        (vec![250, 250], Some(451))
    );
    assert!(c.reply().enhanced == smtp_wire::EnhancedCode::parse("4.3.0"));
    assert_eq!(transaction(&mut c, &rcpts, &m1).await.1, Some(250));
    assert_eq!(transaction(&mut c, &rcpts, &m1).await.1, Some(250));
    // another message is new again
    assert_eq!(transaction(&mut c, &rcpts, &m2).await.1, Some(451));
    // without Message-ID the content identifies the message
    let plain = b"Subject: p\r\n\r\nsame\r\n".to_vec();
    assert_eq!(transaction(&mut c, &rcpts[..1], &plain).await.1, Some(451));
    assert_eq!(transaction(&mut c, &rcpts[..1], &plain).await.1, Some(250));
    c.quit().await;
    let s = sink.stats();
    assert_eq!((s.rejected(451), s.messages, s.recipients), (3, 3, 5));
    // the retries are not duplicates: nothing was accepted the first time
    // m1 was accepted twice after its 451: both recipients delivered twice
    assert_eq!(s.duplicates, 2);
    assert_eq!(sink.deliveries("<once-1@test>", "other@x.test"), 2);
}

#[tokio::test]
async fn lmtp_replies_per_recipient() {
    let sink = start(SinkConfig {
        lmtp: true,
        ..verifying()
    })
    .await;
    let mut c = SmtpClient::connect(sink.local_addr(), T, T).await.unwrap();
    c.greeting().await.unwrap();
    assert!(c.reply().text.contains("LMTP"));
    assert_eq!(cmd(&mut c, "EHLO x").await, 500);
    assert_eq!(cmd(&mut c, "LHLO x").await, 250);
    let m = message("<l1@test>", "lmtp\r\n");
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    for r in [
        "a@x.test",
        "permfail@x.test",
        "tempfail-once@x.test",
        "b@x.test",
    ] {
        cmd(&mut c, &format!("RCPT TO:<{r}>")).await;
    }
    assert_eq!(data(&mut c, &m).await.unwrap(), 250);
    assert!(c.reply().text.contains("<a@x.test>"));
    assert_eq!(c.read_reply().await.unwrap(), 451);
    assert!(c.reply().text.contains("tempfail-once@x.test"));
    assert_eq!(c.read_reply().await.unwrap(), 250);
    assert!(c.reply().text.contains("<b@x.test>"));
    // the retry for the deferred recipient is accepted
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<tempfail-once@x.test>").await, 250);
    assert_eq!(data(&mut c, &m).await.unwrap(), 250);
    // BDAT with LMTP: also one reply per recipient
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<c@x.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<d@x.test>").await, 250);
    c.write(format!("BDAT {} LAST\r\n", m.len()).as_bytes())
        .await
        .unwrap();
    c.write(&m).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 250);
    assert_eq!(c.read_reply().await.unwrap(), 250);
    c.quit().await;
    let s = sink.stats();
    assert_eq!((s.messages, s.recipients, s.duplicates), (3, 5, 0));
}

#[tokio::test]
async fn pipelined_commands_and_bdat_chunks_in_one_write() {
    let sink = start(verifying()).await;
    let mut sock = tokio::net::TcpStream::connect(sink.local_addr())
        .await
        .unwrap();
    let m = message("<p1@test>", "chunked body\r\n");
    let (a, b) = m.split_at(10);
    let mut input = Vec::new();
    input.extend_from_slice(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@x.test>\r\n");
    input.extend_from_slice(format!("BDAT {}\r\n", a.len()).as_bytes());
    input.extend_from_slice(a);
    input.extend_from_slice(b"BDAT 0\r\n");
    input.extend_from_slice(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
    input.extend_from_slice(b);
    input.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<v@x.test>\r\nDATA\r\n");
    // (a client must wait for 354, but the sink copes with data right behind DATA)
    input.extend_from_slice(&dot_stuff(&message("<p2@test>", ".x\r\n")));
    input.extend_from_slice(b".\r\nBDAT 3\r\nabcRSET\r\nNOOP\r\nQUIT\r\n");
    sock.write_all(&input).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        vec![
            "220", "250", "250", "250", "250", "250", "250", "250", "250", "354", "250", "503",
            "250", "250", "221"
        ],
        "{out}"
    );
    let s = sink.stats();
    assert_eq!((s.messages, s.checksum_ok), (2, 2));
    assert_eq!(sink.messages()[0].data, m);
    assert!(sink.messages()[0].bdat);
}

#[tokio::test]
async fn ehlo_extensions_are_chosen() {
    assert_eq!(Extensions::parse("none").unwrap(), Extensions::none());
    assert_eq!(Extensions::parse("all").unwrap(), Extensions::all());
    let e = Extensions::parse("pipelining,BDAT").unwrap();
    assert!(e.pipelining && e.chunking && !e.eight_bit_mime && !e.size);
    let e = Extensions::parse("+starttls,-chunking").unwrap();
    assert!(e.starttls && !e.chunking && e.pipelining && e.smtputf8);
    assert!(Extensions::parse("pipelining,foo").is_err());

    let sink = start(SinkConfig {
        extensions: Extensions::parse("pipelining").unwrap(),
        ..SinkConfig::default()
    })
    .await;
    let mut c = connect(sink.local_addr()).await;
    let caps = c.capabilities().clone();
    assert!(caps.pipelining && !caps.chunking && !caps.eight_bit_mime && !caps.starttls);
    assert!(!caps.smtputf8 && caps.size.is_none());
    // what is not offered is refused
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test> BODY=8BITMIME").await, 555);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test> SMTPUTF8").await, 555);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test> RET=HDRS").await, 555);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test> SIZE=100").await, 555);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<u@x.test> NOTIFY=NEVER").await, 555);
    assert_eq!(cmd(&mut c, "RCPT TO:<u@x.test>").await, 250);
    assert_eq!(cmd(&mut c, "BDAT 5 LAST").await, 502);
    assert_eq!(cmd(&mut c, "STARTTLS").await, 502);
    c.quit().await;

    // all of them
    let sink = start(SinkConfig {
        extensions: Extensions::all(),
        ..SinkConfig::default()
    })
    .await;
    let mut c = connect(sink.local_addr()).await;
    let caps = c.capabilities().clone();
    assert!(caps.pipelining && caps.chunking && caps.eight_bit_mime && caps.starttls);
    assert!(caps.smtputf8 && caps.enhanced_status_codes);
    assert_eq!(caps.size, Some(64 << 20));
    assert_eq!(
        cmd(
            &mut c,
            "MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x SIZE=10"
        )
        .await,
        250
    );
    assert_eq!(
        cmd(
            &mut c,
            "RCPT TO:<ü@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@x.test"
        )
        .await,
        250
    );
    assert_eq!(cmd(&mut c, "RSET").await, 250);
    assert_eq!(
        cmd(&mut c, "MAIL FROM:<a@b.test> SIZE=999999999999").await,
        552
    );
    assert_eq!(cmd(&mut c, "MAIL FROM:<ü@b.test>").await, 553);
    c.quit().await;
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate() {
    let sink = start(SinkConfig {
        extensions: Extensions::parse("+starttls").unwrap(),
        ..verifying()
    })
    .await;
    let r = generate(sink.local_addr(), &["-n", "20", "-c", "2", "--starttls"]).await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("STARTTLS"), "{}", r.mode);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 20);
    assert!(
        msgs.iter()
            .all(|m| m.tls && m.checksum == ChecksumStatus::Ok)
    );
}

#[tokio::test]
async fn connection_limits_per_ip_and_in_total() {
    let sink = start(SinkConfig {
        max_connections_per_ip: Some(2),
        ..SinkConfig::default()
    })
    .await;
    let addr = sink.local_addr();
    let a = connect(addr).await;
    let _b = connect(addr).await;
    let mut c = SmtpClient::connect(addr, T, T).await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 421);
    assert!(c.reply().enhanced == smtp_wire::EnhancedCode::parse("4.7.0"));
    let s = sink.stats();
    assert_eq!(
        (s.connections, s.connections_refused, s.rejected(421)),
        (3, 1, 1)
    );
    a.quit().await;
    sink.wait_until(T, |s| s.active_connections == 1)
        .await
        .unwrap();
    let d = connect(addr).await;
    d.quit().await;

    let sink = start(SinkConfig {
        max_connections: Some(1),
        ..SinkConfig::default()
    })
    .await;
    let _a = connect(sink.local_addr()).await;
    let mut c = SmtpClient::connect(sink.local_addr(), T, T).await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 421);
}

#[tokio::test]
async fn delay_comes_before_replies() {
    let delay = Duration::from_millis(60);
    let sink = start(SinkConfig {
        faults: Faults {
            delay,
            ..Faults::default()
        },
        domain_faults: HashMap::from([(
            "slow.test".to_owned(),
            Faults {
                delay: Duration::from_millis(150),
                ..Faults::default()
            },
        )]),
        ..SinkConfig::default()
    })
    .await;
    let t = std::time::Instant::now();
    let mut c = connect(sink.local_addr()).await;
    assert!(
        t.elapsed() >= delay * 2,
        "greeting + EHLO: {:?}",
        t.elapsed()
    );
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    let t = std::time::Instant::now();
    assert_eq!(cmd(&mut c, "RCPT TO:<u@slow.test>").await, 250);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn faults_change_at_run_time() {
    let sink = start(SinkConfig {
        faults: Faults {
            tempfail_share: 1.0,
            ..Faults::default()
        },
        ..SinkConfig::default()
    })
    .await;
    let mut c = connect(sink.local_addr()).await;
    assert_eq!(
        transaction(&mut c, &["u@x.test"], b"\r\n").await.0,
        vec![451]
    );
    sink.set_faults(Faults::default(), HashMap::new()).unwrap();
    assert_eq!(
        transaction(&mut c, &["u@x.test"], b"\r\n").await.1,
        Some(250)
    );
    assert!(
        sink.set_faults(
            Faults {
                tempfail_share: 2.0,
                ..Faults::default()
            },
            HashMap::new()
        )
        .is_err()
    );
    assert!(Faults::parse_kv("tempfail=0.7,permfail=0.7").is_err());
    let f = Faults::parse_kv("rate=10, burst=5,tempfail=0.1,permfail=0.05,drop=0.01,delay-ms=50")
        .unwrap();
    assert_eq!(f.rate_limit, Some(10.0));
    assert_eq!(f.rate_burst, Some(5.0));
    assert_eq!(f.delay, Duration::from_millis(50));
    assert!(Faults::parse_kv("speed=3").is_err());
}

#[tokio::test]
async fn limits_and_sequence_errors() {
    let sink = start(SinkConfig {
        max_message_size: 1000,
        max_recipients: 2,
        ..SinkConfig::default()
    })
    .await;
    let mut c = SmtpClient::connect(sink.local_addr(), T, T).await.unwrap();
    c.greeting().await.unwrap();
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 503); // no EHLO yet
    assert_eq!(cmd(&mut c, "HELO x").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<u@x.test>").await, 503);
    assert_eq!(cmd(&mut c, "DATA").await, 503);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 503);
    assert_eq!(cmd(&mut c, "DATA").await, 554);
    for (r, code) in [("a@x.test", 250), ("b@x.test", 250), ("c@x.test", 452)] {
        assert_eq!(cmd(&mut c, &format!("RCPT TO:<{r}>")).await, code);
    }
    let big = vec![b'x'; 2000];
    let mut body = b"\r\n".to_vec();
    body.extend(big.chunks(50).flat_map(|l| [l, b"\r\n"].concat()));
    assert_eq!(data(&mut c, &body).await.unwrap(), 552);
    // too big with BDAT: the chunk is read and refused, the session goes on
    assert_eq!(cmd(&mut c, "MAIL FROM:<a@b.test>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<a@x.test>").await, 250);
    c.write(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    c.write(&body).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 552);
    c.write(b"BDAT 3 LAST\r\nabc").await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 503);
    // an empty message is fine, and so is a first line starting with a dot
    assert_eq!(cmd(&mut c, "MAIL FROM:<>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<postmaster@x.test>").await, 250);
    assert_eq!(data(&mut c, b"").await.unwrap(), 250);
    assert_eq!(cmd(&mut c, "MAIL FROM:<>").await, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<a@x.test>").await, 250);
    assert_eq!(data(&mut c, b".leading dot\r\n\r\n").await.unwrap(), 250);
    assert_eq!(cmd(&mut c, "VRFY a").await, 252);
    assert_eq!(cmd(&mut c, "AUTH PLAIN AAAA").await, 502);
    assert_eq!(cmd(&mut c, "FOO").await, 500);
    // command lines: too long with or without their end in the same read
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(cmd(&mut c, &long).await, 500);
    c.write(&vec![b'y'; 70_000]).await.unwrap();
    c.write(b"\r\nNOOP\r\n").await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 500);
    assert_eq!(c.read_reply().await.unwrap(), 250);
    c.quit().await;
    let s = sink.stats();
    assert_eq!((s.messages, s.rejected(552)), (2, 2));
    assert_eq!(s.bytes, ".leading dot\r\n\r\n".len() as u64);
}

#[tokio::test]
async fn garbage_never_breaks_the_sink() {
    use rand::{Rng as _, SeedableRng as _};
    let sink = start(SinkConfig {
        idle_timeout: Duration::from_secs(2),
        extensions: Extensions::all(),
        ..SinkConfig::default()
    })
    .await;
    let addr = sink.local_addr();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let pieces: [&[u8]; 14] = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b.test>\r\n",
        b"RCPT TO:<u@x.test>\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 18446744073709551615 LAST\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"RSET\r\n",
        b"\0\0\0\r\n",
        b"MAIL FROM:<\xff\xfe@x>\r\n",
        b"RCPT TO:<a@b> NOTIFY=\r\n",
        b"STARTTLS\r\n",
        b"\n\n\r\r",
    ];
    for round in 0..60 {
        let mut input = Vec::new();
        for _ in 0..rng.random_range(1..30) {
            if rng.random_bool(0.3) {
                let n = rng.random_range(0..300);
                input.extend((0..n).map(|_| rng.random::<u8>()));
            } else {
                input.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            }
        }
        if round % 10 == 0 {
            input.extend(std::iter::repeat_n(b'A', 70_000)); // a very long line
        }
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = sock.write_all(&input).await;
        let _ = sock.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(T, sock.read_to_end(&mut out)).await;
        assert!(out.starts_with(b"220 "), "round {round}");
    }
    // still serving
    let r = generate(addr, &["-n", "20", "-c", "2"]).await;
    assert!(r.success(), "{}", r.text());
    let s = sink
        .wait_until(T, |s| s.active_connections == 0)
        .await
        .unwrap();
    assert!(s.rejected(500) > 0);
}

#[tokio::test]
async fn too_many_errors_hang_up() {
    let sink = start(SinkConfig::default()).await;
    let mut c = connect(sink.local_addr()).await;
    for _ in 0..19 {
        assert_eq!(cmd(&mut c, "BOGUS").await, 500);
    }
    assert_eq!(cmd(&mut c, "BOGUS").await, 500);
    assert_eq!(c.read_reply().await.unwrap(), 421);
    assert!(c.command(b"NOOP\r\n").await.is_err());
}

#[tokio::test]
async fn maildir_capture() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(SinkConfig {
        maildir: Some(dir.path().to_owned()),
        ..SinkConfig::default()
    })
    .await;
    let r = generate(
        sink.local_addr(),
        &["-n", "15", "-c", "3", "--recipients", "2"],
    )
    .await;
    assert!(r.success(), "{}", r.text());
    sink.shutdown().await;
    let files: Vec<_> = std::fs::read_dir(dir.path().join("new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 15);
    for f in files {
        let data = std::fs::read(&f).unwrap();
        assert!(
            data.starts_with(b"Return-Path: <loadtest@loadtest.invalid>\r\nDelivered-To: user")
        );
        assert!(verify(&data).is_ok(), "{}", f.display());
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn wait_until_times_out_with_the_counters() {
    let sink = start(SinkConfig::default()).await;
    let err = sink
        .wait_for_messages(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.messages, 0);
    let addr = sink.local_addr();
    let waiter = sink.wait_for_messages(5, T);
    let sender = generate(addr, &["-n", "5", "-c", "1"]);
    let (w, r) = tokio::join!(waiter, sender);
    assert!(r.success());
    assert_eq!(w.unwrap().messages, 5);
}

#[test]
fn header_parsing() {
    let m = b"Message-ID:  <a@b> \r\nx-loadtest-checksum: 00ff\r\nX-Loadtest-Sent-At: 0000000000000042\r\n\r\nbody";
    let h = parse_headers(m);
    assert_eq!(h.message_id, Some("<a@b>"));
    assert_eq!(h.checksum, Some(&b"00ff"[..]));
    assert_eq!(
        h.sent_at.and_then(crate::generator::parse_sent_at),
        Some(42)
    );
    assert_eq!(h.body_at, Some(m.len() - 4));
    assert_eq!(checksum_status(m, &h), ChecksumStatus::Bad);
    let h = parse_headers(b"no header block");
    assert_eq!(h, HeaderInfo::default());
    assert_eq!(checksum_status(b"", &h), ChecksumStatus::Missing);
}
