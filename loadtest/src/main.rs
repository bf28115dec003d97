//! `loadtest`: Postroad's load-test harness.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postroad_loadtest::{
    campaign_cmd, dns_cmd, e2e_cmd, history_cmd, http_cmd, sink_cmd, smtp_cmd, track_cmd,
    verify_cmd,
};

#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about = "Postroad's load-test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push messages at an SMTP server and report throughput and ack latency.
    Smtp(Box<smtp_cmd::SmtpArgs>),
    /// Push messages at Postroad's HTTP API and report throughput and latency.
    Http(Box<http_cmd::HttpArgs>),
    /// Load an MTA (running, or spawned Postroad) that delivers to an in-process sink:
    /// accepted/s, delivered/s, submit-to-delivered latency, lost and duplicated.
    E2e(Box<e2e_cmd::E2eArgs>),
    /// Receive mail over SMTP or LMTP: count, verify, dedupe, inject faults.
    Sink(Box<sink_cmd::SinkArgs>),
    /// Serve MX, A and AAAA records (and SERVFAIL/NXDOMAIN names) over UDP and TCP.
    Dns(Box<dns_cmd::DnsArgs>),
    /// Fill a history database (10M rows over 12 months for 1M users by default)
    /// through the history writer, then time its queries: events/s and p50/p95/p99.
    History(Box<history_cmd::HistoryArgs>),
    /// Load the tracking routes (open pixel, tracked link) with tokens signed by the
    /// server's tracking key: requests/s and latency.
    Track(Box<track_cmd::TrackArgs>),
    /// A campaign of N recipients through a spawned Postroad's HTTP API to the sink,
    /// with high-priority messages meanwhile: time to queue and to deliver, peak
    /// memory, the high messages' latency.
    Campaign(Box<campaign_cmd::CampaignArgs>),
    /// Check stored messages against their X-Loadtest-Checksum header.
    Verify(verify_cmd::VerifyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Smtp(args) => smtp_cmd::run(*args).await,
        Command::Http(args) => http_cmd::run(*args).await,
        Command::E2e(args) => e2e_cmd::run(*args).await,
        Command::Sink(args) => sink_cmd::run(*args).await,
        Command::Dns(args) => dns_cmd::run(*args).await,
        Command::History(args) => history_cmd::run(*args).await,
        Command::Track(args) => track_cmd::run(*args).await,
        Command::Campaign(args) => campaign_cmd::run(*args).await,
        Command::Verify(args) => verify_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
