//! `loadtest e2e`: the generator → an MTA → an in-process sink, one process measuring
//! both ends. Every message is stamped (`X-Loadtest-Sent-At`) and numbered, so the
//! sink's receipt of each (Message-ID, recipient) is matched to the MTA's `250` for it:
//! submit→delivered latency per delivery, accepted/s and delivered/s, and an exact
//! count of what was lost or duplicated.
//!
//! The MTA is either already running (`--addr`; its relay must use the DNS stub and
//! the sink this command binds, see `--print-config`), or started here
//! (`--spawn-postroad PATH`: `postroad serve` with a generated config in a temporary
//! directory, stopped at the end).

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::dns::{DnsStub, Zone};
use crate::generator::unix_micros;
use crate::http_cmd::{self, HttpArgs, HttpOptions};
use crate::mix::{DEFAULT_E2E_MIX, DomainMix};
use crate::postroad_proc::{Delivery, PostroadOptions, PostroadProcess};
use crate::sink::{Faults, Observer, Sink, SinkConfig};
use crate::smtp_cmd::{self, Hooks, SmtpArgs};
use crate::stats::{LatencySummary, Report};
use crate::timeline::{Second, Timeline};
use crate::tracker::{DomainCount, Tracker};

/// Where the DNS stub and the sink listen by default when the MTA runs separately
/// (fixed, so that its config can name them).
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5300";
pub const DEFAULT_SINK_LISTEN: &str = "127.0.0.1:2526";

/// How the load enters the MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// SMTP (`loadtest smtp`'s generator).
    Smtp,
    /// Postroad's HTTP API (`loadtest http`'s generator); --addr is then the API's
    /// address, and a spawned Postroad gets an API key of its own.
    Http,
}

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub load: SmtpArgs,

    /// Submit over SMTP or over the HTTP API.
    #[arg(long, value_enum, default_value = "smtp")]
    pub via: Via,

    #[command(flatten)]
    pub http: HttpOptions,

    /// Start `postroad serve` from this binary with a generated config (listener on a
    /// free port, relay to the DNS stub and the sink), and stop it at the end; --addr
    /// is ignored.
    #[arg(long, value_name = "PATH")]
    pub spawn_postroad: Option<PathBuf>,

    /// spool.fsync of the spawned Postroad.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub fsync: bool,

    /// The spawned Postroad sends everything to the sink as its smarthost (one site,
    /// no MX lookups) instead of by MX.
    #[arg(long, requires = "spawn_postroad")]
    pub smarthost: bool,

    /// Where the spawned Postroad's temporary directory (config, spool, log) goes
    /// [default: the system's temporary directory].
    #[arg(long, value_name = "DIR", requires = "spawn_postroad")]
    pub work_dir: Option<PathBuf>,

    /// Keep that directory after the run.
    #[arg(long, requires = "spawn_postroad")]
    pub keep_work_dir: bool,

    /// RUST_LOG of the spawned Postroad (unless RUST_LOG is set).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub postroad_log: String,

    /// DNS stub address, UDP and TCP [default: 127.0.0.1:5300; with --spawn-postroad
    /// a free port].
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,

    /// Sink address [default: 127.0.0.1:2526; with --spawn-postroad a free port].
    #[arg(long, value_name = "ADDR")]
    pub sink_listen: Option<SocketAddr>,

    /// After the load, wait at most this long for every accepted message to be
    /// delivered.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub drain_timeout: f64,

    /// Once everything is delivered, keep the sink open this long to catch late
    /// duplicates.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub settle: f64,

    /// Print the [relay] settings the MTA needs for this command's DNS stub and sink,
    /// and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Sink: share of recipients refused with 451 4.3.0 (the MTA must retry them).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub sink_tempfail_share: f64,

    /// Sink: share of recipients refused with 550 5.1.1 (bounced: reported as lost).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub sink_permfail_share: f64,

    /// Sink: wait this long before every reply.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub sink_delay_ms: u64,
}

/// The HTTP generator's arguments for the load `load` describes.
fn http_load(load: &SmtpArgs, http: HttpOptions) -> HttpArgs {
    HttpArgs {
        addr: load.addr.clone(),
        http,
        messages: load.messages,
        duration: load.duration,
        connections: load.connections,
        size: load.size,
        recipients: load.recipients,
        from: load.from.clone(),
        to_domain: load
            .to_domain
            .clone()
            .unwrap_or_else(|| "example.test".into()),
        rate: load.rate,
        json: None,
        html: None,
        stop_on_error: load.stop_on_error,
        max_connect_failures: load.max_connect_failures,
        timeout: load.timeout,
        connect_timeout: load.connect_timeout,
        stamp: true,
        no_progress: load.no_progress,
    }
}

impl E2eArgs {
    fn spawn(&self) -> bool {
        self.spawn_postroad.is_some()
    }

    fn dns_addr(&self) -> SocketAddr {
        self.dns_listen.unwrap_or_else(|| {
            if self.spawn() {
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
            } else {
                DEFAULT_DNS_LISTEN.parse().expect("valid")
            }
        })
    }

    fn sink_addr(&self) -> SocketAddr {
        self.sink_listen.unwrap_or_else(|| {
            if self.spawn() {
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
            } else {
                DEFAULT_SINK_LISTEN.parse().expect("valid")
            }
        })
    }
}

/// The `[relay]` settings an MTA needs to deliver to this run's DNS stub and sink.
pub fn relay_snippet(dns: SocketAddr, sink: SocketAddr) -> String {
    format!(
        "[relay]\n\
         nameservers = [\"{dns}\"]\n\
         mx_port = {}\n\
         tls = \"none\"        # the sink offers no STARTTLS (\"opportunistic\" works too)\n",
        sink.port()
    )
}

/// The zone: every domain of the mix has its own MX host (so each is its own site
/// with its own connection pool, as real providers are), all at 127.0.0.1.
pub fn zone(mix: &DomainMix) -> Zone {
    let mut z = Zone::new(".").ttl(3600);
    for d in mix.domains() {
        let host = format!("mx.{d}");
        z = z.mx(d, 10, &host).a(&host, Ipv4Addr::LOCALHOST);
    }
    z
}

/// The spawned Postroad, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnInfo {
    pub binary: String,
    pub spool_fsync: bool,
    /// "mx" (through the DNS stub) or "smarthost".
    pub relay: String,
    pub work_dir: String,
    pub kept: bool,
    /// How it ended after SIGTERM.
    pub exit: String,
}

/// The e2e report; serialised as-is for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// The MTA's SMTP address.
    pub target: String,
    pub postroad: Option<SpawnInfo>,
    pub sink: String,
    pub dns: String,
    pub run_id: String,
    pub recipient_domains: String,
    pub connections: usize,
    pub message_size: usize,
    pub recipients_per_message: u32,
    /// `--rate`, if open loop.
    pub rate_per_sec: Option<f64>,

    pub messages_sent: u64,
    pub messages_accepted: u64,
    /// Messages accepted / load time (first send to last reply).
    pub accepted_per_sec: f64,
    /// Distinct deliveries / (first send to last first-delivery).
    pub delivered_per_sec: f64,
    pub load_secs: f64,
    /// First send to the last first-delivery.
    pub delivery_secs: f64,
    /// End of the load to the last first-delivery (0 when all were delivered during
    /// the load).
    pub drain_secs: f64,
    pub all_delivered: bool,

    /// (message, recipient) pairs the MTA accepted.
    pub deliveries_expected: u64,
    /// Distinct pairs the sink received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub delivered_unacknowledged: u64,
    pub foreign: u64,
    pub checksum_bad: u64,
    /// Every 4xx/5xx reply the sink sent (injected faults, and what follows them, such
    /// as a 554 to DATA when no recipient is left).
    pub sink_rejections: u64,
    pub sink_rejections_by_code: std::collections::BTreeMap<u16, u64>,

    /// Submit (X-Loadtest-Sent-At; the scheduled time in open loop) to receipt at the
    /// sink, one sample per delivered pair.
    pub e2e_latency_ms: LatencySummary,
    pub ack_latency_ms: LatencySummary,
    pub ack_latency_from: String,

    pub lost_sample: Vec<String>,
    pub duplicate_sample: Vec<String>,
    pub by_domain: Vec<DomainCount>,
    /// Why the run failed; empty when it did not.
    pub problems: Vec<String>,
    pub ok: bool,
    /// The generator's own report (without its timeline: see `timeline`).
    pub load: Report,
    /// Per-second buckets: accepted, failed, delivered, ack and e2e p50/p99.
    pub timeline: Vec<Second>,
}

impl E2eReport {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let target = match &self.postroad {
            Some(p) => format!(
                "{} (spawned {}, spool.fsync = {}, relay by {})",
                self.target, p.binary, p.spool_fsync, p.relay
            ),
            None => format!("{} (already running)", self.target),
        };
        let _ = writeln!(s, "target       {target}");
        let _ = writeln!(s, "sink         {} (DNS stub {})", self.sink, self.dns);
        let _ = writeln!(
            s,
            "load         {}; {} connections",
            self.load.mode, self.connections
        );
        let _ = writeln!(s, "domains      {}", self.recipient_domains);
        let _ = writeln!(
            s,
            "accepted     {} of {} messages in {:.3} s: {:.1} msg/s",
            self.messages_accepted, self.messages_sent, self.load_secs, self.accepted_per_sec
        );
        let _ = writeln!(
            s,
            "delivered    {} of {} deliveries in {:.3} s from the first send: {:.1}/s (drain {:.3} s after the load)",
            self.delivered,
            self.deliveries_expected,
            self.delivery_secs,
            self.delivered_per_sec,
            self.drain_secs
        );
        let _ = writeln!(s, "lost         {}", self.lost);
        for l in self.lost_sample.iter().take(5) {
            let _ = writeln!(s, "             {l}");
        }
        let _ = writeln!(s, "duplicates   {}", self.duplicates);
        for l in self.duplicate_sample.iter().take(5) {
            let _ = writeln!(s, "             {l}");
        }
        if self.delivered_unacknowledged > 0 || self.foreign > 0 {
            let _ = writeln!(
                s,
                "also         {} delivered without an acknowledgement, {} not from this run",
                self.delivered_unacknowledged, self.foreign
            );
        }
        let codes: Vec<String> = self
            .sink_rejections_by_code
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(", "))
        };
        let _ = writeln!(
            s,
            "checksums    {} bad; sink rejections {}{codes}",
            self.checksum_bad, self.sink_rejections
        );
        let e = &self.e2e_latency_ms;
        let _ = writeln!(
            s,
            "e2e latency  p50 {:.3} ms, p90 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (submit -> delivered, n={})",
            e.p50, e.p90, e.p95, e.p99, e.max, e.count
        );
        let a = &self.ack_latency_ms;
        let _ = writeln!(
            s,
            "ack latency  p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (from {})",
            a.p50, a.p95, a.p99, a.max, self.ack_latency_from
        );
        if self.ok {
            let _ = writeln!(s, "result       OK: nothing lost, nothing duplicated");
        } else {
            let _ = writeln!(s, "result       FAILED: {}", self.problems.join("; "));
        }
        s
    }

    /// The `--html` page.
    pub fn html(&self, command: &str) -> String {
        use crate::html::{self, Chart, Page, item, section, series};
        let ms3 = |l: &LatencySummary| {
            format!(
                "p50 {:.2} / p90 {:.2} / p95 {:.2} / p99 {:.2} / max {:.2} ms",
                l.p50, l.p90, l.p95, l.p99, l.max
            )
        };
        let mut rows = vec![section("Setup"), item("MTA", &self.target)];
        if let Some(p) = &self.postroad {
            rows.push(item(
                "Postroad",
                format!(
                    "spawned {}, spool.fsync = {}, relay by {}",
                    p.binary, p.spool_fsync, p.relay
                ),
            ));
        }
        rows.extend([
            item("sink / DNS stub", format!("{} / {}", self.sink, self.dns)),
            item(
                "load",
                format!("{}; {} connections", self.load.mode, self.connections),
            ),
            item("recipient domains", &self.recipient_domains),
            section("Throughput"),
            item(
                "accepted",
                format!(
                    "{} of {} messages, {:.1} msg/s over {:.3} s",
                    self.messages_accepted,
                    self.messages_sent,
                    self.accepted_per_sec,
                    self.load_secs
                ),
            ),
            item(
                "delivered",
                format!(
                    "{} of {} deliveries, {:.1}/s over {:.3} s (first send to last delivery)",
                    self.delivered,
                    self.deliveries_expected,
                    self.delivered_per_sec,
                    self.delivery_secs
                ),
            ),
            item("drain after the load", format!("{:.3} s", self.drain_secs)),
            section("Integrity"),
            item("lost", self.lost),
            item("duplicates", self.duplicates),
            item(
                "delivered without acknowledgement",
                self.delivered_unacknowledged,
            ),
            item("bad checksums", self.checksum_bad),
            item(
                "result",
                if self.ok {
                    "OK".to_owned()
                } else {
                    format!("FAILED: {}", self.problems.join("; "))
                },
            ),
            section("Latency"),
            item("submit → delivered", ms3(&self.e2e_latency_ms)),
            item(
                &format!("ack (from {})", self.ack_latency_from),
                ms3(&self.ack_latency_ms),
            ),
        ]);
        let tl = &self.timeline;
        let page = Page {
            title: format!("loadtest e2e: {}", self.target),
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
                        series(tl, "delivered", html::GREEN, true, |s| {
                            html::rate(s, s.delivered)
                        }),
                        series(tl, "failed", html::RED, true, |s| html::rate(s, s.failed)),
                    ],
                },
                Chart {
                    title: "Submit → delivered latency, by second of delivery".into(),
                    unit: "ms".into(),
                    series: vec![
                        series(tl, "p50", html::GREEN, false, |s| s.e2e_p50_ms),
                        series(tl, "p99", html::PURPLE, false, |s| s.e2e_p99_ms),
                    ],
                },
                Chart {
                    title: format!(
                        "Ack latency (from {}), by second of the reply",
                        self.ack_latency_from
                    ),
                    unit: "ms".into(),
                    series: vec![
                        series(tl, "p50", html::BLUE, false, |s| s.ack_p50_ms),
                        series(tl, "p99", html::ORANGE, false, |s| s.ack_p99_ms),
                    ],
                },
            ],
            notes: vec![
                "accepted: messages the MTA answered 250 to; delivered: (message, recipient) \
                 pairs the sink received for the first time. Submit → delivered runs from \
                 X-Loadtest-Sent-At (set when the data is written; the scheduled send time \
                 with --rate) to the end of the data at the sink. Each point is one second \
                 (the rate of a last, partial second is over the part the run covered, and \
                 not drawn when that is under 0.2 s)."
                    .into(),
            ],
        };
        html::render(&page)
    }
}

/// Entry point of `loadtest e2e`.
pub async fn run(args: E2eArgs) -> anyhow::Result<ExitCode> {
    if args.print_config {
        print!("{}", relay_snippet(args.dns_addr(), args.sink_addr()));
        return Ok(ExitCode::SUCCESS);
    }
    let report = execute(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.load.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.load.html {
        let html = report.html(&crate::load_page::command_line());
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("bad {name} {v}");
    }
    Ok(Duration::try_from_secs_f64(v)?)
}

/// The run: sink and DNS up, the MTA up (or reachable), load, drain, reconcile.
pub async fn execute(args: &E2eArgs) -> anyhow::Result<E2eReport> {
    let drain_timeout = seconds("--drain-timeout", args.drain_timeout)?;
    let settle = seconds("--settle", args.settle)?;
    let mix = Arc::new(smtp_cmd::domain_mix(&args.load, DEFAULT_E2E_MIX)?);
    let faults = Faults {
        tempfail_share: args.sink_tempfail_share,
        permfail_share: args.sink_permfail_share,
        delay: Duration::from_millis(args.sink_delay_ms),
        ..Faults::default()
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let quiet = args.load.no_progress || !std::io::stderr().is_terminal();

    let run_id: u64 = rand::random();
    let timeline = Arc::new(Timeline::new(unix_micros()));
    let tracker = Arc::new(Tracker::new(
        run_id,
        u64::from(args.load.recipients),
        mix.clone(),
        timeline.clone(),
    ));

    let dns = DnsStub::start(args.dns_addr(), vec![zone(&mix)])
        .await
        .context("starting the DNS stub")?;
    let observer = {
        let tracker = tracker.clone();
        Observer::new(move |ev| tracker.delivered(ev))
    };
    let sink = Sink::start(SinkConfig {
        listen: args.sink_addr(),
        verify: true,
        faults: faults.clone(),
        max_recipients: 100_000,
        observer: Some(observer),
        ..SinkConfig::default()
    })
    .await
    .context("starting the sink")?;
    let (dns_addr, sink_addr) = (dns.local_addr(), sink.local_addr());

    let mut postroad = None;
    let mut http_options = args.http.clone();
    let target = match &args.spawn_postroad {
        Some(binary) => {
            let opts = PostroadOptions {
                binary: binary.clone(),
                fsync: args.fsync,
                delivery: if args.smarthost {
                    Delivery::Smarthost(sink_addr)
                } else {
                    Delivery::Mx {
                        dns: dns_addr,
                        mx_port: sink_addr.port(),
                    }
                },
                connections: args.load.connections,
                fast_retries: faults.tempfail_share > 0.0,
                log_filter: args.postroad_log.clone(),
                work_root: args.work_dir.clone(),
                keep: args.keep_work_dir,
            };
            let p = PostroadProcess::start(&opts).await?;
            let addr = match args.via {
                Via::Smtp => p.smtp_addr(),
                Via::Http => p.http_addr(),
            };
            if args.via == Via::Http && http_options.api_key.is_none() {
                http_options.api_key = Some(p.create_api_key()?);
            }
            if !quiet || args.keep_work_dir {
                eprintln!(
                    "e2e: postroad (pid {}) on {addr}, work directory {}",
                    p.pid().unwrap_or(0),
                    p.dir().display()
                );
            }
            postroad = Some(p);
            addr.to_string()
        }
        None => {
            eprintln!(
                "e2e: sink on {sink_addr}, DNS stub on {dns_addr} (MX for {} -> 127.0.0.1).\n\
                 The MTA at {} must relay with:\n{}",
                mix.domains().collect::<Vec<_>>().join(", "),
                args.load.addr,
                relay_snippet(dns_addr, sink_addr)
            );
            args.load.addr.clone()
        }
    };

    // the load
    let mut load_args = args.load.clone();
    load_args.addr = target.clone();
    load_args.json = None;
    load_args.html = None;
    let progress = {
        let tracker = tracker.clone();
        Arc::new(move || {
            let (_, outstanding, delivered, dups) = tracker.progress();
            let dups = if dups > 0 {
                format!(", {dups} DUPLICATES")
            } else {
                String::new()
            };
            format!("{delivered} delivered, {outstanding} in the MTA{dups}")
        }) as Arc<dyn Fn() -> String + Send + Sync>
    };
    let hooks = Hooks {
        run_id: Some(run_id),
        mix: Some(mix.clone()),
        timeline: Some(timeline.clone()),
        tracker: Some(tracker.clone()),
        stamp: true,
        progress: Some(progress),
    };
    let result = match args.via {
        Via::Smtp => smtp_cmd::execute_with(&load_args, hooks).await,
        Via::Http => {
            let http_args = http_load(&load_args, http_options);
            http_cmd::execute_with(&http_args, hooks).await
        }
    };
    let load_end_us = unix_micros();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = postroad.as_mut() {
                p.stop(Duration::from_secs(15)).await;
            }
            return Err(e);
        }
    };

    // the drain
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let (accepted, outstanding, _, _) = tracker.progress();
        let bar = ProgressBar::new(accepted);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} draining [{bar:40}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(accepted - outstanding);
        bar
    };
    let drain_start = Instant::now();
    let mut postroad_died = None;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !tracker.drained() && drain_start.elapsed() < drain_timeout {
        if let Some(p) = postroad.as_mut()
            && let Some(status) = p.try_wait()
        {
            postroad_died = Some(status);
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        }
        let (accepted, outstanding, _, _) = tracker.progress();
        bar.set_position(accepted - outstanding);
    }
    bar.finish_and_clear();
    let drained = tracker.drained();
    if drained && !interrupted {
        tokio::time::sleep(settle).await;
    }

    // stop everything
    let spawn_info = match postroad.as_mut() {
        Some(p) => {
            let status = match postroad_died {
                Some(s) => Some(s),
                None => p.stop(Duration::from_secs(20)).await,
            };
            let exit = match (postroad_died, status) {
                (Some(s), _) => format!("died during the run ({s})"),
                (None, Some(s)) if s.success() => "clean exit".to_owned(),
                (None, Some(s)) => format!("{s} after SIGTERM"),
                (None, None) => "unknown".to_owned(),
            };
            if postroad_died.is_some() || !status.is_some_and(|s| s.success()) {
                eprintln!("e2e: postroad log (last lines):\n{}", p.log_tail(20));
            }
            Some(SpawnInfo {
                binary: args
                    .spawn_postroad
                    .as_ref()
                    .map(|b| b.display().to_string())
                    .unwrap_or_default(),
                spool_fsync: args.fsync,
                relay: if args.smarthost { "smarthost" } else { "mx" }.to_owned(),
                work_dir: p.dir().display().to_string(),
                kept: args.keep_work_dir,
                exit,
            })
        }
        None => None,
    };
    drop(postroad);
    let sink_stats = sink.shutdown().await;
    dns.shutdown().await;

    // the verdict
    let rec = tracker.finish();
    let mut load = result.report;
    load.timeline = Vec::new();
    let start_us = result.start_us;
    let delivery_secs = rec.last_delivery_us.saturating_sub(start_us) as f64 / 1e6;
    let drain_secs = rec.last_delivery_us.saturating_sub(load_end_us) as f64 / 1e6;
    let mut problems = Vec::new();
    if rec.lost > 0 {
        problems.push(format!("{} lost", rec.lost));
    }
    if rec.duplicates > 0 {
        problems.push(format!("{} duplicated", rec.duplicates));
    }
    if sink_stats.checksum_bad > 0 {
        problems.push(format!(
            "{} corrupted (bad checksum)",
            sink_stats.checksum_bad
        ));
    }
    if load.accepted == 0 {
        problems.push("nothing accepted".into());
    }
    if load.rejected > 0 || load.errors > 0 {
        problems.push(format!(
            "{} rejected and {} errors at submission",
            load.rejected, load.errors
        ));
    }
    if !drained {
        problems.push(if interrupted {
            "interrupted while draining".to_owned()
        } else if let Some(s) = postroad_died {
            format!("postroad died ({s})")
        } else {
            format!(
                "not all delivered within --drain-timeout {}s",
                args.drain_timeout
            )
        });
    }
    if let Some(p) = &spawn_info
        && p.exit != "clean exit"
    {
        problems.push(format!("postroad: {}", p.exit));
    }
    if let Some(e) = result.ack_error {
        problems.push(e);
    }
    Ok(E2eReport {
        target,
        postroad: spawn_info,
        sink: sink_addr.to_string(),
        dns: dns_addr.to_string(),
        run_id: format!("{run_id:016x}"),
        recipient_domains: mix.to_string(),
        connections: args.load.connections as usize,
        message_size: args.load.size,
        recipients_per_message: args.load.recipients,
        rate_per_sec: args.load.rate,
        messages_sent: load.sent,
        messages_accepted: load.accepted,
        accepted_per_sec: load.messages_per_sec,
        delivered_per_sec: if delivery_secs > 0.0 {
            rec.delivered as f64 / delivery_secs
        } else {
            0.0
        },
        load_secs: load.elapsed_secs,
        delivery_secs,
        drain_secs,
        all_delivered: rec.lost == 0 && drained,
        deliveries_expected: rec.expected,
        delivered: rec.delivered,
        lost: rec.lost,
        duplicates: rec.duplicates,
        delivered_unacknowledged: rec.delivered_unacknowledged,
        foreign: rec.foreign,
        checksum_bad: sink_stats.checksum_bad,
        sink_rejections: sink_stats.rejected_total(),
        sink_rejections_by_code: sink_stats.rejections.clone(),
        e2e_latency_ms: rec.e2e_latency_ms,
        ack_latency_ms: load.ack_latency_ms.clone(),
        ack_latency_from: load.ack_latency_from.clone(),
        lost_sample: rec.lost_sample,
        duplicate_sample: rec.duplicate_sample,
        by_domain: rec.by_domain,
        ok: problems.is_empty(),
        problems,
        load,
        timeline: timeline.seconds_until(Some(rec.last_delivery_us.max(load_end_us))),
    })
}

#[cfg(test)]
mod tests;
