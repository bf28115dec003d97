//! `/v1/webhooks` as an application uses it: register (the secret shown once, every
//! bad field named, private addresses refused), list, look up, delete; each tenant
//! sees only its own endpoints.

mod common;

use common::{Setup, TestApi};
use serde_json::json;

#[test]
fn endpoints_are_registered_listed_and_deleted_per_tenant() {
    let api = TestApi::start_with(
        Setup {
            tenant: Some("acme".into()),
            ..Setup::default()
        },
        |_| {},
    );
    let created = api.post(
        "/v1/webhooks",
        &json!({"url": "https://hooks.acme.example/postroad", "events": ["bounced", "complained"],
                "description": "bounces to the CRM"}),
    );
    assert_eq!(created.status, 201, "{:?}", created.json);
    let id = created.json["id"].as_str().unwrap().to_string();
    let secret = created.json["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 43,
        "{secret}"
    );
    assert_eq!(created.json["events"], json!(["bounced", "complained"]));
    assert_eq!(
        (&created.json["waiting"], &created.json["deadLetters"]),
        (&json!(0), &json!(0))
    );

    let all = api.post(
        "/v1/webhooks",
        &json!({"url": "https://hooks.acme.example/all"}),
    );
    assert_eq!(all.status, 201);
    assert_eq!(all.json["events"], json!([]));
    assert_ne!(all.json["secret"], created.json["secret"]);

    let list = api.call("GET", "/v1/webhooks", None, &[]);
    let ids: Vec<&str> = list.json["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), all.json["id"].as_str().unwrap()]);
    // The secret is never shown again.
    assert!(list.json["webhooks"][0].get("secret").is_none());
    let one = api.call("GET", &format!("/v1/webhooks/{id}"), None, &[]);
    assert_eq!(one.json["description"], "bounces to the CRM");
    assert!(one.json.get("secret").is_none());

    // Another tenant's key sees none of them.
    let (other, _) = api
        .runtime
        .block_on(api.store.create_key("other", Some("globex")))
        .unwrap();
    let theirs = api.call_as(Some(&other), "GET", "/v1/webhooks", None, &[]);
    assert_eq!(theirs.json["webhooks"], json!([]));
    let stolen = api.call_as(
        Some(&other),
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        None,
        &[],
    );
    assert!(stolen.is_problem(404, "not-found"), "{stolen:?}");

    let deleted = api.call("DELETE", &format!("/v1/webhooks/{id}"), None, &[]);
    assert_eq!(deleted.status, 204);
    let gone = api.call("GET", &format!("/v1/webhooks/{id}"), None, &[]);
    assert!(gone.is_problem(404, "not-found"), "{gone:?}");
    let dead = api.call("GET", &format!("/v1/webhooks/{id}/dead-letters"), None, &[]);
    assert!(dead.is_problem(404, "not-found"), "{dead:?}");
}

#[test]
fn bad_registrations_are_refused_field_by_field() {
    let api = TestApi::start(|_| {});
    for (body, pointer) in [
        (json!({"url": "ftp://example.com/"}), "/url"),
        (json!({"url": "https://user:pw@example.com/"}), "/url"),
        (json!({"url": "not a url"}), "/url"),
        // Postroad's own network is off limits unless the operator allows it.
        (json!({"url": "http://127.0.0.1:8080/hook"}), "/url"),
        (json!({"url": "http://[::1]/hook"}), "/url"),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            "/url",
        ),
        (
            json!({"url": "https://example.com/", "events": ["bounced", "exploded"]}),
            "/events",
        ),
        (
            json!({"url": "https://example.com/", "description": "d".repeat(201)}),
            "/description",
        ),
        (
            json!({"url": "https://example.com/", "secret": "mine"}),
            "/secret",
        ),
    ] {
        let reply = api.post("/v1/webhooks", &body);
        assert!(
            reply.is_problem(422, "invalid-request"),
            "{body}: {reply:?}"
        );
        assert_eq!(reply.errors()[0].0, pointer, "{body}: {reply:?}");
    }
    // At most webhooks.delivery.max_endpoints (20) per tenant.
    for i in 0..20 {
        let reply = api.post(
            "/v1/webhooks",
            &json!({"url": format!("https://example.com/{i}")}),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    let reply = api.post("/v1/webhooks", &json!({"url": "https://example.com/21"}));
    assert_eq!(
        reply.errors(),
        [("/url".to_string(), "too-many".to_string())]
    );
}
