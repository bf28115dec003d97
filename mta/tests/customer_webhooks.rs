//! Customer webhooks on a running server, against a receiver of the test's own that
//! fails, times out and recovers: every event of the registered types reaches it,
//! signed (checked here with an independent HMAC), in the order it was recorded, a
//! failed batch retried whole under the same batch id; an endpoint where nothing
//! listens holds up neither delivery nor the other endpoint, its events go to dead
//! letters after `give_up_secs`, and once it listens, a redrive delivers them.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::http::{api_key, curl, send_batch};
use common::relay_env::RelayEnv;
use common::webhook_receiver::{self, Mode, Receiver, accepted_events};
use common::{free_port, run, wait_until};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A receiver on `port` of the test runtime, following `script`.
fn start_receiver(env: &RelayEnv, port: u16, script: Vec<Mode>) -> Receiver {
    webhook_receiver::start(&env.rt, port, script)
}

fn register(env: &RelayEnv, key: &str, url: &str, events: &[&str]) -> (String, String) {
    let body = json!({"url": url, "events": events}).to_string();
    let (status, created) = curl(
        env.server.http,
        key,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
        "/v1/webhooks",
    );
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

/// Checks `Postroad-Signature` as a receiver would, without Postroad's code.
fn signature_holds(header: &str, secret: &str, body: &str) -> bool {
    let mut t = "";
    let mut v1 = "";
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value,
            Some(("v1", value)) => v1 = value,
            _ => {}
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = t.parse::<u64>().is_ok_and(|t| now.abs_diff(t) < 300);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fresh && v1 == expected
}

#[test]
fn events_arrive_signed_and_in_order_through_failures_and_timeouts() {
    let env = RelayEnv::start(
        "",
        "[webhooks.delivery]\nallow_private_networks = true\ntimeout_secs = 2\n\
         retry_first_secs = 1\nretry_max_secs = 2\nmax_batch = 25\n",
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();
    let port = free_port();
    let seen = start_receiver(&env, port, vec![Mode::Fail, Mode::Fail, Mode::Hang]);
    let url = format!("http://127.0.0.1:{port}/hook");
    let (live, secret) = register(&env, key, &url, &["queued", "delivered"]);
    // An endpoint where nothing listens, for every event: it must hold up nothing.
    let nowhere = format!("http://127.0.0.1:{}/hook", free_port());
    let (dead, _) = register(&env, key, &nowhere, &[]);

    let messages: Vec<Value> = (0..30)
        .map(|i| {
            json!({"from": "news@src.test", "to": ["ann@fast.test", "bob@fast.test"],
                   "subject": format!("Hello {i}"), "text": "Hi."})
        })
        .collect();
    let ids = send_batch(env.server.http, key, &messages);
    for id in &ids {
        env.wait_for_event(id, "bob@fast.test", "delivered", WAIT);
    }
    // Every queued and delivered event of the history, and nothing else.
    let mut expected = HashSet::new();
    for id in &ids {
        for event in env.history(id) {
            if event["kind"] == "queued" || event["kind"] == "delivered" {
                let id = event["event_id"].as_str().unwrap().replace('-', "");
                expected.insert(id);
            }
        }
    }
    assert_eq!(expected.len(), 120);
    wait_until(
        "every event delivered to the endpoint",
        WAIT,
        || accepted_events(&seen).len() >= expected.len(),
        || env.server.log(),
    );
    let events = accepted_events(&seen);
    let got: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);

    // In the order recorded: each recipient's queued before its delivered.
    let mut position = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let key = (
            e["messageId"].as_str().unwrap().to_string(),
            e["recipient"].as_str().unwrap().to_string(),
            e["type"].as_str().unwrap().to_string(),
        );
        position.insert(key, i);
    }
    for id in &ids {
        for rcpt in ["ann@fast.test", "bob@fast.test"] {
            let at = |kind: &str| position[&(id.clone(), rcpt.to_string(), kind.to_string())];
            assert!(at("queued") < at("delivered"), "{id} {rcpt}");
        }
    }

    let seen = seen.lock().unwrap();
    let modes: Vec<Mode> = seen.requests.iter().map(|r| r.0).collect();
    assert_eq!(
        modes[..3],
        [Mode::Fail, Mode::Fail, Mode::Hang],
        "{modes:?}"
    );
    // The failed batch was tried again whole: the same batch id until it went through.
    let first_batch = &seen.requests[0].1;
    assert!(first_batch.starts_with(&live), "{first_batch}");
    assert!(
        seen.requests[..4].iter().all(|r| &r.1 == first_batch),
        "{:?}",
        &seen.requests[..4]
    );
    for (_, batch, signature, body) in &seen.requests {
        assert!(
            signature_holds(signature, &secret, body),
            "batch {batch}: {signature}"
        );
        assert!(!signature_holds(
            signature,
            &secret,
            &body.replace("fast.test", "fast.tesT")
        ));
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (&parsed["endpointId"], &parsed["batchId"]),
            (&json!(live), &json!(batch))
        );
        assert!(parsed["events"].as_array().unwrap().len() <= 25);
    }
    drop(seen);

    // The endpoint nobody answers has it all waiting; the live one nothing.
    let (_, list) = curl(env.server.http, key, &[], "/v1/webhooks");
    let counts: HashMap<&str, (u64, u64)> = list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap(),
                (
                    e["waiting"].as_u64().unwrap(),
                    e["deadLetters"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(counts[live.as_str()], (0, 0), "{list:#}");
    assert!(counts[dead.as_str()].0 >= 120, "{list:#}");
}

#[test]
fn a_dead_endpoint_is_given_up_on_and_its_dead_letters_redriven() {
    let env = RelayEnv::start(
        "",
        "[webhooks.delivery]\nallow_private_networks = true\ntimeout_secs = 2\n\
         retry_first_secs = 1\nretry_max_secs = 1\ngive_up_secs = 2\n",
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (id, secret) = register(&env, key, &url, &["delivered"]);
    let messages: Vec<Value> = (0..3)
        .map(|i| {
            json!({"from": "news@src.test", "to": "ann@fast.test",
                   "subject": format!("Hello {i}"), "text": "Hi."})
        })
        .collect();
    let ids = send_batch(env.server.http, key, &messages);
    for message in &ids {
        env.wait_for_event(message, "ann@fast.test", "delivered", WAIT);
    }
    let endpoint =
        |env: &RelayEnv| curl(env.server.http, key, &[], &format!("/v1/webhooks/{id}")).1;
    wait_until(
        "three dead letters",
        WAIT,
        || endpoint(&env)["deadLetters"] == 3,
        || env.server.log(),
    );
    assert_eq!(endpoint(&env)["waiting"], 0);
    let (status, page) = curl(
        env.server.http,
        key,
        &[],
        &format!("/v1/webhooks/{id}/dead-letters"),
    );
    assert_eq!(status, 200, "{page}");
    let letters = page["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 3, "{page:#}");
    // Dead letters keep the order the events were recorded in.
    let recorded: Vec<&str> = letters
        .iter()
        .map(|l| l["event"]["id"].as_str().unwrap())
        .collect();
    for letter in letters {
        assert_eq!(letter["event"]["type"], "delivered", "{letter:#}");
        let error = letter["error"].as_str().unwrap();
        assert!(error.to_lowercase().contains("connect"), "{error}");
    }
    // The operator's view: every tenant's endpoints and their dead letters.
    let config = env.server.config_path.to_str().unwrap();
    let (ok, out) = run(
        common::binary(),
        &["webhook", "list", "--json", "--config", config],
        None,
    );
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&listed[0]["id"], &listed[0]["dead_letters"]),
        (&json!(id), &json!(3))
    );
    let (ok, out) = run(
        common::binary(),
        &["webhook", "dead", &id, "--json", "--config", config],
        None,
    );
    assert!(ok && out.lines().count() == 3, "{out}");

    // Once it listens, a redrive sends them, in their order.
    let seen = start_receiver(&env, port, Vec::new());
    let (status, answer) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/webhooks/{id}/dead-letters/redrive"),
    );
    assert_eq!((status, &answer["requeued"]), (200, &json!(3)), "{answer}");
    wait_until(
        "the redriven events delivered",
        WAIT,
        || accepted_events(&seen).len() == 3,
        || env.server.log(),
    );
    let events = accepted_events(&seen);
    let order: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(order, recorded);
    let mut messages: Vec<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    messages.sort();
    let mut sent: Vec<&str> = ids.iter().map(String::as_str).collect();
    sent.sort();
    assert_eq!(messages, sent);
    let requests = &seen.lock().unwrap().requests;
    assert!(
        requests
            .iter()
            .all(|(_, _, sig, body)| signature_holds(sig, &secret, body))
    );
    assert_eq!(endpoint(&env)["deadLetters"], 0);
}

#[test]
fn queued_events_survive_a_crash_of_the_server() {
    let mut env = RelayEnv::start(
        "",
        "[webhooks.delivery]\nallow_private_networks = true\ntimeout_secs = 2\n\
         retry_first_secs = 1\nretry_max_secs = 1\n",
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim().to_string();
    let port = free_port();
    // Refuses everything until told otherwise.
    let seen = start_receiver(&env, port, vec![Mode::Fail; 100_000]);
    let url = format!("http://127.0.0.1:{port}/hook");
    let (id, _) = register(&env, &key, &url, &["delivered"]);
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            json!({"from": "news@src.test", "to": "ann@fast.test",
                   "subject": format!("Hello {i}"), "text": "Hi."})
        })
        .collect();
    let ids = send_batch(env.server.http, &key, &messages);
    let waiting = |env: &RelayEnv| {
        curl(env.server.http, &key, &[], &format!("/v1/webhooks/{id}")).1["waiting"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until(
        "all twenty deliveries waiting for the endpoint",
        WAIT,
        || waiting(&env) == 20,
        || env.server.log(),
    );
    env.server.kill();
    env.server.restart();
    seen.lock().unwrap().script.clear();
    wait_until(
        "the waiting events delivered after the restart",
        WAIT,
        || accepted_events(&seen).len() == 20,
        || env.server.log(),
    );
    let mut messages: Vec<String> = accepted_events(&seen)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    messages.sort();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(messages, sent);
    assert_eq!(waiting(&env), 0);
}
