//! A message whose enqueue returned `Ok` survives the process being killed (`SIGKILL`).
//!
//! The test re-runs this test binary as a child that enqueues from many tasks and prints
//! the id of every acknowledged message; the parent kills it mid-stream, reopens the
//! spool and checks that every printed id is there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use postroad_queue::{Envelope, MessageId, Queue, Recipient, Spool, SpoolConfig};

const CHILD_ENV: &str = "POSTROAD_SPOOL_CRASH_CHILD_DIR";

/// The child: does nothing unless started by `acknowledged_messages_survive_sigkill`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spool = Spool::open(SpoolConfig::new(dir)).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let spool = spool.clone();
        tasks.spawn(async move {
            for i in 0.. {
                let env = Envelope::new(
                    "s@example.com",
                    vec![Recipient::new("r@example.net")],
                    "192.0.2.1".parse().unwrap(),
                );
                let id = env.id;
                let body = Bytes::from(format!("task {t} message {i}\r\n").repeat(100));
                spool.enqueue(env, body).await.unwrap();
                // One write per line, so lines never interleave.
                println!("ACK {id}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 500 {
        let line = lines
            .next()
            .expect("child stopped before acknowledging 500 messages")
            .unwrap();
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse::<MessageId>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no final flush
    child.wait().unwrap();
    // Whatever the child acknowledged after we stopped reading is in the pipe; read it.
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        }
    }

    let spool = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let report = spool.recover().await.unwrap();
    assert!(report.queued >= acked.len() as u64);
    for id in &acked {
        let (env, body) = spool
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged message {id} was lost"));
        assert_eq!(env.id, *id);
        assert!(!body.is_empty());
    }
    eprintln!(
        "{} acknowledged before SIGKILL, {} in the spool after it",
        acked.len(),
        report.queued
    );
}
