//! The application store's lists behave the same on both backends (SQLite and the
//! machine's MariaDB): the suppression list (per tenant, paged, replaced, removed, fed
//! as changes, purged) and the customer webhooks' outboxes (in order, deduplicated,
//! given up on, redriven, leased to one owner at a time, deleted with their endpoint).

mod common;

use common::app_stores::stores;
use postroad_queue::EventKind;
use postroad_webhooks::customer::{Endpoint, Pending};
use postroad_webhooks::suppression::{Change, Entry, Reason};

fn listed(tenant: &str, address: &str, reason: Reason, expires: Option<u64>) -> Entry {
    Entry {
        tenant: tenant.into(),
        address: address.into(),
        reason,
        source: "test".into(),
        detail: "550 5.1.1 no such user".into(),
        created_at_ms: 1_000,
        expires_at_ms: expires,
    }
}

#[tokio::test]
async fn suppressions_are_listed_per_tenant_replaced_removed_and_fed_as_changes() {
    for (store, _guard) in stores("suppressions").await {
        let at = store.location().to_string();
        let (everything, mark) = store.suppression_changes(0).await.unwrap();
        assert!(everything.is_empty(), "{at}: {everything:?}");
        // 450 entries: more than one multi-row insert.
        let many: Vec<Entry> = (0..450)
            .map(|i| {
                listed(
                    "",
                    &format!("u{i:03}@example.com"),
                    Reason::HardBounce,
                    None,
                )
            })
            .collect();
        store.upsert_suppressions(&many).await.unwrap();
        store
            .upsert_suppressions(&[
                listed("acme", "u000@example.com", Reason::Complaint, None),
                listed("", "u001@example.com", Reason::SoftBounce, Some(5_000)),
            ])
            .await
            .unwrap();

        let own = store
            .suppression("", "u001@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (own.reason, own.expires_at_ms),
            (Reason::SoftBounce, Some(5_000)),
            "{at}"
        );
        let theirs = store
            .suppression("acme", "u000@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(theirs.reason, Reason::Complaint, "{at}");
        assert_eq!(
            store.suppression("acme", "u001@example.com").await.unwrap(),
            None,
            "{at}"
        );

        // Pages in address order, each after the last of the one before.
        let first = store.suppression_page("", None, 200).await.unwrap();
        let second = store
            .suppression_page("", Some(&first[199].address), 300)
            .await
            .unwrap();
        assert_eq!((first.len(), second.len()), (200, 250), "{at}");
        assert_eq!(first[0].address, "u000@example.com", "{at}");
        assert_eq!(second[0].address, "u200@example.com", "{at}");
        assert_eq!(
            store
                .suppression_page("acme", None, 10)
                .await
                .unwrap()
                .len(),
            1
        );

        assert!(
            store
                .remove_suppression("", "u002@example.com")
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_suppression("", "u002@example.com")
                .await
                .unwrap(),
            "{at}"
        );
        assert_eq!(
            store.suppression("", "u002@example.com").await.unwrap(),
            None,
            "{at}"
        );
        assert_eq!(
            store.suppression_page("", None, 1000).await.unwrap().len(),
            449
        );

        // What changed since the mark: every write above, the removal as a removal.
        let (changes, next) = store.suppression_changes(mark).await.unwrap();
        assert!(next >= mark, "{at}");
        assert!(
            changes.contains(&Change::Removed {
                tenant: String::new(),
                address: "u002@example.com".into()
            }),
            "{at}"
        );
        assert!(
            changes.contains(&Change::Set(listed(
                "acme",
                "u000@example.com",
                Reason::Complaint,
                None
            ))),
            "{at}"
        );
        assert_eq!(changes.len(), 451, "{at}");

        // Listing again brings a removed address back.
        store
            .upsert_suppressions(&[listed("", "u002@example.com", Reason::Manual, None)])
            .await
            .unwrap();
        assert!(
            store
                .suppression("", "u002@example.com")
                .await
                .unwrap()
                .is_some()
        );

        // Purging drops what expired (u001, at 5 s) and what was removed before then.
        assert!(
            store
                .remove_suppression("", "u003@example.com")
                .await
                .unwrap()
        );
        assert_eq!(store.purge_suppressions(6_000).await.unwrap(), 1, "{at}");
        let far = postroad_queue::unix_ms(std::time::SystemTime::now()) + 60_000;
        assert_eq!(store.purge_suppressions(far).await.unwrap(), 1, "{at}");
        assert_eq!(
            store.suppression("", "u001@example.com").await.unwrap(),
            None
        );
        assert_eq!(
            store.suppression_page("", None, 1000).await.unwrap().len(),
            448
        );
    }
}

fn pending(endpoint: &str, event: &str) -> Pending {
    Pending {
        endpoint_id: endpoint.into(),
        event_id: event.into(),
        payload: format!(r#"{{"id":"{event}"}}"#),
        queued_at_ms: 1_000,
    }
}

#[tokio::test]
async fn webhook_outboxes_keep_order_dedupe_give_up_redrive_and_lease() {
    for (store, _guard) in stores("webhooks").await {
        let at = store.location().to_string();
        let endpoint = |id: &str, tenant: &str| Endpoint {
            id: id.into(),
            tenant: tenant.into(),
            url: format!("https://hooks.example/{id}"),
            secret: "whsec_x".into(),
            events: vec![EventKind::Bounced, EventKind::Delivered],
            description: "note".into(),
            created_at_ms: 5,
        };
        store
            .create_webhook_endpoint(&endpoint("a", "acme"))
            .await
            .unwrap();
        store
            .create_webhook_endpoint(&endpoint("b", ""))
            .await
            .unwrap();
        assert_eq!(
            store.webhook_endpoints(Some("acme")).await.unwrap(),
            [endpoint("a", "acme")],
            "{at}"
        );
        assert_eq!(store.webhook_endpoints(None).await.unwrap().len(), 2);

        // 450 events for a (more than one insert), one queued twice; 2 for b.
        let many: Vec<Pending> = (0..450)
            .map(|i| pending("a", &format!("e{i:03}")))
            .collect();
        store.enqueue_webhook_events(&many).await.unwrap();
        store
            .enqueue_webhook_events(&[pending("a", "e000"), pending("b", "x1"), pending("b", "x2")])
            .await
            .unwrap();
        let mut waiting = store.webhook_endpoints_waiting().await.unwrap();
        waiting.sort();
        assert_eq!(waiting, ["a", "b"], "{at}");
        let first = store.next_webhook_events("a", 100).await.unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(first[0].event_id, "e000", "{at}");
        assert!(first.windows(2).all(|w| w[0].seq < w[1].seq), "{at}");
        assert_eq!(first[99].event_id, "e099");

        store
            .webhook_events_delivered("a", first[99].seq)
            .await
            .unwrap();
        let next = store.next_webhook_events("a", 100).await.unwrap();
        assert_eq!(next[0].event_id, "e100", "{at}");
        let moved = store
            .give_up_webhook_events("a", next[9].seq, "HTTP 503: busy", 9_000)
            .await
            .unwrap();
        assert_eq!(moved, 10, "{at}");
        let dead = store.webhook_dead_letters("a", 0, 5).await.unwrap();
        assert_eq!(dead.len(), 5);
        assert_eq!(
            (dead[0].event_id.as_str(), dead[0].error.as_str()),
            ("e100", "HTTP 503: busy")
        );
        assert_eq!(dead[0].failed_at_ms, 9_000);
        let rest = store
            .webhook_dead_letters("a", dead[4].seq, 100)
            .await
            .unwrap();
        assert_eq!(rest.len(), 5, "{at}");
        let counts = store.webhook_counts().await.unwrap();
        assert!(
            counts.contains(&("a".to_string(), 340, 10)),
            "{at}: {counts:?}"
        );
        assert!(
            counts.contains(&("b".to_string(), 2, 0)),
            "{at}: {counts:?}"
        );

        // Redriven: behind what is waiting, in their order, given up on no more.
        assert_eq!(store.redrive_webhook_events("a", 20_000).await.unwrap(), 10);
        assert!(
            store
                .webhook_dead_letters("a", 0, 100)
                .await
                .unwrap()
                .is_empty()
        );
        let all = store.next_webhook_events("a", 1000).await.unwrap();
        assert_eq!(all.len(), 350, "{at}");
        assert_eq!(all[340].event_id, "e100", "{at}");
        assert_eq!(all[340].queued_at_ms, 20_000);

        // One owner at a time; the lease passes on when it runs out.
        assert!(
            store
                .lease_webhook_endpoint("a", "n1", 100, 200)
                .await
                .unwrap()
        );
        assert!(
            !store
                .lease_webhook_endpoint("a", "n2", 150, 250)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            store
                .lease_webhook_endpoint("a", "n1", 150, 300)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            store
                .lease_webhook_endpoint("a", "n2", 301, 400)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            !store
                .lease_webhook_endpoint("zz", "n1", 0, 1)
                .await
                .unwrap()
        );

        // Deleting an endpoint takes its events and dead letters with it.
        store
            .give_up_webhook_events("a", all[0].seq, "gone", 1)
            .await
            .unwrap();
        assert!(
            !store.delete_webhook_endpoint("other", "a").await.unwrap(),
            "{at}"
        );
        assert!(store.delete_webhook_endpoint("acme", "a").await.unwrap());
        assert!(
            store.next_webhook_events("a", 10).await.unwrap().is_empty(),
            "{at}"
        );
        assert!(
            store
                .webhook_dead_letters("a", 0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{at}"
        );
        assert_eq!(store.webhook_endpoints_waiting().await.unwrap(), ["b"]);
    }
}
