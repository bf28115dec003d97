//! CI smoke test of the whole path: `loadtest e2e --spawn-postroad` with the real
//! `postroad` binary (debug build), 500 messages over 8 connections by MX through the
//! DNS stub to the sink: exit 0, nothing lost or duplicated. Then the same with a sink
//! that refuses some recipients with 550: Postroad bounces them, and e2e must report
//! exactly those as lost and exit 1.
//!
//! The binary is `$CARGO_TARGET_DIR/debug/postroad` (or `POSTROAD_BIN`); when it is not
//! there this test builds it with `cargo build -p postroad`.

mod common;

use std::process::Command;

use common::postroad_binary;

/// Runs `loadtest e2e` with `extra`; (exit code, JSON report, output). The HTML page
/// must have the three charts of every run, one more per `--sink-domain`.
fn e2e(extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e2e.json");
    let html = dir.path().join("e2e.html");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("e2e")
        .arg("--spawn-postroad")
        .arg(postroad_binary())
        .args(["--no-progress", "--work-dir"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .args(extra)
        .output()
        .expect("run loadtest e2e");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&json).unwrap_or_else(|e| panic!("no JSON report ({e}):\n{text}")),
    )
    .unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    let domains = extra.iter().filter(|a| **a == "--sink-domain").count();
    assert_eq!(page.matches("<svg").count(), 3 + domains, "HTML charts");
    (out.status.code(), report, text)
}

#[test]
fn e2e_through_postroad_loses_and_duplicates_nothing() {
    let (code, r, text) = e2e(&["-n", "500", "-c", "8"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(r["ok"], true, "{text}");
    assert_eq!(r["messages_accepted"], 500, "{text}");
    assert_eq!(r["delivered"], 500, "{text}");
    assert_eq!(r["lost"], 0, "{text}");
    assert_eq!(r["duplicates"], 0, "{text}");
    assert_eq!(r["checksum_bad"], 0, "{text}");
    assert_eq!(r["e2e_latency_ms"]["count"], 500, "{text}");
    assert_eq!(r["postroad"]["spool_fsync"], true);
    assert_eq!(r["postroad"]["exit"], "clean exit", "{text}");
    // MX routing spread the mail over the four default domains
    let domains = r["by_domain"].as_array().unwrap();
    assert_eq!(domains.len(), 4);
    assert!(
        domains.iter().all(|d| d["delivered"].as_u64() > Some(0)),
        "{domains:?}"
    );
}

#[test]
fn recipients_bounced_by_the_sink_are_reported_lost() {
    let (code, r, text) = e2e(&[
        "-n",
        "200",
        "-c",
        "4",
        "--sink-permfail-share",
        "0.05",
        "--drain-timeout",
        "5",
        "--fsync",
        "false",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["ok"], false);
    let lost = r["lost"].as_u64().unwrap();
    assert!(lost > 0, "{text}");
    // exactly the recipients the sink refused with 550 (Postroad does not retry 5xx)
    assert_eq!(
        r["sink_rejections_by_code"]["550"].as_u64(),
        Some(lost),
        "{text}"
    );
    assert_eq!(r["delivered"].as_u64(), Some(200 - lost), "{text}");
    assert_eq!(r["duplicates"], 0, "{text}");
    assert_eq!(r["postroad"]["spool_fsync"], false);
    assert!(text.contains(&format!("{lost} lost")), "{text}");
}

/// The same end-to-end accounting with the load on Postroad's HTTP API: each form,
/// single requests over h2c and batches over HTTP/1.1, with an API key the run creates.
#[test]
fn e2e_over_the_http_api_loses_and_duplicates_nothing() {
    for extra in [
        &["--form", "template", "--http2"][..],
        &["--form", "explicit", "--batch", "7"],
        &["--form", "raw", "--batch", "3", "--recipients", "2"],
    ] {
        let mut args = vec!["--via", "http", "-n", "200", "-c", "4"];
        args.extend_from_slice(extra);
        let (code, r, text) = e2e(&args);
        assert_eq!(code, Some(0), "{extra:?}: {text}");
        let rcpts = if extra.contains(&"--recipients") {
            2
        } else {
            1
        };
        assert_eq!(r["messages_accepted"], 200, "{extra:?}: {text}");
        assert_eq!(r["delivered"], 200 * rcpts, "{extra:?}: {text}");
        assert_eq!(
            (r["lost"].as_u64(), r["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{text}"
        );
        assert!(
            r["load"]["mode"].as_str().unwrap().contains("HTTP"),
            "{text}"
        );
    }
}

/// A domain whose receiver limit rises mid-run: every message still arrives once, and
/// the report follows the domain second by second in two phases, one per limit.
#[test]
fn a_receiver_limit_that_changes_is_followed_in_the_report() {
    let svg = tempfile::tempdir().unwrap();
    let (code, r, text) = e2e(&[
        "--to-domain",
        "limited.test",
        "--rate",
        "60",
        "--duration",
        "12",
        "-c",
        "8",
        "--sink-domain",
        "limited.test:rate=20,burst=5",
        "--sink-change",
        "6:limited.test:rate=40,burst=5",
        "--limits-svg-dir",
        svg.path().to_str().unwrap(),
        "--drain-timeout",
        "120",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        (r["lost"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{text}"
    );
    let limits = r["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 1, "{text}");
    let trace = &limits[0];
    assert_eq!(trace["domain"], "limited.test");
    let phases = trace["phases"].as_array().unwrap();
    let limit_of = |p: &serde_json::Value| p["limit"].as_f64();
    assert_eq!(
        phases.iter().map(limit_of).collect::<Vec<_>>(),
        [Some(20.0), Some(40.0)],
        "{text}"
    );
    assert_eq!(phases[0]["from_secs"], 0);
    assert_eq!(phases[1]["from_secs"], 6, "the change 6 s into the load");
    // Every delivery and every throttle reply of the domain is in some second.
    let seconds = trace["seconds"].as_array().unwrap();
    let sum = |key: &str| {
        seconds
            .iter()
            .map(|s| s[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("delivered"), r["delivered"].as_u64().unwrap(), "{text}");
    assert_eq!(
        sum("throttled"),
        r["sink_rejections_by_code"]["421"].as_u64().unwrap_or(0),
        "{text}"
    );
    assert!(
        text.contains("limits       limited.test 0-6 s, limit 20/s"),
        "{text}"
    );
    let chart = std::fs::read_to_string(svg.path().join("rate-limited.test.svg")).unwrap();
    assert!(chart.starts_with("<svg xmlns"), "{chart}");
    assert!(chart.contains("Rate at limited.test against its limit"));
}
