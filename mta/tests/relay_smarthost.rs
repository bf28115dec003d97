//! `relay.smarthost`: every domain goes to one host, without MX lookups, and the
//! connection is reused across messages.

mod common;

use std::time::Duration;

use common::relay_env::RelayEnv;
use common::{Client, queued_id};

#[test]
fn everything_goes_to_the_smarthost() {
    let env = RelayEnv::start("smarthost = \"{sink}\"\n", "");
    let domains = ["anywhere.test", "other.test", "nullmx.test", "broken.test"];
    let mut c = Client::greeted(env.server.relay);
    let mut sent = Vec::new();
    for (n, domain) in domains.iter().enumerate() {
        let rcpt = format!("u{n}@{domain}");
        let body = format!("Message-ID: <smarthost-{n}@relay.test>\nSubject: {n}\n\nbody\n");
        sent.push((
            queued_id(&c.send_mail("s@src.test", &[&rcpt], &body)).to_string(),
            rcpt,
            n,
        ));
    }
    for (id, rcpt, n) in &sent {
        env.wait_for_event(id, rcpt, "delivered", Duration::from_secs(30));
        assert_eq!(
            env.deliveries(&format!("<smarthost-{n}@relay.test>"), rcpt),
            1
        );
    }
    assert_eq!(
        env.dns.total_queries(),
        0,
        "a smarthost needs no MX lookups"
    );
}
