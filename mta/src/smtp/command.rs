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
    Request::parse(&mut line.iter()).map_err(|e| match e {
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
    })
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

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\u{7}b\tc"), "abc");
    }
}
