//! RFC 3464 delivery status notifications: the `message/delivery-status` part, and the
//! same fields when a sender wrapped them in text/plain or wrote them malformed
//! (no blank line between recipients, fields out of order, folded values).

use crate::util::{first_address, split_typed, starts_with_ci};

/// Most recipients read from one report.
pub(crate) const MAX_RECIPIENTS: usize = 1000;

/// One per-recipient block of a DSN.
#[derive(Default, Debug, Clone)]
pub(crate) struct DsnRecipient {
    pub final_recipient: String,
    pub original_recipient: String,
    pub action: String,
    pub status: String,
    pub remote_mta: String,
    pub diag_type: String,
    pub diagnostic: String,
}

impl DsnRecipient {
    /// The address to report: the final recipient, else the original one.
    pub fn address(&self) -> &str {
        if self.final_recipient.is_empty() {
            &self.original_recipient
        } else {
            &self.final_recipient
        }
    }

    fn has_recipient(&self) -> bool {
        !self.final_recipient.is_empty() || !self.original_recipient.is_empty()
    }
}

/// A parsed DSN.
#[derive(Default, Debug)]
pub(crate) struct Dsn {
    pub reporting_mta: String,
    pub recipients: Vec<DsnRecipient>,
}

/// Whether `text` holds DSN per-recipient fields (used for text-wrapped reports).
pub(crate) fn looks_like_dsn(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        starts_with_ci(l, "final-recipient:") || starts_with_ci(l, "original-recipient:")
    })
}

/// Parses the fields of a delivery-status body.
pub(crate) fn parse(text: &str) -> Dsn {
    let mut dsn = Dsn::default();
    let mut cur = DsnRecipient::default();
    // The field a continuation line belongs to.
    let mut last: Option<&'static str> = None;
    // Whether per-recipient fields followed the current Final-Recipient.
    let mut after_final = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut dsn, &mut cur);
            last = None;
            after_final = false;
            continue;
        }
        if line.starts_with([' ', '\t']) && last.is_some() {
            let extra = line.trim();
            match last {
                Some("diagnostic") => push_words(&mut cur.diagnostic, extra),
                Some("final") if cur.final_recipient.is_empty() => {
                    cur.final_recipient = first_address(extra).unwrap_or_default();
                }
                _ => {}
            }
            continue;
        }
        let line = line.trim_start();
        let Some((name, value)) = line.split_once(':') else {
            last = None;
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        last = None;
        match name.as_str() {
            "final-recipient" => {
                if !cur.final_recipient.is_empty() {
                    flush(&mut dsn, &mut cur);
                }
                let (_, v) = split_typed(value);
                cur.final_recipient = first_address(v).unwrap_or_default();
                last = Some("final");
                after_final = false;
            }
            "original-recipient" => {
                if !cur.original_recipient.is_empty() || after_final {
                    flush(&mut dsn, &mut cur);
                }
                let (_, v) = split_typed(value);
                cur.original_recipient = first_address(v).unwrap_or_default();
            }
            "action" => {
                cur.action = value.to_ascii_lowercase();
                after_final = !cur.final_recipient.is_empty();
            }
            "status" => {
                after_final = !cur.final_recipient.is_empty();
                cur.status = crate::util::find_status(value).unwrap_or_default();
            }
            "remote-mta" => {
                let (_, v) = split_typed(value);
                cur.remote_mta = v.trim_matches(['[', ']']).to_ascii_lowercase();
            }
            "diagnostic-code" => {
                after_final = !cur.final_recipient.is_empty();
                let (t, v) = split_typed(value);
                cur.diag_type = t;
                cur.diagnostic = v.to_owned();
                last = Some("diagnostic");
            }
            "reporting-mta" => {
                let (_, v) = split_typed(value);
                if dsn.reporting_mta.is_empty() {
                    dsn.reporting_mta = v.to_ascii_lowercase();
                }
            }
            _ => {}
        }
        if dsn.recipients.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    flush(&mut dsn, &mut cur);
    dsn
}

fn push_words(to: &mut String, extra: &str) {
    if to.len() < crate::util::MAX_DIAGNOSTIC * 2 {
        if !to.is_empty() {
            to.push(' ');
        }
        to.push_str(extra);
    }
}

fn flush(dsn: &mut Dsn, cur: &mut DsnRecipient) {
    if cur.has_recipient() {
        if dsn.recipients.len() < MAX_RECIPIENTS {
            dsn.recipients.push(std::mem::take(cur));
        }
    } else if !cur.status.is_empty() || !cur.diagnostic.is_empty() {
        // Per-recipient fields before their recipient line: keep them for the next
        // recipient of this group (malformed reports do this).
        return;
    }
    *cur = DsnRecipient::default();
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "Reporting-MTA: dns; mx.example.org\nArrival-Date: x\n\nFinal-Recipient: rfc822; Kiji@Example.jp\nOriginal-Recipient: rfc822;kiji@example.jp\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.jp\nDiagnostic-Code: smtp; 550 5.1.1 <kiji@example.jp>:\n    Recipient address rejected: User unknown\n\nFinal-Recipient: rfc822; neko@example.jp\nAction: delayed\nStatus: 4.4.1\n";

    #[test]
    fn two_recipients() {
        let d = parse(TWO);
        assert_eq!(d.reporting_mta, "mx.example.org");
        assert_eq!(d.recipients.len(), 2);
        let r = &d.recipients[0];
        assert_eq!(r.address(), "kiji@example.jp");
        assert_eq!(r.status, "5.1.1");
        assert_eq!(r.diag_type, "smtp");
        assert!(r.diagnostic.ends_with("User unknown"), "{}", r.diagnostic);
        assert_eq!(d.recipients[1].action, "delayed");
    }

    #[test]
    fn crlf_and_cr_after_normalising() {
        for raw in [TWO.replace('\n', "\r\n"), TWO.replace('\n', "\r")] {
            let text = crate::util::normalise_newlines(raw.as_bytes()).into_owned();
            let d = parse(&String::from_utf8(text).unwrap());
            assert_eq!(d.recipients.len(), 2);
        }
    }

    #[test]
    fn action_before_recipient_fields() {
        let d = parse(
            "Action: failed\nFinal-Recipient: rfc822; a@example.jp\nOriginal-Recipient: rfc822; a@example.jp\nStatus: 5.1.1\n",
        );
        assert_eq!(d.recipients.len(), 1);
        assert_eq!(d.recipients[0].status, "5.1.1");
    }

    #[test]
    fn no_blank_lines_between_recipients() {
        let d = parse(
            "Final-Recipient: rfc822; a@example.jp\nStatus: 5.1.1\nFinal-Recipient: rfc822; b@example.jp\nStatus: 5.2.2\n",
        );
        assert_eq!(d.recipients.len(), 2);
        assert_eq!(d.recipients[1].status, "5.2.2");
    }
}
