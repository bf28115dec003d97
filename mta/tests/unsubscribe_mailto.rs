//! The `mailto:` of `List-Unsubscribe` on a running server with tracking and a bounce
//! domain: a bulk message carries `<mailto:unsubscribe@BOUNCE?subject=TOKEN>`; mail
//! a reader's client sends to it (swaks, from outside, with the subject as the
//! mailto says, or after `Re:`) puts that reader on the suppression list and records
//! an `unsubscribed` event in the history, like the one-click POST; mail to it
//! without a valid token (none, or one changed) is refused and unsubscribes no one.

mod common;

use std::time::Duration;

use common::http::{api_key, post_json};
use common::relay_env::RelayEnv;
use common::{run, swaks, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The subject the `mailto:` of the message to `rcpt` asks for.
fn mailto_subject(env: &RelayEnv, rcpt: &str) -> String {
    let find = || {
        env.sink
            .messages()
            .into_iter()
            .find(|m| m.recipients.iter().any(|r| r == rcpt))
    };
    wait_until(
        &format!("mail for {rcpt} delivered"),
        WAIT,
        || find().is_some(),
        || env.server.log(),
    );
    let text = String::from_utf8_lossy(&find().unwrap().data).to_string();
    text.split("<mailto:unsubscribe@bounce.src.test?subject=")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or_else(|| panic!("no mailto in {text}"))
        .to_string()
}

fn suppression(env: &RelayEnv, address: &str) -> (bool, String) {
    run(
        common::binary(),
        &[
            "suppression",
            "show",
            address,
            "--config",
            env.server.config_path.to_str().unwrap(),
        ],
        None,
    )
}

/// Mail from `from` to the unsubscribe address with `subject`, as a mail client sends
/// it; swaks' success and what it printed.
fn send(env: &RelayEnv, from: &str, subject: &str) -> (bool, String) {
    swaks(
        &env.server.relay.to_string(),
        &[
            "--from",
            from,
            "--to",
            "unsubscribe@bounce.src.test",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "Sent by my mail client's unsubscribe button.",
        ],
    )
}

#[test]
fn mail_to_the_mailto_address_unsubscribes_the_reader_its_token_names() {
    // Loopback may not relay: only the bounce domain is open to it, as from outside.
    let env = RelayEnv::start(
        "",
        "[tracking]\nbase_url = \"https://t.src.test\"\n\n\
         [bounces]\ndomains = [\"bounce.src.test\"]\nsecret = \"a test secret of 16+ bytes\"\n\n\
         [smtp]\nrelay_networks = [\"10.99.0.0/16\"]\n\n\
         [suppression]\nrefresh_secs = 1\n",
    );
    let key = api_key(&env.server, &["create", "--name", "news"]);
    let mut ids = Vec::new();
    for rcpt in ["ann@fast.test", "bob@fast.test"] {
        let message = serde_json::json!({
            "from": "News <news@src.test>", "to": rcpt, "subject": "Spring sale",
            "text": "The sale is on.", "priority": "bulk", "campaign": "spring"});
        let (status, answer) = post_json(env.server.http, key.trim(), "/v1/messages", &message);
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    let ann = mailto_subject(&env, "ann@fast.test");
    let bob = mailto_subject(&env, "bob@fast.test");
    assert_ne!(ann, bob);

    // No token, and Bob's token changed in one place: refused, no one unsubscribed.
    let (ok, out) = send(&env, "bob@fast.test", "unsubscribe");
    assert!(!ok, "{out}");
    assert!(
        out.contains("550 5.7.1") && out.contains("no unsubscribe token"),
        "{out}"
    );
    let mut changed = bob.clone().into_bytes();
    let at = changed.len() / 2;
    changed[at] = if changed[at] == b'x' { b'y' } else { b'x' };
    let (ok, out) = send(&env, "bob@fast.test", &String::from_utf8(changed).unwrap());
    assert!(!ok, "{out}");
    let (_, listed) = suppression(&env, "bob@fast.test");
    assert!(!listed.contains("unsubscribe"), "{listed}");

    // Bob's client answers the mailto as it is; Ann's after "Re:".
    let (ok, out) = send(&env, "bob@fast.test", &bob);
    assert!(ok && out.contains("bob@fast.test is unsubscribed"), "{out}");
    let (ok, out) = send(&env, "ann@other.test", &format!("Re: {ann}"));
    assert!(ok && out.contains("ann@fast.test is unsubscribed"), "{out}");

    for (rcpt, id) in ["ann@fast.test", "bob@fast.test"].into_iter().zip(&ids) {
        let (ok, out) = suppression(&env, rcpt);
        assert!(ok && out.contains("unsubscribe"), "{rcpt}: {out}");
        env.wait_for_event(id, rcpt, "unsubscribed", WAIT);
    }
    // The next bulk message to Bob is not sent.
    let message = serde_json::json!({
        "from": "News <news@src.test>", "to": "bob@fast.test", "subject": "Summer sale",
        "text": "Another sale.", "priority": "bulk", "campaign": "summer"});
    let (status, answer) = post_json(env.server.http, key.trim(), "/v1/messages", &message);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["suppressed"],
        serde_json::json!([{"address": "bob@fast.test", "reason": "unsubscribe"}]),
        "{answer}"
    );
}
