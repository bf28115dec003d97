//! Assembles bounces: decides whether a message is a non-delivery report and gathers the
//! evidence per recipient from the DSN part, the text blocks and the headers.

use crate::dsn::{self, DsnRecipient, MAX_RECIPIENTS};
use crate::message::{Mail, parse_fields};
use crate::shapes;
use crate::text::{self, Block};
use crate::util::{find_addresses, first_address};
use crate::{Evidence, Reason, Recipient, header_address};

/// Words in a bounce's `From:`.
const FROM_WORDS: &[&str] = &[
    "mailer-daemon",
    "mailer daemon",
    "postmaster",
    "mail delivery",
    "maildelivery",
    "mail administrator",
    "mail system",
    "mailsystem",
    "delivery subsystem",
    "mail-daemon",
    "mdaemon",
    "mail router",
    "smtp gateway",
    "post_master",
];

/// Words in a bounce's `Subject:`.
const SUBJECT_WORDS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status",
    "delivery notification",
    "returned mail",
    "return mail",
    "failure notice",
    "delivery fail",
    "delivery failure",
    "failed delivery",
    "delivery has failed",
    "non-delivery",
    "nondelivery",
    "non delivery",
    "not delivered",
    "could not be delivered",
    "couldn't be delivered",
    "delivery problem",
    "mail delivery",
    "mail system error",
    "permanent failure",
    "delayed mail",
    "delivery delayed",
    "warning: could not send",
    "message not delivered",
    "returned to sender",
    "error sending",
    "rejected",
    "bounce",
    "not be delivered",
    "delivery report",
    "unzustellbar",
    "nicht zustellbar",
    "non remis",
    "no entregado",
    "mail error",
    "mail failure",
    "could not send",
    "there was an error",
];

/// Phrases in a bounce's text when the headers do not say enough.
const BODY_WORDS: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "wasn't able to deliver",
    "unable to deliver",
    "delivery has failed",
    "delivery to the following recipient",
    "following address(es) failed",
    "permanent error",
    "permanent fatal error",
    "undeliverable",
    "failed to deliver",
    "delivery failed",
    "did not reach the following recipient",
    "message was not delivered",
    "returned to sender",
    "your message to",
    "delivery errors",
    "fatal errors",
    "transcript of session",
    "error message below",
    "rejected recipient",
    "does not like recipient",
    "unable to deliver mail",
];

/// Whether the headers and text say this is a non-delivery report.
fn looks_like_bounce(mail: &Mail, report: &str) -> bool {
    if mail.has("x-failed-recipients") {
        return true;
    }
    let from = mail.header("from").unwrap_or("").to_ascii_lowercase();
    let subject = mail.header("subject").unwrap_or("").to_ascii_lowercase();
    let from_hit = FROM_WORDS.iter().any(|w| from.contains(w));
    let subject_hit = SUBJECT_WORDS.iter().any(|w| subject.contains(w));
    let return_path_null = mail.header("return-path").is_some_and(|v| v.trim() == "<>");
    let lower = report.to_ascii_lowercase();
    let body_hit = BODY_WORDS.iter().any(|w| lower.contains(w));
    let smtp_evidence = lower.contains("rcpt to")
        || crate::util::find_status(&lower).is_some_and(|s| !s.starts_with('2'));
    (from_hit && (subject_hit || body_hit || smtp_evidence))
        || (subject_hit && (body_hit || return_path_null))
        || (return_path_null && body_hit)
}

/// The recipients of a bounce, or `None` when `mail` is not one. The flag says whether
/// the recipients were named by the report itself (DSN fields or report text) rather
/// than guessed from headers. `known`: who the report is about when its return path
/// said so, for a report that names nobody.
pub(crate) fn recipients(mail: &Mail, known: Option<&str>) -> Option<(Vec<Recipient>, bool)> {
    let mut reports: Vec<&str> = Vec::new();
    let mut inline_original = "";
    for t in &mail.texts {
        let (report, original) = text::split_original(t);
        reports.push(report);
        if inline_original.is_empty() {
            inline_original = original;
        }
    }
    let report_text = reports.join("\n");

    let mut dsn_rcpts: Vec<DsnRecipient> = Vec::new();
    let mut reporter = String::new();
    let wrapped: Vec<&String> = mail
        .texts
        .iter()
        .filter(|t| dsn::looks_like_dsn(t))
        .collect();
    let bodies: Vec<&String> = if mail.dsn.is_empty() {
        wrapped
    } else {
        mail.dsn.iter().collect()
    };
    for body in bodies {
        let d = dsn::parse(body);
        if reporter.is_empty() {
            reporter = d.reporting_mta;
        }
        dsn_rcpts.extend(d.recipients);
    }
    if reporter.is_empty() {
        let from = header_address(mail.header("from")).unwrap_or_default();
        reporter = from.rsplit('@').next().unwrap_or("").to_owned();
    }
    dsn_rcpts.truncate(MAX_RECIPIENTS);
    if dsn_rcpts.is_empty() && !looks_like_bounce(mail, &report_text) {
        return None;
    }

    let mut exclude: Vec<String> = Vec::new();
    exclude.extend(header_address(mail.header("to")));
    exclude.extend(header_address(mail.header("from")));
    let (blocks, preamble) = text::blocks(&report_text, &exclude);
    let preamble_hint = shapes::shape_hint(&preamble.to_lowercase());

    let mut out: Vec<Evidence> = Vec::new();
    let named = !dsn_rcpts.is_empty() || !blocks.is_empty();
    if !dsn_rcpts.is_empty() {
        let single = dsn_rcpts.len() == 1 && blocks.len() == 1;
        for r in &dsn_rcpts {
            let block = blocks
                .iter()
                .find(|b| b.recipient == r.address() || b.recipient == r.original_recipient)
                .or_else(|| single.then(|| &blocks[0]));
            out.push(from_dsn(r, block, &preamble, preamble_hint));
        }
    } else if !blocks.is_empty() {
        for b in &blocks {
            out.push(from_block(b, &preamble, preamble_hint));
        }
    } else {
        let diag = text::diagnostic_of(&report_text);
        let mut fallback = fallback_recipients(mail, inline_original, &exclude);
        if fallback.is_empty()
            && let Some(known) = known.and_then(first_address)
        {
            fallback.push(known);
        }
        for rcpt in fallback {
            out.push(Evidence {
                recipient: rcpt,
                diagnostic: diag.clone(),
                hint: shapes::shape_hint(&diag.to_lowercase()),
                ..Evidence::default()
            });
        }
    }
    if out.is_empty() {
        return None;
    }
    for e in &mut out {
        e.reporter.clone_from(&reporter);
    }
    Some((out.into_iter().map(Evidence::finish).collect(), named))
}

fn from_dsn(
    r: &DsnRecipient,
    block: Option<&Block>,
    preamble: &str,
    preamble_hint: Option<Reason>,
) -> Evidence {
    let block_text = block.map(|b| b.text.as_str()).unwrap_or("");
    let diagnostic = if r.diagnostic.trim().is_empty() {
        text::diagnostic_of(block_text)
    } else {
        r.diagnostic.clone()
    };
    let lower = format!("{} {}", r.diagnostic, block_text).to_lowercase();
    Evidence {
        recipient: r.address().to_owned(),
        status: r.status.clone(),
        diagnostic,
        context: block_text.to_owned(),
        diag_type: r.diag_type.clone(),
        action: r.action.clone(),
        remote_mta: r.remote_mta.clone(),
        hint: shapes::shape_hint(&lower).or_else(|| preamble_hint.filter(|_| !preamble.is_empty())),
        ..Evidence::default()
    }
}

fn from_block(b: &Block, preamble: &str, preamble_hint: Option<Reason>) -> Evidence {
    let mut diagnostic = text::diagnostic_of(&b.text);
    // Drop the address itself from the start of the diagnostic.
    if let Some(rest) = diagnostic.strip_prefix(&format!("<{}>", b.recipient)) {
        diagnostic = rest.trim_start_matches([':', '.', ' ']).to_owned();
    } else if diagnostic.to_lowercase().starts_with(&b.recipient) {
        diagnostic = diagnostic[b.recipient.len()..]
            .trim_start_matches([':', '.', ' '])
            .to_owned();
    }
    let lower = b.text.to_lowercase();
    Evidence {
        recipient: b.recipient.clone(),
        diagnostic,
        context: preamble.to_owned(),
        hint: shapes::shape_hint(&lower).or(preamble_hint),
        ..Evidence::default()
    }
}

/// Recipients named outside the report text: `X-Failed-Recipients:`, then the `To:`
/// of the returned message.
fn fallback_recipients(mail: &Mail, inline_original: &str, exclude: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (n, v) in &mail.headers {
        if n == "x-failed-recipients" {
            for a in find_addresses(v, MAX_RECIPIENTS) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    if !out.is_empty() {
        return out;
    }
    let original = mail.original.as_deref().unwrap_or(inline_original);
    let fields = parse_fields(original, 200);
    for key in ["to", "x-original-to", "delivered-to", "envelope-to"] {
        if let Some((_, v)) = fields.iter().find(|(n, _)| n == key) {
            out.extend(
                find_addresses(v, 16)
                    .into_iter()
                    .filter(|a| !exclude.contains(a)),
            );
            if !out.is_empty() {
                break;
            }
        }
    }
    out
}

/// Subjects of automatic replies.
const AUTO_SUBJECTS: &[&str] = &[
    "auto:",
    "automatic reply",
    "autoreply",
    "auto-reply",
    "auto reply",
    "autoresponse",
    "auto response",
    "out of office",
    "out of the office",
    "away until",
    "on vacation",
    "abwesenheit",
    "absence",
    "réponse automatique",
];

/// An automatic reply (out of office), reported for its sender.
pub(crate) fn vacation(mail: &Mail) -> Option<Recipient> {
    let auto = mail
        .header("auto-submitted")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("auto-replied"))
        || mail.has("x-autoreply")
        || mail.has("x-autorespond")
        || mail
            .header("precedence")
            .is_some_and(|v| v.eq_ignore_ascii_case("auto_reply"));
    let subject = mail.header("subject").unwrap_or("").to_lowercase();
    let subject_hit = AUTO_SUBJECTS.iter().any(|w| subject.contains(w));
    let body = mail
        .texts
        .first()
        .map(|t| t.to_lowercase())
        .unwrap_or_default();
    let body_hit = crate::phrases::any(&body, crate::phrases::VACATION);
    if !(subject_hit || (auto && body_hit)) {
        return None;
    }
    let from = first_address(mail.header("from")?)?;
    Some(Recipient {
        recipient: from,
        reason: Reason::Vacation,
        hardbounce: false,
        deliverystatus: String::new(),
        replycode: String::new(),
        diagnostic: crate::util::one_line(&body, 200),
        remote_mta: None,
        command: None,
        action: None,
        feedbacktype: None,
    })
}
