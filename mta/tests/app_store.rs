//! The API's application store behaves the same on both backends: the embedded SQLite
//! file and the history's MySQL database (the machine's MariaDB, migrated by `postroad
//! migrate`'s code), including when several requests race for one idempotency key or
//! one template version, as they do on a cluster's nodes.

mod common;

use std::collections::BTreeMap;

use common::mariadb::MachineDatabase;
use postroad_api::AppStore;
use postroad_api::store::idempotency::{Claim, Recorded};
use postroad_api::store::templates::Definition;
use postroad_history::{Backend, HistoryConfig, HistoryStore};
use postroad_queue::EventKind;
use postroad_webhooks::customer::{Endpoint, Pending};
use postroad_webhooks::suppression::{Change, Entry, Reason};

const DAY_MS: i64 = 86_400_000;
const STALE_MS: i64 = 120_000;

/// A fresh store on each backend (the MySQL one dropped with the guard).
async fn stores(test: &str) -> Vec<(AppStore, Box<dyn std::any::Any>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = AppStore::open_in(dir.path()).await.unwrap();
    let db = MachineDatabase::create(&format!("postroad_app_{test}_{}", std::process::id()));
    let config = HistoryConfig {
        backend: Backend::Mysql,
        url: db.url(),
        ..HistoryConfig::default()
    };
    HistoryStore::migrate(&config, dir.path()).await.unwrap();
    let mysql = AppStore::open_mysql(&db.url(), &db.name).await.unwrap();
    vec![(sqlite, Box::new(dir)), (mysql, Box::new(db))]
}

fn recorded(hash: u8, status: u16) -> Recorded {
    Recorded {
        request_hash: [hash; 32],
        status,
        response: format!(r#"{{"status":{status}}}"#),
    }
}

#[tokio::test]
async fn a_database_without_the_api_tables_is_refused_with_the_command_that_adds_them() {
    let db = MachineDatabase::create(&format!("postroad_app_bare_{}", std::process::id()));
    let error = AppStore::open_mysql(&db.url(), &db.name)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("postroad migrate"), "{error}");
    assert!(error.contains("api_keys"), "{error}");
}

#[tokio::test]
async fn api_keys_are_created_listed_and_revoked() {
    for (store, _guard) in stores("keys").await {
        let (key, record) = store.create_key("app", Some("acme")).await.unwrap();
        let (other, _) = store.create_key("other", None).await.unwrap();
        assert_ne!(key, other);
        let active = store.active_keys().await.unwrap();
        assert_eq!(active.len(), 2, "{}", store.location());
        assert!(active.contains(&(postroad_api::store::keys::hash(&key), record.clone())));
        assert_eq!(
            store.revoke_key("app").await.unwrap().map(|k| k.id),
            Some(record.id)
        );
        assert!(store.revoke_key("app").await.unwrap().is_none());
        let active = store.active_keys().await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.name, "other");
        let listed = store.list_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].revoked_at_ms.is_some() && listed[1].revoked_at_ms.is_none());
    }
}

fn definition(subject: &str) -> Definition {
    Definition {
        subject: subject.into(),
        text: Some("Hi {{ name }}".into()),
        ..Definition::default()
    }
}

#[tokio::test]
async fn template_versions_grow_per_type_and_tenant_and_racing_puts_each_get_one() {
    for (store, _guard) in stores("templates").await {
        let at = store.location().to_string();
        for subject in ["v1", "v2"] {
            store
                .put_template("", "welcome", &definition(subject))
                .await
                .unwrap();
        }
        // Email types compare exactly, as in SQLite: this is another type.
        store
            .put_template("", "Welcome", &definition("capital"))
            .await
            .unwrap();
        store
            .put_template("acme", "welcome", &definition("a"))
            .await
            .unwrap();
        let newest = store.template("", "welcome", None).await.unwrap().unwrap();
        assert_eq!(
            (newest.version, newest.definition.subject.as_str()),
            (2, "v2"),
            "{at}"
        );
        let first = store.template("", "welcome", Some(1)).await.unwrap();
        assert_eq!(first.unwrap().definition, definition("v1"));
        let capital = store.template("", "Welcome", None).await.unwrap().unwrap();
        assert_eq!(
            (capital.version, capital.definition.subject.as_str()),
            (1, "capital")
        );
        assert!(
            store
                .template("", "welcome", Some(3))
                .await
                .unwrap()
                .is_none()
        );

        let racing: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .put_template("", "race", &definition(&format!("r{i}")))
                        .await
                        .unwrap()
                        .version
                })
            })
            .collect();
        let mut versions = Vec::new();
        for put in racing {
            versions.push(put.await.unwrap());
        }
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<u32>>(), "{at}");

        let listed: Vec<_> = store
            .list_templates("")
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.email_type, t.version))
            .collect();
        assert_eq!(
            listed,
            [
                ("Welcome".to_string(), 1),
                ("race".to_string(), 8),
                ("welcome".to_string(), 2)
            ],
            "{at}"
        );
        assert_eq!(store.delete_template("", "welcome").await.unwrap(), 2);
        assert!(store.template("", "welcome", None).await.unwrap().is_none());
        assert!(
            store
                .template("acme", "welcome", None)
                .await
                .unwrap()
                .is_some()
        );

        store.add_announcement("", "welcome").await.unwrap();
        store.add_announcement("", "welcome").await.unwrap();
        assert_eq!(
            store.announcements().await.unwrap(),
            [(String::new(), "welcome".to_string())]
        );
        store.remove_announcement("", "welcome").await.unwrap();
        assert!(store.announcements().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn preferences_are_replaced_read_in_bulk_and_deleted_per_tenant() {
    let prefs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (store, _guard) in stores("prefs").await {
        store
            .put_prefs("", 1, &prefs(&[("name", "Ann"), ("language", "fr")]))
            .await
            .unwrap();
        store
            .put_prefs("", 1, &prefs(&[("name", "Anne")]))
            .await
            .unwrap();
        store
            .put_prefs("acme", 1, &prefs(&[("name", "Other")]))
            .await
            .unwrap();
        let ids: Vec<u64> = (0..1200).collect();
        let found = store.prefs_of("", &ids).await.unwrap();
        assert_eq!(found.len(), 1, "{}", store.location());
        assert_eq!(found[&1], prefs(&[("name", "Anne")]));
        assert_eq!(
            store.prefs_of("acme", &[1]).await.unwrap()[&1]["name"],
            "Other"
        );
        let mut users = store.users_with_prefs().await.unwrap();
        users.sort();
        assert_eq!(users, [("".to_string(), 1), ("acme".to_string(), 1)]);
        assert!(store.delete_prefs("", 1).await.unwrap());
        assert!(!store.delete_prefs("", 1).await.unwrap());
        assert!(store.prefs_of("", &[1]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn an_idempotency_key_is_claimed_once_answered_and_taken_over_only_when_stale() {
    for (store, _guard) in stores("idempotency").await {
        let at = store.location().to_string();
        let claim = |key: &'static str, ttl: i64, stale: i64| {
            let store = store.clone();
            async move { store.claim("k1", key, &[1; 32], ttl, stale).await.unwrap() }
        };
        assert_eq!(
            claim("order-1", DAY_MS, STALE_MS).await,
            Claim::Fresh,
            "{at}"
        );
        assert_eq!(claim("order-1", DAY_MS, STALE_MS).await, Claim::InProgress);
        // Keys compare exactly, and per API key.
        assert_eq!(
            claim("ORDER-1", DAY_MS, STALE_MS).await,
            Claim::Fresh,
            "{at}"
        );
        assert_eq!(
            store
                .claim("k2", "order-1", &[1; 32], DAY_MS, STALE_MS)
                .await
                .unwrap(),
            Claim::Fresh
        );

        store
            .record_answer("k1", "order-1", &recorded(1, 202))
            .await
            .unwrap();
        assert_eq!(
            claim("order-1", DAY_MS, STALE_MS).await,
            Claim::Answered(recorded(1, 202))
        );
        // An answer past its TTL is forgotten: the key is claimed anew.
        assert_eq!(claim("order-1", -1, STALE_MS).await, Claim::Fresh, "{at}");
        assert_eq!(claim("order-1", DAY_MS, STALE_MS).await, Claim::InProgress);

        // A released claim (the request failed transiently) frees the key; a claim
        // whose process died is taken over once stale.
        store.release("k1", "ORDER-1").await.unwrap();
        assert_eq!(claim("ORDER-1", DAY_MS, STALE_MS).await, Claim::Fresh);
        assert_eq!(claim("ORDER-1", DAY_MS, -1).await, Claim::Fresh, "{at}");
        // Releasing never removes an answer.
        store
            .record_answer("k1", "ORDER-1", &recorded(1, 422))
            .await
            .unwrap();
        store.release("k1", "ORDER-1").await.unwrap();
        assert_eq!(
            claim("ORDER-1", DAY_MS, STALE_MS).await,
            Claim::Answered(recorded(1, 422))
        );

        // Requests racing for a new key (on a cluster: on several nodes): one wins.
        let racing: Vec<_> = (0..8)
            .map(|_| tokio::spawn(claim("race", DAY_MS, STALE_MS)))
            .collect();
        let mut fresh = 0;
        for claimed in racing {
            match claimed.await.unwrap() {
                Claim::Fresh => fresh += 1,
                Claim::InProgress => {}
                other => panic!("{at}: {other:?}"),
            }
        }
        assert_eq!(fresh, 1, "{at}");

        assert_eq!(store.expire_answers(DAY_MS).await.unwrap(), 0);
        assert_eq!(store.expire_answers(-1).await.unwrap(), 4, "{at}");
    }
}

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
