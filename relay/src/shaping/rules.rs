//! Reply rules (`[[automation]]`, KumoMTA's automation and PowerMTA's backoff mode):
//! a regular expression on the remote reply, scoped to a provider or a domain or not
//! at all, that suspends the site (or with `scope = "provider"` every site of the
//! provider), sets limits for a while, or bounces the recipient, at once or once it
//! matched often enough (`trigger = "3/hr"`).
//!
//! ```toml
//! [[automation]]
//! name = "gmail says slow down"
//! provider = "gmail"
//! regex = ["4\\.7\\.28", "(?i)unusual rate"]
//! action = "suspend"
//! duration = "30m"
//! trigger = "2/hr"
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::Limits;
use super::rate::Rate;

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Defer the site's mail (all of it, without connecting) for this long.
    Suspend(Duration),
    /// Run the site under these limits (over its shape) for this long.
    Set(Box<Limits>, Duration),
    /// Bounce the recipient the reply was for, though it was temporary.
    Bounce,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    Immediate,
    /// After `count` matches within `period` (per site).
    Threshold {
        count: u32,
        period: Duration,
    },
}

/// What a suspension holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The site whose server replied.
    #[default]
    Site,
    /// Every site of the rule's provider, whatever MX set it delivers to.
    Provider,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    patterns: Vec<regex::Regex>,
    provider: Option<String>,
    domain: Option<String>,
    pub action: Action,
    pub trigger: Trigger,
    pub scope: Scope,
}

impl Rule {
    /// Whether the rule applies to a site of `provider`, or `domain`'s own site.
    pub fn covers(&self, provider: Option<&str>, domain: Option<&str>) -> bool {
        self.provider.as_deref().is_none_or(|p| Some(p) == provider)
            && self.domain.as_deref().is_none_or(|d| Some(d) == domain)
    }

    /// What it does, for `postroad check-shaping`.
    pub fn describe(&self) -> String {
        let action = match &self.action {
            Action::Suspend(d) => format!("suspend for {}", humantime::format_duration(*d)),
            Action::Set(limits, d) => format!(
                "set {} for {}",
                toml::to_string(limits.as_ref())
                    .unwrap_or_default()
                    .trim_end()
                    .replace('\n', ", "),
                humantime::format_duration(*d)
            ),
            Action::Bounce => "bounce the recipient".into(),
        };
        let trigger = match self.trigger {
            Trigger::Immediate => "at once".to_string(),
            Trigger::Threshold { count, period } => {
                format!("after {count} in {}", humantime::format_duration(period))
            }
        };
        let scope = match (&self.provider, &self.domain) {
            (Some(p), _) if self.scope == Scope::Provider => {
                format!(" (provider {p}, all its sites)")
            }
            (Some(p), _) => format!(" (provider {p})"),
            (None, Some(d)) => format!(" (domain {d})"),
            (None, None) => String::new(),
        };
        format!("{action}, {trigger}{scope}")
    }

    /// Whether one of the patterns is found in `reply` (as `postroad queue sites` and
    /// the history show it: `421 4.7.0 text`).
    pub fn matches(&self, reply: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(reply))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionName {
    Suspend,
    Set,
    Bounce,
}

/// An `[[automation]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleEntry {
    name: Option<String>,
    regex: OneOrMany,
    provider: Option<String>,
    domain: Option<String>,
    action: ActionName,
    /// `"90s"`, `"30m"`, `"2h"`, `"1d"` (suspend and set).
    duration: Option<String>,
    set: Option<Limits>,
    /// `"immediate"` (the default) or a count per period, `"3/hr"`.
    trigger: Option<String>,
    /// `"site"` (the default) or `"provider"`: what a suspension holds.
    #[serde(default)]
    scope: Scope,
}

impl RuleEntry {
    /// Checks the entry (`index` counts from 1); `providers` are the file's.
    pub(super) fn check(self, index: usize, providers: &[&str]) -> Result<Rule, String> {
        let name = self.name.unwrap_or_else(|| format!("automation #{index}"));
        let at = format!("automation {name:?}");
        let patterns = match self.regex {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(ps) => ps,
        };
        if patterns.is_empty() {
            return Err(format!("{at}: regex names no pattern"));
        }
        let patterns = patterns
            .iter()
            .map(|p| regex::Regex::new(p).map_err(|e| format!("{at}: regex {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = &self.provider
            && !providers.contains(&p.as_str())
        {
            return Err(format!("{at}: no [provider.{p}] in this file"));
        }
        let domain = self
            .domain
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
        let duration = |what: &str| -> Result<Duration, String> {
            let text = self
                .duration
                .as_deref()
                .ok_or_else(|| format!("{at}: action {what} needs a duration (\"30m\")"))?;
            let d = humantime::parse_duration(text)
                .map_err(|e| format!("{at}: duration {text:?}: {e}"))?;
            if d.is_zero() {
                return Err(format!("{at}: duration must be above 0"));
            }
            Ok(d)
        };
        let action = match self.action {
            ActionName::Suspend => Action::Suspend(duration("suspend")?),
            ActionName::Set => {
                let limits = self
                    .set
                    .clone()
                    .ok_or_else(|| format!("{at}: action set needs set = {{ ... }}"))?;
                limits.check(&format!("{at}.set"))?;
                if limits == Limits::default() {
                    return Err(format!("{at}: set = {{}} changes nothing"));
                }
                Action::Set(Box::new(limits), duration("set")?)
            }
            ActionName::Bounce => Action::Bounce,
        };
        if !matches!(action, Action::Set(..)) && self.set.is_some() {
            return Err(format!("{at}: set = {{ ... }} goes with action = \"set\""));
        }
        if action == Action::Bounce
            && self
                .trigger
                .as_deref()
                .is_some_and(|t| t.trim() != "immediate")
        {
            return Err(format!(
                "{at}: action bounce acts on each matching reply (no trigger)"
            ));
        }
        if self.scope == Scope::Provider {
            if self.provider.is_none() {
                return Err(format!(
                    "{at}: scope = \"provider\" needs provider = \"NAME\""
                ));
            }
            if !matches!(action, Action::Suspend(_)) {
                return Err(format!(
                    "{at}: scope = \"provider\" goes with action = \"suspend\""
                ));
            }
        }
        let trigger = match self.trigger.as_deref().map(str::trim) {
            None | Some("immediate") => Trigger::Immediate,
            Some(text) => {
                let rate = Rate::parse(text).map_err(|e| format!("{at}: trigger: {e}"))?;
                if rate.count().fract() != 0.0 || rate.count() > f64::from(u32::MAX) {
                    return Err(format!("{at}: trigger counts whole matches, not {text:?}"));
                }
                Trigger::Threshold {
                    count: rate.count() as u32,
                    period: rate.period(),
                }
            }
        };
        Ok(Rule {
            name,
            patterns,
            provider: self.provider,
            domain,
            action,
            trigger,
            scope: self.scope,
        })
    }
}
