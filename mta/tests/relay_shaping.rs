//! Traffic shaping on a running server: `check-shaping` on good and bad files; a
//! domain with its own entry gets its own site and limits (`postroad queue sites`);
//! a receiver answering `421 4.7.0` above 20 messages a second makes the site back off
//! (its rate cut, the reply shown as the reason) and every message still arrives once;
//! SIGHUP and `postroad queue reload-shaping` apply a changed file, and a broken one is
//! refused while the running one stays; reply rules bounce a temporary failure they
//! name and suspend a site (its next message deferred, saying why); a provider's
//! aggregate rate holds for its sites together, and a provider-wide rule suspends
//! every site of the provider.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::http::{api_key, send_batch};
use common::relay_env::RelayEnv;
use common::{Client, binary, queued_id, run, wait_until};
use postroad_loadtest::sink::Faults;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const BURST: usize = 200;

fn check_shaping(text: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    run(
        binary(),
        &["check-shaping", file.path().to_str().unwrap()],
        None,
    )
}

#[test]
fn check_shaping_prints_the_layers_or_names_the_mistake() {
    let (ok, out) = check_shaping(
        "[provider.big]\nmatch = [{ MXSuffix = \".big.test\" }]\nconnection_limit = 3\n\
         max_message_rate = \"10,000/h\"\n",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "provider big (MX .big.test): connection_limit = 3; max_message_rate = \"10000/h\""
        ),
        "{out}"
    );
    let (ok, out) = check_shaping("[domain.\"a.test\"]\nmax_message_rate = \"fast\"\n");
    assert!(!ok);
    assert!(
        out.contains("max_message_rate") && out.contains("not a rate"),
        "{out}"
    );
}

/// `postroad ARGS` against the server's admin endpoint (text output); (ok, output).
fn admin_cli(env: &RelayEnv, args: &[&str]) -> (bool, String) {
    let admin = format!("http://127.0.0.1:{}", env.admin);
    let data = env.server.data_dir();
    let mut all = args.to_vec();
    all.extend(["--admin", &admin, "--data-dir", data.to_str().unwrap()]);
    run(binary(), &all, None)
}

/// A server whose relay runs under the shaping file `text` (the directory holds it).
fn with_shaping(text: &str) -> (tempfile::TempDir, std::path::PathBuf, RelayEnv) {
    let dir = tempfile::tempdir().unwrap();
    let shaping = dir.path().join("shaping.toml");
    std::fs::write(&shaping, text).unwrap();
    let env = RelayEnv::start(&format!("shaping_file = \"{}\"\n", shaping.display()), "");
    (dir, shaping, env)
}

fn sites(env: &RelayEnv) -> Vec<Value> {
    env.cli_json(&["queue", "sites"])["sites"]
        .as_array()
        .expect("a sites array")
        .clone()
}

fn site<'a>(sites: &'a [Value], key_part: &str) -> Option<&'a Value> {
    sites
        .iter()
        .find(|s| s["site"].as_str().unwrap_or("").contains(key_part))
}

#[test]
fn a_throttling_receiver_makes_its_site_back_off_and_reloads_change_the_limits() {
    let (_dir, shaping, env) = with_shaping("[domain.\"later.test\"]\nconnection_limit = 4\n");
    // later.test's receiver takes 20 messages a second; more get 421 4.7.0.
    let limited = Faults {
        rate_limit: Some(20.0),
        ..Faults::default()
    };
    env.sink
        .set_faults(
            Faults::default(),
            HashMap::from([("later.test".to_string(), limited)]),
        )
        .unwrap();

    // One batch, one commit: the relay has the whole burst at once.
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let messages: Vec<Value> = (0..BURST)
        .map(|i| {
            json!({"from": "a@src.test", "to": [format!("r{i}@later.test")],
                "subject": format!("burst {i}"), "text": "Hi.",
                "headers": {"Message-ID": format!("<burst.{i}@src.test>")}})
        })
        .collect();
    send_batch(env.server.http, key.trim(), &messages);
    send_batch(
        env.server.http,
        key.trim(),
        &[
            json!({"from": "a@src.test", "to": ["ann@fast.test"], "subject": "other", "text": "Hi."}),
        ],
    );
    let ids: Vec<String> = (0..BURST)
        .map(|i| format!("<burst.{i}@src.test>"))
        .collect();
    wait_until(
        "every burst message delivered",
        WAIT,
        || {
            ids.iter()
                .enumerate()
                .all(|(i, id)| env.deliveries(id, &format!("r{i}@later.test")) >= 1)
        },
        || env.server.log(),
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            env.deliveries(id, &format!("r{i}@later.test")),
            1,
            "{id} exactly once"
        );
    }

    let all = sites(&env);
    let later =
        site(&all, "later.test@").unwrap_or_else(|| panic!("later.test's own site: {all:#?}"));
    assert_eq!(later["shape"]["domain"], "later.test");
    assert_eq!(later["shape"]["connection_limit"], 4);
    assert_eq!(later["state"], "backoff", "{later:#}");
    assert!(
        later["reason"].as_str().unwrap().contains("421"),
        "{later:#}"
    );
    let rate = later["message_rate"].as_f64().expect("a learned rate");
    assert!(rate > 0.0, "{later:#}");
    let fast =
        site(&all, "mx:mx1.sink.test,mx2").unwrap_or_else(|| panic!("fast.test's site: {all:#?}"));
    assert_eq!(fast["shape"]["domain"], Value::Null);
    assert_eq!(
        fast["shape"]["connection_limit"], 16,
        "the built-in default"
    );
    assert_eq!(fast["state"], "normal");

    // A changed file, applied by SIGHUP.
    std::fs::write(
        &shaping,
        "[domain.\"later.test\"]\nconnection_limit = 2\nmax_message_rate = \"5/s\"\n",
    )
    .unwrap();
    env.server.hangup();
    wait_until(
        "SIGHUP applies the new limits",
        WAIT,
        || {
            let all = sites(&env);
            site(&all, "later.test@").is_some_and(|s| {
                s["shape"]["connection_limit"] == 2
                    && s["message_rate"].as_f64().is_some_and(|r| r <= 5.0)
            })
        },
        || env.server.log(),
    );

    // A broken file is refused; the running one stays.
    std::fs::write(&shaping, "[domain.\"later.test\"]\nconnection_limit = 0\n").unwrap();
    let (ok, out) = admin_cli(&env, &["queue", "reload-shaping"]);
    assert!(
        !ok && out.contains("connection_limit must be above 0"),
        "{out}"
    );
    let all = sites(&env);
    assert_eq!(
        site(&all, "later.test@").unwrap()["shape"]["connection_limit"],
        2
    );

    std::fs::write(&shaping, "[domain.\"later.test\"]\nconnection_limit = 3\n").unwrap();
    let (ok, out) = admin_cli(&env, &["queue", "reload-shaping"]);
    assert!(
        ok && out.contains("domain later.test: connection_limit = 3"),
        "{out}"
    );
    let (ok, table) = admin_cli(&env, &["queue", "sites"]);
    assert!(ok, "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("later.test@"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("domain later.test") && line.contains("/3"),
        "{table}"
    );
}

#[test]
fn reply_rules_bounce_what_they_name_and_suspend_a_site() {
    let (_dir, _, env) = with_shaping(
        r#"
[domain."later.test"]
connection_limit = 2

[domain."postfix.test"]
connection_limit = 2

[[automation]]
name = "tempfail is final here"
domain = "later.test"
regex = '451 4\.3\.0'
action = "bounce"

[[automation]]
name = "mailbox gone"
domain = "postfix.test"
regex = ['5\.1\.1']
action = "suspend"
duration = "10m"
"#,
    );
    let tempfail = Faults {
        tempfail_share: 1.0,
        ..Faults::default()
    };
    let permfail = Faults {
        permfail_share: 1.0,
        ..Faults::default()
    };
    env.sink
        .set_faults(
            Faults::default(),
            HashMap::from([
                ("later.test".to_string(), tempfail),
                ("postfix.test".to_string(), permfail),
            ]),
        )
        .unwrap();
    let mut client = Client::greeted(env.server.relay);
    let send = |client: &mut Client, to: &str| {
        let reply = client.send_mail("a@src.test", &[to], "Subject: rules\r\n\r\nHi.\r\n");
        queued_id(&reply).to_string()
    };

    // A 451 the rule names is a bounce, on the first attempt.
    let id = send(&mut client, "ann@later.test");
    let events = env.wait_for_event(&id, "ann@later.test", "bounced", WAIT);
    assert!(
        events.iter().all(|e| e["kind"] != "deferred"),
        "{events:#?}"
    );
    let bounced = events.iter().find(|e| e["kind"] == "bounced").unwrap();
    assert_eq!(bounced["reply"]["code"], 451, "{bounced:#}");
    assert_eq!(bounced["reply"]["enhanced"], "4.3.0", "{bounced:#}");

    // A 550 5.1.1 suspends postfix.test's site: the next message waits, saying why.
    let first = send(&mut client, "bob@postfix.test");
    env.wait_for_event(&first, "bob@postfix.test", "bounced", WAIT);
    let second = send(&mut client, "cy@postfix.test");
    let events = env.wait_for_event(&second, "cy@postfix.test", "deferred", WAIT);
    let deferred = events.iter().find(|e| e["kind"] == "deferred").unwrap();
    let reply = deferred["reply"]["text"].as_str().unwrap();
    assert!(
        reply.contains("suspended") && reply.contains("mailbox gone"),
        "{deferred:#}"
    );
    let all = sites(&env);
    let suspended = site(&all, "postfix.test@").unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(suspended["state"], "suspended", "{suspended:#}");
    assert!(suspended["until_ms"].as_u64().is_some());
    assert!(
        suspended["reason"].as_str().unwrap().contains("550 5.1.1"),
        "{suspended:#}"
    );
    // Other sites go on.
    let other = send(&mut client, "dee@fast.test");
    env.wait_for_event(&other, "dee@fast.test", "delivered", WAIT);
}

#[test]
fn a_provider_holds_all_its_sites_to_one_rate_and_one_suspension() {
    // fast.test (MX mx1+mx2.sink.test), later.test and postfix.test (MX mx1.sink.test)
    // are different sites of one provider; implicit.test (no MX) is not its.
    let (_dir, shaping, env) = with_shaping(
        r#"
[provider.sinkco]
match = [{ MXSuffix = ".sink.test" }]
provider_max_message_rate = "10/s"

[[automation]]
name = "sinkco blocks us"
provider = "sinkco"
scope = "provider"
regex = ['5\.1\.1']
action = "suspend"
duration = "10m"
"#,
    );
    let (ok, out) = check_shaping(&std::fs::read_to_string(&shaping).unwrap());
    assert!(ok, "{out}");
    assert!(
        out.contains("all its sites together: 10/s")
            && out.contains("suspend for 10m, at once (provider sinkco, all its sites)"),
        "{out}"
    );

    // 15 messages to each of two sites, at once: 10 a second for both together.
    let key = api_key(&env.server, &["create", "--name", "app"]);
    let messages: Vec<Value> = (0..30)
        .map(|i| {
            let domain = if i % 2 == 0 {
                "fast.test"
            } else {
                "later.test"
            };
            json!({"from": "a@src.test", "to": [format!("r{i}@{domain}")],
                "subject": format!("paced {i}"), "text": "Hi.",
                "headers": {"Message-ID": format!("<paced.{i}@src.test>")}})
        })
        .collect();
    send_batch(env.server.http, key.trim(), &messages);
    wait_until(
        "all 30 delivered",
        WAIT,
        || {
            env.sink
                .messages()
                .iter()
                .filter(|m| {
                    m.message_id
                        .as_deref()
                        .is_some_and(|id| id.starts_with("<paced."))
                })
                .count()
                >= 30
        },
        || env.server.log(),
    );
    let mut times: Vec<u64> = env
        .sink
        .messages()
        .iter()
        .filter(|m| {
            m.message_id
                .as_deref()
                .is_some_and(|id| id.starts_with("<paced."))
        })
        .map(|m| m.received_at_us)
        .collect();
    times.sort_unstable();
    let spread = Duration::from_micros(times[29] - times[0]);
    // The first slot is free, each next one 100 ms later: at least 2.9 s for 30.
    assert!(
        spread >= Duration::from_millis(2800),
        "30 messages to two sites of a 10/s provider arrived within {spread:?}"
    );

    // A 550 5.1.1 at postfix.test's site suspends the provider: fast.test's site
    // (another MX set) holds its mail too, implicit.test's goes on.
    env.sink
        .set_faults(
            Faults::default(),
            HashMap::from([(
                "postfix.test".to_string(),
                Faults {
                    permfail_share: 1.0,
                    ..Faults::default()
                },
            )]),
        )
        .unwrap();
    let mut client = Client::greeted(env.server.relay);
    let mut send = |to: &str| {
        let reply = client.send_mail("a@src.test", &[to], "Subject: rules\r\n\r\nHi.\r\n");
        queued_id(&reply).to_string()
    };
    let first = send("bob@postfix.test");
    env.wait_for_event(&first, "bob@postfix.test", "bounced", WAIT);
    let held = send("cy@fast.test");
    let events = env.wait_for_event(&held, "cy@fast.test", "deferred", WAIT);
    let deferred = events.iter().find(|e| e["kind"] == "deferred").unwrap();
    let reply = deferred["reply"]["text"].as_str().unwrap();
    assert!(
        reply.contains("provider sinkco suspended") && reply.contains("sinkco blocks us"),
        "{deferred:#}"
    );
    let all = sites(&env);
    let fast = site(&all, "mx1.sink.test,mx2.sink.test")
        .unwrap_or_else(|| panic!("fast.test's site: {all:#?}"));
    assert_eq!(fast["state"], "suspended", "{fast:#}");
    assert!(
        fast["reason"].as_str().unwrap().contains("550 5.1.1"),
        "{fast:#}"
    );
    let free = send("dee@implicit.test");
    env.wait_for_event(&free, "dee@implicit.test", "delivered", WAIT);
}
