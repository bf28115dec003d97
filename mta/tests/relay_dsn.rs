//! Delivery status notifications on a running server: mail taken over SMTP that bounces
//! brings its sender an RFC 3464 report (null sender, the DSN fields of the recipient
//! with its ORCPT and the transaction's ENVID, the original's headers), which the
//! bounce classifier reads back as the bounce it is; NOTIFY=SUCCESS brings a report of
//! the delivery; NOTIFY=NEVER and mail from the HTTP API bring none; a report that
//! bounces itself is never reported on.

mod common;

use std::time::Duration;

use common::http::{api_key, send_batch};
use common::relay_env::RelayEnv;
use common::{Client, queued_id, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The reports the sink received for `to` (null sender), as text.
fn reports_to(env: &RelayEnv, to: &str) -> Vec<String> {
    env.sink
        .messages()
        .into_iter()
        .filter(|m| m.mail_from.is_empty() && m.recipients.iter().any(|r| r == to))
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect()
}

fn dsn_sent(env: &RelayEnv) -> u64 {
    env.metrics()
        .lines()
        .find(|l| l.starts_with("postroad_dsn_sent_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_bounce_brings_its_sender_a_report_and_notify_chooses_which() {
    // permfail@fast.test bounces several times here: the suppression list would hold
    // the later messages back (see relay_suppression.rs), so it is kept by hand only.
    let env = RelayEnv::start("", "[suppression]\nfrom_events = false\n");
    let mut client = Client::greeted(env.server.relay);
    client.expect("EHLO client.test", 250);
    client.expect("MAIL FROM:<app@fast.test> RET=HDRS ENVID=QQ314159", 250);
    client.expect(
        "RCPT TO:<permfail@fast.test> NOTIFY=FAILURE ORCPT=rfc822;Permfail+2BOrig@fast.test",
        250,
    );
    client.expect("RCPT TO:<ok@fast.test> NOTIFY=SUCCESS", 250);
    client.expect("RCPT TO:<permfail+quiet@fast.test> NOTIFY=NEVER", 250);
    client.expect("DATA", 354);
    client.send_raw(
        b"Message-ID: <dsn.1@fast.test>\r\nSubject: Hello there\r\n\r\nThe body.\r\n.\r\n",
    );
    let id = queued_id(&client.reply()).to_string();
    env.wait_for_event(&id, "permfail@fast.test", "bounced", WAIT);
    env.wait_for_event(&id, "ok@fast.test", "delivered", WAIT);

    wait_until(
        "two reports for app@fast.test",
        WAIT,
        || reports_to(&env, "app@fast.test").len() >= 2,
        || env.server.log(),
    );
    let reports = reports_to(&env, "app@fast.test");
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let failure = reports
        .iter()
        .find(|r| r.contains("Action: failed"))
        .expect("a failure report");
    for needle in [
        "Subject: Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status",
        "Auto-Submitted: auto-replied",
        "Original-Envelope-Id: QQ314159",
        "Final-Recipient: rfc822; permfail@fast.test",
        "Original-Recipient: rfc822; Permfail+Orig@fast.test",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1",
        "Content-Type: text/rfc822-headers",
        "Subject: Hello there",
    ] {
        assert!(failure.contains(needle), "{needle}:\n{failure}");
    }
    assert!(
        !failure.contains("The body."),
        "RET=HDRS returns the headers only"
    );
    assert!(
        !failure.contains("permfail+quiet"),
        "NOTIFY=NEVER is not reported on"
    );
    // The classifier reads our report as the bounce it is.
    let read = postroad_bounce::analyse(failure.as_bytes());
    assert_eq!(read.recipients.len(), 1, "{read:?}");
    assert_eq!(read.recipients[0].recipient, "permfail@fast.test");
    assert_eq!(read.recipients[0].reason.as_str(), "userunknown");
    let success = reports
        .iter()
        .find(|r| r.contains("Action: delivered"))
        .expect("a success report");
    assert!(
        success.contains("Final-Recipient: rfc822; ok@fast.test"),
        "{success}"
    );
    assert!(success.contains("Status: 2.0.0"), "{success}");

    // Mail from the HTTP API: the application has the history and webhooks.
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let ids = send_batch(
        env.server.http,
        key.trim(),
        &[
            json!({"from": "api@fast.test", "to": ["permfail@fast.test"], "subject": "x", "text": "y"}),
        ],
    );
    env.wait_for_event(&ids[0], "permfail@fast.test", "bounced", WAIT);

    // A report that bounces itself: its sender is the null sender, nobody to tell.
    let mut client = Client::greeted(env.server.relay);
    let reply = client.send_mail(
        "permfail+sender@fast.test",
        &["permfail@fast.test"],
        "Subject: loop?\r\n\r\nx\r\n",
    );
    let looped = queued_id(&reply).to_string();
    env.wait_for_event(&looped, "permfail@fast.test", "bounced", WAIT);
    wait_until(
        "the third report queued",
        WAIT,
        || dsn_sent(&env) >= 3,
        || env.server.log(),
    );
    // The report to permfail+sender bounced (recorded after any report about it would
    // have been queued): no report about the report.
    wait_until(
        "the report to permfail+sender bounced",
        WAIT,
        || {
            env.history_json(&["--recipient", "permfail+sender@fast.test"])["rows"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["status"] == "bounced"))
        },
        || env.server.log(),
    );
    assert_eq!(dsn_sent(&env), 3, "{}", env.metrics());
    assert!(reports_to(&env, "api@fast.test").is_empty());
}
