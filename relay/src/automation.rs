//! The reply rules of one site at work: which replies matched which rule and when, and
//! what the rules put in force (a suspension, limits set for a while).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::shaping::{Action, Limits, Rule, Scope, Trigger};

/// What a rule that fired asks of the site.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// Hold all mail until then (the reason says which rule and reply): the site's,
    /// or with `provider_wide` every site of its provider.
    Suspend {
        until: Instant,
        why: String,
        provider_wide: bool,
    },
    /// Run under these limits until then.
    Set {
        until: Instant,
        limits: Limits,
        why: String,
    },
}

#[derive(Debug, Default)]
pub struct Automation {
    rules: Vec<Rule>,
    /// Recent match times per rule (threshold triggers).
    hits: HashMap<String, VecDeque<Instant>>,
    suspended: Option<(Instant, String)>,
    overriding: Option<(Instant, Limits, String)>,
}

impl Automation {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// The rules of a reloaded file (what is in force stays until it ends).
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.hits
            .retain(|name, _| rules.iter().any(|r| &r.name == name));
        self.rules = rules;
    }

    /// A temporary or permanent reply of the site: what the rules it fires ask for.
    pub fn observe(&mut self, reply: &str, now: Instant) -> Vec<Fired> {
        let mut fired = Vec::new();
        for rule in &self.rules {
            if rule.action == Action::Bounce || !rule.matches(reply) {
                continue;
            }
            if let Trigger::Threshold { count, period } = rule.trigger {
                let hits = self.hits.entry(rule.name.clone()).or_default();
                hits.push_back(now);
                while hits
                    .front()
                    .is_some_and(|at| now.saturating_duration_since(*at) > period)
                {
                    hits.pop_front();
                }
                if hits.len() < count as usize {
                    continue;
                }
                hits.clear();
            }
            let why = format!("automation {:?} on \"{reply}\"", rule.name);
            match &rule.action {
                Action::Suspend(d) => {
                    let until = now + *d;
                    let provider_wide = rule.scope == Scope::Provider;
                    if !provider_wide && self.suspended.as_ref().is_none_or(|(u, _)| *u < until) {
                        self.suspended = Some((until, why.clone()));
                    }
                    fired.push(Fired::Suspend {
                        until,
                        why,
                        provider_wide,
                    });
                }
                Action::Set(limits, d) => {
                    let until = now + *d;
                    self.overriding = Some((until, (**limits).clone(), why.clone()));
                    fired.push(Fired::Set {
                        until,
                        limits: (**limits).clone(),
                        why,
                    });
                }
                Action::Bounce => {}
            }
        }
        fired
    }

    /// The bounce rule a temporary reply matches, by name.
    pub fn bounces(&self, reply: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.action == Action::Bounce && r.matches(reply))
            .map(|r| r.name.as_str())
    }

    /// The suspension in force: until when and why.
    pub fn suspended(&mut self, now: Instant) -> Option<(Instant, String)> {
        if self
            .suspended
            .as_ref()
            .is_some_and(|(until, _)| *until <= now)
        {
            self.suspended = None;
        }
        self.suspended.clone()
    }

    /// The limits a `set` rule put in force, until when, and why.
    pub fn overriding(&mut self, now: Instant) -> Option<(Instant, Limits, String)> {
        if self
            .overriding
            .as_ref()
            .is_some_and(|(until, ..)| *until <= now)
        {
            self.overriding = None;
        }
        self.overriding.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shaping::Shaping;

    fn rules(text: &str) -> Vec<Rule> {
        Shaping::parse(text, "t.toml")
            .unwrap()
            .rules_for(Some("gmail"), None)
    }

    const FILE: &str = r#"
[provider.gmail]
match = [{ MXSuffix = ".google.com" }]

[[automation]]
name = "blocked"
regex = "(?i)blocked"
action = "suspend"
duration = "10m"

[[automation]]
name = "slow"
provider = "gmail"
regex = ['4\.7\.28', "unusual rate"]
action = "set"
set = { max_message_rate = "1/s", connection_limit = 1 }
duration = "1h"
trigger = "3/min"

[[automation]]
name = "no such user"
regex = "4\\.1\\.1 .*unknown"
action = "bounce"

[[automation]]
name = "other"
domain = "other.test"
regex = "."
action = "suspend"
duration = "1s"

[[automation]]
name = "gmail blocks us"
provider = "gmail"
scope = "provider"
regex = "5\\.7\\.26"
action = "suspend"
duration = "2h"
"#;

    #[test]
    fn rules_fire_at_once_or_after_their_count_and_end_on_time() {
        let mut a = Automation::new(rules(FILE));
        let t = Instant::now();
        assert!(a.observe("250 2.0.0 ok", t).is_empty());
        let fired = a.observe("554 5.7.1 You are BLOCKED", t);
        assert!(
            matches!(&fired[..], [Fired::Suspend { until, why, provider_wide: false }] if *until == t + Duration::from_secs(600) && why.contains("blocked")),
            "{fired:?}"
        );
        assert!(a.suspended(t + Duration::from_secs(599)).is_some());
        assert!(a.suspended(t + Duration::from_secs(600)).is_none());
        // A provider-wide suspension is the provider's to hold, not the site's.
        let fired = a.observe("550 5.7.26 unauthenticated", t);
        assert!(
            matches!(&fired[..], [Fired::Suspend { until, provider_wide: true, .. }] if *until == t + Duration::from_secs(7200)),
            "{fired:?}"
        );
        assert!(a.suspended(t).is_none());

        // Three within a minute; the two older than a minute do not count.
        for s in [0, 10] {
            assert!(
                a.observe("421 4.7.28 unusual rate", t + Duration::from_secs(s))
                    .is_empty()
            );
        }
        assert!(
            a.observe("421 4.7.28 unusual rate", t + Duration::from_secs(80))
                .is_empty()
        );
        assert!(
            a.observe("421 4.7.28", t + Duration::from_secs(90))
                .is_empty()
        );
        let fired = a.observe("421 unusual rate", t + Duration::from_secs(100));
        assert!(
            matches!(&fired[..], [Fired::Set { limits, .. }] if limits.connection_limit == Some(1)),
            "{fired:?}"
        );
        let (_, limits, why) = a.overriding(t + Duration::from_secs(101)).unwrap();
        assert_eq!(limits.max_message_rate.unwrap().per_sec(), 1.0);
        assert!(why.contains("slow"));
        assert!(a.overriding(t + Duration::from_secs(100 + 3600)).is_none());

        assert_eq!(
            a.bounces("450 4.1.1 <x@gmail.com>: unknown user"),
            Some("no such user")
        );
        assert_eq!(a.bounces("450 4.2.2 mailbox full"), None);
        // The domain-scoped rule is not this site's.
        assert!(
            a.observe("anything", t)
                .iter()
                .all(|f| !matches!(f, Fired::Suspend { why, .. } if why.contains("other")))
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        let base = "[provider.gmail]\nmatch = [{ MXSuffix = \".google.com\" }]\n[[automation]]\nname = \"r\"\n";
        for (rule, expected) in [
            ("regex = \"(\"\naction = \"bounce\"\n", "regex \"(\""),
            ("regex = []\naction = \"bounce\"\n", "no pattern"),
            ("regex = \"x\"\naction = \"suspend\"\n", "needs a duration"),
            (
                "regex = \"x\"\naction = \"suspend\"\nduration = \"soon\"\n",
                "duration \"soon\"",
            ),
            (
                "regex = \"x\"\naction = \"set\"\nduration = \"1m\"\n",
                "needs set",
            ),
            (
                "regex = \"x\"\naction = \"set\"\nduration = \"1m\"\nset = {}\n",
                "changes nothing",
            ),
            (
                "regex = \"x\"\naction = \"set\"\nduration = \"1m\"\nset = { connection_limit = 0 }\n",
                "connection_limit must be above 0",
            ),
            (
                "regex = \"x\"\naction = \"bounce\"\nset = { connection_limit = 1 }\n",
                "goes with action",
            ),
            (
                "regex = \"x\"\naction = \"bounce\"\ntrigger = \"2/h\"\n",
                "no trigger",
            ),
            (
                "regex = \"x\"\naction = \"suspend\"\nduration = \"1m\"\ntrigger = \"1.5/h\"\n",
                "whole matches",
            ),
            (
                "regex = \"x\"\naction = \"suspend\"\nduration = \"1m\"\nprovider = \"yahoo\"\n",
                "no [provider.yahoo]",
            ),
            (
                "regex = \"x\"\naction = \"suspend\"\nduration = \"1m\"\nscope = \"provider\"\n",
                "needs provider",
            ),
            (
                "regex = \"x\"\naction = \"bounce\"\nprovider = \"gmail\"\nscope = \"provider\"\n",
                "goes with action = \"suspend\"",
            ),
            (
                "regex = \"x\"\naction = \"suspend\"\nduration = \"1m\"\nscope = \"world\"\n",
                "world",
            ),
            ("regex = \"x\"\naction = \"explode\"\n", "explode"),
        ] {
            let error = Shaping::parse(&format!("{base}{rule}"), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{rule}: {error}");
        }
        let summary = Shaping::parse(FILE, "t.toml").unwrap().summary();
        assert!(summary.contains("automation \"slow\": set connection_limit = 1, max_message_rate = \"1/s\" for 1h, after 3 in 1m (provider gmail)"), "{summary}");
        assert!(
            summary.contains(
                "automation \"gmail blocks us\": suspend for 2h, at once (provider gmail, all its sites)"
            ),
            "{summary}"
        );
    }
}
