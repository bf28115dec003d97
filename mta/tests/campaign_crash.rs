//! Never queue a campaign's recipient twice, never skip one: SIGKILL the server at
//! random moments while it expands a 30,000-recipient campaign, restart it, and find
//! every recipient exactly once in the spool when the campaign says it is sent. (The
//! relay is off, so what the spool holds is exactly what the expansion queued.)

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Server;
use common::campaigns;
use common::http::api_key;
use postroad_queue::Queue;
use serde_json::json;

const RECIPIENTS: usize = 30_000;
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_expansion_queues_every_recipient_exactly_once() {
    let mut server = Server::start("");
    let key = api_key(&server, &["create", "--name", "marketing"]);
    let key = key.trim();
    let template = json!({"subject": "News for {{ first }}", "text": "Hi {{ first }}.",
        "from": "News <news@src.test>"});
    campaigns::put_template(server.http, key, "news", &template);

    let mut body = format!("{}\n", json!({"name": "Crash", "emailType": "news"}));
    for i in 0..RECIPIENTS {
        body.push_str(&format!(
            "{{\"address\":\"r{i}@d{}.test\",\"data\":{{\"first\":\"R{i}\"}}}}\n",
            i % 7
        ));
    }
    let path = server.data_dir().join("recipients.ndjson");
    std::fs::write(&path, body).unwrap();
    let file = format!("@{}", path.display());
    let created = campaigns::create_inline(server.http, key, &file);
    let id = created["id"].as_str().unwrap().to_string();

    let started = Instant::now();
    let mut kills = 0;
    for _ in 0..KILLS {
        // Killed while it expands: after some of it is queued, before all of it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let c = loop {
            let c = campaigns::campaign(server.http, key, &id);
            let expanded = c["expansion"]["expanded"].as_u64().unwrap();
            if c["state"] == "sent" || (c["state"] == "sending" && expanded > 0) {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "the expansion never started: {c}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if c["state"] == "sent" {
            break;
        }
        std::thread::sleep(common::kill_moment(0, 400));
        server.kill();
        kills += 1;
        server.restart();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let c = campaigns::campaign(server.http, key, &id);
        if c["state"] == "sent" {
            break c;
        }
        assert!(Instant::now() < deadline, "not sent: {c}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    assert_eq!(
        done["expansion"]["queued"],
        json!(RECIPIENTS),
        "{done}\n{}",
        server.log()
    );
    server.stop();

    let spool = server.open_spool();
    let mut queued: HashMap<String, usize> = HashMap::new();
    for envelope in spool.list(RECIPIENTS * 2).await.unwrap() {
        assert_eq!(envelope.meta.campaign.as_deref(), Some(id.as_str()));
        for r in envelope.recipients {
            *queued.entry(r.address).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = queued.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "queued more than once: {twice:?}");
    assert_eq!(
        queued.len(),
        RECIPIENTS,
        "recipients missing from the spool"
    );
    // How often a kill fell between a batch's queue write and its record in the store
    // (the queue's checkpoint was then ahead, and the expansion resumed after it).
    let ahead = server
        .log()
        .matches("resuming after the queue's checkpoint")
        .count();
    println!(
        "{RECIPIENTS} recipients queued once each over {kills} SIGKILLs in {took:.1?} \
         ({ahead} resumed after the queue's checkpoint)"
    );
}
