//! A campaign's expansion after a crash that fell between a batch's queue write and its
//! record in the store: the queue's checkpoint is ahead of the store's `done_seq`, and
//! the expansion goes on after the checkpoint, so the batch is neither queued again
//! nor lost from the counts.

mod common;

use common::TestApi;
use postroad_api::campaigns::spec::CampaignRequest;
use postroad_api::store::campaigns::{CampaignRecord, state};
use postroad_queue::{Checkpoint, Envelope, Queue, Recipient};
use serde_json::json;

const ROWS: usize = 2500;
const WRITTEN: usize = 1000;

#[test]
fn an_expansion_goes_on_after_the_queues_checkpoint_when_the_store_lags() {
    let api = TestApi::start(|_| {});
    let template = json!({"subject": "Hello {{ first }}", "text": "Hi.", "from": "news@src.test"});
    let put = api.call(
        "PUT",
        "/v1/templates/news",
        Some(("application/json", template.to_string().into_bytes())),
        &[],
    );
    assert_eq!(put.status, 201, "{:?}", put.json);
    let rows: String = (0..ROWS)
        .map(|i| format!("{{\"address\":\"r{i}@x.test\",\"data\":{{\"first\":\"R{i}\"}}}}\n"))
        .collect();
    let list = api.call(
        "POST",
        "/v1/lists",
        Some(("application/x-ndjson", rows.into_bytes())),
        &[],
    );
    assert_eq!(
        (list.status, &list.json["recipients"]),
        (201, &json!(ROWS)),
        "{:?}",
        list.json
    );
    let list_id = list.json["id"].as_str().unwrap().to_string();

    // A paused campaign whose first batch is in the queue with its checkpoint, though
    // the store never heard of it.
    let request: CampaignRequest =
        serde_json::from_value(json!({"emailType": "news", "list": list_id})).unwrap();
    let spec = request.check(None).unwrap().spec;
    let id = "cmp_lagging".to_string();
    let record = CampaignRecord {
        id: id.clone(),
        tenant: String::new(),
        name: "Lagging".into(),
        list_id,
        spec: serde_json::to_string(&spec).unwrap(),
        state: state::PAUSED.into(),
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
    };
    let written: Vec<_> = (0..WRITTEN)
        .map(|i| {
            let mut envelope = Envelope::new(
                "news@src.test",
                vec![Recipient::new(format!("r{i}@x.test"))],
                "127.0.0.1".parse().unwrap(),
            );
            envelope.meta.campaign = Some(id.clone());
            (
                envelope,
                bytes::Bytes::from_static(b"Subject: first batch\r\n\r\nHi.\r\n"),
            )
        })
        .collect();
    let checkpoint = Checkpoint {
        name: postroad_api::campaigns::expand::checkpoint_name(&id, 0),
        value: WRITTEN as u64,
        previous: None,
    };
    api.runtime.block_on(async {
        api.store.create_campaign(&record).await.unwrap();
        api.spool
            .enqueue_checkpointed(written, checkpoint)
            .await
            .unwrap();
    });

    let resumed = api.call("POST", &format!("/v1/campaigns/{id}/resume"), None, &[]);
    assert_eq!(resumed.status, 200, "{:?}", resumed.json);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let c = api
            .call("GET", &format!("/v1/campaigns/{id}"), None, &[])
            .json;
        if c["state"] == "sent" {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "not sent: {c}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (&done["expansion"]["expanded"], &done["expansion"]["queued"]),
        (&json!(ROWS), &json!(ROWS)),
        "{done}"
    );

    let envelopes = api.runtime.block_on(api.spool.list(ROWS * 2)).unwrap();
    let mut recipients: Vec<String> = envelopes
        .iter()
        .flat_map(|e| e.recipients.iter().map(|r| r.address.clone()))
        .collect();
    assert_eq!(
        recipients.len(),
        ROWS,
        "a recipient was queued twice or not at all"
    );
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), ROWS);
    // The rows after the checkpoint were expanded (rendered), the first batch not again.
    let rendered = api
        .runtime
        .block_on(
            api.spool.get(
                envelopes
                    .iter()
                    .find(|e| e.recipients[0].address == "r2000@x.test")
                    .unwrap()
                    .id,
            ),
        )
        .unwrap()
        .unwrap()
        .1;
    assert!(String::from_utf8_lossy(&rendered).contains("Hello R2000"));
    assert_eq!(
        api.runtime
            .block_on(
                api.spool
                    .checkpoint(&postroad_api::campaigns::expand::checkpoint_name(&id, 0))
            )
            .unwrap(),
        None,
        "a finished campaign's checkpoint is cleared"
    );
}
