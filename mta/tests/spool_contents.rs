//! What a client sends is what the spool holds: envelope, DSN parameters, body bytes
//! (dot-unstuffed, BDAT chunks joined) and our `Received:` header, one copy per message.

mod common;

use common::{Client, Server, dot_stuff, queued_id, run};
use postroad_queue::{DsnRet, MessageId, Queue};

fn smtplib(port: u16, scenario: &str) -> MessageId {
    let script = common::scripts_dir().join("smtplib_client.py");
    let (ok, out) = run(
        "python3",
        &[script.to_str().unwrap(), &port.to_string(), scenario],
        None,
    );
    assert!(ok, "{scenario}:\n{out}");
    out.trim().strip_prefix("queued ").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_messages_are_stored_intact() {
    let mut server = Server::start("");
    let body = "Subject: dots\n\n.leading dot\n..two dots\nmiddle . dot\n.\nend\n";
    let mut c = Client::greeted(server.relay);
    let plain = queued_id(&c.send_mail("s@raw.test", &["r1@raw.test", "r2@raw.test"], body));
    let first_dot = queued_id(&c.send_mail("s@raw.test", &["r@raw.test"], ".first line\n"));
    let multi = smtplib(server.relay, "multi_recipient");
    let dsn = smtplib(server.relay, "dsn");
    let utf8 = smtplib(server.relay, "utf8_addresses");
    let bdat = smtplib(server.relay, "bdat");
    let eightbit = smtplib(server.relay, "8bit");
    server.stop();

    let spool = server.open_spool();
    let all = spool.list(100).await.unwrap();
    assert_eq!(all.len(), 7, "one stored copy per message: {all:#?}");
    let (_, stored) = spool.get(first_dot).await.unwrap().unwrap();
    assert!(
        stored.ends_with(b"\r\n.first line\r\n"),
        "the first line is unstuffed too"
    );

    let (env, stored) = spool.get(plain).await.unwrap().expect("raw message stored");
    assert_eq!(env.sender, "s@raw.test");
    let rcpts: Vec<_> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["r1@raw.test", "r2@raw.test"]);
    assert_eq!(env.client_ip.to_string(), "127.0.0.1");
    assert_eq!(env.helo, "client.test");
    assert_eq!(env.size, stored.len() as u64);
    let text = String::from_utf8(stored.to_vec()).unwrap();
    assert!(text.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.postroad.test (Postroad) with ESMTP id "), "{text}");
    assert!(text.contains(&plain.to_string()));
    assert!(dot_stuff(body).starts_with(b"Subject: dots\r\n\r\n..leading dot\r\n...two dots"));
    let written = body.replace('\n', "\r\n");
    assert!(
        text.ends_with(&written),
        "the body must be stored as written, dot-unstuffed:\n{text}"
    );

    let (env, _) = spool.get(multi).await.unwrap().unwrap();
    assert_eq!(env.recipients.len(), 3);

    let (env, _) = spool.get(dsn).await.unwrap().unwrap();
    assert_eq!(env.dsn_ret, Some(DsnRet::Headers));
    assert_eq!(env.dsn_envid.as_deref(), Some("env-42"));
    let r = &env.recipients[0];
    assert!(r.notify.success && r.notify.failure && !r.notify.delay && !r.notify.never);
    assert_eq!(r.orcpt.as_deref(), Some("orig@dsn.test"));

    let (env, body) = spool.get(utf8).await.unwrap().unwrap();
    assert!(env.smtputf8 && env.body_8bit);
    assert_eq!(env.sender, "jörg@absender.test");
    assert_eq!(env.recipients[0].address, "δοκιμή@παράδειγμα.test");
    assert!(
        String::from_utf8(body.to_vec())
            .unwrap()
            .contains("with UTF8SMTP id")
    );

    let (_, body) = spool.get(bdat).await.unwrap().unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.ends_with(
            "Subject: bdat\r\n\r\nfirst chunk\r\n.leading dot stays as is\r\nsecond chunk\r\n"
        ),
        "BDAT is not dot-stuffed and chunks join in order:\n{text}"
    );

    let (env, body) = spool.get(eightbit).await.unwrap().unwrap();
    assert!(env.body_8bit);
    assert!(
        String::from_utf8(body.to_vec())
            .unwrap()
            .contains("Grüße aus Köln")
    );
}
