//! Throughput of `analyse` over every message of the public bounce corpus.
//!
//! `cargo bench -p postroad-benches --bench bounce_classify`; the corpus is read from `POSTROAD_BOUNCE_CORPUS`
//! (default `../../shared/bounce-corpus` relative to the benches crate).

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("POSTROAD_BOUNCE_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bounce-corpus"),
    }
}

fn collect(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "eml")
            && let Ok(raw) = std::fs::read(&p)
        {
            out.push(raw);
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = corpus_dir();
    let mut messages = Vec::new();
    collect(&dir, &mut messages);
    assert!(
        !messages.is_empty(),
        "no .eml files under {}; set POSTROAD_BOUNCE_CORPUS",
        dir.display()
    );
    let bytes: usize = messages.iter().map(Vec::len).sum();

    // A plain measurement first, so the number is printed even with criterion quiet.
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        for m in &messages {
            black_box(postroad_bounce::analyse(black_box(m)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (messages.len() * rounds) as f64;
    println!(
        "analyse: {} messages ({} KiB) x {rounds}: {:.0} messages/s, {:.1} MiB/s, {:.1} us/message",
        messages.len(),
        bytes / 1024,
        n / secs,
        (bytes * rounds) as f64 / secs / (1024.0 * 1024.0),
        secs * 1e6 / n
    );

    // Synchronous replies, as the relay labels each deferral and bounce.
    let replies = [
        (
            Some(550),
            Some("5.1.1"),
            "<bob@example.net>: Recipient address rejected: User unknown",
        ),
        (Some(452), Some("4.2.2"), "Mailbox full"),
        (
            Some(421),
            Some("4.7.0"),
            "Try again later, closing connection. (rate limited)",
        ),
        (
            Some(554),
            Some("5.7.1"),
            "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        ),
        (
            None,
            Some("4.4.3"),
            "MX lookup for example.net failed: DNS error: timed out",
        ),
    ];
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for (code, enhanced, text) in &replies {
            black_box(postroad_bounce::classify_reply(
                *code,
                *enhanced,
                black_box(text),
            ));
        }
    }
    let n = (rounds * replies.len()) as f64;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "classify_reply: {:.0} replies/s, {:.2} us/reply",
        n / secs,
        secs * 1e6 / n
    );

    let mut group = c.benchmark_group("bounce");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("analyse_corpus", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(postroad_bounce::analyse(black_box(m)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
