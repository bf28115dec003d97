//! `postroad bounce classify FILE...`: what the bounce classifier makes of messages on
//! disk (bounces, complaints, anything else), one line per file and recipient: a table,
//! or with `--jsonl` one JSON object per line. A file that cannot be read is named on
//! standard error and the others are still classified (the exit code says so).

use std::io::{Read, Write};
use std::path::PathBuf;

use postroad_bounce::{Analysis, Recipient};
use serde::Serialize;

use crate::text_table::with_header;

/// Largest file read: a report bigger than this is not a bounce anyone sends.
const MAX_FILE: u64 = 64 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct BounceArgs {
    #[command(subcommand)]
    pub command: BounceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BounceCommand {
    /// Classify messages (files as received, LF, CRLF or CR line endings; `-` reads
    /// standard input): per failed recipient the reason, hard or soft, the enhanced
    /// status and reply codes, and for complaints the feedback type.
    Classify {
        /// The messages.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per line: file, recipient (null for a file that is no
        /// bounce), reason, hardbounce, deliverystatus, replycode, feedbacktype, kind,
        /// diagnostic.
        #[arg(long)]
        jsonl: bool,
    },
}

/// One output line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    file: String,
    recipient: Option<&'a str>,
    reason: Option<&'a str>,
    hardbounce: Option<bool>,
    deliverystatus: Option<&'a str>,
    replycode: Option<&'a str>,
    feedbacktype: Option<&'a str>,
    kind: &'static str,
    diagnostic: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn of(file: &str, kind: &'static str, r: Option<&'a Recipient>) -> Self {
        Line {
            file: file.to_string(),
            recipient: r.map(|r| r.recipient.as_str()),
            reason: r.map(|r| r.reason.as_str()),
            hardbounce: r.map(|r| r.hardbounce),
            deliverystatus: r.map(|r| r.deliverystatus.as_str()),
            replycode: r.map(|r| r.replycode.as_str()),
            feedbacktype: r.and_then(|r| r.feedbacktype.as_deref()),
            kind,
            diagnostic: r.map(|r| r.diagnostic.as_str()),
        }
    }
}

pub fn run(args: BounceArgs) -> anyhow::Result<()> {
    let BounceCommand::Classify { files, jsonl } = args.command;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = Vec::new();
    let mut unreadable = 0;
    for path in &files {
        let name = path.display().to_string();
        let raw = match read(path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("postroad bounce classify: cannot read {name}: {e:#}");
                unreadable += 1;
                continue;
            }
        };
        let analysis = postroad_bounce::analyse(&raw);
        let kind = kind(&analysis);
        let lines: Vec<Line<'_>> = if analysis.recipients.is_empty() {
            vec![Line::of(&name, kind, None)]
        } else {
            analysis
                .recipients
                .iter()
                .map(|r| Line::of(&name, kind, Some(r)))
                .collect()
        };
        for line in lines {
            if jsonl {
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            } else {
                rows.push(row(&line));
            }
        }
    }
    if !jsonl {
        let header = ["FILE", "RECIPIENT", "REASON", "HARD", "CODES", "DIAGNOSTIC"];
        out.write_all(with_header(header, &rows).as_bytes())?;
    }
    out.flush()?;
    if unreadable > 0 {
        anyhow::bail!("{unreadable} of {} files could not be read", files.len());
    }
    Ok(())
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    reader.take(MAX_FILE + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_FILE {
        anyhow::bail!("larger than {} MiB", MAX_FILE / (1024 * 1024));
    }
    Ok(raw)
}

fn kind(analysis: &Analysis) -> &'static str {
    match analysis.kind {
        postroad_bounce::Kind::Bounce => "bounce",
        postroad_bounce::Kind::Complaint => "complaint",
        postroad_bounce::Kind::AutoReply => "autoreply",
        postroad_bounce::Kind::Other => "other",
    }
}

fn row(line: &Line<'_>) -> [String; 6] {
    let or_dash = |v: Option<&str>| v.filter(|v| !v.is_empty()).unwrap_or("-").to_string();
    [
        line.file.clone(),
        or_dash(line.recipient),
        match (line.reason, line.feedbacktype) {
            (Some(reason), Some(feedback)) => format!("{reason} ({feedback})"),
            (Some(reason), None) => reason.to_string(),
            (None, _) => format!("({})", line.kind),
        },
        match line.hardbounce {
            Some(true) => "hard".into(),
            Some(false) => "soft".into(),
            None => "-".into(),
        },
        format!(
            "{} {}",
            or_dash(line.replycode),
            or_dash(line.deliverystatus)
        ),
        or_dash(line.diagnostic),
    ]
}
