//! Tests of `loadtest smtp` against a small in-process SMTP server.

use super::*;
use crate::generator::{dot_unstuff, verify};
use clap::Parser;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: SmtpArgs,
}

fn args(addr: SocketAddr, extra: &[&str]) -> SmtpArgs {
    let addr = addr.to_string();
    let mut argv = vec!["t", "--addr", &addr, "--no-progress", "--timeout", "5"];
    argv.extend_from_slice(extra);
    TestCli::parse_from(argv).args
}

type Store = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct ServerOpts {
    pipelining: bool,
    chunking: bool,
    /// Refuse RCPT for this user number.
    refuse_user: Option<u64>,
    /// Offer STARTTLS with this config.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer AUTH PLAIN and accept only these credentials.
    auth: Option<(&'static str, &'static str)>,
}

fn tls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

/// A small SMTP server storing the (unstuffed) messages it accepts.
async fn fake_server(opts: ServerOpts) -> (SocketAddr, Store) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let st = store.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (st, counter, opts) = (st.clone(), counter.clone(), opts.clone());
            tokio::spawn(async move {
                let _ = session(sock, opts, st, counter).await;
            });
        }
    });
    (addr, store)
}

enum End {
    Quit,
    StartTls,
}

async fn session(
    sock: tokio::net::TcpStream,
    opts: ServerOpts,
    store: Store,
    counter: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    r.write_all(b"220 fake ESMTP\r\n").await?;
    if let End::StartTls = serve(&mut r, &opts, &store, &counter, false).await? {
        let acceptor = tokio_rustls::TlsAcceptor::from(opts.tls.clone().unwrap());
        let tls = acceptor.accept(r.into_inner()).await?;
        serve(&mut BufReader::new(tls), &opts, &store, &counter, true).await?;
    }
    Ok(())
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    opts: &ServerOpts,
    store: &Store,
    counter: &AtomicU64,
    secure: bool,
) -> std::io::Result<End> {
    use base64::Engine as _;
    let mut line = String::new();
    let mut rcpts = 0;
    let mut authed = opts.auth.is_none();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(End::Quit);
        }
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut s = String::from("250-fake\r\n");
            if opts.pipelining {
                s.push_str("250-PIPELINING\r\n");
            }
            if opts.chunking {
                s.push_str("250-CHUNKING\r\n");
            }
            if opts.tls.is_some() && !secure {
                s.push_str("250-STARTTLS\r\n");
            }
            if opts.auth.is_some() {
                s.push_str("250-AUTH PLAIN\r\n");
            }
            s.push_str("250 8BITMIME\r\n");
            s
        } else if upper.starts_with("STARTTLS") && opts.tls.is_some() && !secure {
            r.write_all(b"220 2.0.0 ready\r\n").await?;
            r.flush().await?;
            return Ok(End::StartTls);
        } else if let (Some((u, p)), Some(b64)) = (opts.auth, line.strip_prefix("AUTH PLAIN ")) {
            let want = format!("\0{u}\0{p}");
            let got = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap_or_default();
            if got == want.as_bytes() {
                authed = true;
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper.starts_with("MAIL") && !authed {
            "530 5.7.0 authentication required\r\n".into()
        } else if upper.starts_with("MAIL") {
            rcpts = 0;
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT") {
            let refused = opts
                .refuse_user
                .is_some_and(|u| line.contains(&format!("<user{u}@")));
            if refused {
                "550 5.1.1 no such user\r\n".into()
            } else {
                rcpts += 1;
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper.starts_with("DATA") {
            if rcpts == 0 {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                r.write_all(b"354 go ahead\r\n").await?;
                r.flush().await?;
                let mut data = Vec::new();
                loop {
                    let n = r.read_until(b'\n', &mut data).await?;
                    if n == 0 {
                        return Ok(End::Quit);
                    }
                    if data.ends_with(b"\r\n.\r\n") || data == b".\r\n" {
                        data.truncate(data.len() - 3);
                        break;
                    }
                }
                let id = format!("Q{}", counter.fetch_add(1, Relaxed));
                store.lock().unwrap().push((id.clone(), dot_unstuff(&data)));
                format!("250 2.0.0 Ok: queued as {id}\r\n")
            }
        } else if upper.starts_with("BDAT") {
            let n: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            let mut data = vec![0; n];
            r.read_exact(&mut data).await?;
            if rcpts == 0 {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                let id = format!("B{}", counter.fetch_add(1, Relaxed));
                store.lock().unwrap().push((id.clone(), data));
                format!("250 2.0.0 queued as {id}\r\n")
            }
        } else if upper.starts_with("RSET") {
            rcpts = 0;
            "250 2.0.0 Ok\r\n".into()
        } else if upper.starts_with("QUIT") {
            r.write_all(b"221 bye\r\n").await?;
            r.flush().await?;
            return Ok(End::Quit);
        } else {
            "502 5.5.2 what\r\n".into()
        };
        r.write_all(reply.as_bytes()).await?;
        r.flush().await?;
    }
}

/// Every acked line names a stored, intact message with the same seq and checksum.
fn check_ack_log(log: &std::path::Path, store: &[(String, Vec<u8>)], expect: usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut seqs = std::collections::HashSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "{line:?}");
        let (_, msg) = store
            .iter()
            .find(|(id, _)| id == f[0])
            .expect("acked id stored");
        let v = verify(msg).unwrap();
        assert_eq!(v.seq.to_string(), f[1]);
        assert_eq!(format!("{:016x}", v.checksum), f[2]);
        assert!(seqs.insert(v.seq), "seq {} twice", v.seq);
    }
    assert_eq!(seqs.len(), expect);
}

async fn run_against(opts: &ServerOpts, extra: &[&str], expect: usize) -> Report {
    let (addr, store) = fake_server(opts.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("acks.tsv");
    let log_s = log.to_str().unwrap().to_owned();
    let mut extra = extra.to_vec();
    extra.extend_from_slice(&["--ack-log", &log_s]);
    let res = execute(&args(addr, &extra)).await.unwrap();
    assert!(res.ack_error.is_none());
    let store = store.lock().unwrap().clone();
    check_ack_log(&log, &store, expect);
    res.report
}

#[tokio::test]
async fn data_pipelined_end_to_end() {
    let opts = ServerOpts {
        pipelining: true,
        ..Default::default()
    };
    let r = run_against(
        &opts,
        &["-n", "60", "-c", "4", "--messages-per-connection", "7"],
        60,
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert_eq!((r.sent, r.accepted), (60, 60));
    assert!(r.connections_opened >= 9, "{}", r.connections_opened);
    assert!(r.mode.contains("DATA, pipelining"), "{}", r.mode);
    assert_eq!(r.ack_latency_ms.count, 60);
}

#[tokio::test]
async fn data_without_pipelining_multiple_recipients() {
    let r = run_against(
        &ServerOpts::default(),
        &[
            "-n",
            "20",
            "-c",
            "2",
            "--recipients",
            "3",
            "--size",
            "10000",
        ],
        20,
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert!(!r.mode.contains("pipelining"), "{}", r.mode);
}

#[tokio::test]
async fn bdat_pipelined_and_not() {
    let opts = ServerOpts {
        pipelining: true,
        chunking: true,
        ..Default::default()
    };
    let r = run_against(&opts, &["-n", "30", "-c", "3", "--bdat"], 30).await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("BDAT, pipelining"), "{}", r.mode);
    let r = run_against(&opts, &["-n", "10", "--bdat", "--pipelining", "off"], 10).await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("BDAT") && !r.mode.contains("pipelining"));
}

#[tokio::test]
async fn rejections_are_counted_and_the_run_goes_on() {
    for pipelining in [true, false] {
        let opts = ServerOpts {
            pipelining,
            refuse_user: Some(5),
            ..Default::default()
        };
        let r = run_against(&opts, &["-n", "10", "-c", "1"], 9).await;
        assert_eq!((r.sent, r.accepted, r.rejected), (10, 9, 1), "{}", r.text());
        assert_eq!(r.rejected_by_code["550"], 1);
        assert_eq!(r.rejected_by_class["5xx"], 1);
        assert!(!r.success());
        // partially refused recipients: message goes through
        let r = run_against(&opts, &["-n", "3", "-c", "1", "--recipients", "2"], 3).await;
        assert_eq!((r.accepted, r.rcpt_rejected), (3, 1), "{}", r.text());
    }
}

#[tokio::test]
async fn more_connections_than_messages() {
    let opts = ServerOpts::default();
    let r = run_against(&opts, &["-n", "3", "-c", "16"], 3).await;
    assert!(r.success(), "{}", r.text());
    assert_eq!(r.connections_opened, 3);
    assert_eq!(r.stop_reason, "all 3 messages sent");
}

#[tokio::test]
async fn dead_server_gives_up() {
    // a port with nothing listening
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = Instant::now();
    let res = execute(&args(
        addr,
        &["-n", "100", "-c", "4", "--max-connect-failures", "10"],
    ))
    .await
    .unwrap();
    let r = res.report;
    assert_eq!(r.sent, 0);
    assert!(r.errors >= 10);
    assert!(
        r.stop_reason.contains("consecutive connect failures"),
        "{}",
        r.stop_reason
    );
    assert!(!r.success());
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn duration_stops_the_run() {
    let (addr, _store) = fake_server(ServerOpts {
        pipelining: true,
        ..Default::default()
    })
    .await;
    let res = execute(&args(addr, &["--duration", "0.3", "-c", "2"]))
        .await
        .unwrap();
    let r = res.report;
    assert!(r.accepted > 0);
    assert_eq!(r.stop_reason, "duration reached");
    assert!(r.elapsed_secs < 5.0);
    assert!(r.success(), "{}", r.text());
}

#[tokio::test]
async fn starttls_and_auth() {
    let opts = ServerOpts {
        pipelining: true,
        tls: Some(tls_server_config()),
        auth: Some(("u", "p:w")),
        ..Default::default()
    };
    let r = run_against(
        &opts,
        &["-n", "20", "-c", "2", "--starttls", "--auth", "u:p:w"],
        20,
    )
    .await;
    assert!(r.success(), "{}", r.text());
    assert!(r.mode.contains("STARTTLS"), "{}", r.mode);

    // wrong password: every session is refused, and the run gives up
    let (addr, _) = fake_server(opts).await;
    let a = args(
        addr,
        &[
            "-n",
            "5",
            "-c",
            "1",
            "--starttls",
            "--auth",
            "u:bad",
            "--max-connect-failures",
            "3",
        ],
    );
    let r = execute(&a).await.unwrap().report;
    assert_eq!(r.sent, 0);
    assert_eq!(r.errors_by_kind["refused"], 3, "{}", r.text());
    assert!(r.last_error.unwrap().contains("535"));
    assert!(r.stop_reason.contains("3 consecutive"), "{}", r.stop_reason);
}

#[tokio::test]
async fn ack_percentiles_match_a_synthetic_delay() {
    // the sink waits 40 ms before every reply: every ack latency is 40 ms and a bit
    use crate::sink::{Faults, Sink, SinkConfig};
    let sink = Sink::start(SinkConfig {
        faults: Faults {
            delay: Duration::from_millis(40),
            ..Faults::default()
        },
        ..SinkConfig::default()
    })
    .await
    .unwrap();
    let r = execute(&args(sink.local_addr(), &["-n", "30", "-c", "3"]))
        .await
        .unwrap()
        .report;
    assert!(r.success(), "{}", r.text());
    let l = &r.ack_latency_ms;
    assert_eq!(l.count, 30);
    // at least the delay, and not much more (a loaded CI machine adds some)
    for (name, v, most) in [
        ("p50", l.p50, 60.0),
        ("mean", l.mean, 70.0),
        ("p90", l.p90, 100.0),
        ("p99", l.p99, 100.0),
    ] {
        assert!((40.0..most).contains(&v), "{name} {v} ms:\n{}", r.text());
    }
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
    // and the per-second buckets say the same
    let p50s: Vec<f64> = r.timeline.iter().filter_map(|s| s.ack_p50_ms).collect();
    assert!(!p50s.is_empty());
    assert!(p50s.iter().all(|v| (40.0..70.0).contains(v)), "{p50s:?}");
    assert_eq!(r.timeline.iter().map(|s| s.accepted).sum::<u64>(), 30);
    // the HTML report: summary and the two charts
    let page = html_report(&r, "loadtest smtp -n 30");
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("Ack latency per second") && page.contains("Rate per second"));
    assert!(page.contains(">p99<") && page.contains("loadtest smtp -n 30"));
}

#[tokio::test]
async fn open_loop_paces_and_stamps_the_scheduled_time() {
    use crate::sink::{Sink, SinkConfig};
    let sink = Sink::start(SinkConfig {
        keep_messages: true,
        ..SinkConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let res = execute(&args(
        sink.local_addr(),
        &["--rate", "50", "-n", "25", "-c", "2", "--stamp"],
    ))
    .await
    .unwrap();
    // 25 messages due every 20 ms: the last one at 480 ms
    assert!(started.elapsed() >= Duration::from_millis(470));
    let r = res.report;
    assert!(r.success(), "{}", r.text());
    assert_eq!(r.ack_latency_from, "scheduled send time");
    assert_eq!(r.rate_per_sec, Some(50.0));
    assert!(r.send_lag_ms.is_some());
    let mut stamps: Vec<(u64, u64)> = sink
        .messages()
        .iter()
        .map(|m| {
            let seq = verify(&m.data).unwrap().seq;
            (seq, m.sent_at_us.unwrap())
        })
        .collect();
    stamps.sort();
    assert_eq!(stamps.len(), 25);
    // X-Loadtest-Sent-At is the schedule: start + (seq - 1) * 20 ms, exactly
    for (seq, at) in &stamps {
        assert_eq!(*at, res.start_us + (seq - 1) * 20_000, "seq {seq}");
    }
}

#[tokio::test]
async fn a_size_mix_sends_each_size_in_its_share_and_every_body_verifies() {
    use crate::sink::{ChecksumStatus, Sink, SinkConfig};
    let sink = Sink::start(SinkConfig {
        keep_messages: true,
        verify: true,
        ..SinkConfig::default()
    })
    .await
    .unwrap();
    let res = execute(&args(
        sink.local_addr(),
        &["-n", "400", "-c", "4", "--size-mix", "1k=75,16k=25"],
    ))
    .await
    .unwrap();
    assert!(res.report.success(), "{}", res.report.text());
    let messages = sink.messages();
    assert_eq!(messages.len(), 400);
    assert!(messages.iter().all(|m| m.checksum == ChecksumStatus::Ok));
    // Body sizes are exact; the header block adds a few hundred bytes to each.
    let large = messages.iter().filter(|m| m.size > 16 * 1024).count();
    let small = messages.iter().filter(|m| m.size < 2 * 1024).count();
    assert_eq!(large + small, 400, "every message is one of the two sizes");
    assert!(
        (70..=130).contains(&large),
        "{large} of 400 at 16k, expected ~100"
    );
}

#[test]
fn size_and_size_mix_are_parsed() {
    let a = args(
        "127.0.0.1:25".parse().unwrap(),
        &["--size-mix", "2k=1,4k=3"],
    );
    assert_eq!(a.size_mix.unwrap().sizes(), vec![2048, 4096]);
    let parsed = TestCli::try_parse_from(["t", "--size-mix", "0k=0"]);
    assert!(parsed.is_err());
}
