//! Templates over the real API: versions, locales, HTML escaping, what a message lacks,
//! unknown fields, the built message parsed back with mail-parser.

mod common;

use common::TestApi;
use mail_parser::MessageParser;
use serde_json::json;

#[test]
fn templates_render_with_template_data_and_report_what_is_missing() {
    let api = TestApi::start(|_| {});
    let template = json!({
        "subject": "Welcome, {{ name }}!",
        "text": "Hi {{ name }}, your plan is {{ plan }}.",
        "html": "<p>Hi {{ name }}</p>",
        "from": "Team <team@example.com>",
        "locales": {"fr": {"subject": "Bienvenue, {{ name }} !", "text": "Salut {{ name }}."}}
    });
    let put = api.call(
        "PUT",
        "/v1/templates/welcome",
        Some(("application/json", template.to_string().into_bytes())),
        &[],
    );
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(put.json["version"], 1);
    let misspelt = json!({"subject": "s", "text": "t", "colour": 1,
        "locales": {"fr": {"subject": "s", "txt": "t"}}});
    let reply = api.call(
        "PUT",
        "/v1/templates/welcome",
        Some(("application/json", misspelt.to_string().into_bytes())),
        &[],
    );
    assert_eq!(
        reply.errors(),
        [
            ("/colour".to_string(), "unknown-field".to_string()),
            ("/locales/fr/txt".to_string(), "unknown-field".to_string())
        ]
    );
    assert_eq!(
        api.call("GET", "/v1/templates/welcome", None, &[]).json["subject"],
        "Welcome, {{ name }}!"
    );
    assert_eq!(
        api.call("GET", "/v1/templates", None, &[]).json["templates"][0]["emailType"],
        "welcome"
    );

    let message = json!({"userId": 12345, "emailType": "welcome", "recipient": "user@example.com",
        "templateData": {"name": "<Ann>", "plan": "pro"}, "priority": "high"});
    let reply = api.post("/v1/messages", &message);
    assert_eq!(reply.status, 202, "{reply:?}");
    let (envelope, body) = api.queued(reply.json["id"].as_str().unwrap());
    assert_eq!(envelope.sender, "team@example.com");
    let parsed_id = MessageParser::new()
        .parse(&body)
        .unwrap()
        .message_id()
        .map(str::to_string);
    assert_eq!(
        parsed_id,
        Some(format!(
            "{}@mx.postroad.test",
            reply.json["id"].as_str().unwrap()
        )),
        "ours by default"
    );
    assert_eq!(envelope.meta.email_type.as_deref(), Some("welcome"));
    let parsed = MessageParser::new().parse(&body).unwrap();
    assert_eq!(parsed.subject(), Some("Welcome, <Ann>!"));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Hi <Ann>, your plan is pro.")
    );
    assert_eq!(
        parsed.body_html(0).as_deref(),
        Some("<p>Hi &lt;Ann&gt;</p>")
    );

    let mut french = message.clone();
    french["locale"] = json!("fr-FR");
    let reply = api.post("/v1/messages", &french);
    let (_, body) = api.queued(reply.json["id"].as_str().unwrap());
    assert_eq!(
        MessageParser::new().parse(&body).unwrap().subject(),
        Some("Bienvenue, <Ann> !")
    );

    let mut missing = message.clone();
    missing["templateData"] = json!({"name": "Ann"});
    let reply = api.post("/v1/messages", &missing);
    assert!(reply.is_problem(422, "invalid-request"), "{reply:?}");
    assert_eq!(
        reply.errors(),
        [(
            "/templateData/plan".to_string(),
            "missing-variable".to_string()
        )]
    );

    let mut unknown = message.clone();
    unknown["emailType"] = json!("farewell");
    let reply = api.post("/v1/messages", &unknown);
    assert_eq!(
        reply.errors(),
        [("/emailType".to_string(), "unknown-template".to_string())]
    );

    // A new version is used at once by this process; deleting it removes every version.
    let v2 = json!({"subject": "Hello {{ name }}", "text": "v2"});
    let put = api.call(
        "PUT",
        "/v1/templates/welcome",
        Some(("application/json", v2.to_string().into_bytes())),
        &[],
    );
    assert_eq!(put.json["version"], 2);
    let mut v2_message = message.clone();
    v2_message["from"] = json!("team@example.com");
    let reply = api.post("/v1/messages", &v2_message);
    let (_, body) = api.queued(reply.json["id"].as_str().unwrap());
    assert_eq!(
        MessageParser::new().parse(&body).unwrap().subject(),
        Some("Hello <Ann>")
    );
    assert_eq!(
        api.call("DELETE", "/v1/templates/welcome", None, &[])
            .status,
        204
    );
    assert!(
        api.call("GET", "/v1/templates/welcome", None, &[])
            .is_problem(404, "not-found")
    );

    let bad = json!({"subject": "{{ broken", "text": "x"});
    let put = api.call(
        "PUT",
        "/v1/templates/broken",
        Some(("application/json", bad.to_string().into_bytes())),
        &[],
    );
    assert_eq!(
        put.errors(),
        [("/subject".to_string(), "template-error".to_string())]
    );
}
