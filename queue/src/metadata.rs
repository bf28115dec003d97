//! What a message is about, beyond its envelope: who it is for in the sending
//! application, what kind of mail it is, and how urgent. Set by SMTP headers
//! (`X-Postroad-*`) or the HTTP API, carried by every event, stored in the history.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Most tags on one message.
pub const MAX_TAGS: usize = 16;
/// Longest tag name, in bytes.
pub const MAX_TAG_NAME: usize = 64;
/// Longest tag value, and longest email type, tenant, campaign or variant, in bytes.
pub const MAX_VALUE: usize = 256;

/// How urgent a message is: the relay takes `high` before `normal` before `bulk`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Bulk,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Bulk => "bulk",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = MetadataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "bulk" => Ok(Priority::Bulk),
            _ => Err(MetadataError::Priority(shown(s))),
        }
    }
}

/// A metadata value that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("priority must be high, normal or bulk, not {0:?}")]
    Priority(String),
    #[error("user id must be a whole number from 0 to 9223372036854775807, not {0:?}")]
    UserId(String),
    #[error(
        "{field} must be 1 to {MAX_VALUE} bytes of letters, digits, '.', '_', '-', ':', '/', '@' or '+', not {value:?}"
    )]
    Token { field: &'static str, value: String },
    #[error("at most {MAX_TAGS} tags")]
    TooManyTags,
    #[error("tag {0:?} is given twice")]
    DuplicateTag(String),
    #[error(
        "tag names are 1 to {MAX_TAG_NAME} bytes of letters, digits, '.', '_' or '-', not {0:?}"
    )]
    TagName(String),
    #[error("tag {name:?} needs a value of at most {MAX_VALUE} bytes without control characters")]
    TagValue { name: String },
    #[error("a tag is name=value, not {0:?}")]
    TagSyntax(String),
}

/// At most 64 characters of `s`, for error messages.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What the sending application says about a message. Every field is optional; a
/// message without any is `Metadata::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The application's user the message is for (the design's `userId`).
    pub user_id: Option<u64>,
    /// The kind of mail: `welcome`, `password-reset`, `digest`, ...
    pub email_type: Option<String>,
    /// The account the message is sent for (multi-tenant accounting).
    pub tenant: Option<String>,
    pub campaign: Option<String>,
    /// The A/B test variant the message belongs to.
    pub variant: Option<String>,
    pub priority: Priority,
    /// Free name/value pairs, in the order given (at most [`MAX_TAGS`]).
    pub tags: Vec<(String, String)>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }

    /// The metadata as one URL-safe text (base64url of its JSON, letters, digits, `-`
    /// and `_` only): what a provider's message tags can carry to its webhooks.
    pub fn to_token(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Metadata from [`Metadata::to_token`]'s text, if it decodes to valid metadata.
    pub fn from_token(token: &str) -> Option<Self> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()?;
        let meta: Metadata = serde_json::from_slice(&json).ok()?;
        meta.validate().is_ok().then_some(meta)
    }

    /// Checks every field against its limits.
    pub fn validate(&self) -> Result<(), MetadataError> {
        if let Some(id) = self.user_id
            && id > MAX_USER_ID
        {
            return Err(MetadataError::UserId(id.to_string()));
        }
        for (field, value) in [
            ("email type", &self.email_type),
            ("tenant", &self.tenant),
            ("campaign", &self.campaign),
            ("variant", &self.variant),
        ] {
            if let Some(value) = value {
                token(field, value)?;
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(MetadataError::TooManyTags);
        }
        for (i, (name, value)) in self.tags.iter().enumerate() {
            tag(name, value)?;
            if self.tags[..i].iter().any(|(n, _)| n == name) {
                return Err(MetadataError::DuplicateTag(name.clone()));
            }
        }
        Ok(())
    }
}

/// Largest user id: 2^63-1, what every database's signed BIGINT holds.
pub const MAX_USER_ID: u64 = i64::MAX as u64;

/// Parses a user id: decimal digits only, at most [`MAX_USER_ID`].
pub fn parse_user_id(text: &str) -> Result<u64, MetadataError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MetadataError::UserId(shown(text)));
    }
    text.parse()
        .ok()
        .filter(|&id| id <= MAX_USER_ID)
        .ok_or_else(|| MetadataError::UserId(shown(text)))
}

/// Checks an identifier-like value (email type, tenant, campaign, variant).
pub fn token(field: &'static str, value: &str) -> Result<(), MetadataError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_VALUE
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MetadataError::Token {
            field,
            value: shown(value),
        })
    }
}

/// Checks one tag against the name and value limits.
pub fn tag(name: &str, value: &str) -> Result<(), MetadataError> {
    let name_ok = !name.is_empty()
        && name.len() <= MAX_TAG_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(MetadataError::TagName(shown(name)));
    }
    if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
        return Err(MetadataError::TagValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Parses `name=value, name2=value2` (values may be empty; spaces around names and
/// values are dropped) and checks the limits.
pub fn parse_tags(text: &str) -> Result<Vec<(String, String)>, MetadataError> {
    let mut tags = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, value)) = item.split_once('=') else {
            return Err(MetadataError::TagSyntax(shown(item)));
        };
        tags.push((name.trim().to_string(), value.trim().to_string()));
        if tags.len() > MAX_TAGS {
            return Err(MetadataError::TooManyTags);
        }
    }
    let meta = Metadata {
        tags,
        ..Metadata::default()
    };
    meta.validate()?;
    Ok(meta.tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_travels_as_one_url_safe_token() {
        let meta = Metadata {
            user_id: Some(42),
            email_type: Some("order.shipped/v2@eu".into()),
            tenant: Some("acme".into()),
            campaign: Some("spring:2026".into()),
            variant: Some("B".into()),
            priority: Priority::Bulk,
            tags: vec![("plan".into(), "pro tier".into())],
        };
        let token = meta.to_token();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(Metadata::from_token(&token), Some(meta));
        assert_eq!(Metadata::from_token("not base64!"), None);
        // Decodes, but breaks the limits: refused.
        let bad = Metadata {
            email_type: Some("no spaces allowed".into()),
            ..Metadata::default()
        };
        assert_eq!(Metadata::from_token(&bad.to_token()), None);
    }

    #[test]
    fn priorities() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert_eq!(" bulk ".parse::<Priority>().unwrap(), Priority::Bulk);
        assert_eq!(Priority::default(), Priority::Normal);
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Bulk);
        assert!(matches!(
            "urgent".parse::<Priority>(),
            Err(MetadataError::Priority(_))
        ));
    }

    #[test]
    fn user_ids() {
        assert_eq!(parse_user_id(" 12345 ").unwrap(), 12345);
        assert_eq!(parse_user_id("9223372036854775807").unwrap(), MAX_USER_ID);
        for bad in ["", "-1", "12a", "1.5", "9223372036854775808", "+3"] {
            assert!(parse_user_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_and_limits() {
        let tags = parse_tags("plan=pro, region = eu-west ,empty=").unwrap();
        assert_eq!(
            tags,
            [
                ("plan".into(), "pro".into()),
                ("region".into(), "eu-west".into()),
                ("empty".into(), String::new())
            ]
        );
        assert!(matches!(
            parse_tags("plan"),
            Err(MetadataError::TagSyntax(_))
        ));
        assert!(matches!(
            parse_tags("a=1, a=2"),
            Err(MetadataError::DuplicateTag(_))
        ));
        assert!(matches!(
            parse_tags("bad name=1"),
            Err(MetadataError::TagName(_))
        ));
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}=v")).collect();
        assert_eq!(parse_tags(&many.join(",")), Err(MetadataError::TooManyTags));
        let long = format!("t={}", "x".repeat(MAX_VALUE + 1));
        assert!(matches!(
            parse_tags(&long),
            Err(MetadataError::TagValue { .. })
        ));
        let meta = Metadata {
            email_type: Some("welcome email".into()),
            ..Metadata::default()
        };
        assert!(matches!(
            meta.validate(),
            Err(MetadataError::Token {
                field: "email type",
                ..
            })
        ));
    }
}
