//! The Prometheus alerting rules shipped in `deploy/prometheus/`: valid for
//! `promtool check rules`, right by their own unit tests (`promtool test rules`), and
//! the same rules, by name, severity and threshold, as Postroad's built-in alerts.

mod common;

use std::path::PathBuf;

use postroad::analytics::alerts::{AlertsConfig, Rule};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `promtool COMMAND rules FILE` on a file of `deploy/prometheus/`.
fn promtool(command: &str, file: &str) -> String {
    let path = rules_dir().join(file);
    let args = [command, "rules", path.to_str().unwrap()];
    let (ok, out) = common::run("promtool", &args, None);
    assert!(ok, "promtool {args:?}:\n{out}");
    out
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let out = promtool("check", "postroad-alerts.yml");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let out = promtool("test", "postroad-alerts.test.yml");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_shipped_rules_are_the_built_in_ones() {
    let text = std::fs::read_to_string(rules_dir().join("postroad-alerts.yml")).unwrap();
    // Each rule: its name, then (in its expression) the threshold, then its severity.
    let blocks: Vec<&str> = text.split("- alert: ").skip(1).collect();
    let built_in = Rule::all(&AlertsConfig::default());
    assert_eq!(blocks.len(), built_in.len());
    for (block, rule) in blocks.iter().zip(&built_in) {
        let name = block.lines().next().unwrap().trim();
        assert_eq!(name, rule.name);
        assert!(
            block.contains(&format!("severity: {}", rule.severity.as_str())),
            "{name}: {block}"
        );
        let comparison = match rule.condition {
            postroad_api::alerts::AlertCondition::Above => '>',
            postroad_api::alerts::AlertCondition::Below => '<',
        };
        assert!(
            block.contains(&format!("{comparison} {}\n", rule.threshold)),
            "{name}: no `{comparison} {}` ending a line in {block}",
            rule.threshold
        );
        assert!(
            block.contains(&format!("summary: {}", rule.summary())),
            "{name}: {block}"
        );
    }
}
