//! The measured-rates file (`--rates FILE`, JSON): what `loadtest e2e --rates-out` and
//! `loadtest history --rates-out` measured, one section each. Without `--rates`, the
//! copy committed as `deploy/plan/rates.json` (built into the binary).
//!
//! ```json
//! { "format": 1,
//!   "ingress":  { "messages_per_cpu_sec": 1200.0, ... },
//!   "pipeline": { "messages_per_cpu_sec": 500.0, "recipients_per_message": 1, ... },
//!   "history":  { "events_per_sec": 15000.0, "bytes_per_event": 480.0,
//!                 "bytes_per_recipient": 780.0, ... } }
//! ```
//!
//! The relay's cost per delivery is the pipeline's (ingress + relay + history on the
//! spool) less the ingress's, per recipient.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::Rates;

/// The committed rates, measured on the machine the README names.
pub const DEFAULT: &str = include_str!("../../../deploy/plan/rates.json");
pub const DEFAULT_NAME: &str = "deploy/plan/rates.json (built in)";

#[derive(Debug, Error)]
pub enum RatesError {
    #[error("cannot read the rates file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the rates file {name} is not valid: {source}")]
    Parse {
        name: String,
        source: serde_json::Error,
    },
    #[error("the rates file {name} has format {found}; this postroad reads format 1")]
    Format { name: String, found: u32 },
    #[error("the rates file {name} has no \"{section}\" section (write it with {command})")]
    Missing {
        name: String,
        section: &'static str,
        command: &'static str,
    },
    #[error("the rates file {name}: {field} must be a number above 0, not {value}")]
    NotPositive {
        name: String,
        field: String,
        value: f64,
    },
    #[error(
        "the rates file {name}: the pipeline ({pipeline:.1} messages per CPU-second) must \
         cost more than ingress alone ({ingress:.1}); measure both on the same build and load"
    )]
    RelayCost {
        name: String,
        pipeline: f64,
        ingress: f64,
    },
}

/// Where and how a section was measured (kept as written; shown in the plan).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub machine: Option<serde_json::Value>,
    #[serde(default)]
    pub command: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Cpu {
    messages_per_cpu_sec: f64,
    #[serde(default = "one")]
    recipients_per_message: f64,
    #[serde(flatten)]
    provenance: Provenance,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
struct HistorySection {
    events_per_sec: f64,
    bytes_per_event: f64,
    bytes_per_recipient: f64,
    #[serde(flatten)]
    provenance: Provenance,
}

#[derive(Debug, Deserialize)]
struct File {
    format: u32,
    ingress: Option<Cpu>,
    pipeline: Option<Cpu>,
    history: Option<HistorySection>,
}

/// The rates and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Loaded {
    pub source: String,
    #[serde(flatten)]
    pub rates: Rates,
    /// Pipeline (ingress + relay + history) messages per CPU-second, as measured.
    pub pipeline_messages_per_cpu_sec: f64,
    pub measured: Measured,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub ingress: Provenance,
    pub pipeline: Provenance,
    pub history: Provenance,
}

/// Reads `path`, or the built-in file.
pub fn load(path: Option<&Path>) -> Result<Loaded, RatesError> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| RatesError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            parse(&p.display().to_string(), &text)
        }
        None => parse(DEFAULT_NAME, DEFAULT),
    }
}

pub fn parse(name: &str, text: &str) -> Result<Loaded, RatesError> {
    let file: File = serde_json::from_str(text).map_err(|source| RatesError::Parse {
        name: name.to_string(),
        source,
    })?;
    if file.format != 1 {
        return Err(RatesError::Format {
            name: name.to_string(),
            found: file.format,
        });
    }
    let missing = |section, command| RatesError::Missing {
        name: name.to_string(),
        section,
        command,
    };
    let ingress = file.ingress.ok_or_else(|| {
        missing(
            "ingress",
            "loadtest e2e --spawn-postroad BIN --ingress-only --rates-out FILE",
        )
    })?;
    let pipeline = file.pipeline.ok_or_else(|| {
        missing(
            "pipeline",
            "loadtest e2e --spawn-postroad BIN --rates-out FILE",
        )
    })?;
    let history = file.history.ok_or_else(|| {
        missing(
            "history",
            "loadtest history --url mysql://... --rates-out FILE",
        )
    })?;
    for (field, value) in [
        ("ingress.messages_per_cpu_sec", ingress.messages_per_cpu_sec),
        (
            "pipeline.messages_per_cpu_sec",
            pipeline.messages_per_cpu_sec,
        ),
        (
            "pipeline.recipients_per_message",
            pipeline.recipients_per_message,
        ),
        ("history.events_per_sec", history.events_per_sec),
        ("history.bytes_per_event", history.bytes_per_event),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(RatesError::NotPositive {
                name: name.to_string(),
                field: field.to_string(),
                value,
            });
        }
    }
    if !(history.bytes_per_recipient.is_finite() && history.bytes_per_recipient >= 0.0) {
        return Err(RatesError::NotPositive {
            name: name.to_string(),
            field: "history.bytes_per_recipient".into(),
            value: history.bytes_per_recipient,
        });
    }
    // CPU-seconds per message: the relay's share is the pipeline's less the ingress's.
    let relay_cpu_per_message =
        1.0 / pipeline.messages_per_cpu_sec - 1.0 / ingress.messages_per_cpu_sec;
    if relay_cpu_per_message <= 0.0 {
        return Err(RatesError::RelayCost {
            name: name.to_string(),
            pipeline: pipeline.messages_per_cpu_sec,
            ingress: ingress.messages_per_cpu_sec,
        });
    }
    Ok(Loaded {
        source: name.to_string(),
        rates: Rates {
            ingress_messages_per_cpu_sec: ingress.messages_per_cpu_sec,
            relay_deliveries_per_cpu_sec: pipeline.recipients_per_message / relay_cpu_per_message,
            history_events_per_sec: history.events_per_sec,
            mysql_bytes_per_event: history.bytes_per_event,
            mysql_bytes_per_recipient: history.bytes_per_recipient,
        },
        pipeline_messages_per_cpu_sec: pipeline.messages_per_cpu_sec,
        measured: Measured {
            ingress: ingress.provenance,
            pipeline: pipeline.provenance,
            history: history.provenance,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"format": 1,
        "ingress": {"messages_per_cpu_sec": 1000.0, "date": "2025-01-01"},
        "pipeline": {"messages_per_cpu_sec": 400.0, "recipients_per_message": 1},
        "history": {"events_per_sec": 10000.0, "bytes_per_event": 450.0, "bytes_per_recipient": 700.0,
        "extra": 1}}"#;

    #[test]
    fn the_relay_costs_the_pipeline_less_the_ingress() {
        let l = parse("t", GOOD).unwrap();
        // 1/400 - 1/1000 = 0.0015 CPU-s per delivery
        assert!((l.rates.relay_deliveries_per_cpu_sec - 666.666).abs() < 0.01);
        assert_eq!(l.rates.ingress_messages_per_cpu_sec, 1000.0);
        assert_eq!(l.measured.ingress.date.as_deref(), Some("2025-01-01"));
    }

    #[test]
    fn the_built_in_file_loads() {
        let l = load(None).unwrap();
        assert!(l.rates.relay_deliveries_per_cpu_sec > 0.0);
        assert!(l.measured.pipeline.command.is_some());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let zero = GOOD.replace("400.0", "0");
        let e = parse("t", &zero).unwrap_err().to_string();
        assert!(
            e.contains("pipeline.messages_per_cpu_sec must be a number above 0"),
            "{e}"
        );
        let slower = GOOD.replace("400.0", "2000.0");
        assert!(matches!(
            parse("t", &slower),
            Err(RatesError::RelayCost { .. })
        ));
        let e = parse("t", r#"{"format": 1}"#).unwrap_err().to_string();
        assert!(e.contains("no \"ingress\" section"), "{e}");
        assert!(matches!(parse("t", "{"), Err(RatesError::Parse { .. })));
        assert!(matches!(
            parse("t", &GOOD.replace("\"format\": 1", "\"format\": 2")),
            Err(RatesError::Format { found: 2, .. })
        ));
    }
}
