//! Traffic shaping: how hard to push each destination. A shaping file (TOML) sets
//! limits in three layers, each overriding the one before: `[default]`, then
//! `[provider.NAME]` (matched by the suffix of a site's MX host names, KumoMTA's model:
//! `match = [{ MXSuffix = ".google.com" }]`), then `[domain."example.com"]`. What
//! `[default]` leaves out is 16 connections, 1,000 messages per connection, no rate
//! limits, 30 s idle and the route's TLS.
//!
//! A domain with its own `[domain]` entry gets a connection pool of its own (its limits
//! are its own, not shared with other domains on the same MX hosts); other domains on
//! the same MX hosts share one site, as without shaping. Provider limits apply to each
//! site of the provider; `provider_max_message_rate` holds for all of them together
//! ([`crate::mx_provider`]).
//!
//! Without `relay.shaping_file`, the file shipped in the binary (`shaping.toml` at the
//! crate root) is used: conservative settings for Gmail, Outlook/Hotmail, Yahoo/AOL and
//! iCloud.

mod rate;
pub mod rules;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use rate::Rate;
pub use rules::{Action, Rule, Scope, Trigger};

use crate::client::TlsPolicy;

/// The shaping file shipped with Postroad, used without `relay.shaping_file`.
pub const DEFAULT_FILE: &str = include_str!("../../shaping.toml");

#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    #[error("cannot read the shaping file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("shaping file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Limits of one layer; what a layer leaves out comes from the layer below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most connections open to the site at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<usize>,
    /// Messages over one connection before it is closed and reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries_per_connection: Option<usize>,
    /// Most messages sent to the site per period (`"100/s"`, `"10,000/h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_rate: Option<Rate>,
    /// Most new connections to the site per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_rate: Option<Rate>,
    /// How long an idle connection stays open, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// TLS policy (`none`, `opportunistic`, `required`, `verify`); unset: the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPolicy>,
    /// Adapt to throttle replies (AIMD below the limits above); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
}

impl Limits {
    /// `self` with what `over` sets replacing it.
    fn overlaid(&self, over: &Limits) -> Limits {
        Limits {
            connection_limit: over.connection_limit.or(self.connection_limit),
            max_deliveries_per_connection: over
                .max_deliveries_per_connection
                .or(self.max_deliveries_per_connection),
            max_message_rate: over.max_message_rate.or(self.max_message_rate),
            max_connection_rate: over.max_connection_rate.or(self.max_connection_rate),
            idle_timeout_secs: over.idle_timeout_secs.or(self.idle_timeout_secs),
            tls: over.tls.or(self.tls),
            adaptive: over.adaptive.or(self.adaptive),
        }
    }

    fn check(&self, at: &str) -> Result<(), String> {
        for (key, value) in [
            ("connection_limit", self.connection_limit),
            (
                "max_deliveries_per_connection",
                self.max_deliveries_per_connection,
            ),
        ] {
            if value == Some(0) {
                return Err(format!("{at}.{key} must be above 0"));
            }
        }
        if self.idle_timeout_secs == Some(0) {
            return Err(format!("{at}.idle_timeout_secs must be above 0"));
        }
        Ok(())
    }
}

/// How a provider is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Match {
    /// A site belongs to the provider when one of its MX host names ends with this.
    MXSuffix(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    #[serde(rename = "match")]
    matches: Vec<Match>,
    /// Most messages per period to all of the provider's sites together (each site
    /// still has its own `max_message_rate`).
    #[serde(default)]
    provider_max_message_rate: Option<Rate>,
    #[serde(flatten)]
    limits: Limits,
}

/// A provider as the file sets it.
#[derive(Debug, Clone)]
struct Provider {
    limits: Limits,
    /// The MX suffixes as written.
    suffixes: Vec<String>,
    aggregate_rate: Option<Rate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default: Limits,
    #[serde(default)]
    provider: BTreeMap<String, ProviderEntry>,
    #[serde(default)]
    domain: BTreeMap<String, Limits>,
    #[serde(default)]
    automation: Vec<rules::RuleEntry>,
}

/// The limits a site runs under, every value decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    pub connection_limit: usize,
    pub max_deliveries_per_connection: usize,
    pub max_message_rate: Option<Rate>,
    pub max_connection_rate: Option<Rate>,
    #[serde(rename = "idle_timeout_secs", with = "secs")]
    pub idle_timeout: Duration,
    /// `None`: the route's policy.
    pub tls: Option<TlsPolicy>,
    /// Adaptive control on (the limits above are then ceilings).
    pub adaptive: bool,
    /// The provider whose limits apply.
    pub provider: Option<String>,
    /// The `[domain]` entry that applies (the site is that domain's own).
    pub domain: Option<String>,
}

impl Shape {
    /// This shape with `over`'s limits (an automation rule's `set`) in force.
    pub fn with(&self, over: &Limits) -> Shape {
        Shape {
            connection_limit: over.connection_limit.unwrap_or(self.connection_limit),
            max_deliveries_per_connection: over
                .max_deliveries_per_connection
                .unwrap_or(self.max_deliveries_per_connection),
            max_message_rate: over.max_message_rate.or(self.max_message_rate),
            max_connection_rate: over.max_connection_rate.or(self.max_connection_rate),
            idle_timeout: over
                .idle_timeout_secs
                .map_or(self.idle_timeout, Duration::from_secs),
            tls: over.tls.or(self.tls),
            adaptive: over.adaptive.unwrap_or(self.adaptive),
            provider: self.provider.clone(),
            domain: self.domain.clone(),
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// A loaded, checked shaping file.
#[derive(Debug, Clone)]
pub struct Shaping {
    /// What `[default]` (over the fallbacks) gives every site.
    base: Limits,
    /// Providers with their MX suffixes (lowercased, with a leading dot or not as
    /// written), longest suffix first.
    suffixes: Vec<(String, String)>,
    providers: BTreeMap<String, Provider>,
    domains: BTreeMap<String, Limits>,
    /// `[[automation]]`, in file order.
    rules: Vec<Rule>,
    /// Where it came from (a path, or "built-in").
    pub source: String,
}

impl Shaping {
    /// Reads `path`, or the built-in file when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ShapingError> {
        match path {
            None => Self::parse(DEFAULT_FILE, "built-in"),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ShapingError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Self::parse(&text, &shown)
            }
        }
    }

    /// Parses and checks a shaping file's text (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<Self, ShapingError> {
        let invalid = |reason: String| ShapingError::Invalid {
            path: source.to_string(),
            reason,
        };
        let mut file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        file.default.check("default").map_err(invalid)?;
        let fallback = Limits {
            connection_limit: Some(16),
            max_deliveries_per_connection: Some(1000),
            idle_timeout_secs: Some(30),
            ..Limits::default()
        };
        let mut suffixes = Vec::new();
        let mut providers = BTreeMap::new();
        for (name, entry) in &file.provider {
            let at = format!("provider.{name}");
            entry.limits.check(&at).map_err(invalid)?;
            if entry.matches.is_empty() {
                return Err(invalid(format!("{at}.match names no MX suffix")));
            }
            let mut written = Vec::new();
            for Match::MXSuffix(suffix) in &entry.matches {
                let suffix = suffix.trim().trim_end_matches('.').to_ascii_lowercase();
                if suffix.trim_start_matches('.').is_empty() {
                    return Err(invalid(format!("{at}.match has an empty MXSuffix")));
                }
                if let Some((_, other)) = suffixes.iter().find(|(s, _)| *s == suffix) {
                    return Err(invalid(format!(
                        "MXSuffix {suffix:?} is in both provider.{other} and {at}"
                    )));
                }
                written.push(suffix.clone());
                suffixes.push((suffix, name.clone()));
            }
            providers.insert(
                name.clone(),
                Provider {
                    limits: entry.limits.clone(),
                    suffixes: written,
                    aggregate_rate: entry.provider_max_message_rate,
                },
            );
        }
        suffixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        let mut domains = BTreeMap::new();
        for (name, limits) in &file.domain {
            let domain = name.trim().trim_end_matches('.').to_ascii_lowercase();
            limits.check(&format!("domain.{name:?}")).map_err(invalid)?;
            if domain.is_empty() || domains.insert(domain.clone(), limits.clone()).is_some() {
                return Err(invalid(format!("domain {name:?} is empty or given twice")));
            }
        }
        let names: Vec<&str> = providers.keys().map(String::as_str).collect();
        let rules = std::mem::take(&mut file.automation)
            .into_iter()
            .enumerate()
            .map(|(i, entry)| entry.check(i + 1, &names))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(Self {
            base: fallback.overlaid(&file.default),
            suffixes,
            providers,
            domains,
            rules,
            source: source.to_string(),
        })
    }

    /// Whether `domain` (lowercased) has an entry of its own, and so a site of its own.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The provider one of whose suffixes ends one of `hosts` (the longest suffix wins).
    pub fn provider_of<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Option<&str> {
        self.suffixes.iter().find_map(|(suffix, provider)| {
            hosts
                .clone()
                .into_iter()
                .any(|host| host_has_suffix(host, suffix))
                .then_some(provider.as_str())
        })
    }

    /// The limits of a site with MX `hosts`, for `domain` when the site is its own.
    pub fn shape<'a>(
        &self,
        domain: Option<&str>,
        hosts: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Shape {
        let provider = self.provider_of(hosts).map(str::to_string);
        let mut limits = self.base.clone();
        if let Some(p) = provider.as_ref().and_then(|p| self.providers.get(p)) {
            limits = limits.overlaid(&p.limits);
        }
        let domain = domain.filter(|d| self.domains.contains_key(*d));
        if let Some(d) = domain.and_then(|d| self.domains.get(d)) {
            limits = limits.overlaid(d);
        }
        Shape {
            connection_limit: limits.connection_limit.unwrap_or(1),
            max_deliveries_per_connection: limits.max_deliveries_per_connection.unwrap_or(1),
            max_message_rate: limits.max_message_rate,
            max_connection_rate: limits.max_connection_rate,
            idle_timeout: Duration::from_secs(limits.idle_timeout_secs.unwrap_or(30)),
            tls: limits.tls,
            adaptive: limits.adaptive.unwrap_or(true),
            provider,
            domain: domain.map(str::to_string),
        }
    }

    /// `provider_max_message_rate` of `provider`: the rate all its sites share.
    pub fn provider_rate(&self, provider: &str) -> Option<Rate> {
        self.providers.get(provider)?.aggregate_rate
    }

    /// The rules that apply to a site of `provider`, or `domain`'s own site.
    pub fn rules_for(&self, provider: Option<&str>, domain: Option<&str>) -> Vec<Rule> {
        self.rules
            .iter()
            .filter(|r| r.covers(provider, domain))
            .cloned()
            .collect()
    }

    /// What `postroad check-shaping` prints: each layer's limits, then the rules.
    pub fn summary(&self) -> String {
        let mut out = format!("shaping file {}\n", self.source);
        let show = |l: &Limits| toml::to_string(l).unwrap_or_default().replace('\n', "; ");
        out.push_str(&format!(
            "default: {}\n",
            show(&self.base).trim_end_matches("; ")
        ));
        for (name, p) in &self.providers {
            let aggregate = p
                .aggregate_rate
                .map(|r| format!("; all its sites together: {r}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "provider {name} (MX {}): {}{aggregate}\n",
                p.suffixes.join(", "),
                show(&p.limits).trim_end_matches("; ")
            ));
        }
        for (name, limits) in &self.domains {
            out.push_str(&format!(
                "domain {name}: {}\n",
                show(limits).trim_end_matches("; ")
            ));
        }
        for rule in &self.rules {
            out.push_str(&format!(
                "automation {:?}: {}\n",
                rule.name,
                rule.describe()
            ));
        }
        out
    }
}

/// Whether `host` (an MX name, any case, maybe with a final dot) ends with `suffix`:
/// `.google.com` matches `aspmx.l.google.com`; `google.com` matches it and `google.com`.
fn host_has_suffix(host: &str, suffix: &str) -> bool {
    let host = host.trim_end_matches('.').as_bytes();
    let suffix = suffix.as_bytes();
    let Some(start) = host.len().checked_sub(suffix.len()) else {
        return false;
    };
    host[start..].eq_ignore_ascii_case(suffix)
        && (suffix.first() == Some(&b'.') || start == 0 || host[start - 1] == b'.')
}

#[cfg(test)]
mod tests;
