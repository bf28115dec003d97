//! Scores the classifier on the public bounce corpus (`expected.jsonl`).
//!
//! The corpus is read from `POSTROAD_BOUNCE_CORPUS`, by default
//! `../../shared/bounce-corpus` relative to this crate. A missing corpus fails the test.
//! Set `POSTROAD_BOUNCE_VERBOSE=1` to print every disagreement.

use std::collections::BTreeMap;
use std::path::PathBuf;

use postroad_bounce::analyse;

/// Floors: what the classifier reaches today, rounded down. Raise them as it improves.
const MIN_REASON: f64 = 0.96;
const MIN_HARD: f64 = 0.97;
const MIN_DETECTED: f64 = 0.99;

fn corpus_dir() -> PathBuf {
    match std::env::var_os("POSTROAD_BOUNCE_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bounce-corpus"),
    }
}

/// Old reason names count as their current ones.
fn canonical(reason: &str) -> &str {
    match reason {
        "speeding" | "toomanyconn" => "ratelimited",
        "mesgtoobig" | "exceedlimit" => "emailtoolarge",
        r => r,
    }
}

fn family(file: &str) -> String {
    let stem = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".eml");
    match stem.rsplit_once('-') {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => head.to_owned(),
        _ => stem.to_owned(),
    }
}

#[derive(Default)]
struct Tally {
    files: usize,
    detected: usize,
    rcpts: usize,
    reason_ok: usize,
    hard_ok: usize,
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

#[test]
fn public_corpus_scores() {
    let dir = corpus_dir();
    let expected_path = dir.join("expected.jsonl");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "bounce corpus not found at {} ({e}); set POSTROAD_BOUNCE_CORPUS to the corpus directory",
            expected_path.display()
        )
    });
    let verbose = std::env::var_os("POSTROAD_BOUNCE_VERBOSE").is_some();
    let mut families: BTreeMap<String, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    let (mut non_bounces, mut non_bounces_ok) = (0, 0);

    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("expected.jsonl line");
        let file = v["file"].as_str().expect("file");
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = analyse(&raw);
        match v["is_bounce"].as_bool() {
            None => continue,
            Some(false) => {
                non_bounces += 1;
                if got.recipients.is_empty() {
                    non_bounces_ok += 1;
                } else if verbose {
                    println!("NOT-A-BOUNCE {file}: got {:?}", got.recipients);
                }
                continue;
            }
            Some(true) => {}
        }
        let fam = families.entry(family(file)).or_default();
        fam.files += 1;
        total.files += 1;
        if got.is_bounce() {
            fam.detected += 1;
            total.detected += 1;
        } else if verbose {
            println!("MISSED {file}");
        }
        let want = v["expected"].as_array().cloned().unwrap_or_default();
        for (i, w) in want.iter().enumerate() {
            let want_reason = canonical(w["reason"].as_str().unwrap_or(""));
            let want_hard = w["hardbounce"].as_bool().unwrap_or(false);
            let g = got.recipients.get(i);
            let reason_ok = g.is_some_and(|g| canonical(g.reason.as_str()) == want_reason);
            let hard_ok = g.is_some_and(|g| g.hardbounce == want_hard);
            fam.rcpts += 1;
            total.rcpts += 1;
            fam.reason_ok += usize::from(reason_ok);
            total.reason_ok += usize::from(reason_ok);
            fam.hard_ok += usize::from(hard_ok);
            total.hard_ok += usize::from(hard_ok);
            if verbose && !reason_ok {
                match g {
                    Some(g) => println!(
                        "WRONG {file} #{i}: want {want_reason} ({}) got {} status={} reply={} cmd={:?} rcpt={} diag={:?}",
                        w["deliverystatus"].as_str().unwrap_or(""),
                        g.reason,
                        g.deliverystatus,
                        g.replycode,
                        g.command,
                        g.recipient,
                        g.diagnostic.chars().take(300).collect::<String>()
                    ),
                    None => println!(
                        "ABSENT {file} #{i}: want {want_reason}, got {} recipients",
                        got.recipients.len()
                    ),
                }
            }
        }
    }

    println!(
        "{:<28} {:>5} {:>5} {:>6} {:>7} {:>7}",
        "family", "files", "found", "rcpts", "reason", "hard"
    );
    for (name, t) in &families {
        println!(
            "{:<28} {:>5} {:>5} {:>6} {:>6.1}% {:>6.1}%",
            name,
            t.files,
            t.detected,
            t.rcpts,
            100.0 * pct(t.reason_ok, t.rcpts),
            100.0 * pct(t.hard_ok, t.rcpts)
        );
    }
    let reason = pct(total.reason_ok, total.rcpts);
    let hard = pct(total.hard_ok, total.rcpts);
    let detected = pct(total.detected, total.files);
    println!(
        "OVERALL files={} rcpts={} reason={:.2}% hard={:.2}% detected={:.2}% non-bounces-left-alone={}/{}",
        total.files,
        total.rcpts,
        100.0 * reason,
        100.0 * hard,
        100.0 * detected,
        non_bounces_ok,
        non_bounces
    );
    assert!(
        total.files > 0,
        "no scored files in {}",
        expected_path.display()
    );
    assert_eq!(
        non_bounces_ok, non_bounces,
        "a non-bounce was reported as a bounce"
    );
    assert!(
        reason >= MIN_REASON,
        "reason accuracy {reason:.4} fell below {MIN_REASON}"
    );
    assert!(
        hard >= MIN_HARD,
        "hard/soft accuracy {hard:.4} fell below {MIN_HARD}"
    );
    assert!(
        detected >= MIN_DETECTED,
        "bounce detection {detected:.4} fell below {MIN_DETECTED}"
    );
}

/// Every corpus message, cut short at several places and with bytes damaged, must be
/// analysed without a panic.
#[test]
fn damaged_corpus_messages_never_panic() {
    let dir = corpus_dir();
    let expected = std::fs::read_to_string(dir.join("expected.jsonl"))
        .unwrap_or_else(|e| panic!("bounce corpus not found at {} ({e})", dir.display()));
    let mut seen = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("expected.jsonl line");
        let Some(file) = v["file"].as_str() else {
            continue;
        };
        let Ok(raw) = std::fs::read(dir.join(file)) else {
            continue;
        };
        seen += 1;
        for k in 1..8 {
            let cut = raw.len() * k / 8;
            let _ = analyse(&raw[..cut]);
            let mut damaged = raw.clone();
            for i in (k..damaged.len()).step_by(97 + k) {
                damaged[i] = damaged[i].wrapping_add(0x80);
            }
            let _ = analyse(&damaged);
        }
    }
    assert!(seen > 0, "no corpus files read from {}", dir.display());
}

/// Every reason the corpus's taxonomy names (old names aside) is one the classifier
/// can give, under the same name.
#[test]
fn the_taxonomy_is_the_corpus_one() {
    let path = corpus_dir().join("reasons.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} ({e}); set POSTROAD_BOUNCE_CORPUS", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .filter(|n| canonical(n) == *n)
        .collect();
    assert!(names.len() > 25, "{names:?}");
    for name in names {
        let reason: postroad_bounce::Reason = serde_json::from_value(serde_json::json!(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reason.as_str(), name);
    }
}
