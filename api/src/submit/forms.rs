//! The three JSON forms of a message (template, explicit, raw), told apart by their
//! fields, read field by field so that every bad field is reported with its JSON
//! Pointer, not only the first.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::problem::{FieldError, pointer, pointer_of};

/// Fields every form may carry: what the message is about.
pub const META_FIELDS: [&str; 6] = [
    "userId",
    "emailType",
    "priority",
    "tags",
    "campaign",
    "variant",
];

/// What a message is about: stored with it, carried by its events and the history.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaFields {
    /// The application's user (0 to 2^63-1).
    pub user_id: Option<u64>,
    /// The kind of mail (`welcome`); in the template form, the template to render.
    pub email_type: Option<String>,
    /// `high`, `normal` (default) or `bulk`.
    #[schema(example = "high")]
    pub priority: Option<String>,
    /// Up to 16 name/value pairs.
    pub tags: Option<BTreeMap<String, String>>,
    pub campaign: Option<String>,
    /// The A/B test variant.
    pub variant: Option<String>,
}

/// The design's form: a template per email type, rendered with `templateData`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateForm {
    /// The one recipient.
    pub recipient: String,
    /// Values for the template (merged over the user's preferences).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub template_data: Map<String, Value>,
    /// A version of the template; default: the newest.
    pub template_version: Option<u32>,
    /// Picks the template's locale variant (`fr`, `pt-BR`).
    pub locale: Option<String>,
    /// Sender (`Name <address>` or an address); default: the template's.
    pub from: Option<String>,
    /// One or more reply addresses (`Name <address>` or an address).
    pub reply_to: Option<Addresses>,
    /// Extra header fields (no CR/LF; not From/To/Subject/Content-*/X-Postroad-*).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tracking: TrackingOptions,
}

const TEMPLATE_FIELDS: [&str; 8] = [
    "recipient",
    "templateData",
    "templateVersion",
    "locale",
    "from",
    "replyTo",
    "headers",
    "tracking",
];

/// Tracking asked for a message (needs `[tracking] base_url`, and one recipient).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingOptions {
    /// An open pixel at the end of the HTML.
    #[serde(default)]
    pub opens: bool,
    /// Every web link of the HTML through a tracked redirect.
    #[serde(default)]
    pub clicks: bool,
    /// `List-Unsubscribe` with a one-click URL (RFC 8058); always on for `bulk`
    /// priority.
    #[serde(default)]
    pub unsubscribe: bool,
}

impl TrackingOptions {
    pub fn any(&self) -> bool {
        self.opens || self.clicks || self.unsubscribe
    }
}

/// One or many addresses.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Addresses {
    pub fn list(&self) -> Vec<&str> {
        match self {
            Addresses::One(a) => vec![a.as_str()],
            Addresses::Many(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub filename: String,
    pub content_type: Option<String>,
    /// Standard base64.
    pub content: String,
    /// Set for an inline part referenced as `cid:<contentId>` from the HTML.
    pub content_id: Option<String>,
}

const ATTACHMENT_FIELDS: [&str; 4] = ["filename", "contentType", "content", "contentId"];

/// Every part given explicitly.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplicitForm {
    /// Sender (`Name <address>` or an address); default: `http.default_from`.
    pub from: Option<String>,
    /// Recipients, each `Name <address>` or an address; to, cc and bcc together are
    /// the envelope recipients (bcc is not shown in the message).
    pub to: Option<Addresses>,
    pub cc: Option<Addresses>,
    pub bcc: Option<Addresses>,
    pub reply_to: Option<Addresses>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub tracking: TrackingOptions,
}

const EXPLICIT_FIELDS: [&str; 11] = [
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "text",
    "html",
    "headers",
    "attachments",
    "tracking",
];

/// A complete MIME message with its envelope.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RawForm {
    /// Standard base64 of the message.
    pub raw: String,
    pub from: String,
    pub to: Addresses,
}

const RAW_FIELDS: [&str; 3] = ["raw", "from", "to"];

#[derive(Debug)]
pub enum Form {
    Template(TemplateForm),
    Explicit(ExplicitForm),
    Raw(RawForm),
}

/// A form and its metadata fields, read from one JSON message at `base`.
#[derive(Debug)]
pub struct Parsed {
    pub form: Form,
    pub meta: MetaFields,
}

/// Reads one message (`base`: its JSON Pointer in the request, `""` or
/// `/messages/3`), adding what is wrong to `errors`. Unknown fields do not stop the
/// reading, so the checks that follow can report the other bad fields too; `None` when
/// the fields could not be read at all.
pub fn parse(value: &Value, base: &str, errors: &mut Vec<FieldError>) -> Option<Parsed> {
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            base,
            "invalid-type",
            "a message is a JSON object",
        ));
        return None;
    };
    let (kind, fields): (&str, &[&str]) = if object.contains_key("raw") {
        ("raw", &RAW_FIELDS)
    } else if object.contains_key("recipient") || object.contains_key("templateData") {
        ("template", &TEMPLATE_FIELDS)
    } else {
        ("explicit", &EXPLICIT_FIELDS)
    };
    let mut own = Map::new();
    let mut meta = Map::new();
    for (key, value) in object {
        if META_FIELDS.contains(&key.as_str()) {
            meta.insert(key.clone(), value.clone());
        } else if fields.contains(&key.as_str()) {
            own.insert(key.clone(), value.clone());
        } else {
            errors.push(FieldError::new(
                pointer(base, key),
                "unknown-field",
                format!("{key} is not a field of the {kind} form"),
            ));
        }
    }
    if kind == "explicit"
        && let Some(Value::Array(items)) = own.get("attachments")
    {
        for (i, item) in items.iter().enumerate() {
            let Some(item) = item.as_object() else {
                continue;
            };
            for key in item.keys() {
                if !ATTACHMENT_FIELDS.contains(&key.as_str()) {
                    let at = pointer(&pointer(&pointer(base, "attachments"), &i.to_string()), key);
                    errors.push(FieldError::new(
                        at,
                        "unknown-field",
                        format!("{key} is not a field of an attachment"),
                    ));
                }
            }
        }
    }
    let meta = read::<MetaFields>(meta, base, errors);
    let form = match kind {
        "raw" => read(own, base, errors).map(Form::Raw),
        "template" => read(own, base, errors).map(Form::Template),
        _ => read(own, base, errors).map(Form::Explicit),
    };
    Some(Parsed {
        form: form?,
        meta: meta?,
    })
}

/// Deserializes `fields`; a type error or missing field is reported at its pointer.
fn read<T: DeserializeOwned>(
    fields: Map<String, Value>,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match serde_path_to_error::deserialize(Value::Object(fields)) {
        Ok(value) => Some(value),
        Err(e) => {
            let at = format!("{base}{}", pointer_of(e.path()));
            let detail = e.inner().to_string();
            // serde names a missing field in its message, not in the path.
            let (at, code) = match missing_field(&detail) {
                Some(field) => (pointer(&at, field), "required"),
                None => (at, "invalid-type"),
            };
            errors.push(FieldError::new(at, code, detail));
            None
        }
    }
}

fn missing_field(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: &Value, base: &str) -> Result<Parsed, Vec<FieldError>> {
        let mut errors = Vec::new();
        match super::parse(value, base, &mut errors) {
            Some(parsed) if errors.is_empty() => Ok(parsed),
            _ => Err(errors),
        }
    }

    fn pointers(errors: &[FieldError]) -> Vec<(&str, &str)> {
        errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect()
    }

    #[test]
    fn forms_are_told_apart_by_their_fields() {
        let template = json!({"userId": 12345, "emailType": "welcome",
            "recipient": "user@example.com", "templateData": {"name": "Ann"}, "priority": "high"});
        let parsed = parse(&template, "").unwrap();
        assert!(matches!(parsed.form, Form::Template(_)));
        assert_eq!(parsed.meta.user_id, Some(12345));
        assert_eq!(parsed.meta.priority.as_deref(), Some("high"));

        let explicit =
            json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"});
        assert!(matches!(
            parse(&explicit, "").unwrap().form,
            Form::Explicit(_)
        ));
        let raw = json!({"raw": "U3ViamVjdDogeA0KDQp4DQo=", "from": "a@example.com", "to": "b@example.com"});
        assert!(matches!(parse(&raw, "").unwrap().form, Form::Raw(_)));
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_pointer() {
        let value = json!({"recipient": "u@example.com", "templateDta": {}, "prority": "high",
            "userId": "12"});
        let errors = parse(&value, "/messages/2").unwrap_err();
        assert_eq!(
            pointers(&errors),
            [
                ("/messages/2/prority", "unknown-field"),
                ("/messages/2/templateDta", "unknown-field"),
                ("/messages/2/userId", "invalid-type"),
            ]
        );
        let value = json!({"from": "a@x.test", "to": "b@x.test", "subject": "s", "text": "t",
            "attachments": [{"filename": "a", "content": "", "size": 3}]});
        assert_eq!(
            pointers(&parse(&value, "").unwrap_err()),
            [("/attachments/0/size", "unknown-field")]
        );
    }

    #[test]
    fn missing_and_mistyped_fields_point_at_the_field() {
        let errors = parse(&json!({"from": "a@x.test", "to": "b@x.test"}), "").unwrap_err();
        assert_eq!(pointers(&errors), [("/subject", "required")]);
        let errors = parse(&json!({"raw": 5, "from": "a@x.test", "to": []}), "").unwrap_err();
        assert_eq!(pointers(&errors), [("/raw", "invalid-type")]);
        let errors = parse(&json!([1, 2]), "/messages/0").unwrap_err();
        assert_eq!(pointers(&errors), [("/messages/0", "invalid-type")]);
    }
}
