//! User preferences and the templates' shared cache: embedded without Redis, in the
//! real Redis at 127.0.0.1:6379 with it (hashes `user:prefs:*`, `email:template:*`, a
//! change announced to every node), and a Redis that is down costing nothing but the
//! values only it holds.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Setup, TestApi};
use mail_parser::MessageParser;
use serde_json::{Value, json};

const REDIS: &str = "redis://127.0.0.1:6379/";

fn put(api: &TestApi, path: &str, body: &Value) -> common::Reply {
    api.call(
        "PUT",
        path,
        Some(("application/json", body.to_string().into_bytes())),
        &[],
    )
}

fn welcome(subject: &str) -> Value {
    json!({
        "subject": subject,
        "text": "Hi {{ name }}.",
        "from": "team@example.com",
        "locales": {"fr": {"subject": "Bienvenue, {{ name }} !", "text": "Salut {{ name }}."}}
    })
}

/// The subject of the message a template-form request queued.
fn subject_of(api: &TestApi, reply: &common::Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    let (_, body) = api.queued(reply.json["id"].as_str().unwrap());
    let parsed = MessageParser::new().parse(&body).unwrap();
    parsed.subject().unwrap_or_default().to_string()
}

fn message(user_id: u64, data: Value) -> Value {
    json!({"userId": user_id, "emailType": "welcome", "recipient": "u@example.com",
        "templateData": data})
}

fn preferences_render_under_template_data(api: &TestApi) {
    assert_eq!(
        put(
            api,
            "/v1/templates/welcome",
            &welcome("Welcome, {{ name }}!")
        )
        .status,
        201
    );
    let prefs = json!({"name": "Ann", "language": "fr", "timezone": "Europe/Paris"});
    let stored = put(api, "/v1/users/77/preferences", &prefs);
    assert_eq!((stored.status, &stored.json), (200, &prefs));
    assert_eq!(
        api.call("GET", "/v1/users/77/preferences", None, &[]).json,
        prefs
    );

    // The user's language picks the variant; their name fills the template.
    let reply = api.post("/v1/messages", &message(77, json!({})));
    assert_eq!(subject_of(api, &reply), "Bienvenue, Ann !");
    // templateData wins over preferences, and a requested locale over the language.
    let mut english = message(77, json!({"name": "Zoe"}));
    english["locale"] = json!("en");
    let reply = api.post("/v1/messages", &english);
    assert_eq!(subject_of(api, &reply), "Welcome, Zoe!");

    // One read for the whole batch; a user without preferences lacks the name.
    let batch = json!({"messages": [message(77, json!({})), message(78, json!({}))]});
    let reply = api.post("/v1/messages/batch", &batch);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["results"][0]["status"], "accepted");
    assert_eq!(
        reply.json["results"][1]["errors"][0]["pointer"],
        "/messages/1/templateData/name"
    );

    let bad = put(
        api,
        "/v1/users/77/preferences",
        &json!({"name": 5, "bad name": "x"}),
    );
    assert!(bad.is_problem(422, "invalid-request"), "{bad:?}");
    assert_eq!(
        bad.errors(),
        [
            ("/bad name".to_string(), "invalid-value".to_string()),
            ("/name".to_string(), "invalid-type".to_string())
        ]
    );
    let bad = put(api, "/v1/users/nobody/preferences", &prefs);
    assert!(bad.is_problem(422, "invalid-request"), "{bad:?}");

    assert_eq!(
        api.call("DELETE", "/v1/users/77/preferences", None, &[])
            .status,
        204
    );
    let gone = api.call("GET", "/v1/users/77/preferences", None, &[]);
    assert!(gone.is_problem(404, "not-found"), "{gone:?}");
    assert_eq!(
        api.call("DELETE", "/v1/users/77/preferences", None, &[])
            .status,
        404
    );
}

#[test]
fn preferences_in_the_embedded_store() {
    let api = TestApi::start(|_| {});
    preferences_render_under_template_data(&api);
}

#[test]
fn embedded_preferences_are_found_after_a_restart() {
    let first = TestApi::start(|_| {});
    assert_eq!(
        put(
            &first,
            "/v1/templates/welcome",
            &welcome("Hello {{ name }}")
        )
        .status,
        201
    );
    assert_eq!(
        put(&first, "/v1/users/31/preferences", &json!({"name": "Ann"})).status,
        200
    );
    // A new process on the same data directory knows who has preferences.
    let second = TestApi::start_with(
        Setup {
            beside: Some(first.share()),
            ..Setup::default()
        },
        |_| {},
    );
    drop(first);
    let reply = second.post("/v1/messages", &message(31, json!({})));
    assert_eq!(subject_of(&second, &reply), "Hello Ann");
}

/// A tenant no other run uses, so that runs sharing the Redis never meet.
fn fresh_tenant() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}-{nanos}", std::process::id())
}

fn redis() -> redis::Connection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn with_redis_preferences_are_hashes_and_template_changes_reach_every_node() {
    let tenant = fresh_tenant();
    let setup = || Setup {
        redis: Some(REDIS.into()),
        tenant: Some(tenant.clone()),
        ..Setup::default()
    };
    let a = TestApi::start_with(setup(), |_| {});
    preferences_render_under_template_data(&a);
    let mut conn = redis();
    assert_eq!(
        put(&a, "/v1/users/5/preferences", &json!({"name": "Eve"})).status,
        200
    );
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("user:prefs:{tenant}:5"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        hash,
        HashMap::from([("name".to_string(), "Eve".to_string())])
    );

    // A second node on the same database and Redis.
    let b = TestApi::start_with(
        Setup {
            beside: Some(a.share()),
            ..setup()
        },
        |_| {},
    );
    assert_eq!(
        put(&a, "/v1/templates/welcome", &welcome("One {{ name }}")).status,
        201
    );
    let first = Instant::now();
    let reply = b.post("/v1/messages", &message(5, json!({})));
    assert_eq!(subject_of(&b, &reply), "One Eve");
    let key = format!("email:template:{tenant}#welcome");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "cached for 24 h at most: {ttl}");

    // Node b has the template compiled in process; a change on a reaches it through
    // the announcement, well before b's own copy would expire (10 s).
    assert_eq!(
        put(&a, "/v1/templates/welcome", &welcome("Two {{ name }}")).status,
        201
    );
    loop {
        let reply = b.post("/v1/messages", &message(5, json!({})));
        if subject_of(&b, &reply) == "Two Eve" {
            break;
        }
        assert!(
            first.elapsed() < Duration::from_secs(5),
            "node b still renders the old version"
        );
        std::thread::yield_now();
    }

    assert_eq!(
        a.call("DELETE", "/v1/templates/welcome", None, &[]).status,
        204
    );
    loop {
        let reply = b.post("/v1/messages", &message(5, json!({})));
        if reply.status == 422 {
            assert_eq!(reply.errors()[0].1, "unknown-template", "{reply:?}");
            break;
        }
        assert!(
            first.elapsed() < Duration::from_secs(5),
            "node b still renders a deleted template"
        );
    }
    let cached: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert!(
        cached.ends_with("|-"),
        "a deleted template leaves a stamped tombstone: {cached}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(format!("user:prefs:{tenant}:5"))
        .query(&mut conn)
        .unwrap();
}

#[test]
fn a_redis_that_is_down_delays_nothing_but_what_only_it_holds() {
    // Nothing listens on port 1.
    let api = TestApi::start_with(
        Setup {
            redis: Some("redis://127.0.0.1:1/".into()),
            ..Setup::default()
        },
        |_| {},
    );
    assert_eq!(
        put(&api, "/v1/templates/welcome", &welcome("Hello {{ name }}")).status,
        201
    );
    // The change Redis could not take is kept (in the database) to announce later.
    let pending = api.runtime.block_on(api.store.announcements()).unwrap();
    assert_eq!(pending, [(String::new(), "welcome".to_string())]);
    // Templates come from the database.
    let reply = api.post("/v1/messages", &message(9, json!({"name": "Ann"})));
    assert_eq!(subject_of(&api, &reply), "Hello Ann");
    // Preferences live in Redis only: storing them waits for it.
    let reply = put(&api, "/v1/users/9/preferences", &json!({"name": "Ann"}));
    assert!(reply.is_problem(503, "store-unavailable"), "{reply:?}");
    assert!(reply.retry_after.is_some());
    // A message that may need them is deferred (503), not refused as invalid (422).
    let reply = api.post("/v1/messages", &message(9, json!({})));
    assert!(reply.is_problem(503, "store-unavailable"), "{reply:?}");
}

/// A private `redis-server` (no persistence) on a free port, stopped when dropped.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn get(&self, key: &str) -> Option<String> {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_going_away_mid_run_delays_only_what_it_holds_and_gets_the_change_it_missed() {
    let redis = PrivateRedis::start();
    let port = redis.port;
    let api = TestApi::start_with(
        Setup {
            redis: Some(redis.url()),
            ..Setup::default()
        },
        |_| {},
    );
    assert_eq!(
        put(&api, "/v1/templates/welcome", &welcome("One {{ name }}")).status,
        201
    );
    let reply = api.post("/v1/messages", &message(3, json!({"name": "Ann"})));
    assert_eq!(subject_of(&api, &reply), "One Ann");
    assert!(redis.get("email:template:welcome").unwrap().contains("One"));

    drop(redis);
    // Redis is gone: a change is still made (and kept to announce), mail still renders
    // and queues, only preferences (Redis' alone) wait.
    assert_eq!(
        put(&api, "/v1/templates/welcome", &welcome("Two {{ name }}")).status,
        201
    );
    let reply = api.post("/v1/messages", &message(3, json!({"name": "Ann"})));
    assert_eq!(subject_of(&api, &reply), "Two Ann");
    let reply = put(&api, "/v1/users/3/preferences", &json!({"name": "Ann"}));
    assert!(reply.is_problem(503, "store-unavailable"), "{reply:?}");

    // Back (empty): the missed change reaches it, and preferences work again.
    let redis = PrivateRedis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let cached = redis.get("email:template:welcome");
        let pending = api.runtime.block_on(api.store.announcements()).unwrap();
        if cached.as_deref().is_some_and(|c| c.contains("Two")) && pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the missed change never reached redis: {cached:?}, pending {pending:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let reply = put(&api, "/v1/users/3/preferences", &json!({"name": "Ann"}));
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "preferences still refused: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = api.post("/v1/messages", &message(3, json!({})));
    assert_eq!(subject_of(&api, &reply), "Two Ann");
}
