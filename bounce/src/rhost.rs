//! Provider conventions: large mailbox providers answer with their own error codes and
//! wording, which mean something specific only when that provider said them. The
//! provider is recognised by the recipient's domain or the remote MTA's host name.

use crate::Reason::{self, *};
use crate::phrases::any;

/// What the classifier knows about one failure, for provider rules.
pub(crate) struct Context<'a> {
    pub domain: &'a str,
    pub remote: &'a str,
    /// The reporting MTA (or the bounce's sender domain).
    pub reporter: &'a str,
    pub status: &'a str,
    pub command: &'a str,
    /// Lowercased diagnostic.
    pub text: &'a str,
}

fn host_is(host: &str, suffixes: &[&str]) -> bool {
    suffixes
        .iter()
        .any(|s| host == s.trim_start_matches('.') || host.ends_with(s))
}

/// The reason a provider's own convention gives, if any.
pub(crate) fn reason(c: &Context<'_>) -> Option<Reason> {
    let t = c.text;
    if t.is_empty() {
        return None;
    }
    let either = |d: &[&str], r: &[&str]| host_is(c.domain, d) || host_is(c.remote, r);
    let reported_by = |r: &[&str]| host_is(c.remote, r) || host_is(c.reporter, r);
    // Orange / La Poste label their replies LPN007_416, OFR_999 and so on, wherever
    // the recipient is hosted.
    if let Some(r) = france_ptt(t) {
        return Some(r);
    }
    if c.domain.ends_with("googlegroups.com") && t.contains("groups.google.com") {
        return Some(Rejected);
    }
    if either(&["cox.net"], &[".cox.net"]) {
        return cox(t);
    }
    if either(
        &["charter.net", "spectrum.net", "rr.com", "twc.com"],
        &[".charter.net", ".spectrum.net"],
    ) {
        return spectrum(t);
    }
    if either(&["facebook.com"], &[".facebook.com"]) {
        return facebook(t);
    }
    if either(&["ezweb.ne.jp", "au.com"], &[".ezweb.ne.jp", "msmx.au.com"]) {
        if t.contains("550 : user unknown") {
            return Some(Filtered);
        }
        if t.contains(">: user unknown") {
            return Some(UserUnknown);
        }
    }
    if either(&["docomo.ne.jp"], &[".docomo.ne.jp"]) {
        return docomo(c);
    }
    if either(
        &["yahoo.com", "yahoo.co.jp", "ymail.com", "rocketmail.com"],
        &[".yahoodns.net", ".yahoo.com"],
    ) || t.contains("dd this user doesn't have a yahoo")
    {
        return first(t, YAHOO);
    }
    if reported_by(&[".messagelabs.com", "messagelabs.com"]) {
        if t.contains("please turn on smtp authentication") {
            return Some(SecurityError);
        }
        if t.contains("no such user") {
            return Some(UserUnknown);
        }
    }
    if either(
        &["icloud.com", "me.com", "mac.com"],
        &[".mail.icloud.com", ".apple.com"],
    ) {
        return first(t, APPLE);
    }
    if either(&["qq.com", "foxmail.com"], &[".qq.com"]) {
        return first(t, TENCENT);
    }
    if let Some(pos) = t.find(".i.ua/err/") {
        let code: String = t[pos + 10..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return match code.as_str() {
            "1" | "6" => Some(NoRelaying),
            "2" => Some(UserUnknown),
            "3" => Some(Suspend),
            "4" => Some(MailboxFull),
            "5" => Some(RateLimited),
            "7" | "9" => Some(Blocked),
            "8" => Some(Rejected),
            "10" => Some(Filtered),
            _ => None,
        };
    }
    None
}

fn first(t: &str, table: &[(&str, Reason)]) -> Option<Reason> {
    table.iter().find(|(p, _)| t.contains(p)).map(|(_, r)| *r)
}

const YAHOO: &[(&str, Reason)] = &[
    (
        "yahoo requires all senders to authenticate with either spf or dkim",
        AuthFailure,
    ),
    (" because the ip is in spamhaus's list;", Blocked),
    ("not accepted from ip addresses on spamhaus xbl", Blocked),
    ("relaying denied for ", NoRelaying),
    ("headers are not rfc compliant", NotCompliantRfc),
    ("not accepted for policy reasons", PolicyViolation),
    ("due to unresolvable rfc.5321 domain", Rejected),
    (" will be permanently deferred", Rejected),
    ("user is receiving mail too quickly", RateLimited),
    ("max message per connection reached", RateLimited),
    (" is no longer valid.", Suspend),
    ("this mailbox is disabled", Suspend),
    ("syntax error in parameters or arguments", SyntaxError),
    ("dd this user doesn't have a ", UserUnknown),
    ("mailbox not found", UserUnknown),
];

const APPLE: &[(&str, Reason)] = &[
    ("s dmarc policy", AuthFailure),
    ("blocked for failing both spf and dkim", AuthFailure),
    (
        "rejected due to having a domain present in the spamhaus",
        Blocked,
    ),
    ("rejected due to listing in spamhaus", Blocked),
    ("dnsbl-lookup", Blocked),
    ("not accepting connections", Blocked),
    ("recipient no longer on server", HasMoved),
    ("user is over quota", MailboxFull),
    ("relay access denied", NoRelaying),
    ("host/domain does not accept mail", NotAccept),
    ("due to local policy", PolicyViolation),
    ("sender address rejected", Rejected),
    ("due to excessive volume", RateLimited),
    ("inactive email address", UserUnknown),
    ("user does not exist", UserUnknown),
    ("unknown or illegal alias", UserUnknown),
];

const TENCENT: &[(&str, Reason)] = &[
    ("spf check failed", AuthFailure),
    ("dmarc check failed", AuthFailure),
    ("suspected bounce attacks", Blocked),
    ("suspected spam ip", Blocked),
    ("connection denied", Blocked),
    ("message too large", EmailTooLarge),
    ("spam is embedded in the email", SpamDetected),
    ("mail content denied", SpamDetected),
    ("suspected spam", Rejected),
    ("mail is rejected by recipients", Rejected),
    ("mailbox unavailable or access denined", RateLimited),
    ("is a deactivated mailbox", Suspend),
    ("bad address syntax", SyntaxError),
    ("frequency limited", RateLimited),
    ("mailbox not found", UserUnknown),
];

fn docomo(c: &Context<'_>) -> Option<Reason> {
    if any(c.text, &["552 too much mail data"]) {
        return Some(MailboxFull);
    }
    if any(c.text, &["552 too many recipients"]) {
        return Some(RateLimited);
    }
    match c.status {
        "5.1.1" => Some(UserUnknown),
        "5.2.0" => Some(Filtered),
        "5.0.0" if c.command == "RCPT" => Some(UserUnknown),
        _ => None,
    }
}

/// The token after `AUP#` in Cox and Spectrum replies.
fn aup(t: &str) -> Option<&str> {
    let pos = t.find("aup#")?;
    let rest = &t[pos + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The first four-digit number shortly after `AUP#` (`AUP#In-1310`, `AUP#1260`).
fn aup_number(t: &str) -> Option<u16> {
    let pos = t.find("aup#")?;
    let rest = t.get(pos + 4..)?;
    let window = &rest[..rest.len().min(12)];
    let start = window.find(|c: char| c.is_ascii_digit())?;
    let digits: String = window[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.len() == 4 {
        digits.parse().ok()
    } else {
        None
    }
}

fn cox(t: &str) -> Option<Reason> {
    if let Some(code) = aup(t) {
        let r = match code {
            "cxbl" | "cdrbl" => Some(Blocked),
            c if c.starts_with("ipbl") => Some(Blocked),
            c if c.starts_with("urlbl") => Some(SpamDetected),
            "cxdns" => Some(RequirePtr),
            "cxsndr" => Some(AuthFailure),
            "cxsmtp" => Some(Rejected),
            "cxcnct" | "cxmxrt" => Some(RateLimited),
            "cxthrt" | "cxmj" => Some(SecurityError),
            _ => None,
        };
        if r.is_some() {
            return r;
        }
    }
    first(
        t,
        &[
            ("too many bad commands from", Blocked),
            ("too many invalid recipients", Blocked),
            ("dns check failure - try again later", RequirePtr),
            ("rejected - no rdns", RequirePtr),
            ("esmtp no data before greeting", PolicyViolation),
            ("attachment extension is forbidden", PolicyViolation),
            ("sender rejected", Rejected),
            ("esmtp server temporarily not available", SystemError),
            ("too many sessions from", RateLimited),
            ("requested action aborted: try again later", RateLimited),
            ("message threshold exceeded", RateLimited),
            ("recipient rejected", UserUnknown),
        ],
    )
}

fn spectrum(t: &str) -> Option<Reason> {
    let code = aup_number(t)?;
    Some(match code {
        1000 => Blocked,
        1010..=1080 => Rejected,
        1090 => SystemError,
        1100..=1150 => RequirePtr,
        1160..=1190 => PolicyViolation,
        1200..=1250 => Blocked,
        1260 => NetworkError,
        1300..=1490 => RateLimited,
        1500 | 1520 => Rejected,
        1530 => EmailTooLarge,
        1540 | 1550 | 1580 => RateLimited,
        1560 => PolicyViolation,
        _ => return None,
    })
}

fn facebook(t: &str) -> Option<Reason> {
    const CODES: &[(&str, Reason)] = &[
        ("pol-p7", AuthFailure),
        ("pol-p1", Blocked),
        ("pol-p2", Blocked),
        ("pol-p3", Blocked),
        ("pol-p4", Blocked),
        ("pol-t1", Blocked),
        ("pol-t2", Blocked),
        ("pol-t3", Blocked),
        ("pol-p5", VirusDetected),
        ("pol-p6", SpamDetected),
        ("msg-p1", EmailTooLarge),
        ("msg-p2", ContentError),
        ("msg-p3", NotCompliantRfc),
        ("msg-t1", RateLimited),
        ("int-p1", UserUnknown),
        ("int-p2", EmailTooLarge),
        ("int-p3", UserUnknown),
        ("int-p4", UserUnknown),
        ("rcp-p1", UserUnknown),
        ("rcp-p2", Filtered),
        ("rcp-p3", Filtered),
        ("rcp-t1", SystemError),
        ("rcp-t4", Suspend),
        ("dns-p1", Rejected),
        ("dns-p2", Rejected),
        ("dns-t1", Rejected),
        ("dns-p3", RequirePtr),
        ("dns-t2", RequirePtr),
        ("con-t", RateLimited),
    ];
    first(t, CODES)
}

/// Orange and La Poste reply labels: `LPN007_416`, `OFR_999`, `LPNAAA_101`.
fn france_ptt(t: &str) -> Option<Reason> {
    for label in ["lpnaaa", "lpn", "ofr", "ouk"] {
        let Some(pos) = t.rfind(label) else { continue };
        if pos > 0 && t.as_bytes()[pos - 1].is_ascii_alphanumeric() {
            continue;
        }
        let token: String = t[pos..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        let Some(code) = token
            .rsplit(['_', '-'])
            .next()
            .filter(|c| c.len() == 3 && token.len() > c.len())
        else {
            continue;
        };
        return match code {
            "101" | "102" | "103" | "510" | "999" => Some(Blocked),
            "104" => Some(RateLimited),
            "305" | "402" => Some(SecurityError),
            "401" | "517" => Some(AuthFailure),
            "403" | "405" | "415" | "421" => Some(Rejected),
            "416" => Some(UserUnknown),
            "417" => Some(MailboxFull),
            "420" | "426" => Some(Suspend),
            "505" => Some(SystemError),
            "506" => Some(SpamDetected),
            "514" => Some(EmailTooLarge),
            "630" => Some(PolicyViolation),
            _ => None,
        };
    }
    if t.contains("spf/dns de votre nom de domaine") {
        return Some(AuthFailure);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(domain: &'a str, text: &'a str) -> Context<'a> {
        Context {
            domain,
            remote: "",
            reporter: "",
            status: "",
            command: "",
            text,
        }
    }

    #[test]
    fn provider_codes() {
        assert_eq!(
            reason(&ctx(
                "laposte.net",
                "550 5.5.0 invalid recipient. lpn007_416"
            )),
            Some(UserUnknown)
        );
        assert_eq!(
            reason(&ctx("cox.net", "550 sender rejected. aup#cdrbl")),
            Some(Blocked)
        );
        assert_eq!(
            reason(&ctx("charter.net", "550 5.1.0 sender rejected aup#1310")),
            Some(RateLimited)
        );
        assert_eq!(
            reason(&ctx("facebook.com", "550 5.1.1 rcp-p2 refused")),
            Some(Filtered)
        );
        assert_eq!(reason(&ctx("example.com", "550 user unknown")), None);
    }
}
