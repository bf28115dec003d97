//! Suppression and customer webhooks with the Kafka backend, across processes sharing
//! MySQL: an ingress (the API: keys, the endpoint), a relay and a history process (which
//! reads the events topic into the history, the suppression list and the webhook
//! outbox, and delivers the webhooks). A hard bounce reaches the endpoint and lists the
//! address; the relay, another process, then suppresses the next message to it, and
//! that `suppressed` event reaches the endpoint too.

mod common;

use std::time::{Duration, Instant};

use common::http::{api_key, curl};
use common::kafka_env::{BROKER_PORT, KafkaEnv, wait_for_assignment};
use common::mariadb::MachineDatabase;
use common::webhook_receiver::{self, accepted_events};
use common::{Client, Server, free_port, queued_id, run, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// The event of `kind` for `rcpt` of message `id` the endpoint got, if any.
fn received(events: &[Value], id: &str, rcpt: &str, kind: &str) -> Option<Value> {
    events
        .iter()
        .find(|e| e["messageId"] == id && e["recipient"] == rcpt && e["type"] == kind)
        .cloned()
}

fn send(port: u16, rcpt: &str) -> String {
    let mut client = Client::greeted(port);
    let reply = client.send_mail("news@src.test", &[rcpt], "Subject: hi\r\n\r\nHi.\r\n");
    queued_id(&reply).to_string()
}

#[test]
fn the_history_process_lists_bounces_and_tells_the_endpoint_and_the_relay_obeys() {
    let env = KafkaEnv::start("suppress", BROKER_PORT, "tansu");
    let db = MachineDatabase::create(&format!("postroad_{}", env.prefix.replace('-', "_")));
    let shared = format!(
        "\n[history]\nbackend = \"mysql\"\nurl = \"{}\"\nflush_interval_ms = 50\n\n\
         [suppression]\nrefresh_secs = 1\n\n\
         [webhooks.delivery]\nallow_private_networks = true\nretry_first_secs = 1\nretry_max_secs = 1\n",
        db.url()
    );
    let config = |instance: &str| format!("{}{shared}", env.config(instance, ""));
    let migrate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(migrate.path(), config("migrate")).unwrap();
    let (ok, out) = run(
        common::binary(),
        &["migrate", "--config", migrate.path().to_str().unwrap()],
        None,
    );
    assert!(ok, "postroad migrate: {out}");

    let ingress = Server::start_with(&config("in-1"), &["--roles", "ingress"]);
    let key = api_key(&ingress, &["create", "--name", "app"]);
    let port = free_port();
    let seen = webhook_receiver::start(&env.rt, port, Vec::new());
    let body = json!({"url": format!("http://127.0.0.1:{port}/hook"),
                      "events": ["bounced", "suppressed"]})
    .to_string();
    let (status, created) = curl(
        ingress.http,
        key.trim(),
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
        "/v1/webhooks",
    );
    assert_eq!(status, 201, "{created}");
    // Started after the registration, so the history process knows the endpoint (it
    // reloads endpoints every few seconds otherwise).
    let relay = Server::start_with(&config("relay-1"), &["--roles", "relay"]);
    wait_for_assignment(&relay, 1);
    let history = Server::start_with(&config("history-1"), &["--roles", "history"]);
    history.wait_for_log("reading the events topic");
    let logs = || format!("history:\n{}\nrelay:\n{}", history.log(), relay.log());

    let first = send(ingress.relay, "permfail@d0.test");
    wait_until(
        "the bounce at the endpoint",
        WAIT,
        || {
            received(
                &accepted_events(&seen),
                &first,
                "permfail@d0.test",
                "bounced",
            )
            .is_some()
        },
        logs,
    );
    let ingress_config = ingress.config_path.to_str().unwrap().to_string();
    wait_until(
        "the bounced address listed",
        WAIT,
        || {
            run(
                common::binary(),
                &[
                    "suppression",
                    "show",
                    "permfail@d0.test",
                    "--config",
                    &ingress_config,
                ],
                None,
            )
            .0
        },
        logs,
    );
    // The relay, another process, reads the list within its refresh: mail sent from
    // now on is suppressed at the latest on the second try.
    let deadline = Instant::now() + WAIT;
    let suppressed = loop {
        let id = send(ingress.relay, "permfail@d0.test");
        let outcome = loop {
            let events = accepted_events(&seen);
            if let Some(e) = received(&events, &id, "permfail@d0.test", "suppressed") {
                break Some(e);
            }
            if received(&events, &id, "permfail@d0.test", "bounced").is_some() {
                break None;
            }
            assert!(
                Instant::now() < deadline,
                "no outcome for {id}:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(event) = outcome {
            break event;
        }
    };
    assert_eq!(suppressed["reason"], "hard-bounce", "{suppressed:#}");
    assert_eq!(suppressed["reply"]["enhanced"], "5.7.1", "{suppressed:#}");
}
