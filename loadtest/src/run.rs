//! The frame of a generator's run, shared by `loadtest smtp` and `loadtest http`: the
//! limits and the clock from the flags, the tally the workers keep, Ctrl-C, the
//! progress bar, joining the workers, and the report's closing fields.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::{JoinHandle, JoinSet};

use crate::generator::unix_micros;
use crate::mix::DomainMix;
use crate::pacer::Pacer;
use crate::schedule::Schedule;
use crate::stats::{Counters, Latency, Report};
use crate::timeline::Timeline;

/// The flags every generator takes (`loadtest smtp`, `loadtest http`, and e2e's load).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Messages to send in total [default: 1000 unless --duration is given].
    #[arg(short = 'n', long)]
    pub messages: Option<u64>,

    /// Stop after this many seconds (alone or together with --messages, whichever
    /// comes first).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Concurrent connections (each carries one message, or one HTTP request, at a
    /// time).
    #[arg(short = 'c', long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Body size in bytes (after the header block; over HTTP in the explicit and
    /// template forms, the text part).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub size: usize,

    /// Envelope and header sender.
    #[arg(long, default_value = "loadtest@loadtest.invalid")]
    pub from: String,

    /// Open loop: start a message (or request) every 1/RATE seconds whatever the
    /// answers (up to -c at once); latency counts from each one's scheduled time.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

    /// Also write the summary (with per-second buckets) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report (summary, rate and latency charts) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Stop the whole run at the first rejection or error.
    #[arg(long)]
    pub stop_on_error: bool,

    /// Give up after this many consecutive failures to open a connection (SMTP: a
    /// session).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_connect_failures: u64,

    /// Seconds to wait for each reply or write.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,

    /// Seconds to wait for a TCP connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Add `X-Loadtest-Sent-At: <unix micros>` to each message, set when it is sent,
    /// or to its scheduled time with --rate (for end-to-end latency at the receiving
    /// sink; always on in e2e).
    #[arg(long)]
    pub stamp: bool,

    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// Extra text for the progress line (e2e: deliveries so far).
pub type ProgressText = Arc<dyn Fn() -> String + Send + Sync>;

/// How long a run goes: a count of messages, a duration, or both.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

impl Limits {
    /// From `-n`, `--duration` and `--rate` (checked here too); `default` messages
    /// when neither `-n` nor `--duration` is given.
    pub fn from_flags(
        messages: Option<u64>,
        duration: Option<f64>,
        rate: Option<f64>,
        default: u64,
    ) -> anyhow::Result<Self> {
        if let Some(r) = rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("bad --rate {r}: want messages per second > 0");
        }
        let count = match (messages, duration) {
            (None, None) => Some(default),
            (n, _) => n,
        };
        let duration = match duration {
            Some(d) if !(d.is_finite() && d >= 0.0) => bail!("bad --duration {d}"),
            Some(d) => Some(Duration::from_secs_f64(d)),
            None => None,
        };
        Ok(Self { count, duration })
    }

    /// The schedule of a run starting at `clock`, paced at `rate` (open loop) if given.
    pub fn schedule(&self, rate: Option<f64>, clock: &Clock) -> anyhow::Result<Schedule> {
        let pacer = match rate {
            Some(rate) => Some(
                Pacer::new(
                    rate,
                    tokio::time::Instant::from_std(clock.start),
                    clock.start_us,
                    self.count,
                    self.duration,
                )
                .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let deadline = self.duration.map(|d| clock.start + d);
        Ok(Schedule::new(self.count, deadline, pacer))
    }
}

/// When the run started, and its per-second timeline.
pub struct Clock {
    pub start: Instant,
    pub start_us: u64,
    pub timeline: Arc<Timeline>,
}

impl Clock {
    /// Starts now, on `given` (e2e's timeline, shared with the sink) or a new one.
    pub fn start(given: Option<Arc<Timeline>>) -> Self {
        let start_us = unix_micros();
        let timeline = match given {
            Some(t) => {
                t.set_start(start_us);
                t
            }
            None => Arc::new(Timeline::new(start_us)),
        };
        Self {
            start: Instant::now(),
            start_us,
            timeline,
        }
    }
}

/// What the workers count as they go.
#[derive(Default)]
pub struct Tally {
    /// Messages finished, accepted or not.
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub latency: Mutex<Latency>,
    /// Open loop: how late each message was sent after its scheduled time.
    pub send_lag: Mutex<Latency>,
}

impl Tally {
    pub fn latency(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn send_lag(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.send_lag.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Consecutive failures to connect, and when to give up.
pub struct ConnectFailures {
    count: AtomicU64,
    max: u64,
}

impl ConnectFailures {
    /// Gives up at the `max`th failure in a row (at least 1).
    pub fn new(max: u64) -> Self {
        Self {
            count: AtomicU64::new(0),
            max: max.max(1),
        }
    }

    pub fn connected(&self) {
        self.count.store(0, Relaxed);
    }

    /// Counts a failure; at the limit, stops `schedule` and returns true.
    pub fn failed(&self, schedule: &Schedule, error: &dyn std::fmt::Display) -> bool {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        if n < self.max {
            return false;
        }
        schedule.stop_with(format!(
            "gave up after {n} consecutive connect failures (last: {error})"
        ));
        true
    }
}

/// A generator's state as the frame sees it.
pub trait Running: Send + Sync + 'static {
    fn schedule(&self) -> &Schedule;
    fn tally(&self) -> &Tally;
}

/// Ctrl-C handling and the progress bar while the workers run.
pub struct Watch {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
    on_ctrl_c: JoinHandle<()>,
}

impl Watch {
    /// The first Ctrl-C stops the run gracefully (`unit`s in flight finish), the second
    /// exits; the bar (hidden with `hidden` or off a terminal) shows the rate.
    pub fn start<S: Running>(
        shared: Arc<S>,
        hidden: bool,
        limits: Limits,
        start: Instant,
        extra: Option<ProgressText>,
        unit: &'static str,
    ) -> Self {
        let on_ctrl_c = {
            let shared = shared.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    shared.schedule().stop_with("interrupted");
                    eprintln!("\ninterrupted: finishing in-flight {unit} (Ctrl-C again to abort)");
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                }
            })
        };
        let bar = progress_bar(hidden, limits);
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut last = (Instant::now(), 0u64);
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let tally = shared.tally();
                    let done = tally.done.load(Relaxed);
                    let now = Instant::now();
                    let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                    last = (now, done);
                    if limits.count.is_some() {
                        bar.set_position(done);
                    } else {
                        bar.set_position((now - start).as_millis() as u64);
                    }
                    let failed = tally.failed.load(Relaxed);
                    let extra = extra
                        .as_ref()
                        .map(|f| format!(", {}", f()))
                        .unwrap_or_default();
                    let counted = if limits.count.is_some() {
                        String::new()
                    } else {
                        format!("{done} msgs, ")
                    };
                    bar.set_message(format!("{counted}{rate:.0} msg/s, {failed} failed{extra}"));
                }
            })
        };
        Self {
            bar,
            ticker,
            on_ctrl_c,
        }
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.on_ctrl_c.abort();
        self.bar.finish_and_clear();
    }
}

fn progress_bar(hidden: bool, limits: Limits) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (len, template) = match (limits.count, limits.duration) {
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

/// Waits for every worker; their counters together.
pub async fn join(mut workers: JoinSet<Counters>) -> Counters {
    let mut counters = Counters::default();
    while let Some(res) = workers.join_next().await {
        match res {
            Ok(c) => counters.merge(&c),
            Err(e) => counters.error("panic", format!("worker failed: {e}")),
        }
    }
    counters
}

/// The report's fields every generator fills the same way: the rate, where latency
/// counts from (`closed_loop_from` without a rate), the send lag, the domains and the
/// timeline.
pub fn close_report(
    report: &mut Report,
    rate: Option<f64>,
    closed_loop_from: &str,
    tally: &Tally,
    mix: &DomainMix,
    timeline: &Timeline,
) {
    report.rate_per_sec = rate;
    report.ack_latency_from = match rate {
        Some(_) => "scheduled send time".into(),
        None => closed_loop_from.into(),
    };
    if rate.is_some() {
        report.send_lag_ms = Some(tally.send_lag().summary());
    }
    report.recipient_domains = mix.to_string();
    report.timeline = timeline.seconds_until(Some(unix_micros()));
}
