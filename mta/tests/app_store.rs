//! The API's application store behaves the same on both backends: the embedded SQLite
//! file and the history's MySQL database (the machine's MariaDB, migrated by `postroad
//! migrate`'s code), including when several requests race for one idempotency key or
//! one template version, as they do on a cluster's nodes.

mod common;

use std::collections::BTreeMap;

use common::app_stores::stores;
use common::mariadb::MachineDatabase;
use postroad_api::AppStore;
use postroad_api::store::idempotency::{Claim, Recorded};
use postroad_api::store::templates::Definition;

const DAY_MS: i64 = 86_400_000;
const STALE_MS: i64 = 120_000;

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
