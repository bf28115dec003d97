//! Durable enqueue into the embedded spool: 4 KiB messages, fsync on (the production
//! setting), from one enqueuer and from 64 concurrent ones (group commit).
//!
//! `cargo bench -p postroad-benches --bench spool_enqueue`
//!
//! The spool lives in a temporary directory (`TMPDIR`): the numbers are those of the
//! disk under it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postroad_queue::{Envelope, Queue, Recipient, Spool, SpoolConfig};

const BODY_SIZE: usize = 4096;
const CONCURRENCY: u64 = 64;

fn envelope() -> Envelope {
    let mut env = Envelope::new(
        "newsletter@example.com",
        vec![Recipient::new("someone@example.net")],
        "192.0.2.10".parse().unwrap(),
    );
    env.helo = "app1.example.com".into();
    env.size = BODY_SIZE as u64;
    env
}

fn body() -> Bytes {
    let mut body =
        b"From: newsletter@example.com\r\nTo: someone@example.net\r\nSubject: bench\r\n\r\n"
            .to_vec();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while body.len() < BODY_SIZE {
        body.extend_from_slice(line);
    }
    body.truncate(BODY_SIZE);
    Bytes::from(body)
}

fn spool_enqueue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let body = body();

    let mut group = c.benchmark_group("spool_enqueue_4k_fsync");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    spool.enqueue(envelope(), body.clone()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    // One iteration = one enqueue by each of 64 enqueuers, which run flat out.
    group.throughput(Throughput::Elements(CONCURRENCY));
    group.bench_function("concurrent_64", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..CONCURRENCY {
                    let (spool, body) = (spool.clone(), body.clone());
                    tasks.spawn(async move {
                        for _ in 0..iters {
                            spool.enqueue(envelope(), body.clone()).await.unwrap();
                        }
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    done.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    let m = spool.metrics();
    eprintln!(
        "spool: {} enqueues in {} commits ({:.1} per commit)",
        m.ops,
        m.commits,
        m.ops as f64 / m.commits.max(1) as f64
    );
}

criterion_group!(benches, spool_enqueue);
criterion_main!(benches);
