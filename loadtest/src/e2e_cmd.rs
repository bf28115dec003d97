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
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::dns::{DnsStub, Zone};
use crate::generator::unix_micros;
use crate::http_cmd::{self, HttpArgs, HttpOptions};
use crate::mix::{DEFAULT_E2E_MIX, DomainMix};
use crate::postroad_proc::{Delivery, PostroadOptions, PostroadProcess};
use crate::run::RunArgs;
use crate::sink::{Faults, Observer, Sink, SinkConfig};
use crate::smtp_cmd::{self, Hooks, SmtpArgs};
use crate::stats::{LatencySummary, Report};
use crate::timeline::{Second, Timeline};
use crate::tracker::{DomainCount, Tracker};

/// The HTTP generator's arguments for the load `load` describes (always stamped; the
/// reports are e2e's own).
fn http_load(load: &SmtpArgs, http: HttpOptions) -> HttpArgs {
    HttpArgs {
        addr: load.addr.clone(),
        http,
        run: RunArgs {
            json: None,
            html: None,
            stamp: true,
            ..load.run.clone()
        },
        recipients: load.recipients,
        to_domain: load
            .to_domain
            .clone()
            .unwrap_or_else(|| "example.test".into()),
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

mod args;
pub mod limits;
mod rates;
mod report;
pub use args::{DEFAULT_DNS_LISTEN, DEFAULT_SINK_LISTEN, E2eArgs, Via};
pub use report::{E2eReport, SpawnInfo};

/// Entry point of `loadtest e2e`.
pub async fn run(args: E2eArgs) -> anyhow::Result<ExitCode> {
    if args.print_config {
        print!("{}", relay_snippet(args.dns_addr(), args.sink_addr()));
        return Ok(ExitCode::SUCCESS);
    }
    let report = execute(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.rates_out {
        rates::write(path, &args, &report)?;
    }
    if let Some(path) = &args.load.run.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.load.run.html {
        let html = report.html(&crate::load_page::command_line());
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.limits_svg_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for trace in &report.limits {
            let path = dir.join(format!("rate-{}.svg", trace.domain));
            let svg = crate::html::standalone_svg(&report::limits_chart(trace));
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        }
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
    let schedule = limits::Schedule::parse(&args.sink_domains, &args.sink_changes)?;
    let quiet = args.load.run.no_progress || !std::io::stderr().is_terminal();

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
        domain_faults: schedule.initial(),
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
                relay: !args.ingress_only,
                delivery: if args.smarthost {
                    Delivery::Smarthost(sink_addr)
                } else {
                    Delivery::Mx {
                        dns: dns_addr,
                        mx_port: sink_addr.port(),
                    }
                },
                connections: args.load.run.connections,
                fast_retries: faults.tempfail_share > 0.0 || schedule.defers(),
                log_filter: args.postroad_log.clone(),
                work_root: args.work_dir.clone(),
                keep: args.keep_work_dir,
                extra_config: match &args.postroad_config_extra {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    None => String::new(),
                },
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

    // the load, and the CPU time Postroad spends on it
    let cpu_before = postroad.as_ref().and_then(PostroadProcess::cpu_secs);
    let mut load_args = args.load.clone();
    load_args.addr = target.clone();
    load_args.run.json = None;
    load_args.run.html = None;
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
    // The domains' limits follow their schedule from the start of the load.
    let (stop_following, stopped) = tokio::sync::watch::channel(false);
    let following = (!schedule.is_empty())
        .then(|| tokio::spawn(limits::follow(schedule, sink.control(), stopped)));
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
    while !args.ingress_only && !tracker.drained() && drain_start.elapsed() < drain_timeout {
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
    let postroad_cpu_secs = postroad
        .as_ref()
        .and_then(PostroadProcess::cpu_secs)
        .zip(cpu_before)
        .map(|(after, before)| after - before);

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
    let _ = stop_following.send(true);
    let limits = match following {
        Some(task) => task.await.context("following the sink's limits")??,
        None => Vec::new(),
    };
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
    if rec.lost > 0 && !args.ingress_only {
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
    if !drained && !args.ingress_only {
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
        connections: args.load.run.connections as usize,
        message_size: args.load.run.size,
        recipients_per_message: args.load.recipients,
        rate_per_sec: args.load.run.rate,
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
        ingress_only: args.ingress_only,
        postroad_cpu_secs,
        problems,
        load,
        timeline: timeline.seconds_until(Some(rec.last_delivery_us.max(load_end_us))),
        limits,
    })
}

#[cfg(test)]
mod tests;
