//! Delivery through HTTP providers on a running server: Amazon SES v2 through moto's
//! server (sender identities verified with boto3 first, sent mail read back from
//! moto's data), SendGrid v3 through a stand-in that checks every request against
//! SendGrid's documented schema; and routing with a fallback: SendGrid failing with
//! 500 sends the mail out through SES, each message once, none lost, while SendGrid's
//! circuit opens; and a `high` message sent after a bulk backlog that waits for a
//! provider's one request slot takes the next free one.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::relay_env::RelayEnv;
use common::sendgrid::SendGridRecorder;
use common::{Client, queued_id, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn ses_section(moto: &Moto) -> String {
    format!(
        "[relay.providers.ses]\nkind = \"ses\"\nregion = \"us-east-1\"\n\
         endpoint = \"http://127.0.0.1:{}\"\naccess_key_id = \"testing\"\n\
         secret_access_key = \"testing\"\n",
        moto.port
    )
}

fn sendgrid_section(name: &str, recorder: &SendGridRecorder, key: &str, extra: &str) -> String {
    format!(
        "[relay.providers.{name}]\nkind = \"sendgrid\"\nendpoint = \"http://127.0.0.1:{}\"\n\
         api_key = \"{key}\"\n{extra}",
        recorder.port
    )
}

/// Sends one message; its queue id.
fn send(env: &RelayEnv, from: &str, to: &[&str], body: &str) -> String {
    let mut client = Client::greeted(env.server.relay);
    queued_id(&client.send_mail(from, to, body)).to_string()
}

fn event<'a>(events: &'a [Value], recipient: &str, kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["recipient"] == recipient && e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event for {recipient}: {events:#?}"))
}

fn providers(env: &RelayEnv) -> Vec<Value> {
    let list = env.cli_json(&["queue", "providers"]);
    list["providers"].as_array().cloned().unwrap_or_default()
}

fn provider_state(env: &RelayEnv, name: &str) -> String {
    providers(env)
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["state"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no provider {name}: {:#?}", providers(env)))
}

#[test]
fn ses_sends_the_signed_raw_message_and_its_id_reaches_the_history() {
    let moto = Moto::launch();
    moto.ses_verify(&["news@src.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = common::dkim_keys::key(dir.path(), false);
    let extra = format!(
        "{}\n[[relay.routing]]\ndomains = [\"fast.test\"]\nvia = [\"ses\"]\n\n\
         [[dkim]]\ndomain = \"src.test\"\nselector = \"s1\"\nkey_file = \"{key}\"\n",
        ses_section(&moto)
    );
    let env = RelayEnv::start("", &extra);

    let body = "Message-ID: <ses.1@src.test>\r\nFrom: News <news@src.test>\r\nTo: ann@fast.test\r\n\
                Subject: Via SES\r\n\r\nHello.\r\n";
    let id = send(
        &env,
        "bounces@src.test",
        &["ann@fast.test", "bob@fast.test"],
        body,
    );
    env.wait_for_event(&id, "ann@fast.test", "delivered", WAIT);
    let events = env.wait_for_event(&id, "bob@fast.test", "delivered", WAIT);

    let sent = moto.ses_sent();
    assert_eq!(sent.len(), 1, "one request for both recipients: {sent:#?}");
    let raw = sent[0]["raw_data"].as_str().unwrap();
    assert!(raw.contains("Subject: Via SES"), "{raw}");
    assert!(
        raw.contains("DKIM-Signature:") && raw.contains("d=src.test"),
        "signed before the send: {raw}"
    );
    let destinations = sent[0]["destinations"].as_array().unwrap();
    for rcpt in ["ann@fast.test", "bob@fast.test"] {
        assert!(destinations.iter().any(|d| d == rcpt), "{sent:#?}");
        let delivered = event(&events, rcpt, "delivered");
        assert_eq!(
            delivered["provider_message_id"], sent[0]["id"],
            "{delivered}"
        );
        assert!(
            delivered["remote_host"]
                .as_str()
                .unwrap()
                .starts_with("ses [127.0.0.1:"),
            "{delivered}"
        );
        assert_eq!(
            env.deliveries("<ses.1@src.test>", rcpt),
            0,
            "not sent by SMTP too"
        );
    }

    // A sender SES has not verified: MessageRejected, a bounce (not retried).
    let stranger = "Message-ID: <ses.2@else.test>\r\nFrom: someone@else.test\r\n\
                    Subject: Unverified\r\n\r\nHello.\r\n";
    let id = send(&env, "someone@else.test", &["cat@fast.test"], stranger);
    let events = env.wait_for_event(&id, "cat@fast.test", "bounced", WAIT);
    let bounced = event(&events, "cat@fast.test", "bounced");
    assert_eq!(bounced["reply"]["enhanced"], "5.7.1", "{bounced}");
    assert!(
        bounced["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("MessageRejected"),
        "{bounced}"
    );
    assert_eq!(moto.ses_sent().len(), 1);
    assert_eq!(provider_state(&env, "ses"), "normal");
}

#[test]
fn sendgrid_gets_documented_json_and_a_refused_key_pauses_it() {
    let recorder = SendGridRecorder::start("SG.right-key");
    let extra = format!(
        "{}\n{}\n[[relay.routing]]\ndomains = [\"fast.test\"]\nvia = [\"sendgrid\"]\n\n\
         [[relay.routing]]\ndomains = [\"later.test\"]\nvia = [\"sendgrid-old\"]\n",
        sendgrid_section("sendgrid", &recorder, "SG.right-key", ""),
        sendgrid_section(
            "sendgrid-old",
            &recorder,
            "SG.revoked-key",
            "pause_secs = 600\n"
        ),
    );
    let env = RelayEnv::start("", &extra);

    let body = "Message-ID: <sg.1@src.test>\r\nFrom: \"Shop\" <shop@src.test>\r\nTo: Customers <list@src.test>\r\n\
                Subject: Your receipt\r\nList-Unsubscribe: <mailto:u@src.test>\r\nMIME-Version: 1.0\r\n\
                Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
                --m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
                --a\r\nContent-Type: text/plain\r\n\r\nThanks.\r\n\
                --a\r\nContent-Type: text/html\r\n\r\n<p>Thanks.</p>\r\n--a--\r\n\
                --m\r\nContent-Type: text/csv; name=\"items.csv\"\r\n\
                Content-Disposition: attachment; filename=\"items.csv\"\r\n\r\nsku,qty\r\n1,2\r\n--m--\r\n";
    let to = ["ann@fast.test", "bob@fast.test", "cat@fast.test"];
    let id = send(&env, "bounces@src.test", &to, body);
    let mut events = Vec::new();
    for rcpt in to {
        events = env.wait_for_event(&id, rcpt, "delivered", WAIT);
    }
    let requests = recorder.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(
        request["status"], 202,
        "the stand-in found it valid: {request:#}"
    );
    let sent = &request["body"];
    let people: Vec<&str> = sent["personalizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["to"][0]["email"].as_str().unwrap())
        .collect();
    assert_eq!(people, to, "one personalization per recipient");
    assert_eq!(sent["from"]["email"], "shop@src.test");
    assert_eq!(sent["subject"], "Your receipt");
    assert_eq!(sent["content"][0]["type"], "text/plain");
    assert_eq!(sent["content"][1]["type"], "text/html");
    assert_eq!(sent["attachments"][0]["filename"], "items.csv");
    assert_eq!(sent["headers"]["List-Unsubscribe"], "<mailto:u@src.test>");
    assert_eq!(sent["custom_args"]["postroad_message_id"], id.as_str());
    for rcpt in to {
        let delivered = event(&events, rcpt, "delivered");
        assert_eq!(
            delivered["provider_message_id"], request["message_id"],
            "{delivered}"
        );
    }

    // The other account's key is refused (401): that provider pauses, the mail waits
    // (deferred, not bounced).
    let id = send(&env, "bounces@src.test", &["dan@later.test"], body);
    let events = env.wait_for_event(&id, "dan@later.test", "deferred", WAIT);
    assert!(events.iter().all(|e| e["kind"] != "bounced"), "{events:#?}");
    let deferred = event(&events, "dan@later.test", "deferred");
    assert!(
        deferred["reply"]["text"].as_str().unwrap().contains("401"),
        "{deferred}"
    );
    assert_eq!(provider_state(&env, "sendgrid-old"), "paused");
    assert_eq!(provider_state(&env, "sendgrid"), "normal");
    // The retry (a second later) finds it paused and sends nothing.
    let deferrals = || {
        env.history(&id)
            .iter()
            .filter(|e| e["kind"] == "deferred")
            .count()
    };
    wait_until(
        "a second deferral",
        WAIT,
        || deferrals() >= 2,
        || env.server.log(),
    );
    let refused: Vec<Value> = recorder
        .requests()
        .into_iter()
        .filter(|r| r["authorized"] == false)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["status"], 401);
}

#[test]
fn sendgrid_failing_sends_through_ses_each_message_once_and_opens_its_circuit() {
    let recorder = SendGridRecorder::start("SG.key");
    recorder.answer(500, &[]);
    let moto = Moto::launch();
    moto.ses_verify(&["news@src.test"]);
    let extra = format!(
        "{}\n{}\n[[relay.routing]]\ndomains = [\"fast.test\"]\nvia = [\"sendgrid\", \"ses\"]\n",
        sendgrid_section(
            "sendgrid",
            &recorder,
            "SG.key",
            "max_concurrency = 2\ncircuit_failures = 3\ncircuit_open_secs = 600\n"
        ),
        ses_section(&moto),
    );
    let env = RelayEnv::start("", &extra);

    const MESSAGES: usize = 20;
    let to = ["ann@fast.test", "bob@fast.test", "cat@fast.test"];
    let mut ids = Vec::new();
    let mut client = Client::greeted(env.server.relay);
    for n in 0..MESSAGES {
        let body = format!(
            "Message-ID: <fail.{n}@src.test>\r\nFrom: news@src.test\r\nTo: team@src.test\r\n\
             Subject: Failover {n}\r\n\r\nHello.\r\n"
        );
        ids.push(queued_id(&client.send_mail("bounces@src.test", &to, &body)).to_string());
    }
    for id in &ids {
        for rcpt in to {
            let events = env.wait_for_event(id, rcpt, "delivered", WAIT);
            let delivered = event(&events, rcpt, "delivered");
            assert!(
                delivered["remote_host"]
                    .as_str()
                    .unwrap()
                    .starts_with("ses ["),
                "{delivered}"
            );
            assert!(delivered["provider_message_id"].is_string(), "{delivered}");
        }
    }

    // SES sent each message once, to all of its recipients.
    let sent = moto.ses_sent();
    assert_eq!(sent.len(), MESSAGES, "{sent:#?}");
    for n in 0..MESSAGES {
        let marker = format!("Message-ID: <fail.{n}@src.test>");
        let copies: Vec<&Value> = sent
            .iter()
            .filter(|m| m["raw_data"].as_str().unwrap().contains(&marker))
            .collect();
        assert_eq!(copies.len(), 1, "{marker}: {copies:#?}");
        for rcpt in to {
            assert!(
                copies[0]["destinations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d == rcpt),
                "{marker} to {rcpt}: {copies:#?}"
            );
        }
    }
    // SendGrid accepted nothing, and once 3 requests in a row had failed its circuit
    // opened: at most the one other request in flight then was sent after.
    let requests = recorder.requests();
    assert!(requests.iter().all(|r| r["status"] == 500), "{requests:#?}");
    assert!(
        (3..=4).contains(&requests.len()),
        "{} requests to a failing SendGrid",
        requests.len()
    );
    assert_eq!(provider_state(&env, "sendgrid"), "open");
    let metrics = env.metrics();
    assert!(
        metrics.contains("postroad_fallovers_total{to=\"ses\"}"),
        "{metrics}"
    );
}

#[test]
fn a_high_message_overtakes_a_bulk_backlog_waiting_for_a_providers_quota() {
    let recorder = SendGridRecorder::start("SG.right-key");
    // One request at a time, ten a second: 60 bulk messages take six seconds.
    let extra = format!(
        "{}\n[[relay.routing]]\ndomains = [\"fast.test\"]\nvia = [\"sendgrid\"]\n",
        sendgrid_section(
            "sendgrid",
            &recorder,
            "SG.right-key",
            "max_concurrency = 1\nmax_message_rate = \"10/s\"\n"
        ),
    );
    let env = RelayEnv::start("", &extra);
    let mut client = Client::greeted(env.server.relay);
    let message = |to: &str, priority: &str| {
        format!(
            "From: shop@src.test\r\nTo: {to}\r\nX-Postroad-Priority: {priority}\r\n\
             Subject: {priority}\r\n\r\nHello.\r\n"
        )
    };
    const BULK: usize = 60;
    for n in 0..BULK {
        let to = format!("reader{n}@fast.test");
        client.send_mail("news@src.test", &[&to], &message(&to, "bulk"));
    }
    let id = queued_id(&client.send_mail(
        "shop@src.test",
        &["urgent@fast.test"],
        &message("urgent@fast.test", "high"),
    ))
    .to_string();
    env.wait_for_event(&id, "urgent@fast.test", "delivered", WAIT);
    wait_until(
        "every message sent through the provider",
        Duration::from_secs(60),
        || recorder.requests().len() > BULK,
        || env.server.log(),
    );
    let order: Vec<String> = recorder
        .requests()
        .iter()
        .map(|r| r["body"]["personalizations"][0]["to"][0]["email"].to_string())
        .collect();
    let at = order
        .iter()
        .position(|to| to.contains("urgent@"))
        .unwrap_or_else(|| panic!("{order:?}"));
    // In arrival order it would be the last; it takes the next free request slot.
    assert!(
        BULK - at > BULK / 4,
        "the high message was request {at} of {}: {order:?}",
        order.len()
    );
}
