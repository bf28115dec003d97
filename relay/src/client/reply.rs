//! SMTP replies (RFC 5321 4.2) and the bounded line parser that reads them.

use std::fmt;

use postroad_queue::RemoteReply;

/// Longest reply line accepted, without its line ending. RFC 5321 4.5.3.1.5 allows 512;
/// real servers go beyond that in their text, so there is headroom.
pub const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply. An EHLO reply has ~15.
pub const MAX_LINES: usize = 100;

/// One complete reply from the server (or a local reason phrased as one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 enhanced status code (`5.1.1`) when the server gave one.
    pub enhanced: Option<String>,
    /// The text of every line (enhanced code removed), joined with `\n`.
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<&str>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: enhanced.map(str::to_string),
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Builds a reply from its lines (code and separator already removed). The enhanced
    /// code is taken from the first line and stripped from every line that repeats it.
    pub(super) fn from_lines(code: u16, lines: Vec<String>) -> Self {
        let enhanced = lines
            .first()
            .and_then(|first| enhanced_code(code, first))
            .map(str::to_string);
        let text = match &enhanced {
            Some(e) => {
                let strip = |line: &String| -> String {
                    match line.strip_prefix(e.as_str()) {
                        Some("") => String::new(),
                        Some(rest) if rest.starts_with(' ') => rest[1..].to_string(),
                        _ => line.clone(),
                    }
                };
                lines.iter().map(strip).collect::<Vec<_>>().join("\n")
            }
            None => lines.join("\n"),
        };
        Self {
            code,
            enhanced,
            text,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(e) => write!(f, "{} {e} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

impl From<Reply> for RemoteReply {
    fn from(r: Reply) -> Self {
        RemoteReply {
            code: r.code,
            enhanced: r.enhanced,
            text: r.text,
        }
    }
}

/// The RFC 3463 code at the start of `text` (`class "." subject "." detail`, class
/// matching the reply code's first digit, 1-3 digits each), if there is one.
fn enhanced_code(code: u16, text: &str) -> Option<&str> {
    let token = text.split(' ').next()?;
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let class_ok =
        class.len() == 1 && u16::from(class.as_bytes()[0].wrapping_sub(b'0')) == code / 100;
    (class_ok && matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3))
        .then_some(token)
}

/// One parsed reply line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line<'a> {
    pub code: u16,
    /// `false` for `250-...` (more lines follow).
    pub last: bool,
    pub text: &'a [u8],
}

/// Parses one line (line ending already removed): three digits (first 2-5), then `-`,
/// ` ` or nothing.
pub(super) fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    let bad = || {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        format!("malformed reply line {shown:?}")
    };
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(bad());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Ok(Line {
            code,
            last: true,
            text: &[],
        }),
        Some(b' ') => Ok(Line {
            code,
            last: true,
            text: &line[4..],
        }),
        Some(b'-') => Ok(Line {
            code,
            last: false,
            text: &line[4..],
        }),
        Some(_) => Err(bad()),
    }
}

/// Accumulates the lines of one reply.
#[derive(Default)]
pub(super) struct ReplyBuilder {
    code: u16,
    lines: Vec<String>,
}

impl ReplyBuilder {
    /// Adds a line; returns the reply once its last line has arrived.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, String> {
        let line = parse_line(raw)?;
        if self.lines.is_empty() {
            self.code = line.code;
        } else if line.code != self.code {
            return Err(format!(
                "reply lines with different codes ({} then {})",
                self.code, line.code
            ));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(format!("reply longer than {MAX_LINES} lines"));
        }
        self.lines
            .push(String::from_utf8_lossy(line.text).trim_end().to_string());
        if line.last {
            let lines = std::mem::take(&mut self.lines);
            return Ok(Some(Reply::from_lines(self.code, lines)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Reply, String> {
        let mut b = ReplyBuilder::default();
        for (i, l) in lines.iter().enumerate() {
            if let Some(r) = b.push(l.as_bytes())? {
                assert_eq!(i, lines.len() - 1, "reply ended early");
                return Ok(r);
            }
        }
        Err("incomplete".into())
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse(&["250 2.1.0 Ok"]).unwrap();
        assert_eq!(
            (r.code, r.enhanced.as_deref(), r.text.as_str()),
            (250, Some("2.1.0"), "Ok")
        );
        assert_eq!(r.to_string(), "250 2.1.0 Ok");
        let r = parse(&[
            "550-5.1.1 No such user",
            "550-5.1.1 here at all",
            "550 5.1.1 sorry",
        ])
        .unwrap();
        assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(r.text, "No such user\nhere at all\nsorry");
        assert!(r.is_permanent() && !r.is_transient() && !r.is_positive());
        let r = parse(&["250-smtp-sink", "250-PIPELINING", "250 "]).unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text, "smtp-sink\nPIPELINING\n");
        let r = parse(&["354"]).unwrap();
        assert!(r.is_intermediate());
        assert_eq!(r.text, "");
    }

    #[test]
    fn enhanced_code_must_match_the_class() {
        assert_eq!(parse(&["250 5.1.1 odd"]).unwrap().enhanced, None);
        assert_eq!(parse(&["451 4.7.1234 odd"]).unwrap().enhanced, None);
        assert_eq!(
            parse(&["451 4.7.1"]).unwrap().enhanced.as_deref(),
            Some("4.7.1")
        );
        assert_eq!(parse(&["220 1.2.3.4 ready"]).unwrap().enhanced, None);
        let r = RemoteReply::from(parse(&["451 4.3.0 try later"]).unwrap());
        assert_eq!(r.to_string(), "451 4.3.0 try later");
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "", "25", "hello", "2500 x", "650 x", "099 x", "25x ok", "250x",
        ] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(&["250-a", "251 b"]).is_err());
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_LINES + 1).collect();
        assert!(parse(&many).is_err());
    }
}
