//! Bounce, complaint and auto-reply classification for inbound reports.
//!
//! A pure library: no I/O, no network, no async. [`analyse`] takes one whole message
//! (headers and body; LF, CRLF or CR line endings) and says whether it is a bounce (a
//! DSN or any non-delivery report), a complaint (an ARF feedback report) or an
//! automatic reply, and for each failed recipient why it failed. [`classify_reply`]
//! labels a synchronous SMTP reply with the same classifier. [`verp`] makes and reads
//! the return paths that map a bounce back to its message and recipient.
//!
//! Nothing panics on any input; every loop and buffer is bounded (parts examined,
//! recipients, diagnostic length).

mod arf;
mod bounce;
mod classify;
mod dsn;
mod message;
mod phrases;
mod reason;
mod rhost;
mod ses;
mod shapes;
mod text;
mod util;
pub mod verp;

use serde::{Deserialize, Serialize};

pub use reason::{Reason, classify_reply};

use classify::Signal;
use util::{MAX_DIAGNOSTIC, find_reply, find_status, first_address, one_line};

/// What kind of message was analysed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A delivery status notification or other non-delivery report.
    Bounce,
    /// A complaint: an ARF feedback report or a forwarded abuse complaint.
    Complaint,
    /// An automatic reply (RFC 3834), such as an out-of-office message.
    AutoReply,
    /// Anything else; no recipients are reported.
    Other,
}

/// One recipient of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The recipient address, lowercased.
    pub recipient: String,
    /// Why delivery failed (or `feedback`, `vacation`, `delivered`).
    pub reason: Reason,
    /// Whether the address itself is bad (suppress it): user or host unknown, moved,
    /// permanently not accepting mail.
    pub hardbounce: bool,
    /// RFC 3463 enhanced status code (`5.1.1`), empty when unknown.
    pub deliverystatus: String,
    /// SMTP reply code (`550`), empty when unknown.
    pub replycode: String,
    /// The remote MTA's text, on one line, at most 1000 bytes.
    pub diagnostic: String,
    /// The remote MTA, when the report names it.
    pub remote_mta: Option<String>,
    /// The failed SMTP command (`RCPT`, `MAIL`, `DATA`, ...), when known.
    pub command: Option<String>,
    /// The DSN's `Action` (`failed`, `delayed`, `delivered`, `relayed`, `expanded`),
    /// when the report gives one: a `delayed` report is a warning, not a bounce.
    pub action: Option<String>,
    /// For complaints: the feedback type (`abuse`, `fraud`, `opt-out`, `virus`, ...).
    pub feedbacktype: Option<String>,
}

/// The result of [`analyse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// What the message is.
    pub kind: Kind,
    /// The recipients it reports on, in the report's order; empty for [`Kind::Other`].
    pub recipients: Vec<Recipient>,
}

impl Analysis {
    /// Whether the message is a report (bounce, complaint or auto-reply) with at least
    /// one recipient.
    pub fn is_bounce(&self) -> bool {
        self.kind != Kind::Other && !self.recipients.is_empty()
    }

    fn other() -> Self {
        Analysis {
            kind: Kind::Other,
            recipients: Vec::new(),
        }
    }
}

/// Analyses one whole message.
///
/// An mbox (messages each starting with a `From ` line) is analysed message by message
/// and the recipients are reported together.
pub fn analyse(raw: &[u8]) -> Analysis {
    analyse_with(raw, None)
}

/// Analyses a report already known to be about `recipient` (it came to that
/// recipient's VERP return path): a bounce that names no recipient at all is read as
/// being about it, instead of as no report.
pub fn analyse_for(raw: &[u8], recipient: &str) -> Analysis {
    analyse_with(raw, Some(recipient))
}

fn analyse_with(raw: &[u8], known: Option<&str>) -> Analysis {
    let raw = util::normalise_newlines(raw);
    let messages = split_mbox(&raw);
    if messages.len() <= 1 {
        return analyse_one(messages.first().copied().unwrap_or(&raw), 0, known);
    }
    let mut out = Analysis::other();
    for m in messages {
        let a = analyse_one(m, 0, known);
        if out.kind == Kind::Other {
            out.kind = a.kind;
        }
        let room = dsn::MAX_RECIPIENTS.saturating_sub(out.recipients.len());
        out.recipients.extend(a.recipients.into_iter().take(room));
    }
    out
}

/// Most messages read from one mbox.
const MAX_MBOX: usize = 16;

/// Splits an mbox into messages (without their `From ` lines); a single message is
/// returned as is.
fn split_mbox(raw: &[u8]) -> Vec<&[u8]> {
    if !raw.starts_with(b"From ") {
        return vec![raw];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let finder = memchr::memmem::Finder::new(b"\nFrom ");
    let mut pos = 0;
    loop {
        let next = finder.find(&raw[pos..]).map(|p| pos + p + 1);
        let end = next.unwrap_or(raw.len());
        let chunk = &raw[start..end];
        let body = memchr::memchr(b'\n', chunk)
            .map(|p| &chunk[p + 1..])
            .unwrap_or_default();
        if !body.is_empty() {
            out.push(body);
        }
        match next {
            Some(n) if out.len() < MAX_MBOX => {
                start = n;
                pos = n;
            }
            _ => break,
        }
    }
    out
}

fn analyse_one(raw: &[u8], depth: u8, known: Option<&str>) -> Analysis {
    let Some(mail) = message::parse(raw) else {
        return Analysis::other();
    };
    for t in &mail.texts {
        if let Some((kind, recipients)) = ses::parse(t) {
            return Analysis { kind, recipients };
        }
    }
    if arf::is_complaint(&mail) {
        let recipients: Vec<Recipient> = arf::complaints(&mail)
            .into_iter()
            .map(|c| Recipient {
                recipient: c.recipient,
                reason: Reason::Feedback,
                hardbounce: false,
                deliverystatus: String::new(),
                replycode: String::new(),
                diagnostic: String::new(),
                remote_mta: (!c.reporting_mta.is_empty()).then_some(c.reporting_mta),
                command: None,
                action: None,
                feedbacktype: Some(c.feedbacktype),
            })
            .collect();
        if !recipients.is_empty() {
            return Analysis {
                kind: Kind::Complaint,
                recipients,
            };
        }
    }
    let outer = bounce::recipients(&mail, known);
    if let Some((recipients, true)) = outer {
        return Analysis {
            kind: Kind::Bounce,
            recipients,
        };
    }
    // A forwarded report: the attached message may be the real bounce.
    if depth < 2
        && let Some(nested) = &mail.nested
    {
        let inner = analyse_one(nested, depth + 1, known);
        if inner.kind == Kind::Bounce && inner.is_bounce() {
            return inner;
        }
    }
    if let Some((recipients, _)) = outer {
        return Analysis {
            kind: Kind::Bounce,
            recipients,
        };
    }
    if let Some(r) = bounce::vacation(&mail) {
        return Analysis {
            kind: Kind::AutoReply,
            recipients: vec![r],
        };
    }
    Analysis::other()
}

/// Everything known about one failed recipient before classification.
#[derive(Default, Debug)]
pub(crate) struct Evidence {
    pub recipient: String,
    pub status: String,
    pub reply: String,
    pub diagnostic: String,
    pub context: String,
    pub diag_type: String,
    pub action: String,
    pub remote_mta: String,
    pub reporter: String,
    pub hint: Option<Reason>,
}

impl Evidence {
    /// Classifies and turns this into a reported recipient.
    pub(crate) fn finish(mut self) -> Recipient {
        let diag = util::strip_continuations(&one_line(&self.diagnostic, MAX_DIAGNOSTIC * 2));
        let lower = diag.to_lowercase();
        let context = one_line(&self.context.to_lowercase(), MAX_DIAGNOSTIC * 2);
        if self.reply.is_empty() {
            self.reply = find_reply(&diag).unwrap_or_default();
        }
        let in_text = find_status(&diag).unwrap_or_default();
        self.status = util::prefer_status(&self.status, &in_text, &self.reply);
        // A diagnostic without any code: the surrounding text may state the error
        // (reports that give the reason before listing the recipients).
        let mut text_for_class = lower.clone();
        if self.status.is_empty() && self.reply.is_empty() && !context.is_empty() {
            self.reply = find_reply(&context).unwrap_or_default();
            self.status = find_status(&context).unwrap_or_default();
            text_for_class = if lower.is_empty() {
                context.clone()
            } else {
                format!("{lower} {context}")
            };
        }
        let command = text::command(&format!("{context} {lower}"));
        let domain = self.recipient.rsplit('@').next().unwrap_or("");
        let provider = rhost::reason(&rhost::Context {
            domain,
            remote: &self.remote_mta,
            reporter: &self.reporter,
            status: &self.status,
            command,
            text: &text_for_class,
        });
        let signal = Signal {
            status: &self.status,
            reply: &self.reply,
            text: &text_for_class,
            command,
            action: &self.action,
            diag_type: &self.diag_type,
            hint: self.hint,
            provider,
        };
        let reason = classify::decide(&signal);
        let hardbounce = reason.is_hard(&self.status, &self.reply);
        Recipient {
            recipient: self.recipient,
            reason,
            hardbounce,
            deliverystatus: self.status,
            replycode: self.reply,
            diagnostic: one_line(&diag, MAX_DIAGNOSTIC),
            remote_mta: (!self.remote_mta.is_empty()).then_some(self.remote_mta),
            command: (!command.is_empty()).then(|| command.to_owned()),
            action: (!self.action.is_empty()).then_some(self.action),
            feedbacktype: None,
        }
    }
}

/// The first address of a header value, lowercased.
pub(crate) fn header_address(value: Option<&str>) -> Option<String> {
    value.and_then(first_address)
}

#[cfg(test)]
mod tests;
