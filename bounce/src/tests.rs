//! Whole-message tests with small hand-written reports, each in LF, CRLF and CR-only
//! form, and robustness against truncated and garbage input.

use super::*;

/// The three line-ending forms of a message written with LF.
fn forms(lf: &str) -> [Vec<u8>; 3] {
    [
        lf.as_bytes().to_vec(),
        lf.replace('\n', "\r\n").into_bytes(),
        lf.replace('\n', "\r").into_bytes(),
    ]
}

fn check(lf: &str, kind: Kind, want: &[(&str, Reason, bool)]) {
    for (i, raw) in forms(lf).iter().enumerate() {
        let a = analyse(raw);
        assert_eq!(a.kind, kind, "form {i}: {a:?}");
        let got: Vec<(&str, Reason, bool)> = a
            .recipients
            .iter()
            .map(|r| (r.recipient.as_str(), r.reason, r.hardbounce))
            .collect();
        assert_eq!(got, want, "form {i}: {a:?}");
    }
}

const POSTFIX_DSN: &str = "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: sender@example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=\"BND\"

--BND
Content-Type: text/plain

This is the mail system at host mx.example.org.

<tama@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1
    <tama@example.net>: Recipient address rejected: User unknown in local
    recipient table (in reply to RCPT TO command)

<mike@example.net>: host mx.example.net[192.0.2.7] said: 452 4.2.2 Mailbox
    over quota (in reply to RCPT TO command)

--BND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; tama@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <tama@example.net>: Recipient address
    rejected: User unknown in local recipient table

Final-Recipient: rfc822; mike@example.net
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox over quota

--BND
Content-Type: text/rfc822-headers

From: sender@example.org
To: tama@example.net
Subject: hello

--BND--
";

#[test]
fn postfix_dsn() {
    check(
        POSTFIX_DSN,
        Kind::Bounce,
        &[
            ("tama@example.net", Reason::UserUnknown, true),
            ("mike@example.net", Reason::MailboxFull, false),
        ],
    );
    let a = analyse(POSTFIX_DSN.as_bytes());
    let r = &a.recipients[0];
    assert_eq!(
        (r.deliverystatus.as_str(), r.replycode.as_str()),
        ("5.1.1", "550")
    );
    assert_eq!(r.remote_mta.as_deref(), Some("mx.example.net"));
    assert!(
        r.diagnostic
            .contains("User unknown in local recipient table"),
        "{}",
        r.diagnostic
    );
    assert!(!r.diagnostic.contains('\n'));
}

const EXIM_TEXT: &str = "From: Mail Delivery System <Mailer-Daemon@relay.example.org>
To: sender@example.org
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: hachi@example.jp, kuro@example.jp

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  hachi@example.jp
    host mx.example.jp [192.0.2.9]
    SMTP error from remote mail server after end of data:
    550 5.7.1 Message rejected: spam score too high
  kuro@example.jp
    retry timeout exceeded

------ This is a copy of the message, including all the headers. ------

From: sender@example.org
To: hachi@example.jp, kuro@example.jp
Subject: hi
";

#[test]
fn exim_text() {
    check(
        EXIM_TEXT,
        Kind::Bounce,
        &[
            ("hachi@example.jp", Reason::SpamDetected, false),
            ("kuro@example.jp", Reason::Expired, false),
        ],
    );
}

const QMAIL_TEXT: &str = "From: MAILER-DAEMON@mail.example.com
To: sender@example.com
Subject: failure notice

Hi. This is the qmail-send program at mail.example.com.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@nowhere.example>:
Sorry, I couldn't find any host named nowhere.example. (#5.1.2)

--- Below this line is a copy of the message.

To: nobody@nowhere.example
";

#[test]
fn qmail_text() {
    check(
        QMAIL_TEXT,
        Kind::Bounce,
        &[("nobody@nowhere.example", Reason::HostUnknown, true)],
    );
}

const ARF: &str = "From: fbl@isp.example
To: abuse@example.com
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"

--F
Content-Type: text/plain

This is an abuse report.
--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: isp-fbl/1.0
Version: 1
Original-Rcpt-To: <Reader@isp.example>
--F
Content-Type: message/rfc822

From: news@example.com
To: reader@isp.example
Subject: offers

buy
--F--
";

#[test]
fn arf_complaint() {
    check(
        ARF,
        Kind::Complaint,
        &[("reader@isp.example", Reason::Feedback, false)],
    );
    let a = analyse(ARF.as_bytes());
    assert_eq!(a.recipients[0].feedbacktype.as_deref(), Some("abuse"));
}

const VACATION: &str = "From: Tora <tora@example.net>
To: sender@example.com
Subject: Out of Office: hello
Auto-Submitted: auto-replied

I am out of the office until Monday.
";

#[test]
fn auto_reply() {
    check(
        VACATION,
        Kind::AutoReply,
        &[("tora@example.net", Reason::Vacation, false)],
    );
}

const PLAIN: &str = "From: friend@example.com
To: me@example.org
Subject: lunch?

Shall we meet at noon? The report I sent could not be finished in time.
";

const NEWSLETTER: &str = "From: Service <no-reply@service.example>
To: me@example.org
Subject: Release notes

Version 4.2.1 is out; 5.1.1 follows next month.
<support@service.example>: write to us any time.
";

#[test]
fn ordinary_mail_is_left_alone() {
    check(PLAIN, Kind::Other, &[]);
    check(NEWSLETTER, Kind::Other, &[]);
    assert!(!analyse(PLAIN.as_bytes()).is_bounce());
}

#[test]
fn classify_reply_matches_analyse() {
    let (r, hard) = classify_reply(
        Some(550),
        Some("5.1.1"),
        "<a@b.example>: Recipient address rejected: User unknown",
    );
    assert_eq!((r, hard), (Reason::UserUnknown, true));
    let (r, hard) = classify_reply(
        Some(421),
        Some("4.7.0"),
        "Too many connections from your IP, slow down",
    );
    assert_eq!((r, hard), (Reason::RateLimited, false));
}

/// A small deterministic generator (no external crates).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn never_panics_on_truncated_or_garbage_input() {
    for sample in [POSTFIX_DSN, EXIM_TEXT, QMAIL_TEXT, ARF, VACATION] {
        for raw in forms(sample) {
            for cut in 0..raw.len() {
                let _ = analyse(&raw[..cut]);
            }
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let alphabet: &[u8] =
        b"<>@.:;- \r\n\t5.1.1 550 Final-Recipient: rfc822; Status: --BND\xff\xfe\x00=?utf-8?B?";
    for len in [0usize, 1, 2, 7, 64, 512, 4096] {
        for _ in 0..40 {
            let junk: Vec<u8> = (0..len)
                .map(|_| alphabet[(xorshift(&mut seed) as usize) % alphabet.len()])
                .collect();
            let _ = analyse(&junk);
            let mut mixed = POSTFIX_DSN.as_bytes().to_vec();
            let at = (xorshift(&mut seed) as usize) % mixed.len();
            mixed.splice(at..at, junk.iter().copied());
            let _ = analyse(&mixed);
        }
    }
    let _ = classify_reply(Some(999), Some("9.9.99999"), "\u{0}\u{ffff}");
    let _ = classify_reply(None, Some(""), "");
}

#[test]
fn output_is_bounded() {
    let mut msg = String::from("From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\n\n");
    for i in 0..3000 {
        msg.push_str(&format!(
            "<user{i}@example.net>: 550 5.1.1 user unknown {}\n",
            "x".repeat(50)
        ));
    }
    let a = analyse(msg.as_bytes());
    assert!(
        a.recipients.len() <= dsn::MAX_RECIPIENTS,
        "{}",
        a.recipients.len()
    );
    assert!(
        a.recipients
            .iter()
            .all(|r| r.diagnostic.len() <= MAX_DIAGNOSTIC)
    );
}
