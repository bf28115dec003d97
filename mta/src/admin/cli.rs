//! `postroad queue ...` and `postroad dlq ...`: the arguments, and the output for
//! people (aligned text) or programs (`--json`, the endpoint's answer as is).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use postroad_queue::{DeadLetter, Envelope};

use super::client::{AdminClient, Call, DEFAULT_ADMIN_URL, Stats};
use super::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, TOKEN_FILE, read_token_file};
use crate::text_table::table;

/// How to reach the running server's admin endpoint, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// URL of the running server's admin endpoint (its admin.listen).
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "POSTROAD_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL,
        global = true
    )]
    pub admin_url: String,
    /// Admin token; without it, the one the server generated in <DATA_DIR>/admin.token.
    #[arg(
        long,
        env = "POSTROAD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// The server's data directory, where it keeps a generated admin.token.
    #[arg(
        long,
        env = "POSTROAD_DATA_DIR",
        default_value = "./postroad-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print the endpoint's JSON answer as is.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `postroad queue ...`
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// Counts of queued (ready, deferred, being delivered) and dead-lettered messages.
    Stats,
    /// Queued messages, oldest first.
    List {
        /// Show at most this many (1 to 10000).
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT as u64, value_parser = limit_parser())]
        limit: u64,
    },
    /// One queued message: its envelope and body.
    Inspect {
        /// Message id (32 hex digits).
        id: String,
        /// Print only the message's exact bytes (e.g. `> message.eml`).
        #[arg(long)]
        raw: bool,
    },
    /// Make every deferred message due now.
    Flush,
    /// Destination sites: limits (from the shaping file), state, connections, queue.
    Sites,
    /// HTTP providers (SES, SendGrid): state (paused, circuit open), rate, requests.
    Providers,
    /// Read the shaping file again (as SIGHUP does); a file that does not load is
    /// refused and the running one stays.
    ReloadShaping,
}

/// `postroad dlq ...`
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Dead letters (bounced or expired messages), oldest first.
    List {
        /// Show at most this many (1 to 10000).
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT as u64, value_parser = limit_parser())]
        limit: u64,
    },
    /// One dead letter: why, its envelope and body.
    Inspect {
        /// Message id (32 hex digits).
        id: String,
        /// Print only the message's exact bytes (e.g. `> message.eml`).
        #[arg(long)]
        raw: bool,
    },
    /// Queue a dead letter's recipients again, due now, with fresh attempt counts.
    Requeue {
        /// Message id (32 hex digits).
        id: String,
    },
    /// Delete a dead letter for good.
    Purge {
        /// Message id (32 hex digits).
        id: String,
    },
}

fn limit_parser() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_LIST_LIMIT as u64)
}

impl Endpoint {
    /// The client: `--token`, else the token file in `--data-dir`.
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = match &self.token {
            Some(token) => token.trim().to_string(),
            None => {
                let path = self.data_dir.join(TOKEN_FILE);
                read_token_file(&path)?.with_context(|| {
                    format!(
                        "no admin token: {} does not exist; pass --token (or \
                         POSTROAD_ADMIN_TOKEN), or --data-dir with the server's data directory",
                        path.display()
                    )
                })?
            }
        };
        AdminClient::new(&self.admin_url, &token)
    }
}

/// Runs `postroad queue ...`.
pub fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let client = args.endpoint.client()?;
    let json = args.endpoint.json;
    let call = match &args.command {
        QueueCommand::Stats => Call::Stats,
        QueueCommand::List { limit } => Call::List {
            limit: *limit as usize,
        },
        QueueCommand::Inspect { id, raw } => Call::Inspect { id, raw: *raw },
        QueueCommand::Flush => Call::Flush,
        QueueCommand::Sites => Call::Sites,
        QueueCommand::Providers => Call::Providers,
        QueueCommand::ReloadShaping => Call::ReloadShaping,
    };
    if json {
        return print_json(&client, &call);
    }
    let out = match args.command {
        QueueCommand::Stats => format_stats(&client.stats()?),
        QueueCommand::List { limit } => {
            let messages = client.list(limit as usize)?;
            note_limit(messages.len(), limit);
            format_queue(&messages)
        }
        QueueCommand::Inspect { id, raw } => {
            let (envelope, body) = client.inspect(&id, raw)?;
            if raw {
                return write_stdout(&body);
            }
            let mut out = format_envelope(&envelope);
            push_body(&mut out, &body);
            out
        }
        QueueCommand::Flush => {
            let n = client.flush()?;
            format!("flushed: {n} deferred {} now due\n", plural(n, "message"))
        }
        QueueCommand::Sites => super::sites::format_sites(&client.sites()?),
        QueueCommand::Providers => super::sites::format_providers(&client.providers()?),
        QueueCommand::ReloadShaping => client.reload_shaping()?,
    };
    write_stdout(out.as_bytes())
}

/// Runs `postroad dlq ...`.
pub fn dlq(args: DlqArgs) -> anyhow::Result<()> {
    let client = args.endpoint.client()?;
    let call = match &args.command {
        DlqCommand::List { limit } => Call::DeadLetters {
            limit: *limit as usize,
        },
        DlqCommand::Inspect { id, raw } => Call::InspectDeadLetter { id, raw: *raw },
        DlqCommand::Requeue { id } => Call::Requeue { id },
        DlqCommand::Purge { id } => Call::Purge { id },
    };
    if args.endpoint.json {
        return print_json(&client, &call);
    }
    let out = match args.command {
        DlqCommand::List { limit } => {
            let letters = client.dead_letters(limit as usize)?;
            note_limit(letters.len(), limit);
            format_dead_letters(&letters)
        }
        DlqCommand::Inspect { id, raw } => {
            let (letter, body) = client.inspect_dead_letter(&id, raw)?;
            if raw {
                return write_stdout(&body);
            }
            let mut out = format_dead_letter(&letter);
            push_body(&mut out, &body);
            out
        }
        DlqCommand::Requeue { id } => {
            let new_id = client.requeue(&id)?;
            format!("requeued {id} as {new_id}\n")
        }
        DlqCommand::Purge { id } => {
            client.purge(&id)?;
            format!("purged dead letter {id}\n")
        }
    };
    write_stdout(out.as_bytes())
}

fn print_json(client: &AdminClient, call: &Call<'_>) -> anyhow::Result<()> {
    let mut text = client.call_text(call)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_stdout(text.as_bytes())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

fn note_limit(shown: usize, limit: u64) {
    if shown as u64 >= limit {
        eprintln!("(showing the first {shown}; --limit N shows more, up to {MAX_LIST_LIMIT})");
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{word} is")
    } else {
        format!("{word}s are")
    }
}

/// `queue stats`, one count per line.
pub fn format_stats(stats: &Stats) -> String {
    let rows = [
        ("queued", stats.queued),
        ("  ready", stats.ready),
        ("  deferred", stats.deferred),
        ("  being delivered", stats.claimed),
        ("dead letters", stats.dead_letters),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// `queue list`: one aligned row per message.
pub fn format_queue(messages: &[Envelope]) -> String {
    if messages.is_empty() {
        return "the queue is empty\n".into();
    }
    let mut rows = vec![row([
        "ID",
        "RECEIVED (UTC)",
        "SENDER",
        "RCPTS",
        "FIRST RECIPIENT",
        "ATTEMPTS",
        "SIZE",
    ])];
    for e in messages {
        rows.push(vec![
            e.id.to_string(),
            date(e.received_at_ms),
            shorten(&sender(&e.sender), 40),
            e.recipients.len().to_string(),
            shorten(first_recipient(e), 40),
            attempts(e).to_string(),
            size(e.size),
        ]);
    }
    table(&rows)
}

/// `dlq list`: one aligned row per dead letter.
pub fn format_dead_letters(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut rows = vec![row([
        "ID",
        "DEAD SINCE (UTC)",
        "SENDER",
        "RCPTS",
        "FIRST RECIPIENT",
        "REASON",
    ])];
    for d in letters {
        let e = &d.envelope;
        rows.push(vec![
            e.id.to_string(),
            date(d.at_ms),
            shorten(&sender(&e.sender), 40),
            e.recipients.len().to_string(),
            shorten(first_recipient(e), 40),
            shorten(&one_line(&d.reason), 80),
        ]);
    }
    table(&rows)
}

/// `queue inspect`: the envelope, one field per line.
pub fn format_envelope(e: &Envelope) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", e.id.to_string()),
        (
            "received",
            format!(
                "{} UTC from {} (helo {})",
                date(e.received_at_ms),
                e.client_ip,
                if e.helo.is_empty() { "-" } else { &e.helo }
            ),
        ),
    ];
    if let Some(user) = &e.auth_identity {
        fields.push(("authenticated", user.clone()));
    }
    if let Some(ms) = e.requeued_at_ms {
        fields.push(("requeued", format!("{} UTC", date(ms))));
    }
    fields.push(("sender", sender(&e.sender)));
    fields.push(("size", format!("{} bytes", e.size)));
    if e.meta.priority != postroad_queue::Priority::Normal {
        fields.push(("priority", e.meta.priority.to_string()));
    }
    let flags: Vec<&str> = [(e.body_8bit, "8bitmime"), (e.smtputf8, "smtputf8")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if !flags.is_empty() {
        fields.push(("body", flags.join(" ")));
    }
    if e.dsn_ret.is_some() || e.dsn_envid.is_some() {
        let mut dsn = Vec::new();
        if let Some(ret) = e.dsn_ret {
            dsn.push(format!("ret={ret:?}").to_ascii_lowercase());
        }
        if let Some(envid) = &e.dsn_envid {
            dsn.push(format!("envid={envid}"));
        }
        fields.push(("dsn", dsn.join(" ")));
    }
    if let Some(user_id) = e.meta.user_id {
        fields.push(("user id", user_id.to_string()));
    }
    for (name, value) in [
        ("email type", &e.meta.email_type),
        ("tenant", &e.meta.tenant),
        ("campaign", &e.meta.campaign),
        ("variant", &e.meta.variant),
    ] {
        if let Some(value) = value {
            fields.push((name, value.clone()));
        }
    }
    if !e.meta.tags.is_empty() {
        let tags: Vec<String> = e
            .meta
            .tags
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        fields.push(("tags", tags.join(", ")));
    }
    fields.push(("recipients", e.recipients.len().to_string()));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out: String = fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect();

    let rows: Vec<Vec<String>> = e
        .recipients
        .iter()
        .map(|r| {
            let mut notify = Vec::new();
            for (on, name) in [
                (r.notify.success, "success"),
                (r.notify.failure, "failure"),
                (r.notify.delay, "delay"),
                (r.notify.never, "never"),
            ] {
                if on {
                    notify.push(name);
                }
            }
            let mut extra = String::new();
            if !notify.is_empty() {
                extra.push_str(&format!("notify={}", notify.join(",")));
            }
            if let Some(orcpt) = &r.orcpt {
                if !extra.is_empty() {
                    extra.push(' ');
                }
                extra.push_str(&format!("orcpt={orcpt}"));
            }
            vec![
                format!("  {}", r.address),
                format!("attempts {}", r.attempts),
                extra,
            ]
        })
        .collect();
    out.push_str(&table(&rows));
    out
}

/// `dlq inspect`: when and why, then the envelope.
pub fn format_dead_letter(d: &DeadLetter) -> String {
    let mut out = format!(
        "dead since  {} UTC\nreason      {}\n",
        date(d.at_ms),
        one_line(&d.reason)
    );
    out.push_str(&format_envelope(&d.envelope));
    out
}

fn push_body(out: &mut String, body: &[u8]) {
    out.push('\n');
    out.push_str(&String::from_utf8_lossy(body));
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn date(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

fn sender(s: &str) -> String {
    format!("<{s}>")
}

fn first_recipient(e: &Envelope) -> &str {
    e.recipients.first().map_or("-", |r| r.address.as_str())
}

fn attempts(e: &Envelope) -> u32 {
    e.recipients.iter().map(|r| r.attempts).max().unwrap_or(0)
}

fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

/// Control characters (a reply's CR LF, tabs) as spaces, for one table cell.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.truncate(out.trim_end().len());
    out
}

fn shorten(text: &str, max: usize) -> String {
    let text = one_line(text);
    if text.chars().count() <= max {
        text
    } else {
        let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_one_line_and_short() {
        assert_eq!(
            one_line("550 5.1.1\r\nno such user\t "),
            "550 5.1.1  no such user"
        );
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(4096), "4.0 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(date(0), "1970-01-01 00:00:00");
        assert_eq!(date(u64::MAX), format!("@{}ms", u64::MAX));
    }
}
