//! Command parsing: `smtp-proto` does the RFC 5321 grammar; this layer maps its errors
//! to replies and adds the checks it leaves to the server.
//!
//! Two things smtp-proto gets wrong are put right here, from the raw line:
//! * numbers (`BDAT` chunk sizes, `SIZE=`): smtp-proto wraps an overflowing number
//!   round to a small one (`BDAT 184467440737095516165` reads as 5), which would let a
//!   chunk's bytes run as commands; [`esmtp_number`] reads them exactly;
//! * quoted local parts: smtp-proto hands them out unquoted (`"a b"@x.test` becomes
//!   `a b@x.test`); [`mailbox`] quotes them again where RFC 5321 needs it.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, Request};

use super::reply::{self, EnhancedCode, Reply};

pub type Command<'a> = Request<Cow<'a, str>>;

/// Parses one complete command line (ending in LF).
pub fn parse(line: &[u8]) -> Result<Command<'_>, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(500, "5.5.2", "Error: NUL byte in command"));
    }
    // Before smtp-proto, which reads some such sizes as small numbers and refuses
    // others as invalid.
    let declared_size = if is_mail(line) {
        mail_size(line)?
    } else {
        None
    };
    let mut request = Request::parse(&mut line.iter()).map_err(|e| match e {
        ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } => reply::UNRECOGNIZED,
        ParseError::InvalidSenderAddress => {
            Reply::new(501, "5.1.7", "Error: bad sender address syntax")
        }
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Error: bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => Reply::owned(
            501,
            Some(EnhancedCode::new(5, 5, 4)),
            format!("Syntax: {syntax}"),
        ),
        ParseError::InvalidParameter { param } => Reply::owned(
            501,
            Some(EnhancedCode::new(5, 5, 4)),
            format!("Error: invalid parameter {}", printable(param)),
        ),
        ParseError::UnsupportedParameter { param } => Reply::owned(
            555,
            Some(EnhancedCode::new(5, 5, 4)),
            format!("Error: unsupported parameter {}", printable(&param)),
        ),
        ParseError::ResponseTooLong => reply::LINE_TOO_LONG,
        ParseError::InvalidResponse { .. } => reply::UNRECOGNIZED,
    })?;
    check_envelope_text(&request)?;
    if let (Request::Mail { from }, Some(size)) = (&mut request, declared_size) {
        from.size = size;
    }
    exact_bdat_size(line, &mut request)?;
    requote(&mut request);
    Ok(request)
}

/// What smtp-proto accepts but RFC 5321/3461 do not allow, and what must never reach the
/// envelope (a relay sends it on in a command line, and a CR or LF there would inject
/// commands): control characters in an address, and in the xtext-decoded `ENVID=` and
/// `ORCPT=` values (`+0D+0A` decodes to CRLF, `+00` to NUL).
fn check_envelope_text(request: &Command<'_>) -> Result<(), Reply> {
    let has_control = |text: &str| text.chars().any(char::is_control);
    match request {
        Request::Mail { from } => {
            if has_control(&from.address) {
                return Err(Reply::new(501, "5.1.7", "Error: bad sender address syntax"));
            }
            if from.env_id.as_deref().is_some_and(has_control) {
                return Err(Reply::new(501, "5.5.4", "Error: invalid parameter ENVID"));
            }
        }
        Request::Rcpt { to } => {
            if has_control(&to.address) {
                return Err(Reply::new(
                    501,
                    "5.1.3",
                    "Error: bad recipient address syntax",
                ));
            }
            if to.orcpt.as_deref().is_some_and(has_control) {
                return Err(Reply::new(501, "5.5.4", "Error: invalid parameter ORCPT"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a numeric ESMTP argument was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Empty, or something other than ASCII digits.
    NotANumber,
    /// Digits whose value does not fit in 64 bits.
    TooLarge,
}

/// An ESMTP number (`1*DIGIT`, RFC 1870 / RFC 3030), read exactly: leading zeros are
/// fine, any value past `u64::MAX` is [`NumberError::TooLarge`], never wrapped.
pub fn esmtp_number(text: &[u8]) -> Result<u64, NumberError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(NumberError::NotANumber);
    }
    text.iter().try_fold(0u64, |value, digit| {
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .ok_or(NumberError::TooLarge)
    })
}

const BDAT_SIZE_REFUSED: Reply = Reply::new(
    501,
    "5.5.4",
    "Error: BDAT chunk size must be a number below 2^63",
);

/// The last `SIZE=` of a MAIL line, read exactly: one past 64 bits is over any limit
/// (`552`), one that is not a number a syntax error.
fn mail_size(line: &[u8]) -> Result<Option<usize>, Reply> {
    let mut size = None;
    for (key, value) in mail_parameters(line) {
        if key.eq_ignore_ascii_case(b"SIZE") {
            size = Some(match esmtp_number(value) {
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(NumberError::TooLarge) => return Err(reply::TOO_BIG),
                Err(NumberError::NotANumber) => {
                    return Err(Reply::new(501, "5.5.4", "Error: invalid parameter SIZE"));
                }
            });
        }
    }
    Ok(size)
}

/// Replaces smtp-proto's reading of a BDAT chunk size with an exact one: a size that
/// does not fit is a syntax error (no buffer could hold it, and reading it as anything
/// else desynchronises us from the client).
fn exact_bdat_size(line: &[u8], request: &mut Command<'_>) -> Result<(), Reply> {
    if let Request::Bdat { chunk_size, .. } = request {
        let size = words(line).nth(1).unwrap_or_default();
        match esmtp_number(size) {
            Ok(n) if n <= isize::MAX as u64 => *chunk_size = n as usize,
            _ => return Err(BDAT_SIZE_REFUSED),
        }
    }
    Ok(())
}

fn is_mail(line: &[u8]) -> bool {
    line.get(..5)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"MAIL "))
}

/// The space-separated words of a command line, without its line ending.
fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

/// The `KEY=value` parameters after the path of a MAIL command. The path is skipped
/// with its quoting in mind, so a `>` or ` SIZE=` inside a quoted local part is not
/// taken for the end of the path.
fn mail_parameters(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let rest = line
        .iter()
        .position(|&b| b == b'<')
        .map(|open| &line[open + 1..])
        .map(|path| {
            let mut quoted = false;
            let mut escaped = false;
            let end = path.iter().position(|&b| {
                if escaped {
                    escaped = false;
                } else if quoted && b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    quoted = !quoted;
                } else if b == b'>' && !quoted {
                    return true;
                }
                false
            });
            end.map_or(&path[path.len()..], |end| &path[end + 1..])
        })
        .unwrap_or_default();
    words(rest).map(|word| match word.iter().position(|&b| b == b'=') {
        Some(eq) => (&word[..eq], &word[eq + 1..]),
        None => (word, &word[word.len()..]),
    })
}

/// Puts back the quotes smtp-proto took off a local part.
fn requote(request: &mut Command<'_>) {
    let address = match request {
        Request::Mail { from } => &mut from.address,
        Request::Rcpt { to } => &mut to.address,
        _ => return,
    };
    if let Some(quoted) = mailbox(address) {
        *address = Cow::Owned(quoted);
    }
}

/// The address in its RFC 5321 form when that differs from `address`: a local part
/// that is not a dot-atom (`a b`, `u@y`, `a..b`) is quoted, with `"` and `\` escaped.
/// The domain is what follows the last `@` (a domain never holds one), so
/// `"u@y.test"@x.test` keeps its domain `x.test`.
pub fn mailbox(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    if is_dot_atom(local) {
        return None;
    }
    let mut quoted = String::with_capacity(address.len() + 4);
    quoted.push('"');
    for c in local.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push_str("\"@");
    quoted.push_str(domain);
    Some(quoted)
}

/// RFC 5321 `Dot-string` (with RFC 6531's UTF-8 `atext`).
fn is_dot_atom(local: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// Text from the client made safe to echo in a reply or a header: printable ASCII only,
/// at most 64 characters.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_with_dsn_parameters() {
        let Ok(Request::Mail { from }) =
            parse(b"MAIL FROM:<a@b.test> SIZE=100 RET=HDRS ENVID=xyz BODY=8BITMIME\r\n")
        else {
            panic!("MAIL did not parse");
        };
        assert_eq!(from.address, "a@b.test");
        assert_eq!(from.size, 100);
        assert_eq!(from.env_id.as_deref(), Some("xyz"));
        assert_ne!(from.flags & smtp_proto::MAIL_RET_HDRS, 0);
        assert_ne!(from.flags & smtp_proto::MAIL_BODY_8BITMIME, 0);
    }

    #[test]
    fn garbage_gets_a_reply_not_a_panic() {
        for line in [
            &b"\xff\xfe\xfd\r\n"[..],
            b"\0\0\0\n",
            b"MAIL FROM:<\xc3\x28@x.test>\r\n",
            b"RCPT TO:<<<>>>\r\n",
            b"\r\n",
            b"MAIL\r\n",
            b"BDAT x LAST\r\n",
        ] {
            let reply = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert!(reply.code >= 500, "{line:?}: {reply:?}");
        }
    }

    /// Found by `fuzz/` (smtp_command): xtext escapes decode to control characters.
    #[test]
    fn control_characters_never_reach_the_envelope() {
        for line in [
            &b"RCPT TO:<>ORCPT=rfc822;+00\r\n"[..],
            b"RCPT TO:<r@b.test> ORCPT=rfc822;r@b.test+0D+0AQUIT\r\n",
            b"MAIL FROM:<a@b.test> ENVID=x+0D+0ARSET\r\n",
            b"MAIL FROM:<a@b.test> ENVID=+00\r\n",
        ] {
            let reply = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert_eq!(reply.to_string().get(..9), Some("501 5.5.4"), "{line:?}");
        }
        // Printable xtext escapes are still fine.
        let Ok(Request::Rcpt { to }) = parse(b"RCPT TO:<r@b.test> ORCPT=rfc822;r+2Bx@b.test\r\n")
        else {
            panic!("RCPT did not parse");
        };
        assert_eq!(to.orcpt.as_deref(), Some("r+x@b.test"));
    }

    /// smtp-proto accepts chunk sizes up to usize::MAX - 1; the session's size check
    /// overflowed on them (a panic) once a chunk had been received.
    #[test]
    fn absurd_bdat_chunk_sizes_are_refused() {
        for line in [
            &b"BDAT 18446744073709551614\r\n"[..],
            b"BDAT 9223372036854775808 LAST\r\n",
        ] {
            let reply = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert_eq!(reply.to_string().get(..9), Some("501 5.5.4"), "{line:?}");
        }
        assert!(matches!(
            parse(b"BDAT 9223372036854775807 LAST\r\n"),
            Ok(Request::Bdat {
                chunk_size: 9223372036854775807,
                is_last: true
            })
        ));
    }

    /// smtp-proto reads a number past 2^64 as its last few digits: `BDAT` of 21 digits
    /// would take a 5-byte chunk and run the rest as commands.
    #[test]
    fn numbers_past_64_bits_are_never_wrapped() {
        for line in [
            &b"BDAT 184467440737095516165 LAST\r\n"[..],
            b"BDAT 18446744073709551616\r\n",
            b"BDAT 99999999999999999999999999999999999999999999999999999999999999999999 LAST\r\n",
            b"BDAT 1\r2 LAST\r\n",
        ] {
            let reply = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert_eq!(reply.to_string().get(..9), Some("501 5.5.4"), "{line:?}");
        }
        assert!(matches!(
            parse(b"BDAT 000000000000000000000000042 LAST\r\n"),
            Ok(Request::Bdat {
                chunk_size: 42,
                is_last: true
            })
        ));
        for line in [
            &b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999999\r\n"[..],
            b"MAIL FROM:<a@b.test> SIZE=18446744073709551616\r\n",
            b"mail FROM:<a@b.test> BODY=8BITMIME size=123456789012345678901\r\n",
            b"MAIL FROM:<\"x SIZE=1\"@b.test> SIZE=123456789012345678901\r\n",
        ] {
            assert_eq!(parse(line).err(), Some(reply::TOO_BIG), "{line:?}");
        }
        for (line, size) in [
            (
                &b"MAIL FROM:<a@b.test> SIZE=0000000000000000000000001000\r\n"[..],
                1000,
            ),
            (
                b"MAIL FROM:<a@b.test> SIZE=10000000000000000000\r\n",
                10_000_000_000_000_000_000,
            ),
        ] {
            let Ok(Request::Mail { from }) = parse(line) else {
                panic!("{line:?} did not parse");
            };
            assert_eq!(from.size, size, "{line:?}");
        }
        assert_eq!(esmtp_number(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            esmtp_number(b"18446744073709551616"),
            Err(NumberError::TooLarge)
        );
        assert_eq!(esmtp_number(b""), Err(NumberError::NotANumber));
        assert_eq!(esmtp_number(b"+1"), Err(NumberError::NotANumber));
    }

    #[test]
    fn quoted_local_parts_keep_their_quotes() {
        for (line, address) in [
            (
                &b"RCPT TO:<\"a b\"@other.test>\r\n"[..],
                r#""a b"@other.test"#,
            ),
            (
                b"RCPT TO:<\"user@other.test\"@localhost>\r\n",
                r#""user@other.test"@localhost"#,
            ),
            (b"RCPT TO:<\"a\\\"b\"@x.test>\r\n", r#""a\"b"@x.test"#),
            (b"RCPT TO:<\"plain\"@x.test>\r\n", "plain@x.test"),
            (
                b"RCPT TO:<first.last+tag@x.test>\r\n",
                "first.last+tag@x.test",
            ),
        ] {
            let Ok(Request::Rcpt { to }) = parse(line) else {
                panic!("{line:?} did not parse");
            };
            assert_eq!(to.address, address, "{line:?}");
        }
        let Ok(Request::Mail { from }) = parse(b"MAIL FROM:<\"a b\"@x.test>\r\n") else {
            panic!("MAIL did not parse");
        };
        assert_eq!(from.address, r#""a b"@x.test"#);
        assert_eq!(mailbox("a..b@x.test").as_deref(), Some(r#""a..b"@x.test"#));
        assert_eq!(mailbox("postmaster"), None);
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\u{7}b\tc"), "abc");
    }
}
