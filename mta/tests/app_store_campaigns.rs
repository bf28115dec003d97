//! Recipient lists and campaigns behave the same on both backends (SQLite and the
//! machine's MariaDB): a list keeps one row per address whatever its case, in upload
//! order; a campaign is expanded by one lease holder at a time, stops advancing once
//! paused or cancelled, and only the allowed state changes happen.

mod common;

use common::app_stores::stores;
use postroad_api::store::campaigns::state::transition;
use postroad_api::store::campaigns::{CampaignRecord, Progress, state};
use postroad_api::store::lists::{ListCounts, ListRow, RowError};

fn row(seq: u64, address: &str) -> ListRow {
    ListRow {
        seq,
        address: address.into(),
        user_id: Some(seq),
        data: Some(format!("{{\"n\":{seq}}}")),
    }
}

fn campaign(id: &str, tenant: &str, list: &str) -> CampaignRecord {
    CampaignRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: "December news".into(),
        list_id: list.into(),
        spec: "{}".into(),
        state: state::SCHEDULED.into(),
        send_at_ms: 0,
        done_seq: 0,
        expanded: 0,
        suppressed: 0,
        failed: 0,
        last_error: None,
        phase: 0,
        test_ends_at_ms: None,
        winner: None,
        created_at_ms: 0,
        finished_at_ms: None,
    }
}

#[tokio::test]
async fn a_list_keeps_one_row_per_address_in_upload_order() {
    for (store, _guard) in stores("lists").await {
        let at = store.location().to_string();
        store.create_list("lst_1", "acme", "news").await.unwrap();
        let first = [
            row(1, "ann@x.test"),
            row(2, "bob@x.test"),
            row(3, "ANN@X.test"),
        ];
        assert_eq!(
            store.add_list_rows("lst_1", &first).await.unwrap(),
            2,
            "{at}"
        );
        let second = [row(4, "Bob@x.test"), row(5, "cat@x.test")];
        assert_eq!(
            store.add_list_rows("lst_1", &second).await.unwrap(),
            1,
            "{at}"
        );

        let rows = store.list_rows("lst_1", 0, 10).await.unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 5], "{at}");
        assert_eq!(rows[0], row(1, "ann@x.test"), "{at}");
        assert_eq!(
            store.list_rows("lst_1", 2, 10).await.unwrap().len(),
            1,
            "{at}"
        );
        assert_eq!(
            store.count_list_rows("lst_1", 1, 5).await.unwrap(),
            2,
            "{at}"
        );

        let counts = ListCounts {
            rows: 6,
            rejected: 1,
            duplicates: 2,
            recipients: 3,
        };
        let errors = [RowError {
            line: 4,
            error: "address is missing".into(),
        }];
        store
            .update_list("lst_1", "ready", &counts, &errors)
            .await
            .unwrap();
        let list = store.list("acme", "lst_1").await.unwrap().unwrap();
        assert_eq!(
            (
                list.state.as_str(),
                list.rows,
                list.recipients,
                list.errors.as_slice()
            ),
            ("ready", 6, 3, &errors[..]),
            "{at}"
        );
        assert!(
            store.list("other", "lst_1").await.unwrap().is_none(),
            "{at}"
        );
    }
}

#[tokio::test]
async fn one_lease_holder_expands_a_campaign_until_it_is_paused_or_cancelled() {
    for (store, _guard) in stores("campaigns").await {
        let at = store.location().to_string();
        store
            .create_campaign(&campaign("cmp_1", "acme", "lst_1"))
            .await
            .unwrap();
        assert_eq!(store.due_campaigns("a").await.unwrap(), ["cmp_1"], "{at}");
        assert!(
            store.take_campaign("cmp_1", "a", 60_000).await.unwrap(),
            "{at}"
        );
        assert!(
            !store.take_campaign("cmp_1", "b", 60_000).await.unwrap(),
            "{at}"
        );
        assert!(store.due_campaigns("b").await.unwrap().is_empty(), "{at}");

        let batch = Progress {
            done_seq: 1000,
            expanded: 1000,
            suppressed: 3,
            failed: 1,
            last_error: Some("/templateData: missing".into()),
        };
        let now = store.advance_campaign("cmp_1", "a", &batch, 60_000).await;
        assert_eq!(now.unwrap().as_deref(), Some(state::SENDING), "{at}");
        let other = store.advance_campaign("cmp_1", "b", &batch, 60_000).await;
        assert_eq!(other.unwrap(), None, "{at}");
        let c = store
            .campaign(Some("acme"), "cmp_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.state.as_str(), c.done_seq, c.queued()),
            (state::SENDING, 1000, 996),
            "{at}"
        );
        assert!(
            store
                .campaign(Some("other"), "cmp_1")
                .await
                .unwrap()
                .is_none(),
            "{at}"
        );

        let pause = [state::SCHEDULED, state::SENDING];
        assert!(
            store
                .set_campaign_state(Some("acme"), "cmp_1", &pause, state::PAUSED)
                .await
                .unwrap(),
            "{at}"
        );
        // The batch written as the pause came is recorded; the state says stop.
        let second = Progress {
            done_seq: 2000,
            ..batch
        };
        let now = store.advance_campaign("cmp_1", "a", &second, 60_000).await;
        assert_eq!(now.unwrap().as_deref(), Some(state::PAUSED), "{at}");
        let c = store.campaign(None, "cmp_1").await.unwrap().unwrap();
        assert_eq!((c.done_seq, c.expanded), (2000, 2000), "{at}");
        assert!(
            !store.take_campaign("cmp_1", "a", 60_000).await.unwrap(),
            "{at}"
        );
        store.release_campaign("cmp_1", "a").await.unwrap();
        assert!(
            !store
                .set_campaign_state(Some("acme"), "cmp_1", &pause, state::PAUSED)
                .await
                .unwrap(),
            "{at}"
        );

        assert!(
            store
                .set_campaign_state(None, "cmp_1", &[state::PAUSED], state::SCHEDULED)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(
            store.take_campaign("cmp_1", "b", 60_000).await.unwrap(),
            "{at}"
        );
        assert!(store.finish_campaign("cmp_1", "b").await.unwrap(), "{at}");
        let c = store.campaign(None, "cmp_1").await.unwrap().unwrap();
        assert_eq!(c.state, state::SENT, "{at}");
        assert!(c.finished_at_ms.is_some(), "{at}");
        let any = [state::SCHEDULED, state::SENDING, state::PAUSED];
        assert!(
            !store
                .set_campaign_state(None, "cmp_1", &any, state::CANCELLED)
                .await
                .unwrap(),
            "{at}"
        );

        store
            .create_campaign(&campaign("cmp_2", "acme", "lst_1"))
            .await
            .unwrap();
        assert!(
            store
                .set_campaign_state(None, "cmp_2", &any, state::CANCELLED)
                .await
                .unwrap(),
            "{at}"
        );
        assert!(store.due_campaigns("a").await.unwrap().is_empty(), "{at}");
        let listed: Vec<String> = store
            .campaigns(Some("acme"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed.len(), 2, "{at}");
    }
}

#[test]
fn a_sent_campaign_can_still_be_paused_or_cancelled_but_nothing_leaves_cancelled() {
    let allowed =
        |action: &str, from: &str| transition(action).is_some_and(|(f, _)| f.contains(&from));
    assert!(allowed("pause", state::SENT) && allowed("cancel", state::SENT));
    assert!(allowed("resume", state::PAUSED) && !allowed("resume", state::SENT));
    for action in ["pause", "resume", "cancel"] {
        assert!(!allowed(action, state::CANCELLED), "{action}");
    }
    assert_eq!(transition("resume").unwrap().1, state::SCHEDULED);
    assert!(transition("restart").is_none());
}

#[tokio::test]
async fn an_ab_test_waits_after_its_sample_and_keeps_its_first_winner() {
    for (store, _guard) in stores("ab_tests").await {
        let at = store.location().to_string();
        store
            .create_campaign(&campaign("cmp_ab", "acme", "lst_1"))
            .await
            .unwrap();
        assert!(
            store.take_campaign("cmp_ab", "a", 60_000).await.unwrap(),
            "{at}"
        );
        let far = 4_000_000_000_000;
        assert!(store.start_test("cmp_ab", "a", far).await.unwrap(), "{at}");
        assert!(!store.start_test("cmp_ab", "a", far).await.unwrap(), "{at}");
        let c = store.campaign(None, "cmp_ab").await.unwrap().unwrap();
        assert_eq!(
            (c.state.as_str(), c.phase, c.done_seq, c.test_ends_at_ms),
            (state::TESTING, 1, 0, Some(far)),
            "{at}"
        );
        // Not due while the test runs, for anyone.
        assert!(store.due_campaigns("b").await.unwrap().is_empty(), "{at}");
        assert!(
            !store.take_campaign("cmp_ab", "b", 60_000).await.unwrap(),
            "{at}"
        );

        let first = store.set_winner("cmp_ab", "bold").await.unwrap();
        let second = store.set_winner("cmp_ab", "plain").await.unwrap();
        assert_eq!(
            (first.as_deref(), second.as_deref()),
            (Some("bold"), Some("bold")),
            "{at}"
        );

        // A test that has ended is due again, for its second phase.
        store
            .create_campaign(&campaign("cmp_ended", "acme", "lst_1"))
            .await
            .unwrap();
        assert!(
            store.take_campaign("cmp_ended", "a", 60_000).await.unwrap(),
            "{at}"
        );
        assert!(store.start_test("cmp_ended", "a", 1).await.unwrap(), "{at}");
        assert_eq!(
            store.due_campaigns("b").await.unwrap(),
            ["cmp_ended"],
            "{at}"
        );
        assert!(
            store.take_campaign("cmp_ended", "b", 60_000).await.unwrap(),
            "{at}"
        );
    }
}
