//! `postroad bounce classify` on the public bounce corpus (`../shared/bounce-corpus`, or
//! `POSTROAD_BOUNCE_CORPUS`): one JSON line per file and recipient with the fields the
//! corpus labels, agreeing with them for a bounce, a complaint and a non-bounce; the
//! same files in CRLF and CR form give the same answers; an unreadable file is named
//! and the others still classified. (The classifier's accuracy over the whole corpus
//! is scored in `bounce/tests/corpus.rs`.)

mod common;

use std::path::PathBuf;

use common::{binary, run};
use serde_json::Value;

fn corpus() -> PathBuf {
    match std::env::var_os("POSTROAD_BOUNCE_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bounce-corpus"),
    }
}

/// The corpus's expected.jsonl line for `file`.
fn expected(file: &str) -> Value {
    let path = corpus().join("expected.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} ({e}); set POSTROAD_BOUNCE_CORPUS", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in expected.jsonl"))
}

fn classify(files: &[String]) -> (bool, Vec<Value>, String) {
    let mut args = vec!["bounce", "classify", "--jsonl"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run(binary(), &args, None);
    let lines = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (ok, lines, out)
}

#[test]
fn classify_prints_a_json_line_per_file_and_recipient() {
    let dir = corpus();
    // The corpus's first bounce with two or more recipients, a complaint and a
    // message that is no bounce.
    let text = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    let multi = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| {
            v["file"]
                .as_str()
                .unwrap()
                .starts_with("maildir/bsd/lhost-")
                && v["expected"].as_array().is_some_and(|e| e.len() >= 2)
        })
        .unwrap();
    let multi = multi["file"].as_str().unwrap().to_string();
    let files = [
        multi.clone(),
        "maildir/bsd/arf-01.eml".into(),
        "maildir/not/is-not-bounce-02.eml".into(),
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let (ok, lines, out) = classify(&paths);
    assert!(ok, "{out}");
    for (file, path) in files.iter().zip(&paths) {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["file"] == path.as_str())
            .collect();
        let want = expected(file);
        if want["is_bounce"] == false {
            assert_eq!(mine.len(), 1, "{out}");
            assert_eq!(mine[0]["recipient"], Value::Null, "{out}");
            continue;
        }
        let want = want["expected"].as_array().unwrap();
        assert_eq!(mine.len(), want.len(), "{file}: {out}");
        for (got, want) in mine.iter().zip(want) {
            for key in ["reason", "hardbounce", "replycode", "feedbacktype"] {
                let w = match (&want[key], key) {
                    (Value::String(s), "feedbacktype") if s.is_empty() => &Value::Null,
                    (w, _) => w,
                };
                assert_eq!(&got[key], w, "{file} {key}: {got}");
            }
            assert!(got["recipient"].as_str().unwrap().contains('@'), "{got}");
            assert!(got["deliverystatus"].is_string(), "{got}");
        }
    }

    // The same bounce with CRLF and with CR line endings.
    let forms: Vec<String> = ["bsd", "dos", "mac"]
        .iter()
        .map(|d| dir.join(multi.replacen("/bsd/", &format!("/{d}/"), 1)))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    let (ok, lines, out) = classify(&forms);
    assert!(ok, "{out}");
    let answers = |path: &String| {
        lines
            .iter()
            .filter(|l| l["file"] == path.as_str())
            .map(|l| {
                (
                    l["recipient"].clone(),
                    l["reason"].clone(),
                    l["hardbounce"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    for form in &forms[1..] {
        assert_eq!(answers(form), answers(&forms[0]), "{form}: {out}");
    }

    // A missing file is named; the others are still classified.
    let missing = dir.join("maildir/nowhere.eml").display().to_string();
    let (ok, lines, out) = classify(&[missing.clone(), paths[1].clone()]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("cannot read {missing}")), "{out}");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["reason"], "feedback");
}
