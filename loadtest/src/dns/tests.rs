//! The stub, resolved through `hickory-resolver` (the relay's resolver) over UDP and
//! over TCP.

use super::*;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

fn resolver(addr: SocketAddr, udp: bool, tcp: bool) -> TokioResolver {
    let mut conns = Vec::new();
    if udp {
        let mut c = ConnectionConfig::udp();
        c.port = addr.port();
        conns.push(c);
    }
    if tcp {
        let mut c = ConnectionConfig::tcp();
        c.port = addr.port();
        conns.push(c);
    }
    let ns = NameServerConfig::new(addr.ip(), true, conns);
    let mut b = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let o = b.options_mut();
    o.timeout = Duration::from_secs(5);
    o.attempts = 1;
    o.ndots = 0;
    b.build().expect("resolver")
}

fn zones() -> Vec<Zone> {
    vec![
        Zone::new("test")
            .ttl(120)
            .negative_ttl(7)
            .mx("gmail.test", 20, "mx2.sink.test")
            .mx("gmail.test", 10, "mx1.sink.test.")
            .mx("gmail.test", 30, "mx3.sink.test")
            .a("mx1.sink.test", Ipv4Addr::new(127, 0, 0, 1))
            .a("mx2.sink.test", Ipv4Addr::new(127, 0, 0, 2))
            .aaaa("mx1.sink.test", Ipv6Addr::LOCALHOST)
            .a("anly.test", Ipv4Addr::new(127, 0, 0, 9))
            .null_mx("nomail.test")
            .record(ZoneRecord::new(
                "short.test",
                5,
                RecordData::A(Ipv4Addr::new(127, 0, 0, 5)),
            ))
            .txt("txt.test", "v=spf1 -all")
            .servfail("broken.test")
            .nxdomain("gone.test")
            .a("gone.test", Ipv4Addr::new(127, 0, 0, 66)),
    ]
}

/// MX records sorted by preference, as (preference, exchange).
fn mx_of(lookup: &hickory_resolver::lookup::Lookup) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn a_of(lookup: &hickory_resolver::lookup::Lookup) -> Vec<std::net::IpAddr> {
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn is_servfail(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Dns(hickory_resolver::net::DnsError::ResponseCode(
            ResponseCode::ServFail
        ))
    )
}

async fn check_all(r: &TokioResolver) {
    // MX: every record, preferences intact, lowest first once sorted
    let mx = r.mx_lookup("gmail.test.").await.unwrap();
    assert_eq!(
        mx_of(&mx),
        vec![
            (10, "mx1.sink.test.".to_owned()),
            (20, "mx2.sink.test.".to_owned()),
            (30, "mx3.sink.test.".to_owned()),
        ]
    );
    assert!(mx.answers().iter().all(|r| r.ttl <= 120 && r.ttl > 0));
    // the exchanges resolve (A and AAAA)
    let a = r.ipv4_lookup("mx1.sink.test.").await.unwrap();
    assert_eq!(
        a_of(&a),
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let aaaa = r.ipv6_lookup("mx1.sink.test.").await.unwrap();
    assert_eq!(
        a_of(&aaaa),
        vec!["::1".parse::<std::net::IpAddr>().unwrap()]
    );
    // mx3 has no address: NXDOMAIN
    let e = r.ipv4_lookup("mx3.sink.test.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");

    // implicit MX (RFC 5321 5.1): no MX but the name exists with an A record
    let e = r.mx_lookup("anly.test.").await.unwrap_err();
    assert!(e.is_no_records_found() && !e.is_nx_domain(), "{e:?}");
    let a = r.ipv4_lookup("anly.test.").await.unwrap();
    assert_eq!(
        a_of(&a),
        vec!["127.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );

    // null MX
    let mx = r.mx_lookup("nomail.test.").await.unwrap();
    assert_eq!(mx_of(&mx), vec![(0, ".".to_owned())]);

    // NXDOMAIN: unknown names, and names forced to NXDOMAIN despite their records
    for name in ["nosuch.test.", "gone.test."] {
        let e = r.mx_lookup(name).await.unwrap_err();
        assert!(e.is_nx_domain(), "{name}: {e:?}");
    }
    let e = r.ipv4_lookup("gone.test.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e:?}");

    // SERVFAIL
    let e = r.mx_lookup("broken.test.").await.unwrap_err();
    assert!(is_servfail(&e), "{e:?}");

    // empty non-terminal: "sink.test" exists (names below it) but has no records
    let e = r.ipv4_lookup("sink.test.").await.unwrap_err();
    assert!(e.is_no_records_found() && !e.is_nx_domain(), "{e:?}");

    // TXT, and a record with its own TTL
    let txt = r.txt_lookup("txt.test.").await.unwrap();
    assert_eq!(txt.answers().len(), 1);
    let short = r.ipv4_lookup("short.test.").await.unwrap();
    assert!(short.answers()[0].ttl <= 5);

    // outside every zone: REFUSED
    let e = r.ipv4_lookup("example.com.").await.unwrap_err();
    assert!(
        matches!(
            e,
            NetError::Dns(hickory_resolver::net::DnsError::ResponseCode(
                ResponseCode::Refused
            ))
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn resolves_over_udp() {
    let dns = DnsStub::start("127.0.0.1:0".parse().unwrap(), zones())
        .await
        .unwrap();
    check_all(&resolver(dns.local_addr(), true, false)).await;
    assert!(dns.query_count("gmail.test", RecordType::MX) >= 1);
    dns.shutdown().await;
}

#[tokio::test]
async fn resolves_over_tcp_on_the_same_port() {
    let dns = DnsStub::start("127.0.0.1:0".parse().unwrap(), zones())
        .await
        .unwrap();
    check_all(&resolver(dns.local_addr(), false, true)).await;
    dns.shutdown().await;
}

#[tokio::test]
async fn records_change_at_run_time_and_the_cache_holds() {
    let dns = DnsStub::start("127.0.0.1:0".parse().unwrap(), zones())
        .await
        .unwrap();
    let r = resolver(dns.local_addr(), true, false);
    let mx = r.mx_lookup("gmail.test.").await.unwrap();
    assert_eq!(mx_of(&mx).len(), 3);
    assert_eq!(dns.query_count("gmail.test", RecordType::MX), 1);
    // within the TTL the resolver answers from its cache: no new query
    r.mx_lookup("gmail.test.").await.unwrap();
    assert_eq!(dns.query_count("gmail.test.", RecordType::MX), 1);

    dns.set_records(
        "gmail.test",
        60,
        vec![RecordData::Mx {
            preference: 5,
            exchange: "mx9.sink.test".into(),
        }],
    )
    .unwrap();
    // still cached
    assert_eq!(mx_of(&r.mx_lookup("gmail.test.").await.unwrap()).len(), 3);
    r.clear_cache();
    let mx = r.mx_lookup("gmail.test.").await.unwrap();
    assert_eq!(mx_of(&mx), vec![(5, "mx9.sink.test.".to_owned())]);
    assert!(mx.answers()[0].ttl <= 60);
    assert_eq!(dns.query_count("gmail.test", RecordType::MX), 2);

    // failures switch on and off
    dns.set_failure("gmail.test", Some(Failure::ServFail))
        .unwrap();
    r.clear_cache();
    assert!(is_servfail(&r.mx_lookup("gmail.test.").await.unwrap_err()));
    dns.set_failure("gmail.test", None).unwrap();
    r.clear_cache();
    assert_eq!(mx_of(&r.mx_lookup("gmail.test.").await.unwrap()).len(), 1);

    // removing every record of a name makes it NXDOMAIN
    dns.set_records("anly.test", 60, vec![]).unwrap();
    r.clear_cache();
    assert!(
        r.ipv4_lookup("anly.test.")
            .await
            .unwrap_err()
            .is_nx_domain()
    );

    // a name outside every zone cannot be set
    assert!(dns.set_records("example.com", 60, vec![]).is_err());
    dns.set_zones(vec![
        Zone::new(".").a("example.com", Ipv4Addr::new(127, 1, 2, 3)),
    ])
    .unwrap();
    r.clear_cache();
    assert_eq!(a_of(&r.ipv4_lookup("example.com.").await.unwrap()).len(), 1);
    assert!(dns.total_queries() >= 7);
    dns.shutdown().await;
}

#[test]
fn bad_zones_are_refused() {
    let outside = Zone::new("test").a("example.com", Ipv4Addr::LOCALHOST);
    assert!(Db::build(&[outside]).is_err());
    let twice = vec![Zone::new("test"), Zone::new("TEST.")];
    assert!(Db::build(&twice).is_err());
    let bad_name = Zone::new("test").a("a..b.test", Ipv4Addr::LOCALHOST);
    assert!(Db::build(&[bad_name]).is_err());
}

#[test]
fn zone_names() {
    assert!(in_zone("a.test", "test"));
    assert!(in_zone("test", "test"));
    assert!(!in_zone("atest", "test"));
    assert!(in_zone("anything", ""));
    assert_eq!(normalize(" MX1.Sink.Test. "), "mx1.sink.test");
}

#[test]
fn zone_file() {
    let text = r#"
        [[zone]]
        origin = "test"
        ttl = 60
        negative_ttl = 5
        records = [
          { name = "gmail.test", type = "MX", preference = 10, exchange = "mx1.sink.test" },
          { name = "mx1.sink.test", type = "A", address = "127.0.0.1", ttl = 30 },
          { name = "mx1.sink.test", type = "AAAA", address = "::1" },
          { name = "nomail.test", type = "NULLMX" },
          { name = "t.test", type = "txt", text = "hello" },
        ]
        servfail = ["broken.test"]
        nxdomain = ["gone.test"]
    "#;
    let zones = parse_zone_file(text).unwrap();
    assert_eq!(zones.len(), 1);
    let z = &zones[0];
    assert_eq!(z.origin, "test");
    assert_eq!(z.negative_ttl, 5);
    assert_eq!(z.records.len(), 5);
    assert_eq!(z.records[0].ttl, 60);
    assert_eq!(z.records[1].ttl, 30);
    assert_eq!(z.records[3].data, RecordData::NullMx);
    assert_eq!(z.failures["broken.test"], Failure::ServFail);
    assert_eq!(z.failures["gone.test"], Failure::NxDomain);

    for bad in [
        "[[zone]]\norigin = \"test\"\nrecords = [{ name = \"a.test\", type = \"MX\" }]",
        "[[zone]]\norigin = \"test\"\nrecords = [{ name = \"a.test\", type = \"A\", address = \"x\" }]",
        "[[zone]]\norigin = \"test\"\nrecords = [{ name = \"a.test\", type = \"SRV\" }]",
        "[[zone]]\norigin = \"test\"\ncolour = 1",
        "[[zone]]\norigin = \"test\"\nrecords = [{ name = \"a.example\", type = \"NULLMX\" }]",
    ] {
        assert!(parse_zone_file(bad).is_err(), "{bad}");
    }
}

#[test]
fn command_line_zones() {
    use crate::dns_cmd::{DnsArgs, zones_from_args};
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DnsArgs,
    }
    let args = Cli::parse_from([
        "t",
        "--mx",
        "gmail.test=10:mx1.sink.test",
        "--mx",
        "gmail.test=20:mx2.sink.test/60",
        "--a",
        "mx1.sink.test=127.0.0.1",
        "--aaaa",
        "mx1.sink.test=::1/30",
        "--null-mx",
        "nomail.test",
        "--servfail",
        "broken.test",
        "--nxdomain",
        "gone.test",
        "--ttl",
        "100",
    ])
    .args;
    let zones = zones_from_args(&args).unwrap();
    assert_eq!(zones.len(), 1);
    let z = &zones[0];
    assert_eq!(z.origin, "");
    assert_eq!(z.records.len(), 5);
    assert_eq!(z.records[0].ttl, 100);
    assert_eq!(z.records[1].ttl, 60);
    assert_eq!(
        z.records[1].data,
        RecordData::Mx {
            preference: 20,
            exchange: "mx2.sink.test".into()
        }
    );
    assert_eq!(z.records[2].data, RecordData::NullMx);
    assert_eq!(z.records[4].ttl, 30);
    assert_eq!(z.failures.len(), 2);

    for bad in [
        vec!["t", "--mx", "gmail.test=x:mx"],
        vec!["t", "--a", "a.test=300.1.1.1"],
        vec!["t", "--mx", "gmail.test"],
        vec!["t"],
    ] {
        let args = Cli::parse_from(bad.clone()).args;
        assert!(zones_from_args(&args).is_err(), "{bad:?}");
    }
}
