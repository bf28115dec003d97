//! `loadtest campaign`: one campaign of N recipients through a spawned Postroad's HTTP
//! API (the recipients generated and streamed as NDJSON, never held in memory), into
//! the queue and out to this process's sink and DNS stub (its fault mix), while `high`
//! messages are sent at a steady rate. Reports the time to upload the list, to queue
//! every recipient and to resolve every one (delivered, bounced, expired), the peak
//! memory of the Postroad process, and the submit-to-receiver latency of the `high`
//! messages sent during the campaign.

mod upload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::dns::DnsStub;
use crate::generator::unix_micros;
use crate::http_client::HttpClient;
use crate::mix::{DEFAULT_E2E_MIX, DomainMix};
use crate::postroad_proc::{Delivery, PostroadOptions, PostroadProcess};
use crate::sink::{Faults, Observer, Sink, SinkConfig};
use crate::stats::{Latency, LatencySummary};

/// The local part the `high` messages are sent to (`hi{n}@...`).
const HIGH_PREFIX: &str = "hi";
/// How often the campaign's progress is read.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct CampaignArgs {
    /// The `postroad` binary to start (`postroad serve` with a generated config that
    /// delivers to this run's sink).
    #[arg(long)]
    pub spawn_postroad: PathBuf,
    /// Recipients of the campaign.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub recipients: u64,
    /// Recipient domains with weights (each its own MX host, so its own site).
    #[arg(long, default_value = DEFAULT_E2E_MIX)]
    pub domains: String,
    /// `high` messages per second sent while the campaign runs (0: none).
    #[arg(long, default_value_t = 5.0)]
    pub high_rate: f64,
    /// Share of recipients the sink refuses with 451 at RCPT (retried).
    #[arg(long, default_value_t = 0.02)]
    pub sink_tempfail_share: f64,
    /// Share of recipients the sink refuses with 550 at RCPT (bounced).
    #[arg(long, default_value_t = 0.01)]
    pub sink_permfail_share: f64,
    /// Milliseconds the sink waits before each reply.
    #[arg(long, default_value_t = 0)]
    pub sink_delay_ms: u64,
    /// `spool.fsync` of the spawned Postroad.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Parent of the spawned Postroad's work directory [default: the system's].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory (config, spool, history, log).
    #[arg(long)]
    pub keep_work_dir: bool,
    /// `RUST_LOG` of the spawned Postroad.
    #[arg(long, default_value = "warn")]
    pub postroad_log: String,
    /// A TOML file appended to the spawned Postroad's config.
    #[arg(long)]
    pub postroad_config_extra: Option<PathBuf>,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignReport {
    pub recipients: u64,
    /// From the start of the upload until the list was stored and the campaign made.
    pub upload_secs: f64,
    /// From the start of the upload until every recipient was queued.
    pub queued_secs: f64,
    /// From the start of the upload until every queued recipient was resolved.
    pub resolved_secs: f64,
    pub queued: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub expired: u64,
    /// The spawned Postroad's peak resident memory (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// `high` messages sent during the campaign, and how many the sink got.
    pub high_sent: u64,
    pub high_received: u64,
    /// Submission (the API's 202) to the sink's receipt, of the `high` messages.
    pub high_latency_ms: LatencySummary,
    pub ok: bool,
    pub problem: Option<String>,
}

impl CampaignReport {
    pub fn text(&self) -> String {
        let mut t = String::new();
        let rate = |secs: f64| {
            if secs > 0.0 {
                self.recipients as f64 / secs
            } else {
                0.0
            }
        };
        let _ = writeln!(t, "campaign of {} recipients", self.recipients);
        let _ = writeln!(t, "  list uploaded      {:>9.1} s", self.upload_secs);
        let _ = writeln!(
            t,
            "  all queued after   {:>9.1} s  ({:.0} recipients/s)",
            self.queued_secs,
            rate(self.queued_secs)
        );
        let _ = writeln!(
            t,
            "  all resolved after {:>9.1} s  ({:.0} recipients/s): {} delivered, {} bounced, {} expired",
            self.resolved_secs,
            rate(self.resolved_secs),
            self.delivered,
            self.bounced,
            self.expired
        );
        let _ = writeln!(t, "  postroad peak RSS  {:>9.1} MiB", self.peak_rss_mib);
        let h = &self.high_latency_ms;
        let _ = writeln!(
            t,
            "  high messages      {} sent, {} received; submit to receiver p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.high_sent, self.high_received, h.p50, h.p95, h.p99, h.max
        );
        if let Some(problem) = &self.problem {
            let _ = writeln!(t, "  PROBLEM: {problem}");
        }
        t
    }
}

pub async fn run(args: CampaignArgs) -> anyhow::Result<ExitCode> {
    let report = execute(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the sink saw of the `high` messages.
#[derive(Default)]
struct HighSeen {
    received: AtomicU64,
    latency: Mutex<Latency>,
}

pub async fn execute(args: &CampaignArgs) -> anyhow::Result<CampaignReport> {
    let mix = DomainMix::parse(&args.domains).map_err(anyhow::Error::msg)?;
    let faults = Faults {
        tempfail_share: args.sink_tempfail_share,
        permfail_share: args.sink_permfail_share,
        delay: Duration::from_millis(args.sink_delay_ms),
        ..Faults::default()
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let dns = DnsStub::start("127.0.0.1:0".parse()?, vec![crate::e2e_cmd::zone(&mix)])
        .await
        .context("starting the DNS stub")?;
    let high = Arc::new(HighSeen::default());
    let observer = {
        let high = high.clone();
        Observer::new(move |ev| {
            if ev.recipients.iter().any(|r| r.starts_with(HIGH_PREFIX))
                && let Some(sent) = ev.sent_at_us
            {
                high.received.fetch_add(1, Ordering::Relaxed);
                let took = Duration::from_micros(ev.received_at_us.saturating_sub(sent));
                high.latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(took);
            }
        })
    };
    let sink = Sink::start(SinkConfig {
        listen: "127.0.0.1:0".parse()?,
        faults: faults.clone(),
        max_recipients: 100_000,
        observer: Some(observer),
        ..SinkConfig::default()
    })
    .await
    .context("starting the sink")?;
    let opts = PostroadOptions {
        binary: args.spawn_postroad.clone(),
        fsync: args.fsync,
        relay: true,
        delivery: Delivery::Mx {
            dns: dns.local_addr(),
            mx_port: sink.local_addr().port(),
        },
        connections: 16,
        fast_retries: faults.tempfail_share > 0.0,
        log_filter: args.postroad_log.clone(),
        work_root: args.work_dir.clone(),
        keep: args.keep_work_dir,
        extra_config: match &args.postroad_config_extra {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => String::new(),
        },
    };
    let mut postroad = PostroadProcess::start(&opts).await?;
    eprintln!(
        "campaign: postroad (pid {}) on {}, work directory {}",
        postroad.pid().unwrap_or(0),
        postroad.http_addr(),
        postroad.dir().display()
    );
    let result = drive(args, &mix, &postroad, &high).await;
    let peak_rss_mib = postroad
        .pid()
        .and_then(peak_rss_kib)
        .map_or(0.0, |kib| kib as f64 / 1024.0);
    postroad.stop(Duration::from_secs(30)).await;
    let mut report = result?;
    report.peak_rss_mib = peak_rss_mib;
    report.high_received = high.received.load(Ordering::Relaxed);
    report.high_latency_ms = high
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    Ok(report)
}

/// The run against a started Postroad.
async fn drive(
    args: &CampaignArgs,
    mix: &DomainMix,
    postroad: &PostroadProcess,
    high: &HighSeen,
) -> anyhow::Result<CampaignReport> {
    let key = postroad.create_api_key()?;
    let addr = postroad.http_addr();
    let t = Duration::from_secs(60);
    let mut api = HttpClient::connect(addr, false, &key, t, t).await?;
    let template = json!({"subject": "News for {{ first }}",
        "text": "Hello {{ first }},\n\nthis month's news.\n",
        "html": "<p>Hello {{ first }},</p><p>this month's news.</p>",
        "from": "News <news@loadtest.test>"});
    let put = api
        .request(
            "PUT",
            "/v1/templates/loadtest-campaign",
            "application/json",
            Bytes::from(template.to_string()),
        )
        .await?;
    if !put.status.is_success() {
        bail!(
            "storing the template: {} {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        );
    }

    let started = Instant::now();
    let created = upload::campaign(addr, &key, args.recipients, mix).await?;
    let mut report = CampaignReport {
        recipients: args.recipients,
        upload_secs: started.elapsed().as_secs_f64(),
        ..CampaignReport::default()
    };
    let id = created["id"]
        .as_str()
        .context("the campaign has no id")?
        .to_string();
    let stored = created["list"]["recipients"].as_u64().unwrap_or(0);
    if stored != args.recipients {
        bail!(
            "the list stored {stored} of {} recipients: {created}",
            args.recipients
        );
    }

    let (stop_high, stopped) = tokio::sync::watch::channel(false);
    let sender = (args.high_rate > 0.0).then(|| {
        let domain = mix.domains().next().unwrap_or("gmail.test").to_string();
        tokio::spawn(send_high(
            addr,
            key.clone(),
            domain,
            args.high_rate,
            stopped,
        ))
    });
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let outcome = loop {
        tokio::time::sleep(POLL).await;
        let answer = api
            .request(
                "GET",
                &format!("/v1/campaigns/{id}"),
                "application/json",
                Bytes::new(),
            )
            .await?;
        let c: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let queued = c["expansion"]["queued"].as_u64().unwrap_or(0);
        if c["state"] == "sent" && report.queued_secs == 0.0 {
            report.queued_secs = started.elapsed().as_secs_f64();
            report.queued = queued;
        }
        let r = &c["results"];
        let count = |k: &str| r[k].as_u64().unwrap_or(0);
        let resolved =
            count("delivered") + count("bounced") + count("expired") + count("suppressed");
        eprintln!(
            "campaign: {:.0} s: {} queued, {} delivered, {} bounced, {} high received",
            started.elapsed().as_secs_f64(),
            queued,
            count("delivered"),
            count("bounced"),
            high.received.load(Ordering::Relaxed)
        );
        if report.queued_secs > 0.0 && resolved >= report.queued {
            report.resolved_secs = started.elapsed().as_secs_f64();
            report.delivered = count("delivered");
            report.bounced = count("bounced");
            report.expired = count("expired");
            break None;
        }
        if Instant::now() > deadline {
            break Some(format!("not resolved within {} s: {c}", args.timeout_secs));
        }
    };
    let _ = stop_high.send(true);
    if let Some(sender) = sender {
        report.high_sent = sender.await.unwrap_or(0);
    }
    // The last high messages: a moment to arrive (a retried one takes longer).
    let settle = Instant::now() + Duration::from_secs(10);
    while high.received.load(Ordering::Relaxed) < report.high_sent && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.ok = outcome.is_none();
    report.problem = outcome;
    Ok(report)
}

/// Sends `high` messages (explicit form, stamped) at `rate` per second until told to
/// stop; how many were accepted.
async fn send_high(
    addr: std::net::SocketAddr,
    key: String,
    domain: String,
    rate: f64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let t = Duration::from_secs(30);
    let Ok(mut api) = HttpClient::connect(addr, false, &key, t, t).await else {
        return 0;
    };
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return sent,
        }
        let message = json!({"from": "shop@loadtest.test",
            "to": format!("{HIGH_PREFIX}{sent}@{domain}"), "subject": "Your code",
            "text": "123456", "priority": "high",
            "headers": {"X-Loadtest-Sent-At": unix_micros().to_string()}});
        if let Ok(answer) = api
            .request(
                "POST",
                "/v1/messages",
                "application/json",
                Bytes::from(message.to_string()),
            )
            .await
            && answer.status.is_success()
        {
            sent += 1;
        }
    }
}

/// The peak resident set of process `pid` (VmHWM), KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
