//! An authoritative DNS stub on UDP and TCP (one port), built on `hickory-server`,
//! for tests of MX resolution: MX, null MX (RFC 7505), A, AAAA and TXT records with a
//! TTL each, names that answer SERVFAIL or NXDOMAIN, and changes at run time.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use postroad_loadtest::dns::{DnsStub, Zone};
//! let dns = DnsStub::start(
//!     "127.0.0.1:0".parse()?,
//!     vec![
//!         Zone::new("test")
//!             .ttl(60)
//!             .mx("gmail.test", 10, "mx1.sink.test")
//!             .mx("gmail.test", 20, "mx2.sink.test")
//!             .a("mx1.sink.test", "127.0.0.1".parse()?)
//!             .null_mx("nomail.test")
//!             .servfail("broken.test"),
//!     ],
//! )
//! .await?;
//! let addr = dns.local_addr(); // point the resolver here, UDP and TCP
//! # Ok(()) }
//! ```
//!
//! Answers, for a query name inside one of the zones (the longest origin that
//! matches; origin `.` covers every name):
//!
//! - a SERVFAIL name: SERVFAIL (any type); an NXDOMAIN name: NXDOMAIN with the SOA;
//! - records of the asked type (ANY: all): NOERROR, authoritative, with them;
//! - a name that exists (has records, is the origin, or has names below it) but not
//!   with that type: NOERROR with no answer and the zone's SOA (NODATA);
//! - any other name: NXDOMAIN with the SOA.
//!
//! Outside every zone the answer is REFUSED. The SOA's minimum (the negative-caching
//! TTL) is [`Zone::negative_ttl`]. Names are compared without case and with or
//! without the final dot; they are always absolute (`mx1.sink.test`, not `mx1`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde::Deserialize;
use tokio::net::{TcpListener, UdpSocket};

pub use hickory_server::proto::rr::RecordType;

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Mx {
        preference: u16,
        exchange: String,
    },
    /// RFC 7505 "no mail here": `MX 0 .`
    NullMx,
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Txt(String),
}

impl RecordData {
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::Mx { .. } | Self::NullMx => RecordType::MX,
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Txt(_) => RecordType::TXT,
        }
    }
}

/// One record: absolute owner name, TTL in seconds, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRecord {
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

impl ZoneRecord {
    pub fn new(name: &str, ttl: u32, data: RecordData) -> Self {
        Self {
            name: normalize(name),
            ttl,
            data,
        }
    }
}

/// Special answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    ServFail,
    NxDomain,
}

/// A zone the stub is authoritative for, built with the methods below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// `test`, `sink.test`, or `.` for every name.
    pub origin: String,
    pub records: Vec<ZoneRecord>,
    /// Names that answer SERVFAIL or NXDOMAIN whatever their records.
    pub failures: BTreeMap<String, Failure>,
    /// TTL for records added from now on by the builder methods [default: 300].
    pub default_ttl: u32,
    /// SOA minimum and TTL: how long resolvers cache negative answers [default: 30].
    pub negative_ttl: u32,
}

/// The name the relay issue uses.
pub type ZoneSpec = Zone;

impl Zone {
    pub fn new(origin: &str) -> Self {
        Self {
            origin: normalize(origin),
            records: Vec::new(),
            failures: BTreeMap::new(),
            default_ttl: 300,
            negative_ttl: 30,
        }
    }

    /// TTL of the records added after this call.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.default_ttl = ttl;
        self
    }

    pub fn negative_ttl(mut self, ttl: u32) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Adds a record with the current default TTL.
    pub fn add(mut self, name: &str, data: RecordData) -> Self {
        self.records
            .push(ZoneRecord::new(name, self.default_ttl, data));
        self
    }

    /// Adds a record with its own TTL.
    pub fn record(mut self, record: ZoneRecord) -> Self {
        self.records.push(ZoneRecord {
            name: normalize(&record.name),
            ..record
        });
        self
    }

    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.add(
            name,
            RecordData::Mx {
                preference,
                exchange: normalize(exchange),
            },
        )
    }

    /// RFC 7505 null MX: `name MX 0 .`
    pub fn null_mx(self, name: &str) -> Self {
        self.add(name, RecordData::NullMx)
    }

    pub fn a(self, name: &str, ip: Ipv4Addr) -> Self {
        self.add(name, RecordData::A(ip))
    }

    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Self {
        self.add(name, RecordData::Aaaa(ip))
    }

    pub fn txt(self, name: &str, text: &str) -> Self {
        self.add(name, RecordData::Txt(text.to_owned()))
    }

    pub fn servfail(mut self, name: &str) -> Self {
        self.failures.insert(normalize(name), Failure::ServFail);
        self
    }

    pub fn nxdomain(mut self, name: &str) -> Self {
        self.failures.insert(normalize(name), Failure::NxDomain);
        self
    }

    /// Whether `name` (normalized) is this zone's origin or below it.
    fn contains(&self, name: &str) -> bool {
        in_zone(name, &self.origin)
    }
}

/// Lower case, no final dot; the root is "".
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn in_zone(name: &str, origin: &str) -> bool {
    origin.is_empty()
        || name == origin
        || (name.len() > origin.len()
            && name.ends_with(origin)
            && name.as_bytes()[name.len() - origin.len() - 1] == b'.')
}

fn to_name(name: &str) -> anyhow::Result<Name> {
    if name.is_empty() {
        return Ok(Name::root());
    }
    Name::from_ascii(format!("{name}.")).with_context(|| format!("bad DNS name {name:?}"))
}

/// Everything the request handler reads, rebuilt on every change.
struct Db {
    /// Longest origin first.
    zones: Vec<ZoneDb>,
}

struct ZoneDb {
    origin: String,
    soa: Record,
    /// Owner name -> records.
    records: HashMap<String, Vec<Record>>,
    failures: HashMap<String, Failure>,
    /// Names that exist: owners, the origin, and every name between them.
    names: HashSet<String>,
}

impl Db {
    fn build(zones: &[Zone]) -> anyhow::Result<Self> {
        let mut out = Vec::with_capacity(zones.len());
        let mut seen = HashSet::new();
        for z in zones {
            if !seen.insert(z.origin.clone()) {
                bail!("zone {:?} given twice", display(&z.origin));
            }
            let origin = to_name(&z.origin)?;
            let soa = Record::from_rdata(
                origin.clone(),
                z.negative_ttl,
                RData::SOA(SOA::new(
                    to_name(&join("ns", &z.origin))?,
                    to_name(&join("hostmaster", &z.origin))?,
                    1,
                    3600,
                    600,
                    86_400,
                    z.negative_ttl,
                )),
            );
            let mut records: HashMap<String, Vec<Record>> = HashMap::new();
            let mut names = HashSet::from([z.origin.clone()]);
            for r in &z.records {
                let name = normalize(&r.name);
                if !z.contains(&name) {
                    bail!("record {name:?} is outside zone {:?}", display(&z.origin));
                }
                let owner = to_name(&name)?;
                let rdata = match &r.data {
                    RecordData::Mx {
                        preference,
                        exchange,
                    } => RData::MX(MX::new(*preference, to_name(&normalize(exchange))?)),
                    RecordData::NullMx => RData::MX(MX::new(0, Name::root())),
                    RecordData::A(ip) => RData::A(A(*ip)),
                    RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
                    RecordData::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
                };
                let mut n = name.as_str();
                while n.len() > z.origin.len() {
                    names.insert(n.to_owned());
                    n = n.split_once('.').map_or("", |(_, rest)| rest);
                }
                records
                    .entry(name)
                    .or_default()
                    .push(Record::from_rdata(owner, r.ttl, rdata));
            }
            let failures = z.failures.iter().map(|(n, f)| (normalize(n), *f)).collect();
            out.push(ZoneDb {
                origin: z.origin.clone(),
                soa,
                records,
                failures,
                names,
            });
        }
        out.sort_by_key(|z| std::cmp::Reverse(z.origin.len()));
        Ok(Self { zones: out })
    }
}

fn join(label: &str, origin: &str) -> String {
    if origin.is_empty() {
        label.to_owned()
    } else {
        format!("{label}.{origin}")
    }
}

fn display(origin: &str) -> &str {
    if origin.is_empty() { "." } else { origin }
}

struct State {
    zones: Mutex<Vec<Zone>>,
    db: RwLock<Arc<Db>>,
    /// (name, type) -> queries.
    queries: Mutex<HashMap<(String, RecordType), u64>>,
}

impl State {
    fn db(&self) -> Arc<Db> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, name: &str, rtype: RecordType) {
        *self
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), rtype))
            .or_default() += 1;
    }
}

/// What to answer to one query.
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
}

fn answer(db: &Db, name: &str, qtype: RecordType) -> Answer {
    let refused = Answer {
        code: ResponseCode::Refused,
        authoritative: false,
        answers: Vec::new(),
        authority: Vec::new(),
    };
    let Some(zone) = db.zones.iter().find(|z| in_zone(name, &z.origin)) else {
        return refused;
    };
    let negative = |code| Answer {
        code,
        authoritative: true,
        answers: Vec::new(),
        authority: vec![zone.soa.clone()],
    };
    match zone.failures.get(name) {
        Some(Failure::ServFail) => {
            return Answer {
                code: ResponseCode::ServFail,
                ..refused
            };
        }
        Some(Failure::NxDomain) => return negative(ResponseCode::NXDomain),
        None => {}
    }
    let mut answers: Vec<Record> = zone
        .records
        .get(name)
        .map(|rs| {
            rs.iter()
                .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if name == zone.origin && matches!(qtype, RecordType::SOA | RecordType::ANY) {
        answers.push(zone.soa.clone());
    }
    if !answers.is_empty() {
        return Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
        };
    }
    if zone.names.contains(name) {
        negative(ResponseCode::NoError)
    } else {
        negative(ResponseCode::NXDomain)
    }
}

struct Handler(Arc<State>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let fail = |code| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            metadata
        };
        let not_a_query = request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query;
        let info = if not_a_query {
            Err(ResponseCode::NotImp)
        } else {
            request.request_info().map_err(|_| ResponseCode::FormErr)
        };
        let result = match info {
            Err(code) => {
                let metadata = fail(code);
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Ok(info) => {
                let name = normalize(&info.query.name().to_string());
                let qtype = info.query.query_type();
                self.0.count(&name, qtype);
                let a = answer(&self.0.db(), &name, qtype);
                let mut metadata = fail(a.code);
                metadata.authoritative = a.authoritative;
                let response = builder.build(
                    metadata,
                    a.answers.iter(),
                    a.authority.iter(),
                    std::iter::empty(),
                    std::iter::empty(),
                );
                response_handle.send_response(response).await
            }
        };
        result.unwrap_or_else(|_| {
            let metadata = fail(ResponseCode::ServFail);
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }
}

/// Starts DNS stubs; see [`DnsStub::start`].
pub struct DnsStub;

impl DnsStub {
    /// Serves `zones` on UDP and TCP at `listen` (port 0: a free port, the same for
    /// both), until [`DnsHandle::shutdown`] or until the handle is dropped.
    pub async fn start(listen: SocketAddr, zones: Vec<Zone>) -> anyhow::Result<DnsHandle> {
        let db = Db::build(&zones)?;
        let (udp, tcp) = bind_both(listen).await?;
        let local_addr = udp.local_addr()?;
        let state = Arc::new(State {
            zones: Mutex::new(zones),
            db: RwLock::new(Arc::new(db)),
            queries: Mutex::new(HashMap::new()),
        });
        let mut server = hickory_server::Server::new(Handler(state.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
        Ok(DnsHandle {
            state,
            local_addr,
            server,
        })
    }
}

/// UDP and TCP sockets on the same port.
async fn bind_both(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..if listen.port() == 0 { 20 } else { 1 } {
        let udp = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("binding UDP {listen}"))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.expect("at least one attempt");
    Err(anyhow::Error::new(e).context(format!("binding TCP {listen}")))
}

/// A running DNS stub.
pub struct DnsHandle {
    state: Arc<State>,
    local_addr: SocketAddr,
    server: hickory_server::Server<Handler>,
}

impl DnsHandle {
    /// The address (UDP and TCP) the stub answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The zones now.
    pub fn zones(&self) -> Vec<Zone> {
        self.state
            .zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces every zone.
    pub fn set_zones(&self, zones: Vec<Zone>) -> anyhow::Result<()> {
        self.update(|z| {
            *z = zones;
            Ok(())
        })
    }

    /// Replaces every record of `name` (all types) with `data`, each with `ttl`; an
    /// empty `data` removes the name. The name must be in one of the zones.
    pub fn set_records(&self, name: &str, ttl: u32, data: Vec<RecordData>) -> anyhow::Result<()> {
        let name = normalize(name);
        self.update(|zones| {
            let zone = zone_for(zones, &name)?;
            zone.records.retain(|r| normalize(&r.name) != name);
            zone.records
                .extend(data.into_iter().map(|d| ZoneRecord::new(&name, ttl, d)));
            Ok(())
        })
    }

    /// Makes `name` answer SERVFAIL or NXDOMAIN, or (None) its records again.
    pub fn set_failure(&self, name: &str, failure: Option<Failure>) -> anyhow::Result<()> {
        let name = normalize(name);
        self.update(|zones| {
            let zone = zone_for(zones, &name)?;
            match failure {
                Some(f) => zone.failures.insert(name.clone(), f),
                None => zone.failures.remove(&name),
            };
            Ok(())
        })
    }

    fn update(
        &self,
        change: impl FnOnce(&mut Vec<Zone>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut zones = self.state.zones.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = zones.clone();
        change(&mut next)?;
        let db = Db::build(&next)?;
        *zones = next;
        *self.state.db.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(db);
        Ok(())
    }

    /// Queries received for (name, type) so far (for cache tests).
    pub fn query_count(&self, name: &str, rtype: RecordType) -> u64 {
        self.state
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(normalize(name), rtype))
            .copied()
            .unwrap_or(0)
    }

    /// Queries received so far, all names and types.
    pub fn total_queries(&self) -> u64 {
        self.state
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Stops serving and waits for the server's tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

fn zone_for<'a>(zones: &'a mut [Zone], name: &str) -> anyhow::Result<&'a mut Zone> {
    zones
        .iter_mut()
        .filter(|z| z.contains(name))
        .max_by_key(|z| z.origin.len())
        .with_context(|| format!("{name:?} is in none of the zones"))
}

// ---------------------------------------------------------------------------------
// zone files (TOML)

/// A zone file: `[[zone]]` tables, see loadtest/README.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneFile {
    #[serde(default)]
    zone: Vec<ZoneToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneToml {
    origin: String,
    ttl: Option<u32>,
    negative_ttl: Option<u32>,
    #[serde(default)]
    records: Vec<RecordToml>,
    #[serde(default)]
    servfail: Vec<String>,
    #[serde(default)]
    nxdomain: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordToml {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: Option<u32>,
    preference: Option<u16>,
    exchange: Option<String>,
    address: Option<String>,
    text: Option<String>,
}

/// Parses a TOML zone file.
pub fn parse_zone_file(text: &str) -> anyhow::Result<Vec<Zone>> {
    let file: ZoneFile = toml::from_str(text)?;
    let mut zones = Vec::new();
    for z in file.zone {
        let mut zone = Zone::new(&z.origin);
        if let Some(t) = z.ttl {
            zone = zone.ttl(t);
        }
        if let Some(t) = z.negative_ttl {
            zone = zone.negative_ttl(t);
        }
        for r in z.records {
            let ttl = r.ttl.unwrap_or(zone.default_ttl);
            let what = || format!("record {} {}", r.name, r.rtype);
            let data = match r.rtype.to_ascii_uppercase().as_str() {
                "MX" => RecordData::Mx {
                    preference: r
                        .preference
                        .with_context(|| format!("{}: no preference", what()))?,
                    exchange: r
                        .exchange
                        .clone()
                        .with_context(|| format!("{}: no exchange", what()))?,
                },
                "NULLMX" | "NULL-MX" => RecordData::NullMx,
                "A" => RecordData::A(
                    r.address
                        .as_deref()
                        .with_context(|| format!("{}: no address", what()))?
                        .parse()
                        .with_context(what)?,
                ),
                "AAAA" => RecordData::Aaaa(
                    r.address
                        .as_deref()
                        .with_context(|| format!("{}: no address", what()))?
                        .parse()
                        .with_context(what)?,
                ),
                "TXT" => RecordData::Txt(
                    r.text
                        .clone()
                        .with_context(|| format!("{}: no text", what()))?,
                ),
                other => bail!(
                    "{}: unknown type {other:?} (MX, NULLMX, A, AAAA, TXT)",
                    what()
                ),
            };
            zone = zone.record(ZoneRecord::new(&r.name, ttl, data));
        }
        for n in z.servfail {
            zone = zone.servfail(&n);
        }
        for n in z.nxdomain {
            zone = zone.nxdomain(&n);
        }
        zones.push(zone);
    }
    Db::build(&zones)?;
    Ok(zones)
}

#[cfg(test)]
mod tests;
