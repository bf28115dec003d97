//! `loadtest`: Postroad's load-test harness.

mod generator;
mod smtp_client;
mod smtp_cmd;
mod stats;
mod verify_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Check stored messages against their X-Loadtest-Checksum header.
    Verify(verify_cmd::VerifyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Smtp(args) => smtp_cmd::run(*args).await,
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
