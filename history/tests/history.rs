//! The history on both backends (a SQLite file, a MariaDB database): what a batch
//! writes, what queries return.

mod common;

use common::{T0, each_backend, event, many, message_at};
use postroad_history::{
    Cursor, EventKind, HistoryConfig, HistoryQuery, HistorySink, MessageId, Metadata, Reply,
    Response,
};
use postroad_queue::EventSink;

#[tokio::test]
async fn replayed_events_are_ignored() {
    for each in each_backend().await {
        let store = &each.store;
        let events = many(600);
        let first = store.insert(&events).await.unwrap();
        assert_eq!(
            (first.events, first.recipients),
            (600, 600),
            "{}",
            each.name
        );
        store.insert(&events).await.unwrap();
        // Within one batch too.
        let fresh = many(3);
        let batch = [fresh.clone(), fresh.clone()].concat();
        let within = store.insert(&batch).await.unwrap();
        assert_eq!(within.recipients, 3, "{}", each.name);
        // Through the sink as the fan-out calls it.
        let sink = HistorySink::new(store.clone(), &HistoryConfig::default());
        sink.write(&events).await.unwrap();

        let counts = store.count_by_kind().await.unwrap();
        assert_eq!(counts[0], (EventKind::Queued, 603), "{}", each.name);
        let rows = store
            .status_by_message_id(events[0].message_id)
            .await
            .unwrap();
        assert_eq!(rows.len(), 600, "{}", each.name);
        assert!(rows.iter().all(|r| r.status == EventKind::Queued));
    }
}

#[tokio::test]
async fn a_status_only_moves_forward_whatever_order_events_arrive_in() {
    for each in each_backend().await {
        let store = &each.store;
        let m = message_at(T0);
        let bob = "bob@example.net";
        let eve = "eve@example.net";
        let mut delivered = event(m, bob, EventKind::Delivered, T0 + 3000);
        delivered.attempt = 2;
        delivered.remote_host = Some("mx.example.net [192.0.2.1]:25".into());
        delivered.reply = Some(Response::Remote(Reply::new(250, "2.0.0", "ok")));
        let mut late_deferral = event(m, bob, EventKind::Deferred, T0 + 2000);
        late_deferral.attempt = 3;
        late_deferral.reply = Some(Response::Remote(Reply::new(451, "4.7.1", "later")));

        // Separate batches, each against what is stored.
        store
            .insert(&[
                event(m, bob, EventKind::Queued, T0),
                event(m, eve, EventKind::Queued, T0),
            ])
            .await
            .unwrap();
        store
            .insert(std::slice::from_ref(&delivered))
            .await
            .unwrap();
        store
            .insert(std::slice::from_ref(&late_deferral))
            .await
            .unwrap();
        // A replayed queued event, long after.
        store
            .insert(&[event(m, bob, EventKind::Queued, T0 + 9000)])
            .await
            .unwrap();
        // Eve: deferred twice, the later one wins; then bounced after a delivery.
        let mut d1 = event(m, eve, EventKind::Deferred, T0 + 1000);
        d1.reply = Some(Response::Remote(Reply::new(451, "4.7.1", "first")));
        let mut d2 = event(m, eve, EventKind::Deferred, T0 + 5000);
        d2.attempt = 2;
        d2.reply = Some(Response::Remote(Reply::new(452, "4.2.2", "second")));
        store.insert(&[d2.clone(), d1]).await.unwrap();

        let rows = store.status_by_message_id(m).await.unwrap();
        let (b, e) = (&rows[0], &rows[1]);
        assert_eq!(
            (b.recipient.as_str(), b.status),
            (bob, EventKind::Delivered),
            "{}",
            each.name
        );
        assert_eq!(b.status_at_ms, T0 + 3000, "{}", each.name);
        assert_eq!(
            b.attempts, 3,
            "{}: attempts count the late deferral",
            each.name
        );
        assert_eq!(b.reply, delivered.reply, "{}", each.name);
        assert_eq!(b.remote_host, delivered.remote_host, "{}", each.name);
        assert_eq!(b.sent_at_ms, T0, "{}", each.name);
        assert_eq!(
            (e.status, e.status_at_ms),
            (EventKind::Deferred, T0 + 5000),
            "{}",
            each.name
        );
        assert_eq!(e.reply, d2.reply, "{}", each.name);

        // An asynchronous bounce after the delivery wins.
        let mut bounce = event(m, bob, EventKind::Bounced, T0 + 60_000);
        bounce.reply = Some(Response::Remote(Reply::new(550, "5.1.1", "no such user")));
        store.insert(std::slice::from_ref(&bounce)).await.unwrap();
        let rows = store.status_by_message_id(m).await.unwrap();
        assert_eq!(rows[0].status, EventKind::Bounced, "{}", each.name);
        assert_eq!(rows[0].reply, bounce.reply, "{}", each.name);

        // The event log keeps every event, oldest first.
        let kinds: Vec<EventKind> = store
            .by_message_id(m, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.recipient == bob)
            .map(|e| e.kind)
            .collect();
        use EventKind::*;
        assert_eq!(
            kinds,
            [Queued, Deferred, Delivered, Queued, Bounced],
            "{}",
            each.name
        );
    }
}

#[tokio::test]
async fn opens_clicks_and_complaints_follow_the_delivery_and_a_late_deferral_changes_nothing() {
    for each in each_backend().await {
        let store = &each.store;
        let m = message_at(T0);
        let bob = "bob@example.net";
        let mut delivered = event(m, bob, EventKind::Delivered, T0 + 1000);
        delivered.attempt = 1;
        delivered.reply = Some(Response::Remote(Reply::new(250, "2.0.0", "ok")));
        delivered.provider_message_id = Some("0100019abc-ses".into());
        store
            .insert(&[event(m, bob, EventKind::Queued, T0), delivered])
            .await
            .unwrap();
        let status =
            |rows: Vec<postroad_history::RecipientStatus>| (rows[0].status, rows[0].attempts);
        for (kind, at) in [
            (EventKind::Opened, T0 + 60_000),
            (EventKind::Clicked, T0 + 61_000),
            // A second open after the click: the row still shows the click.
            (EventKind::Opened, T0 + 62_000),
        ] {
            store.insert(&[event(m, bob, kind, at)]).await.unwrap();
        }
        let rows = store.status_by_message_id(m).await.unwrap();
        assert_eq!(status(rows), (EventKind::Clicked, 1), "{}", each.name);
        // A deferral replayed from before the delivery is logged, not shown.
        let mut late = event(m, bob, EventKind::Deferred, T0 + 500);
        late.attempt = 1;
        late.reason = Some("mailboxfull".into());
        store.insert(&[late]).await.unwrap();
        let rows = store.status_by_message_id(m).await.unwrap();
        assert_eq!(rows[0].reason, None, "{}", each.name);
        assert_eq!(status(rows), (EventKind::Clicked, 1), "{}", each.name);
        let mut complaint = event(m, bob, EventKind::Complained, T0 + 90_000);
        complaint.reason = Some("abuse".into());
        store.insert(&[complaint]).await.unwrap();
        let rows = store.status_by_message_id(m).await.unwrap();
        assert_eq!(rows[0].status, EventKind::Complained, "{}", each.name);
        // The reason moves with the status: the complaint's feedback type.
        assert_eq!(rows[0].reason.as_deref(), Some("abuse"), "{}", each.name);
        // No server replied to a complaint; the delivery's reply is in the event log.
        assert_eq!(rows[0].reply, None, "{}", each.name);
        // The provider's id stays on the row (its webhooks name the message by it).
        assert_eq!(
            rows[0].provider_message_id.as_deref(),
            Some("0100019abc-ses"),
            "{}",
            each.name
        );
        let timeline = store.by_message_id(m, 100).await.unwrap();
        let delivery = timeline
            .iter()
            .find(|e| e.kind == EventKind::Delivered)
            .unwrap();
        assert!(delivery.reply.is_some(), "{}", each.name);
        let deferral = timeline
            .iter()
            .find(|e| e.kind == EventKind::Deferred)
            .unwrap();
        assert_eq!(
            deferral.reason.as_deref(),
            Some("mailboxfull"),
            "{}",
            each.name
        );
        assert_eq!(
            delivery.provider_message_id.as_deref(),
            Some("0100019abc-ses"),
            "{}",
            each.name
        );
        assert_eq!(rows[0].status_at_ms, T0 + 90_000, "{}", each.name);
        let complained = store
            .query(&postroad_history::HistoryQuery {
                status: Some(EventKind::Complained),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(complained.rows.len(), 1, "{}", each.name);
    }
}

fn with_meta(
    mut e: postroad_history::DeliveryEvent,
    user: u64,
    kind: &str,
) -> postroad_history::DeliveryEvent {
    e.meta = Metadata {
        user_id: Some(user),
        email_type: Some(kind.into()),
        tenant: Some(
            if user.is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }
            .into(),
        ),
        tags: vec![("plan".into(), "pro".into())],
        ..Metadata::default()
    };
    e
}

#[tokio::test]
async fn queries_filter_and_page_newest_first_without_gaps_or_repeats() {
    for each in each_backend().await {
        let store = &each.store;
        // 250 messages a minute apart; user = i % 5, type alternates, some bounce.
        let mut events = Vec::new();
        let mut ids: Vec<(u64, MessageId)> = Vec::new();
        for i in 0..250u64 {
            let sent = T0 + i * 60_000;
            let m = message_at(sent);
            let kind = if i % 2 == 0 { "welcome" } else { "digest" };
            let rcpt = format!("User{i}@Example.NET");
            events.push(with_meta(
                event(m, &rcpt, EventKind::Queued, sent),
                i % 5,
                kind,
            ));
            let outcome = if i % 10 == 3 {
                EventKind::Bounced
            } else {
                EventKind::Delivered
            };
            events.push(with_meta(event(m, &rcpt, outcome, sent + 500), i % 5, kind));
            ids.push((i, m));
        }
        store.insert(&events).await.unwrap();

        // All of user 3's mail, 7 per page: every message once, newest first.
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let page = store
                .query(&HistoryQuery {
                    user_id: Some(3),
                    limit: 7,
                    cursor,
                    ..Default::default()
                })
                .await
                .unwrap();
            seen.extend(page.rows.iter().map(|r| r.message_id));
            match page.next {
                Some(next) => cursor = Some(next.to_string().parse().unwrap()),
                None => break,
            }
        }
        let expected: Vec<MessageId> = ids
            .iter()
            .rev()
            .filter(|(i, _)| i % 5 == 3)
            .map(|(_, m)| *m)
            .collect();
        assert_eq!(seen, expected, "{}", each.name);

        let count = |q: HistoryQuery| async move {
            store
                .query(&HistoryQuery { limit: 1000, ..q })
                .await
                .unwrap()
                .rows
        };
        let bounced = count(HistoryQuery {
            status: Some(EventKind::Bounced),
            ..Default::default()
        })
        .await;
        assert_eq!(bounced.len(), 25, "{}", each.name);
        assert!(bounced.iter().all(|r| r.status == EventKind::Bounced));
        // A time range of sent_at: [minute 100, minute 110).
        let range = count(HistoryQuery {
            email_type: Some("welcome".into()),
            from_ms: Some(T0 + 100 * 60_000),
            to_ms: Some(T0 + 110 * 60_000),
            ..Default::default()
        })
        .await;
        let minutes: Vec<u64> = range.iter().map(|r| (r.sent_at_ms - T0) / 60_000).collect();
        assert_eq!(minutes, [108, 106, 104, 102, 100], "{}", each.name);
        assert_eq!(
            range[0].meta.tags,
            [("plan".to_string(), "pro".to_string())]
        );
        // Recipients compare without regard to case; the stored spelling is kept.
        let by_rcpt = count(HistoryQuery {
            recipient: Some("user42@example.net".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(by_rcpt.len(), 1, "{}", each.name);
        assert_eq!(by_rcpt[0].recipient, "User42@Example.NET");
        let tenant = count(HistoryQuery {
            tenant: Some("even".into()),
            user_id: Some(3),
            ..Default::default()
        })
        .await;
        assert!(tenant.is_empty(), "{}: user 3 is odd", each.name);
        assert!(
            count(HistoryQuery {
                user_id: Some(99),
                ..Default::default()
            })
            .await
            .is_empty()
        );
    }
}

#[tokio::test]
async fn a_message_shows_each_recipient_and_its_timeline() {
    for each in each_backend().await {
        let store = &each.store;
        let m = message_at(T0);
        let other = message_at(T0);
        let mut events = vec![
            event(m, "a@example.net", EventKind::Queued, T0),
            event(m, "b@example.org", EventKind::Queued, T0),
            event(other, "a@example.net", EventKind::Queued, T0),
        ];
        let mut local = event(m, "b@example.org", EventKind::Deferred, T0 + 10);
        local.reply = Some(Response::local(
            "4.4.1".parse().unwrap(),
            "connection refused".to_string(),
        ));
        events.push(local.clone());
        events.push(event(m, "a@example.net", EventKind::Delivered, T0 + 20));
        store.insert(&events).await.unwrap();

        let statuses = store.status_by_message_id(m).await.unwrap();
        let got: Vec<(&str, EventKind)> = statuses
            .iter()
            .map(|s| (s.recipient.as_str(), s.status))
            .collect();
        assert_eq!(
            got,
            [
                ("a@example.net", EventKind::Delivered),
                ("b@example.org", EventKind::Deferred)
            ],
            "{}",
            each.name
        );
        assert_eq!(statuses[1].reply, local.reply, "{}", each.name);
        let timeline = store.by_message_id(m, 100).await.unwrap();
        let expected: Vec<_> = events
            .iter()
            .filter(|e| e.message_id == m)
            .cloned()
            .collect();
        let mut expected = expected;
        expected.sort_by_key(|e| (e.at_ms, e.event_id));
        assert_eq!(timeline, expected, "{}", each.name);
        // The latest N, oldest first.
        assert_eq!(
            store.by_message_id(m, 2).await.unwrap(),
            expected[2..],
            "{}",
            each.name
        );
        assert!(
            store
                .by_message_id(MessageId::new(), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
