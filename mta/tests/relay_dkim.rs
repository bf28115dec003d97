//! DKIM on a running server: mail from a domain with `[[dkim]]` keys (RSA and Ed25519,
//! made by openssl) reaches the sink signed by both, and dkimpy, an independent
//! implementation, verifies each signature of the bytes the sink received; mail from a
//! domain without keys goes out unsigned; a key that cannot be read is refused by
//! `check-config` (and `serve`, which loads the keys the same way) with the key named.

mod common;

use std::time::Duration;

use common::http::{api_key, post_json};
use common::relay_env::RelayEnv;
use common::{Client, dkim_keys, run, scripts_dir, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn delivered(env: &RelayEnv, message_id: &str) -> Vec<u8> {
    let find = || {
        env.sink
            .messages()
            .into_iter()
            .find(|m| m.message_id.as_deref() == Some(message_id))
    };
    wait_until(
        &format!("{message_id} delivered"),
        WAIT,
        || find().is_some(),
        || env.server.log(),
    );
    find().unwrap().data
}

#[test]
fn mail_is_signed_per_from_domain_and_dkimpy_verifies_every_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_record) = dkim_keys::key(dir.path(), false);
    let (ed, ed_record) = dkim_keys::key(dir.path(), true);
    let dkim = format!(
        "[[dkim]]\ndomain = \"src.test\"\nselector = \"r2026\"\nkey_file = \"{rsa}\"\n\n\
         [[dkim]]\ndomain = \"src.test\"\nselector = \"e2026\"\nkey_file = \"{ed}\"\n"
    );
    let env = RelayEnv::start("", &dkim);

    let body = "Message-ID: <signed.1@src.test>\r\nFrom: News <news@mail.src.test>\r\nTo: ann@fast.test\r\n\
                Subject: Signed\r\nList-Unsubscribe: <mailto:u@src.test>\r\n\r\nHello.\r\n";
    let mut client = Client::greeted(env.server.relay);
    client.send_mail("bounces@src.test", &["ann@fast.test"], body);
    let unsigned = "Message-ID: <plain.1@other.test>\r\nFrom: someone@other.test\r\nTo: ann@fast.test\r\n\
                    Subject: Plain\r\n\r\nHello.\r\n";
    client.send_mail("someone@other.test", &["ann@fast.test"], unsigned);

    let signed = delivered(&env, "<signed.1@src.test>");
    let text = String::from_utf8_lossy(&signed);
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    let records = [
        format!("r2026._domainkey.src.test={rsa_record}"),
        format!("e2026._domainkey.src.test={ed_record}"),
    ];
    let verifier = scripts_dir().join("dkim_verify.py");
    let mut args = vec![verifier.to_str().unwrap()];
    args.extend(records.iter().map(String::as_str));
    let (ok, out) = run("python3", &args, Some(&signed));
    assert!(ok, "{out}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "pass d=src.test s=e2026 a=ed25519-sha256",
            "pass d=src.test s=r2026 a=rsa-sha256"
        ],
        "{out}"
    );

    // The same bytes with one character of the body changed no longer verify.
    let tampered = text.replace("Hello.", "Hellp.").into_bytes();
    let (_, out) = run("python3", &args, Some(&tampered));
    assert_eq!(out.matches("fail").count(), 2, "{out}");

    let plain = delivered(&env, "<plain.1@other.test>");
    assert!(!String::from_utf8_lossy(&plain).contains("DKIM-Signature:"));
    let metrics = env.metrics();
    assert!(
        metrics.contains("postroad_dkim_signed_total 1"),
        "{metrics}"
    );
}

#[test]
fn an_unreadable_key_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postroad.toml");
    std::fs::write(
        &config,
        "[[dkim]]\ndomain = \"src.test\"\nselector = \"s1\"\nkey_file = \"/nonexistent/key.pem\"\n",
    )
    .unwrap();
    let (ok, out) = run(
        common::binary(),
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("src.test") && out.contains("/nonexistent/key.pem"),
        "{out}"
    );
}

#[test]
fn a_bulk_api_message_carries_one_click_unsubscribe_under_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_record) = dkim_keys::key(dir.path(), false);
    let extra = format!(
        "[[dkim]]\ndomain = \"src.test\"\nselector = \"r2026\"\nkey_file = \"{rsa}\"\n\n\
         [tracking]\nbase_url = \"https://t.src.test\"\n\n\
         [bounces]\ndomains = [\"bounce.src.test\"]\n"
    );
    let env = RelayEnv::start("", &extra);
    let key = api_key(&env.server, &["create", "--name", "news"]);
    let message = serde_json::json!({
        "from": "News <news@src.test>", "to": "ann@fast.test", "subject": "Spring sale",
        "text": "The sale is on.", "priority": "bulk", "campaign": "spring",
        "headers": {"Message-ID": "<bulk.1@src.test>"}});
    let (status, answer) = post_json(env.server.http, key.trim(), "/v1/messages", &message);
    assert_eq!(status, 202, "{answer}");

    let signed = delivered(&env, "<bulk.1@src.test>");
    let text = String::from_utf8_lossy(&signed).to_string();
    assert!(
        text.contains("List-Unsubscribe: <https://t.src.test/u/"),
        "{text}"
    );
    assert!(
        text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
        "{text}"
    );
    // With a bounce domain, the mailto: too, folded onto its own line.
    assert!(
        text.contains(">,\r\n <mailto:unsubscribe@bounce.src.test?subject="),
        "{text}"
    );
    // The signature covers both (Gmail and Yahoo check), and dkimpy verifies it.
    let signature = text
        .split("DKIM-Signature:")
        .nth(1)
        .and_then(|s| s.split("\r\n\r\n").next())
        .unwrap()
        .to_ascii_lowercase();
    let signed_headers: String = signature
        .split(';')
        .find_map(|tag| tag.trim().strip_prefix("h="))
        .unwrap()
        .split_whitespace()
        .collect();
    let names: Vec<&str> = signed_headers.split(':').collect();
    for header in [
        "list-unsubscribe",
        "list-unsubscribe-post",
        "from",
        "subject",
    ] {
        assert!(names.contains(&header), "{header} not signed: {names:?}");
    }
    let record = format!("r2026._domainkey.src.test={rsa_record}");
    let verifier = scripts_dir().join("dkim_verify.py");
    let (ok, out) = run(
        "python3",
        &[verifier.to_str().unwrap(), &record],
        Some(&signed),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "pass d=src.test s=r2026 a=rsa-sha256", "{out}");
    // The link answers the one-click POST of a mailbox provider.
    let url = text
        .split("List-Unsubscribe: <https://t.src.test")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap()
        .to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["--data", "List-Unsubscribe=One-Click"])
        .arg(format!("http://127.0.0.1:{}{url}", env.server.http))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let (ok, out) = run(
        common::binary(),
        &[
            "suppression",
            "show",
            "ann@fast.test",
            "--config",
            env.server.config_path.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok && out.contains("unsubscribe"), "{out}");
}
