//! What `POST /v1/campaigns` asks for, checked; and how each recipient's message is
//! written from it (the template form of `POST /v1/messages`, so a campaign's mail is
//! built exactly as a single message is).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::variants::Variant;
use crate::problem::FieldError;
use crate::store::lists::ListRow;
use crate::submit::check;
use crate::submit::forms::{Addresses, TrackingOptions};

/// Longest campaign name.
const MAX_NAME: usize = 200;

/// A campaign: a template sent to every recipient of a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignRequest {
    /// A name for people (default: the campaign's id).
    #[serde(default)]
    pub name: Option<String>,
    /// A list stored with `POST /v1/lists`; omitted when the recipients follow this
    /// object in an `application/x-ndjson` body.
    #[serde(default)]
    pub list: Option<String>,
    /// The template (its email type).
    pub email_type: String,
    /// A version of the template; default: the newest when each message is made.
    #[serde(default)]
    pub template_version: Option<u32>,
    /// Sender (`Name <address>` or an address); default: the template's.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub reply_to: Option<Addresses>,
    /// Values for every recipient's template; a recipient's own `data` wins.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub template_data: Map<String, Value>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Opens, clicks, unsubscribe (bulk mail always gets one-click unsubscribe).
    #[serde(default)]
    pub tracking: TrackingOptions,
    /// `bulk` (default) or `normal`; campaigns never take the `high` lane.
    #[serde(default)]
    pub priority: Option<String>,
    /// When to start (RFC 3339); default: now.
    #[serde(default)]
    pub send_at: Option<String>,
    /// Most messages queued per second (a send-rate cap); default: as fast as the
    /// queue takes them.
    #[serde(default)]
    pub max_per_second: Option<u32>,
    /// A/B variants (none, or 2 to 26): each recipient gets one by weight, the same
    /// on every try; `GET /v1/campaigns/{id}/variants` compares them.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// An A/B test (with variants): first a sample of the list, then, after a wait,
    /// the variant with the best rate to everyone else.
    #[serde(default)]
    pub test: Option<TestPhase>,
}

/// A checked request: what every message of the campaign shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub email_type: String,
    pub template_version: Option<u32>,
    pub from: Option<String>,
    pub reply_to: Option<Vec<String>>,
    pub template_data: Map<String, Value>,
    pub tags: BTreeMap<String, String>,
    pub tracking: Tracking,
    pub priority: String,
    pub max_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestPhase>,
}

/// Longest wait of an A/B test: a week.
const MAX_TEST_WAIT_SECS: u64 = 7 * 24 * 3600;

/// An A/B test: the share of the list that gets the variants, how long after that
/// sample is queued the winner is picked, and on what.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestPhase {
    /// Of the list, above 0 and below 1 (`0.1`: a tenth, picked by a hash of the
    /// address).
    pub share: f64,
    /// Seconds from the sample being queued to the winner being picked (1 s to a week).
    pub wait_secs: u64,
    /// `opened` (default) or `clicked`: the rate per delivered, by people.
    #[serde(default = "opened")]
    pub metric: String,
}

fn opened() -> String {
    "opened".into()
}

impl TestPhase {
    fn check(&self, with_variants: bool, errors: &mut Vec<FieldError>) {
        if !with_variants {
            errors.push(FieldError::new("/test", "invalid", "a test needs variants"));
        }
        if !(self.share > 0.0 && self.share < 1.0) {
            errors.push(FieldError::new(
                "/test/share",
                "invalid",
                "above 0 and below 1",
            ));
        }
        if self.wait_secs == 0 || self.wait_secs > MAX_TEST_WAIT_SECS {
            let detail = format!("1 to {MAX_TEST_WAIT_SECS} seconds");
            errors.push(FieldError::new("/test/waitSecs", "invalid", detail));
        }
        if self.metric != "opened" && self.metric != "clicked" {
            errors.push(FieldError::new(
                "/test/metric",
                "invalid",
                "opened or clicked",
            ));
        }
    }
}

/// [`TrackingOptions`] as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    pub opens: bool,
    pub clicks: bool,
    pub unsubscribe: bool,
}

/// A checked request: its spec, name, list and start.
#[derive(Debug, Clone)]
pub struct Checked {
    pub spec: Spec,
    pub name: Option<String>,
    pub list: Option<String>,
    pub send_at_ms: Option<u64>,
}

impl CampaignRequest {
    /// Checks every field, reporting each bad one.
    pub fn check(self, tenant: Option<&str>) -> Result<Checked, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(name) = &self.name
            && (name.trim().is_empty()
                || name.len() > MAX_NAME
                || name.chars().any(char::is_control))
        {
            errors.push(FieldError::new(
                "/name",
                "invalid",
                format!("1 to {MAX_NAME} bytes, no control characters"),
            ));
        }
        if let Err(e) = postroad_queue::metadata::token("email type", &self.email_type) {
            errors.push(FieldError::new("/emailType", "invalid", e.to_string()));
        }
        if let Some(from) = &self.from {
            check::named(from, "/from", &mut errors);
        }
        if let Some(reply_to) = &self.reply_to {
            for (i, a) in reply_to.list().into_iter().enumerate() {
                check::named(a, &format!("/replyTo/{i}"), &mut errors);
            }
        }
        let priority = self
            .priority
            .as_deref()
            .unwrap_or("bulk")
            .trim()
            .to_ascii_lowercase();
        if priority != "bulk" && priority != "normal" {
            errors.push(FieldError::new(
                "/priority",
                "invalid",
                "a campaign is bulk (default) or normal; high is kept for transactional mail",
            ));
        }
        let send_at_ms = match &self.send_at {
            None => None,
            Some(at) => match chrono::DateTime::parse_from_rfc3339(at) {
                Ok(at) => Some(at.timestamp_millis().max(0) as u64),
                Err(e) => {
                    errors.push(FieldError::new(
                        "/sendAt",
                        "invalid",
                        format!("not RFC 3339: {e}"),
                    ));
                    None
                }
            },
        };
        super::variants::check(&self.variants, &mut errors);
        if let Some(test) = &self.test {
            test.check(!self.variants.is_empty(), &mut errors);
        }
        if self.max_per_second == Some(0) {
            errors.push(FieldError::new("/maxPerSecond", "invalid", "at least 1"));
        }
        // The tags as a message's would be checked.
        let meta = crate::submit::forms::MetaFields {
            tags: (!self.tags.is_empty()).then(|| self.tags.clone()),
            ..Default::default()
        };
        check::meta(&meta, tenant, "", &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let t = self.tracking;
        Ok(Checked {
            spec: Spec {
                email_type: self.email_type,
                template_version: self.template_version,
                from: self.from,
                reply_to: self
                    .reply_to
                    .map(|r| r.list().into_iter().map(String::from).collect()),
                template_data: self.template_data,
                tags: self.tags,
                tracking: Tracking {
                    opens: t.opens,
                    clicks: t.clicks,
                    unsubscribe: t.unsubscribe,
                },
                priority,
                max_per_second: self.max_per_second,
                variants: self.variants,
                test: self.test,
            },
            name: self.name.map(|n| n.trim().to_string()),
            list: self.list,
            send_at_ms,
        })
    }
}

impl Spec {
    /// The message for one recipient, in the template form of `POST /v1/messages`:
    /// of its variant, or of `winner` (an A/B test's second phase).
    pub fn message(&self, campaign: &str, row: &ListRow, winner: Option<&str>) -> Value {
        let variant = match winner {
            Some(name) => self.variants.iter().find(|v| v.name == name),
            None => super::variants::pick(&self.variants, campaign, &row.address),
        };
        let mut data = self.template_data.clone();
        if let Some(v) = variant {
            data.extend(v.template_data.clone());
        }
        if let Some(Ok(Value::Object(own))) = row.data.as_deref().map(serde_json::from_str) {
            data.extend(own);
        }
        let mut message = json!({
            "recipient": row.address,
            "emailType": self.email_type,
            "templateData": data,
            "campaign": campaign,
            "priority": self.priority,
            "tracking": {
                "opens": self.tracking.opens,
                "clicks": self.tracking.clicks,
                "unsubscribe": self.tracking.unsubscribe,
            },
        });
        let fields = message.as_object_mut().expect("an object");
        let version = variant
            .and_then(|v| v.template_version)
            .or(self.template_version);
        if let Some(v) = version {
            fields.insert("templateVersion".into(), v.into());
        }
        if let Some(from) = variant.and_then(|v| v.from.as_ref()).or(self.from.as_ref()) {
            fields.insert("from".into(), from.clone().into());
        }
        if let Some(v) = variant {
            fields.insert("variant".into(), v.name.clone().into());
        }
        if let Some(reply_to) = &self.reply_to {
            fields.insert("replyTo".into(), reply_to.clone().into());
        }
        if !self.tags.is_empty() {
            fields.insert("tags".into(), json!(self.tags));
        }
        if let Some(user) = row.user_id {
            fields.insert("userId".into(), user.into());
        }
        message
    }
}
