//! `loadtest dns`: run the DNS stub from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::dns::{DnsStub, RecordData, Zone, ZoneRecord, parse_zone_file};

#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    /// Address for UDP and TCP (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub listen: SocketAddr,

    /// MX record NAME=PREFERENCE:EXCHANGE[/TTL], e.g. gmail.test=10:mx1.sink.test.
    #[arg(long, value_name = "NAME=PREF:HOST[/TTL]")]
    pub mx: Vec<String>,

    /// Null MX (RFC 7505, "MX 0 .") for NAME[/TTL].
    #[arg(long, value_name = "NAME[/TTL]")]
    pub null_mx: Vec<String>,

    /// A record NAME=IPV4[/TTL].
    #[arg(long, value_name = "NAME=IPV4[/TTL]")]
    pub a: Vec<String>,

    /// AAAA record NAME=IPV6[/TTL].
    #[arg(long, value_name = "NAME=IPV6[/TTL]")]
    pub aaaa: Vec<String>,

    /// TXT record NAME=TEXT (no TTL suffix: the text is taken as is).
    #[arg(long, value_name = "NAME=TEXT")]
    pub txt: Vec<String>,

    /// NAME answers SERVFAIL.
    #[arg(long, value_name = "NAME")]
    pub servfail: Vec<String>,

    /// NAME answers NXDOMAIN (any name without records does too).
    #[arg(long, value_name = "NAME")]
    pub nxdomain: Vec<String>,

    /// TTL of records given without one.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub ttl: u32,

    /// Negative-caching TTL (SOA minimum) of the command-line zone.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub negative_ttl: u32,

    /// Zones from a TOML file (see loadtest/README.md); the records given as options
    /// go into a zone for every name (".") unless the file has one.
    #[arg(long, value_name = "FILE")]
    pub zone_file: Option<PathBuf>,

    /// Stop after this many seconds [default: run until SIGINT/SIGTERM].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

/// Splits "VALUE/TTL" (TTL optional).
fn ttl_suffix(s: &str, default: u32) -> anyhow::Result<(&str, u32)> {
    match s.rsplit_once('/') {
        Some((v, t)) => Ok((v, t.parse().with_context(|| format!("bad TTL in {s:?}"))?)),
        None => Ok((s, default)),
    }
}

fn name_value(s: &str) -> anyhow::Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("{s:?}: want NAME=VALUE"))
}

/// The zones the options describe.
pub fn zones_from_args(args: &DnsArgs) -> anyhow::Result<Vec<Zone>> {
    let mut zones = match &args.zone_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_zone_file(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Vec::new(),
    };
    let mut records = Vec::new();
    for s in &args.mx {
        let (name, rest) = name_value(s)?;
        let (rest, ttl) = ttl_suffix(rest, args.ttl)?;
        let (pref, host) = rest
            .split_once(':')
            .with_context(|| format!("{s:?}: want NAME=PREF:HOST"))?;
        let preference = pref
            .parse()
            .with_context(|| format!("{s:?}: bad preference"))?;
        records.push(ZoneRecord::new(
            name,
            ttl,
            RecordData::Mx {
                preference,
                exchange: host.to_owned(),
            },
        ));
    }
    for s in &args.null_mx {
        let (name, ttl) = ttl_suffix(s, args.ttl)?;
        records.push(ZoneRecord::new(name, ttl, RecordData::NullMx));
    }
    for s in &args.a {
        let (name, rest) = name_value(s)?;
        let (ip, ttl) = ttl_suffix(rest, args.ttl)?;
        let ip = ip.parse().with_context(|| format!("{s:?}: bad IPv4"))?;
        records.push(ZoneRecord::new(name, ttl, RecordData::A(ip)));
    }
    for s in &args.aaaa {
        let (name, rest) = name_value(s)?;
        let (ip, ttl) = ttl_suffix(rest, args.ttl)?;
        let ip = ip.parse().with_context(|| format!("{s:?}: bad IPv6"))?;
        records.push(ZoneRecord::new(name, ttl, RecordData::Aaaa(ip)));
    }
    for s in &args.txt {
        let (name, text) = name_value(s)?;
        records.push(ZoneRecord::new(
            name,
            args.ttl,
            RecordData::Txt(text.to_owned()),
        ));
    }
    let from_options =
        !records.is_empty() || !args.servfail.is_empty() || !args.nxdomain.is_empty();
    if from_options {
        let idx = match zones.iter().position(|z| z.origin.is_empty()) {
            Some(i) => i,
            None => {
                zones.push(Zone::new(".").negative_ttl(args.negative_ttl));
                zones.len() - 1
            }
        };
        let mut zone = std::mem::replace(&mut zones[idx], Zone::new("."));
        for r in records {
            zone = zone.record(r);
        }
        for n in &args.servfail {
            zone = zone.servfail(n);
        }
        for n in &args.nxdomain {
            zone = zone.nxdomain(n);
        }
        zones[idx] = zone;
    }
    if zones.is_empty() {
        bail!("no records: give --mx/--a/--aaaa/--null-mx/... or --zone-file");
    }
    Ok(zones)
}

pub async fn run(args: DnsArgs) -> anyhow::Result<ExitCode> {
    let zones = zones_from_args(&args)?;
    let records: usize = zones.iter().map(|z| z.records.len()).sum();
    let dns = DnsStub::start(args.listen, zones).await?;
    eprintln!(
        "dns stub listening on {} (UDP and TCP), {records} records",
        dns.local_addr()
    );
    let duration = match args.duration {
        Some(d) if !(d.is_finite() && d >= 0.0) => bail!("bad --duration {d}"),
        Some(d) => Some(Duration::try_from_secs_f64(d)?),
        None => None,
    };
    crate::sink_cmd::wait_for_stop(duration).await;
    let queries = dns.total_queries();
    dns.shutdown().await;
    println!("queries answered: {queries}");
    Ok(ExitCode::SUCCESS)
}
