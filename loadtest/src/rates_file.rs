//! The rates file `postroad plan --rates` reads (`--rates-out FILE` of `loadtest e2e`
//! and `loadtest history`): one JSON object, a section per measurement (`ingress`,
//! `pipeline`, `history`). Each command replaces its own section and keeps the
//! others, and records with it the machine, the date and its command line.
//!
//! CPU time is read from `/proc/<pid>/stat` (utime + stime), so a rate is messages
//! (or events) per CPU-second of the process that did the work, whatever the number
//! of cores it ran on.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

/// The file's format, as `postroad plan` checks it.
pub const FORMAT: u64 = 1;

/// User + system CPU seconds `pid` has used (Linux), or `None` where there is no
/// `/proc`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, clock_ticks())
}

/// The same for this process.
pub fn own_cpu_secs() -> Option<f64> {
    cpu_secs(std::process::id())
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds. The
/// command name (field 2) may hold spaces and parentheses: fields are counted after
/// its closing parenthesis.
pub fn parse_stat_cpu(stat: &str, ticks_per_sec: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// The machine: CPU model and cores, from `/proc/cpuinfo`.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "cpu_model": model, "cores": cores, "os": std::env::consts::OS })
}

/// `section` with the facts every section carries: when, where, how.
pub fn stamped(mut section: Map<String, Value>) -> Value {
    section.insert(
        "date".into(),
        Value::String(chrono::Utc::now().format("%Y-%m-%d").to_string()),
    );
    section.insert("machine".into(), machine());
    section.insert(
        "command".into(),
        Value::String(crate::load_page::command_line()),
    );
    Value::Object(section)
}

/// `existing` (the file's text, if there is one) with `section` replaced.
pub fn merge(existing: Option<&str>, section: &str, value: Value) -> anyhow::Result<Value> {
    let mut root = match existing {
        Some(text) if !text.trim().is_empty() => {
            serde_json::from_str::<Value>(text).context("the existing file is not JSON")?
        }
        _ => json!({ "format": FORMAT }),
    };
    let Some(object) = root.as_object_mut() else {
        bail!("the existing file is not a JSON object");
    };
    match object.get("format").and_then(Value::as_u64) {
        Some(FORMAT) => {}
        other => bail!("the existing file has format {other:?}, not {FORMAT}"),
    }
    object.insert(
        "note".into(),
        Value::String(
            "Written by loadtest --rates-out; read by postroad plan --rates. Each section \
             is one measurement on the machine it names."
                .into(),
        ),
    );
    object.insert(section.into(), value);
    Ok(root)
}

/// Replaces `section` of the file at `path` (creating it), keeping the others.
pub fn update(path: &Path, section: &str, value: Value) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let root = merge(existing.as_deref(), section, value)
        .with_context(|| format!("updating {}", path.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&root)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("rates: wrote the {section:?} section of {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (post road) (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu(stat, 100.0), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage", 100.0), None);
        assert!(own_cpu_secs().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn sections_are_replaced_and_the_others_kept() {
        let first = merge(None, "ingress", json!({"messages_per_cpu_sec": 1.0})).unwrap();
        let text = first.to_string();
        let second = merge(
            Some(&text),
            "pipeline",
            json!({"messages_per_cpu_sec": 2.0}),
        )
        .unwrap();
        assert_eq!(second["ingress"]["messages_per_cpu_sec"], 1.0);
        assert_eq!(second["pipeline"]["messages_per_cpu_sec"], 2.0);
        assert_eq!(second["format"], FORMAT);
        let third = merge(
            Some(&second.to_string()),
            "ingress",
            json!({"messages_per_cpu_sec": 3.0}),
        )
        .unwrap();
        assert_eq!(third["ingress"]["messages_per_cpu_sec"], 3.0);
        assert_eq!(third["pipeline"]["messages_per_cpu_sec"], 2.0);
        assert!(merge(Some("[1]"), "x", json!(1)).is_err());
        assert!(merge(Some(r#"{"format": 9}"#), "x", json!(1)).is_err());
        let stamped = stamped(Map::new());
        assert!(stamped["machine"]["cores"].as_u64().is_some());
    }
}
