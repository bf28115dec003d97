//! `loadtest e2e --rates-out FILE`: the spawned Postroad's messages per CPU-second
//! into the rates file `postroad plan` reads (section "pipeline", or "ingress" with
//! `--ingress-only`).

use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Map, json};

use super::{E2eArgs, E2eReport};
use crate::rates_file;

pub fn write(path: &Path, args: &E2eArgs, report: &E2eReport) -> anyhow::Result<()> {
    if !report.ok {
        bail!(
            "not writing {}: the run failed ({})",
            path.display(),
            report.problems.join("; ")
        );
    }
    let cpu = report
        .postroad_cpu_secs
        .filter(|s| *s > 0.0)
        .context("no CPU time of the spawned postroad (is /proc there?)")?;
    let messages = report.messages_accepted as f64;
    let section = if args.ingress_only {
        "ingress"
    } else {
        "pipeline"
    };
    let mut s = Map::new();
    s.insert("messages_per_cpu_sec".into(), json!(messages / cpu));
    if !args.ingress_only {
        s.insert(
            "deliveries_per_cpu_sec".into(),
            json!(report.delivered as f64 / cpu),
        );
        s.insert("delivered_per_sec".into(), json!(report.delivered_per_sec));
    }
    s.insert("accepted_per_sec".into(), json!(report.accepted_per_sec));
    s.insert("messages".into(), json!(report.messages_accepted));
    s.insert("cpu_secs".into(), json!(cpu));
    s.insert(
        "wall_secs".into(),
        json!(if args.ingress_only {
            report.load_secs
        } else {
            report.delivery_secs
        }),
    );
    s.insert("message_size".into(), json!(report.message_size));
    s.insert(
        "recipients_per_message".into(),
        json!(report.recipients_per_message),
    );
    s.insert("connections".into(), json!(report.connections));
    s.insert("spool_fsync".into(), json!(args.fsync));
    s.insert(
        "what".into(),
        json!(if args.ingress_only {
            "CPU of a postroad serve with relay.enabled = false (SMTP ingress into the spool, \
             its history of queued events in SQLite), from the start of the load to its end"
        } else {
            "CPU of a postroad serve running every role on the spool (SMTP ingress, relay to \
             the harness's sink by MX through its DNS stub, history in SQLite), from the start \
             of the load until every message was delivered"
        }),
    );
    rates_file::update(path, section, rates_file::stamped(s))
}
