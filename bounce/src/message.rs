//! MIME: splits one message into the parts a report is made of.
//!
//! Uses `mail-parser` for the structure and transfer decoding. The parts of the
//! returned original message (inside `message/rfc822`) are never read as report text.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Most MIME parts looked at in one message.
const MAX_PARTS: usize = 64;
/// Most bytes of text kept from one part.
const MAX_TEXT: usize = 64 * 1024;
/// Most bytes of an attached message kept for a second look.
const MAX_NESTED: usize = 256 * 1024;

/// The pieces of a (possible) report.
#[derive(Default, Debug)]
pub(crate) struct Mail {
    /// Top-level header fields, names lowercased, values unfolded.
    pub headers: Vec<(String, String)>,
    /// Human-readable parts (text/plain, and text/html with tags stripped), in order.
    pub texts: Vec<String>,
    /// `message/delivery-status` bodies.
    pub dsn: Vec<String>,
    /// `message/feedback-report` bodies.
    pub feedback: Vec<String>,
    /// Header block of the returned original message, when attached.
    pub original: Option<String>,
    /// Whether the top-level type is `multipart/report`.
    pub is_report: bool,
    /// The raw bytes of the first attached message (a forwarded report is analysed
    /// again from these).
    pub nested: Option<Vec<u8>>,
}

impl Mail {
    /// The first value of a header field (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether some header field named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// Parses a message whose line endings are already LF.
pub(crate) fn parse(raw: &[u8]) -> Option<Mail> {
    let msg = MessageParser::default().parse(raw)?;
    let mut mail = Mail {
        headers: header_block(raw),
        ..Mail::default()
    };
    if let Some(ct) = msg.root_part().content_type() {
        mail.is_report = ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    }
    let mut html: Vec<String> = Vec::new();
    for part in msg.parts.iter().take(MAX_PARTS) {
        let (ctype, subtype) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_else(|| ("text".into(), "plain".into()));
        match (&part.body, ctype.as_str(), subtype.as_str()) {
            (PartType::Multipart(_), _, _) => {}
            (PartType::Message(inner), _, _) => {
                let raw = inner.raw_message();
                keep_original(&mut mail, || header_text(raw), Some(raw));
            }
            (_, "message", "delivery-status" | "global-delivery-status") => {
                mail.dsn
                    .push(bounded(&String::from_utf8_lossy(part.contents())));
            }
            (_, "message", "feedback-report") => {
                mail.feedback
                    .push(bounded(&String::from_utf8_lossy(part.contents())));
            }
            (_, "message", "rfc822" | "global" | "rfc822-headers")
            | (_, "text", "rfc822-header")
            | (_, "text", "rfc822-headers") => {
                keep_original(
                    &mut mail,
                    || String::from_utf8_lossy(part.contents()).into_owned(),
                    None,
                );
            }
            (PartType::Html(t), _, _) => html.push(strip_html(t)),
            (PartType::Text(t), "text", _) => mail.texts.push(bounded(t)),
            (_, "text", _) => mail
                .texts
                .push(bounded(&String::from_utf8_lossy(part.contents()))),
            _ => {}
        }
    }
    if mail.texts.iter().all(|t| t.trim().is_empty()) {
        mail.texts.extend(html);
    }
    if mail.texts.is_empty() && mail.dsn.is_empty() && mail.feedback.is_empty() {
        // A multipart type whose boundary never appears: read the body as text.
        let body = memchr::memmem::find(raw, b"\n\n")
            .map(|p| &raw[p + 2..])
            .unwrap_or_default();
        mail.texts.push(bounded(&String::from_utf8_lossy(body)));
    }
    Some(mail)
}

/// Keeps the first returned original message (its headers, and its raw bytes for a
/// second look when it is a whole message).
fn keep_original(mail: &mut Mail, headers: impl FnOnce() -> String, raw: Option<&[u8]>) {
    if mail.original.is_some() {
        return;
    }
    mail.original = Some(bounded(&headers()));
    if let Some(raw) = raw {
        mail.nested = Some(raw[..raw.len().min(MAX_NESTED)].to_vec());
    }
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The header block of a raw message (up to the first empty line), as text.
fn header_text(raw: &[u8]) -> String {
    let end = memchr::memmem::find(raw, b"\n\n").unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Unfolded header fields of a raw message: (lowercase name, value).
pub(crate) fn header_block(raw: &[u8]) -> Vec<(String, String)> {
    parse_fields(&header_text(raw), 200)
}

/// Parses `Name: value` lines with continuation lines, up to `limit` fields.
pub(crate) fn parse_fields(text: &str, limit: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':')
            && !name.is_empty()
            && name.len() < 64
            && !name.contains(' ')
        {
            if out.len() >= limit {
                break;
            }
            out.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    out
}

/// Text of an HTML part: tags removed, entities for spaces and brackets decoded, block
/// elements turned into line breaks.
pub(crate) fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(MAX_TEXT));
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt..];
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[1..gt].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "table"
        ) {
            out.push('\n');
        }
        if (name == "style" || name == "script") && !after[1..].starts_with('/') {
            let close = format!("</{name}");
            match after.to_ascii_lowercase().find(&close) {
                Some(pos) => rest = &after[pos..],
                None => rest = "",
            }
            continue;
        }
        rest = &after[gt + 1..];
        if out.len() > MAX_TEXT {
            break;
        }
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_unfold() {
        let f = parse_fields("A: 1\n  2\nB-C: x\nnot a field\n", 10);
        assert_eq!(
            f,
            vec![("a".into(), "1 2".into()), ("b-c".into(), "x".into())]
        );
    }

    #[test]
    fn html() {
        let t =
            strip_html("<html><style>p{}</style><p>Hi&nbsp;<b>there</b></p><br>x &lt;a@b.c&gt;");
        assert!(t.contains("Hi there"), "{t}");
        assert!(t.contains("<a@b.c>"));
        assert!(!t.contains("p{}"));
    }

    #[test]
    fn report_parts() {
        let raw = b"From: MAILER-DAEMON@example.org\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nhello\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nFinal-Recipient: rfc822; a@b.c\nStatus: 5.1.1\n--b\nContent-Type: message/rfc822\n\nTo: a@b.c\nSubject: s\n\nbody\n--b--\n";
        let m = parse(raw).unwrap();
        assert!(m.is_report);
        assert_eq!(m.texts.len(), 1);
        assert_eq!(m.dsn.len(), 1);
        assert!(m.original.as_deref().unwrap().contains("To: a@b.c"));
    }
}
