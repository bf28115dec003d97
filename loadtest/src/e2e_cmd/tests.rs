//! `loadtest e2e` against a tiny fake MTA written here: it accepts every message and
//! relays it to the e2e sink zero, one or two times, as a test decides. The e2e run
//! must find exactly the messages it lost and the ones it duplicated.

use super::*;
use crate::smtp_client::SmtpClient;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: E2eArgs,
}

/// How many copies of message `seq` the fake MTA relays.
type Fate = fn(u64) -> usize;

/// A relay-only SMTP server: 250 for everything, then `fate(seq)` deliveries of each
/// message to `sink`, one connection each.
async fn fake_mta(sink: SocketAddr, fate: Fate) -> SocketAddr {
    fake_mta_with_delay(sink, fate, Duration::ZERO).await
}

/// The same, holding each message `delay` before relaying it.
async fn fake_mta_with_delay(sink: SocketAddr, fate: Fate, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = session(sock, sink, fate, delay).await;
            });
        }
    });
    addr
}

async fn session(
    sock: tokio::net::TcpStream,
    sink: SocketAddr,
    fate: Fate,
    delay: Duration,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    r.write_all(b"220 fake-mta ESMTP\r\n").await?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-fake-mta\r\n250 PIPELINING\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            rcpts.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(line[8..].trim().to_owned());
            "250 2.1.5 Ok\r\n".into()
        } else if upper.starts_with("DATA") {
            r.write_all(b"354 go ahead\r\n").await?;
            let mut wire = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                wire.extend_from_slice(&l);
            }
            let text = String::from_utf8_lossy(&wire).into_owned();
            let seq: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Loadtest-Seq: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            for _ in 0..fate(seq) {
                let (from, rcpts, wire) = (from.clone(), rcpts.clone(), wire.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    relay(sink, &from, &rcpts, &wire).await;
                });
            }
            format!("250 2.0.0 Ok: queued as F{seq}\r\n")
        } else if upper.starts_with("QUIT") {
            r.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "250 Ok\r\n".into()
        };
        r.write_all(reply.as_bytes()).await?;
    }
}

/// One delivery to the sink (the data is already dot-stuffed).
async fn relay(sink: SocketAddr, from: &str, rcpts: &[String], wire: &[u8]) {
    let t = Duration::from_secs(10);
    let mut c = SmtpClient::connect(sink, t, t).await.unwrap();
    c.greeting().await.unwrap();
    c.ehlo("fake-mta.test").await.unwrap();
    assert_eq!(
        c.command(format!("MAIL FROM:{from}\r\n").as_bytes())
            .await
            .unwrap(),
        250
    );
    for r in rcpts {
        assert_eq!(
            c.command(format!("RCPT TO:{r}\r\n").as_bytes())
                .await
                .unwrap(),
            250
        );
    }
    assert_eq!(c.command(b"DATA\r\n").await.unwrap(), 354);
    c.write(wire).await.unwrap();
    c.write(b".\r\n").await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(c.read_reply().await.unwrap(), 250);
    c.quit().await;
}

fn free_addr() -> SocketAddr {
    let port = crate::postroad_proc::free_port().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn run_e2e(fate: Fate, extra: &[&str]) -> E2eReport {
    let sink = free_addr();
    let mta = fake_mta(sink, fate).await;
    let (mta_s, sink_s) = (mta.to_string(), sink.to_string());
    let mut argv = vec![
        "t",
        "--addr",
        &mta_s,
        "--sink-listen",
        &sink_s,
        "--dns-listen",
        "127.0.0.1:0",
        "--no-progress",
        "--timeout",
        "10",
        "--settle",
        "0.3",
    ];
    argv.extend_from_slice(extra);
    execute(&TestCli::parse_from(argv).args).await.unwrap()
}

#[tokio::test]
async fn a_faithful_mta_loses_nothing() {
    let r = run_e2e(|_| 1, &["-n", "60", "-c", "4", "--recipients", "2"]).await;
    assert!(r.ok, "{}", r.text());
    assert_eq!((r.messages_sent, r.messages_accepted), (60, 60));
    assert_eq!((r.deliveries_expected, r.delivered), (120, 120));
    assert_eq!((r.lost, r.duplicates, r.checksum_bad), (0, 0, 0));
    assert_eq!(r.e2e_latency_ms.count, 120);
    assert!(r.all_delivered);
    assert!(r.delivered_per_sec > 0.0 && r.accepted_per_sec > 0.0);
    // the default mix: every domain got some recipients
    assert_eq!(r.by_domain.len(), 4);
    assert_eq!(r.by_domain.iter().map(|d| d.delivered).sum::<u64>(), 120);
    let delivered: u64 = r.timeline.iter().map(|s| s.delivered).sum();
    let accepted: u64 = r.timeline.iter().map(|s| s.accepted).sum();
    assert_eq!((accepted, delivered), (60, 120));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["lost"], 0);
    assert_eq!(json["duplicates"], 0);
    assert!(json["timeline"].as_array().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn lost_and_duplicated_messages_are_reported_as_such() {
    // seq 3, 13, 23, ... never relayed; seq 7, 17, ... relayed twice
    let fate: Fate = |seq| match seq % 10 {
        3 => 0,
        7 => 2,
        _ => 1,
    };
    let r = run_e2e(fate, &["-n", "50", "-c", "3", "--drain-timeout", "2"]).await;
    assert!(!r.ok);
    assert_eq!(r.messages_accepted, 50);
    assert_eq!(r.lost, 5, "{}", r.text());
    assert_eq!(r.duplicates, 5, "{}", r.text());
    assert_eq!(r.delivered, 45);
    assert!(!r.all_delivered);
    let mut lost: Vec<u64> = r
        .lost_sample
        .iter()
        .map(|l| {
            crate::generator::parse_message_id(l.split(' ').next().unwrap())
                .unwrap()
                .1
        })
        .collect();
    lost.sort();
    assert_eq!(lost, vec![3, 13, 23, 33, 43]);
    assert!(
        r.duplicate_sample
            .iter()
            .all(|d| d.ends_with("(2 deliveries)"))
    );
    assert_eq!(r.duplicate_sample.len(), 5);
    assert!(r.problems.iter().any(|p| p == "5 lost"), "{:?}", r.problems);
    assert!(
        r.problems.iter().any(|p| p == "5 duplicated"),
        "{:?}",
        r.problems
    );
    let text = r.text();
    assert!(text.contains("lost         5"), "{text}");
    assert!(text.contains("duplicates   5"), "{text}");
    assert!(text.contains("FAILED"), "{text}");
}

#[tokio::test]
async fn open_loop_run_and_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let sink = free_addr();
    let mta = fake_mta(sink, |_| 1).await;
    let (mta_s, sink_s) = (mta.to_string(), sink.to_string());
    let argv = [
        "t",
        "--addr",
        &mta_s,
        "--sink-listen",
        &sink_s,
        "--dns-listen",
        "127.0.0.1:0",
        "--no-progress",
        "--settle",
        "0",
        "--rate",
        "200",
        "-n",
        "300",
        "-c",
        "8",
        "--domain-mix",
        "a.test=3,b.test=1",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ];
    let started = Instant::now();
    run(TestCli::parse_from(argv).args).await.unwrap();
    // 300 messages at 200/s take about 1.5 s however fast the MTA answers
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(
        (v["lost"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["delivered"], 300);
    assert_eq!(v["rate_per_sec"], 200.0);
    assert_eq!(v["ack_latency_from"], "scheduled send time");
    assert_eq!(v["recipient_domains"], "a.test=3,b.test=1");
    assert!(
        v["accepted_per_sec"].as_f64().unwrap() < 230.0,
        "{}",
        v["accepted_per_sec"]
    );
    let seconds = v["timeline"].as_array().unwrap();
    assert!(seconds.len() >= 2, "{seconds:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "rate, e2e latency, ack latency"
    );
    assert!(page.contains("Rate per second") && page.contains("Submit → delivered latency"));
    assert!(page.matches("<polyline").count() >= 4);
    assert!(page.contains(">delivered<") && page.contains(">p99<"));
    assert!(!page.contains("<script") && !page.contains("http"));
}

#[test]
fn relay_snippet_and_zone() {
    let s = relay_snippet(
        "127.0.0.1:5300".parse().unwrap(),
        "127.0.0.1:2526".parse().unwrap(),
    );
    let v: toml::Value = toml::from_str(&s).unwrap();
    assert_eq!(
        v["relay"]["nameservers"][0].as_str(),
        Some("127.0.0.1:5300")
    );
    assert_eq!(v["relay"]["mx_port"].as_integer(), Some(2526));
    let z = zone(&DomainMix::parse(DEFAULT_E2E_MIX).unwrap());
    assert_eq!(z.records.len(), 8); // an MX and an A per domain
}

#[tokio::test]
async fn e2e_percentiles_match_a_synthetic_delay() {
    // the fake MTA holds every message 80 ms before relaying it
    let sink = free_addr();
    let mta = fake_mta_with_delay(sink, |_| 1, Duration::from_millis(80)).await;
    let (mta_s, sink_s) = (mta.to_string(), sink.to_string());
    let argv = [
        "t",
        "--addr",
        &mta_s,
        "--sink-listen",
        &sink_s,
        "--dns-listen",
        "127.0.0.1:0",
        "--no-progress",
        "--settle",
        "0",
        "-n",
        "40",
        "-c",
        "4",
    ];
    let r = execute(&TestCli::parse_from(argv).args).await.unwrap();
    assert!(r.ok, "{}", r.text());
    let e = &r.e2e_latency_ms;
    assert_eq!(e.count, 40);
    for (name, v, most) in [
        ("p50", e.p50, 130.0),
        ("p90", e.p90, 200.0),
        ("p99", e.p99, 200.0),
    ] {
        assert!((80.0..most).contains(&v), "{name} {v} ms:\n{}", r.text());
    }
    // the MTA answered at once: the delay is not in the ack latency
    assert!(r.ack_latency_ms.p50 < 40.0, "{}", r.text());
}
