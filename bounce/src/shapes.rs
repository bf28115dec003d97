//! Reasons named by an MTA's (or local delivery agent's) own fixed wording, as opposed
//! to the remote server's reply: Exim's "retry timeout exceeded", qmail's "couldn't
//! find any host named", Exchange's resolver codes, procmail's quota messages.

use std::sync::OnceLock;

use crate::phrases::LiteralSet;
use crate::reason::Reason;

/// Reasons named by an MTA's own fixed wording (not by the remote server's reply).
const SHAPES: &[(&str, Reason)] = &[
    // Exim
    ("retry timeout exceeded", Reason::Expired),
    (
        "all hosts have been failing for a long time",
        Reason::Expired,
    ),
    (
        "retry time not reached for any host after a long failure period",
        Reason::Expired,
    ),
    ("has been frozen", Reason::Expired),
    ("was frozen on arrival", Reason::Expired),
    ("pipe to |", Reason::MailerError),
    (
        "all host address lookups failed permanently",
        Reason::HostUnknown,
    ),
    (
        "all relevant mx records point to non-existent hosts",
        Reason::HostUnknown,
    ),
    (
        "an mx or srv record indicated no smtp service",
        Reason::NotAccept,
    ),
    (
        "no host found for existing smtp connection",
        Reason::NotAccept,
    ),
    ("delivery to file forbidden", Reason::SystemError),
    ("delivery to pipe forbidden", Reason::SystemError),
    ("local delivery failed", Reason::SystemError),
    ("lmtp error after ", Reason::SystemError),
    ("too many \"received\" headers", Reason::ContentError),
    ("angle-brackets nested too deep", Reason::SyntaxError),
    ("expected word or \"<\"", Reason::SyntaxError),
    (
        "domain missing in source-routed address",
        Reason::SyntaxError,
    ),
    ("malformed address:", Reason::SyntaxError),
    // qmail
    ("couldn't find any host named", Reason::HostUnknown),
    ("couldn't find any host by that name", Reason::HostUnknown),
    (
        "wasn't able to establish an smtp connection",
        Reason::NetworkError,
    ),
    (
        "although i'm listed as a best-preference mx or a for that host",
        Reason::NetworkError,
    ),
    (
        "couldn't find a mail exchanger or ip address",
        Reason::NotAccept,
    ),
    (
        "this message has been in the queue too long",
        Reason::Expired,
    ),
    (
        "mailbox unavailable (not enough free space)",
        Reason::SystemFull,
    ),
    ("mailaddress is administrativ", Reason::Suspend),
    (
        "bad interpreter: no such file or directory",
        Reason::SystemError,
    ),
    // Courier
    ("this domain's dns violates rfc 1035", Reason::SystemError),
    ("dns lookup failed.", Reason::NetworkError),
    // Domino, Notes
    ("not listed in domino directory", Reason::UserUnknown),
    (
        "not listed in public name & address book",
        Reason::UserUnknown,
    ),
    ("cannot route mail to user", Reason::Filtered),
    (
        "several matches found in domino directory",
        Reason::SystemError,
    ),
    (
        "message has exceeded maximum hop count",
        Reason::NetworkError,
    ),
    // DragonFly dma
    ("could not deliver for the last ", Reason::Expired),
    ("dns lookup failure: host ", Reason::HostUnknown),
    // Exchange
    ("000c05a6", Reason::UserUnknown),
    ("000c0595", Reason::Filtered),
    ("smtpsend.dns.nonexistentdomain", Reason::HostUnknown),
    ("smtpsend.dns.mxloopback", Reason::NetworkError),
    ("resolver.adr.badprimary", Reason::SystemError),
    ("resolver.adr.invalidinsmtp", Reason::SystemError),
    ("resolver.adr.ambiguous", Reason::SystemError),
    ("resolver.rst.authrequired", Reason::SecurityError),
    ("resolver.rst.notauthorized", Reason::Rejected),
    ("queue.expired", Reason::Expired),
    // Gmail, Google Workspace
    ("dns error: could not contact dns servers", Reason::Expired),
    (
        "delivery to the following recipient has been delayed",
        Reason::Expired,
    ),
    (
        "the recipient server did not accept our requests to connect",
        Reason::Expired,
    ),
    ("dns error: domain name not found", Reason::HostUnknown),
    (
        "dns error: dns server returned answer with no data",
        Reason::HostUnknown,
    ),
    (" had no relevant answers", Reason::NetworkError),
    (" responded with code nxdomain", Reason::NetworkError),
    ("because the address couldn't be found", Reason::UserUnknown),
    // GMX, Zoho, EZweb, KDDI, Biglobe, IMail, OpenSMTPD, Messaging Server
    ("delivery retry timeout exceeded", Reason::Expired),
    ("host not reachable", Reason::Expired),
    ("your message was not delivered within ", Reason::Expired),
    ("account is temporarily over quota", Reason::MailboxFull),
    ("the user(s) account is disabled", Reason::Suspend),
    (
        "the user(s) account is temporarily limited",
        Reason::Suspend,
    ),
    ("as their mailbox is full", Reason::MailboxFull),
    ("due to the following smtp relay error", Reason::NoRelaying),
    ("as the remote domain doesnt exist", Reason::HostUnknown),
    ("mail delivery failed... user unknown", Reason::Filtered),
    (
        "number of messages in recipient's mailbox exceeded the local limit",
        Reason::MailboxFull,
    ),
    ("user mailbox exceeds allowed size", Reason::MailboxFull),
    ("invalid final delivery userid", Reason::UserUnknown),
    ("envelope expired", Reason::Expired),
    ("could not retrieve credentials", Reason::SecurityError),
    (
        "address family mismatch on destination mxs",
        Reason::NetworkError,
    ),
    ("all routes to destination blocked", Reason::NetworkError),
    ("bad dns lookup error code", Reason::NetworkError),
    ("could not retrieve source address", Reason::NetworkError),
    ("loop detected", Reason::NetworkError),
    ("network error on destination mxs", Reason::NetworkError),
    ("no valid route to remote mx", Reason::NetworkError),
    ("no valid route to destination", Reason::NetworkError),
    ("temporary failure in mx lookup", Reason::NetworkError),
    ("destination seem to reject all mails", Reason::NotAccept),
    ("no mx found for domain", Reason::NotAccept),
    ("no mx found for destination", Reason::NotAccept),
    ("illegal host/domain name found", Reason::HostUnknown),
    ("mail size limit exceeded", Reason::EmailTooLarge),
    // Exchange, Office 365
    ("resolver.adr.recipnotfound", Reason::UserUnknown),
    ("resolver.adr.recipientnotfound", Reason::UserUnknown),
    ("resolver.adr.exrecipnotfound", Reason::UserUnknown),
    // InterScan MSS
    (
        "(and other recipients in the same domain)",
        Reason::UserUnknown,
    ),
];

/// Local delivery agents: (markers of the agent, its wording, reason).
type Lda = (&'static [&'static str], &'static str, Reason);
const LDA: &[Lda] = &[
    (
        &["> was automatically rejected:"],
        "not enough disk space",
        Reason::MailboxFull,
    ),
    (
        &["> was automatically rejected:"],
        "quota exceeded",
        Reason::MailboxFull,
    ),
    (
        &["> was automatically rejected:"],
        "mailbox doesn't exist: ",
        Reason::UserUnknown,
    ),
    (
        &["mail.local: "],
        "disc quota exceeded",
        Reason::MailboxFull,
    ),
    (
        &["mail.local: "],
        "mailbox full or quota exceeded",
        Reason::MailboxFull,
    ),
    (
        &["mail.local: "],
        "temporary file write error",
        Reason::SystemError,
    ),
    (
        &["mail.local: "],
        ": invalid mailbox path",
        Reason::UserUnknown,
    ),
    (&["mail.local: "], ": unknown user:", Reason::UserUnknown),
    (
        &["mail.local: "],
        ": user missing home directory",
        Reason::UserUnknown,
    ),
    (&["mail.local: "], ": user unknown", Reason::UserUnknown),
    (
        &["procmail: ", "/procmail "],
        "quota exceeded while writing",
        Reason::MailboxFull,
    ),
    (
        &["procmail: ", "/procmail "],
        "user over quota",
        Reason::MailboxFull,
    ),
    (
        &["procmail: ", "/procmail "],
        "service unavailable",
        Reason::SystemError,
    ),
    (
        &["procmail: ", "/procmail "],
        "no space left to finish writing",
        Reason::SystemFull,
    ),
    (&["maildrop: "], "maildir over quota.", Reason::MailboxFull),
    (
        &["maildrop: "],
        "cannot find system user",
        Reason::UserUnknown,
    ),
    (
        &["maildrop: "],
        "invalid user specified.",
        Reason::UserUnknown,
    ),
    (
        &["vdelivermail: "],
        "user does not exist, but will deliver to ",
        Reason::Filtered,
    ),
    (
        &["vdelivermail: "],
        "domain is over quota",
        Reason::MailboxFull,
    ),
    (
        &["vdelivermail: "],
        "user is over quota",
        Reason::MailboxFull,
    ),
    (
        &["vdelivermail: "],
        "account is locked email bounced",
        Reason::Suspend,
    ),
    (
        &["vdelivermail: "],
        "sorry, no mailbox here by that name.",
        Reason::UserUnknown,
    ),
    (
        &["vdeliver: "],
        "delivery failed due to system quota violation",
        Reason::MailboxFull,
    ),
];

/// A reason named by the MTA's (or local delivery agent's) own wording in `lower`.
pub(crate) fn shape_hint(lower: &str) -> Option<Reason> {
    for (markers, phrase, reason) in LDA {
        if markers.iter().any(|m| lower.contains(m)) && lower.contains(phrase) {
            return Some(*reason);
        }
    }
    static SET: OnceLock<LiteralSet> = OnceLock::new();
    let set =
        SET.get_or_init(|| LiteralSet::new(&SHAPES.iter().map(|(p, _)| *p).collect::<Vec<_>>()));
    let hits = set.scan(lower);
    SHAPES
        .iter()
        .enumerate()
        .find(|(i, _)| hits.has(*i as u32))
        .map(|(_, (_, r))| *r)
}
