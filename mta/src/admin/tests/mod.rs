//! The admin endpoint in-process, against a real spool in a temporary directory, driven
//! through the real CLI client.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postroad_queue::{MessageId, Recipient, Resolution, Spool, SpoolConfig};

use super::client::{AdminClient, Call, StatusError};
use super::health::Health;
use super::*;

mod setup;

struct Harness {
    rt: tokio::runtime::Runtime,
    queue: Arc<dyn Queue>,
    url: String,
    token: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A spool and an admin endpoint on a free loopback port, token generated.
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let spool = Spool::open(SpoolConfig::new(dir.path().join("spool"))).unwrap();
        let queue: Arc<dyn Queue> = Arc::new(spool);
        let token = load_or_create_token(&AdminConfig::default(), dir.path()).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = rt.spawn(serve_admin(
            listener,
            token.clone(),
            queue.clone(),
            None,
            Health::new(),
            stop.clone(),
        ));
        Harness {
            rt,
            queue,
            url,
            token,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }

    fn client(&self) -> AdminClient {
        AdminClient::new(&self.url, &self.token).unwrap()
    }

    fn enqueue(&self, rcpts: &[&str], body: &[u8]) -> MessageId {
        let mut envelope = Envelope::new(
            "sender@example.test",
            rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            "127.0.0.1".parse().unwrap(),
        );
        envelope.helo = "client.test".into();
        envelope.size = body.len() as u64;
        let id = envelope.id;
        self.rt
            .block_on(self.queue.enqueue(envelope, Bytes::copy_from_slice(body)))
            .unwrap();
        id
    }

    /// Claims everything ready and resolves each claimed message with `f` (`None`:
    /// leave it claimed).
    fn claim_and(&self, f: impl Fn(&Envelope) -> Option<Resolution>) {
        let claimed = self.rt.block_on(self.queue.claim(100)).unwrap();
        for c in claimed {
            if let Some(resolution) = f(&c.envelope) {
                self.rt
                    .block_on(self.queue.resolve(c.envelope.id, resolution))
                    .unwrap();
            }
        }
    }

    /// Stops the endpoint and waits for its task to end.
    fn shutdown(&mut self) {
        self.stop.cancel();
        let task = self.task.take().unwrap();
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
            .expect("admin endpoint did not stop")
            .unwrap();
    }
}

fn status_of(e: &anyhow::Error) -> u16 {
    e.downcast_ref::<StatusError>()
        .unwrap_or_else(|| panic!("not an HTTP status error: {e:#}"))
        .status
}

fn deferred(e: &Envelope) -> Resolution {
    let mut retry = e.clone();
    for r in &mut retry.recipients {
        r.attempts += 1;
    }
    Resolution {
        retry: Some((retry, SystemTime::now() + Duration::from_secs(3600))),
        dead: None,
        events: Vec::new(),
    }
}

fn dead(e: &Envelope, reason: &str) -> Resolution {
    Resolution {
        retry: None,
        dead: Some((e.recipients.clone(), reason.into())),
        events: Vec::new(),
    }
}

/// A raw HTTP exchange, for what the client never sends (no token, odd methods).
fn raw_request(url: &str, method: &str, auth: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let mut request = match method {
        "POST" => ureq::http::Request::post(url),
        "PUT" => ureq::http::Request::put(url),
        _ => ureq::http::Request::get(url),
    };
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let mut response = agent.run(request.body(()).unwrap()).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

#[test]
fn every_endpoint_through_the_client() {
    let mut h = Harness::start();
    let client = h.client();

    let claimed_id = h.enqueue(
        &["a@one.test", "b@two.test"],
        b"Subject: one\r\n\r\nhello\r\n",
    );
    let deferred_id = h.enqueue(&["c@three.test"], b"Subject: two\r\n\r\nbody two\r\n");
    let bounced_id = h.enqueue(&["d@four.test"], b"Subject: three\r\n\r\nbounced\r\n");
    h.claim_and(|e| match e.id {
        id if id == deferred_id => Some(deferred(e)),
        id if id == bounced_id => Some(dead(e, "550 5.1.1 <d@four.test>: no such user")),
        _ => None,
    });
    let binary_body = b"Subject: bin\r\n\r\n\xff\xfe caf\xc3\xa9\r\n".to_vec();
    let ready_id = h.enqueue(&["e@five.test"], &binary_body);

    // stats
    let stats = client.stats().unwrap();
    assert_eq!(
        stats,
        client::Stats {
            queued: 3,
            ready: 1,
            deferred: 1,
            claimed: 1,
            dead_letters: 1,
        }
    );
    let text = cli::format_stats(&stats);
    assert!(text.contains("being delivered"), "{text}");

    // list, oldest first, with a limit
    let all = client.list(100).unwrap();
    let ids: Vec<MessageId> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, [claimed_id, deferred_id, ready_id]);
    assert_eq!(client.list(1).unwrap().len(), 1);
    assert_eq!(client.list(0).unwrap().len(), 0);
    assert_eq!(
        client.list(1_000_000).unwrap().len(),
        3,
        "capped, not refused"
    );
    let table = cli::format_queue(&all);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&claimed_id.to_string()), "{table}");
    assert!(table.contains("<sender@example.test>"), "{table}");
    assert!(table.contains("a@one.test"), "{table}");
    let deferred_row = table
        .lines()
        .find(|l| l.starts_with(&deferred_id.to_string()))
        .unwrap();
    assert!(deferred_row.contains("  1  "), "attempts: {deferred_row}");

    // inspect: lossy text, or the exact bytes with raw
    let (envelope, body) = client.inspect(&deferred_id.to_string(), false).unwrap();
    assert_eq!(envelope.recipients[0].attempts, 1);
    assert_eq!(body, b"Subject: two\r\n\r\nbody two\r\n");
    let (_, lossy) = client.inspect(&ready_id.to_string(), false).unwrap();
    assert!(
        String::from_utf8(lossy)
            .unwrap()
            .contains("\u{fffd}\u{fffd} café")
    );
    let (_, exact) = client.inspect(&ready_id.to_string(), true).unwrap();
    assert_eq!(exact, binary_body);
    let json = client
        .call_text(&Call::Inspect {
            id: &ready_id.to_string(),
            raw: true,
        })
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["body_encoding"], "base64");
    assert_eq!(json["envelope"]["id"], ready_id.to_string());
    let text = cli::format_envelope(&envelope);
    assert!(text.contains("c@three.test"), "{text}");
    assert!(text.contains("helo client.test"), "{text}");

    // inspect: unknown (404), a dead letter is not queued (404), bad id (400)
    let unknown = MessageId::new().to_string();
    assert_eq!(
        status_of(&client.inspect(&unknown, false).unwrap_err()),
        404
    );
    assert_eq!(
        status_of(&client.inspect(&bounced_id.to_string(), false).unwrap_err()),
        404
    );
    let e = client.inspect("not-an-id", false).unwrap_err();
    assert_eq!(status_of(&e), 400);
    assert!(e.to_string().contains("expected 32 hex digits"), "{e}");
    let hyphenated = uuid::Uuid::from_u128(deferred_id.as_u128())
        .hyphenated()
        .to_string();
    assert_eq!(
        status_of(&client.inspect(&hyphenated, false).unwrap_err()),
        400
    );
    let e = client.inspect("../../etc", false).unwrap_err();
    assert!(e.to_string().contains("invalid message id"), "{e}");

    // dead letters
    let letters = client.dead_letters(100).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, bounced_id);
    assert!(letters[0].reason.contains("no such user"));
    let table = cli::format_dead_letters(&letters);
    assert!(table.contains("DEAD SINCE (UTC)"), "{table}");
    assert!(table.contains("550 5.1.1"), "{table}");
    let (letter, body) = client
        .inspect_dead_letter(&bounced_id.to_string(), false)
        .unwrap();
    assert_eq!(letter.envelope.recipients[0].address, "d@four.test");
    assert_eq!(body, b"Subject: three\r\n\r\nbounced\r\n");
    let (_, raw) = client
        .inspect_dead_letter(&bounced_id.to_string(), true)
        .unwrap();
    assert_eq!(raw, body);
    assert!(cli::format_dead_letter(&letter).contains("no such user"));
    assert_eq!(
        status_of(
            &client
                .inspect_dead_letter(&claimed_id.to_string(), false)
                .unwrap_err()
        ),
        404
    );
    assert_eq!(
        status_of(&client.inspect_dead_letter("xyz", false).unwrap_err()),
        400
    );

    // flush: the deferred message is due now
    assert_eq!(client.flush().unwrap(), 1);
    let stats = client.stats().unwrap();
    assert_eq!((stats.deferred, stats.ready), (0, 2));
    assert_eq!(client.flush().unwrap(), 0);

    // requeue: back in the queue, gone from the dead letters
    let requeued = client.requeue(&bounced_id.to_string()).unwrap();
    assert!(client.dead_letters(100).unwrap().is_empty());
    let (envelope, body) = client.inspect(&requeued.to_string(), false).unwrap();
    assert_eq!(envelope.recipients[0].address, "d@four.test");
    assert_eq!(envelope.recipients[0].attempts, 0);
    assert_eq!(body, b"Subject: three\r\n\r\nbounced\r\n");
    let e = client.requeue(&bounced_id.to_string()).unwrap_err();
    assert_eq!(status_of(&e), 404);
    assert!(e.to_string().contains("no dead letter"), "{e}");
    assert_eq!(status_of(&client.requeue("zz").unwrap_err()), 400);

    // purge
    h.claim_and(|e| (e.id == requeued).then(|| dead(e, "expired")));
    assert_eq!(client.dead_letters(10).unwrap().len(), 1);
    assert_eq!(client.purge(&requeued.to_string()).unwrap(), requeued);
    assert!(client.dead_letters(10).unwrap().is_empty());
    assert_eq!(
        status_of(&client.purge(&requeued.to_string()).unwrap_err()),
        404
    );
    assert_eq!(status_of(&client.purge("nope").unwrap_err()), 400);
    assert_eq!(client.stats().unwrap().dead_letters, 0);

    h.shutdown();
}

#[test]
fn tokens_paths_and_methods_are_checked() {
    let mut h = Harness::start();
    let url = h.url.clone();

    // wrong token: 401 with a clear message
    let wrong = AdminClient::new(&url, "0123456789abcdef0123456789abcdef").unwrap();
    let e = wrong.stats().unwrap_err();
    assert_eq!(status_of(&e), 401);
    assert!(e.to_string().starts_with("401: wrong token"), "{e}");
    assert_eq!(status_of(&wrong.flush().unwrap_err()), 401);
    let prefix = AdminClient::new(&url, &h.token[..h.token.len() - 1]).unwrap();
    assert_eq!(status_of(&prefix.stats().unwrap_err()), 401);

    // no token, another scheme, on a real or unknown path: 401 before anything else
    for (path, auth) in [
        ("/v1/queue/stats", None),
        ("/v1/queue/stats", Some(format!("Basic {}", h.token))),
        ("/v1/queue/stats", Some("Bearer".to_string())),
        ("/nowhere", None),
    ] {
        let (status, body) = raw_request(&format!("{url}{path}"), "GET", auth.as_deref());
        assert_eq!(status, 401, "{path} {auth:?}: {body}");
        let body: ErrorBody = serde_json::from_str(&body).unwrap();
        assert!(!body.error.is_empty());
    }
    // the scheme is case-insensitive
    let auth = format!("bearer {}", h.token);
    let (status, _) = raw_request(&format!("{url}/v1/queue/stats"), "GET", Some(&auth));
    assert_eq!(status, 200);

    // unknown path 404, wrong method 405, bad query 400: all JSON
    let auth = format!("Bearer {}", h.token);
    for (method, path, expected) in [
        ("GET", "/nowhere", 404),
        ("GET", "/v1/queue/flush", 405),
        ("PUT", "/v1/dlq", 405),
        ("GET", "/v1/queue/messages?limit=ten", 400),
        ("GET", "/v1/queue/messages?limit=-1", 400),
        (
            "GET",
            "/v1/queue/messages/0123456789abcdef0123456789abcdef?raw=maybe",
            400,
        ),
    ] {
        let (status, body) = raw_request(&format!("{url}{path}"), method, Some(&auth));
        assert_eq!(status, expected, "{method} {path}: {body}");
        let body: ErrorBody = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        assert!(!body.error.is_empty());
    }

    h.shutdown();
    // stopped: the client says so in one line
    let e = h.client().stats().unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.starts_with(&format!("cannot reach the admin endpoint at {url}")),
        "{text}"
    );
    assert!(text.contains("is postroad serve running?"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn metrics_are_prometheus_text_behind_the_token() {
    let mut h = Harness::start();
    h.enqueue(&["a@x.test"], b"one");
    h.claim_and(|e| Some(dead(e, "550 no such user")));
    h.enqueue(&["b@x.test"], b"two");
    let url = format!("{}/metrics", h.url);
    let (status, _) = raw_request(&url, "GET", None);
    assert_eq!(status, 401);
    let (status, text) = raw_request(&url, "GET", Some(&format!("Bearer {}", h.token)));
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE postroad_queue_messages gauge"),
        "{text}"
    );
    assert!(
        text.contains("postroad_queue_messages{state=\"ready\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("postroad_queue_messages{state=\"dead_letter\"} 1\n"),
        "{text}"
    );
    h.shutdown();
}
