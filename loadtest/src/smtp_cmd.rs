//! `loadtest smtp`: push messages at an SMTP server over many reused connections and
//! report throughput, failures and ack latency.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::generator::{BodyTemplate, MessageGen, rfc5322_date};
use crate::smtp_client::{self, ClientError, SmtpClient};
use crate::stats::{Counters, Latency, Report};

/// Messages sent when neither `--messages` nor `--duration` is given.
const DEFAULT_MESSAGES: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pipelining {
    /// Pipeline when the server offers PIPELINING.
    Auto,
    /// Always pipeline, even when not offered.
    On,
    /// Never pipeline: one command, one reply.
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct SmtpArgs {
    /// Server to load, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub addr: String,

    /// Messages to send in total [default: 1000 unless --duration is given].
    #[arg(short = 'n', long)]
    pub messages: Option<u64>,

    /// Stop after this many seconds (alone or together with --messages, whichever
    /// comes first).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Reconnect after this many messages on one connection [default: never].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages_per_connection: Option<u64>,

    /// Body size in bytes (after the header block).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub size: usize,

    /// Recipients per message.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub recipients: u32,

    /// Envelope and header sender.
    #[arg(long, default_value = "loadtest@loadtest.invalid")]
    pub from: String,

    /// Recipient domain; recipients are userN@DOMAIN, N = 1, 2, ...
    #[arg(long, value_name = "DOMAIN", default_value = "example.test")]
    pub to_domain: String,

    /// Name sent with EHLO.
    #[arg(long, default_value = "loadtest.invalid")]
    pub helo: String,

    /// Send MAIL, RCPTs and DATA in one write and then read the replies; bare
    /// --pipelining means "on".
    #[arg(long, value_enum, default_value = "auto", num_args = 0..=1, default_missing_value = "on")]
    pub pipelining: Pipelining,

    /// Use BDAT ... LAST instead of DATA when the server offers CHUNKING.
    #[arg(long)]
    pub bdat: bool,

    /// Upgrade with STARTTLS (any certificate is accepted).
    #[arg(long)]
    pub starttls: bool,

    /// TLS server name (SNI) [default: the host part of --addr].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// AUTH PLAIN with these credentials (after STARTTLS if given).
    #[arg(long, value_name = "USER:PASS")]
    pub auth: Option<String>,

    /// Append "<queue-id>\t<seq>\t<checksum>" for every message the server acked with
    /// 2xx; written only after the reply was received.
    #[arg(long, value_name = "FILE")]
    pub ack_log: Option<PathBuf>,

    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Stop the whole run at the first rejection or error.
    #[arg(long)]
    pub stop_on_error: bool,

    /// Give up after this many consecutive failures to open a session.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_connect_failures: u64,

    /// Seconds to wait for each reply or write.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,

    /// Seconds to wait for a TCP connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Add `X-Loadtest-Sent-At: <unix micros>` to each message, set when its data is
    /// written (for end-to-end latency at the receiving sink).
    #[arg(long)]
    pub stamp: bool,

    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// One line of the ack log.
struct AckRecord {
    queue_id: Vec<u8>,
    seq: u64,
    checksum: u64,
}

/// Everything the workers share.
struct Shared {
    addr: SocketAddr,
    helo: String,
    to_domain: String,
    recipients: u64,
    mail_cmd: Vec<u8>,
    pipelining: Pipelining,
    bdat: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    auth: Option<(String, String)>,
    per_connection: Option<u64>,
    stop_on_error: bool,
    max_connect_failures: u64,
    timeout: Duration,
    connect_timeout: Duration,

    template: Arc<BodyTemplate>,
    run_id: u64,
    from: String,
    date: String,
    stamp: bool,

    limit: Option<u64>,
    deadline: Option<Instant>,
    next_seq: AtomicU64,
    stop: AtomicBool,
    stop_reason: Mutex<Option<String>>,
    connect_failures: AtomicU64,
    mode: OnceLock<String>,
    warned_no_chunking: AtomicBool,

    /// For the progress bar.
    done: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<Latency>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    fn stop_with(&self, reason: impl Into<String>) {
        let mut r = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.stop.store(true, Relaxed);
    }

    /// The next sequence number to send, or None when the run is over.
    fn claim(&self) -> Option<u64> {
        if self.stopped() {
            return None;
        }
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            self.stop_with("duration reached");
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Relaxed) + 1;
        if let Some(n) = self.limit
            && seq > n
        {
            // not a stop: workers holding earlier numbers still send them
            return None;
        }
        Some(seq)
    }
}

/// Entry point of `loadtest smtp`: run, print the summary, write the JSON.
pub async fn run(args: SmtpArgs) -> anyhow::Result<ExitCode> {
    let result = execute(&args).await?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(result.report.text().as_bytes());
    let _ = out.flush();
    drop(out);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&result.report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(e) = result.ack_error {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if result.report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub struct RunResult {
    pub report: Report,
    /// The ack log could not be written completely.
    pub ack_error: Option<String>,
}

/// The run itself.
pub async fn execute(args: &SmtpArgs) -> anyhow::Result<RunResult> {
    let addr = tokio::net::lookup_host(&args.addr)
        .await
        .with_context(|| format!("resolving {}", args.addr))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.addr))?;
    let host = match args.addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => args.addr.clone(),
    };
    if args.timeout <= 0.0 || args.connect_timeout <= 0.0 {
        bail!("timeouts must be positive");
    }
    let auth = match &args.auth {
        None => None,
        Some(s) => {
            let (u, p) = s.split_once(':').context("--auth wants USER:PASS")?;
            Some((u.to_owned(), p.to_owned()))
        }
    };
    let tls = if args.starttls {
        let name = args.tls_server_name.clone().unwrap_or(host);
        let name = ServerName::try_from(name.clone())
            .with_context(|| format!("bad TLS server name {name:?}"))?;
        Some((TlsConnector::from(smtp_client::insecure_tls_config()), name))
    } else {
        None
    };
    let limit = match (args.messages, args.duration) {
        (None, None) => Some(DEFAULT_MESSAGES),
        (n, _) => n,
    };
    let duration = match args.duration {
        Some(d) if !(d.is_finite() && d >= 0.0) => bail!("bad --duration {d}"),
        Some(d) => Some(Duration::from_secs_f64(d)),
        None => None,
    };

    let run_id: u64 = rand::random();
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let template = Arc::new(BodyTemplate::new(args.size, run_id));

    let (ack_tx, ack_thread) = match &args.ack_log {
        Some(path) => {
            let (tx, thread) = spawn_ack_writer(path)?;
            (Some(tx), Some(thread))
        }
        None => (None, None),
    };

    let start = Instant::now();
    let shared = Arc::new(Shared {
        addr,
        helo: args.helo.clone(),
        to_domain: args.to_domain.clone(),
        recipients: u64::from(args.recipients),
        mail_cmd: format!("MAIL FROM:<{}>\r\n", args.from).into_bytes(),
        pipelining: args.pipelining,
        bdat: args.bdat,
        tls,
        auth,
        per_connection: args.messages_per_connection,
        stop_on_error: args.stop_on_error,
        max_connect_failures: args.max_connect_failures.max(1),
        timeout: Duration::from_secs_f64(args.timeout),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        template,
        run_id,
        from: args.from.clone(),
        date: rfc5322_date(unix),
        stamp: args.stamp,
        limit,
        deadline: duration.map(|d| start + d),
        next_seq: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stop_reason: Mutex::new(None),
        connect_failures: AtomicU64::new(0),
        mode: OnceLock::new(),
        warned_no_chunking: AtomicBool::new(false),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: Mutex::new(Latency::default()),
    });

    // Ctrl-C: first stops gracefully (in-flight messages finish), second exits.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop_with("interrupted");
                eprintln!("\ninterrupted: finishing in-flight messages (Ctrl-C again to abort)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    let bar = progress_bar(args, limit, duration);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = shared.done.load(Relaxed);
                let now = Instant::now();
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done);
                if limit.is_some() {
                    bar.set_position(done);
                } else {
                    bar.set_position((now - start).as_millis() as u64);
                }
                let failed = shared.failed.load(Relaxed);
                if limit.is_some() {
                    bar.set_message(format!("{rate:.0} msg/s, {failed} failed"));
                } else {
                    bar.set_message(format!("{done} msgs, {rate:.0} msg/s, {failed} failed"));
                }
            }
        })
    };

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        workers.spawn(worker(shared.clone(), ack_tx.clone()));
    }
    drop(ack_tx);
    let mut counters = Counters::default();
    while let Some(res) = workers.join_next().await {
        match res {
            Ok(c) => counters.merge(&c),
            Err(e) => counters.error("panic", format!("worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();

    let mut ack_error = None;
    if let Some(thread) = ack_thread {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => ack_error = Some(format!("ack log: {e}")),
            Err(_) => ack_error = Some("ack log writer panicked".to_owned()),
        }
    }

    let stop_reason = shared
        .stop_reason
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| match limit {
            Some(n) => format!("all {n} messages sent"),
            None => "done".to_owned(),
        });
    let latency = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
    let mut mode = format!("{} bytes/body, {} rcpt/msg", args.size, args.recipients);
    if let Some(m) = shared.mode.get() {
        let _ = write!(mode, ", {m}");
    }
    let report = Report::new(
        args.addr.clone(),
        mode,
        args.connections as usize,
        &counters,
        &latency,
        elapsed,
        stop_reason,
    );
    Ok(RunResult { report, ack_error })
}

fn progress_bar(args: &SmtpArgs, limit: Option<u64>, duration: Option<Duration>) -> ProgressBar {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (len, template) = match (limit, duration) {
        (Some(n), _) => (n, "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}"),
        (None, Some(d)) => (d.as_millis() as u64, "{elapsed_precise} [{bar:40}] {msg}"),
        (None, None) => (0, "{elapsed_precise} {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Starts the ack-log writer thread: it writes what arrives and flushes whenever the
/// channel is momentarily empty, so every line is on disk soon after its 2xx and all
/// of them once the senders are gone.
fn spawn_ack_writer(
    path: &std::path::Path,
) -> anyhow::Result<(
    mpsc::Sender<AckRecord>,
    std::thread::JoinHandle<std::io::Result<u64>>,
)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening ack log {}", path.display()))?;
    let (tx, rx) = mpsc::channel::<AckRecord>();
    let thread = std::thread::Builder::new().name("ack-log".into()).spawn(
        move || -> std::io::Result<u64> {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
            let mut lines = 0u64;
            while let Ok(first) = rx.recv() {
                let mut rec = Some(first);
                while let Some(r) = rec {
                    w.write_all(&r.queue_id)?;
                    writeln!(w, "\t{}\t{:016x}", r.seq, r.checksum)?;
                    lines += 1;
                    rec = rx.try_recv().ok();
                }
                w.flush()?;
            }
            w.flush()?;
            Ok(lines)
        },
    )?;
    Ok((tx, thread))
}

enum Outcome {
    /// 2xx after the end of data; the reply (with the queue id) is the client's last.
    Accepted {
        latency: Duration,
        rcpt_refused: u64,
    },
    /// A negative reply; `reset` when a transaction may still be open.
    Rejected { code: u16, reset: bool },
}

/// Per-worker reusable buffers.
struct Bufs {
    msg: MessageGen,
    cmds: Vec<u8>,
    to: String,
}

async fn open_session(sh: &Shared) -> Result<SmtpClient, ClientError> {
    let mut c = SmtpClient::connect(sh.addr, sh.connect_timeout, sh.timeout).await?;
    c.greeting().await?;
    c.ehlo(&sh.helo).await?;
    if let Some((connector, name)) = &sh.tls {
        if !c.capabilities().starttls {
            return Err(ClientError::Protocol(
                "server does not offer STARTTLS".into(),
            ));
        }
        c = c.starttls(connector, name.clone()).await?;
        c.ehlo(&sh.helo).await?;
    }
    if let Some((user, pass)) = &sh.auth {
        c.auth_plain(user, pass).await?;
    }
    Ok(c)
}

async fn worker(sh: Arc<Shared>, ack: Option<mpsc::Sender<AckRecord>>) -> Counters {
    let mut st = Counters::default();
    let mut msg = MessageGen::new(sh.template.clone(), sh.run_id, &sh.from, &sh.date);
    if sh.stamp {
        msg = msg.with_stamp();
    }
    let mut bufs = Bufs {
        msg,
        cmds: Vec::with_capacity(256),
        to: String::with_capacity(64),
    };
    let mut client: Option<SmtpClient> = None;
    let mut on_conn = 0u64;
    let mut pipelining = false;
    let mut bdat = false;
    let mut backoff_n = 0u32;

    'messages: while let Some(seq) = sh.claim() {
        // a session to send on
        loop {
            if let (Some(limit), Some(_)) = (sh.per_connection, &client)
                && on_conn >= limit
            {
                client.take().expect("checked").quit().await;
            }
            if client.is_some() {
                break;
            }
            if sh.stopped() {
                break 'messages;
            }
            match open_session(&sh).await {
                Ok(c) => {
                    sh.connect_failures.store(0, Relaxed);
                    backoff_n = 0;
                    st.connections += 1;
                    on_conn = 0;
                    let caps = c.capabilities();
                    pipelining = match sh.pipelining {
                        Pipelining::Auto => caps.pipelining,
                        Pipelining::On => true,
                        Pipelining::Off => false,
                    };
                    bdat = sh.bdat && caps.chunking;
                    if sh.bdat && !caps.chunking && !sh.warned_no_chunking.swap(true, Relaxed) {
                        eprintln!("warning: server does not offer CHUNKING; using DATA");
                    }
                    let _ = sh.mode.set(format!(
                        "{}{}{}",
                        if bdat { "BDAT" } else { "DATA" },
                        if pipelining { ", pipelining" } else { "" },
                        if sh.tls.is_some() { ", STARTTLS" } else { "" },
                    ));
                    client = Some(c);
                }
                Err(e) => {
                    st.error(e.kind(), e.to_string());
                    let n = sh.connect_failures.fetch_add(1, Relaxed) + 1;
                    if n >= sh.max_connect_failures {
                        sh.stop_with(format!(
                            "gave up after {n} consecutive connect failures (last: {e})"
                        ));
                    } else if sh.stop_on_error {
                        sh.stop_with(format!("--stop-on-error: {e}"));
                    }
                    backoff(&sh, &mut backoff_n).await;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        st.sent += 1;
        on_conn += 1;
        match transact(c, &mut bufs, &sh, seq, pipelining, bdat).await {
            Ok(Outcome::Accepted {
                latency,
                rcpt_refused,
            }) => {
                st.accepted += 1;
                st.rcpt_rejected += rcpt_refused;
                st.accepted_bytes += bufs.msg.len() as u64;
                sh.latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(latency);
                if let Some(tx) = &ack {
                    let _ = tx.send(AckRecord {
                        queue_id: c.reply().queue_id().to_vec(),
                        seq,
                        checksum: bufs.msg.checksum(),
                    });
                }
                sh.done.fetch_add(1, Relaxed);
            }
            Ok(Outcome::Rejected { code, reset }) => {
                st.reject(code);
                sh.done.fetch_add(1, Relaxed);
                sh.failed.fetch_add(1, Relaxed);
                if sh.stop_on_error {
                    sh.stop_with(format!(
                        "--stop-on-error: message {seq} rejected: {code} {}",
                        c.reply().text_lossy()
                    ));
                }
                if code == 421 {
                    client = None; // the server is closing the connection
                    backoff(&sh, &mut backoff_n).await;
                } else if reset && !matches!(c.rset().await, Ok(true)) {
                    client = None;
                }
            }
            Err(e) => {
                st.error(e.kind(), e.to_string());
                st.failed_in_flight += 1;
                sh.done.fetch_add(1, Relaxed);
                sh.failed.fetch_add(1, Relaxed);
                client = None;
                if sh.stop_on_error {
                    sh.stop_with(format!("--stop-on-error: message {seq}: {e}"));
                }
                backoff(&sh, &mut backoff_n).await;
            }
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
    st
}

/// Sleeps 10 ms, 20 ms, ... up to 1 s, waking early when the run stops.
async fn backoff(sh: &Shared, n: &mut u32) {
    let mut left = Duration::from_millis(10 << (*n).min(7)).min(Duration::from_secs(1));
    *n += 1;
    if let Some(d) = sh.deadline {
        left = left.min(d.saturating_duration_since(Instant::now()));
    }
    while !left.is_zero() && !sh.stopped() {
        let step = left.min(Duration::from_millis(50));
        tokio::time::sleep(step).await;
        left -= step;
    }
}

fn rcpt_cmd(buf: &mut Vec<u8>, n: u64, domain: &str) {
    use std::io::Write as _;
    write!(buf, "RCPT TO:<user{n}@{domain}>\r\n").expect("write to Vec");
}

/// One message transaction: MAIL, RCPT..., DATA or BDAT.
async fn transact(
    c: &mut SmtpClient,
    b: &mut Bufs,
    sh: &Shared,
    seq: u64,
    pipelining: bool,
    bdat: bool,
) -> Result<Outcome, ClientError> {
    let k = sh.recipients;
    let first_user = (seq - 1) * k + 1;
    b.to.clear();
    let _ = write!(b.to, "user{first_user}@{}", sh.to_domain);
    b.msg.prepare(seq, &b.to);
    let positive = |code: u16| (200..300).contains(&code);

    if pipelining {
        b.cmds.clear();
        b.cmds.extend_from_slice(&sh.mail_cmd);
        for i in 0..k {
            rcpt_cmd(&mut b.cmds, first_user + i, &sh.to_domain);
        }
        if bdat {
            use std::io::Write as _;
            write!(b.cmds, "BDAT {} LAST\r\n", b.msg.len()).expect("write to Vec");
            c.write(&b.cmds).await?;
            b.msg.stamp_now();
            for part in b.msg.parts_raw() {
                c.write(part).await?;
            }
        } else {
            b.cmds.extend_from_slice(b"DATA\r\n");
            c.write(&b.cmds).await?;
        }
        c.flush().await?;
        let t0 = Instant::now();

        let mail = c.read_reply().await?;
        if mail == 421 {
            return Ok(Outcome::Rejected {
                code: 421,
                reset: false,
            });
        }
        let mut ok = 0;
        let mut first_bad = None;
        for _ in 0..k {
            let code = c.read_reply().await?;
            if code == 421 {
                return Ok(Outcome::Rejected { code, reset: false });
            }
            if positive(code) {
                ok += 1;
            } else {
                first_bad.get_or_insert(code);
            }
        }
        let last = c.read_reply().await?;
        let culprit = |last: u16| {
            if !positive(mail) {
                mail
            } else if ok == 0 {
                first_bad.unwrap_or(last)
            } else {
                last
            }
        };
        if bdat {
            if positive(mail) && ok > 0 && positive(last) {
                return accepted(t0, k - ok);
            }
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: last != 421,
            });
        }
        if last != 354 {
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: last != 421,
            });
        }
        if !positive(mail) || ok == 0 {
            // DATA was accepted although nothing can be delivered: end it empty
            c.write(b".\r\n").await?;
            c.flush().await?;
            c.read_reply().await?;
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: true,
            });
        }
        return send_data(c, b, k - ok).await;
    }

    // one command at a time
    let mail = c.command(&sh.mail_cmd).await?;
    if !positive(mail) {
        return Ok(Outcome::Rejected {
            code: mail,
            reset: false,
        });
    }
    let mut ok = 0;
    let mut first_bad = None;
    for i in 0..k {
        b.cmds.clear();
        rcpt_cmd(&mut b.cmds, first_user + i, &sh.to_domain);
        let code = c.command(&b.cmds).await?;
        if code == 421 {
            return Ok(Outcome::Rejected { code, reset: false });
        }
        if positive(code) {
            ok += 1;
        } else {
            first_bad.get_or_insert(code);
        }
    }
    if ok == 0 {
        return Ok(Outcome::Rejected {
            code: first_bad.unwrap_or(554),
            reset: true,
        });
    }
    if bdat {
        use std::io::Write as _;
        b.cmds.clear();
        write!(b.cmds, "BDAT {} LAST\r\n", b.msg.len()).expect("write to Vec");
        c.write(&b.cmds).await?;
        b.msg.stamp_now();
        for part in b.msg.parts_raw() {
            c.write(part).await?;
        }
        c.flush().await?;
        let t0 = Instant::now();
        let code = c.read_reply().await?;
        if positive(code) {
            return accepted(t0, k - ok);
        }
        return Ok(Outcome::Rejected {
            code,
            reset: code != 421,
        });
    }
    let data = c.command(b"DATA\r\n").await?;
    if data != 354 {
        return Ok(Outcome::Rejected {
            code: data,
            reset: data != 421,
        });
    }
    send_data(c, b, k - ok).await
}

/// After a 354: the dot-stuffed message, ".", and the final reply.
async fn send_data(
    c: &mut SmtpClient,
    b: &mut Bufs,
    rcpt_refused: u64,
) -> Result<Outcome, ClientError> {
    b.msg.stamp_now();
    for part in b.msg.parts_stuffed() {
        c.write(part).await?;
    }
    c.write(b".\r\n").await?;
    c.flush().await?;
    let t0 = Instant::now();
    let code = c.read_reply().await?;
    if (200..300).contains(&code) {
        accepted(t0, rcpt_refused)
    } else {
        Ok(Outcome::Rejected { code, reset: false })
    }
}

fn accepted(t0: Instant, rcpt_refused: u64) -> Result<Outcome, ClientError> {
    Ok(Outcome::Accepted {
        latency: t0.elapsed(),
        rcpt_refused,
    })
}

#[cfg(test)]
mod tests;
