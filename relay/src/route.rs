//! Where a domain's mail goes: a smarthost, a static route, or the domain's MX hosts
//! (implicit MX and null MX included), resolved to addresses and grouped into sites.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use postroad_queue::Response;

use crate::client::TlsPolicy;
use crate::config::RelayConfig;
use crate::site::local_reply;

/// One host to try, with its addresses in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

/// Where to deliver one domain's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Domains with the same site key share a connection pool ("MX rollup").
    pub site: String,
    /// Hosts in the order to try them (MX preference).
    pub hosts: Vec<Host>,
    pub tls: TlsPolicy,
}

/// Why a domain cannot be routed now (temporary) or ever (permanent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Temporary(Response),
    Permanent(Response),
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// A static target (smarthost or route): host name or IP, and port.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    tls: TlsPolicy,
}

pub struct Router {
    resolver: TokioResolver,
    smarthost: Option<Target>,
    routes: HashMap<String, Target>,
    mx_port: u16,
    tls: TlsPolicy,
}

/// Parses `host:port` (or `[v6]:port`, or a bare host with `default_port`).
pub fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty host".into());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse().map_err(|_| format!("bad port in {text:?}"))?;
            Ok((host.to_string(), port))
        }
        None => Ok((text.to_string(), default_port)),
    }
}

impl Router {
    pub fn new(config: &RelayConfig) -> Result<Self, RouterError> {
        let builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| RouterError::Resolver(e.to_string()))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder
            .build()
            .map_err(|e| RouterError::Resolver(e.to_string()))?;
        let target = |host: &str, tls: Option<TlsPolicy>| {
            parse_host_port(host, 25).map(|(host, port)| Target {
                host,
                port,
                tls: tls.unwrap_or(config.tls),
            })
        };
        let smarthost = match &config.smarthost {
            Some(host) => Some(target(host, None).map_err(RouterError::Resolver)?),
            None => None,
        };
        let mut routes = HashMap::new();
        for (domain, route) in &config.routes {
            let t = target(&route.host, route.tls).map_err(RouterError::Resolver)?;
            routes.insert(domain.trim_end_matches('.').to_ascii_lowercase(), t);
        }
        Ok(Self {
            resolver,
            smarthost,
            routes,
            mx_port: config.mx_port,
            tls: config.tls,
        })
    }

    /// Routes one (lowercased) recipient domain.
    pub async fn route(&self, domain: &str) -> Result<Destination, RouteError> {
        if domain.is_empty() {
            return Err(RouteError::Permanent(local_reply(
                "5.1.3",
                "recipient has no domain".into(),
            )));
        }
        if let Some(target) = self.smarthost.as_ref().or_else(|| self.routes.get(domain)) {
            let host = self.resolve_host(&target.host, target.port).await?;
            return Ok(Destination {
                site: format!("route:{}:{}", target.host, target.port),
                hosts: vec![host],
                tls: target.tls,
            });
        }
        self.route_mx(domain).await
    }

    async fn route_mx(&self, domain: &str) -> Result<Destination, RouteError> {
        let fqdn = format!("{domain}.");
        let mut exchanges: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent(local_reply(
                    "5.1.2",
                    format!("domain {domain} does not exist (NXDOMAIN)"),
                )));
            }
            // No MX records: the domain itself is the implicit MX (RFC 5321 5.1).
            Err(e) if e.is_no_records_found() => vec![(0, fqdn.clone())],
            Err(e) => {
                return Err(RouteError::Temporary(local_reply(
                    "4.4.3",
                    format!("MX lookup for {domain} failed: {e}"),
                )));
            }
        };
        // Null MX (RFC 7505): a single MX whose exchange is the root.
        if exchanges.iter().any(|(_, name)| name == ".") {
            if exchanges.len() == 1 {
                return Err(RouteError::Permanent(local_reply(
                    "5.1.10",
                    format!("domain {domain} does not accept mail (null MX)"),
                )));
            }
            exchanges.retain(|(_, name)| name != ".");
        }
        exchanges.sort();
        exchanges.dedup_by(|a, b| a.1 == b.1);
        let implicit = exchanges.len() == 1 && exchanges[0].1 == fqdn;
        let mut hosts = Vec::with_capacity(exchanges.len());
        let mut last_error = None;
        for (_, name) in &exchanges {
            match self.resolve_host(name, self.mx_port).await {
                Ok(host) => hosts.push(host),
                Err(e) => last_error = Some(e),
            }
        }
        if hosts.is_empty() {
            return Err(match (implicit, last_error) {
                // No MX and no address either: nothing can ever deliver there.
                (true, Some(RouteError::Permanent(_))) => RouteError::Permanent(local_reply(
                    "5.1.2",
                    format!("domain {domain} has no MX and no address records"),
                )),
                (_, Some(e)) => e,
                (_, None) => RouteError::Temporary(local_reply(
                    "4.4.3",
                    format!("no usable MX host for {domain}"),
                )),
            });
        }
        let mut names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        names.sort_unstable();
        Ok(Destination {
            site: format!("mx:{}:{}", names.join(","), self.mx_port),
            hosts,
            tls: self.tls,
        })
    }

    /// Resolves a host name (or IP literal) to addresses with `port`.
    async fn resolve_host(&self, name: &str, port: u16) -> Result<Host, RouteError> {
        let display = name.trim_end_matches('.').to_string();
        if let Ok(ip) = display.parse::<IpAddr>() {
            return Ok(Host {
                name: display,
                addrs: vec![SocketAddr::new(ip, port)],
            });
        }
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let addrs: Vec<SocketAddr> =
                    lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    return Err(RouteError::Temporary(local_reply(
                        "4.4.3",
                        format!("{display} has no address"),
                    )));
                }
                Ok(Host {
                    name: display,
                    addrs,
                })
            }
            Err(e) if e.is_no_records_found() => Err(RouteError::Permanent(local_reply(
                "5.1.2",
                format!("host {display} not found: {e}"),
            ))),
            Err(e) => Err(RouteError::Temporary(local_reply(
                "4.4.3",
                format!("address lookup for {display} failed: {e}"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("smtp.example.net:2525", 25).unwrap(),
            ("smtp.example.net".into(), 2525)
        );
        assert_eq!(
            parse_host_port("smtp.example.net", 25).unwrap(),
            ("smtp.example.net".into(), 25)
        );
        assert_eq!(
            parse_host_port("127.0.0.1:26", 25).unwrap(),
            ("127.0.0.1".into(), 26)
        );
        assert_eq!(parse_host_port("[::1]:27", 25).unwrap(), ("::1".into(), 27));
        assert!(parse_host_port("host:notaport", 25).is_err());
        assert!(parse_host_port("", 25).is_err());
    }
}
