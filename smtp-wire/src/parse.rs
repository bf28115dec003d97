//! The one reply parser: bytes in, bounded replies out, with no I/O of its own
//! ([`ReplyBuffer`]); the async readers in [`crate::stream`] feed it.

use crate::{EnhancedCode, Reply};

/// Longest reply line accepted, without its line ending. RFC 5321 4.5.3.1.5 allows 512;
/// real servers go beyond that in their text, so there is headroom.
pub const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply. An EHLO reply has ~15.
pub const MAX_LINES: usize = 100;

/// Input that is not a well-formed reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply lines with different codes ({first} then {then})")]
    MixedCodes { first: u16, then: u16 },
    #[error("reply longer than {MAX_LINES} lines")]
    TooManyLines,
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// One parsed reply line.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub code: u16,
    /// `false` for `250-...` (more lines follow).
    pub last: bool,
    pub text: &'a [u8],
}

/// Parses one line (line ending already removed): three digits (first 2-5), then `-`,
/// ` ` or nothing.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, ReplyError> {
    let bad =
        || ReplyError::Malformed(String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned());
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(bad());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(bad()),
    };
    Ok(Line { code, last, text })
}

/// The RFC 3463 code at the start of a reply line, if it has one whose class matches
/// the reply code's first digit.
fn enhanced_prefix(code: u16, text: &str) -> Option<EnhancedCode> {
    let token = text.split(' ').next()?;
    EnhancedCode::parse(token).filter(|e| u16::from(e.class) == code / 100)
}

/// Accumulates the lines of one reply.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: u16,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Adds a line (without its line ending); returns the reply once its last line has
    /// arrived. After an error the parser is empty again.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.push_inner(raw);
        if result.is_err() {
            self.lines.clear();
        }
        result
    }

    fn push_inner(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if raw.len() > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let line = parse_line(raw)?;
        if self.lines.is_empty() {
            self.code = line.code;
        } else if line.code != self.code {
            return Err(ReplyError::MixedCodes {
                first: self.code,
                then: line.code,
            });
        }
        if self.lines.len() >= MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines
            .push(String::from_utf8_lossy(line.text).trim_end().to_string());
        if !line.last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        Ok(Some(finish(self.code, lines)))
    }
}

/// The reply of `lines`: the enhanced code is taken from the first line and removed
/// from every line that repeats it.
fn finish(code: u16, lines: Vec<String>) -> Reply {
    let enhanced = lines.first().and_then(|l| enhanced_prefix(code, l));
    let text = match enhanced {
        Some(_) => {
            // The code as the server wrote it (`5.01.1` parses as 5.1.1).
            let token = lines[0].split(' ').next().unwrap_or_default().to_string();
            let strip = |line: &String| -> String {
                match line.strip_prefix(token.as_str()) {
                    Some("") => String::new(),
                    Some(rest) if rest.starts_with(' ') => rest[1..].to_string(),
                    _ => line.clone(),
                }
            };
            lines.iter().map(strip).collect::<Vec<_>>().join("\n")
        }
        None => lines.join("\n"),
    };
    Reply::owned(code, enhanced, text)
}

/// Bytes read from a server, and the replies in them: the caller reads into
/// [`ReplyBuffer::spare`] and takes replies with [`ReplyBuffer::next_reply`].
#[derive(Debug)]
pub struct ReplyBuffer {
    buf: Vec<u8>,
    pos: usize,
    parser: ReplyParser,
}

impl Default for ReplyBuffer {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(1024),
            pos: 0,
            parser: ReplyParser::default(),
        }
    }
}

impl ReplyBuffer {
    /// The next complete reply in what has been read, `None` when more input is needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        while let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
            let start = self.pos;
            self.pos = start + i + 1;
            let line = &self.buf[start..start + i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(reply) = self.parser.push(line)? {
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                return Ok(Some(reply));
            }
        }
        if self.buf.len() - self.pos > MAX_LINE + 1 {
            return Err(ReplyError::LineTooLong);
        }
        Ok(None)
    }

    /// Whether bytes were read that no reply has taken yet.
    pub fn has_unread(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Drops what was read but not taken (before a TLS handshake, say).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.parser = ReplyParser::default();
    }

    /// The buffer to read more input into (append only): consumed bytes are dropped
    /// first and room for a read is made.
    pub fn spare(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(4096);
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Reply, ReplyError> {
        let mut b = ReplyParser::default();
        for (i, l) in lines.iter().enumerate() {
            if let Some(r) = b.push(l.as_bytes())? {
                assert_eq!(i, lines.len() - 1, "reply ended early");
                return Ok(r);
            }
        }
        panic!("incomplete");
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse(&["250 2.1.0 Ok"]).unwrap();
        assert_eq!(
            (r.code, r.enhanced, &*r.text),
            (250, EnhancedCode::parse("2.1.0"), "Ok")
        );
        assert_eq!(r.to_string(), "250 2.1.0 Ok");
        let r = parse(&[
            "550-5.1.1 No such user",
            "550-5.1.1 here at all",
            "550 5.1.1 sorry",
        ])
        .unwrap();
        assert_eq!(r.enhanced, EnhancedCode::parse("5.1.1"));
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
            parse(&["451 4.7.1"]).unwrap().enhanced,
            Some(EnhancedCode::new(4, 7, 1))
        );
        assert_eq!(parse(&["220 1.2.3.4 ready"]).unwrap().enhanced, None);
        // Written with a leading zero: the code is read, and the text is without it.
        let r = parse(&["550-5.01.1 no", "550 5.01.1 user"]).unwrap();
        assert_eq!(
            (r.enhanced, &*r.text),
            (Some(EnhancedCode::new(5, 1, 1)), "no\nuser")
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "", "25", "hello", "2500 x", "650 x", "099 x", "25x ok", "250x",
        ] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let mut p = ReplyParser::default();
        assert!(p.push(b"250-a").unwrap().is_none());
        assert_eq!(
            p.push(b"251 b"),
            Err(ReplyError::MixedCodes {
                first: 250,
                then: 251
            })
        );
        // The parser starts afresh after an error.
        assert_eq!(p.push(b"220 ok").unwrap().unwrap().code, 220);
        let mut p = ReplyParser::default();
        let err = (0..=MAX_LINES).find_map(|_| p.push(b"250-x").err());
        assert_eq!(err, Some(ReplyError::TooManyLines));
    }

    fn replies(input: &[u8]) -> (Vec<Reply>, Option<ReplyError>, bool) {
        let mut b = ReplyBuffer::default();
        let mut out = Vec::new();
        // Fed in small pieces, as a network would.
        for chunk in input.chunks(7) {
            b.spare().extend_from_slice(chunk);
            loop {
                match b.next_reply() {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e), b.has_unread()),
                }
            }
        }
        (out, None, b.has_unread())
    }

    #[test]
    fn buffer_frames_replies() {
        let (got, err, unread) = replies(
            b"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n354\r\n250 ok\n",
        );
        assert_eq!(err, None);
        assert!(!unread);
        let codes: Vec<u16> = got.iter().map(|r| r.code).collect();
        assert_eq!(codes, [220, 250, 354, 250]);
        assert_eq!(got[1].text, "mx.test\nPIPELINING\nCHUNKING");
        // A reply cut off leaves its bytes unread.
        let (got, err, unread) = replies(b"250 o");
        assert!(got.is_empty() && err.is_none() && unread);
        // Over-long lines are refused, with or without their line ending yet.
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE * 2, b'x');
        assert_eq!(replies(&long).1, Some(ReplyError::LineTooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(replies(&long).1, Some(ReplyError::LineTooLong));
    }
}
