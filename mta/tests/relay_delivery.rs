//! Delivery through MX lookup to a real SMTP peer (the harness's fault-injecting sink),
//! with one server for the suite: routing (MX preference, implicit MX, null MX, DNS
//! failure, NXDOMAIN), connection reuse, retries, bounces, dropped connections, site
//! isolation, and the history and dead-letter store an operator reads.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::relay_env::RelayEnv;
use common::{Client, queued_id};

fn env() -> &'static RelayEnv {
    static ENV: OnceLock<RelayEnv> = OnceLock::new();
    // A static route that demands TLS, to a sink that does not offer STARTTLS.
    ENV.get_or_init(|| {
        RelayEnv::start(
            "[relay.routes.\"tlsreq.test\"]\nhost = \"{sink}\"\ntls = \"required\"\n",
            "",
        )
    })
}

/// Sends one message with a unique Message-ID; returns (queue id, Message-ID).
fn send(from: &str, to: &[&str], tag: &str) -> (String, String) {
    let message_id = format!("<{tag}.{}@relay.test>", uuid_like());
    let body = format!("Message-ID: {message_id}\nSubject: {tag}\n\nbody of {tag}\n");
    let mut c = Client::greeted(env().server.relay);
    let id = queued_id(&c.send_mail(from, to, &body)).to_string();
    c.expect("QUIT", 221);
    (id, message_id)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn delivers_by_mx_and_records_history() {
    let (id, mid) = send("s@src.test", &["one@fast.test"], "mx");
    let events = env().wait_for_event(&id, "one@fast.test", "delivered", WAIT);
    assert_eq!(env().deliveries(&mid, "one@fast.test"), 1);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["queued", "delivered"], "{events:#?}");
    let delivered = &events[1];
    assert_eq!(delivered["reply"]["code"], 250);
    assert_eq!(delivered["attempt"], 1);
    assert!(
        delivered["remote_host"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{delivered}"
    );
}

#[test]
fn many_recipients_of_one_domain_share_one_transaction() {
    let rcpts = ["a@fast.test", "b@fast.test", "c@fast.test"];
    let (id, mid) = send("s@src.test", &rcpts, "multi");
    for r in rcpts {
        env().wait_for_event(&id, r, "delivered", WAIT);
        assert_eq!(env().deliveries(&mid, r), 1);
    }
    let transactions: Vec<_> = env()
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.message_id.as_deref() == Some(mid.as_str()))
        .collect();
    assert_eq!(
        transactions.len(),
        1,
        "one transaction for three recipients"
    );
    assert_eq!(transactions[0].recipients.len(), 3);
}

#[test]
fn implicit_mx_delivers_to_the_domain_itself() {
    let (id, mid) = send("s@src.test", &["x@implicit.test"], "implicit");
    env().wait_for_event(&id, "x@implicit.test", "delivered", WAIT);
    assert_eq!(env().deliveries(&mid, "x@implicit.test"), 1);
}

#[test]
fn temporary_failure_is_retried_and_delivered_once() {
    let (id, mid) = send("s@src.test", &["tempfail-once@fast.test"], "retry");
    let events = env().wait_for_event(&id, "tempfail-once@fast.test", "delivered", WAIT);
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["queued", "deferred", "delivered"], "{events:#?}");
    assert_eq!(events[1]["reply"]["code"], 451);
    // The bounce classifier labels the reply ("451 4.3.0 Try again later").
    assert_eq!(events[1]["reason"], "systemerror", "{events:#?}");
    assert!(events[2]["reason"].is_null(), "{events:#?}");
    assert_eq!(events[2]["attempt"], 2);
    assert_eq!(env().deliveries(&mid, "tempfail-once@fast.test"), 1);
}

#[test]
fn permanent_failure_bounces_into_the_dead_letter_store_without_retry() {
    let (id, mid) = send(
        "s@src.test",
        &["permfail@fast.test", "ok@fast.test"],
        "bounce",
    );
    let events = env().wait_for_event(&id, "permfail@fast.test", "bounced", WAIT);
    env().wait_for_event(&id, "ok@fast.test", "delivered", WAIT);
    let bounced = events.iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["reply"]["code"], 550);
    assert_eq!(bounced["reason"], "userunknown", "{bounced}");
    assert_eq!(env().deliveries(&mid, "permfail@fast.test"), 0);
    assert_eq!(env().deliveries(&mid, "ok@fast.test"), 1);

    let letter = env().cli_json(&["dlq", "inspect", &id]);
    let rcpts: Vec<_> = letter["envelope"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].clone())
        .collect();
    assert_eq!(rcpts, ["permfail@fast.test"], "{letter}");
    assert!(
        letter["reason"].as_str().unwrap().contains("550"),
        "{letter}"
    );
    // Not retried: no deferred event, and nothing of it left in the queue.
    assert!(!env().history(&id).iter().any(|e| e["kind"] == "deferred"));
}

#[test]
fn null_mx_bounces_at_once() {
    let (id, _) = send("s@src.test", &["x@nullmx.test"], "nullmx");
    let events = env().wait_for_event(&id, "x@nullmx.test", "bounced", WAIT);
    let bounced = events.iter().find(|e| e["kind"] == "bounced").unwrap();
    // No server was asked: a local reason, with a status but no reply code.
    assert!(bounced["reply"]["code"].is_null(), "{bounced}");
    assert_eq!(bounced["reply"]["enhanced"], "5.1.10");
    assert_eq!(bounced["reason"], "notaccept", "{bounced}");
}

#[test]
fn unknown_domain_bounces() {
    let (id, _) = send("s@src.test", &["x@other.test"], "nxdomain");
    let events = env().wait_for_event(&id, "x@other.test", "bounced", WAIT);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "bounced" && e["reply"]["enhanced"] == "5.1.2"),
        "{events:#?}"
    );
}

#[test]
fn dns_failure_defers() {
    let (id, _) = send("s@src.test", &["x@broken.test"], "servfail");
    let events = env().wait_for_event(&id, "x@broken.test", "deferred", WAIT);
    let deferred = events.iter().find(|e| e["kind"] == "deferred").unwrap();
    assert_eq!(deferred["reply"]["enhanced"], "4.4.3", "{deferred}");
    assert_eq!(deferred["reason"], "networkerror", "{deferred}");
}

#[test]
fn connection_dropped_mid_data_is_deferred_and_never_counted_delivered() {
    let (id, mid) = send("s@src.test", &["dropdata@fast.test"], "drop");
    env().wait_for_event(&id, "dropdata@fast.test", "deferred", WAIT);
    assert!(env().sink.stats().dropped >= 1);
    assert_eq!(env().deliveries(&mid, "dropdata@fast.test"), 0);
    assert!(!env().history(&id).iter().any(|e| e["kind"] == "delivered"));
}

#[test]
fn a_slow_site_does_not_hold_up_the_others() {
    let slow: Vec<_> = (0..3)
        .map(|i| send("s@src.test", &[&format!("u{i}@slow.test")], "slow"))
        .collect();
    let fast: Vec<_> = (0..20)
        .map(|i| send("s@src.test", &[&format!("f{i}@fast.test")], "fast"))
        .collect();
    for (i, (id, _)) in fast.iter().enumerate() {
        env().wait_for_event(id, &format!("f{i}@fast.test"), "delivered", WAIT);
    }
    // Every fast message arrived while the slow site (3 s per reply) had delivered none.
    let slow_done = slow
        .iter()
        .enumerate()
        .filter(|(i, (_, mid))| env().deliveries(mid, &format!("u{i}@slow.test")) > 0)
        .count();
    assert_eq!(slow_done, 0, "the slow site finished before the fast one");
    for (i, (id, _)) in slow.iter().enumerate() {
        env().wait_for_event(id, &format!("u{i}@slow.test"), "delivered", WAIT);
    }
}

#[test]
fn a_route_that_requires_tls_defers_when_the_server_lacks_it() {
    let (id, mid) = send("s@src.test", &["x@tlsreq.test"], "tlsreq");
    let events = env().wait_for_event(&id, "x@tlsreq.test", "deferred", WAIT);
    let deferred = events.iter().find(|e| e["kind"] == "deferred").unwrap();
    assert_eq!(deferred["reply"]["enhanced"], "4.7.4", "{deferred}");
    assert_eq!(env().deliveries(&mid, "x@tlsreq.test"), 0);
}

#[test]
fn falls_back_to_the_next_mx_when_the_preferred_one_is_down() {
    let (id, mid) = send("s@src.test", &["x@fallback.test"], "fallback");
    let events = env().wait_for_event(&id, "x@fallback.test", "delivered", WAIT);
    let delivered = events.iter().find(|e| e["kind"] == "delivered").unwrap();
    assert!(
        delivered["remote_host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{delivered}"
    );
    assert_eq!(env().deliveries(&mid, "x@fallback.test"), 1);
}

/// `X-Postroad-*` headers from an allowed client set the metadata the history is
/// queried by; they are gone from what the receiver gets; a bad value is refused.
#[test]
fn metadata_headers_reach_the_history_and_never_the_receiver() {
    let message_id = format!("<meta.{}@relay.test>", uuid_like());
    let user_id = 9_000_000 + (std::process::id() as u64);
    let body = format!(
        "Message-ID: {message_id}\nX-Postroad-User-Id: {user_id}\nX-Postroad-Email-Type: welcome\n\
         X-Postroad-Priority: high\nX-Postroad-Tags: plan=pro, region=eu\nSubject: meta\n\nhello\n"
    );
    let mut c = Client::greeted(env().server.relay);
    let id = queued_id(&c.send_mail("s@src.test", &["meta@fast.test"], &body)).to_string();
    env().wait_for_event(&id, "meta@fast.test", "delivered", WAIT);

    let data = env().server.data_dir();
    let by_user = |extra: &[&str]| -> Vec<serde_json::Value> {
        let user = user_id.to_string();
        let mut args = vec!["history", "--user-id", &user, "--json", "--data-dir"];
        args.push(data.to_str().unwrap());
        args.extend_from_slice(extra);
        let (ok, out) = common::run(common::binary(), &args, None);
        assert!(ok, "{out}");
        let page: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        page["rows"].as_array().unwrap().clone()
    };
    // One row per recipient, with its current status and the message's metadata.
    let rows = by_user(&[]);
    let statuses: Vec<_> = rows.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["delivered"], "{rows:#?}");
    for e in &rows {
        assert_eq!(e["message_id"], id);
        assert_eq!(e["meta"]["user_id"], user_id);
        assert_eq!(e["meta"]["email_type"], "welcome");
        assert_eq!(e["meta"]["priority"], "high");
        assert_eq!(e["meta"]["tags"][1], serde_json::json!(["region", "eu"]));
    }
    assert_eq!(by_user(&["--email-type", "welcome"]).len(), 1);
    assert!(by_user(&["--email-type", "digest"]).is_empty());

    let received = env()
        .sink
        .messages()
        .into_iter()
        .find(|m| m.message_id.as_deref() == Some(message_id.as_str()))
        .expect("the sink got the message");
    let text = String::from_utf8_lossy(&received.data).to_ascii_lowercase();
    assert!(!text.contains("x-postroad-"), "{text}");
    assert!(text.contains("subject: meta"), "{text}");

    // A bad value: refused at the end of data, naming the header; the session goes on.
    c.expect("MAIL FROM:<s@src.test>", 250);
    c.expect("RCPT TO:<meta@fast.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"X-Postroad-Priority: urgent\r\nSubject: bad\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 550, "{r}");
    assert!(
        r.to_string()
            .contains("5.6.0 X-Postroad-Priority: priority must be high, normal or bulk"),
        "{r}"
    );
    c.expect("QUIT", 221);
}

/// `/metrics` counts events by kind, email type and destination group, and shows the
/// latency histograms and queue gauges (Prometheus text, read with curl).
#[test]
fn metrics_count_events_by_kind_email_type_and_destination() {
    let body =
        "Message-ID: <metrics@relay.test>\nX-Postroad-Email-Type: receipt\nSubject: m\n\nx\n";
    let mut c = Client::greeted(env().server.relay);
    let id = queued_id(&c.send_mail("s@src.test", &["m@fast.test"], body)).to_string();
    c.expect("QUIT", 221);
    env().wait_for_event(&id, "m@fast.test", "delivered", WAIT);
    let want =
        "postroad_events_total{kind=\"delivered\",email_type=\"receipt\",destination=\"other\"} 1";
    // The counter is written by the events fan-out, right after the history.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = env().metrics();
        if text.contains(want) || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains(want), "{text}");
    for metric in [
        "postroad_events_total{kind=\"queued\",email_type=\"receipt\",destination=\"other\"} 1",
        "# TYPE postroad_smtp_ack_seconds histogram",
        "# TYPE postroad_delivery_seconds histogram",
        "postroad_queue_messages{state=\"ready\"}",
        "postroad_smtp_connections",
    ] {
        assert!(text.contains(metric), "no {metric:?} in\n{text}");
    }
    // Every metric the shipped Prometheus rules compute from is one Postroad exports.
    let rules = include_str!("../../deploy/prometheus/postroad-alerts.yml");
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("postroad_"))
        .collect();
    assert!(used.len() >= 3, "{used:?}");
    for metric in used {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{metric}{{"))
                    || l.starts_with(&format!("{metric} "))),
            "the alert rules use {metric}, which /metrics does not have:\n{text}"
        );
    }
}
