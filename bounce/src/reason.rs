//! The bounce reason taxonomy, what enhanced status codes name by themselves, and the
//! public entry point for labelling one SMTP reply.

use serde::{Deserialize, Serialize};

use crate::classify::{Signal, decide};

/// Why a message could not be delivered (or what kind of report it is).
///
/// The names match the reason taxonomy of the public bounce corpus (`reasons.json`)
/// and serialise lowercase (`userunknown`, `mailboxfull`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The local part of the recipient address does not exist.
    UserUnknown,
    /// The domain of the recipient address does not exist (no MX, no A).
    HostUnknown,
    /// The mailbox has moved and mail is not forwarded.
    HasMoved,
    /// The destination accepts no mail at all (null MX, 521).
    NotAccept,
    /// The recipient account is suspended, disabled or inactive.
    Suspend,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The destination server's disk is full.
    SystemFull,
    /// The message exceeds a size limit.
    EmailTooLarge,
    /// Sending too fast or with too many connections.
    RateLimited,
    /// Rejected because of the sending IP address or host name (block lists, HELO).
    Blocked,
    /// Rejected because of the sending IP's or domain's reputation.
    BadReputation,
    /// The sending IP has no or a mismatching PTR record.
    RequirePtr,
    /// SPF, DKIM or DMARC failure.
    AuthFailure,
    /// Rejected by a spam filter.
    SpamDetected,
    /// Rejected by a virus scanner.
    VirusDetected,
    /// Rejected by a policy of the destination.
    PolicyViolation,
    /// Rejected because of the message's headers or MIME structure.
    ContentError,
    /// The message does not comply with RFC 5322.
    NotCompliantRfc,
    /// A security problem: authentication required, not authorised.
    SecurityError,
    /// Rejected by the recipient's own filter or settings.
    Filtered,
    /// Rejected because of the sender (envelope from) address or domain.
    Rejected,
    /// Relaying denied.
    NoRelaying,
    /// STARTTLS required or failed.
    FailedStartTls,
    /// On the sending service's suppression list.
    Suppressed,
    /// Gave up after retrying for too long.
    Expired,
    /// DNS or network failure, mail loop.
    NetworkError,
    /// An error on the remote system.
    SystemError,
    /// A local delivery program failed.
    MailerError,
    /// The SMTP peer did not understand a command.
    SyntaxError,
    /// Not enough information to decide.
    OnHold,
    /// No reason could be detected.
    Undefined,
    /// A success report (2.x.x delivery status).
    Delivered,
    /// An ARF complaint (feedback loop report).
    Feedback,
    /// An automatic reply such as an out-of-office message.
    Vacation,
}

impl Reason {
    /// The lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            UserUnknown => "userunknown",
            HostUnknown => "hostunknown",
            HasMoved => "hasmoved",
            NotAccept => "notaccept",
            Suspend => "suspend",
            MailboxFull => "mailboxfull",
            SystemFull => "systemfull",
            EmailTooLarge => "emailtoolarge",
            RateLimited => "ratelimited",
            Blocked => "blocked",
            BadReputation => "badreputation",
            RequirePtr => "requireptr",
            AuthFailure => "authfailure",
            SpamDetected => "spamdetected",
            VirusDetected => "virusdetected",
            PolicyViolation => "policyviolation",
            ContentError => "contenterror",
            NotCompliantRfc => "notcompliantrfc",
            SecurityError => "securityerror",
            Filtered => "filtered",
            Rejected => "rejected",
            NoRelaying => "norelaying",
            FailedStartTls => "failedstarttls",
            Suppressed => "suppressed",
            Expired => "expired",
            NetworkError => "networkerror",
            SystemError => "systemerror",
            MailerError => "mailererror",
            SyntaxError => "syntaxerror",
            OnHold => "onhold",
            Undefined => "undefined",
            Delivered => "delivered",
            Feedback => "feedback",
            Vacation => "vacation",
        }
    }

    /// Whether this reason is a permanent failure of the address itself (suppress it).
    pub fn is_hard(self, status: &str, reply: &str) -> bool {
        match self {
            Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved => true,
            Reason::NotAccept => !(status.starts_with('4') || reply.starts_with('4')),
            _ => false,
        }
    }

    /// Reasons that later, more specific evidence may replace.
    pub(crate) fn is_weak(self) -> bool {
        matches!(
            self,
            Reason::OnHold
                | Reason::Undefined
                | Reason::SystemError
                | Reason::SecurityError
                | Reason::Expired
                | Reason::NetworkError
                | Reason::HostUnknown
                | Reason::UserUnknown
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason an enhanced status code names by itself, if any.
pub(crate) fn status_reason(status: &str) -> Option<Reason> {
    use Reason::*;
    let mut it = status.split('.');
    let class = it.next()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    let temp = class == "4";
    if class == "2" {
        return Some(Delivered);
    }
    if class != "4" && class != "5" {
        return None;
    }
    Some(match (subject, detail) {
        (1, 0) if !temp => UserUnknown,
        (1, 1) | (1, 3) => UserUnknown,
        (1, 2) => HostUnknown,
        (1, 4) => Filtered,
        (1, 6) => HasMoved,
        (1, 7) | (1, 8) => Rejected,
        (1, 9) => SystemError,
        (1, 10) => NotAccept,
        (2, 0) | (2, 1) if !temp => Filtered,
        (2, 2) => MailboxFull,
        (2, 3) => EmailTooLarge,
        (2, 4) => Filtered,
        (3, 0) | (3, 3) | (3, 5) => SystemError,
        (3, 1) => SystemFull,
        (3, 2) => NotAccept,
        (3, 4) => EmailTooLarge,
        (4, 0) if !temp => NetworkError,
        (4, 1) if temp => Expired,
        (4, 2) | (4, 6) | (4, 8) => NetworkError,
        (4, 3) => SystemError,
        (4, 4) if temp => NetworkError,
        (4, 4) => HostUnknown,
        (4, 5) => SystemFull,
        (4, 7) => Expired,
        (4, 312) => NetworkError,
        (4, 316) => Expired,
        (5, 2) | (5, 6) => SyntaxError,
        (5, 3) => RateLimited,
        (5, 4) | (5, 5) => SystemError,
        (6, _) => ContentError,
        (7, 1) if temp => Blocked,
        (7, 0..=12) | (7, 14) | (7, 15) | (7, 19) => SecurityError,
        (7, 13) => Suspend,
        (7, 16) => EmailTooLarge,
        (7, 17) | (7, 18) => HasMoved,
        (7, 20..=24) | (7, 26) | (7, 29) | (7, 509) | (7, 515) => AuthFailure,
        (7, 25) => RequirePtr,
        (7, 27) => NotAccept,
        (7, 28) => SpamDetected,
        (7, 30) => FailedStartTls,
        (7, 650) => BadReputation,
        (7, 500..=699) if temp => Blocked,
        (7, 606..=649) => Blocked,
        (7, 700..=749) => RateLimited,
        (7, 900..=999) => PolicyViolation,
        _ => return None,
    })
}

/// Classifies one SMTP reply, for the relay's synchronous replies.
///
/// `enhanced` is the RFC 3463 code when the reply had one (`"5.1.1"`); `text` is the
/// reply text. Returns the reason and whether it is a hard bounce.
pub fn classify_reply(
    reply_code: Option<u16>,
    enhanced: Option<&str>,
    text: &str,
) -> (Reason, bool) {
    let reply = reply_code.map(|c| c.to_string()).unwrap_or_default();
    let lower = crate::util::one_line(&text.to_lowercase(), crate::util::MAX_DIAGNOSTIC);
    let status = enhanced
        .map(str::to_owned)
        .or_else(|| crate::util::find_status(&lower))
        .unwrap_or_default();
    let signal = Signal {
        status: &status,
        reply: &reply,
        text: &lower,
        ..Signal::default()
    };
    let reason = if reply.starts_with('2') && status.is_empty() {
        Reason::Delivered
    } else {
        decide(&signal)
    };
    (reason, reason.is_hard(&status, &reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_alone() {
        assert_eq!(
            classify_reply(Some(550), Some("5.1.1"), "").0,
            Reason::UserUnknown
        );
        assert_eq!(
            classify_reply(Some(552), Some("5.2.2"), "").0,
            Reason::MailboxFull
        );
        assert_eq!(
            classify_reply(Some(554), Some("5.7.25"), "").0,
            Reason::RequirePtr
        );
        assert_eq!(classify_reply(Some(250), None, "ok").0, Reason::Delivered);
    }

    #[test]
    fn text_beats_vague_codes() {
        let (r, hard) = classify_reply(Some(550), Some("5.1.1"), "Mailbox is full");
        assert_eq!(r, Reason::MailboxFull);
        assert!(!hard);
        let (r, hard) = classify_reply(
            Some(550),
            None,
            "5.1.1 <a@b.c>: Recipient address rejected: User unknown",
        );
        assert_eq!(r, Reason::UserUnknown);
        assert!(hard);
        let r = classify_reply(
            Some(421),
            Some("4.7.0"),
            "Try again later, you are sending too fast",
        )
        .0;
        assert_eq!(r, Reason::RateLimited);
        let r = classify_reply(
            Some(554),
            Some("5.7.1"),
            "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        )
        .0;
        assert_eq!(r, Reason::Blocked);
        let r = classify_reply(
            Some(550),
            Some("5.7.1"),
            "Message rejected as spam by Content Filtering",
        )
        .0;
        assert_eq!(r, Reason::SpamDetected);
    }

    #[test]
    fn the_relays_own_local_reasons() {
        // What Postroad's relay says when no server replied.
        for (enhanced, text, want) in [
            (
                "4.4.3",
                "MX lookup for broken.test failed: DNS error: error response: Server Failure",
                Reason::NetworkError,
            ),
            (
                "5.1.10",
                "domain nullmx.test does not accept mail (null MX)",
                Reason::NotAccept,
            ),
            (
                "5.1.2",
                "domain other.test does not exist (NXDOMAIN)",
                Reason::HostUnknown,
            ),
        ] {
            assert_eq!(classify_reply(None, Some(enhanced), text).0, want, "{text}");
        }
    }

    #[test]
    fn hardness() {
        assert!(Reason::NotAccept.is_hard("5.1.10", "550"));
        assert!(!Reason::NotAccept.is_hard("4.0.0", ""));
        assert!(!Reason::MailboxFull.is_hard("5.2.2", "552"));
    }

    #[test]
    fn names_round_trip() {
        for r in [
            Reason::UserUnknown,
            Reason::RequirePtr,
            Reason::FailedStartTls,
            Reason::NotCompliantRfc,
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }
}
