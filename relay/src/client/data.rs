//! What the client writes: MAIL/RCPT command lines with their ESMTP parameters, and the
//! message data (dot-stuffed, CRLF line endings, terminated with `.`).

use postroad_queue::{DsnRet, Envelope, Notify, Recipient};

use smtp_wire::Capabilities as Extensions;

/// `MAIL FROM:<sender> [SIZE=] [BODY=8BITMIME] [SMTPUTF8] [RET=] [ENVID=]\r\n`: the
/// sender given (the envelope's, or a VERP return path), the envelope's parameters.
pub(super) fn mail_from(
    out: &mut Vec<u8>,
    sender: &str,
    envelope: &Envelope,
    size: usize,
    ext: &Extensions,
) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(sender.as_bytes());
    out.push(b'>');
    if ext.size.is_some() {
        out.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    if envelope.body_8bit && ext.eight_bit_mime {
        out.extend_from_slice(b" BODY=8BITMIME");
    }
    if envelope.smtputf8 && ext.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if ext.dsn {
        match envelope.dsn_ret {
            Some(DsnRet::Full) => out.extend_from_slice(b" RET=FULL"),
            Some(DsnRet::Headers) => out.extend_from_slice(b" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &envelope.dsn_envid {
            out.extend_from_slice(b" ENVID=");
            xtext(out, envid.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `RCPT TO:<address> [NOTIFY=] [ORCPT=rfc822;]\r\n`.
pub(super) fn rcpt_to(out: &mut Vec<u8>, rcpt: &Recipient, ext: &Extensions) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(rcpt.address.as_bytes());
    out.push(b'>');
    if ext.dsn {
        if let Some(notify) = notify(&rcpt.notify) {
            out.extend_from_slice(b" NOTIFY=");
            out.extend_from_slice(notify.as_bytes());
        }
        if let Some(orcpt) = &rcpt.orcpt {
            out.extend_from_slice(b" ORCPT=rfc822;");
            xtext(out, orcpt.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The `NOTIFY=` value, or `None` when the client gave none.
fn notify(n: &Notify) -> Option<String> {
    if n.never {
        return Some("NEVER".into());
    }
    let words: Vec<&str> = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect();
    (!words.is_empty()).then(|| words.join(","))
}

/// RFC 3461 4 xtext: `+` followed by two upper-case hex digits for `+`, `=`, and bytes
/// outside `!`..`~`.
pub(super) fn xtext(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// A path that is safe to put between `<` and `>` on a command line: no control
/// characters (a CR or LF would inject commands).
pub(super) fn is_safe_path(path: &str) -> bool {
    !path.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Turns a message body into SMTP data a block at a time, so the whole message is never
/// copied: lines get CRLF endings (a bare LF becomes CRLF), a line starting with `.`
/// gets another `.` (RFC 5321 4.5.2), a last line without an ending gets one, and the
/// data ends with `.` CRLF.
pub(super) struct DataEncoder<'a> {
    body: &'a [u8],
    pos: usize,
    line_start: bool,
    done: bool,
}

impl<'a> DataEncoder<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            pos: 0,
            line_start: true,
            done: false,
        }
    }

    /// Appends encoded data to `out` until it holds at least `limit` bytes (it may go a
    /// few bytes over) or the data is complete. Returns whether it is complete.
    pub fn fill(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        while !self.done && out.len() < limit {
            let rest = &self.body[self.pos..];
            if rest.is_empty() {
                if !self.line_start {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
                self.done = true;
                break;
            }
            if self.line_start {
                if rest[0] == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
            }
            // At least 2 bytes, so that holding back a trailing CR still makes progress.
            let room = limit.saturating_sub(out.len()).max(2);
            let window = &rest[..rest.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    let line = &window[..i];
                    out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                    out.extend_from_slice(b"\r\n");
                    self.pos += i + 1;
                    self.line_start = true;
                }
                None => {
                    // A CR at the end of this block may be the first half of a CRLF.
                    let mut take = window.len();
                    if take < rest.len() && window[take - 1] == b'\r' {
                        take -= 1;
                    }
                    out.extend_from_slice(&window[..take]);
                    self.pos += take;
                }
            }
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(body: &[u8], limit: usize) -> Vec<u8> {
        let mut enc = DataEncoder::new(body);
        let mut all = Vec::new();
        loop {
            let mut block = Vec::new();
            let done = enc.fill(&mut block, limit);
            assert!(
                block.len() <= limit + 5,
                "block of {} for limit {limit}",
                block.len()
            );
            all.extend_from_slice(&block);
            if done {
                return all;
            }
        }
    }

    #[test]
    fn stuffing_and_line_endings() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"x\r\n.\r\n..y\r\n", b"x\r\n..\r\n...y\r\n.\r\n"),
            (b"bare\nlf\n.dot", b"bare\r\nlf\r\n..dot\r\n.\r\n"),
            (b"cr\ronly\r\n", b"cr\ronly\r\n.\r\n"),
            (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
            (b"end with cr\r", b"end with cr\r\r\n.\r\n"),
        ];
        for (body, want) in cases {
            for limit in [1, 2, 3, 4, 7, 64 * 1024] {
                assert_eq!(
                    encode(body, limit),
                    want,
                    "body {:?} limit {limit}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn block_boundaries_never_change_the_result() {
        let mut body = Vec::new();
        for i in 0..500 {
            body.extend_from_slice(if i % 3 == 0 {
                b".line\r\n"
            } else {
                b"text\r\r\n"
            });
            body.extend_from_slice(&vec![b'x'; i % 37]);
            body.push(b'\n');
        }
        let want = encode(&body, 1 << 20);
        for limit in [2, 3, 5, 8, 13, 100, 4096] {
            assert_eq!(encode(&body, limit), want, "limit {limit}");
        }
    }

    #[test]
    fn xtext_and_notify() {
        let mut out = Vec::new();
        xtext(&mut out, "a+b=c d\u{e9}".as_bytes());
        assert_eq!(out, b"a+2Bb+3Dc+20d+C3+A9");
        assert_eq!(notify(&Notify::default()), None);
        let n = Notify {
            success: true,
            delay: true,
            ..Notify::default()
        };
        assert_eq!(notify(&n).as_deref(), Some("SUCCESS,DELAY"));
        let n = Notify {
            never: true,
            ..Notify::default()
        };
        assert_eq!(notify(&n).as_deref(), Some("NEVER"));
    }

    #[test]
    fn commands() {
        let mut env = Envelope::new("", vec![], "127.0.0.1".parse().unwrap());
        env.body_8bit = true;
        env.dsn_ret = Some(DsnRet::Headers);
        env.dsn_envid = Some("id+1".into());
        let all = Extensions {
            size: Some(0),
            eight_bit_mime: true,
            dsn: true,
            ..Extensions::default()
        };
        let mut out = Vec::new();
        mail_from(&mut out, &env.sender, &env, 42, &all);
        assert_eq!(
            out,
            b"MAIL FROM:<> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+2B1\r\n"
        );
        out.clear();
        mail_from(&mut out, &env.sender, &env, 42, &Extensions::default());
        assert_eq!(out, b"MAIL FROM:<>\r\n");
        let mut rcpt = Recipient::new("a@b.example");
        rcpt.notify.failure = true;
        rcpt.orcpt = Some("A@B.example".into());
        out.clear();
        rcpt_to(&mut out, &rcpt, &all);
        assert_eq!(
            out,
            b"RCPT TO:<a@b.example> NOTIFY=FAILURE ORCPT=rfc822;A@B.example\r\n"
        );
        out.clear();
        rcpt_to(&mut out, &rcpt, &Extensions::default());
        assert_eq!(out, b"RCPT TO:<a@b.example>\r\n");
        assert!(is_safe_path("a@b") && is_safe_path("") && !is_safe_path("a\r\nRSET@b"));
    }
}
