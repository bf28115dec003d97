//! Campaigns on a running server, by curl: a CSV list with bad rows (named by line),
//! duplicates in any case and a suppressed address is stored; the campaign built on it
//! sends the template, personalised, to every distinct good address once (none to the
//! suppressed one, a bounce for the one the sink refuses) and reports it, in the API
//! and in `postroad campaign`. A campaign sent inline as NDJSON is paused (no more
//! is queued), resumed (the rest is queued, nothing twice) and another is cancelled.

mod common;

use std::collections::HashMap;

use common::campaigns::{self, WAIT, received, wait_for};
use common::http::{api_key, curl};
use common::relay_env::RelayEnv;
use common::{run, wait_until};
use postroad_loadtest::sink::Faults;
use serde_json::{Value, json};

fn put_template(env: &RelayEnv, key: &str) {
    let template = json!({"subject": "News for {{ first }}",
        "text": "Hi {{ first }}, from {{ brand }}.", "from": "News <news@src.test>"});
    campaigns::put_template(env.server.http, key, "news", &template);
}

fn campaign(env: &RelayEnv, key: &str, id: &str) -> Value {
    campaigns::campaign(env.server.http, key, id)
}

#[test]
fn a_csv_list_campaign_reaches_every_distinct_address_once_and_reports_it() {
    let env = RelayEnv::start(
        "",
        "[suppression]\nrefresh_secs = 1\n\n[tracking]\nbase_url = \"https://t.src.test\"\n",
    );
    let key = api_key(&env.server, &["create", "--name", "marketing"]);
    let key = key.trim();
    put_template(&env, key);
    let config = env.server.config_path.to_str().unwrap();
    let listed = json!({"suppressions": [{"address": "gone@fast.test", "reason": "unsubscribe"}]});
    let add = [
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &listed.to_string(),
    ];
    let (status, added) = curl(env.server.http, key, &add, "/v1/suppressions");
    assert_eq!(status, 200, "{added}");

    let mut csv = String::from("email,userId,first\r\n");
    for i in 0..150 {
        csv.push_str(&format!("reader{i}@fast.test,{i},Reader {i}\r\n"));
    }
    csv.push_str("Reader7@FAST.test,7,Again\r\n"); // line 152: a duplicate
    csv.push_str("not-an-address,1,Bad\r\n"); // line 153
    csv.push_str("gone@fast.test,,Gone\r\n");
    csv.push_str("permfail@fast.test,,Perm\r\n");
    csv.push_str("ann@fast.test,-3,Ann\r\n"); // line 156: a bad user id
    csv.push_str("\"ann@fast.test\",,\"Ann\"\r\n");
    let path = env.server.data_dir().join("list.csv");
    std::fs::write(&path, &csv).unwrap();
    let upload = [
        "-H",
        "Content-Type: text/csv",
        "--data-binary",
        &format!("@{}", path.display()),
    ];
    let (status, list) = curl(env.server.http, key, &upload, "/v1/lists?name=december");
    assert_eq!(status, 201, "{list}");
    assert_eq!(
        (
            &list["state"],
            &list["rows"],
            &list["rejected"],
            &list["duplicates"],
            &list["recipients"]
        ),
        (
            &json!("ready"),
            &json!(156),
            &json!(2),
            &json!(1),
            &json!(153)
        ),
        "{list}"
    );
    let lines: Vec<&Value> = list["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["line"])
        .collect();
    assert_eq!(lines, [&json!(153), &json!(156)], "{list}");

    let request = json!({"name": "December", "list": list["id"], "emailType": "news",
        "templateData": {"brand": "Postroad", "first": "friend"}})
    .to_string();
    let create = [
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &request,
    ];
    let (status, created) = curl(env.server.http, key, &create, "/v1/campaigns");
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    let done = wait_for(
        &env,
        key,
        &id,
        "every recipient delivered or bounced",
        |c| {
            c["state"] == "sent" && c["results"]["delivered"] == 151 && c["results"]["bounced"] == 1
        },
    );
    assert_eq!(
        (
            &done["expansion"]["queued"],
            &done["expansion"]["suppressed"],
            &done["expansion"]["failed"]
        ),
        (&json!(152), &json!(1), &json!(0)),
        "{done}"
    );
    assert_eq!(
        done["results"]["rates"]["bounced"],
        json!(1.0 / 152.0),
        "{done}"
    );

    let got = received(&env);
    assert_eq!(got.len(), 151, "{got:?}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(!got.contains_key("gone@fast.test"), "{got:?}");
    let to_ann = env
        .sink
        .messages()
        .into_iter()
        .find(|m| m.recipients == ["ann@fast.test"])
        .unwrap();
    let text = String::from_utf8_lossy(&to_ann.data).replace("\r\n", "\n");
    assert!(text.contains("Hi Ann, from Postroad."), "{text}");
    assert!(
        text.contains("List-Unsubscribe: <https://t.src.test/u/"),
        "{text}"
    );
    assert!(
        text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{text}"
    );
    let to_seven = env
        .sink
        .messages()
        .into_iter()
        .find(|m| m.recipients == ["reader7@fast.test"])
        .unwrap();
    assert!(String::from_utf8_lossy(&to_seven.data).contains("Hi Reader 7,"));

    // The operator's view.
    let (ok, out) = run(
        common::binary(),
        &["campaign", "list", "--config", config],
        None,
    );
    assert!(ok && out.contains(&id) && out.contains("sent"), "{out}");
    let (ok, out) = run(
        common::binary(),
        &["campaign", "show", &id, "--config", config],
        None,
    );
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["results"]["delivered"], json!(151), "{shown}");
    let (ok, out) = run(
        common::binary(),
        &["campaign", "cancel", &id, "--config", config],
        None,
    );
    assert!(ok && out.contains("cancelled"), "{out}");
    let (ok, out) = run(
        common::binary(),
        &["campaign", "resume", &id, "--config", config],
        None,
    );
    assert!(
        !ok && out.contains("is cancelled: cannot resume it"),
        "{out}"
    );
}

/// Creates a campaign of `n` recipients `{prefix}{i}@later.test` with its recipients
/// inline; its id.
fn inline_campaign(env: &RelayEnv, key: &str, prefix: &str, n: usize) -> String {
    let header = json!({"name": prefix, "emailType": "news", "templateData": {"first": "you", "brand": "B"}});
    let mut body = format!("{header}\n");
    for i in 0..n {
        body.push_str(&format!("{{\"address\": \"{prefix}{i}@later.test\"}}\n"));
    }
    let created = campaigns::create_inline(env.server.http, key, &body);
    created["id"].as_str().unwrap().to_string()
}

#[test]
fn queued_mail_of_a_paused_campaign_waits_and_of_a_cancelled_one_is_never_sent() {
    let env = RelayEnv::start("", "");
    let key = api_key(&env.server, &["create", "--name", "marketing"]);
    let key = key.trim();
    put_template(&env, key);
    // later.test defers everything: the campaigns' mail stays queued, tried again
    // every second or two.
    let deferring = Faults {
        tempfail_share: 1.0,
        ..Faults::default()
    };
    let later = HashMap::from([("later.test".to_string(), deferring)]);
    env.sink.set_faults(Faults::default(), later).unwrap();
    let paused = inline_campaign(&env, key, "p", 100);
    let cancelled = inline_campaign(&env, key, "c", 100);
    for id in [&paused, &cancelled] {
        wait_for(&env, key, id, "every recipient deferred", |c| {
            c["state"] == "sent" && c["results"]["deferred"] == 100
        });
    }
    let post = |id: &str, action: &str| {
        let path = format!("/v1/campaigns/{id}/{action}");
        let (status, c) = curl(env.server.http, key, &["-X", "POST"], &path);
        assert_eq!(status, 200, "{c}");
        c
    };
    assert_eq!(post(&paused, "pause")["state"], "paused");
    assert_eq!(post(&cancelled, "cancel")["state"], "cancelled");

    // Cancelled: every recipient is resolved suppressed, none sent.
    let dropped = wait_for(&env, key, &cancelled, "the cancelled mail dropped", |c| {
        c["results"]["suppressed"] == 100
    });
    assert_eq!(dropped["results"]["delivered"], 0, "{dropped}");

    // Paused: with later.test taking mail again, the relay still holds it.
    let held_before = env
        .server
        .log()
        .matches("held mail of paused campaigns")
        .count();
    env.sink
        .set_faults(Faults::default(), HashMap::new())
        .unwrap();
    wait_until(
        "the paused campaign's mail held again after later.test took mail",
        WAIT,
        || {
            env.server
                .log()
                .matches("held mail of paused campaigns")
                .count()
                > held_before + 1
        },
        || env.server.log(),
    );
    assert!(
        received(&env).is_empty(),
        "sent while paused: {:?}",
        received(&env)
    );

    assert_eq!(post(&paused, "resume")["state"], "scheduled");
    let done = wait_for(&env, key, &paused, "the resumed mail delivered", |c| {
        c["state"] == "sent" && c["results"]["delivered"] == 100
    });
    assert_eq!(done["expansion"]["queued"], 100, "{done}");
    let got = received(&env);
    assert_eq!(got.len(), 100, "{got:?}");
    assert!(got.keys().all(|r| r.starts_with('p')), "{got:?}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    let history = env.history_json(&["--recipient", "c7@later.test"]);
    assert!(
        history.to_string().contains("campaign-cancelled"),
        "{history}"
    );
}

#[test]
fn an_inline_campaign_is_paused_resumed_and_another_cancelled() {
    let env = RelayEnv::start("", "");
    let key = api_key(&env.server, &["create", "--name", "marketing"]);
    let key = key.trim();
    put_template(&env, key);

    let header = json!({"name": "Slow", "emailType": "news", "maxPerSecond": 100,
        "templateData": {"brand": "Postroad"}});
    let mut body = format!("{header}\n");
    for i in 0..600 {
        body.push_str(
            &json!({"address": format!("slow{i}@fast.test"), "data": {"first": format!("S{i}")}})
                .to_string(),
        );
        body.push('\n');
    }
    body.push_str("{\"address\": 5}\n");
    let created = campaigns::create_inline(env.server.http, key, &body);
    assert_eq!(
        (&created["list"]["recipients"], &created["list"]["rejected"]),
        (&json!(600), &json!(1)),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_string();
    let (_, list) = curl(
        env.server.http,
        key,
        &[],
        &format!("/v1/lists/{}", created["list"]["id"].as_str().unwrap()),
    );
    assert_eq!(list["errors"][0]["line"], json!(602), "{list}");

    wait_for(&env, key, &id, "some of it queued", |c| {
        c["expansion"]["queued"].as_u64() > Some(0)
    });
    let (status, paused) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/campaigns/{id}/pause"),
    );
    assert_eq!(
        (status, &paused["state"]),
        (200, &json!("paused")),
        "{paused}"
    );
    // The batch being written when the pause came is the last: the expansion says it
    // left off, and what it queued by then is all that is sent.
    let at_pause = paused["expansion"]["expanded"].as_u64().unwrap();
    env.server
        .wait_for_log(&format!("expansion left off campaign={id} why=paused"));
    let stopped = campaign(&env, key, &id);
    let stopped_at = stopped["expansion"]["expanded"].as_u64().unwrap();
    assert!(
        stopped["state"] == "paused" && stopped_at <= at_pause + 100 && stopped_at < 600,
        "{stopped}"
    );
    wait_until(
        "what was queued before the pause delivered",
        WAIT,
        || received(&env).len() as u64 == stopped_at,
        || env.server.log(),
    );
    let later = campaign(&env, key, &id);
    assert_eq!(later["expansion"]["expanded"], json!(stopped_at), "{later}");
    let (status, resumed) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/campaigns/{id}/resume"),
    );
    assert_eq!(
        (status, &resumed["state"]),
        (200, &json!("scheduled")),
        "{resumed}"
    );
    wait_for(&env, key, &id, "all of it delivered", |c| {
        c["state"] == "sent" && c["results"]["delivered"] == 600
    });
    let got = received(&env);
    assert_eq!(got.len(), 600);
    assert!(
        got.values().all(|&n| n == 1),
        "a recipient got two: {got:?}"
    );

    // Another, cancelled before it is done: it stays cancelled.
    let mut body = format!("{}\n", json!({"emailType": "news", "maxPerSecond": 50}));
    for i in 0..2000 {
        body.push_str(&format!("{{\"address\": \"late{i}@fast.test\"}}\n"));
    }
    let created = campaigns::create_inline(env.server.http, key, &body);
    let other = created["id"].as_str().unwrap().to_string();
    let (status, cancelled) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/campaigns/{other}/cancel"),
    );
    assert_eq!(
        (status, &cancelled["state"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    let (status, refused) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/campaigns/{other}/resume"),
    );
    assert_eq!(
        (status, &refused["type"]),
        (409, &json!("urn:postroad:problem:wrong-state")),
        "{refused}"
    );
    let (status, _) = curl(
        env.server.http,
        key,
        &["-X", "POST"],
        &format!("/v1/campaigns/{other}/restart"),
    );
    assert_eq!(status, 404);
    let c = campaign(&env, key, &other);
    assert!(c["expansion"]["expanded"].as_u64().unwrap() < 2000, "{c}");
    let (_, all) = curl(env.server.http, key, &[], "/v1/campaigns");
    assert_eq!(all["campaigns"].as_array().unwrap().len(), 2, "{all}");
}

#[test]
fn a_campaign_is_refused_with_every_bad_field_named() {
    let env = RelayEnv::start("", "");
    let key = api_key(&env.server, &["create", "--name", "marketing"]);
    let key = key.trim();
    put_template(&env, key);
    let json_type = "Content-Type: application/json";
    let bad = json!({"emailType": "nope", "list": "lst_missing", "priority": "high", "sendAt": "tomorrow",
        "maxPerSecond": 0})
    .to_string();
    let (status, problem) = curl(
        env.server.http,
        key,
        &["-H", json_type, "--data-binary", &bad],
        "/v1/campaigns",
    );
    assert_eq!(status, 422, "{problem}");
    let mut pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(
        pointers,
        ["/maxPerSecond", "/priority", "/sendAt"],
        "{problem}"
    );

    let unknown = json!({"emailType": "nope", "list": "lst_missing"}).to_string();
    let (status, problem) = curl(
        env.server.http,
        key,
        &["-H", json_type, "--data-binary", &unknown],
        "/v1/campaigns",
    );
    assert_eq!(
        (status, &problem["errors"][0]["code"]),
        (422, &json!("unknown-template")),
        "{problem}"
    );
    let no_list = json!({"emailType": "news", "list": "lst_missing"}).to_string();
    let (status, problem) = curl(
        env.server.http,
        key,
        &["-H", json_type, "--data-binary", &no_list],
        "/v1/campaigns",
    );
    assert_eq!(
        (status, &problem["errors"][0]["pointer"]),
        (422, &json!("/list")),
        "{problem}"
    );
    let tracked = json!({"emailType": "news", "list": "lst_missing", "tracking": {"opens": true}})
        .to_string();
    let (status, problem) = curl(
        env.server.http,
        key,
        &["-H", json_type, "--data-binary", &tracked],
        "/v1/campaigns",
    );
    assert_eq!(
        (status, &problem["errors"][0]["code"]),
        (422, &json!("tracking-off")),
        "{problem}"
    );

    let (status, _) = curl(
        env.server.http,
        key,
        &["-H", "Content-Type: text/plain", "--data-binary", "x"],
        "/v1/lists",
    );
    assert_eq!(status, 415);
    let no_address = "name,phone\nAnn,1\n";
    let (status, list) = curl(
        env.server.http,
        key,
        &["-H", "Content-Type: text/csv", "--data-binary", no_address],
        "/v1/lists",
    );
    assert_eq!(
        (status, &list["state"], &list["errors"][0]["line"]),
        (201, &json!("failed"), &json!(1)),
        "{list}"
    );
    let failed = json!({"emailType": "news", "list": list["id"]}).to_string();
    let (status, problem) = curl(
        env.server.http,
        key,
        &["-H", json_type, "--data-binary", &failed],
        "/v1/campaigns",
    );
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("failed, not ready"),
        "{problem}"
    );
}
