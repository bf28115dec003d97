//! Command parsing: `smtp-proto` does the RFC 5321 grammar; this layer maps its errors
//! to replies and adds the checks it leaves to the server.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, Request};

use super::reply::{self, Reply};

pub type Command<'a> = Request<Cow<'a, str>>;

/// Parses one complete command line (ending in LF).
pub fn parse(line: &[u8]) -> Result<Command<'_>, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(500, "5.5.2", "Error: NUL byte in command"));
    }
    let request = Request::parse(&mut line.iter()).map_err(|e| match e {
        ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } => reply::UNRECOGNIZED,
        ParseError::InvalidSenderAddress => {
            Reply::new(501, "5.1.7", "Error: bad sender address syntax")
        }
        ParseError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Error: bad recipient address syntax")
        }
        ParseError::SyntaxError { syntax } => {
            Reply::owned(501, "5.5.4", format!("Syntax: {syntax}"))
        }
        ParseError::InvalidParameter { param } => Reply::owned(
            501,
            "5.5.4",
            format!("Error: invalid parameter {}", printable(param)),
        ),
        ParseError::UnsupportedParameter { param } => Reply::owned(
            555,
            "5.5.4",
            format!("Error: unsupported parameter {}", printable(&param)),
        ),
        ParseError::ResponseTooLong => reply::LINE_TOO_LONG,
        ParseError::InvalidResponse { .. } => reply::UNRECOGNIZED,
    })?;
    check_envelope_text(&request)?;
    Ok(request)
}

/// What smtp-proto accepts but RFC 5321/3461 do not allow, and what must never reach the
/// envelope (a relay sends it on in a command line, and a CR or LF there would inject
/// commands): control characters in an address, and in the xtext-decoded `ENVID=` and
/// `ORCPT=` values (`+0D+0A` decodes to CRLF, `+00` to NUL). Also BDAT chunk sizes
/// beyond any possible buffer.
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
        // No buffer can hold more than isize::MAX bytes, so no client can mean it; and
        // the session adds chunk sizes to what it has (smtp-proto passes sizes up to
        // usize::MAX - 1, which would overflow).
        Request::Bdat { chunk_size, .. } if *chunk_size > isize::MAX as usize => {
            return Err(Reply::new(501, "5.5.4", "Error: BDAT chunk size too large"));
        }
        _ => {}
    }
    Ok(())
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
            assert_eq!((reply.code, reply.enhanced), (501, "5.5.4"), "{line:?}");
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
            assert_eq!((reply.code, reply.enhanced), (501, "5.5.4"), "{line:?}");
        }
        assert!(matches!(
            parse(b"BDAT 9223372036854775807 LAST\r\n"),
            Ok(Request::Bdat {
                chunk_size: 9223372036854775807,
                is_last: true
            })
        ));
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\u{7}b\tc"), "abc");
    }
}
