//! The provider-compatible routes of a running `postroad serve`, driven by the
//! providers' own client libraries: boto3's `sesv2` client (SigV4 signed by botocore)
//! and the `sendgrid` package. What they send is delivered to the sink as the client
//! asked: recipients, names, Bcc kept out of the message, substitutions, templates.

mod common;

use std::time::Duration;

use common::campaigns;
use common::http::api_key;
use common::relay_env::RelayEnv;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const KEY_ID: &str = "AKIAPOSTROADTEST";
const SECRET: &str = "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTQwLWNoYXJzIQ";

fn start() -> RelayEnv {
    let extra = format!(
        "[[http.ses_keys]]\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\n\
         region = \"us-east-1\"\ntenant = \"shop\"\n"
    );
    RelayEnv::start("", &extra)
}

/// Runs a client script; its output lines split into words.
fn client(script: &str, args: &[&str]) -> Vec<Vec<String>> {
    let path = common::scripts_dir().join(script);
    let mut all = vec![path.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out) = common::run("python3", &all, None);
    assert!(ok, "{script} {args:?} failed:\n{out}");
    out.lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

/// The one message the sink got for `recipient`, as text.
fn received(env: &RelayEnv, recipient: &str) -> String {
    let messages: Vec<_> = env
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.recipients.iter().any(|r| r == recipient))
        .collect();
    assert_eq!(messages.len(), 1, "{recipient} got one message");
    String::from_utf8_lossy(&messages[0].data).into_owned()
}

fn put_welcome(env: &RelayEnv, key: &str) {
    let template = json!({"subject": "Welcome, {{ name }}!", "text": "Hello {{ name }}.",
        "from": "shop@src.test"});
    campaigns::put_template(env.server.http, key, "welcome", &template);
}

#[test]
fn boto3_sesv2_sends_simple_raw_and_templated_mail() {
    let env = start();
    // SES keys of tenant "shop" render that tenant's templates.
    let key = api_key(
        &env.server,
        &["create", "--name", "shop", "--tenant", "shop"],
    );
    put_welcome(&env, key.trim());
    let port = env.server.http.to_string();
    let ses = |scenario| client("ses_client.py", &[&port, KEY_ID, SECRET, scenario]);

    let simple = ses("simple");
    let id = &simple[0][1];
    for rcpt in ["ses-to@fast.test", "ses-cc@fast.test", "ses-bcc@fast.test"] {
        let events = env.wait_for_event(id, rcpt, "delivered", WAIT);
        assert_eq!(events.last().unwrap()["meta"]["tenant"], "shop");
    }
    let text = received(&env, "ses-to@fast.test");
    let to = text
        .lines()
        .find(|l| l.starts_with("To: "))
        .unwrap_or_default();
    assert!(
        to.contains("Ann Example") && to.contains("<ses-to@fast.test>"),
        "{text}"
    );
    assert!(
        text.contains("=?utf-8?"),
        "the subject is RFC 2047 encoded: {text}"
    );
    assert!(text.contains("X-Campaign: spring"), "{text}");
    assert!(text.contains("Reply-To: <help@src.test>"), "{text}");
    assert!(
        !text.contains("ses-bcc@fast.test"),
        "Bcc is not shown: {text}"
    );
    assert!(text.contains("multipart/alternative"), "{text}");

    let raw = ses("raw");
    let id = &raw[0][1];
    env.wait_for_event(id, "ses-raw@fast.test", "delivered", WAIT);
    env.wait_for_event(id, "ses-raw-bcc@fast.test", "delivered", WAIT);
    let text = received(&env, "ses-raw@fast.test");
    assert!(
        text.contains("raw over SES") && !text.contains("Bcc:"),
        "{text}"
    );

    let templated = ses("template");
    env.wait_for_event(&templated[0][1], "ses-tpl@fast.test", "delivered", WAIT);
    let text = received(&env, "ses-tpl@fast.test");
    assert!(
        text.contains("Subject: Welcome, Bo!") && text.contains("Hello Bo."),
        "{text}"
    );

    let refused = ses("errors");
    let codes: Vec<&str> = refused.iter().map(|l| l[1].as_str()).collect();
    assert_eq!(
        codes,
        [
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "BadRequestException",
            "NotFoundException"
        ]
    );
    let bad_address = refused[3].join(" ");
    assert!(
        bad_address.contains("Destination.ToAddresses[0]"),
        "{bad_address}"
    );
}

#[test]
fn the_sendgrid_library_sends_one_message_per_personalization() {
    let env = start();
    let key = api_key(&env.server, &["create", "--name", "app"])
        .trim()
        .to_string();
    put_welcome(&env, &key);
    let port = env.server.http.to_string();
    let sendgrid = |scenario| client("sendgrid_client.py", &[&port, &key, scenario]);

    let sent = sendgrid("send");
    let ids: Vec<&str> = sent[0][2].split(',').collect();
    assert_eq!(ids.len(), 2, "two personalizations, two messages: {sent:?}");
    assert_eq!(sent[0][1], ids[0], "X-Message-Id is the first message's id");
    // The library puts each added personalization first: find which message is whose.
    let queued_for = |id: &str, rcpt: &str| env.history(id).iter().any(|e| e["recipient"] == rcpt);
    let (ann, bob) = if queued_for(ids[0], "sg-one@fast.test") {
        (ids[0], ids[1])
    } else {
        (ids[1], ids[0])
    };
    env.wait_for_event(ann, "sg-one@fast.test", "delivered", WAIT);
    env.wait_for_event(ann, "sg-bcc@fast.test", "delivered", WAIT);
    env.wait_for_event(bob, "sg-two@fast.test", "delivered", WAIT);
    assert!(
        !queued_for(bob, "sg-one@fast.test"),
        "each personalization is its own message"
    );
    let one = received(&env, "sg-one@fast.test");
    assert!(
        one.contains("Subject: Hello Ann") && one.contains("Dear Ann, welcome."),
        "{one}"
    );
    assert!(
        !one.contains("sg-bcc@fast.test") && !one.contains("Bob"),
        "{one}"
    );
    let two = received(&env, "sg-two@fast.test");
    assert!(two.contains("Subject: Hello Bob"), "{two}");
    let from = two
        .lines()
        .find(|l| l.starts_with("From: "))
        .unwrap_or_default();
    assert!(
        from.contains("Shop") && from.contains("<shop@src.test>"),
        "{two}"
    );

    let templated = sendgrid("template");
    env.wait_for_event(&templated[0][1], "sg-tpl@fast.test", "delivered", WAIT);
    let text = received(&env, "sg-tpl@fast.test");
    assert!(text.contains("Subject: Welcome, Cy!"), "{text}");

    let refused = sendgrid("errors");
    assert_eq!(refused[0][1], "401", "{refused:?}");
    assert_eq!(
        refused[1][1..3],
        ["400", "personalizations.0.to.0"],
        "{refused:?}"
    );
}
