//! Plain-text bounces: the many non-standard formats (Exim, Sendmail, qmail, Postfix,
//! Courier, Exchange, Gmail, Yahoo, Domino, ...), recognised by the shape of their text
//! rather than by the name of the MTA.
//!
//! A report is cut where the returned original message starts; the rest is split into
//! per-recipient blocks at lines that introduce a recipient (`<a@b>:`, an address on
//! its own line, `RCPT TO:<a@b>`, `Your message to a@b ...`).

use std::sync::OnceLock;

use crate::phrases::LiteralSet;
use crate::util::first_address;

/// Most lines of text gathered for one recipient.
const MAX_BLOCK_LINES: usize = 40;
/// Most bytes gathered for one recipient.
const MAX_BLOCK_BYTES: usize = 4096;
/// Most recipients found in text.
const MAX_BLOCKS: usize = 1000;

/// The text that belongs to one recipient.
#[derive(Debug, Default, Clone)]
pub(crate) struct Block {
    pub recipient: String,
    pub text: String,
    lines: usize,
}

/// Splits a text part into the report and the returned original message.
pub(crate) fn split_original(text: &str) -> (&str, &str) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_original_marker(line) {
            return (&text[..offset], &text[offset..]);
        }
        offset += line.len();
    }
    (text, "")
}

fn is_original_marker(line: &str) -> bool {
    let l = line.trim();
    if l.len() < 8
        || l.len() > 120
        || !l.starts_with([
            '-', '=', '*', '_', 'c', 'C', 'o', 'O', 'b', 'B', 't', 'T', 'y', 'Y', 'i', 'I', 'a',
            'A', 'h', 'H',
        ])
    {
        return false;
    }
    let l = l.to_ascii_lowercase();
    if l.starts_with("content-type: message/rfc822")
        || l.starts_with("content-type: text/rfc822-headers")
    {
        return true;
    }
    let fenced =
        l.starts_with("--") || l.starts_with("==") || l.starts_with("**") || l.starts_with("__");
    const KEYS: &[&str] = &[
        "original message",
        "copy of the message",
        "copy of your message",
        "copy of the original",
        "unsent message",
        "message header",
        "returned message",
        "message follows",
        "original mail",
        "below this line",
        "message text",
        "headers of the",
        "rfc822",
        "undelivered message",
        "original headers",
        "message headers",
    ];
    if fenced {
        return KEYS.iter().any(|k| l.contains(k));
    }
    if l.starts_with("the original message was received") {
        return false;
    }
    const LEADS: &[&str] = &[
        "original message follows",
        "original message headers",
        "below is a copy of the original message",
        "the original message was:",
        "original message:",
        "your message reads",
        "------ original message",
        "included is a copy of the message header",
        "a copy of the original message",
        "the header of the original message",
        "headers of your message",
        "--- original message",
    ];
    LEADS.iter().any(|k| l.starts_with(k))
}

/// The address a line introduces as a failed recipient, if any.
fn recipient_on_line(line: &str) -> Option<String> {
    memchr::memchr(b'@', line.as_bytes())?;
    let t = line.trim_start_matches([' ', '\t', '*', '-', '"', '\'', '(']);
    if let Some(rest) = t.strip_prefix('<') {
        let addr = first_address(rest)?;
        let lower = rest.get(..addr.len())?.to_ascii_lowercase();
        return (lower == addr && rest.as_bytes().get(addr.len()) == Some(&b'>')).then_some(addr);
    }
    let token_end = t.find([' ', '\t', ',', ';']).unwrap_or(t.len());
    let token = t[..token_end].trim_end_matches([':', '.', '>', ')']);
    if token.contains('@') && !token.contains('=') {
        let addr = first_address(token)?;
        if token.trim_start_matches('<').eq_ignore_ascii_case(&addr) {
            return Some(addr);
        }
    }
    // Sendmail transcripts: "554 <a@b>... Remote protocol error".
    if t.len() > 5
        && t.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && matches!(t.as_bytes()[0], b'4' | b'5')
        && t[3..].starts_with(" <")
        && let Some(a) = first_address(&t[5..])
        && t[5..]
            .get(..a.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(&a))
        && t[5 + a.len()..].starts_with(">...")
    {
        return Some(a);
    }
    let lower = t.to_ascii_lowercase();
    if let Some(pos) = lower.find("rcpt to:") {
        let rest = lower[pos + 8..].trim_start();
        let rest = rest.strip_prefix('<').unwrap_or(rest);
        if let Some(a) = first_address(rest)
            && rest.starts_with(&a)
        {
            return Some(a);
        }
    }
    // "User's mailbox is full: <a@b>" — an address closing a line after a colon.
    let trimmed = t.trim_end();
    if let Some(open) = trimmed.rfind('<')
        && trimmed.ends_with('>')
        && trimmed[..open].trim_end().ends_with(':')
        && !trimmed[..open]
            .trim_end()
            .to_ascii_lowercase()
            .ends_with("from:")
        && let Some(a) = first_address(&trimmed[open..])
        && trimmed[open + 1..trimmed.len() - 1].eq_ignore_ascii_case(&a)
    {
        return Some(a);
    }
    const LEADS: &[&str] = &[
        "your message to ",
        "your message sent to ",
        "your mail to ",
        "message to ",
        "delivery to ",
        "delivering to ",
        "failed to deliver to ",
        "could not be delivered to ",
        "couldn't be delivered to ",
        "undeliverable to ",
        "not delivered to ",
        "delivery failed: ",
        "rejected recipient ",
        "recipient ",
        "recipient address: ",
        "recipient address:",
        "original address: ",
        "failed recipient: ",
        "recipient: ",
        "addressed to ",
        "mailbox ",
        "user ",
    ];
    for lead in LEADS {
        if let Some(pos) = lower.find(lead) {
            let rest = &t[pos + lead.len()..];
            let window = &rest[..floor_boundary(rest, 90)];
            if let Some(a) = first_address(window) {
                let at = window.to_ascii_lowercase().find(&a).unwrap_or(usize::MAX);
                if at < 6 {
                    return Some(a);
                }
            }
        }
    }
    None
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Splits report text into per-recipient blocks. Addresses in `exclude` (the sender,
/// the reporting system) never start a block. Returns the blocks and the text before
/// the first one.
pub(crate) fn blocks(report: &str, exclude: &[String]) -> (Vec<Block>, String) {
    let mut out: Vec<Block> = Vec::new();
    let mut preamble = String::new();
    let mut current: Option<usize> = None;
    let mut prev = String::new();
    for line in report.lines() {
        // "A message sent by\n\n  <sender>\n\ncould not be delivered": the sender.
        let after_sender_lead = prev.ends_with("sent by") || prev.ends_with("from:");
        let rcpt = recipient_on_line(line).filter(|a| !excluded(a, exclude) && !after_sender_lead);
        if !line.trim().is_empty() {
            prev = line.trim().to_ascii_lowercase();
        }
        if let Some(addr) = rcpt {
            let idx = match out.iter().position(|b| b.recipient == addr) {
                Some(i) => i,
                None if out.len() < MAX_BLOCKS => {
                    out.push(Block {
                        recipient: addr,
                        ..Block::default()
                    });
                    out.len() - 1
                }
                None => continue,
            };
            current = Some(idx);
        }
        match current {
            Some(i) => {
                let b = &mut out[i];
                if b.lines < MAX_BLOCK_LINES && b.text.len() < MAX_BLOCK_BYTES {
                    b.text.push_str(line);
                    b.text.push('\n');
                    b.lines += 1;
                }
            }
            None => {
                if preamble.len() < MAX_BLOCK_BYTES {
                    preamble.push_str(line);
                    preamble.push('\n');
                }
            }
        }
    }
    (out, preamble)
}

fn excluded(addr: &str, exclude: &[String]) -> bool {
    let local = addr.split('@').next().unwrap_or("");
    local == "mailer-daemon" || exclude.iter().any(|e| e == addr)
}

/// The SMTP command a diagnostic says failed: the last one it mentions.
pub(crate) fn command(lower: &str) -> &'static str {
    const CMDS: &[(&str, &str)] = &[
        ("rcpt to", "RCPT"),
        ("does not like recipient", "RCPT"),
        ("[rcpt_to]", "RCPT"),
        ("smtp:rcpt", "RCPT"),
        ("rcpt command", "RCPT"),
        ("(state 14)", "RCPT"),
        ("(state 15)", "DATA"),
        ("(state 17)", "DATA"),
        ("(state 18)", "DATA"),
        ("(state 6)", "MAIL"),
        ("mail from", "MAIL"),
        ("end of data", "DATA"),
        ("after data", "DATA"),
        (">>> data", "DATA"),
        ("data command", "DATA"),
        ("after i sent the message", "DATA"),
        ("in reply to ehlo", "EHLO"),
        ("in reply to helo", "HELO"),
        ("after ehlo", "EHLO"),
        ("after helo", "HELO"),
        (">>> ehlo", "EHLO"),
        (">>> helo", "HELO"),
        ("but my name was rejected", "HELO"),
        ("after initial connection", "CONN"),
        ("initial greeting", "CONN"),
        ("refused to talk to me", "CONN"),
        ("in reply to starttls", "STARTTLS"),
        (">>> starttls", "STARTTLS"),
    ];
    static SET: OnceLock<LiteralSet> = OnceLock::new();
    let set =
        SET.get_or_init(|| LiteralSet::new(&CMDS.iter().map(|(p, _)| *p).collect::<Vec<_>>()));
    let hits = set.scan(lower);
    let mut best: (usize, &'static str) = (0, "");
    for (i, (_, cmd)) in CMDS.iter().enumerate() {
        if let Some(pos) = hits.last_start(i as u32)
            && pos + 1 > best.0
        {
            best = (pos + 1, cmd);
        }
    }
    best.1
}

/// The lines of a block that carry the error, without the address line's address
/// (used as the recipient's diagnostic).
pub(crate) fn diagnostic_of(block: &str) -> String {
    let mut out = String::new();
    for line in block.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(l);
        if out.len() > crate::util::MAX_DIAGNOSTIC * 2 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;
    use crate::shapes::shape_hint;

    const QMAIL: &str = "Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n\n<neko@example.jp>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 <neko@example.jp>... No such user\n\n--- Below this line is a copy of the message.\n\nTo: neko@example.jp\n";

    #[test]
    fn qmail_shape() {
        let (report, original) = split_original(QMAIL);
        assert!(original.starts_with("--- Below"));
        let (b, pre) = blocks(report, &[]);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].recipient, "neko@example.jp");
        assert!(b[0].text.contains("No such user"));
        assert!(pre.contains("qmail-send"));
    }

    #[test]
    fn exim_shape_two_recipients() {
        let text = "A message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n  a@example.jp\n    SMTP error from remote mail server after RCPT TO:<a@example.jp>:\n    host mx [192.0.2.1]: 550 unknown user\n  b@example.jp\n    retry timeout exceeded\n";
        let (b, _) = blocks(text, &[]);
        assert_eq!(b.len(), 2);
        assert_eq!(command(&b[0].text.to_lowercase()), "RCPT");
        assert_eq!(shape_hint(&b[1].text.to_lowercase()), Some(Reason::Expired));
    }

    #[test]
    fn sender_is_not_a_recipient() {
        let (b, _) = blocks(
            "<me@example.org>\n<you@example.net>: 550 no\n",
            &["me@example.org".into()],
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].recipient, "you@example.net");
    }

    #[test]
    fn command_is_the_last_one() {
        assert_eq!(
            command(">>> mail from:<a@b.c> <<< 250 ok >>> rcpt to:<d@e.f> <<< 550"),
            "RCPT"
        );
        assert_eq!(command("(in reply to end of data command)"), "DATA");
        assert_eq!(command("nothing"), "");
    }
}
