//! Which transports carry a message: `[[relay.routing]]` rules, the first that matches
//! the recipient's domain, the message's tenant and email type. A rule lists
//! transports (`smtp` is direct delivery, other names are `[relay.providers.NAME]`):
//! the first is the primary, the rest fallbacks in order; with `weights`, the primary
//! is drawn by weight (per message, the same on every attempt), the others follow in
//! list order. No rule matches: direct SMTP.

use std::collections::BTreeMap;

use postroad_queue::{MessageId, Metadata};
use serde::{Deserialize, Serialize};

use super::ProviderConfig;

/// The name of direct SMTP delivery in a rule's `via`.
pub const SMTP: &str = "smtp";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    /// Recipient domains (`example.com`; `.example.com` for its subdomains too); empty:
    /// any.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Tenants (the message's `tenant` metadata); empty: any.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Email types (the message's `email_type` metadata); empty: any.
    #[serde(default)]
    pub email_types: Vec<String>,
    /// Transports, primary first.
    pub via: Vec<String>,
    /// One weight per `via` entry: the share of messages that go to it first (0: only
    /// as a fallback). Empty: the first is always the primary.
    #[serde(default)]
    pub weights: Vec<u32>,
}

impl RoutingRule {
    pub fn validate(&self, providers: &BTreeMap<String, ProviderConfig>) -> Result<(), String> {
        if self.via.is_empty() {
            return Err("via names no transport".into());
        }
        for (i, name) in self.via.iter().enumerate() {
            if name != SMTP && !providers.contains_key(name) {
                return Err(format!(
                    "via names {name:?}, which is neither \"smtp\" nor a [relay.providers.{name}] section"
                ));
            }
            if self.via[..i].contains(name) {
                return Err(format!("via names {name:?} twice"));
            }
        }
        if !self.weights.is_empty() {
            if self.weights.len() != self.via.len() {
                return Err(format!(
                    "weights has {} entries for {} transports in via",
                    self.weights.len(),
                    self.via.len()
                ));
            }
            if self.weights.iter().all(|w| *w == 0) {
                return Err("weights are all 0".into());
            }
        }
        Ok(())
    }

    fn matches(&self, domain: &str, meta: &Metadata) -> bool {
        let domain_ok = self.domains.is_empty()
            || self.domains.iter().any(|d| {
                let d = d.trim_end_matches('.');
                match d.strip_prefix('.') {
                    Some(parent) => {
                        domain.eq_ignore_ascii_case(parent)
                            || domain.len() > parent.len()
                                && domain[domain.len() - parent.len()..]
                                    .eq_ignore_ascii_case(parent)
                                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                    }
                    None => domain.eq_ignore_ascii_case(d),
                }
            });
        let listed = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_ref().is_some_and(|v| list.iter().any(|x| x == v))
        };
        domain_ok
            && listed(&self.tenants, &meta.tenant)
            && listed(&self.email_types, &meta.email_type)
    }

    /// The transports in the order this message tries them.
    fn order(&self, id: MessageId) -> Vec<&str> {
        let mut order: Vec<&str> = self.via.iter().map(String::as_str).collect();
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        if total > 0 {
            // The random low bits of the (UUIDv7) id: the same draw on every attempt.
            let mut draw = (id.as_u128() as u64 & ((1 << 62) - 1)) % total;
            let primary = self
                .weights
                .iter()
                .position(|w| {
                    let w = u64::from(*w);
                    if draw < w {
                        true
                    } else {
                        draw -= w;
                        false
                    }
                })
                .unwrap_or(0);
            let first = order.remove(primary);
            order.insert(0, first);
        }
        order
    }
}

/// The transports for mail to `domain` of a message: the first matching rule's, or
/// direct SMTP.
pub fn route<'a>(
    rules: &'a [RoutingRule],
    domain: &str,
    meta: &Metadata,
    id: MessageId,
) -> Vec<&'a str> {
    rules
        .iter()
        .find(|r| r.matches(domain, meta))
        .map(|r| r.order(id))
        .unwrap_or_else(|| vec![SMTP])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderKind;

    fn rule(toml: &str) -> RoutingRule {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn the_first_matching_rule_routes() {
        let rules = vec![
            rule(
                "domains = [\".example.com\"]\nemail_types = [\"receipt\"]\nvia = [\"ses\", \"smtp\"]",
            ),
            rule("tenants = [\"acme\"]\nvia = [\"sendgrid\", \"ses\"]"),
        ];
        let meta = |tenant: Option<&str>, kind: Option<&str>| Metadata {
            tenant: tenant.map(str::to_string),
            email_type: kind.map(str::to_string),
            ..Default::default()
        };
        let id = MessageId::from_u128(1);
        let receipt = meta(None, Some("receipt"));
        assert_eq!(route(&rules, "example.com", &receipt, id), ["ses", "smtp"]);
        assert_eq!(
            route(&rules, "mail.EXAMPLE.com", &receipt, id),
            ["ses", "smtp"]
        );
        assert_eq!(route(&rules, "notexample.com", &receipt, id), ["smtp"]);
        assert_eq!(
            route(&rules, "example.com", &meta(Some("acme"), None), id),
            ["sendgrid", "ses"]
        );
        assert_eq!(
            route(&rules, "example.org", &meta(Some("other"), None), id),
            ["smtp"]
        );
    }

    #[test]
    fn weights_share_the_primary_and_keep_the_rest_as_fallbacks() {
        let r = rule("via = [\"sendgrid\", \"ses\", \"smtp\"]\nweights = [3, 1, 0]");
        let mut firsts = BTreeMap::new();
        for _ in 0..4000 {
            let id = MessageId::from_u128(uuid::Uuid::now_v7().as_u128());
            let order = r.order(id);
            assert_eq!(order.len(), 3);
            assert_eq!(r.order(id), order, "the same message, the same order");
            *firsts.entry(order[0]).or_insert(0) += 1;
            if order[0] == "ses" {
                assert_eq!(order, ["ses", "sendgrid", "smtp"]);
            }
        }
        assert!(!firsts.contains_key("smtp"), "weight 0 is never first");
        let sendgrid = f64::from(firsts["sendgrid"]) / 4000.0;
        assert!(
            (0.70..0.80).contains(&sendgrid),
            "sendgrid first for {sendgrid}"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let mut providers = BTreeMap::new();
        providers.insert("ses".to_string(), ProviderConfig::new(ProviderKind::Ses));
        for (toml, error) in [
            ("via = []", "no transport"),
            ("via = [\"mailgun\"]", "neither"),
            ("via = [\"ses\", \"ses\"]", "twice"),
            (
                "via = [\"ses\", \"smtp\"]\nweights = [1]",
                "1 entries for 2",
            ),
            ("via = [\"ses\"]\nweights = [0]", "all 0"),
        ] {
            let e = rule(toml).validate(&providers).unwrap_err();
            assert!(e.contains(error), "{toml}: {e}");
        }
        rule("via = [\"ses\", \"smtp\"]\nweights = [1, 1]")
            .validate(&providers)
            .unwrap();
    }
}
