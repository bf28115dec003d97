//! A tenant's registered endpoint: where its events go, which kinds, and the secret
//! their batches are signed with.

use postroad_queue::EventKind;
use serde::{Deserialize, Serialize};

/// Longest endpoint URL.
pub const MAX_URL: usize = 2048;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 200;

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 32 hex digits.
    pub id: String,
    /// The tenant whose events it gets; empty for mail without one.
    pub tenant: String,
    /// `https://...` (or `http://`).
    pub url: String,
    /// The HMAC-SHA256 key of the signatures (`whsec_` and 43 base64url characters).
    pub secret: String,
    /// The kinds of events it gets; empty: all.
    pub events: Vec<EventKind>,
    pub description: String,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

impl Endpoint {
    /// Whether an event of `kind` for `tenant` goes to it.
    pub fn wants(&self, tenant: &str, kind: EventKind) -> bool {
        self.tenant == tenant && (self.events.is_empty() || self.events.contains(&kind))
    }

    /// The kinds as stored: names separated by commas, empty for all.
    pub fn events_text(&self) -> String {
        let names: Vec<&str> = self.events.iter().map(|k| k.as_str()).collect();
        names.join(",")
    }
}

/// The kinds named by `text` (as [`Endpoint::events_text`] writes them).
pub fn parse_events(text: &str) -> Result<Vec<EventKind>, String> {
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| format!("{name:?} is no event type (one of {})", kind_names()))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// Every event type's name, for messages.
pub fn kind_names() -> String {
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    names.join(", ")
}

/// Checks an endpoint URL: absolute `http` or `https` with a host, no credentials, no
/// fragment, at most [`MAX_URL`] bytes.
pub fn check_url(text: &str) -> Result<reqwest::Url, String> {
    if text.len() > MAX_URL {
        return Err(format!("at most {MAX_URL} bytes"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("an http or https URL".into());
    }
    if url.host().is_none() {
        return Err("a URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no user name or password in the URL (the signature authenticates)".into());
    }
    if url.fragment().is_some() {
        return Err("no fragment (#...) in the URL".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_event_lists_are_checked() {
        assert!(check_url("https://hooks.example.com/postroad?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "/relative",
            "mailto:a@b.test",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://x.test/{}", "a".repeat(MAX_URL))).is_err());
        assert_eq!(
            parse_events(" bounced, complained,bounced ").unwrap(),
            [EventKind::Bounced, EventKind::Complained]
        );
        assert_eq!(parse_events("").unwrap(), []);
        assert!(
            parse_events("bounced,exploded")
                .unwrap_err()
                .contains("exploded")
        );
    }

    #[test]
    fn an_endpoint_takes_its_tenants_events_of_its_kinds() {
        let endpoint = Endpoint {
            id: "0".repeat(32),
            tenant: "acme".into(),
            url: "https://hooks.acme.test/".into(),
            secret: "whsec_x".into(),
            events: vec![EventKind::Bounced],
            description: String::new(),
            created_at_ms: 0,
        };
        assert!(endpoint.wants("acme", EventKind::Bounced));
        assert!(!endpoint.wants("acme", EventKind::Delivered));
        assert!(!endpoint.wants("", EventKind::Bounced));
        let all = Endpoint {
            events: Vec::new(),
            ..endpoint
        };
        assert!(all.wants("acme", EventKind::Opened));
        assert_eq!(all.events_text(), "");
    }
}
