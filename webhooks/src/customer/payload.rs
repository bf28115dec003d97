//! An event as a webhook receiver gets it: one JSON object per event, in camelCase,
//! fields without a value left out.
//!
//! ```json
//! {"id":"0193a4f2c7b87e31a0f6b2d9c4e5a6b7","type":"bounced",
//!  "messageId":"0193a4f2c7b87e31a0f6b2d9c4e5a6b8","recipient":"ann@example.net",
//!  "at":"2026-12-07T09:30:00.000Z","attempt":1,"remoteHost":"mx.example.net",
//!  "reply":{"code":550,"enhanced":"5.1.1","text":"no such user"},"reason":"userunknown",
//!  "userId":12345,"emailType":"welcome","tenant":"acme","campaign":"spring",
//!  "tags":{"plan":"pro"}}
//! ```

use postroad_queue::{DeliveryEvent, rfc3339};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    message_id: String,
    recipient: &'a str,
    at: String,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    tags: Map<String, Value>,
}

/// The event's JSON text.
pub fn to_json(event: &DeliveryEvent) -> String {
    let meta = &event.meta;
    let reply = event.reply.as_ref().map(|r| {
        let mut reply = Map::new();
        if let Some(code) = r.code() {
            reply.insert("code".into(), code.into());
        }
        if let Some(enhanced) = r.enhanced() {
            reply.insert("enhanced".into(), enhanced.to_string().into());
        }
        reply.insert("text".into(), r.text().into());
        Value::Object(reply)
    });
    let payload = Payload {
        id: event.event_id.simple().to_string(),
        kind: event.kind.as_str(),
        message_id: event.message_id.to_string(),
        recipient: &event.recipient,
        at: rfc3339(event.at_ms),
        attempt: event.attempt,
        remote_host: event.remote_host.as_deref(),
        reply,
        reason: event.reason.as_deref(),
        provider_message_id: event.provider_message_id.as_deref(),
        user_id: meta.user_id,
        email_type: meta.email_type.as_deref(),
        tenant: meta.tenant.as_deref(),
        campaign: meta.campaign.as_deref(),
        variant: meta.variant.as_deref(),
        tags: meta
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    };
    serde_json::to_string(&payload).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use postroad_queue::{EnhancedCode, Envelope, EventKind, Recipient, Reply};

    use super::*;

    #[test]
    fn an_event_reads_as_documented() {
        let mut envelope = Envelope::new(
            "app@src.test",
            vec![Recipient::new("ann@example.net")],
            std::net::IpAddr::from([127, 0, 0, 1]),
        );
        envelope.meta.user_id = Some(12345);
        envelope.meta.tenant = Some("acme".into());
        envelope.meta.tags = vec![("plan".into(), "pro".into())];
        let event = DeliveryEvent {
            attempt: 1,
            remote_host: Some("mx.example.net".into()),
            reply: Some(Reply::owned(550, Some(EnhancedCode::new(5, 1, 1)), "no such user").into()),
            reason: Some("userunknown".into()),
            ..DeliveryEvent::new(
                EventKind::Bounced,
                &envelope,
                &envelope.recipients[0],
                1_796_635_800_000,
            )
        };
        let json: Value = serde_json::from_str(&to_json(&event)).unwrap();
        assert_eq!(json["type"], "bounced");
        assert_eq!(json["id"], event.event_id.simple().to_string());
        assert_eq!(json["messageId"], envelope.id.to_string());
        assert_eq!(json["at"], "2026-12-07T09:30:00.000Z");
        assert_eq!(
            json["reply"],
            serde_json::json!({"code": 550, "enhanced": "5.1.1", "text": "no such user"})
        );
        assert_eq!(json["userId"], 12345);
        assert_eq!(json["tags"], serde_json::json!({"plan": "pro"}));
        assert!(json.get("campaign").is_none() && json.get("providerMessageId").is_none());
    }
}
