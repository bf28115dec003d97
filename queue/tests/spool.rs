//! The embedded spool through its public API: round trips, claims, deferral, dead
//! letters, durability across reopen.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use postroad_queue::{MessageId, Queue, QueueError, QueueStats, Resolution};
use tempfile::TempDir;

use common::{body, enqueue_n, envelope, open};

#[tokio::test]
async fn enqueue_claim_ack_round_trip() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let mut envs = Vec::new();
    for i in 0..3 {
        let env = envelope(&["a@example.net"]);
        spool.enqueue(env.clone(), body(i)).await.unwrap();
        envs.push(env);
    }
    let stats = spool.stats().await.unwrap();
    assert_eq!(
        stats,
        QueueStats {
            queued: 3,
            ready: 3,
            deferred: 0,
            claimed: 0,
            dead_letters: 0
        }
    );

    let claimed = spool.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Oldest first (ids are time-ordered and all were due at enqueue time, in order).
    for (i, c) in claimed.iter().enumerate() {
        assert_eq!(c.envelope, envs[i]);
        assert_eq!(c.body, body(i));
    }
    assert!(spool.claim(10).await.unwrap().is_empty(), "claimed twice");
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.queued, stats.ready, stats.claimed), (3, 0, 3));

    for c in &claimed {
        spool.ack(c.envelope.id).await.unwrap();
    }
    assert_eq!(spool.stats().await.unwrap(), QueueStats::default());
    for env in &envs {
        assert!(spool.get(env.id).await.unwrap().is_none());
    }
    assert!(spool.list(10).await.unwrap().is_empty());
    assert!(spool.claim(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn claim_respects_max() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    enqueue_n(&spool, 5).await;
    assert_eq!(spool.claim(2).await.unwrap().len(), 2);
    assert_eq!(spool.claim(2).await.unwrap().len(), 2);
    assert_eq!(spool.claim(2).await.unwrap().len(), 1);
    assert!(spool.claim(0).await.unwrap().is_empty());
    assert_eq!(spool.stats().await.unwrap().claimed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_hand_out_a_message_twice() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let ids: HashSet<_> = enqueue_n(&spool, 60).await.into_iter().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let spool = spool.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = spool.claim(3).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|c| c.envelope.id));
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(got) = tasks.join_next().await {
        for id in got.unwrap() {
            assert!(seen.insert(id), "{id} handed out twice");
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_resolved_during_claims_is_not_handed_out_again() {
    // Workers ack what they claim while others keep claiming: every message must be
    // claimed exactly once (an ack racing a claim's snapshot must not resurrect it).
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let ids: HashSet<_> = enqueue_n(&spool, 100).await.into_iter().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let spool = spool.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = spool.claim(2).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                for c in batch {
                    spool.ack(c.envelope.id).await.unwrap();
                    got.push(c.envelope.id);
                }
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(got) = tasks.join_next().await {
        for id in got.unwrap() {
            assert!(seen.insert(id), "{id} handed out twice");
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(spool.stats().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn resolving_needs_a_claim() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let env = envelope(&["a@example.net"]);
    let id = env.id;
    spool.enqueue(env.clone(), body(0)).await.unwrap();
    assert!(matches!(spool.ack(id).await, Err(QueueError::NotClaimed(x)) if x == id));
    assert!(matches!(
        spool.defer(env.clone(), SystemTime::now()).await,
        Err(QueueError::NotClaimed(_))
    ));
    assert!(matches!(
        spool.dead_letter(&env, "x".into()).await,
        Err(QueueError::NotClaimed(_))
    ));
    let unknown = MessageId::new();
    assert!(matches!(
        spool.ack(unknown).await,
        Err(QueueError::NotClaimed(_))
    ));

    assert_eq!(spool.claim(1).await.unwrap().len(), 1);
    spool.ack(id).await.unwrap();
    // Resolved: the claim is gone with it.
    assert!(matches!(
        spool.ack(id).await,
        Err(QueueError::NotClaimed(_))
    ));
}

#[tokio::test]
async fn defer_rewrites_the_envelope_and_hides_it_until_due() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let env = envelope(&["done@example.net", "later@example.org"]);
    spool.enqueue(env.clone(), body(1)).await.unwrap();
    let mut claimed = spool.claim(1).await.unwrap();
    let mut env = claimed.remove(0).envelope;
    env.recipients.remove(0);
    env.recipients[0].attempts += 1;

    let until = SystemTime::now() + Duration::from_secs(3600);
    spool.defer(env.clone(), until).await.unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.ready, stats.deferred, stats.claimed),
        (1, 0, 1, 0)
    );
    assert!(spool.claim(10).await.unwrap().is_empty());
    let (stored, stored_body) = spool.get(env.id).await.unwrap().unwrap();
    assert_eq!(stored, env);
    assert_eq!(stored_body, body(1));
}

#[tokio::test]
async fn deferred_message_becomes_claimable_at_its_time() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    spool
        .enqueue(envelope(&["a@example.net"]), body(0))
        .await
        .unwrap();
    let mut env = spool.claim(1).await.unwrap().remove(0).envelope;
    env.recipients[0].attempts = 1;

    // Due in the past: ready at once.
    spool
        .defer(env.clone(), SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        .await
        .unwrap();
    let again = spool.claim(1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].envelope.recipients[0].attempts, 1);

    // Due shortly: not before, yes after. (Waiting here is the behaviour under test:
    // time has to pass for the message to become due.)
    let until = SystemTime::now() + Duration::from_millis(1500);
    env.recipients[0].attempts = 2;
    spool.defer(env.clone(), until).await.unwrap();
    let early = spool.claim(1).await.unwrap();
    assert!(
        early.is_empty() || SystemTime::now() >= until,
        "claimed before its due time"
    );
    let wait = until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert!(SystemTime::now() >= until);
    let late = spool.claim(1).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].envelope, env);
}

#[tokio::test]
async fn dead_letter_moves_the_message_to_the_dlq() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let env = envelope(&["nobody@example.net"]);
    spool.enqueue(env.clone(), body(0)).await.unwrap();
    spool.claim(1).await.unwrap();
    let before = postroad_queue::unix_ms(SystemTime::now());
    spool
        .dead_letter(&env, "550 5.1.1 no such user".into())
        .await
        .unwrap();

    assert!(spool.get(env.id).await.unwrap().is_none());
    let dead = spool.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope, env);
    assert_eq!(dead[0].reason, "550 5.1.1 no such user");
    assert!(dead[0].at_ms >= before);
    let stats = spool.stats().await.unwrap();
    assert_eq!(
        stats,
        QueueStats {
            dead_letters: 1,
            ..QueueStats::default()
        }
    );
    assert!(spool.claim(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn recover_releases_claims() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    enqueue_n(&spool, 2).await;
    assert_eq!(spool.claim(10).await.unwrap().len(), 2);
    assert!(spool.claim(10).await.unwrap().is_empty());
    let report = spool.recover().await.unwrap();
    assert_eq!((report.queued, report.dead_letters), (2, 0));
    assert_eq!(spool.stats().await.unwrap().claimed, 0);
    assert_eq!(spool.claim(10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn enqueueing_the_same_id_again_replaces_it() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let env = envelope(&["a@example.net"]);
    spool.enqueue(env.clone(), body(1)).await.unwrap();
    spool.enqueue(env.clone(), body(2)).await.unwrap();
    let stats = spool.stats().await.unwrap();
    assert_eq!((stats.queued, stats.ready), (1, 1));
    assert_eq!(spool.get(env.id).await.unwrap().unwrap().1, body(2));
    assert_eq!(spool.claim(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let ids = enqueue_n(&spool, 5).await;
    let claimed = spool.claim(2).await.unwrap();
    let (first, second) = (&claimed[0].envelope, &claimed[1].envelope);
    spool
        .defer(first.clone(), SystemTime::now() + Duration::from_secs(3600))
        .await
        .unwrap();
    spool.dead_letter(second, "expired".into()).await.unwrap();
    let mut claimed_not_resolved = spool.claim(1).await.unwrap();
    assert_eq!(claimed_not_resolved.len(), 1);
    drop(spool);

    let spool = open(&dir);
    let report = spool.recover().await.unwrap();
    assert_eq!((report.queued, report.dead_letters), (4, 1));
    let stats = spool.stats().await.unwrap();
    // The claim of the previous run is gone: that message is ready again.
    assert_eq!(
        stats,
        QueueStats {
            queued: 4,
            ready: 3,
            deferred: 1,
            claimed: 0,
            dead_letters: 1
        }
    );
    for (i, id) in ids.iter().enumerate() {
        if *id == second.id {
            assert!(spool.get(*id).await.unwrap().is_none());
        } else {
            assert_eq!(spool.get(*id).await.unwrap().unwrap().1, body(i));
        }
    }
    let ready: HashSet<_> = spool
        .claim(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.envelope.id)
        .collect();
    assert_eq!(ready.len(), 3);
    assert!(ready.contains(&claimed_not_resolved.remove(0).envelope.id));
    assert!(!ready.contains(&first.id));
    assert_eq!(
        spool.dead_letters(10).await.unwrap()[0].envelope.id,
        second.id
    );
}

#[tokio::test]
async fn partial_resolution_retries_some_and_dead_letters_others_atomically() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let env = envelope(&["ok@example.net", "later@example.net", "gone@example.net"]);
    spool.enqueue(env.clone(), body(7)).await.unwrap();
    let claimed = spool.claim(1).await.unwrap().remove(0);
    let mut retry = claimed.envelope.clone();
    retry.recipients = vec![claimed.envelope.recipients[1].clone()];
    retry.recipients[0].attempts = 1;
    let dead = vec![claimed.envelope.recipients[2].clone()];
    spool
        .resolve(
            env.id,
            Resolution {
                retry: Some((retry.clone(), SystemTime::now() + Duration::from_secs(3600))),
                dead: Some((dead.clone(), "550 5.1.1 no such user".into())),
                events: Vec::new(),
            },
        )
        .await
        .unwrap();

    let (queued, queued_body) = spool.get(env.id).await.unwrap().unwrap();
    assert_eq!(queued.recipients, retry.recipients);
    let (letter, dead_body) = spool.get_dead_letter(env.id).await.unwrap().unwrap();
    assert_eq!(letter.envelope.recipients, dead);
    assert_eq!(letter.reason, "550 5.1.1 no such user");
    assert_eq!(queued_body, dead_body);
    assert_eq!(dead_body, body(7));
    let stats = spool.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.deferred, stats.dead_letters),
        (1, 1, 1)
    );

    // Requeued while the original is still queued: a new id, its own copy of the body.
    let new_id = spool.requeue_dead_letter(env.id).await.unwrap();
    assert_ne!(new_id, env.id);
    let (requeued, requeued_body) = spool.get(new_id).await.unwrap().unwrap();
    assert_eq!(requeued.recipients[0].address, "gone@example.net");
    assert_eq!(requeued.recipients[0].attempts, 0);
    assert!(requeued.requeued_at_ms.is_some());
    assert_eq!(requeued_body, body(7));
    assert!(spool.get_dead_letter(env.id).await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_keep_their_body_until_purged_and_can_be_requeued() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let a = envelope(&["a@example.net"]);
    let b = envelope(&["b@example.net"]);
    spool.enqueue(a.clone(), body(1)).await.unwrap();
    spool.enqueue(b.clone(), body(2)).await.unwrap();
    for claimed in spool.claim(2).await.unwrap() {
        spool
            .dead_letter(&claimed.envelope, "expired".into())
            .await
            .unwrap();
    }
    assert_eq!(spool.dead_letters(10).await.unwrap().len(), 2);

    // Not queued any more: it goes back under its own id, due now.
    assert_eq!(spool.requeue_dead_letter(a.id).await.unwrap(), a.id);
    let claimed = spool.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].envelope.id, claimed[0].body.clone()),
        (a.id, body(1))
    );

    spool.purge_dead_letter(b.id).await.unwrap();
    assert!(spool.get_dead_letter(b.id).await.unwrap().is_none());
    assert!(matches!(
        spool.purge_dead_letter(b.id).await,
        Err(QueueError::NotFound(_))
    ));
    assert!(matches!(
        spool.requeue_dead_letter(b.id).await,
        Err(QueueError::NotFound(_))
    ));
    spool.ack(a.id).await.unwrap();
    assert_eq!(spool.stats().await.unwrap(), QueueStats::default());
}

#[tokio::test]
async fn flush_makes_deferred_messages_due_now() {
    let dir = TempDir::new().unwrap();
    let spool = open(&dir);
    let ids = enqueue_n(&spool, 3).await;
    for claimed in spool.claim(3).await.unwrap() {
        spool
            .defer(
                claimed.envelope,
                SystemTime::now() + Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }
    assert!(spool.claim(10).await.unwrap().is_empty());
    assert_eq!(spool.flush().await.unwrap(), 3);
    let mut claimed: Vec<_> = spool
        .claim(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.envelope.id)
        .collect();
    claimed.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(claimed, ids);
    assert_eq!(spool.flush().await.unwrap(), 0);
}
