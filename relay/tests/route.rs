//! Routing against a real authoritative DNS server (the harness's stub): MX preference
//! order, MX rollup into sites, implicit and null MX, failures, and the TTL cache.

use std::net::{Ipv4Addr, SocketAddr};

use postroad_loadtest::dns::{DnsHandle, DnsStub, RecordData, RecordType, Zone};
use postroad_relay::RelayConfig;
use postroad_relay::route::{RouteError, Router};

async fn stub() -> DnsHandle {
    let lo = Ipv4Addr::LOCALHOST;
    let zone = Zone::new("test")
        .ttl(300)
        .mx("a.test", 20, "mx2.shared.test")
        .mx("a.test", 10, "mx1.shared.test")
        .mx("b.test", 10, "mx1.shared.test")
        .mx("b.test", 20, "mx2.shared.test")
        .a("mx1.shared.test", lo)
        .a("mx2.shared.test", Ipv4Addr::new(127, 0, 0, 2))
        .a("implicit.test", lo)
        .null_mx("null.test")
        .servfail("fail.test")
        .mx("short.test", 10, "mx1.shared.test");
    DnsStub::start("127.0.0.1:0".parse().unwrap(), vec![zone])
        .await
        .unwrap()
}

fn router(dns: &DnsHandle) -> Router {
    Router::new(&RelayConfig {
        nameservers: vec![dns.local_addr()],
        mx_port: 2525,
        ..RelayConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn mx_hosts_in_preference_order_and_shared_sites() {
    let dns = stub().await;
    let router = router(&dns);
    let a = router.route("a.test").await.unwrap();
    let names: Vec<_> = a.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["mx1.shared.test", "mx2.shared.test"]);
    assert_eq!(a.hosts[0].addrs, [SocketAddr::from(([127, 0, 0, 1], 2525))]);
    // Same MX hosts, other domain: the same site (one pool).
    let b = router.route("b.test").await.unwrap();
    assert_eq!(a.site, b.site);
}

#[tokio::test]
async fn implicit_null_missing_and_failing_domains() {
    let dns = stub().await;
    let router = router(&dns);
    let implicit = router.route("implicit.test").await.unwrap();
    assert_eq!(implicit.hosts[0].name, "implicit.test");
    match router.route("null.test").await {
        Err(RouteError::Permanent(r)) => {
            assert_eq!(
                (r.code(), r.enhanced().map(|e| e.to_string())),
                (None, Some("5.1.10".into()))
            )
        }
        other => panic!("null MX: {other:?}"),
    }
    match router.route("missing.test").await {
        Err(RouteError::Permanent(r)) => assert_eq!(
            r.enhanced().map(|e| e.to_string()).as_deref(),
            Some("5.1.2")
        ),
        other => panic!("NXDOMAIN: {other:?}"),
    }
    match router.route("fail.test").await {
        Err(RouteError::Temporary(r)) => assert_eq!(
            r.enhanced().map(|e| e.to_string()).as_deref(),
            Some("4.4.3")
        ),
        other => panic!("SERVFAIL: {other:?}"),
    }
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_and_no_longer() {
    let dns = stub().await;
    let router = router(&dns);
    dns.set_records(
        "short.test",
        1,
        vec![RecordData::Mx {
            preference: 10,
            exchange: "mx1.shared.test".into(),
        }],
    )
    .unwrap();
    router.route("short.test").await.unwrap();
    router.route("short.test").await.unwrap();
    assert_eq!(
        dns.query_count("short.test", RecordType::MX),
        1,
        "second lookup from the cache"
    );
    // After the 1 s TTL the resolver asks again and sees the new MX.
    dns.set_records(
        "short.test",
        1,
        vec![RecordData::Mx {
            preference: 10,
            exchange: "mx2.shared.test".into(),
        }],
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let again = router.route("short.test").await.unwrap();
    assert_eq!(again.hosts[0].name, "mx2.shared.test");
    assert_eq!(dns.query_count("short.test", RecordType::MX), 2);
}
