//! The `postroad` command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use postroad::config::Config;

#[derive(Parser)]
#[command(
    name = "postroad",
    version,
    about = "A high-performance SMTP mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the MTA (every role, embedded spool) until SIGTERM or SIGINT.
    Serve {
        /// TOML config file; without one, built-in defaults (see postroad.example.toml).
        #[arg(long, short, env = "POSTROAD_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (spool, generated TLS material); overrides server.data_dir.
        #[arg(long, env = "POSTROAD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the argon2 hash of a password (read from stdin) for [[auth.users]].
    Passwd,
    /// Load a config file, check it and print the effective configuration.
    CheckConfig {
        #[arg(long, short, env = "POSTROAD_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, data_dir } => {
            init_tracing();
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.set_data_dir(dir);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("postroad")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(postroad::serve::serve(config))
        }
        Command::Passwd => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password: ");
            }
            let mut password = String::new();
            stdin
                .lock()
                .read_line(&mut password)
                .context("cannot read the password")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!("{}", postroad::auth::hash_password(password));
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref())?;
            print!(
                "{}",
                toml::to_string_pretty(&config).context("cannot print the config")?
            );
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
