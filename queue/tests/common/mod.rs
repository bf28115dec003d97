//! What the spool's tests share: envelopes, bodies, a spool in a temporary directory.
#![allow(dead_code)]

use bytes::Bytes;
use postroad_queue::{Envelope, MessageId, Queue, Recipient, Spool, SpoolConfig};
use tempfile::TempDir;

pub fn envelope(rcpts: &[&str]) -> Envelope {
    let mut env = Envelope::new(
        "sender@example.com",
        rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        "192.0.2.7".parse().unwrap(),
    );
    env.helo = "client.example.com".into();
    env
}

pub fn body(n: usize) -> Bytes {
    Bytes::from(format!("Subject: test {n}\r\n\r\nHello {n}.\r\n"))
}

pub fn open(dir: &TempDir) -> Spool {
    Spool::open(SpoolConfig::new(dir.path())).unwrap()
}

pub async fn enqueue_n(spool: &Spool, n: usize) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let env = envelope(&["a@example.net", "b@example.org"]);
        ids.push(env.id);
        spool.enqueue(env, body(i)).await.unwrap();
    }
    ids
}
