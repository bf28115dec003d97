//! The HTTP API over real HTTP (ureq, and raw sockets for slow clients), in front of a
//! real spool: what a client sees, and what the queue then holds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::TestApi;
use mail_parser::{MessageParser, MimeHeaders};
use postroad_queue::Priority;
use serde_json::{Value, json};

fn explicit() -> Value {
    json!({
        "from": "Shop <shop@example.com>",
        "to": ["ann@example.net", "bob@example.org"],
        "cc": "carol@example.net",
        "bcc": ["dave@example.com"],
        "replyTo": "help@example.com",
        "subject": "Your order — №42",
        "text": "Thanks for your order.\n",
        "html": "<p>Thanks for your <b>order</b>.</p>",
        "headers": {"X-Order": "42", "Message-ID": "<order-42@shop.example>"},
        "attachments": [{"filename": "invoice.pdf", "contentType": "application/pdf",
                         "content": STANDARD.encode(b"%PDF-1.4 fake")}],
        "userId": 12345, "emailType": "order-confirmation", "priority": "high",
        "tags": {"shop": "eu"}
    })
}

#[test]
fn requests_without_a_valid_key_get_401() {
    let api = TestApi::start(|_| {});
    let body = Some(("application/json", explicit().to_string().into_bytes()));
    for key in [None, Some("pr_not-a-key"), Some("")] {
        let reply = api.call_as(key, "POST", "/v1/messages", body.clone(), &[]);
        assert!(reply.is_problem(401, "unauthorized"), "{key:?}: {reply:?}");
    }
    assert_eq!(api.queue_len(), 0);

    // A key created while the server runs works (within the reload gap after the
    // unknown keys above); revoked, it stops working (within the reload period).
    let (fresh, _) = api
        .runtime
        .block_on(api.store.create_key("late", None))
        .unwrap();
    let until_status = |want: u16, other: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = api.call_as(Some(&fresh), "POST", "/v1/messages", body.clone(), &[]);
            if reply.status == want {
                return;
            }
            assert_eq!(reply.status, other, "{reply:?}");
            assert!(Instant::now() < deadline, "still {other}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until_status(202, 401);
    api.runtime
        .block_on(api.store.revoke_key("late"))
        .unwrap()
        .unwrap();
    until_status(401, 202);
}

#[test]
fn an_explicit_message_is_queued_as_proper_mime() {
    let api = TestApi::start(|_| {});
    let reply = api.post("/v1/messages", &explicit());
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json["recipients"], 4);
    let (envelope, body) = api.queued(reply.json["id"].as_str().unwrap());

    assert_eq!(envelope.sender, "shop@example.com");
    let rcpts: Vec<_> = envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        rcpts,
        [
            "ann@example.net",
            "bob@example.org",
            "carol@example.net",
            "dave@example.com"
        ]
    );
    assert_eq!(envelope.meta.user_id, Some(12345));
    assert_eq!(
        envelope.meta.email_type.as_deref(),
        Some("order-confirmation")
    );
    assert_eq!(envelope.meta.priority, Priority::High);
    assert_eq!(envelope.meta.tags, [("shop".to_string(), "eu".to_string())]);

    let message = MessageParser::new().parse(&body).unwrap();
    assert_eq!(message.subject(), Some("Your order — №42"));
    assert_eq!(
        message.from().unwrap().first().unwrap().name(),
        Some("Shop")
    );
    let to: Vec<_> = message
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["ann@example.net", "bob@example.org"]);
    assert!(message.bcc().is_none(), "Bcc is envelope only");
    assert_eq!(
        message.reply_to().unwrap().first().unwrap().address(),
        Some("help@example.com")
    );
    assert_eq!(
        message.body_text(0).as_deref(),
        Some("Thanks for your order.\r\n"),
        "CRLF in MIME"
    );
    assert_eq!(
        message.body_html(0).as_deref(),
        Some("<p>Thanks for your <b>order</b>.</p>")
    );
    let attachment = message.attachment(0).unwrap();
    assert_eq!(attachment.attachment_name(), Some("invoice.pdf"));
    assert_eq!(attachment.contents(), b"%PDF-1.4 fake");
    assert_eq!(message.header_raw("X-Order").map(str::trim), Some("42"));
    assert_eq!(
        message.message_id(),
        Some("order-42@shop.example"),
        "the request's own"
    );
    assert!(message.date().is_some());
    assert!(body.is_ascii(), "7-bit MIME: non-ASCII is encoded");
}

#[test]
fn raw_mime_in_json_or_as_message_rfc822() {
    let api = TestApi::start(|_| {});
    let mime = b"From: App <app@example.com>\r\nTo: ann@example.net\r\nBcc: hidden@example.org\r\nSubject: raw\r\n\r\nbody\r\n";
    let reply = api.post(
        "/v1/messages",
        &json!({"raw": STANDARD.encode(mime), "from": "bounce@example.com",
        "to": ["ann@example.net"], "emailType": "raw-test"}),
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let (envelope, body) = api.queued(reply.json["id"].as_str().unwrap());
    assert_eq!(envelope.sender, "bounce@example.com");
    assert_eq!(body, mime, "the raw form is queued as given");

    let reply = api.call(
        "POST",
        "/v1/messages?userId=7&priority=bulk",
        Some(("message/rfc822", mime.to_vec())),
        &[],
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    let (envelope, body) = api.queued(reply.json["id"].as_str().unwrap());
    assert_eq!(envelope.sender, "app@example.com");
    let rcpts: Vec<_> = envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["ann@example.net", "hidden@example.org"]);
    assert_eq!(
        (envelope.meta.user_id, envelope.meta.priority),
        (Some(7), Priority::Bulk)
    );
    assert!(
        !String::from_utf8_lossy(&body).contains("Bcc:"),
        "Bcc removed"
    );

    let reply = api.call(
        "POST",
        "/v1/messages",
        Some(("message/rfc822", b"just words".to_vec())),
        &[],
    );
    assert!(reply.is_problem(422, "invalid-request"), "{reply:?}");
    let reply = api.post(
        "/v1/messages",
        &json!({"raw": "***", "from": "a@example.com", "to": "b@example.com"}),
    );
    assert_eq!(
        reply.errors(),
        [("/raw".to_string(), "invalid-base64".to_string())]
    );
}

#[test]
fn bad_input_gets_a_problem_naming_every_bad_field() {
    let api = TestApi::start(|_| {});
    let mut bad = explicit();
    bad["to"] = json!(["ok@example.net", "not an address", "x@-bad-.test"]);
    bad["subject"] = json!("hi\r\nBcc: victim@example.com");
    bad["headers"] = json!({"X-Evil": "a\nb", "Content-Type": "text/plain"});
    bad["priority"] = json!("urgent");
    bad["colour"] = json!("blue");
    let reply = api.post("/v1/messages", &bad);
    assert!(reply.is_problem(422, "invalid-request"), "{reply:?}");
    let mut errors = reply.errors();
    errors.sort();
    let expected: Vec<(String, String)> = [
        ("/colour", "unknown-field"),
        ("/headers/Content-Type", "invalid-header"),
        ("/headers/X-Evil", "header-injection"),
        ("/priority", "invalid-priority"),
        ("/subject", "header-injection"),
        ("/to/1", "invalid-address"),
        ("/to/2", "invalid-address"),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(errors, expected);

    let malformed = api.call(
        "POST",
        "/v1/messages",
        Some(("application/json", b"{\"to\": [".to_vec())),
        &[],
    );
    assert!(malformed.is_problem(400, "malformed-json"), "{malformed:?}");
    let text = api.call(
        "POST",
        "/v1/messages",
        Some(("text/plain", b"hello".to_vec())),
        &[],
    );
    assert!(text.is_problem(415, "unsupported-media-type"), "{text:?}");
    let mut many = explicit();
    many["to"] = json!([
        "a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test", "f@x.test"
    ]);
    assert!(
        api.post("/v1/messages", &many)
            .errors()
            .contains(&("/to".to_string(), "too-many".to_string()))
    );
    let mut big = explicit();
    big["text"] = json!("x".repeat(70 * 1024));
    assert_eq!(
        api.post("/v1/messages", &big).errors(),
        [(String::new(), "too-large".to_string())]
    );
    assert!(
        api.call("GET", "/v1/nothing", None, &[])
            .is_problem(404, "not-found")
    );
    assert!(
        api.call("DELETE", "/v1/messages", None, &[])
            .is_problem(405, "method-not-allowed")
    );
    assert_eq!(api.queue_len(), 0, "nothing bad was queued");
}

#[test]
fn a_batch_is_one_durable_write_with_a_result_per_item() {
    let api = TestApi::start(|c| c.max_batch = 3);
    let mut bad = explicit();
    bad["from"] = json!("nobody");
    let batch = json!({"messages": [explicit(), bad, explicit()]});
    let commits = api.spool.metrics().commits;
    let reply = api.post("/v1/messages/batch", &batch);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        (
            reply.json["accepted"].as_u64(),
            reply.json["rejected"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let results = reply.json["results"].as_array().unwrap();
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["errors"][0]["pointer"], "/messages/1/from");
    for i in [0, 2] {
        assert_eq!(results[i]["status"], "accepted");
        api.queued(results[i]["id"].as_str().unwrap());
    }
    assert_eq!(
        api.spool.metrics().commits - commits,
        1,
        "one group commit for the batch"
    );

    let too_many = json!({"messages": [explicit(), explicit(), explicit(), explicit()]});
    let reply = api.post("/v1/messages/batch", &too_many);
    assert_eq!(
        reply.errors(),
        [("/messages".to_string(), "too-many".to_string())]
    );
    assert_eq!(api.queue_len(), 2);
}

#[test]
fn a_retried_request_with_an_idempotency_key_queues_nothing_new() {
    let api = TestApi::start(|_| {});
    let body = explicit().to_string().into_bytes();
    let key = [("Idempotency-Key", "order-42-confirmation")];
    let first = api.call(
        "POST",
        "/v1/messages",
        Some(("application/json", body.clone())),
        &key,
    );
    assert_eq!(first.status, 202);
    assert!(!first.replayed);
    let again = api.call(
        "POST",
        "/v1/messages",
        Some(("application/json", body.clone())),
        &key,
    );
    assert_eq!((again.status, again.replayed), (202, true));
    assert_eq!(again.json, first.json, "the first answer, with the same id");
    assert_eq!(api.queue_len(), 1);

    let mut other = explicit();
    other["subject"] = json!("another");
    let reuse = api.call(
        "POST",
        "/v1/messages",
        Some(("application/json", other.to_string().into_bytes())),
        &key,
    );
    assert!(reuse.is_problem(422, "idempotency-key-reused"), "{reuse:?}");
    let other_key = [("Idempotency-Key", "order-43-confirmation")];
    assert_eq!(
        api.call(
            "POST",
            "/v1/messages",
            Some(("application/json", body)),
            &other_key
        )
        .status,
        202
    );
    assert_eq!(api.queue_len(), 2);
}

/// Sends the headers of a POST announcing a body that never fully arrives.
fn stalled_request(api: &TestApi) -> TcpStream {
    let mut stream = TcpStream::connect(api.addr).unwrap();
    write!(
        stream,
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"to\":",
        api.key
    )
    .unwrap();
    stream
}

/// Whether the server has answered on `stream` (without waiting).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let answered = stream.peek(&mut byte).is_ok_and(|n| n > 0);
    stream.set_nonblocking(false).unwrap();
    answered
}

#[test]
fn excess_requests_are_refused_at_once_with_retry_after() {
    let api = TestApi::start(|c| c.max_concurrent_requests = 1);
    let mut stalled = stalled_request(&api);
    // While the stalled request holds the only slot, the next is refused with 503.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let reply = api.post("/v1/messages", &explicit());
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 202, "{reply:?}");
        // The stalled request may have arrived while that one held the slot, and been
        // refused itself (an answer is waiting on its socket): stall another.
        if answered(&stalled) {
            stalled = stalled_request(&api);
        }
        assert!(Instant::now() < deadline, "never refused");
    };
    assert!(refused.is_problem(503, "overloaded"), "{refused:?}");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    // The client gives up: its slot is free again.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.post("/v1/messages", &explicit()).status != 202 {
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408() {
    let api = TestApi::start(|c| c.request_timeout = Duration::from_secs(1));
    let mut stalled = stalled_request(&api);
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("request-timeout") {
        match stalled.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("urn:postroad:problem:request-timeout"),
        "{answer}"
    );
    assert_eq!(api.queue_len(), 0);
}

#[test]
fn bodies_over_the_limit_get_413() {
    let api = TestApi::start(|c| c.max_body_bytes = 1024);
    let mut big = explicit();
    big["text"] = json!("y".repeat(2000));
    assert!(
        api.post("/v1/messages", &big)
            .is_problem(413, "payload-too-large")
    );
}

#[test]
fn the_openapi_document_describes_every_route() {
    let api = TestApi::start(|_| {});
    let doc = api.call_as(None, "GET", "/v1/openapi.json", None, &[]).json;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/messages", "post"),
        ("/v1/messages/batch", "post"),
        ("/v1/templates", "get"),
        ("/v1/templates/{emailType}", "get"),
        ("/v1/templates/{emailType}", "put"),
        ("/v1/templates/{emailType}", "delete"),
        ("/v1/users/{userId}/preferences", "put"),
        ("/v1/users/{userId}/preferences", "get"),
        ("/v1/users/{userId}/preferences", "delete"),
        ("/v1/history", "get"),
        ("/v1/messages/{id}", "get"),
        ("/v1/alerts", "get"),
        ("/v1/inbound", "post"),
        ("/v1/suppressions", "get"),
        ("/v1/suppressions", "post"),
        ("/v1/suppressions/{address}", "get"),
        ("/v1/suppressions/{address}", "delete"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/dead-letters", "get"),
        ("/v1/webhooks/{id}/dead-letters/redrive", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
        // And it is served: without a key every documented route answers 401, not 404.
        let concrete = path
            .replace("{emailType}", "welcome")
            .replace("{userId}", "42")
            .replace("{address}", "ann@example.com")
            .replace("{id}", "0193a4f2c7b87e31a0f6b2d9c4e5a6b7");
        let reply = api.call_as(None, &method.to_uppercase(), &concrete, None, &[]);
        assert_eq!(reply.status, 401, "{method} {concrete}");
    }
    // The provider webhooks are documented; they authenticate by signature, not key.
    for path in ["/webhooks/ses", "/webhooks/sendgrid"] {
        assert!(paths[path]["post"].is_object(), "{path} is not documented");
        assert!(
            paths[path]["post"]["security"].is_null(),
            "{path} needs no key"
        );
    }
    // The links in tracked mail: documented, no key (the token is signed), and a
    // token this server did not make is 404.
    for (path, method) in [
        ("/t/o/{token}", "get"),
        ("/t/c/{token}", "get"),
        ("/u/{token}", "get"),
        ("/u/{token}", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
        assert!(
            paths[path][method]["security"].is_null(),
            "{path} needs no key"
        );
        let concrete = path.replace("{token}", "AAAA");
        let reply = api.call_as(None, &method.to_uppercase(), &concrete, None, &[]);
        assert_eq!(reply.status, 404, "{method} {concrete}");
    }
    assert_eq!(paths.len(), 26);
    for schema in [
        "MessageRequest",
        "Problem",
        "TemplateForm",
        "ExplicitForm",
        "RawForm",
        "MetaFields",
        "HistoryPage",
        "MessageHistory",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
