//! `loadtest verify`: check stored messages against their `X-Loadtest-Checksum`, for
//! spool checks after a crash test.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::generator::{dot_unstuff, verify};

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Message files, each one message as stored (headers, empty line, body).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// The files hold the dot-stuffed wire form (as captured from DATA).
    #[arg(long)]
    pub dot_stuffed: bool,
}

/// Prints "<file>\t<seq>\t<checksum>" per good file and an error line per bad one;
/// fails when any file is bad.
pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut bad = 0usize;
    for path in &args.files {
        let result = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                if args.dot_stuffed {
                    verify(&dot_unstuff(&data))
                } else {
                    verify(&data)
                }
            });
        match result {
            Ok(v) => {
                // a closed stdout (e.g. `| head`) is not worth a panic
                let _ = writeln!(out, "{}\t{}\t{:016x}", path.display(), v.seq, v.checksum);
            }
            Err(e) => {
                bad += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} messages failed verification", args.files.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
