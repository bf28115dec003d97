//! Inbound reports into events, on a real spool: a DSN to a VERP return path becomes
//! a `bounced` event of the recipient it was for, with the classifier's reason, the
//! remote's reply and the message's metadata from the history; a report whose body
//! names nobody still maps back by the token; a delay warning is a `deferred` event;
//! a feedback-loop report sent to another address at the bounce domain maps back by
//! the return path it quotes; made-up tokens, auto-replies and strangers' mail record
//! nothing; a history that cannot be asked refuses the report (to be sent again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use postroad_bounce::verp::{ReturnPaths, Verp};
use postroad_queue::{
    DeliveryEvent, EventKind, MessageId, Metadata, Queue, Response, Spool, SpoolConfig,
};
use postroad_webhooks::{IntakeError, KnownRecipient, LookupError, MessageLookup, Reports};

const ID: u128 = 0x019a_c4d5_e3b8_7c1d_9a4f_0e2b_6c3d_8a71;

/// The history, as far as these tests need it.
#[derive(Default)]
struct History {
    messages: Mutex<HashMap<MessageId, Vec<KnownRecipient>>>,
    down: Mutex<bool>,
}

#[async_trait]
impl MessageLookup for History {
    async fn recipients(&self, id: MessageId) -> Result<Vec<KnownRecipient>, LookupError> {
        if *self.down.lock().unwrap() {
            return Err(LookupError("connection refused".into()));
        }
        Ok(self
            .messages
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default())
    }
}

struct Bed {
    _dir: tempfile::TempDir,
    spool: Arc<Spool>,
    history: Arc<History>,
    paths: Arc<ReturnPaths>,
    reports: Reports,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(SpoolConfig::new(dir.path())).unwrap());
    let history = Arc::new(History::default());
    let meta = Metadata {
        email_type: Some("welcome".into()),
        tenant: Some("acme".into()),
        ..Metadata::default()
    };
    history.messages.lock().unwrap().insert(
        MessageId::from_u128(ID),
        ["ann@example.net", "bob@example.net"]
            .iter()
            .map(|r| KnownRecipient {
                recipient: r.to_string(),
                sender: "app@src.test".into(),
                meta: meta.clone(),
            })
            .collect(),
    );
    let verp = Verp::new(b"a secret of at least 16 bytes", "bounces").unwrap();
    let paths = Arc::new(ReturnPaths::new(verp, &["bounce.src.test".into()]).unwrap());
    let reports = Reports::new(paths.clone(), spool.clone(), history.clone());
    Bed {
        _dir: dir,
        spool,
        history,
        paths,
        reports,
    }
}

impl Bed {
    fn path(&self, recipient: &str) -> String {
        self.paths.return_path(ID, recipient)
    }

    async fn events(&self) -> Vec<DeliveryEvent> {
        self.spool
            .events_after(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }
}

fn dsn(to: &str, rcpt: &str, action: &str, status: &str, diagnostic: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
Remote-MTA: dns; mail.example.net\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n\
--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: app@src.test\r\nSubject: Welcome\r\n\r\n--b--\r\n"
    )
}

#[tokio::test]
async fn a_dsn_to_a_return_path_bounces_the_recipient_it_was_for() {
    let bed = bed();
    let to = bed.path("bob@example.net");
    let report = dsn(
        &to,
        "bob@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
    );
    let got = bed.reports.receive(&[to], report.as_bytes()).await.unwrap();
    assert_eq!((got.recorded, got.unverified, got.ignored), (1, 0, 0));
    let events = bed.events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Bounced);
    assert_eq!(e.message_id, MessageId::from_u128(ID));
    assert_eq!(e.recipient, "bob@example.net");
    assert_eq!(e.domain, "example.net");
    assert_eq!(e.sender, "app@src.test");
    assert_eq!(e.meta.tenant.as_deref(), Some("acme"));
    assert_eq!(e.reason.as_deref(), Some("userunknown"));
    let Some(Response::Remote(reply)) = &e.reply else {
        panic!("{:?}", e.reply);
    };
    assert_eq!(
        (reply.code, reply.enhanced.map(|c| c.to_string())),
        (550, Some("5.1.1".into()))
    );
    assert!(reply.text.contains("User unknown"), "{reply:?}");
}

#[tokio::test]
async fn a_report_that_names_nobody_maps_back_by_its_token() {
    let bed = bed();
    let to = bed.path("ann@example.net");
    // An old MTA's report: no DSN, no address, only words.
    let report = format!(
        "From: postmaster@mx.example.net\r\nTo: {to}\r\nSubject: Mail delivery failed\r\n\r\n\
This message was created automatically by mail delivery software.\r\n\r\n\
A message that you sent could not be delivered to one or more of its recipients.\r\n\
The mailbox is full: mailbox full, quota exceeded\r\n"
    );
    let got = bed.reports.receive(&[to], report.as_bytes()).await.unwrap();
    assert_eq!(got.recorded, 1, "{got:?}");
    let events = bed.events().await;
    assert_eq!(events[0].recipient, "ann@example.net");
    assert_eq!(events[0].kind, EventKind::Bounced);
    assert_eq!(events[0].reason.as_deref(), Some("mailboxfull"));
    assert_eq!(events[0].meta.email_type.as_deref(), Some("welcome"));
}

#[tokio::test]
async fn a_delay_warning_is_a_deferral() {
    let bed = bed();
    let to = bed.path("bob@example.net");
    let report = dsn(
        &to,
        "bob@example.net",
        "delayed",
        "4.2.2",
        "452 4.2.2 Mailbox full",
    );
    bed.reports.receive(&[to], report.as_bytes()).await.unwrap();
    let events = bed.events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].kind, EventKind::Deferred);
    assert_eq!(events[0].reason.as_deref(), Some("mailboxfull"));
}

#[tokio::test]
async fn a_complaint_maps_back_by_the_return_path_it_quotes() {
    let bed = bed();
    let quoted = bed.path("ann@example.net");
    let report = format!(
        "From: fbl@isp.example\r\nTo: fbl@bounce.src.test\r\nSubject: Complaint\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\r\n\r\n\
--f\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\r\n\
--f\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n\
Original-Rcpt-To: ann@example.net\r\n\r\n\
--f\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{quoted}>\r\nFrom: app@src.test\r\nTo: ann@example.net\r\n\
Subject: Welcome\r\n\r\nHi.\r\n--f--\r\n"
    );
    let got = bed
        .reports
        .receive(&["fbl@bounce.src.test".into()], report.as_bytes())
        .await
        .unwrap();
    assert_eq!(got.recorded, 1, "{got:?}");
    let events = bed.events().await;
    assert_eq!(events[0].kind, EventKind::Complained);
    assert_eq!(events[0].recipient, "ann@example.net");
    assert_eq!(events[0].reason.as_deref(), Some("abuse"));
}

#[tokio::test]
async fn made_up_tokens_auto_replies_and_strangers_record_nothing() {
    let bed = bed();
    // A token of another key: its MAC names nobody.
    let stranger = Verp::new(b"somebody else's secret key", "bounces").unwrap();
    let forged = stranger.return_path(ID, "bob@example.net", "bounce.src.test");
    let report = dsn(
        &forged,
        "bob@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 no",
    );
    let got = bed
        .reports
        .receive(&[forged], report.as_bytes())
        .await
        .unwrap();
    assert_eq!((got.recorded, got.unverified), (0, 1));
    // An out-of-office reply to a real return path.
    let to = bed.path("bob@example.net");
    let auto = format!(
        "From: bob@example.net\r\nTo: {to}\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\n\
I am away until Monday and will reply when I am back.\r\n"
    );
    let got = bed.reports.receive(&[to], auto.as_bytes()).await.unwrap();
    assert_eq!((got.recorded, got.ignored), (0, 1));
    // Mail for the bounce domain without any return path of ours.
    let plain = dsn(
        "bounces@bounce.src.test",
        "bob@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 no",
    );
    let got = bed
        .reports
        .receive(&["bounces@bounce.src.test".into()], plain.as_bytes())
        .await
        .unwrap();
    assert_eq!((got.recorded, got.ignored), (0, 1));
    assert!(bed.events().await.is_empty());
    assert!(bed.reports.accepts("anything@Bounce.Src.Test"));
    assert!(!bed.reports.accepts("bob@example.net"));
}

#[tokio::test]
async fn a_history_that_cannot_be_asked_refuses_the_report() {
    let bed = bed();
    *bed.history.down.lock().unwrap() = true;
    let to = bed.path("bob@example.net");
    let report = dsn(&to, "bob@example.net", "failed", "5.1.1", "550 5.1.1 no");
    let err = bed
        .reports
        .receive(std::slice::from_ref(&to), report.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, IntakeError::Lookup(_)), "{err}");
    assert!(bed.events().await.is_empty());
    // Sent again once it is back: recorded once.
    *bed.history.down.lock().unwrap() = false;
    let got = bed.reports.receive(&[to], report.as_bytes()).await.unwrap();
    assert_eq!(got.recorded, 1);
    assert_eq!(bed.events().await.len(), 1);
}
