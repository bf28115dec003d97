//! A fast, fault-injecting SMTP (or LMTP) receiver for load tests and for the tests
//! of Postroad's delivery engine.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use postroad_loadtest::sink::{Faults, Sink, SinkConfig};
//! let sink = Sink::start(SinkConfig {
//!     verify: true,
//!     faults: Faults { tempfail_share: 0.1, ..Faults::default() },
//!     ..SinkConfig::default() // listens on 127.0.0.1:0
//! })
//! .await?;
//! let addr = sink.local_addr();
//! // ... deliver to `addr` ...
//! let stats = sink.wait_for_messages(100, std::time::Duration::from_secs(10)).await;
//! let stats = sink.shutdown().await;
//! assert_eq!(stats.duplicates, 0);
//! # Ok(()) }
//! ```
//!
//! What it does to each recipient, in this order (see [`Faults`] for the knobs):
//!
//! 1. Local part (before an optional `+tag`, any case) `permfail` → `550 5.1.1`,
//!    `tempfail` → `451 4.3.0`, both at RCPT.
//! 2. Rate limits: the global one is charged at MAIL, a domain's at the first RCPT for
//!    that domain in the transaction; over the limit the reply is `421 4.7.0` and the
//!    sink closes the connection. So does a domain's connection limit (`conns`), at
//!    the first RCPT for that domain on a connection while that many other connections
//!    have had its mail.
//! 3. Shares: a seeded draw per RCPT gives `550 5.1.1` with `permfail_share`,
//!    `451 4.3.0` with `tempfail_share`.
//! 4. At DATA/BDAT: local part `dropdata`, or a draw under `drop_share`, makes the sink
//!    read part of the data and close the connection without replying.
//! 5. At the end of data: local part `tempfail-once` gets `451 4.3.0` the first time
//!    that message (by `Message-ID`, or by content hash without one) is seen for that
//!    recipient, and is accepted after. With SMTP the whole message gets the 451; with
//!    LMTP only that recipient.
//!
//! A domain listed in [`SinkConfig::domain_faults`] uses its own [`Faults`] for its
//! recipients instead of the global shares, rate and delay (the global rate limit
//! still applies at MAIL).

mod domains;
mod session;
#[cfg(test)]
mod tests;

pub use domains::DomainStats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::stats::{Latency, LatencySummary};

/// EHLO/LHLO extensions the sink advertises (and so accepts).
///
/// Without `chunking`, BDAT gets `502`; without `8bitmime`, `smtputf8` or `dsn`, MAIL
/// and RCPT parameters that need them get `555 5.5.4`; a non-ASCII address without
/// `MAIL ... SMTPUTF8` gets `553 5.6.7`. PIPELINING is always handled (a sink that
/// does not advertise it still reads pipelined commands, as most servers do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extensions {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// STARTTLS with a self-signed certificate generated at start.
    pub starttls: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
    pub dsn: bool,
    /// Advertise `SIZE <max_message_size>`.
    pub size: bool,
}

impl Default for Extensions {
    /// Everything but STARTTLS.
    fn default() -> Self {
        Self {
            starttls: false,
            ..Self::all()
        }
    }
}

impl Extensions {
    pub const NAMES: &'static str =
        "pipelining, 8bitmime, smtputf8, starttls, chunking, enhancedstatuscodes, dsn, size";

    pub fn none() -> Self {
        Self {
            pipelining: false,
            eight_bit_mime: false,
            smtputf8: false,
            starttls: false,
            chunking: false,
            enhanced_status_codes: false,
            dsn: false,
            size: false,
        }
    }

    pub fn all() -> Self {
        Self {
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            starttls: true,
            chunking: true,
            enhanced_status_codes: true,
            dsn: true,
            size: true,
        }
    }

    /// Parses a comma-separated list: names (see [`Extensions::NAMES`]; `bdat` for
    /// `chunking`), or `none`, `all`, `default`. When every item starts with `+` or
    /// `-`, they change the default set: `+starttls,-chunking`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let relative = !items.is_empty()
            && items
                .iter()
                .all(|i| i.starts_with('+') || i.starts_with('-'));
        let mut ext = if relative {
            Self::default()
        } else {
            Self::none()
        };
        for item in items {
            let (on, name) = match item.as_bytes()[0] {
                b'+' => (true, &item[1..]),
                b'-' => (false, &item[1..]),
                _ => (true, item),
            };
            match name.to_ascii_lowercase().as_str() {
                "none" if !relative => ext = Self::none(),
                "all" if !relative => ext = Self::all(),
                "default" if !relative => ext = Self::default(),
                "pipelining" => ext.pipelining = on,
                "8bitmime" => ext.eight_bit_mime = on,
                "smtputf8" => ext.smtputf8 = on,
                "starttls" => ext.starttls = on,
                "chunking" | "bdat" => ext.chunking = on,
                "enhancedstatuscodes" => ext.enhanced_status_codes = on,
                "dsn" => ext.dsn = on,
                "size" => ext.size = on,
                _ => {
                    return Err(format!(
                        "unknown extension {name:?} (known: {}, none, all, default)",
                        Self::NAMES
                    ));
                }
            }
        }
        Ok(ext)
    }
}

/// Faults to inject, globally or for one recipient domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Accept at most this many transactions per second (token bucket); over it the
    /// reply is `421 4.7.0` (at MAIL for the global limit, at RCPT for a domain's) and
    /// the connection is closed.
    pub rate_limit: Option<f64>,
    /// Bucket size for `rate_limit` [default: the rate, at least 1].
    pub rate_burst: Option<f64>,
    /// Share of recipients refused with `451 4.3.0` at RCPT.
    pub tempfail_share: f64,
    /// Share of recipients refused with `550 5.1.1` at RCPT.
    pub permfail_share: f64,
    /// Share of transactions whose connection is closed in the middle of DATA/BDAT,
    /// without a reply.
    pub drop_share: f64,
    /// Wait this long before each reply (for a domain: before its RCPT replies and the
    /// data reply of transactions it has recipients in).
    pub delay: Duration,
    /// For a domain: most connections that may carry its mail at once; the next one
    /// gets `421 4.7.0` at its first RCPT for the domain and is closed.
    pub max_connections: Option<usize>,
}

impl Faults {
    /// Parses `key=value` pairs separated by commas: `rate=10`, `burst=20`,
    /// `tempfail=0.1`, `permfail=0.05`, `drop=0.01`, `delay-ms=50`, `conns=4`.
    pub fn parse_kv(spec: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: want key=value"))?;
            let num = |v: &str| -> Result<f64, String> {
                let x: f64 = v.trim().parse().map_err(|e| format!("{item:?}: {e}"))?;
                if x.is_finite() && x >= 0.0 {
                    Ok(x)
                } else {
                    Err(format!("{item:?}: must be a non-negative number"))
                }
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "rate" | "rate-limit" => f.rate_limit = Some(num(v)?),
                "burst" | "rate-burst" => f.rate_burst = Some(num(v)?),
                "tempfail" | "tempfail-share" => f.tempfail_share = num(v)?,
                "permfail" | "permfail-share" => f.permfail_share = num(v)?,
                "drop" | "drop-share" => f.drop_share = num(v)?,
                "conns" | "max-connections" => {
                    let n = num(v)?;
                    if n.fract() != 0.0 || n < 1.0 {
                        return Err(format!(
                            "{item:?}: a whole number of connections, at least 1"
                        ));
                    }
                    f.max_connections = Some(n as usize);
                }
                "delay-ms" | "delay" => {
                    f.delay = Duration::try_from_secs_f64(num(v)? / 1000.0)
                        .map_err(|e| format!("{item:?}: {e}"))?;
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (known: rate, burst, tempfail, permfail, drop, delay-ms, conns)"
                    ));
                }
            }
        }
        f.validate()?;
        Ok(f)
    }

    /// Shares within 0..=1 (tempfail + permfail too), finite non-negative rates.
    pub fn validate(&self) -> Result<(), String> {
        for (name, share) in [
            ("tempfail share", self.tempfail_share),
            ("permfail share", self.permfail_share),
            ("drop share", self.drop_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} {share} is not within 0..=1"));
            }
        }
        if self.tempfail_share + self.permfail_share > 1.0 + 1e-9 {
            return Err("tempfail share + permfail share > 1".into());
        }
        if let Some(r) = self.rate_limit
            && !(r.is_finite() && r >= 0.0)
        {
            return Err(format!("bad rate limit {r}"));
        }
        if let Some(b) = self.rate_burst
            && !(b.is_finite() && b >= 0.0)
        {
            return Err(format!("bad rate burst {b}"));
        }
        Ok(())
    }
}

/// Everything [`Sink::start`] needs. `Default` listens on `127.0.0.1:0` with no faults.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to listen; port 0 picks a free one (see [`SinkHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Name in the greeting and the EHLO reply (and the STARTTLS certificate).
    pub hostname: String,
    /// Speak LMTP (RFC 2033): LHLO, one reply per recipient after the data.
    pub lmtp: bool,
    pub extensions: Extensions,
    /// Faults for every recipient domain without an entry in `domain_faults`.
    pub faults: Faults,
    /// Faults by recipient domain (compared without case).
    pub domain_faults: HashMap<String, Faults>,
    /// Seed of the draws behind the shares: with one connection the same seed gives
    /// the same replies; with many, the same number of each over the same number of
    /// draws.
    pub seed: u64,
    /// Check `X-Loadtest-Checksum` and count deliveries per (Message-ID, recipient)
    /// to find duplicates.
    pub verify: bool,
    /// Keep every accepted message (envelope, times, bytes) for
    /// [`SinkHandle::messages`].
    pub keep_messages: bool,
    /// Write each accepted message to this Maildir (`tmp/`, then renamed into `new/`),
    /// as received (CRLF), after `Return-Path:` and one `Delivered-To:` per recipient.
    pub maildir: Option<PathBuf>,
    /// Most open connections; more get `421 4.7.0` at connect.
    pub max_connections: Option<usize>,
    /// Most open connections per client IP; more get `421 4.7.0` at connect.
    pub max_connections_per_ip: Option<usize>,
    /// Largest message (as stored); larger ones get `552 5.3.4`.
    pub max_message_size: usize,
    /// Most recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Wait at most this long for a command or data.
    pub idle_timeout: Duration,
    /// Called for every accepted message (after counting and verifying it), from
    /// the session that received it; keep it short.
    pub observer: Option<Observer>,
}

/// What an [`Observer`] is told about each accepted message.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryEvent<'a> {
    /// The `Message-ID` header value, with its angle brackets.
    pub message_id: Option<&'a str>,
    /// Recipients it was accepted for.
    pub recipients: &'a [&'a str],
    /// Unix time in microseconds when the data was complete.
    pub received_at_us: u64,
    /// `X-Loadtest-Sent-At`, when the message had one.
    pub sent_at_us: Option<u64>,
    /// Bytes as stored.
    pub size: usize,
}

/// A callback for [`SinkConfig::observer`].
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&DeliveryEvent<'_>) + Send + Sync>);

impl Observer {
    pub fn new(f: impl Fn(&DeliveryEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer(..)")
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hostname: "sink.loadtest.invalid".into(),
            lmtp: false,
            extensions: Extensions::default(),
            faults: Faults::default(),
            domain_faults: HashMap::new(),
            seed: 1,
            verify: false,
            keep_messages: false,
            maildir: None,
            max_connections: None,
            max_connections_per_ip: None,
            max_message_size: 64 << 20,
            max_recipients: 10_000,
            idle_timeout: Duration::from_secs(300),
            observer: None,
        }
    }
}

/// Result of checking `X-Loadtest-Checksum` (only with [`SinkConfig::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChecksumStatus {
    NotChecked,
    Ok,
    Bad,
    /// The message has no `X-Loadtest-Checksum` header.
    Missing,
}

/// One accepted message (kept with [`SinkConfig::keep_messages`]).
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedMessage {
    /// Sink-assigned id, as in the reply (`queued as <id>`).
    pub queue_id: String,
    pub mail_from: String,
    /// Recipients it was accepted for.
    pub recipients: Vec<String>,
    pub message_id: Option<String>,
    /// Bytes as stored (dot-unstuffed, without the final `.`).
    pub size: usize,
    /// Unix time in microseconds when the data was complete.
    pub received_at_us: u64,
    /// `X-Loadtest-Sent-At`, when the message had one.
    pub sent_at_us: Option<u64>,
    pub checksum: ChecksumStatus,
    /// Came with BDAT (else DATA).
    pub bdat: bool,
    /// Came over TLS.
    pub tls: bool,
    /// The message as stored.
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// A (Message-ID, recipient) pair delivered more than once (with `verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub message_id: String,
    pub recipient: String,
    pub deliveries: u32,
}

/// A snapshot of the sink's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStats {
    /// TCP connections accepted (including refused ones).
    pub connections: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// Connections refused with 421 by `max_connections`/`max_connections_per_ip`.
    pub connections_refused: u64,
    /// Transactions started (MAIL accepted).
    pub transactions: u64,
    /// Messages accepted (for at least one recipient).
    pub messages: u64,
    /// Deliveries: recipients of accepted messages.
    pub recipients: u64,
    /// Bytes of accepted messages, as stored.
    pub bytes: u64,
    /// Every 4xx/5xx reply the sink sent, by code.
    pub rejections: BTreeMap<u16, u64>,
    /// Connections closed mid-DATA/BDAT by a drop fault.
    pub dropped: u64,
    /// With `verify`: accepted messages whose checksum matched, did not, was absent.
    pub checksum_ok: u64,
    pub checksum_bad: u64,
    pub checksum_missing: u64,
    /// With `verify`: deliveries of a (Message-ID, recipient) beyond its first.
    pub duplicates: u64,
    /// With `verify`: accepted messages without a Message-ID (not deduped).
    pub no_message_id: u64,
    /// Received time minus `X-Loadtest-Sent-At`, for messages that had it.
    pub e2e_latency_ms: LatencySummary,
    /// Seconds from the first connection to the last accepted message: the time
    /// the sink was busy, for throughput figures.
    pub busy_secs: f64,
    /// Per domain with faults of its own: deliveries, throttle replies, refusals.
    pub domains: BTreeMap<String, DomainStats>,
}

impl SinkStats {
    /// How many replies with this code the sink sent.
    pub fn rejected(&self, code: u16) -> u64 {
        self.rejections.get(&code).copied().unwrap_or(0)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejections.values().sum()
    }
}

/// Starts sinks; see [`Sink::start`].
pub struct Sink;

impl Sink {
    /// Binds `config.listen` and serves connections until [`SinkHandle::shutdown`]
    /// (or until the handle is dropped).
    pub async fn start(config: SinkConfig) -> anyhow::Result<SinkHandle> {
        config.faults.validate().map_err(anyhow::Error::msg)?;
        for (d, f) in &config.domain_faults {
            f.validate()
                .map_err(|e| anyhow::anyhow!("faults for {d}: {e}"))?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let tls = if config.extensions.starttls {
            Some(tls_acceptor(&config.hostname)?)
        } else {
            None
        };
        let (maildir, maildir_thread) = match &config.maildir {
            Some(dir) => {
                let (tx, thread) = spawn_maildir_writer(dir, &config.hostname)?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        let domains = domains::Domains::default();
        let plan = FaultPlan::new(&config.faults, &config.domain_faults, &domains);
        let shared = Arc::new(Shared {
            domains,
            plan: RwLock::new(Arc::new(plan)),
            counters: Counters::default(),
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
            deliveries: Mutex::new(HashMap::new()),
            once: Mutex::new(HashSet::new()),
            records: Mutex::new(Vec::new()),
            e2e: Mutex::new(Latency::default()),
            per_ip: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            watchers: AtomicUsize::new(0),
            draws: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            first_connection_us: AtomicU64::new(0),
            last_message_us: AtomicU64::new(0),
            tls,
            maildir: Mutex::new(maildir),
            config,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(SinkHandle {
            shared,
            local_addr,
            stop: stop_tx,
            abort: task.abort_handle(),
            task: Some(task),
            maildir_thread,
        })
    }
}

/// A running sink.
pub struct SinkHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    abort: tokio::task::AbortHandle,
    task: Option<tokio::task::JoinHandle<()>>,
    maildir_thread: Option<std::thread::JoinHandle<()>>,
}

impl SinkHandle {
    /// The address the sink listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn config(&self) -> &SinkConfig {
        &self.shared.config
    }

    /// The counters now.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// The counters of the domains with faults of their own.
    pub fn domain_stats(&self) -> BTreeMap<String, DomainStats> {
        self.control().domain_stats()
    }

    /// (Message-ID, recipient) pairs delivered more than once (with `verify`).
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let map = lock(&self.shared.deliveries);
        let mut out: Vec<Duplicate> = map
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| {
                let (id, rcpt) = k.split_once('\n').unwrap_or((k, ""));
                Duplicate {
                    message_id: id.to_owned(),
                    recipient: rcpt.to_owned(),
                    deliveries: *n,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.message_id, &a.recipient).cmp(&(&b.message_id, &b.recipient)));
        out
    }

    /// How many times this (Message-ID, recipient) was delivered (with `verify`);
    /// the Message-ID with its angle brackets, the recipient without case.
    pub fn deliveries(&self, message_id: &str, recipient: &str) -> u32 {
        let key = delivery_key(message_id, recipient);
        lock(&self.shared.deliveries)
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// The accepted messages so far, in order (with `keep_messages`).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.records).clone()
    }

    /// Replaces the faults; see [`SinkControl::set_faults`].
    pub fn set_faults(
        &self,
        faults: Faults,
        domain_faults: HashMap<String, Faults>,
    ) -> anyhow::Result<()> {
        self.control().set_faults(faults, domain_faults)
    }

    /// A handle that changes the faults and reads the domain counters from anywhere
    /// (another task), while the sink runs.
    pub fn control(&self) -> SinkControl {
        SinkControl(self.shared.clone())
    }

    /// Waits until `pred` holds for the counters (checked after every change), at
    /// most `timeout`; Err carries the counters at the timeout.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SinkStats) -> bool,
    ) -> Result<SinkStats, SinkStats> {
        let sh = &self.shared;
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        sh.watchers.fetch_add(1, SeqCst);
        let result = loop {
            let notified = sh.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let stats = sh.stats();
            if pred(&stats) {
                break Ok(stats);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Err(stats);
            }
            // the periodic re-check is a backstop; wake-ups come from `notify`
            let step = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(step, notified).await;
        };
        sh.watchers.fetch_sub(1, SeqCst);
        result
    }

    /// Waits until at least `n` messages were accepted; see [`SinkHandle::wait_until`].
    pub async fn wait_for_messages(
        &self,
        n: u64,
        timeout: Duration,
    ) -> Result<SinkStats, SinkStats> {
        self.wait_until(timeout, |s| s.messages >= n).await
    }

    /// Stops accepting, closes every connection, finishes the Maildir writes, and
    /// returns the final counters.
    pub async fn shutdown(mut self) -> SinkStats {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let sender = lock(&self.shared.maildir).take();
        drop(sender);
        if let Some(thread) = self.maildir_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.shared.stats()
    }
}

/// Changes a running sink's faults and reads its domain counters; cheap to clone.
#[derive(Clone)]
pub struct SinkControl(Arc<Shared>);

impl SinkControl {
    /// Replaces the faults; sessions use the new ones from their next MAIL on. Rate
    /// limit buckets start full again; domain counters and connection counts carry on.
    pub fn set_faults(
        &self,
        faults: Faults,
        domain_faults: HashMap<String, Faults>,
    ) -> anyhow::Result<()> {
        faults.validate().map_err(anyhow::Error::msg)?;
        for (d, f) in &domain_faults {
            f.validate()
                .map_err(|e| anyhow::anyhow!("faults for {d}: {e}"))?;
        }
        let plan = Arc::new(FaultPlan::new(&faults, &domain_faults, &self.0.domains));
        *self.0.plan.write().unwrap_or_else(|e| e.into_inner()) = plan;
        Ok(())
    }

    /// The counters of the domains with faults of their own (cheaper than
    /// [`SinkHandle::stats`], for sampling).
    pub fn domain_stats(&self) -> BTreeMap<String, DomainStats> {
        self.0.domains.stats()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

// ---------------------------------------------------------------------------------
// internals shared with the sessions

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    transactions: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    checksum_ok: AtomicU64,
    checksum_bad: AtomicU64,
    checksum_missing: AtomicU64,
    duplicates: AtomicU64,
    no_message_id: AtomicU64,
}

struct Shared {
    config: SinkConfig,
    domains: domains::Domains,
    plan: RwLock<Arc<FaultPlan>>,
    counters: Counters,
    /// Replies sent by code (index = code).
    codes: Box<[AtomicU64]>,
    /// "message-id\nrecipient" -> deliveries (with verify).
    deliveries: Mutex<HashMap<String, u32>>,
    /// "message-id\nrecipient" seen by tempfail-once.
    once: Mutex<HashSet<String>>,
    records: Mutex<Vec<ReceivedMessage>>,
    e2e: Mutex<Latency>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    notify: Notify,
    /// Tasks in `wait_until` (notify only when someone waits).
    watchers: AtomicUsize,
    draws: AtomicU64,
    next_id: AtomicU64,
    /// When the sink started; the two below are microseconds since then (0: never).
    started: Instant,
    first_connection_us: AtomicU64,
    last_message_us: AtomicU64,
    tls: Option<tokio_rustls::TlsAcceptor>,
    maildir: Mutex<Option<mpsc::Sender<MaildirItem>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn delivery_key(message_id: &str, recipient: &str) -> String {
    let mut k = String::with_capacity(message_id.len() + recipient.len() + 1);
    k.push_str(message_id);
    k.push('\n');
    for c in recipient.chars() {
        k.push(c.to_ascii_lowercase());
    }
    k
}

impl Shared {
    fn stats(&self) -> SinkStats {
        let c = &self.counters;
        let rejections = self
            .codes
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(SeqCst);
                (n > 0 && code >= 400).then_some((code as u16, n))
            })
            .collect();
        SinkStats {
            connections: c.connections.load(SeqCst),
            active_connections: c.active.load(SeqCst),
            connections_refused: c.refused.load(SeqCst),
            transactions: c.transactions.load(SeqCst),
            messages: c.messages.load(SeqCst),
            recipients: c.recipients.load(SeqCst),
            bytes: c.bytes.load(SeqCst),
            rejections,
            dropped: c.dropped.load(SeqCst),
            checksum_ok: c.checksum_ok.load(SeqCst),
            checksum_bad: c.checksum_bad.load(SeqCst),
            checksum_missing: c.checksum_missing.load(SeqCst),
            duplicates: c.duplicates.load(SeqCst),
            no_message_id: c.no_message_id.load(SeqCst),
            e2e_latency_ms: lock(&self.e2e).summary(),
            busy_secs: {
                let first = self.first_connection_us.load(SeqCst);
                let last = self.last_message_us.load(SeqCst);
                last.saturating_sub(first) as f64 / 1e6
            },
            domains: self.domains.stats(),
        }
    }

    fn plan(&self) -> Arc<FaultPlan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wakes `wait_until` callers, if any.
    fn changed(&self) {
        if self.watchers.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    fn count_reply(&self, code: u16) {
        if let Some(c) = self.codes.get(usize::from(code)) {
            c.fetch_add(1, SeqCst);
        }
    }

    /// The next draw in [0, 1) of the seeded sequence (splitmix64 of a counter).
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Relaxed);
        let x = splitmix64(self.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn queue_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Relaxed);
        format!("S{n:010X}")
    }

    /// Marks (message, recipient) as seen by tempfail-once; true the first time.
    fn first_seen(&self, message_key: &str, recipient: &str) -> bool {
        lock(&self.once).insert(delivery_key(message_key, recipient))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A token bucket.
struct Bucket(Mutex<BucketState>);

struct BucketState {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: Option<f64>) -> Self {
        let burst = burst.unwrap_or(rate).max(1.0);
        Self(Mutex::new(BucketState {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }))
    }

    fn take(&self) -> bool {
        let mut b = lock(&self.0);
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
        b.tokens = (b.tokens + refill).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct DomainPlan {
    faults: Faults,
    bucket: Option<Bucket>,
    counters: Arc<domains::DomainCounters>,
}

struct FaultPlan {
    global: Faults,
    global_bucket: Option<Bucket>,
    domains: HashMap<String, DomainPlan>,
}

impl FaultPlan {
    fn new(
        global: &Faults,
        by_domain: &HashMap<String, Faults>,
        counts: &domains::Domains,
    ) -> Self {
        let bucket = |f: &Faults| f.rate_limit.map(|r| Bucket::new(r, f.rate_burst));
        Self {
            global: global.clone(),
            global_bucket: bucket(global),
            domains: by_domain
                .iter()
                .map(|(d, f)| {
                    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                    let plan = DomainPlan {
                        faults: f.clone(),
                        bucket: bucket(f),
                        counters: counts.counters(&d),
                    };
                    (d, plan)
                })
                .collect(),
        }
    }

    /// The faults for a recipient domain, and its own plan (under its lowercased name)
    /// when it has one.
    fn for_domain(&self, domain: &str) -> (&Faults, Option<(&str, &DomainPlan)>) {
        if self.domains.is_empty() {
            return (&self.global, None);
        }
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        match self.domains.get_key_value(key.as_str()) {
            Some((k, p)) => (&p.faults, Some((k.as_str(), p))),
            None => (&self.global, None),
        }
    }
}

/// Decrements the connection counts when a session ends.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.counters.active.fetch_sub(1, SeqCst);
        if self.shared.config.max_connections_per_ip.is_some() {
            let mut map = lock(&self.shared.per_ip);
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
        self.shared.changed();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        while sessions.try_join_next().is_some() {}
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(_) => {
                // out of descriptors and the like: let the pressure pass
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if shared.counters.connections.fetch_add(1, SeqCst) == 0 {
            shared
                .first_connection_us
                .store(shared.micros_since_start(), SeqCst);
        }
        match admit(&shared, peer.ip()) {
            Some(guard) => {
                sessions.spawn(session::run(sock, shared.clone(), guard));
            }
            None => {
                shared.counters.refused.fetch_add(1, SeqCst);
                shared.count_reply(421);
                shared.changed();
                sessions.spawn(refuse(sock));
            }
        }
    }
    drop(listener);
    sessions.shutdown().await;
}

/// Counts the connection in, unless a connection limit says no.
fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Option<ConnGuard> {
    let c = &shared.config;
    let active = shared.counters.active.fetch_add(1, SeqCst) + 1;
    if c.max_connections.is_some_and(|m| active as usize > m) {
        shared.counters.active.fetch_sub(1, SeqCst);
        return None;
    }
    if let Some(max) = c.max_connections_per_ip {
        let mut map = lock(&shared.per_ip);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            drop(map);
            shared.counters.active.fetch_sub(1, SeqCst);
            return None;
        }
        *n += 1;
    }
    Some(ConnGuard {
        shared: shared.clone(),
        ip,
    })
}

async fn refuse(mut sock: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = sock
            .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
            .await;
        let _ = sock.shutdown().await;
    })
    .await;
}

fn tls_acceptor(hostname: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_owned()])
        .context("generating the STARTTLS certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What the Maildir writer thread gets per message.
struct MaildirItem {
    name: String,
    data: Vec<u8>,
}

fn spawn_maildir_writer(
    dir: &Path,
    hostname: &str,
) -> anyhow::Result<(mpsc::Sender<MaildirItem>, std::thread::JoinHandle<()>)> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let (tx, rx) = mpsc::channel::<MaildirItem>();
    let dir = dir.to_owned();
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    let pid = std::process::id();
    let thread = std::thread::Builder::new()
        .name("sink-maildir".into())
        .spawn(move || {
            let mut warned = false;
            while let Ok(item) = rx.recv() {
                let name = format!("{}.P{pid}.{host}", item.name);
                let tmp = dir.join("tmp").join(&name);
                let res = std::fs::write(&tmp, &item.data)
                    .and_then(|()| std::fs::rename(&tmp, dir.join("new").join(&name)));
                if let Err(e) = res
                    && !warned
                {
                    warned = true;
                    eprintln!(
                        "sink: writing {}: {e} (further errors not shown)",
                        tmp.display()
                    );
                }
            }
        })?;
    Ok((tx, thread))
}

/// Headers the sink looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct HeaderInfo<'a> {
    message_id: Option<&'a str>,
    checksum: Option<&'a [u8]>,
    sent_at: Option<&'a [u8]>,
    /// Offset of the body (after the first empty line), or None without one.
    body_at: Option<usize>,
}

/// Reads Message-ID, X-Loadtest-Checksum and X-Loadtest-Sent-At from the header
/// block (unfolded values are enough: the generator does not fold).
fn parse_headers(msg: &[u8]) -> HeaderInfo<'_> {
    let end = memchr::memmem::find(msg, b"\r\n\r\n");
    let mut info = HeaderInfo {
        body_at: end.map(|e| e + 4),
        ..HeaderInfo::default()
    };
    let head = &msg[..end.map_or(msg.len(), |e| e + 2)];
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"Message-ID") {
            if info.message_id.is_none() && !value.is_empty() {
                info.message_id = std::str::from_utf8(value).ok();
            }
        } else if name.eq_ignore_ascii_case(b"X-Loadtest-Checksum") {
            info.checksum.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(crate::generator::SENT_AT_HEADER.as_bytes()) {
            info.sent_at.get_or_insert(value);
        }
    }
    info
}

fn checksum_status(msg: &[u8], info: &HeaderInfo<'_>) -> ChecksumStatus {
    let Some(value) = info.checksum else {
        return ChecksumStatus::Missing;
    };
    let want = std::str::from_utf8(value)
        .ok()
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    match (want, info.body_at) {
        (Some(want), Some(at)) if crate::generator::fnv1a(&msg[at..]) == want => ChecksumStatus::Ok,
        _ => ChecksumStatus::Bad,
    }
}

/// The envelope of a finished message, for [`Shared::accept`].
struct Delivery<'a> {
    queue_id: &'a str,
    mail_from: &'a str,
    recipients: &'a [&'a str],
    msg: &'a [u8],
    info: &'a HeaderInfo<'a>,
    bdat: bool,
    tls: bool,
}

impl Shared {
    /// Counts, verifies, dedupes, records and stores an accepted message.
    fn accept(&self, d: Delivery<'_>) {
        let received_at_us = crate::generator::unix_micros();
        let c = &self.counters;
        let checksum = if self.config.verify {
            let status = checksum_status(d.msg, d.info);
            match status {
                ChecksumStatus::Ok => &c.checksum_ok,
                ChecksumStatus::Bad => &c.checksum_bad,
                _ => &c.checksum_missing,
            }
            .fetch_add(1, SeqCst);
            match d.info.message_id {
                Some(id) => {
                    let mut map = lock(&self.deliveries);
                    for rcpt in d.recipients {
                        let n = map.entry(delivery_key(id, rcpt)).or_insert(0);
                        *n += 1;
                        if *n > 1 {
                            c.duplicates.fetch_add(1, SeqCst);
                        }
                    }
                }
                None => {
                    c.no_message_id.fetch_add(1, SeqCst);
                }
            }
            status
        } else {
            ChecksumStatus::NotChecked
        };
        let sent_at_us = d.info.sent_at.and_then(crate::generator::parse_sent_at);
        if let Some(sent) = sent_at_us {
            let us = received_at_us.saturating_sub(sent);
            lock(&self.e2e).record(Duration::from_micros(us));
        }
        if self.config.keep_messages {
            lock(&self.records).push(ReceivedMessage {
                queue_id: d.queue_id.to_owned(),
                mail_from: d.mail_from.to_owned(),
                recipients: d.recipients.iter().map(|r| (*r).to_owned()).collect(),
                message_id: d.info.message_id.map(str::to_owned),
                size: d.msg.len(),
                received_at_us,
                sent_at_us,
                checksum,
                bdat: d.bdat,
                tls: d.tls,
                data: d.msg.to_vec(),
            });
        }
        if self.config.maildir.is_some()
            && let Some(tx) = lock(&self.maildir).as_ref()
        {
            let mut data = Vec::with_capacity(d.msg.len() + 128);
            let mut head = format!("Return-Path: <{}>\r\n", d.mail_from);
            for r in d.recipients {
                let _ = write!(head, "Delivered-To: {r}\r\n");
            }
            data.extend_from_slice(head.as_bytes());
            data.extend_from_slice(d.msg);
            let _ = tx.send(MaildirItem {
                name: format!("{}.{}", received_at_us / 1_000_000, d.queue_id),
                data,
            });
        }
        if let Some(observer) = &self.config.observer {
            (observer.0)(&DeliveryEvent {
                message_id: d.info.message_id,
                recipients: d.recipients,
                received_at_us,
                sent_at_us,
                size: d.msg.len(),
            });
        }
        c.bytes.fetch_add(d.msg.len() as u64, SeqCst);
        c.recipients.fetch_add(d.recipients.len() as u64, SeqCst);
        self.last_message_us
            .fetch_max(self.micros_since_start(), SeqCst);
        c.messages.fetch_add(1, SeqCst);
        self.changed();
    }

    /// Microseconds since the sink started, at least 1.
    fn micros_since_start(&self) -> u64 {
        (self.started.elapsed().as_micros() as u64).max(1)
    }
}
