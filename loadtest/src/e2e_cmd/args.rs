//! `loadtest e2e`'s flags, and the addresses they default to.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgAction, Args};

use crate::http_cmd::HttpOptions;
use crate::smtp_cmd::SmtpArgs;

/// Where the DNS stub and the sink listen by default when the MTA runs separately
/// (fixed, so that its config can name them).
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5300";
pub const DEFAULT_SINK_LISTEN: &str = "127.0.0.1:2526";

/// How the load enters the MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// SMTP (`loadtest smtp`'s generator).
    Smtp,
    /// Postroad's HTTP API (`loadtest http`'s generator); --addr is then the API's
    /// address, and a spawned Postroad gets an API key of its own.
    Http,
}

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub load: SmtpArgs,

    /// Submit over SMTP or over the HTTP API.
    #[arg(long, value_enum, default_value = "smtp")]
    pub via: Via,

    #[command(flatten)]
    pub http: HttpOptions,

    /// Start `postroad serve` from this binary with a generated config (listener on a
    /// free port, relay to the DNS stub and the sink), and stop it at the end; --addr
    /// is ignored.
    #[arg(long, value_name = "PATH")]
    pub spawn_postroad: Option<PathBuf>,

    /// spool.fsync of the spawned Postroad.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub fsync: bool,

    /// The spawned Postroad sends everything to the sink as its smarthost (one site,
    /// no MX lookups) instead of by MX.
    #[arg(long, requires = "spawn_postroad")]
    pub smarthost: bool,

    /// Where the spawned Postroad's temporary directory (config, spool, log) goes
    /// [default: the system's temporary directory].
    #[arg(long, value_name = "DIR", requires = "spawn_postroad")]
    pub work_dir: Option<PathBuf>,

    /// Keep that directory after the run.
    #[arg(long, requires = "spawn_postroad")]
    pub keep_work_dir: bool,

    /// TOML appended to the spawned Postroad's config (e.g. `[[dkim]]` keys), to
    /// measure a setting's cost.
    #[arg(long, value_name = "FILE", requires = "spawn_postroad")]
    pub postroad_config_extra: Option<PathBuf>,

    /// RUST_LOG of the spawned Postroad (unless RUST_LOG is set).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub postroad_log: String,

    /// DNS stub address, UDP and TCP [default: 127.0.0.1:5300; with --spawn-postroad
    /// a free port].
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,

    /// Sink address [default: 127.0.0.1:2526; with --spawn-postroad a free port].
    #[arg(long, value_name = "ADDR")]
    pub sink_listen: Option<SocketAddr>,

    /// After the load, wait at most this long for every accepted message to be
    /// delivered.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub drain_timeout: f64,

    /// Once everything is delivered, keep the sink open this long to catch late
    /// duplicates.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub settle: f64,

    /// Print the [relay] settings the MTA needs for this command's DNS stub and sink,
    /// and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Sink: share of recipients refused with 451 4.3.0 (the MTA must retry them).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub sink_tempfail_share: f64,

    /// Sink: share of recipients refused with 550 5.1.1 (bounced: reported as lost).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub sink_permfail_share: f64,

    /// Sink: wait this long before every reply.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub sink_delay_ms: u64,

    /// Sink: faults of one recipient domain, `DOMAIN:key=value,...` (keys as for
    /// `loadtest sink --domain`: rate, burst, tempfail, permfail, drop, delay-ms,
    /// conns); repeatable. The report draws its rate over time against its limit.
    #[arg(long = "sink-domain", value_name = "DOMAIN:FAULTS")]
    pub sink_domains: Vec<String>,

    /// Sink: from SECS seconds into the load on, DOMAIN's faults are FAULTS
    /// (`SECS:DOMAIN:key=value,...`); repeatable.
    #[arg(long = "sink-change", value_name = "SECS:DOMAIN:FAULTS")]
    pub sink_changes: Vec<String>,

    /// Record the spawned Postroad's messages per CPU-second (utime + stime from
    /// /proc) in this rates file for `postroad plan`: its "pipeline" section, or
    /// "ingress" with --ingress-only; other sections are kept.
    #[arg(long, value_name = "FILE", requires = "spawn_postroad")]
    pub rates_out: Option<PathBuf>,

    /// The spawned Postroad only accepts and queues (relay.enabled = false): measures
    /// ingress alone; nothing is delivered or waited for.
    #[arg(long, requires = "spawn_postroad")]
    pub ingress_only: bool,

    /// Write each --sink-domain domain's rate-against-its-limit chart as an SVG file
    /// of its own, DIR/rate-DOMAIN.svg.
    #[arg(long, value_name = "DIR")]
    pub limits_svg_dir: Option<PathBuf>,
}

impl E2eArgs {
    pub(super) fn spawn(&self) -> bool {
        self.spawn_postroad.is_some()
    }

    pub(super) fn dns_addr(&self) -> SocketAddr {
        self.dns_listen.unwrap_or_else(|| {
            if self.spawn() {
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
            } else {
                DEFAULT_DNS_LISTEN.parse().expect("valid")
            }
        })
    }

    pub(super) fn sink_addr(&self) -> SocketAddr {
        self.sink_listen.unwrap_or_else(|| {
            if self.spawn() {
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
            } else {
                DEFAULT_SINK_LISTEN.parse().expect("valid")
            }
        })
    }
}
