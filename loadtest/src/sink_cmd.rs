//! `loadtest sink`: run the fault-injecting SMTP/LMTP sink from the command line,
//! print live rates and a summary at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

use crate::sink::{Duplicate, Extensions, Faults, Sink, SinkConfig, SinkStats};

#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2526")]
    pub listen: SocketAddr,

    /// Speak LMTP (LHLO; one reply per recipient after the data).
    #[arg(long)]
    pub lmtp: bool,

    /// Name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.loadtest.invalid")]
    pub hostname: String,

    /// Extensions to advertise, comma-separated: pipelining, 8bitmime, smtputf8,
    /// starttls, chunking, enhancedstatuscodes, dsn, size; or none/all/default; or
    /// changes to the default (+starttls,-chunking). Default: all but starttls.
    #[arg(long, value_name = "LIST")]
    pub ehlo: Option<String>,

    /// Accept at most this many transactions per second; above: 421 4.7.0 at MAIL.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate_limit: Option<f64>,

    /// Token bucket size for --rate-limit [default: the rate].
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<f64>,

    /// Share of recipients refused with 451 4.3.0 at RCPT.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub tempfail_share: f64,

    /// Share of recipients refused with 550 5.1.1 at RCPT.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub permfail_share: f64,

    /// Share of transactions whose connection is closed mid-DATA without a reply.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub drop_share: f64,

    /// Wait this long before every reply.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub delay_ms: u64,

    /// Faults for one recipient domain, replacing the global ones for it:
    /// DOMAIN:rate=10,burst=5,tempfail=0.1,permfail=0.05,drop=0.01,delay-ms=50.
    #[arg(long = "domain", value_name = "DOMAIN:FAULTS")]
    pub domains: Vec<String>,

    /// Seed of the share draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Most open connections (more get 421 at connect).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most open connections per client IP (more get 421 at connect).
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Largest message accepted (552 5.3.4 above).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message_size: usize,

    /// Most recipients per message (452 4.5.3 above).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_recipients: usize,

    /// Check X-Loadtest-Checksum and find duplicate deliveries (per Message-ID and
    /// recipient); exit code 1 if any checksum is bad or any delivery is a duplicate.
    #[arg(long)]
    pub verify: bool,

    /// Write accepted messages into this Maildir (for debugging; slow).
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,

    /// Print a line of counters and rates every SECS (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub report_every: f64,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Stop once this many messages were accepted.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,

    /// Write the summary as JSON to FILE at exit.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Seconds to wait for a command or data.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,
}

impl SinkArgs {
    pub fn config(&self) -> anyhow::Result<SinkConfig> {
        let extensions = match &self.ehlo {
            Some(list) => Extensions::parse(list).map_err(anyhow::Error::msg)?,
            None => Extensions::default(),
        };
        let faults = Faults {
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
            tempfail_share: self.tempfail_share,
            permfail_share: self.permfail_share,
            drop_share: self.drop_share,
            delay: Duration::from_millis(self.delay_ms),
            // Connection limits of all domains together: --max-connections.
            max_connections: None,
        };
        faults.validate().map_err(anyhow::Error::msg)?;
        let mut domain_faults = HashMap::new();
        for spec in &self.domains {
            let (domain, kv) = spec
                .split_once(':')
                .with_context(|| format!("--domain {spec:?}: want DOMAIN:key=value,..."))?;
            let f = Faults::parse_kv(kv).map_err(|e| anyhow::anyhow!("--domain {spec:?}: {e}"))?;
            domain_faults.insert(domain.trim().to_ascii_lowercase(), f);
        }
        if !(self.idle_timeout.is_finite() && self.idle_timeout > 0.0) {
            bail!("bad --idle-timeout {}", self.idle_timeout);
        }
        Ok(SinkConfig {
            listen: self.listen,
            hostname: self.hostname.clone(),
            lmtp: self.lmtp,
            extensions,
            faults,
            domain_faults,
            seed: self.seed,
            verify: self.verify,
            keep_messages: false,
            maildir: self.maildir.clone(),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            idle_timeout: Duration::try_from_secs_f64(self.idle_timeout)?,
            observer: None,
        })
    }
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
pub struct SinkReport {
    pub listen: SocketAddr,
    pub protocol: &'static str,
    pub elapsed_secs: f64,
    /// Over `stats.busy_secs` (first connection to last accepted message).
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
    pub stats: SinkStats,
    /// At most 1000.
    pub duplicates: Vec<Duplicate>,
    pub stop_reason: String,
}

impl SinkReport {
    pub fn text(&self, verify: bool) -> String {
        let s = &self.stats;
        let mut t = String::new();
        let _ = writeln!(t, "sink         {} ({})", self.listen, self.protocol);
        let _ = writeln!(
            t,
            "connections  {} ({} refused by limits)",
            s.connections, s.connections_refused
        );
        let _ = writeln!(t, "transactions {}", s.transactions);
        let _ = writeln!(
            t,
            "accepted     {} messages, {} recipients, {} bytes",
            s.messages, s.recipients, s.bytes
        );
        let codes: Vec<String> = s
            .rejections
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = writeln!(
            t,
            "rejected     {}{}",
            s.rejected_total(),
            if codes.is_empty() {
                String::new()
            } else {
                format!("  ({})", codes.join(", "))
            }
        );
        let _ = writeln!(t, "dropped      {} connections mid-data", s.dropped);
        for (domain, d) in &s.domains {
            let _ = writeln!(
                t,
                "domain       {domain}: {} delivered, {} throttled (421), {} refused",
                d.delivered, d.throttled, d.refused
            );
        }
        if verify {
            let _ = writeln!(
                t,
                "checksums    {} ok, {} bad, {} missing",
                s.checksum_ok, s.checksum_bad, s.checksum_missing
            );
            let _ = writeln!(
                t,
                "duplicates   {} ({} messages without Message-ID)",
                s.duplicates, s.no_message_id
            );
            for d in self.duplicates.iter().take(10) {
                let _ = writeln!(
                    t,
                    "             {} -> {}: {} deliveries",
                    d.message_id, d.recipient, d.deliveries
                );
            }
        }
        let l = &s.e2e_latency_ms;
        if l.count > 0 {
            let _ = writeln!(
                t,
                "e2e latency  p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
                l.p50, l.p90, l.p99, l.max, l.count
            );
        }
        let _ = writeln!(t, "stopped      {}", self.stop_reason);
        let _ = writeln!(t, "elapsed      {:.3} s", self.elapsed_secs);
        let _ = writeln!(
            t,
            "throughput   {:.1} msg/s, {:.2} MB/s over {:.3} s busy (first connection to last message)",
            self.messages_per_sec, self.mb_per_sec, s.busy_secs
        );
        t
    }
}

/// Waits for SIGINT, SIGTERM or the end of `duration`; returns why it stopped.
pub async fn wait_for_stop(duration: Option<Duration>) -> &'static str {
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term => "terminated",
        _ = sleep => "duration reached",
    }
}

pub async fn run(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let duration = match args.duration {
        Some(d) if !(d.is_finite() && d >= 0.0) => bail!("bad --duration {d}"),
        Some(d) => Some(Duration::try_from_secs_f64(d)?),
        None => None,
    };
    if !(args.report_every.is_finite() && args.report_every >= 0.0) {
        bail!("bad --report-every {}", args.report_every);
    }
    let protocol = if config.lmtp { "LMTP" } else { "SMTP" };
    let verify = config.verify;
    let sink = Sink::start(config).await?;
    let listen = sink.local_addr();
    eprintln!("sink listening on {listen} ({protocol})");
    let start = Instant::now();

    let reporter = if args.report_every > 0.0 {
        Some(Duration::try_from_secs_f64(args.report_every)?)
    } else {
        None
    };

    let stop_reason = {
        let stop = async {
            let until_n = async {
                match args.messages {
                    Some(n) => {
                        let _ = sink.wait_until(Duration::MAX, |s| s.messages >= n).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = wait_for_stop(duration) => r,
                _ = until_n => "message count reached",
            }
        };
        tokio::pin!(stop);
        match reporter {
            None => stop.await,
            Some(every) => {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                let mut last = (Instant::now(), SinkStats::default());
                loop {
                    tokio::select! {
                        r = &mut stop => break r,
                        _ = tick.tick() => {
                            let now = Instant::now();
                            let s = sink.stats();
                            eprintln!("{}", live_line(start, &last, now, &s, verify));
                            last = (now, s);
                        }
                    }
                }
            }
        }
    };
    let elapsed = start.elapsed();
    let duplicates: Vec<Duplicate> = sink.duplicates().into_iter().take(1000).collect();
    let stats = sink.shutdown().await;
    let secs = stats.busy_secs.max(1e-6);
    let report = SinkReport {
        listen,
        protocol,
        elapsed_secs: elapsed.as_secs_f64(),
        messages_per_sec: stats.messages as f64 / secs,
        mb_per_sec: stats.bytes as f64 / 1e6 / secs,
        stats,
        duplicates,
        stop_reason: stop_reason.to_owned(),
    };
    print!("{}", report.text(verify));
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let bad = verify && (report.stats.checksum_bad > 0 || report.stats.duplicates > 0);
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn live_line(
    start: Instant,
    last: &(Instant, SinkStats),
    now: Instant,
    s: &SinkStats,
    verify: bool,
) -> String {
    let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
    let rate = (s.messages - last.1.messages.min(s.messages)) as f64 / dt;
    let mb = (s.bytes - last.1.bytes.min(s.bytes)) as f64 / 1e6 / dt;
    let mut line = format!(
        "{:>8.1}s  conns {:>5}  msgs {:>10} ({:>8.0}/s, {:>7.2} MB/s)  rcpts {:>10}  rejected {:>7}  dropped {:>5}",
        now.duration_since(start).as_secs_f64(),
        s.active_connections,
        s.messages,
        rate,
        mb,
        s.recipients,
        s.rejected_total(),
        s.dropped
    );
    if verify {
        let _ = write!(line, "  dupes {}  bad {}", s.duplicates, s.checksum_bad);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SinkArgs,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<SinkConfig> {
        let mut v = vec!["t"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v)?.args.config()
    }

    #[test]
    fn options_become_a_config() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--lmtp",
            "--ehlo",
            "+starttls,-chunking",
            "--rate-limit",
            "100",
            "--tempfail-share",
            "0.1",
            "--permfail-share",
            "0.05",
            "--drop-share",
            "0.01",
            "--delay-ms",
            "20",
            "--domain",
            "Gmail.test:rate=5,tempfail=0.5",
            "--domain",
            "slow.test:delay-ms=250",
            "--seed",
            "9",
            "--max-connections-per-ip",
            "3",
            "--verify",
        ])
        .unwrap();
        assert!(c.lmtp && c.verify && c.extensions.starttls && !c.extensions.chunking);
        assert_eq!(c.faults.rate_limit, Some(100.0));
        assert_eq!(c.faults.tempfail_share, 0.1);
        assert_eq!(c.faults.delay, Duration::from_millis(20));
        assert_eq!(c.domain_faults["gmail.test"].rate_limit, Some(5.0));
        assert_eq!(c.domain_faults["gmail.test"].tempfail_share, 0.5);
        assert_eq!(
            c.domain_faults["slow.test"].delay,
            Duration::from_millis(250)
        );
        assert_eq!((c.seed, c.max_connections_per_ip), (9, Some(3)));

        for bad in [
            &["--domain", "nocolon"][..],
            &["--domain", "x.test:tempfail=2"],
            &["--ehlo", "pipelining,bogus"],
            &["--tempfail-share", "0.7", "--permfail-share", "0.7"],
            &["--domain", "x.test:delay-ms=1e300"],
            &["--idle-timeout", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_configs_fail_at_start() {
        let mut c = parse(&["--listen", "127.0.0.1:0"]).unwrap();
        c.faults.tempfail_share = 1.5;
        assert!(Sink::start(c).await.is_err());
        let mut c = parse(&["--listen", "127.0.0.1:0"]).unwrap();
        c.domain_faults.insert(
            "x.test".into(),
            Faults {
                drop_share: -1.0,
                ..Faults::default()
            },
        );
        assert!(Sink::start(c).await.is_err());
    }
}
