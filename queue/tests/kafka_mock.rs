//! The Kafka backend against librdkafka's in-process mock cluster: offsets, retry
//! tiers, the DLQ, broker outages, rebalances. (The end-to-end tests against a real
//! broker process are in `mta/tests/kafka_e2e.rs`.)

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use postroad_queue::kafka::{KafkaConfig, KafkaQueue, RetryTier, TopicConfig};
use postroad_queue::{Claimed, Envelope, MessageId, Queue, QueueError, Recipient, Resolution};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

type Mock = MockCluster<'static, DefaultProducerContext>;

const WAIT: Duration = Duration::from_secs(30);

fn mock(config: &KafkaConfig) -> Mock {
    let mock = MockCluster::new(1).unwrap();
    for (topic, partitions) in config.all_topics() {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    mock
}

/// Small topics, a 1 s and a 60 s retry tier, quick commits and statistics.
fn config(group: &str) -> KafkaConfig {
    let topic = |name: &str, partitions| TopicConfig {
        name: name.into(),
        partitions,
    };
    let mut c = KafkaConfig {
        group_id: group.into(),
        commit_interval_ms: 50,
        lag_interval_ms: 200,
        session_timeout: Duration::from_millis(6000),
        // Generous: tests run side by side on a busy machine; the outage test sets its own.
        produce_timeout: Duration::from_millis(10_000),
        retry_tiers: vec![
            RetryTier {
                topic: "retry-1s".into(),
                delay_secs: 1,
                partitions: 2,
            },
            RetryTier {
                topic: "retry-60s".into(),
                delay_secs: 60,
                partitions: 2,
            },
        ],
        ..KafkaConfig::default()
    };
    c.topics.send = topic("send", 4);
    c.topics.dlq = topic("dlq", 1);
    c.topics.events = topic("events", 1);
    c.topics.webhooks = topic("webhooks", 1);
    c
}

async fn connect(mock: &Mock, mut config: KafkaConfig, worker: Option<&str>) -> Arc<KafkaQueue> {
    config.brokers = mock.bootstrap_servers();
    KafkaQueue::connect(config, worker.map(String::from))
        .await
        .unwrap()
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope::new(
        "sender@app.test",
        recipients.iter().map(|r| Recipient::new(*r)).collect(),
        "127.0.0.1".parse().unwrap(),
    )
}

/// Claims until `n` messages came, or fails after [`WAIT`].
async fn claim_n(queue: &KafkaQueue, n: usize) -> Vec<Claimed> {
    let ready = queue.ready_signal().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(queue.claim(n - got.len()).await.unwrap());
        if got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "claimed {} of {n} within {WAIT:?}",
                got.len()
            );
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(100)), ready.notified()).await;
        }
    }
    got
}

/// The group's committed offsets for `topic`, summed over its partitions.
fn committed_total(mock: &Mock, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every record of a topic (from the start) until `n` came.
fn read_topic(mock: &Mock, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", format!("reader-{}", MessageId::new()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records from {topic}",
            records.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            records.push(m.detach());
        }
    }
    records
}

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    m.headers()?.iter().find(|h| h.key == name)?.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_split_by_domain_claimed_and_committed_once_resolved() {
    let cfg = config("g-basic");
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let e = envelope(&[&format!("a{i}@one.test"), &format!("b{i}@two.test")]);
        sent.push(e.id);
        queue
            .enqueue(e, Bytes::from(format!("body {i}")))
            .await
            .unwrap();
    }
    // A message id is never claimed twice at once: its second record comes once the
    // first is resolved, so resolve each record as it is claimed.
    let mut per_id: HashMap<MessageId, BTreeSet<String>> = HashMap::new();
    for _ in 0..20 {
        let c = claim_n(&queue, 1).await.remove(0);
        assert_eq!(c.envelope.recipients.len(), 1, "one record per domain");
        per_id
            .entry(c.envelope.id)
            .or_default()
            .insert(c.envelope.recipients[0].domain());
        queue.ack(c.envelope.id).await.unwrap();
    }
    assert_eq!(per_id.len(), 10);
    assert!(per_id.values().all(|d| d.len() == 2));
    wait_for("offsets of all 20 records committed", || {
        committed_total(&mock, "g-basic", "send", 4) == 20
    })
    .await;
    let lag = "postroad_kafka_consumer_lag";
    wait_for("consumer lag gauges", || {
        queue.gauges().iter().any(|g| g.name == lag)
    })
    .await;
    let gauges = queue.gauges();
    let dropped = "postroad_kafka_local_events_dropped";
    assert!(gauges.iter().all(|g| g.name == lag || g.name == dropped));
    // Nothing consumes this queue's events in the test; none were held long enough to
    // be dropped.
    let held = gauges.iter().find(|g| g.name == dropped).unwrap();
    assert_eq!(held.value, 0.0);
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_record_is_delivered_again_after_a_restart() {
    let mut cfg = config("g-restart");
    cfg.topics.send.partitions = 1;
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let ids: Vec<MessageId> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = envelope(&[&format!("r{i}@one.test")]);
            ids.push(e.id);
            queue.enqueue(e, Bytes::from_static(b"x")).await.unwrap();
        }
        ids
    };
    let claimed = claim_n(&queue, 3).await;
    // Resolve the 2nd and 3rd records only: the first holds the partition's offset.
    for c in &claimed {
        if c.envelope.id != ids[0] {
            queue.ack(c.envelope.id).await.unwrap();
        }
    }
    queue.shutdown().await;
    drop(queue);
    assert_eq!(committed_total(&mock, "g-restart", "send", 1), 0);

    let queue = connect(&mock, cfg, Some("w1")).await;
    let again = claim_n(&queue, 3).await;
    let again: Vec<MessageId> = again.iter().map(|c| c.envelope.id).collect();
    assert_eq!(
        again, ids,
        "everything from the unresolved record on comes again"
    );
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_message_waits_in_its_retry_tier_until_due() {
    let cfg = config("g-retry");
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let e = envelope(&["late@slow.test"]);
    queue
        .enqueue(e.clone(), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let first = claim_n(&queue, 1).await.remove(0);
    let mut again = first.envelope.clone();
    again.recipients[0].attempts = 1;
    let due = SystemTime::now() + Duration::from_millis(1500);
    queue
        .resolve(
            e.id,
            Resolution {
                retry: Some((again, due)),
                dead: None,
                events: Vec::new(),
            },
        )
        .await
        .unwrap();
    let record = read_topic(&mock, "retry-1s", 1).remove(0);
    assert_eq!(record.key(), Some(&b"slow.test"[..]));
    let retried = claim_n(&queue, 1).await.remove(0);
    assert!(SystemTime::now() >= due, "held until its due time");
    assert_eq!(retried.envelope.id, e.id);
    assert_eq!(retried.envelope.recipients[0].attempts, 1);
    assert_eq!(retried.body, Bytes::from_static(b"hello"));
    queue.ack(e.id).await.unwrap();
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_retries_do_not_block_due_messages_of_the_same_partition() {
    let mut cfg = config("g-hold");
    cfg.topics.send.partitions = 1;
    cfg.retry_tiers.truncate(1);
    cfg.retry_tiers[0].partitions = 1;
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let late = envelope(&["a@x.test"]);
    queue
        .enqueue(late.clone(), Bytes::from_static(b"1"))
        .await
        .unwrap();
    claim_n(&queue, 1).await;
    let due = SystemTime::now() + Duration::from_secs(3600);
    queue
        .resolve(
            late.id,
            Resolution {
                retry: Some((late.clone(), due)),
                dead: None,
                events: Vec::new(),
            },
        )
        .await
        .unwrap();
    // A second message deferred by 2 s lands in the same retry topic (one partition),
    // behind the 1 h one, and must not wait for it.
    let soon = envelope(&["b@x.test"]);
    queue
        .enqueue(soon.clone(), Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(claim_n(&queue, 1).await[0].envelope.id, soon.id);
    let soon_due = SystemTime::now() + Duration::from_secs(2);
    queue
        .resolve(
            soon.id,
            Resolution {
                retry: Some((soon.clone(), soon_due)),
                dead: None,
                events: Vec::new(),
            },
        )
        .await
        .unwrap();
    let got = claim_n(&queue, 1).await;
    assert_eq!(got[0].envelope.id, soon.id);
    assert!(SystemTime::now() >= soon_due);
    let retried = read_topic(&mock, "retry-1s", 2);
    assert!(
        retried.iter().all(|r| r.partition() == 0),
        "both retries in the one partition"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.deferred, stats.claimed), (1, 1));
    assert_eq!(
        queue.flush().await.unwrap(),
        1,
        "flush makes the held one due"
    );
    assert_eq!(claim_n(&queue, 1).await[0].envelope.id, late.id);
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounced_recipients_go_to_the_dlq_with_the_reason_and_the_body() {
    let cfg = config("g-dlq");
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let e = envelope(&["gone@dead.test", "also@dead.test"]);
    queue
        .enqueue(e.clone(), Bytes::from_static(b"the body"))
        .await
        .unwrap();
    let claimed = claim_n(&queue, 1).await.remove(0);
    queue
        .dead_letter(
            &claimed.envelope,
            "<gone@dead.test>: 550 5.1.1 no such user".into(),
        )
        .await
        .unwrap();
    let record = read_topic(&mock, "dlq", 1).remove(0);
    assert_eq!(record.payload(), Some(&b"the body"[..]));
    assert_eq!(
        header(&record, "postroad-reason"),
        Some(&b"<gone@dead.test>: 550 5.1.1 no such user"[..])
    );
    // `postroad dlq list|inspect` read the topic back.
    let listed = queue.dead_letters(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].envelope.id, e.id);
    assert_eq!(listed[0].reason, "<gone@dead.test>: 550 5.1.1 no such user");
    let (dead, body) = queue.get_dead_letter(e.id).await.unwrap().unwrap();
    assert_eq!(dead.envelope.recipients.len(), 2);
    assert_eq!(body, Bytes::from_static(b"the body"));
    assert!(
        queue
            .get_dead_letter(MessageId::new())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        queue.requeue_dead_letter(e.id).await,
        Err(QueueError::Unsupported(_))
    ));
    wait_for("the bounced record's offset committed", || {
        committed_total(&mock, "g-dlq", "send", 4) == 1
    })
    .await;
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_decoded_is_moved_to_the_dlq_not_retried_forever() {
    let cfg = config("g-junk");
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to("send")
                .key("junk.test")
                .payload("no envelope header"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(5)).unwrap();
    let good = envelope(&["ok@junk.test"]);
    queue
        .enqueue(good.clone(), Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(claim_n(&queue, 1).await[0].envelope.id, good.id);
    queue.ack(good.id).await.unwrap();
    let record = read_topic(&mock, "dlq", 1).remove(0);
    assert_eq!(record.payload(), Some(&b"no envelope header"[..]));
    assert!(header(&record, "postroad-reason").is_some());
    wait_for("both offsets committed", || {
        committed_total(&mock, "g-junk", "send", 4) == 2
    })
    .await;
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_record_is_refused_before_anything_is_written() {
    let mut cfg = config("g-big");
    cfg.max_record_bytes = 8192;
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), None).await;
    let err = queue
        .enqueue(
            envelope(&["a@x.test", "b@y.test"]),
            Bytes::from(vec![b'x'; 10_000]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::TooLarge { max: 8192, .. }),
        "{err}"
    );
    assert!(queue.max_message_size() < 8192);
    queue
        .enqueue(envelope(&["a@x.test"]), Bytes::from(vec![b'x'; 4000]))
        .await
        .unwrap();
    // Only the small one was written.
    let records = read_topic(&mock, "send", 1);
    assert_eq!(records[0].payload().map(<[u8]>::len), Some(4000));
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_fails_while_the_broker_is_down_and_works_when_it_is_back() {
    let mut cfg = config("g-down");
    cfg.produce_timeout = Duration::from_millis(1000);
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), None).await;
    // The first produce also sets the idempotent producer up; on a busy machine that
    // can take longer than the 1 s timeout, so it may be tried again.
    enqueue_within(&queue, "a@x.test", WAIT).await;
    mock.broker_down(1).unwrap();
    let started = Instant::now();
    let err = queue
        .enqueue(envelope(&["b@x.test"]), Bytes::from_static(b"2"))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    mock.broker_up(1).unwrap();
    enqueue_within(&queue, "c@x.test", WAIT).await;
    queue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_a_worker_that_leaves_move_to_the_one_that_stays() {
    let cfg = config("g-rebalance");
    let mock = mock(&cfg);
    let a = connect(&mock, cfg.clone(), Some("")).await;
    let b = connect(&mock, cfg.clone(), Some("")).await;
    let mut sent = BTreeSet::new();
    for i in 0..40 {
        let e = envelope(&[&format!("u@d{i}.test")]);
        sent.insert(e.id);
        a.enqueue(e, Bytes::from_static(b"x")).await.unwrap();
    }
    // Worker b takes part, then leaves without resolving anything it holds.
    wait_for("worker b to hold records", || {
        let b = b.clone();
        futures_now(async move { b.stats().await.unwrap().queued > 0 })
    })
    .await;
    b.shutdown().await;
    drop(b);
    let mut got = BTreeSet::new();
    let ready = a.ready_signal().unwrap();
    let deadline = Instant::now() + WAIT;
    while got.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "worker a got {} of 40",
            got.len()
        );
        for c in a.claim(100).await.unwrap() {
            a.ack(c.envelope.id).await.unwrap();
            got.insert(c.envelope.id);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), ready.notified()).await;
    }
    assert_eq!(got, sent);
    a.shutdown().await;
}

/// Enqueues a message to `rcpt`, trying again until it works or `wait` has passed.
async fn enqueue_within(queue: &KafkaQueue, rcpt: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        match queue
            .enqueue(envelope(&[rcpt]), Bytes::from_static(b"x"))
            .await
        {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "enqueue still failing after {wait:?}: {e}"
            ),
        }
    }
}

/// Runs a future that is ready at once (the backend's stats never wait).
fn futures_now<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_util::FutureExt::now_or_never(f).expect("stats answer without waiting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_deferred_mail_does_not_stop_new_mail() {
    let mut cfg = config("g-backlog");
    cfg.max_held = 3;
    let mock = mock(&cfg);
    let queue = connect(&mock, cfg.clone(), Some("w1")).await;
    // Four messages deferred by an hour: once the worker holds three records in all
    // (deferred ones and the one being delivered) it pauses the retry tiers, so the
    // later retries wait in Kafka.
    for i in 0..4 {
        let e = envelope(&[&format!("later{i}@down.test")]);
        queue
            .enqueue(e.clone(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        claim_n(&queue, 1).await;
        let due = SystemTime::now() + Duration::from_secs(3600);
        queue
            .resolve(
                e.id,
                Resolution {
                    retry: Some((e.clone(), due)),
                    dead: None,
                    events: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
    wait_for("deferred messages held", || {
        let queue = queue.clone();
        futures_now(async move { queue.stats().await.unwrap().deferred >= 2 })
    })
    .await;
    // The retry tiers are paused now; new mail still flows.
    let fresh = envelope(&["now@up.test"]);
    queue
        .enqueue(fresh.clone(), Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(claim_n(&queue, 1).await[0].envelope.id, fresh.id);
    queue.shutdown().await;
}
