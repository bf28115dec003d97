//! The classifier: maps an enhanced status code, an SMTP reply code, the SMTP command
//! and the remote MTA's text to a reason.
//!
//! It runs in three passes:
//! 1. strong evidence: a reason named by the status code or by a specific phrase,
//!    tried in an order where the more specific reasons win (a full mailbox reported
//!    with 5.1.1 is still a full mailbox);
//! 2. weaker evidence: phrases that are only trusted once the strong ones failed, then
//!    the class of the status code (5.6.x content, 5.7.x security);
//! 3. fallbacks: expired for delayed reports, on-hold when there is text but no clue.

use crate::phrases::{self as p, Scanned, any};
use crate::reason::{Reason, status_reason};

/// What is known about one failed delivery, as input to the classifier.
#[derive(Default, Debug)]
pub(crate) struct Signal<'a> {
    /// Enhanced status code (`5.1.1`), or empty.
    pub status: &'a str,
    /// SMTP reply code (`550`), or empty.
    pub reply: &'a str,
    /// The diagnostic text, lowercased and on one line.
    pub text: &'a str,
    /// The SMTP command that failed (`RCPT`, `MAIL`, `DATA`, `CONN`, `HELO`), or empty.
    pub command: &'a str,
    /// The DSN action (`failed`, `delayed`), lowercase, or empty.
    pub action: &'a str,
    /// The diagnostic type (`smtp`, `x-unix`), lowercase, or empty.
    pub diag_type: &'a str,
    /// A reason already named by the report's own wording.
    pub hint: Option<Reason>,
    /// A reason given by the convention of the provider that answered.
    pub provider: Option<Reason>,
}

/// Generic words trusted only when nothing more specific matched.
const WEAK: &[(Reason, &[&str])] = &[
    (Reason::VirusDetected, &["virus", "malware", "infected"]),
    (
        Reason::RequirePtr,
        &[
            "rdns",
            "reverse lookup",
            "reverse hostname",
            "is not resolvable",
        ],
    ),
    (
        Reason::AuthFailure,
        &["spf record", "spf: ", " spf ", "dkim", "dmarc"],
    ),
    (
        Reason::Blocked,
        &[
            "blocklist",
            "blacklist",
            "block list",
            "black list",
            "listed at",
            "listed in",
            "spamhaus",
            "spamcop",
            "sorbs",
            "barracudacentral",
            "rbl",
            "your ip",
            "ip address",
            "client host rejected",
            "helo",
            "ehlo",
            "blocked",
        ],
    ),
    (
        Reason::SpamDetected,
        &["unsolicited", "junk mail", "bulk mail", "spam"],
    ),
    (Reason::Suspend, &["is disabled"]),
    (Reason::RateLimited, &["try again later"]),
];

/// Names of block lists: a "user unknown" code next to them is really a block.
const BLOCK_LISTS: &[&str] = &[
    "spamhaus",
    "spamcop",
    "sorbs",
    "barracudacentral",
    "blacklist",
    "blocklist",
    "block list",
    "black list",
    "dnsbl",
];

fn pre_data(command: &str) -> bool {
    matches!(command, "CONN" | "HELO" | "EHLO" | "MAIL" | "RCPT")
}

/// Decides the reason for one failed recipient.
pub(crate) fn decide(s: &Signal<'_>) -> Reason {
    if let Some(h) = s.hint
        && !h.is_weak()
    {
        return h;
    }
    if s.status.starts_with("2.") {
        return Reason::Delivered;
    }
    if let Some(p) = s.provider {
        return p;
    }
    let sc = Scanned::new(s.text);
    strong(s, &sc)
        .or_else(|| weak(s, &sc))
        .unwrap_or_else(|| fallback(s, &sc))
}

/// Pass 1: a specific reason named by the status code or a specific phrase, or by the
/// report's own wording (`hint`), in an order where the more specific reasons win.
fn strong(s: &Signal<'_>, sc: &Scanned<'_>) -> Option<Reason> {
    use Reason::*;
    let t = s.text;
    let code = status_reason(s.status);
    // Vague codes (x.0.0, 5.1.0, 5.2.0) say nothing specific.
    let code = if is_vague(s.status) { None } else { code };
    let is = |r: Reason| code == Some(r);
    let hint = |r: Reason| s.hint == Some(r);

    if is(MailboxFull) || sc.has(p::MAILBOX_FULL) {
        return Some(MailboxFull);
    }
    if sc.has(p::SYSTEM_FULL) {
        return Some(SystemFull);
    }
    if is(EmailTooLarge) || sc.has(p::TOO_LARGE) {
        return Some(EmailTooLarge);
    }
    if s.reply == "525" || is(Suspend) || sc.has(p::SUSPEND) {
        return Some(Suspend);
    }
    if is(HasMoved) || sc.has(p::HAS_MOVED) {
        return Some(HasMoved);
    }
    if !matches!(s.command, "CONN" | "HELO" | "EHLO") && sc.has(p::NO_RELAYING) {
        return Some(NoRelaying);
    }
    if is(AuthFailure) || sc.has(p::AUTH_FAILURE) {
        return Some(AuthFailure);
    }
    if is(FailedStartTls) || s.command == "STARTTLS" || sc.has(p::FAILED_STARTTLS) {
        return Some(FailedStartTls);
    }
    if (is(UserUnknown) || hint(UserUnknown)) && sc.has(p::RECIPIENT_FILTER) {
        return Some(Filtered);
    }
    if hint(UserUnknown) {
        return Some(UserUnknown);
    }
    if is(UserUnknown) {
        if sc.has(p::BLOCKED) || any(t, BLOCK_LISTS) {
            return Some(Blocked);
        }
        let other = sc.has(p::NO_RELAYING)
            || sc.has(p::HAS_MOVED)
            || rejected_text(sc)
            || sc.has(p::NOT_ACCEPT)
            || sc.has(p::REQUIRE_PTR);
        if !other {
            return Some(UserUnknown);
        }
    } else if code != Some(Suspend) && s.command == "RCPT" && sc.has(p::USER_UNKNOWN) {
        return Some(UserUnknown);
    }
    if is(Filtered) {
        if sc.has(p::USER_UNKNOWN) || sc.has(p::FILTERED) {
            return Some(Filtered);
        }
    } else if !pre_data(s.command) && (sc.has(p::FILTERED) || sc.has(p::USER_UNKNOWN)) {
        return Some(Filtered);
    }
    if is(RequirePtr) || sc.has(p::REQUIRE_PTR) {
        return Some(RequirePtr);
    }
    if sc.has(p::NOT_COMPLIANT) {
        return Some(NotCompliantRfc);
    }
    if sc.has(p::BAD_REPUTATION) || is(BadReputation) {
        return Some(BadReputation);
    }
    if !sc.has(p::SPAM_DETECTED) && (is(ContentError) || sc.has(p::CONTENT_ERROR)) {
        return Some(ContentError);
    }
    if is(Rejected) || (s.command == "MAIL" && (rejected_text(sc) || t.contains("access denied"))) {
        return Some(Rejected);
    }
    if s.command == "DATA" && code != Some(UserUnknown) && rejected_text(sc) {
        return Some(Rejected);
    }
    let explicit_code = code.is_some_and(|c| !matches!(c, SecurityError | SystemError));
    if !explicit_code && rejected_text(sc) {
        return Some(Rejected);
    }
    if hint(HostUnknown) || (is(HostUnknown) && !sc.has(p::NETWORK_ERROR)) {
        return Some(HostUnknown);
    }
    if sc.has(p::NOT_ACCEPT) {
        return Some(NotAccept);
    }
    if sc.has(p::HOST_UNKNOWN) && !sc.has(p::NETWORK_ERROR) {
        return Some(HostUnknown);
    }
    if is(SpamDetected) || (!pre_data(s.command) && sc.has(p::SPAM_DETECTED)) {
        return Some(SpamDetected);
    }
    if is(RateLimited) || sc.has(p::RATE_LIMITED) {
        return Some(RateLimited);
    }
    if is(Blocked) || sc.has(p::BLOCKED) {
        return Some(Blocked);
    }
    None
}

fn is_vague(status: &str) -> bool {
    status.ends_with(".0.0") || matches!(status, "5.1.0" | "5.2.0" | "5.3.0" | "5.5.0" | "4.4.0")
}

fn rejected_text(sc: &Scanned<'_>) -> bool {
    !sc.has(p::REJECTED_NOT) && sc.has(p::REJECTED)
}

/// Pass 2: the report's own (weaker) wording, other phrases, the status code's own
/// reason, generic words, then the class of the status code.
fn weak(s: &Signal<'_>, sc: &Scanned<'_>) -> Option<Reason> {
    use Reason::*;
    let t = s.text;
    if let Some(h) = s.hint
        && h != OnHold
        && h != Undefined
    {
        return Some(h);
    }
    let table: &[(Reason, &[&str])] = &[
        (MailboxFull, p::MAILBOX_FULL),
        (AuthFailure, p::AUTH_FAILURE),
        (BadReputation, p::BAD_REPUTATION),
        (RateLimited, p::RATE_LIMITED),
        (SpamDetected, p::SPAM_DETECTED),
        (VirusDetected, p::VIRUS),
        (PolicyViolation, p::POLICY),
        (NoRelaying, p::NO_RELAYING),
        (SystemError, p::SYSTEM_ERROR),
        (NetworkError, p::NETWORK_ERROR),
        (Suspend, p::SUSPEND),
        (ContentError, p::CONTENT_ERROR),
        (SystemFull, p::SYSTEM_FULL),
        (NotAccept, p::NOT_ACCEPT),
        (Expired, p::EXPIRED),
        (FailedStartTls, p::FAILED_STARTTLS),
        (SecurityError, p::SECURITY),
        (MailerError, p::MAILER_ERROR),
    ];
    for (r, phrases) in table {
        if sc.has(phrases) {
            return Some(*r);
        }
    }
    if let Some(c) = status_reason(s.status)
        && !is_vague(s.status)
    {
        return Some(c);
    }
    for (r, words) in WEAK {
        if any(t, words) {
            return Some(*r);
        }
    }
    if s.status.starts_with("5.6") || s.status.starts_with("4.6") {
        return Some(ContentError);
    }
    if s.status.starts_with("5.7") || s.status.starts_with("4.7") {
        return Some(SecurityError);
    }
    if s.diag_type.starts_with("x-unix") {
        return Some(MailerError);
    }
    if let Ok(r) = s.reply.parse::<u16>()
        && ((401..408).contains(&r) || (501..508).contains(&r))
        && sc.has(p::SYNTAX_ERROR)
    {
        return Some(SyntaxError);
    }
    if matches!(s.action, "delayed" | "expired") {
        return Some(Expired);
    }
    match s.command {
        "HELO" | "EHLO" => return Some(Blocked),
        "MAIL" => return Some(Rejected),
        _ => {}
    }
    match s.status {
        "5.1.0" => Some(UserUnknown),
        "5.2.0" => Some(Filtered),
        "5.3.0" | "5.5.0" => Some(SystemError),
        "4.4.0" => Some(NetworkError),
        _ => None,
    }
}

/// Pass 3: nothing specific was found.
fn fallback(s: &Signal<'_>, sc: &Scanned<'_>) -> Reason {
    if let Some(h) = s.hint {
        return h;
    }
    if matches!(s.action, "delayed") {
        return Reason::Expired;
    }
    if sc.has(p::VACATION) {
        return Reason::Vacation;
    }
    let words = s
        .text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| w.len() > 2)
        .count();
    if words > 2 || !s.status.is_empty() {
        return Reason::OnHold;
    }
    Reason::Undefined
}
