//! `/v1/suppressions` as an application uses it: add (all or nothing, every bad entry
//! named), look up, list a page at a time, remove; each tenant its own list; and a
//! submission's answer names the recipients the list will keep the message from.

mod common;

use common::{Setup, TestApi};
use serde_json::{Value, json};

fn add(api: &TestApi, entries: Value) -> common::Reply {
    api.post("/v1/suppressions", &json!({ "suppressions": entries }))
}

#[test]
fn entries_are_added_looked_up_paged_and_removed() {
    let api = TestApi::start(|_| {});
    let reply = add(
        &api,
        json!([
            {"address": "Ann@Example.net", "reason": "complaint", "detail": "FBL"},
            {"address": "bob@example.net", "expiresAt": "2999-01-01T00:00:00Z"},
            {"address": "cy@example.net", "reason": "hard-bounce"},
        ]),
    );
    assert_eq!((reply.status, &reply.json), (200, &json!({"added": 3})));

    let ann = api.call("GET", "/v1/suppressions/ANN@example.net", None, &[]);
    assert_eq!(ann.status, 200, "{:?}", ann.json);
    assert_eq!(ann.json["address"], "ann@example.net");
    assert_eq!(ann.json["reason"], "complaint");
    assert_eq!(ann.json["source"], "api");
    assert_eq!(ann.json["detail"], "FBL");
    assert!(ann.json.get("expiresAt").is_none());
    let bob = api.call("GET", "/v1/suppressions/bob@example.net", None, &[]);
    assert_eq!(
        (&bob.json["reason"], &bob.json["expiresAt"]),
        (&json!("manual"), &json!("2999-01-01T00:00:00.000Z"))
    );

    // Two pages of two, then one.
    let first = api.call("GET", "/v1/suppressions?limit=2", None, &[]);
    let addresses = |page: &Value| -> Vec<String> {
        page["suppressions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        addresses(&first.json),
        ["ann@example.net", "bob@example.net"]
    );
    assert_eq!(first.json["next"], "bob@example.net");
    let second = api.call(
        "GET",
        "/v1/suppressions?limit=2&after=bob%40example.net",
        None,
        &[],
    );
    assert_eq!(addresses(&second.json), ["cy@example.net"]);
    assert!(second.json.get("next").is_none(), "{:?}", second.json);

    let removed = api.call("DELETE", "/v1/suppressions/cy@example.net", None, &[]);
    assert_eq!(removed.status, 204);
    let again = api.call("DELETE", "/v1/suppressions/cy@example.net", None, &[]);
    assert!(again.is_problem(404, "not-found"), "{again:?}");
    let gone = api.call("GET", "/v1/suppressions/cy@example.net", None, &[]);
    assert!(gone.is_problem(404, "not-found"), "{gone:?}");
    // The list in memory follows the store.
    let held = api.runtime.block_on(
        api.suppressions
            .check(None, &["ann@example.net", "cy@example.net"]),
    );
    assert_eq!(
        held.iter()
            .map(|r| r.map(|r| r.as_str()))
            .collect::<Vec<_>>(),
        [Some("complaint"), None]
    );
}

#[test]
fn a_request_with_a_bad_entry_adds_nothing_and_names_each() {
    let api = TestApi::start(|_| {});
    let reply = add(
        &api,
        json!([
            {"address": "fine@example.net"},
            {"address": "no-at-sign"},
            {"address": "x@example.net", "reason": "grumpy"},
            {"address": "y@example.net", "expiresAt": "tomorrow"},
            {"address": "z@example.net", "detail": "d".repeat(501)},
        ]),
    );
    assert!(reply.is_problem(422, "invalid-request"), "{reply:?}");
    assert_eq!(
        reply.errors(),
        [
            (
                "/suppressions/1/address".to_string(),
                "invalid-value".to_string()
            ),
            (
                "/suppressions/2/reason".to_string(),
                "invalid-value".to_string()
            ),
            (
                "/suppressions/3/expiresAt".to_string(),
                "invalid-value".to_string()
            ),
            (
                "/suppressions/4/detail".to_string(),
                "invalid-value".to_string()
            ),
        ]
    );
    let unknown = add(&api, json!([{"address": "a@example.net", "why": "x"}]));
    assert!(unknown.is_problem(422, "invalid-request"), "{unknown:?}");
    let list = api.call("GET", "/v1/suppressions", None, &[]);
    assert_eq!(list.json["suppressions"], json!([]));
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"address": format!("u{i}@example.net")}))
        .collect();
    let reply = add(&api, Value::Array(too_many));
    assert_eq!(
        reply.errors(),
        [("/suppressions".to_string(), "too-many".to_string())]
    );
    let bad_limit = api.call("GET", "/v1/suppressions?limit=0", None, &[]);
    assert!(
        bad_limit.is_problem(422, "invalid-request"),
        "{bad_limit:?}"
    );
}

#[test]
fn each_tenant_has_its_own_list_and_submissions_name_listed_recipients() {
    let acme = TestApi::start_with(
        Setup {
            tenant: Some("acme".into()),
            ..Setup::default()
        },
        |_| {},
    );
    let reply = add(
        &acme,
        json!([{"address": "ann@example.net", "reason": "unsubscribe"}]),
    );
    assert_eq!(reply.status, 200);
    // Another key on the same store, without a tenant, sees an empty list.
    let (key, _) = acme
        .runtime
        .block_on(acme.store.create_key("other", None))
        .unwrap();
    let theirs = acme.call_as(
        Some(&key),
        "GET",
        "/v1/suppressions/ann@example.net",
        None,
        &[],
    );
    assert!(theirs.is_problem(404, "not-found"), "{theirs:?}");

    let message = json!({"from": "shop@example.com", "to": ["ann@example.net", "bob@example.net"],
                         "subject": "Hi", "text": "Hello."});
    let sent = acme.post("/v1/messages", &message);
    assert_eq!(sent.status, 202, "{:?}", sent.json);
    assert_eq!(sent.json["recipients"], 2);
    assert_eq!(
        sent.json["suppressed"],
        json!([{"address": "ann@example.net", "reason": "unsubscribe"}])
    );
    // Still queued: the relay resolves the listed recipient `suppressed`.
    let (envelope, _) = acme.queued(sent.json["id"].as_str().unwrap());
    assert_eq!(envelope.recipients.len(), 2);

    let batch = acme.post(
        "/v1/messages/batch",
        &json!({"messages": [message, {"from": "shop@example.com", "to": "bob@example.net",
                                       "subject": "Hi", "text": "Hello."}]}),
    );
    assert_eq!(batch.status, 200, "{:?}", batch.json);
    assert_eq!(
        batch.json["results"][0]["suppressed"][0]["address"],
        "ann@example.net"
    );
    assert!(
        batch.json["results"][1].get("suppressed").is_none(),
        "{:?}",
        batch.json
    );

    // The key without a tenant sends to ann: nothing on its list.
    let plain = acme.call_as(
        Some(&key),
        "POST",
        "/v1/messages",
        Some(("application/json", message.to_string().into_bytes())),
        &[],
    );
    assert_eq!(plain.status, 202);
    assert!(plain.json.get("suppressed").is_none(), "{:?}", plain.json);
}
