//! A restart while mail is deferred: the retry happens after the restart, at its due
//! time, and the message is delivered once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::relay_env::RelayEnv;
use common::{Client, queued_id};
use postroad_loadtest::sink::Faults;

#[test]
fn deferred_mail_is_retried_at_its_due_time_after_a_restart() {
    let mut env = RelayEnv::start(
        "retry_first_secs = 3\nretry_max_secs = 3\nretry_jitter = 0.0\n",
        "",
    );
    let mut refuse_all = HashMap::new();
    refuse_all.insert(
        "later.test".to_string(),
        Faults {
            tempfail_share: 1.0,
            ..Faults::default()
        },
    );
    env.sink.set_faults(Faults::default(), refuse_all).unwrap();

    let mut c = Client::greeted(env.server.relay);
    let body = "Message-ID: <restart@relay.test>\nSubject: later\n\nbody\n";
    let id = queued_id(&c.send_mail("s@src.test", &["x@later.test"], body)).to_string();
    drop(c);
    env.wait_for_event(&id, "x@later.test", "deferred", Duration::from_secs(30));

    env.server.stop();
    env.sink
        .set_faults(Faults::default(), HashMap::new())
        .unwrap();
    env.server.restart();

    let events = env.wait_for_event(&id, "x@later.test", "delivered", Duration::from_secs(30));
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["queued", "deferred", "delivered"], "{events:#?}");
    let (deferred_at, delivered_at) = (
        events[1]["at_ms"].as_u64().unwrap(),
        events[2]["at_ms"].as_u64().unwrap(),
    );
    assert!(
        delivered_at >= deferred_at + 3000,
        "retried {} ms after the deferral, before its due time",
        delivered_at - deferred_at
    );
    assert_eq!(events[2]["attempt"], 2);
    assert_eq!(env.deliveries("<restart@relay.test>", "x@later.test"), 1);
}
