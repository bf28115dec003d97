//! `loadtest smtp`: push messages at an SMTP server over many reused connections and
//! report throughput, failures and ack latency.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::generator::{BodyTemplate, MessageGen, rfc5322_date, unix_micros};
use crate::load_page::{command_line, html_report};
use crate::mix::{DomainMix, SizeMix};
use crate::run::{
    self, Clock, ConnectFailures, Limits, ProgressText, RunArgs, Running, Tally, Watch,
};
use crate::schedule::{Claim, Schedule};
use crate::smtp_client::{ClientError, SmtpClient};
use crate::stats::{Counters, Report};
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

    #[command(flatten)]
    pub run: RunArgs,

    /// Reconnect after this many messages on one connection [default: never].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages_per_connection: Option<u64>,

    /// Body size distribution instead of one --size: SIZE=WEIGHT,... with sizes in bytes
    /// or with a k/m suffix, e.g. `2k=60,20k=30,200k=9,2m=1`; each message's size is
    /// drawn by its sequence number.
    #[arg(long, value_name = "MIX", value_parser = SizeMix::parse)]
    pub size_mix: Option<SizeMix>,

    /// Recipients per message.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub recipients: u32,

    /// Recipient domain; recipients are userN@DOMAIN, N = 1, 2, ...
    /// [default: example.test; e2e: the --domain-mix default]
    #[arg(long, value_name = "DOMAIN", conflicts_with = "domain_mix")]
    pub to_domain: Option<String>,

    /// Weighted recipient domains, DOMAIN=WEIGHT,...: each recipient userN gets one,
    /// in proportion to the weights (e2e default:
    /// gmail.test=40,outlook.test=25,yahoo.test=15,other.test=20).
    #[arg(long, value_name = "MIX")]
    pub domain_mix: Option<String>,

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
    pub progress: Option<ProgressText>,
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
    connect_failures: ConnectFailures,
    mode: OnceLock<String>,
    warned_no_chunking: AtomicBool,

    tally: Tally,
}

impl Running for Shared {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// Entry point of `loadtest smtp`: run, print the summary, write the JSON and HTML.
pub async fn run(args: SmtpArgs) -> anyhow::Result<ExitCode> {
    let result = execute(&args).await?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(result.report.text().as_bytes());
    let _ = out.flush();
    drop(out);
    if let Some(path) = &args.run.json {
        let json = serde_json::to_vec_pretty(&result.report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.run.html {
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
    if args.run.timeout <= 0.0 || args.run.connect_timeout <= 0.0 {
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
    let limits = Limits::from_flags(
        args.run.messages,
        args.run.duration,
        args.run.rate,
        DEFAULT_MESSAGES,
    )?;

    let mix = match hooks.mix {
        Some(m) => m,
        None => Arc::new(domain_mix(args, "example.test")?),
    };
    let run_id: u64 = hooks.run_id.unwrap_or_else(rand::random);
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sizes = args
        .size_mix
        .as_ref()
        .map_or_else(|| vec![args.run.size], SizeMix::sizes);
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

    let clock = Clock::start(hooks.timeline);
    let schedule = limits.schedule(args.run.rate, &clock)?;
    let stamp = args.run.stamp || hooks.stamp;
    let shared = Arc::new(Shared {
        templates,
        size_mix: args.size_mix.clone(),
        addrs,
        next_addr: std::sync::atomic::AtomicUsize::new(0),
        helo: args.helo.clone(),
        mix: mix.clone(),
        recipients: u64::from(args.recipients),
        mail_cmd: format!("MAIL FROM:<{}>\r\n", args.run.from).into_bytes(),
        pipelining: args.pipelining,
        bdat: args.bdat,
        tls,
        auth,
        per_connection: args.messages_per_connection,
        stop_on_error: args.run.stop_on_error,
        timeout: Duration::from_secs_f64(args.run.timeout),
        connect_timeout: Duration::from_secs_f64(args.run.connect_timeout),
        template,
        run_id,
        from: args.run.from.clone(),
        date: rfc5322_date(unix),
        stamp,
        schedule,
        timeline: clock.timeline.clone(),
        tracker: hooks.tracker.clone(),
        connect_failures: ConnectFailures::new(args.run.max_connect_failures),
        mode: OnceLock::new(),
        warned_no_chunking: AtomicBool::new(false),
        tally: Tally::default(),
    });

    let watch = Watch::start(
        shared.clone(),
        args.run.no_progress,
        limits,
        clock.start,
        hooks.progress.clone(),
        "messages",
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.run.connections {
        workers.spawn(connection::run(shared.clone(), ack_tx.clone()));
    }
    drop(ack_tx);
    let counters = run::join(workers).await;
    let elapsed = clock.start.elapsed();
    watch.finish();

    let mut ack_error = None;
    if let Some(thread) = ack_thread {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => ack_error = Some(format!("ack log: {e}")),
            Err(_) => ack_error = Some("ack log writer panicked".to_owned()),
        }
    }

    let stop_reason = shared.schedule.stop_reason();
    let mut mode = match &args.size_mix {
        Some(mix) => format!(
            "body sizes {mix} (mean {:.0} bytes), {} rcpt/msg",
            mix.mean(),
            args.recipients
        ),
        None => format!("{} bytes/body, {} rcpt/msg", args.run.size, args.recipients),
    };
    if let Some(m) = shared.mode.get() {
        let _ = write!(mode, ", {m}");
    }
    if let Some(r) = args.run.rate {
        let _ = write!(mode, ", open loop at {r} msg/s");
    }
    let mut report = Report::new(
        args.addr.clone(),
        mode,
        args.run.connections as usize,
        &counters,
        &shared.tally.latency(),
        elapsed,
        stop_reason,
    );
    run::close_report(
        &mut report,
        args.run.rate,
        "end of data",
        &shared.tally,
        &mix,
        &clock.timeline,
    );
    Ok(RunResult {
        report,
        ack_error,
        start_us: clock.start_us,
        run_id,
    })
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

mod connection;

#[cfg(test)]
mod tests;
