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

use crate::generator::{BodyTemplate, MessageGen, rfc5322_date, unix_micros};
use crate::mix::{DomainMix, SizeMix};
use crate::pacer::Pacer;
use crate::schedule::{Claim, Schedule};
use crate::smtp_client::{ClientError, SmtpClient};
use crate::stats::{Counters, Latency, Report};
use crate::timeline::Timeline;
use crate::tracker::Tracker;

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
    /// Server to load, HOST:PORT; several separated by commas (e.g. two ingress
    /// nodes): each new connection goes to the next one in turn.
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

    /// Body size distribution instead of one --size: SIZE=WEIGHT,... with sizes in bytes
    /// or with a k/m suffix, e.g. `2k=60,20k=30,200k=9,2m=1`; each message's size is
    /// drawn by its sequence number.
    #[arg(long, value_name = "MIX", value_parser = SizeMix::parse)]
    pub size_mix: Option<SizeMix>,

    /// Recipients per message.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub recipients: u32,

    /// Envelope and header sender.
    #[arg(long, default_value = "loadtest@loadtest.invalid")]
    pub from: String,

    /// Recipient domain; recipients are userN@DOMAIN, N = 1, 2, ...
    /// [default: example.test; e2e: the --domain-mix default]
    #[arg(long, value_name = "DOMAIN", conflicts_with = "domain_mix")]
    pub to_domain: Option<String>,

    /// Weighted recipient domains, DOMAIN=WEIGHT,...: each recipient userN gets one,
    /// in proportion to the weights (e2e default:
    /// gmail.test=40,outlook.test=25,yahoo.test=15,other.test=20).
    #[arg(long, value_name = "MIX")]
    pub domain_mix: Option<String>,

    /// Open loop: start a message every 1/RATE seconds whatever the replies (up to -c
    /// at once); latency counts from each message's scheduled time.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

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

    /// Also write the summary (with per-second buckets) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report (summary, rate and latency charts) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

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
    /// written, or to its scheduled time with --rate (for end-to-end latency at the
    /// receiving sink; always on in e2e).
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

/// What `loadtest e2e` (or a test) plugs into a run.
#[derive(Default)]
pub struct Hooks {
    /// Run id of the Message-IDs [default: random].
    pub run_id: Option<u64>,
    /// Recipient domains [default: from the arguments].
    pub mix: Option<Arc<DomainMix>>,
    /// Per-second buckets to fill [default: a new timeline starting now].
    pub timeline: Option<Arc<Timeline>>,
    /// Told about every acknowledged message.
    pub tracker: Option<Arc<Tracker>>,
    /// Always add `X-Loadtest-Sent-At`, as with --stamp.
    pub stamp: bool,
    /// Appended to the progress bar's message.
    pub progress: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

/// The recipient domains the arguments ask for (`default` when they name none).
pub fn domain_mix(args: &SmtpArgs, default: &str) -> anyhow::Result<DomainMix> {
    match (&args.to_domain, &args.domain_mix) {
        (Some(_), Some(_)) => bail!("--to-domain and --domain-mix exclude each other"),
        (Some(d), None) => DomainMix::parse(d).map_err(|e| anyhow::anyhow!("--to-domain: {e}")),
        (None, Some(m)) => DomainMix::parse(m).map_err(|e| anyhow::anyhow!("--domain-mix: {e}")),
        (None, None) => DomainMix::parse(default).map_err(anyhow::Error::msg),
    }
}

/// Everything the workers share.
struct Shared {
    /// One body template per size of the size mix (one without a mix).
    templates: Vec<Arc<BodyTemplate>>,
    size_mix: Option<SizeMix>,
    /// Servers to load; connections go to each in turn.
    addrs: Vec<SocketAddr>,
    next_addr: std::sync::atomic::AtomicUsize,
    helo: String,
    mix: Arc<DomainMix>,
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

    schedule: Schedule,
    timeline: Arc<Timeline>,
    tracker: Option<Arc<Tracker>>,
    connect_failures: AtomicU64,
    mode: OnceLock<String>,
    warned_no_chunking: AtomicBool,

    /// For the progress bar.
    done: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<Latency>,
    /// Open loop: how late transactions started after their scheduled time.
    send_lag: Mutex<Latency>,
}

/// Entry point of `loadtest smtp`: run, print the summary, write the JSON and HTML.
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
    if let Some(path) = &args.html {
        let html = html_report(&result.report, &command_line());
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
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
    /// Unix microseconds when the first message was due (the start of the run).
    pub start_us: u64,
    pub run_id: u64,
}

/// The run itself.
pub async fn execute(args: &SmtpArgs) -> anyhow::Result<RunResult> {
    execute_with(args, Hooks::default()).await
}

/// The run, with what `hooks` plugs in.
pub async fn execute_with(args: &SmtpArgs, hooks: Hooks) -> anyhow::Result<RunResult> {
    let mut addrs = Vec::new();
    for one in args.addr.split(',').map(str::trim) {
        let addr = tokio::net::lookup_host(one)
            .await
            .with_context(|| format!("resolving {one}"))?
            .next()
            .with_context(|| format!("{one} resolves to no address"))?;
        addrs.push(addr);
    }
    let first = args.addr.split(',').next().unwrap_or_default().trim();
    let host = match first.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => first.to_owned(),
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
        Some((
            TlsConnector::from(smtp_wire::tls::unverified_client()),
            name,
        ))
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

    let mix = match hooks.mix {
        Some(m) => m,
        None => Arc::new(domain_mix(args, "example.test")?),
    };
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("bad --rate {r}: want messages per second > 0");
    }
    let run_id: u64 = hooks.run_id.unwrap_or_else(rand::random);
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sizes = args
        .size_mix
        .as_ref()
        .map_or_else(|| vec![args.size], SizeMix::sizes);
    let templates: Vec<Arc<BodyTemplate>> = sizes
        .into_iter()
        .map(|size| Arc::new(BodyTemplate::new(size, run_id)))
        .collect();
    let template = templates[0].clone();

    let (ack_tx, ack_thread) = match &args.ack_log {
        Some(path) => {
            let (tx, thread) = spawn_ack_writer(path)?;
            (Some(tx), Some(thread))
        }
        None => (None, None),
    };

    let start = Instant::now();
    let start_us = unix_micros();
    let timeline = match hooks.timeline {
        Some(t) => {
            t.set_start(start_us);
            t
        }
        None => Arc::new(Timeline::new(start_us)),
    };
    let pacer = match args.rate {
        Some(rate) => Some(
            Pacer::new(
                rate,
                tokio::time::Instant::from_std(start),
                start_us,
                limit,
                duration,
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let stamp = args.stamp || hooks.stamp;
    let shared = Arc::new(Shared {
        templates,
        size_mix: args.size_mix.clone(),
        addrs,
        next_addr: std::sync::atomic::AtomicUsize::new(0),
        helo: args.helo.clone(),
        mix: mix.clone(),
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
        stamp,
        schedule: Schedule::new(limit, duration.map(|d| start + d), pacer),
        timeline: timeline.clone(),
        tracker: hooks.tracker.clone(),
        connect_failures: AtomicU64::new(0),
        mode: OnceLock::new(),
        warned_no_chunking: AtomicBool::new(false),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: Mutex::new(Latency::default()),
        send_lag: Mutex::new(Latency::default()),
    });

    // Ctrl-C: first stops gracefully (in-flight messages finish), second exits.
    let on_ctrl_c = {
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.schedule.stop_with("interrupted");
                eprintln!("\ninterrupted: finishing in-flight messages (Ctrl-C again to abort)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };

    let bar = progress_bar(args, limit, duration);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        let extra = hooks.progress.clone();
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
                let extra = extra
                    .as_ref()
                    .map(|f| format!(", {}", f()))
                    .unwrap_or_default();
                if limit.is_some() {
                    bar.set_message(format!("{rate:.0} msg/s, {failed} failed{extra}"));
                } else {
                    bar.set_message(format!(
                        "{done} msgs, {rate:.0} msg/s, {failed} failed{extra}"
                    ));
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
    on_ctrl_c.abort();
    bar.finish_and_clear();

    let mut ack_error = None;
    if let Some(thread) = ack_thread {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => ack_error = Some(format!("ack log: {e}")),
            Err(_) => ack_error = Some("ack log writer panicked".to_owned()),
        }
    }

    let stop_reason = shared.schedule.stop_reason();
    let latency = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
    let mut mode = match &args.size_mix {
        Some(mix) => format!(
            "body sizes {mix} (mean {:.0} bytes), {} rcpt/msg",
            mix.mean(),
            args.recipients
        ),
        None => format!("{} bytes/body, {} rcpt/msg", args.size, args.recipients),
    };
    if let Some(m) = shared.mode.get() {
        let _ = write!(mode, ", {m}");
    }
    if let Some(r) = args.rate {
        let _ = write!(mode, ", open loop at {r} msg/s");
    }
    let mut report = Report::new(
        args.addr.clone(),
        mode,
        args.connections as usize,
        &counters,
        &latency,
        elapsed,
        stop_reason,
    );
    report.rate_per_sec = args.rate;
    report.ack_latency_from = if args.rate.is_some() {
        "scheduled send time".into()
    } else {
        "end of data".into()
    };
    if args.rate.is_some() {
        report.send_lag_ms = Some(
            shared
                .send_lag
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .summary(),
        );
    }
    report.recipient_domains = mix.to_string();
    report.timeline = timeline.seconds_until(Some(unix_micros()));
    Ok(RunResult {
        report,
        ack_error,
        start_us,
        run_id,
    })
}

/// The command line, for the reports.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect();
    args.join(" ")
}

/// The `--html` page of `loadtest smtp`.
pub fn html_report(r: &Report, command: &str) -> String {
    use crate::html::{self, Chart, Page, item, section, series};
    let l = &r.ack_latency_ms;
    let ms = |v: f64| format!("{v:.3} ms");
    let mut rows = vec![
        section("Load"),
        item("target", &r.target),
        item("mode", &r.mode),
        item("recipient domains", &r.recipient_domains),
        item(
            "connections",
            format!(
                "{} concurrent, {} opened",
                r.connections, r.connections_opened
            ),
        ),
        section("Result"),
        item("sent", r.sent),
        item("accepted", r.accepted),
        item("rejected", r.rejected),
        item("errors", r.errors),
        item("elapsed", format!("{:.3} s", r.elapsed_secs)),
        item("accepted/s", format!("{:.1}", r.messages_per_sec)),
        item("MB/s", format!("{:.2}", r.mb_per_sec)),
        item("stopped", &r.stop_reason),
        section(&format!("Ack latency (from {})", r.ack_latency_from)),
        item("p50", ms(l.p50)),
        item("p90", ms(l.p90)),
        item("p95", ms(l.p95)),
        item("p99", ms(l.p99)),
        item("max", ms(l.max)),
        item("mean", ms(l.mean)),
    ];
    if let Some(lag) = &r.send_lag_ms {
        rows.push(item(
            "send lag p50 / p99 / max",
            format!("{:.3} / {:.3} / {:.3} ms", lag.p50, lag.p99, lag.max),
        ));
    }
    if let Some(e) = &r.last_error {
        rows.push(item("last error", e));
    }
    let tl = &r.timeline;
    let page = Page {
        title: format!("loadtest smtp: {}", r.target),
        subtitle: vec![command.to_owned()],
        rows,
        charts: vec![
            Chart {
                title: "Rate per second".into(),
                unit: "messages/s".into(),
                series: vec![
                    series(tl, "accepted", html::BLUE, false, |s| {
                        html::rate(s, s.accepted)
                    }),
                    series(tl, "failed", html::RED, true, |s| html::rate(s, s.failed)),
                ],
            },
            Chart {
                title: format!("Ack latency per second (from {})", r.ack_latency_from),
                unit: "ms".into(),
                series: vec![
                    series(tl, "p50", html::BLUE, false, |s| s.ack_p50_ms),
                    series(tl, "p99", html::ORANGE, false, |s| s.ack_p99_ms),
                ],
            },
        ],
        notes: vec![
            "Each point is one second of the run (the rate of a last, partial second is over \
             the part the run covered, and not drawn when that is under 0.2 s). Latency \
             percentiles per second are over the messages acknowledged in that second."
                .into(),
        ],
    };
    html::render(&page)
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
    /// The recipients refused at RCPT are in `Bufs::refused`.
    Accepted {
        /// When the end of data was written.
        data_done: Instant,
    },
    /// A negative reply; `reset` when a transaction may still be open.
    Rejected { code: u16, reset: bool },
}

/// Per-worker reusable buffers.
struct Bufs {
    msg: MessageGen,
    cmds: Vec<u8>,
    to: String,
    /// Positions (0-based) of the recipients refused at RCPT, this message.
    refused: Vec<u64>,
    /// Open loop: the scheduled time for `X-Loadtest-Sent-At` (Unix µs).
    stamp_at: Option<u64>,
}

impl Bufs {
    /// Sets `X-Loadtest-Sent-At` (when stamping): the scheduled time in open loop,
    /// now otherwise.
    fn stamp(&mut self) {
        match self.stamp_at {
            Some(us) => self.msg.stamp(us),
            None => self.msg.stamp_now(),
        }
    }
}

async fn open_session(sh: &Shared) -> Result<SmtpClient, ClientError> {
    let turn = sh
        .next_addr
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let addr = sh.addrs[turn % sh.addrs.len()];
    let mut c = SmtpClient::connect(addr, sh.connect_timeout, sh.timeout).await?;
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
        refused: Vec::new(),
        stamp_at: None,
    };
    let mut client: Option<SmtpClient> = None;
    let mut on_conn = 0u64;
    let mut pipelining = false;
    let mut bdat = false;
    let mut backoff_n = 0u32;

    'messages: while let Some(Claim { seq, ticket }) = sh.schedule.claim().await {
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
            if sh.schedule.stopped() {
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
                        sh.schedule.stop_with(format!(
                            "gave up after {n} consecutive connect failures (last: {e})"
                        ));
                    } else if sh.stop_on_error {
                        sh.schedule.stop_with(format!("--stop-on-error: {e}"));
                    }
                    sh.schedule.backoff(&mut backoff_n).await;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        st.sent += 1;
        on_conn += 1;
        // open loop: stamp and measure from the scheduled time, however late we are
        bufs.stamp_at = ticket.map(|t| t.due_unix_us);
        if let Some(t) = &ticket {
            let lag = tokio::time::Instant::now().saturating_duration_since(t.due);
            sh.send_lag
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(lag);
        }
        match transact(c, &mut bufs, &sh, seq, pipelining, bdat).await {
            Ok(Outcome::Accepted { data_done }) => {
                let now = Instant::now();
                let from = ticket.map_or(data_done, |t| t.due.into_std());
                let latency = now.saturating_duration_since(from);
                st.accepted += 1;
                st.rcpt_rejected += bufs.refused.len() as u64;
                st.accepted_bytes += bufs.msg.len() as u64;
                sh.latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(latency);
                sh.timeline.accepted(unix_micros(), latency);
                if let Some(t) = &sh.tracker {
                    t.accepted(seq, &bufs.refused);
                }
                if let Some(tx) = &ack {
                    let _ = tx.send(AckRecord {
                        queue_id: c.queue_id().to_vec(),
                        seq,
                        checksum: bufs.msg.checksum(),
                    });
                }
                sh.done.fetch_add(1, Relaxed);
            }
            Ok(Outcome::Rejected { code, reset }) => {
                st.reject(code);
                sh.timeline.failed(unix_micros());
                sh.done.fetch_add(1, Relaxed);
                sh.failed.fetch_add(1, Relaxed);
                if sh.stop_on_error {
                    sh.schedule.stop_with(format!(
                        "--stop-on-error: message {seq} rejected: {}",
                        c.reply()
                    ));
                }
                if code == 421 {
                    client = None; // the server is closing the connection
                    sh.schedule.backoff(&mut backoff_n).await;
                } else if reset && !matches!(c.rset().await, Ok(true)) {
                    client = None;
                }
            }
            Err(e) => {
                st.error(e.kind(), e.to_string());
                st.failed_in_flight += 1;
                sh.timeline.failed(unix_micros());
                sh.done.fetch_add(1, Relaxed);
                sh.failed.fetch_add(1, Relaxed);
                client = None;
                if sh.stop_on_error {
                    sh.schedule
                        .stop_with(format!("--stop-on-error: message {seq}: {e}"));
                }
                sh.schedule.backoff(&mut backoff_n).await;
            }
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
    st
}

/// Sleeps 10 ms, 20 ms, ... up to 1 s, waking early when the run stops.
fn rcpt_cmd(buf: &mut Vec<u8>, n: u64, mix: &DomainMix) {
    let domain = mix.pick(n);
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
    b.refused.clear();
    let _ = write!(b.to, "user{first_user}@{}", sh.mix.pick(first_user));
    if let Some(mix) = &sh.size_mix {
        b.msg.set_template(sh.templates[mix.pick(seq)].clone());
    }
    b.msg.prepare(seq, &b.to);
    let positive = |code: u16| (200..300).contains(&code);

    if pipelining {
        b.cmds.clear();
        b.cmds.extend_from_slice(&sh.mail_cmd);
        for i in 0..k {
            rcpt_cmd(&mut b.cmds, first_user + i, &sh.mix);
        }
        if bdat {
            use std::io::Write as _;
            write!(b.cmds, "BDAT {} LAST\r\n", b.msg.len()).expect("write to Vec");
            c.write(&b.cmds).await?;
            b.stamp();
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
        for i in 0..k {
            let code = c.read_reply().await?;
            if code == 421 {
                return Ok(Outcome::Rejected { code, reset: false });
            }
            if positive(code) {
                ok += 1;
            } else {
                first_bad.get_or_insert(code);
                b.refused.push(i);
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
                return Ok(Outcome::Accepted { data_done: t0 });
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
        return send_data(c, b).await;
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
        rcpt_cmd(&mut b.cmds, first_user + i, &sh.mix);
        let code = c.command(&b.cmds).await?;
        if code == 421 {
            return Ok(Outcome::Rejected { code, reset: false });
        }
        if positive(code) {
            ok += 1;
        } else {
            first_bad.get_or_insert(code);
            b.refused.push(i);
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
        b.stamp();
        for part in b.msg.parts_raw() {
            c.write(part).await?;
        }
        c.flush().await?;
        let t0 = Instant::now();
        let code = c.read_reply().await?;
        if positive(code) {
            return Ok(Outcome::Accepted { data_done: t0 });
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
    send_data(c, b).await
}

/// After a 354: the dot-stuffed message, ".", and the final reply.
async fn send_data(c: &mut SmtpClient, b: &mut Bufs) -> Result<Outcome, ClientError> {
    b.stamp();
    for part in b.msg.parts_stuffed() {
        c.write(part).await?;
    }
    c.write(b".\r\n").await?;
    c.flush().await?;
    let t0 = Instant::now();
    let code = c.read_reply().await?;
    if (200..300).contains(&code) {
        Ok(Outcome::Accepted { data_done: t0 })
    } else {
        Ok(Outcome::Rejected { code, reset: false })
    }
}

#[cfg(test)]
mod tests;
