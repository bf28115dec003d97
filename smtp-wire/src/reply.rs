//! SMTP replies (RFC 5321 4.2): a code, an optional enhanced status code and text, and
//! what decided a delivery attempt when no server replied ([`Response::Local`]).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::EnhancedCode;

/// One complete reply, as a server sends it or a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    pub code: u16,
    /// The RFC 3463 code, when the reply has one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of every line (the enhanced code removed), joined with `\n`.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A constant reply: `enhanced` is `""` for none, else a code checked at compile
    /// time.
    pub const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self {
            code,
            enhanced: if enhanced.is_empty() {
                None
            } else {
                Some(EnhancedCode::from_static(enhanced))
            },
            text: Cow::Borrowed(text),
        }
    }

    pub fn owned(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: Cow::Owned(text.into()),
        }
    }

    /// The lines of the text.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 to DATA, 334 to AUTH).
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

    /// The server asks us to slow down: 421 (closing the channel), any `4.7.x` status
    /// on a 4xx reply, or a temporary reply whose text says so in the words big
    /// receivers use ("rate limited", "too many connections", ...).
    pub fn is_throttle(&self) -> bool {
        if self.code == 421 {
            return true;
        }
        if !self.is_transient() {
            return false;
        }
        if self
            .enhanced
            .is_some_and(|e| e.class == 4 && e.subject == 7)
        {
            return true;
        }
        text_says_throttle(&self.text)
    }

    /// Appends the wire form (`250 2.0.0 Ok\r\n`) to `out`; each line of the text is
    /// one line of a multi-line reply (`250-first`, ..., `250 last`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            // Writing to a Vec cannot fail.
            let _ = match self.enhanced {
                Some(e) => write!(out, "{}{sep}{e} {line}\r\n", self.code),
                None => write!(out, "{}{sep}{line}\r\n", self.code),
            };
        }
    }
}

/// Phrases receivers put in replies that mean "you are sending too fast" (Gmail's
/// "rate limited", Outlook's "too many connections", Yahoo's "TS" deferrals ...),
/// lowercase.
const THROTTLE_PHRASES: &[&str] = &[
    "rate limit",
    "ratelimit",
    "rate-limit",
    "too many connections",
    "too many concurrent",
    "too many messages",
    "too many recipients this session",
    "throttl",
    "slow down",
    "exceeded the rate",
    "temporarily deferred due to unexpected volume",
    "try again later, closing connection",
];

fn text_says_throttle(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    THROTTLE_PHRASES.iter().any(|p| lower.contains(p))
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(e) => write!(f, "{} {e} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// A reason of our own for a delivery attempt's result, where no server replied (DNS,
/// connection, TLS, time-out, a policy): it has a status code but no reply code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalReason {
    pub enhanced: EnhancedCode,
    pub text: String,
}

/// What decided one recipient's result in one attempt.
///
/// Serialized flat, as `{"code": 550, "enhanced": "5.1.1", "text": "..."}` for a
/// reply and without `code` (`null` in JSON) for a local reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "ResponseRecord", try_from = "ResponseRecord")]
pub enum Response {
    /// The server replied.
    Remote(Reply),
    /// No server reply decided it.
    Local(LocalReason),
}

impl Response {
    pub fn local(enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Response::Local(LocalReason {
            enhanced,
            text: text.into(),
        })
    }

    /// The reply code, for a remote reply.
    pub fn code(&self) -> Option<u16> {
        match self {
            Response::Remote(r) => Some(r.code),
            Response::Local(_) => None,
        }
    }

    pub fn enhanced(&self) -> Option<EnhancedCode> {
        match self {
            Response::Remote(r) => r.enhanced,
            Response::Local(l) => Some(l.enhanced),
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Response::Remote(r) => &r.text,
            Response::Local(l) => &l.text,
        }
    }

    /// The server's reply, if one decided it.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Response::Remote(r) => Some(r),
            Response::Local(_) => None,
        }
    }

    /// A 5xx reply, or a local reason with a 5.x.x status.
    pub fn is_permanent(&self) -> bool {
        match self {
            Response::Remote(r) => r.is_permanent(),
            Response::Local(l) => l.enhanced.is_permanent(),
        }
    }

    /// A 4xx reply, or a local reason with a 4.x.x status.
    pub fn is_transient(&self) -> bool {
        match self {
            Response::Remote(r) => r.is_transient(),
            Response::Local(l) => l.enhanced.is_transient(),
        }
    }

    /// Whether it asks us to slow down (see [`Reply::is_throttle`]); a local reason
    /// never does.
    pub fn is_throttle(&self) -> bool {
        matches!(self, Response::Remote(r) if r.is_throttle())
    }
}

/// The stored form of a [`Response`].
#[derive(Serialize, Deserialize)]
struct ResponseRecord {
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    text: String,
}

impl From<Response> for ResponseRecord {
    fn from(r: Response) -> Self {
        match r {
            Response::Remote(r) => ResponseRecord {
                code: Some(r.code),
                enhanced: r.enhanced,
                text: r.text.into_owned(),
            },
            Response::Local(l) => ResponseRecord {
                code: None,
                enhanced: Some(l.enhanced),
                text: l.text,
            },
        }
    }
}

impl TryFrom<ResponseRecord> for Response {
    type Error = String;

    fn try_from(r: ResponseRecord) -> Result<Self, Self::Error> {
        match (r.code, r.enhanced) {
            // Code 0 is how records before the local variant spelled "no reply".
            (Some(0) | None, Some(enhanced)) => Ok(Response::local(enhanced, r.text)),
            (Some(0) | None, None) => Err("a local reason needs an enhanced status code".into()),
            (Some(code), enhanced) if (200..600).contains(&code) => {
                Ok(Response::Remote(Reply::owned(code, enhanced, r.text)))
            }
            (Some(code), _) => Err(format!("{code} is not an SMTP reply code")),
        }
    }
}

impl From<Reply> for Response {
    fn from(r: Reply) -> Self {
        Response::Remote(r)
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Remote(r) => r.fmt(f),
            Response::Local(l) => write!(f, "{} {}", l.enhanced, l.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        Reply::new(554, "5.7.1", "Relay access denied").write_to(&mut out);
        assert_eq!(out, b"554 5.7.1 Relay access denied\r\n");
        out.clear();
        Reply::owned(250, None, "mx.test\nPIPELINING\nSIZE 10").write_to(&mut out);
        assert_eq!(out, b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        out.clear();
        Reply::new(550, "5.1.1", "no\nsuch user").write_to(&mut out);
        assert_eq!(out, b"550-5.1.1 no\r\n550 5.1.1 such user\r\n");
    }

    #[test]
    fn classes() {
        let r = |code, e: &'static str, t: &'static str| Reply::new(code, e, t);
        assert!(r(250, "2.0.0", "Ok").is_positive());
        assert!(r(354, "", "go").is_intermediate());
        assert!(r(451, "4.3.0", "later").is_transient());
        assert!(r(550, "5.1.1", "no").is_permanent());
        // throttling
        assert!(r(421, "4.7.0", "closing").is_throttle());
        assert!(r(421, "", "bye").is_throttle());
        assert!(r(451, "4.7.1", "greylisted, come back").is_throttle());
        // A per-recipient limit (Gmail's 4.2.1) is no reason to slow the whole site.
        assert!(
            !r(
                450,
                "4.2.1",
                "The user is receiving mail at a rate that prevents additional messages"
            )
            .is_throttle()
        );
        assert!(r(452, "4.2.2", "Rate limited, slow down please").is_throttle());
        assert!(r(451, "", "Too many connections from your IP").is_throttle());
        assert!(!r(451, "4.3.0", "queue file write error").is_throttle());
        assert!(!r(550, "5.7.1", "rate limit exceeded").is_throttle());
        assert!(!r(250, "2.0.0", "rate limit fine").is_throttle());
    }

    #[test]
    fn responses() {
        let local = Response::local(EnhancedCode::new(4, 4, 1), "connection refused");
        assert_eq!(local.code(), None);
        assert_eq!(local.to_string(), "4.4.1 connection refused");
        assert!(!local.is_throttle());
        let remote = Response::from(Reply::new(421, "4.7.0", "slow"));
        assert_eq!(remote.code(), Some(421));
        assert!(remote.is_throttle());
        let json = serde_json::to_string(&remote).unwrap();
        assert_eq!(json, r#"{"code":421,"enhanced":"4.7.0","text":"slow"}"#);
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), remote);
        let json = serde_json::to_string(&local).unwrap();
        assert_eq!(
            json,
            r#"{"code":null,"enhanced":"4.4.1","text":"connection refused"}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), local);
        // The older spelling of a local reason.
        let old = r#"{"code":0,"enhanced":"4.4.1","text":"connection refused"}"#;
        assert_eq!(serde_json::from_str::<Response>(old).unwrap(), local);
        for bad in [
            r#"{"code":0,"enhanced":null,"text":"x"}"#,
            r#"{"code":999,"enhanced":null,"text":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad}");
        }
    }
}
