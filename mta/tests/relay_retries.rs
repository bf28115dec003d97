//! Retries over time: a restart while mail is deferred (the retry happens after it, at
//! its due time, once), and expiry into the dead-letter store, then requeue.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::relay_env::RelayEnv;
use common::{Client, queued_id};
use postroad_loadtest::sink::Faults;

/// Sink faults that answer 451 to every recipient at `domain`.
fn tempfail_everything_at(domain: &str) -> HashMap<String, Faults> {
    let faults = Faults {
        tempfail_share: 1.0,
        ..Faults::default()
    };
    HashMap::from([(domain.to_string(), faults)])
}

#[test]
fn deferred_mail_is_retried_at_its_due_time_after_a_restart() {
    let mut env = RelayEnv::start(
        "retry_first_secs = 3\nretry_max_secs = 3\nretry_jitter = 0.0\n",
        "",
    );
    env.sink
        .set_faults(Faults::default(), tempfail_everything_at("later.test"))
        .unwrap();

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

/// Mail that keeps failing temporarily expires into the dead-letter store at the
/// maximum queue age; an operator requeues it and it is delivered.
#[test]
fn expired_mail_is_dead_lettered_and_can_be_requeued() {
    let env = RelayEnv::start("max_queue_age_secs = 2\n", "");
    env.sink
        .set_faults(Faults::default(), tempfail_everything_at("later.test"))
        .unwrap();

    let mut c = Client::greeted(env.server.relay);
    let body = "Message-ID: <expire@relay.test>\nSubject: expire\n\nbody\n";
    let id = queued_id(&c.send_mail("s@src.test", &["x@later.test"], body)).to_string();
    drop(c);
    let events = env.wait_for_event(&id, "x@later.test", "expired", Duration::from_secs(30));
    assert!(
        events.iter().any(|e| e["kind"] == "deferred"),
        "retried before expiring: {events:#?}"
    );

    let letters = env.cli_json(&["dlq", "list"]);
    let letter = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["envelope"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in the dead-letter store: {letters}"));
    assert!(
        letter["reason"].as_str().unwrap().contains("expired"),
        "{letter}"
    );

    env.sink
        .set_faults(Faults::default(), HashMap::new())
        .unwrap();
    let requeued = env.cli_json(&["dlq", "requeue", &id]);
    let new_id = requeued["requeued_as"].as_str().unwrap().to_string();
    env.wait_for_event(
        &new_id,
        "x@later.test",
        "delivered",
        Duration::from_secs(30),
    );
    assert_eq!(env.deliveries("<expire@relay.test>", "x@later.test"), 1);
    // The requeued letter left the store (the report of its expiry to its sender,
    // whose domain takes no mail here, may be there).
    let letters = env.cli_json(&["dlq", "list"]);
    assert!(
        letters["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["envelope"]["id"] != id.as_str()),
        "{letters}"
    );
}
