//! The suppression list as every process holds it: two processes (two lists over one
//! store, as two nodes over one database) with the machine's Redis see each other's
//! entries at once; without Redis at their next refresh; with Redis gone, their own
//! memory still answers. The event sink lists what the events say, without letting a
//! soft bounce shorten a hard bounce's entry.

use std::sync::Arc;

use postroad_api::{AppStore, RedisLink};
use postroad_queue::{DeliveryEvent, Envelope, EventKind, EventSink, Recipient, Reply, unix_ms};
use postroad_webhooks::suppression::{
    Entry, Reason, SuppressionConfig, SuppressionSink, SuppressionStore, Suppressions,
};

const REDIS: &str = "redis://127.0.0.1:6379";

/// A tenant no other test (or earlier run) uses: Redis is the machine's.
fn tenant(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

fn manual(tenant: &str, address: &str) -> Entry {
    Entry {
        tenant: tenant.into(),
        address: address.into(),
        reason: Reason::Manual,
        source: "test".into(),
        detail: String::new(),
        created_at_ms: now(),
        expires_at_ms: None,
    }
}

fn now() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

async fn two_lists(
    redis: Option<&str>,
) -> (Arc<Suppressions>, Arc<Suppressions>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SuppressionStore> = Arc::new(AppStore::open_in(dir.path()).await.unwrap());
    let link = || redis.map(|url| RedisLink::new(url).unwrap());
    let config = SuppressionConfig::default();
    let a = Suppressions::load(store.clone(), link(), config.clone())
        .await
        .unwrap();
    let b = Suppressions::load(store, link(), config).await.unwrap();
    (a, b, dir)
}

#[tokio::test]
async fn with_redis_an_entry_holds_on_every_node_at_once() {
    let t = tenant("shared");
    let (a, b, _dir) = two_lists(Some(REDIS)).await;
    a.add(vec![manual(&t, "ann@example.com")]).await.unwrap();
    // B has not refreshed: its memory does not know, the shared hash does.
    assert_eq!(b.check_local(Some(&t), "ann@example.com"), None);
    assert_eq!(
        b.check(Some(&t), &["bob@example.com", "ANN@example.com"])
            .await,
        vec![None, Some(Reason::Manual)]
    );
    // Other tenants' lists are their own.
    assert_eq!(
        b.check(Some(&tenant("other")), &["ann@example.com"]).await,
        vec![None]
    );
    assert_eq!(b.check(None, &["ann@example.com"]).await, vec![None]);

    // Taken off on A: gone from the hash and the store; B drops it at its refresh.
    b.refresh().await.unwrap();
    assert_eq!(
        b.check_local(Some(&t), "ann@example.com"),
        Some(Reason::Manual)
    );
    assert!(a.remove(&t, "Ann@Example.com").await.unwrap());
    assert_eq!(a.check(Some(&t), &["ann@example.com"]).await, vec![None]);
    b.refresh().await.unwrap();
    assert_eq!(b.check(Some(&t), &["ann@example.com"]).await, vec![None]);
}

#[tokio::test]
async fn without_redis_nodes_agree_at_their_next_refresh() {
    let t = tenant("local");
    let (a, b, _dir) = two_lists(None).await;
    a.add(vec![manual(&t, "ann@example.com")]).await.unwrap();
    assert_eq!(
        a.check(Some(&t), &["ann@example.com"]).await,
        vec![Some(Reason::Manual)]
    );
    assert_eq!(b.check(Some(&t), &["ann@example.com"]).await, vec![None]);
    assert_eq!(b.refresh().await.unwrap(), 1);
    assert_eq!(
        b.check(Some(&t), &["ann@example.com"]).await,
        vec![Some(Reason::Manual)]
    );

    // An entry that expired no longer holds, in memory or in a fresh load.
    let mut past = manual(&t, "old@example.com");
    past.reason = Reason::SoftBounce;
    past.expires_at_ms = Some(now() - 1);
    a.add(vec![past]).await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!(a.check(Some(&t), &["old@example.com"]).await, vec![None]);
    assert_eq!(b.check(Some(&t), &["old@example.com"]).await, vec![None]);
}

#[tokio::test]
async fn with_redis_unreachable_memory_still_answers() {
    let t = tenant("down");
    // Nothing listens on port 1: every Redis call fails at once.
    let (a, _b, _dir) = two_lists(Some("redis://127.0.0.1:1")).await;
    a.add(vec![manual(&t, "ann@example.com")]).await.unwrap();
    assert_eq!(
        a.check(Some(&t), &["ann@example.com", "bob@example.com"])
            .await,
        vec![Some(Reason::Manual), None]
    );
}

fn event(kind: EventKind, tenant: &str, rcpt: &str, reason: &str) -> DeliveryEvent {
    let mut envelope = Envelope::new(
        "app@src.test",
        vec![Recipient::new(rcpt)],
        std::net::IpAddr::from([127, 0, 0, 1]),
    );
    envelope.meta.tenant = Some(tenant.into());
    DeliveryEvent {
        reason: Some(reason.into()),
        reply: Some(Reply::owned(550, None, "5.1.1 no such user").into()),
        ..DeliveryEvent::new(kind, &envelope, &envelope.recipients[0], now())
    }
}

#[tokio::test]
async fn events_grow_the_list_and_a_soft_bounce_never_shortens_a_hard_one() {
    let t = tenant("events");
    let (a, b, _dir) = two_lists(Some(REDIS)).await;
    let sink = SuppressionSink(a.clone());
    sink.write(&[
        event(EventKind::Bounced, &t, "gone@example.com", "userunknown"),
        event(EventKind::Bounced, &t, "full@example.com", "mailboxfull"),
        event(EventKind::Bounced, &t, "blocked@example.com", "blocked"),
        event(EventKind::Complained, &t, "angry@example.com", "abuse"),
        event(EventKind::Delivered, &t, "fine@example.com", ""),
    ])
    .await
    .unwrap();
    // A later full mailbox for the address that does not exist changes nothing.
    sink.write(&[event(
        EventKind::Bounced,
        &t,
        "gone@example.com",
        "mailboxfull",
    )])
    .await
    .unwrap();
    let addresses = [
        "gone@example.com",
        "full@example.com",
        "blocked@example.com",
        "angry@example.com",
        "fine@example.com",
    ];
    assert_eq!(
        b.check(Some(&t), &addresses).await,
        vec![
            Some(Reason::HardBounce),
            Some(Reason::SoftBounce),
            None,
            Some(Reason::Complaint),
            None
        ]
    );
    let gone = a
        .store()
        .get(&t, "gone@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (gone.reason, gone.expires_at_ms),
        (Reason::HardBounce, None)
    );
    let full = a
        .store()
        .get(&t, "full@example.com")
        .await
        .unwrap()
        .unwrap();
    let day = 86_400_000;
    assert!(
        full.expires_at_ms.unwrap() > now() + day - 60_000,
        "{full:?}"
    );
}
