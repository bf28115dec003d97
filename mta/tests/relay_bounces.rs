//! Return paths and reports on a running server with `[bounces] domains`: each copy
//! of a message leaves in a transaction of its own with a VERP return path at the
//! bounce domain; a DSN sent back to one of them by swaks, from a client that may not
//! relay, is taken (never relayed) and becomes a `bounced` event of that recipient
//! with the classifier's reason and the remote's reply, in the history, while the
//! other recipient stays delivered (until its own report comes by `POST /v1/inbound`); a report with a made-up return path records
//! nothing; a report address opens no relaying to other domains.

mod common;

use std::time::Duration;

use common::http::{api_key, send_batch};
use common::relay_env::RelayEnv;
use common::{Client, swaks, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn dsn(to: &str, rcpt: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.fast.test\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.fast.test\r\n\r\n\
Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table\r\n\r\n\
--b--\r\n"
    )
}

#[test]
fn copies_leave_with_return_paths_and_reports_to_them_become_bounces() {
    // Loopback may not relay here: only the bounce domain is open to it.
    let env = RelayEnv::start(
        "",
        "[bounces]\ndomains = [\"bounce.src.test\"]\nsecret = \"a test secret of 16+ bytes\"\n\n\
         [smtp]\nrelay_networks = [\"10.99.0.0/16\"]\n",
    );
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let ids = send_batch(
        env.server.http,
        key.trim(),
        &[
            json!({"from": "news@src.test", "to": ["ann@fast.test", "bob@fast.test"],
                 "subject": "Hello", "text": "Hi.",
                 "headers": {"Message-ID": "<verp.1@src.test>"}}),
        ],
    );
    let id = &ids[0];
    env.wait_for_event(id, "ann@fast.test", "delivered", WAIT);
    env.wait_for_event(id, "bob@fast.test", "delivered", WAIT);

    // One transaction per copy, each with its own return path at the bounce domain.
    let copies: Vec<_> = env
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.message_id.as_deref() == Some("<verp.1@src.test>"))
        .collect();
    assert_eq!(copies.len(), 2, "{copies:#?}");
    let mut paths = Vec::new();
    for copy in &copies {
        assert_eq!(copy.recipients.len(), 1, "{copy:#?}");
        assert!(
            copy.mail_from.starts_with("bounces+") && copy.mail_from.ends_with("@bounce.src.test"),
            "{}",
            copy.mail_from
        );
        paths.push((copy.recipients[0].clone(), copy.mail_from.clone()));
    }
    assert_ne!(paths[0].1, paths[1].1);
    let bob_path = &paths.iter().find(|(r, _)| r == "bob@fast.test").unwrap().1;

    // Bob's server sends a DSN back to the return path, from the outside.
    let port = env.server.relay.to_string();
    let report = dsn(bob_path, "bob@fast.test");
    let (ok, out) = swaks(
        &port,
        &[
            "--from",
            "",
            "--to",
            bob_path,
            "--data",
            &report,
            "--hide-all",
        ],
    );
    assert!(ok, "{out}");
    let events = env.wait_for_event(id, "bob@fast.test", "bounced", WAIT);
    let bounced = events
        .iter()
        .find(|e| e["kind"] == "bounced" && e["recipient"] == "bob@fast.test")
        .unwrap();
    assert_eq!(bounced["reason"], "userunknown", "{bounced:#}");
    assert_eq!(bounced["reply"]["code"], 550, "{bounced:#}");
    assert_eq!(bounced["reply"]["enhanced"], "5.1.1", "{bounced:#}");
    let history = env.history_json(&["--message-id", id]);
    let status = |rcpt: &str| {
        history["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["recipient"] == rcpt)
            .map(|r| (r["status"].clone(), r["reason"].clone()))
            .unwrap()
    };
    assert_eq!(
        status("bob@fast.test"),
        (json!("bounced"), json!("userunknown"))
    );
    // The same kind of report posted over HTTP (POST /v1/inbound), for ann.
    let ann_path = &paths.iter().find(|(r, _)| r == "ann@fast.test").unwrap().1;
    let (status, answer) = common::http::curl(
        env.server.http,
        key.trim(),
        &[
            "-H",
            "Content-Type: message/rfc822",
            "--data-binary",
            &dsn(ann_path, "ann@fast.test"),
        ],
        "/v1/inbound",
    );
    assert_eq!(
        (status, answer["recorded"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    env.wait_for_event(id, "ann@fast.test", "bounced", WAIT);

    // The report itself went nowhere.
    assert!(
        env.sink
            .messages()
            .iter()
            .all(|m| !m.recipients.iter().any(|r| r.ends_with("@bounce.src.test"))),
        "a report was relayed"
    );

    // A made-up return path: taken (no backscatter), nothing recorded.
    let mut forged = bob_path.clone().into_bytes();
    let last = forged.iter().position(|b| *b == b'@').unwrap() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let mut client = Client::greeted(env.server.relay);
    let reply = client.send_mail("", &[&forged], &dsn(&forged, "bob@fast.test"));
    assert_eq!(reply.code, 250, "{reply}");
    assert!(reply.to_string().contains("0 events recorded"), "{reply}");

    // A report address opens nothing else: this client still may not relay.
    client.expect("RSET", 250);
    client.expect("MAIL FROM:<>", 250);
    client.expect(&format!("RCPT TO:<{bob_path}>"), 250);
    let denied = client.cmd("RCPT TO:<someone@fast.test>");
    assert_eq!(denied.code, 554, "{denied}");

    let metrics = env.metrics();
    wait_until(
        "the report counters",
        WAIT,
        || {
            env.metrics()
                .contains("postroad_reports_total{kind=\"bounce\",result=\"recorded\"} 2")
        },
        || metrics.clone(),
    );
}

#[test]
fn a_report_and_other_mail_go_in_transactions_of_their_own() {
    // Loopback may relay here.
    let env = RelayEnv::start(
        "",
        "[bounces]\ndomains = [\"bounce.src.test\"]\nsecret = \"a test secret of 16+ bytes\"\n",
    );
    let mut client = Client::greeted(env.server.relay);
    client.expect("EHLO client.test", 250);
    for (first, second) in [
        ("someone@fast.test", "bounces+x@bounce.src.test"),
        ("fbl@bounce.src.test", "someone@fast.test"),
    ] {
        client.expect("MAIL FROM:<a@src.test>", 250);
        client.expect(&format!("RCPT TO:<{first}>"), 250);
        let mixed = client.cmd(&format!("RCPT TO:<{second}>"));
        assert_eq!(
            (mixed.code, mixed.enhanced.map(|e| e.to_string())),
            (452, Some("4.5.3".into())),
            "{mixed}"
        );
        client.expect("RSET", 250);
    }
}
