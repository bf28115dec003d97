//! CI smoke test of `loadtest campaign`: a 2,000-recipient campaign through the real
//! `postroad` binary (debug build) with the sink's fault mix and high messages meanwhile:
//! exit 0, every recipient queued and resolved, the high messages measured.

mod common;

use std::process::Command;

use common::postroad_binary;

#[test]
fn a_small_campaign_is_queued_resolved_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("campaign.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("campaign")
        .arg("--spawn-postroad")
        .arg(postroad_binary())
        .args([
            "-n",
            "2000",
            "--high-rate",
            "10",
            "--timeout-secs",
            "300",
            "--work-dir",
        ])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!(n("queued"), 2000, "{report}");
    assert_eq!(
        n("delivered") + n("bounced") + n("expired"),
        2000,
        "{report}"
    );
    assert!(
        n("bounced") > 0,
        "the sink's 1% permanent failures: {report}"
    );
    assert!(
        n("high_sent") > 0 && n("high_received") <= n("high_sent"),
        "{report}"
    );
    assert!(report["peak_rss_mib"].as_f64().unwrap() > 0.0, "{report}");
    assert!(text.contains("all resolved after"), "{text}");
}
