//! The suppression list on a running server: a hard bounce lists its address; the next
//! message to it, by HTTP (whose answer names it) or by SMTP (taken, `250`), is not
//! sent to it: the recipient gets a `suppressed` event while the others are delivered;
//! taken off the list by the API, the address gets mail again. Operators keep the list
//! with `postroad suppression` (import with bad rows named by line, export, list,
//! show, remove), and with `reject_at_rcpt` a listed recipient is refused at RCPT.

mod common;

use std::time::Duration;

use common::http::{api_key, curl, post_json, send_batch};
use common::relay_env::RelayEnv;
use common::{Client, queued_id, run, swaks, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// `postroad suppression ARGS` with the server's config: (success, output).
fn suppression(env: &RelayEnv, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut all = vec!["suppression"];
    all.extend_from_slice(args);
    all.extend(["--config", env.server.config_path.to_str().unwrap()]);
    run(common::binary(), &all, stdin)
}

fn kinds_for(events: &[Value], rcpt: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["recipient"] == rcpt)
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_hard_bounce_keeps_later_mail_from_the_address_until_it_is_taken_off() {
    let env = RelayEnv::start("", "[suppression]\nrefresh_secs = 1\n");
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let key = key.trim();
    let message = json!({"from": "news@src.test", "to": ["permfail@fast.test", "ann@fast.test"],
                         "subject": "Hello", "text": "Hi."});
    let first = &send_batch(env.server.http, key, std::slice::from_ref(&message))[0];
    env.wait_for_event(first, "permfail@fast.test", "bounced", WAIT);

    // The bounce (550 5.1.1: the address does not exist) lists the address.
    let mut shown = String::new();
    wait_until(
        "the bounced address listed",
        WAIT,
        || {
            let (ok, out) = suppression(&env, &["show", "permfail@fast.test"], None);
            shown = out;
            ok
        },
        || env.server.log(),
    );
    let entry: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (&entry["reason"], &entry["source"]),
        (&json!("hard-bounce"), &json!("bounce")),
        "{entry:#}"
    );
    assert!(entry.get("expires_at").is_none(), "{entry:#}");

    // By HTTP: the answer names the listed recipient; it is not sent to.
    let (status, answer) = post_json(env.server.http, key, "/v1/messages", &message);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["suppressed"],
        json!([{"address": "permfail@fast.test", "reason": "hard-bounce"}]),
        "{answer}"
    );
    let second = answer["id"].as_str().unwrap();
    env.wait_for_event(second, "ann@fast.test", "delivered", WAIT);
    let events = env.wait_for_event(second, "permfail@fast.test", "suppressed", WAIT);
    assert_eq!(
        kinds_for(&events, "permfail@fast.test"),
        ["queued", "suppressed"]
    );
    let suppressed = events.iter().find(|e| e["kind"] == "suppressed").unwrap();
    assert_eq!(suppressed["reason"], "hard-bounce", "{suppressed:#}");
    assert_eq!(suppressed["reply"]["enhanced"], "5.7.1", "{suppressed:#}");

    // By SMTP: taken (250), then suppressed the same way.
    let mut client = Client::greeted(env.server.relay);
    let reply = client.send_mail(
        "news@src.test",
        &["permfail@fast.test"],
        "Subject: again\r\n\r\nHi.\r\n",
    );
    let id = queued_id(&reply).to_string();
    env.wait_for_event(&id, "permfail@fast.test", "suppressed", WAIT);
    let history = env.history_json(&["--message-id", &id]);
    assert_eq!(
        history["recipients"][0]["status"], "suppressed",
        "{history:#}"
    );

    // Taken off by the API (of the tenant-less key: the SMTP mail's list too).
    let (status, _) = curl(
        env.server.http,
        key,
        &["-X", "DELETE"],
        "/v1/suppressions/PermFail@fast.test",
    );
    assert_eq!(status, 204);
    let (status, _) = curl(
        env.server.http,
        key,
        &[],
        "/v1/suppressions/permfail@fast.test",
    );
    assert_eq!(status, 404);
    let third = &send_batch(env.server.http, key, &[message])[0];
    let events = env.wait_for_event(third, "permfail@fast.test", "bounced", WAIT);
    assert!(
        !kinds_for(&events, "permfail@fast.test").contains(&"suppressed".to_string()),
        "{events:#?}"
    );
    assert!(env.metrics().contains("postroad_suppressions_added_total"));
}

#[test]
fn operators_import_export_and_refuse_listed_recipients_at_rcpt() {
    let env = RelayEnv::start(
        "",
        "[suppression]\nrefresh_secs = 1\nreject_at_rcpt = true\n",
    );
    let csv = "address,reason,detail,expires_at\n\
               Ann@Fast.test,complaint,FBL report,\n\
               not-an-address,manual,,\n\
               bob@fast.test,,,2999-01-01T00:00:00Z\n\
               cy@fast.test,grumpy,,\n";
    let (ok, out) = suppression(&env, &["import", "-"], Some(csv.as_bytes()));
    assert!(!ok, "bad rows must fail the import: {out}");
    assert!(
        out.contains("-:3: an address is local-part@domain"),
        "{out}"
    );
    assert!(out.contains("-:5: reason \"grumpy\""), "{out}");
    assert!(out.contains("imported 2; 2 bad rows skipped"), "{out}");

    let (ok, out) = suppression(&env, &["list", "--json"], None);
    assert!(ok, "{out}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("ann@fast.test", "complaint"), ("bob@fast.test", "manual")]
    );
    assert_eq!(rows[1]["expires_at"], "2999-01-01T00:00:00.000Z");

    let (ok, exported) = suppression(&env, &["export"], None);
    assert!(ok, "{exported}");
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(
        lines[0],
        "address,reason,source,detail,created_at,expires_at"
    );
    assert!(
        lines[1].starts_with("ann@fast.test,complaint,import,FBL report,"),
        "{exported}"
    );
    assert_eq!(lines.len(), 3, "{exported}");
    // What was exported imports again (into another tenant's list).
    let (ok, out) = suppression(
        &env,
        &["import", "-", "--tenant", "acme"],
        Some(exported.as_bytes()),
    );
    assert!(ok, "{out}");
    let (ok, out) = suppression(&env, &["show", "bob@fast.test", "--tenant", "acme"], None);
    assert!(ok && out.contains("\"manual\""), "{out}");

    // The running server learns of the list within its refresh and refuses at RCPT.
    let port = env.server.relay.to_string();
    wait_until(
        "a listed recipient refused at RCPT",
        WAIT,
        || {
            !swaks(
                &port,
                &[
                    "--from",
                    "news@src.test",
                    "--to",
                    "ann@fast.test",
                    "--hide-all",
                ],
            )
            .0
        },
        || env.server.log(),
    );
    let mut client = Client::greeted(env.server.relay);
    client.expect("EHLO client.test", 250);
    client.expect("MAIL FROM:<news@src.test>", 250);
    let reply = client.cmd("RCPT TO:<ANN@fast.test>");
    assert_eq!(reply.code, 550, "{reply}");
    assert!(reply.to_string().contains("5.7.1"), "{reply}");
    assert!(
        reply.to_string().contains("suppression list (complaint)"),
        "{reply}"
    );
    client.expect("RCPT TO:<dee@fast.test>", 250);

    // Removed by the command line: mail goes again.
    let (ok, out) = suppression(&env, &["remove", "ann@fast.test", "nobody@fast.test"], None);
    assert!(!ok && out.contains("removed ann@fast.test"), "{out}");
    assert!(out.contains("nobody@fast.test is not listed"), "{out}");
    wait_until(
        "a removed recipient taken again",
        WAIT,
        || {
            swaks(
                &port,
                &[
                    "--from",
                    "news@src.test",
                    "--to",
                    "ann@fast.test",
                    "--hide-all",
                ],
            )
            .0
        },
        || env.server.log(),
    );
    let (ok, _) = suppression(&env, &["show", "ann@fast.test"], None);
    assert!(!ok);
}
