//! Provider webhooks on a running server, signed as SNS and SendGrid sign them (by
//! openssl, with the test's own RSA certificate, and with SendGrid's published test
//! key): mail sent through SES (moto) and SendGrid (the stand-in) gets its provider
//! events back: an SNS subscription is confirmed by visiting its SubscribeURL, whose
//! host serves the signing certificate too; a signed SES bounce (SignatureVersion 1 and
//! 2) makes the recipient `bounced` with the classifier's reason and its metadata; the
//! same notification again records nothing twice; a bad signature or an unknown topic
//! is refused with 403 and records nothing; a signed SendGrid batch records its open
//! and bounce; a bad, missing or stale SendGrid signature is refused.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::moto::Moto;
use common::relay_env::RelayEnv;
use common::sendgrid::SendGridRecorder;
use common::{Client, free_port, queued_id, wait_until};
use postroad_queue::Metadata;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";
/// SendGrid's test key pair (its client libraries' tests): the private half, SEC1 DER.
const SENDGRID_PRIVATE: &str = "MHcCAQEEIEQmZgBEh9DcU9zMl34czK3xov4AYvm9P3r7rNB2dNXtoAoGCCqGSM49AwEHoUQDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
const SENDGRID_PUBLIC: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    if let Some(input) = input {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A web server on loopback serving `dir` (the signing certificate, the confirmation
/// page), its requests logged to `dir/../access.log`.
struct Files {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Files {
    fn serve(dir: &Path) -> Files {
        let port = free_port();
        let log = dir.parent().unwrap().join("access.log");
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 -m http.server");
        wait_until(
            "the file server",
            WAIT,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            String::new,
        );
        Files { child, port, log }
    }

    fn requests(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SNS message signed with `key` (SignatureVersion `version`), as JSON.
fn sns(key: &Path, cert_url: &str, version: &str, mut fields: Value) -> String {
    fields["TopicArn"] = json!(fields["TopicArn"].as_str().unwrap_or(TOPIC));
    fields["SignatureVersion"] = json!(version);
    fields["SigningCertURL"] = json!(cert_url);
    let kind = fields["Type"].as_str().unwrap().to_string();
    let names: &[&str] = if kind == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut text = String::new();
    for name in names {
        if let Some(v) = fields[*name].as_str() {
            text.push_str(&format!("{name}\n{v}\n"));
        }
    }
    let digest = if version == "1" { "-sha1" } else { "-sha256" };
    let signature = openssl(
        &["dgst", digest, "-sign", key.to_str().unwrap()],
        Some(text.as_bytes()),
    );
    fields["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(signature));
    fields.to_string()
}

/// POST `body` to `path` with `headers`; the status and the answer.
fn post(port: u16, path: &str, headers: &[(String, String)], body: &str) -> (u16, Value) {
    let mut args = vec![
        "-sS".to_string(),
        "-w".into(),
        "\n%{http_code}".into(),
        "--data-binary".into(),
        body.into(),
    ];
    for (k, v) in headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(format!("http://127.0.0.1:{port}{path}"));
    let out = Command::new("curl").args(&args).output().expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (answer, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(answer).unwrap_or(Value::Null),
    )
}

fn events_of(env: &RelayEnv, id: &str, recipient: &str, kind: &str) -> usize {
    env.history(id)
        .iter()
        .filter(|e| e["recipient"] == recipient && e["kind"] == kind)
        .count()
}

#[test]
fn signed_provider_events_reach_the_history_and_unsigned_ones_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let key = dir.path().join("sns.key");
    openssl(
        &[
            "genrsa",
            "-traditional",
            "-out",
            key.to_str().unwrap(),
            "2048",
        ],
        None,
    );
    openssl(
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=sns.test",
            "-days",
            "2",
            "-out",
            www.join("cert.pem").to_str().unwrap(),
        ],
        None,
    );
    std::fs::write(www.join("confirm"), "<ConfirmSubscriptionResponse/>").unwrap();
    let files = Files::serve(&www);
    let cert_url = format!("http://127.0.0.1:{}/cert.pem", files.port);

    let moto = Moto::launch();
    moto.ses_verify(&["news@src.test"]);
    let recorder = SendGridRecorder::start("SG.key");
    let extra = format!(
        "[relay.providers.ses]\nkind = \"ses\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{}\"\n\
         access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n\n\
         [relay.providers.sendgrid]\nkind = \"sendgrid\"\nendpoint = \"http://127.0.0.1:{}\"\napi_key = \"SG.key\"\n\n\
         [[relay.routing]]\ndomains = [\"ses.test\"]\nvia = [\"ses\"]\n\n\
         [[relay.routing]]\ndomains = [\"grid.test\"]\nvia = [\"sendgrid\"]\n\n\
         [webhooks.ses]\nenabled = true\ntopics = [\"{TOPIC}\"]\ncertificate_hosts = [\"127.0.0.1:{}\"]\n\n\
         [webhooks.sendgrid]\npublic_key = \"{SENDGRID_PUBLIC}\"\n",
        moto.port, recorder.port, files.port
    );
    let env = RelayEnv::start("", &extra);
    let http = env.server.http;

    // The subscription: confirmed by visiting its SubscribeURL.
    let confirm = format!("http://127.0.0.1:{}/confirm?Token=t1", files.port);
    let subscription = sns(
        &key,
        &cert_url,
        "2",
        json!({
        "Type": "SubscriptionConfirmation", "MessageId": "sub-1", "Token": "t1",
        "Message": "You have chosen to subscribe", "SubscribeURL": confirm,
        "Timestamp": "2026-12-07T10:00:00.000Z"}),
    );
    let (code, _) = post(http, "/webhooks/ses", &[], &subscription);
    assert_eq!(code, 200);
    let log = files.requests();
    assert!(
        log.contains("GET /cert.pem") && log.contains("GET /confirm?Token=t1"),
        "{log}"
    );

    // Mail through SES, then its bounce.
    let mut client = Client::greeted(env.server.relay);
    let body =
        "From: news@src.test\r\nX-Postroad-Email-Type: welcome\r\nSubject: Hi\r\n\r\nHello.\r\n";
    let id = queued_id(&client.send_mail("news@src.test", &["bob@ses.test"], body)).to_string();
    let events = env.wait_for_event(&id, "bob@ses.test", "delivered", WAIT);
    let delivered = events.iter().find(|e| e["kind"] == "delivered").unwrap();
    let ses_id = delivered["provider_message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let meta = Metadata {
        email_type: Some("welcome".into()),
        ..Metadata::default()
    };
    let bounce = |sns_id: &str| {
        json!({
            "Type": "Notification", "MessageId": sns_id, "Timestamp": "2026-12-07T10:01:00.000Z",
            "Message": json!({
                "eventType": "Bounce",
                "mail": {"messageId": ses_id, "source": "news@src.test", "destination": ["bob@ses.test"],
                         "tags": {"postroad-message-id": [id], "postroad-meta-0": [meta.to_token()]}},
                "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                           "timestamp": "2026-12-07T10:00:59.000Z", "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com",
                           "bouncedRecipients": [{"emailAddress": "bob@ses.test", "action": "failed", "status": "5.1.1",
                                                  "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
            }).to_string(),
        })
    };
    // Tampered with after signing: refused, nothing recorded.
    let mut forged: Value =
        serde_json::from_str(&sns(&key, &cert_url, "1", bounce("n-1"))).unwrap();
    forged["Message"] = json!(
        forged["Message"]
            .as_str()
            .unwrap()
            .replace("5.1.1", "4.2.2")
    );
    let (code, _) = post(http, "/webhooks/ses", &[], &forged.to_string());
    assert_eq!(code, 403);
    // From a topic not listed: refused.
    let mut other = bounce("n-2");
    other["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:other");
    let (code, _) = post(
        http,
        "/webhooks/ses",
        &[],
        &sns(&key, &cert_url, "2", other),
    );
    assert_eq!(code, 403);
    assert_eq!(events_of(&env, &id, "bob@ses.test", "bounced"), 0);

    for version in ["1", "2"] {
        // SNS delivers at least once: the same notification twice.
        let signed = sns(&key, &cert_url, version, bounce("n-3"));
        let (code, answer) = post(http, "/webhooks/ses", &[], &signed);
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["recorded"], 1, "{answer}");
    }
    let events = env.wait_for_event(&id, "bob@ses.test", "bounced", WAIT);
    let bounced = events.iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["reason"], "userunknown", "{bounced:#}");
    assert_eq!(bounced["reply"]["code"], 550, "{bounced:#}");
    assert_eq!(bounced["provider_message_id"], ses_id.as_str());
    assert_eq!(
        events_of(&env, &id, "bob@ses.test", "bounced"),
        1,
        "recorded once"
    );

    // Mail through SendGrid; its events come back signed with SendGrid's key.
    let id =
        queued_id(&client.send_mail("news@src.test", &["ann@grid.test", "cy@grid.test"], body))
            .to_string();
    env.wait_for_event(&id, "ann@grid.test", "delivered", WAIT);
    let sent = &recorder.requests()[0]["body"]["custom_args"];
    assert_eq!(sent["postroad_message_id"], id.as_str());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let batch = json!([
        {"email": "ann@grid.test", "event": "open", "sg_event_id": "ev-1", "timestamp": now,
         "postroad_message_id": sent["postroad_message_id"], "postroad_meta": sent["postroad_meta"]},
        {"email": "cy@grid.test", "event": "bounce", "sg_event_id": "ev-2", "timestamp": now,
         "status": "5.2.2", "reason": "552 5.2.2 mailbox full", "type": "bounce",
         "postroad_message_id": sent["postroad_message_id"], "postroad_meta": sent["postroad_meta"]},
        {"email": "x@elsewhere.test", "event": "delivered", "sg_event_id": "ev-3", "timestamp": now},
    ])
    .to_string();
    let pem = format!(
        "-----BEGIN EC PRIVATE KEY-----\n{SENDGRID_PRIVATE}\n-----END EC PRIVATE KEY-----\n"
    );
    let sg_key = dir.path().join("sendgrid.pem");
    std::fs::write(&sg_key, pem).unwrap();
    let sign = |timestamp: &str, body: &str| {
        let signed = format!("{timestamp}{body}");
        let der = openssl(
            &["dgst", "-sha256", "-sign", sg_key.to_str().unwrap()],
            Some(signed.as_bytes()),
        );
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let ts = now.to_string();
    let headers = |ts: &str, sig: &str| {
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Timestamp".to_string(),
                ts.to_string(),
            ),
            (
                "X-Twilio-Email-Event-Webhook-Signature".to_string(),
                sig.to_string(),
            ),
        ]
    };
    // Unsigned, signed by the wrong body, or a day old: refused.
    assert_eq!(post(http, "/webhooks/sendgrid", &[], &batch).0, 403);
    let wrong = headers(&ts, &sign(&ts, "[]"));
    assert_eq!(post(http, "/webhooks/sendgrid", &wrong, &batch).0, 403);
    let old = (now - 86_400).to_string();
    let stale = headers(&old, &sign(&old, &batch));
    assert_eq!(post(http, "/webhooks/sendgrid", &stale, &batch).0, 403);
    assert_eq!(events_of(&env, &id, "ann@grid.test", "opened"), 0);
    let good = headers(&ts, &sign(&ts, &batch));
    let (code, answer) = post(http, "/webhooks/sendgrid", &good, &batch);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        (answer["recorded"].clone(), answer["unmatched"].clone()),
        (json!(2), json!(1))
    );
    env.wait_for_event(&id, "ann@grid.test", "opened", WAIT);
    let events = env.wait_for_event(&id, "cy@grid.test", "bounced", WAIT);
    let bounced = events.iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["reason"], "mailboxfull", "{bounced:#}");
    let metrics = env.metrics();
    assert!(
        metrics.contains(
            "postroad_provider_webhooks_total{provider=\"sendgrid\",result=\"refused\"} 3"
        ),
        "{metrics}"
    );
}
