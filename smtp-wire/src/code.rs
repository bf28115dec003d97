//! RFC 3463 enhanced status codes: `class.subject.detail`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enhanced status code (`5.1.1`): class 2, 4 or 5, subject and detail of one to
/// three digits each.
///
/// Serialized as its text (`"5.1.1"`), in every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

/// Text that is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an enhanced status code (class.subject.detail, class 2, 4 or 5)")]
pub struct BadEnhancedCode(pub String);

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `text` at compile time, for constant replies; panics (a build error in a
    /// `const`) when it is not a code.
    pub const fn from_static(text: &str) -> Self {
        match Self::parse_bytes(text.as_bytes()) {
            Some(code) => code,
            None => panic!("not an enhanced status code"),
        }
    }

    /// `class "." subject "." detail` exactly, nothing around it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    const fn parse_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 5 || !matches!(b[0], b'2' | b'4' | b'5') || b[1] != b'.' {
            return None;
        }
        let mut parts = [0u16; 2];
        let mut digits = 0;
        let mut part = 0;
        let mut i = 2;
        while i < b.len() {
            match b[i] {
                b'0'..=b'9' if digits < 3 => {
                    parts[part] = parts[part] * 10 + (b[i] - b'0') as u16;
                    digits += 1;
                }
                b'.' if part == 0 && digits > 0 => {
                    part = 1;
                    digits = 0;
                }
                _ => return None,
            }
            i += 1;
        }
        if part != 1 || digits == 0 {
            return None;
        }
        Some(Self::new(b[0] - b'0', parts[0], parts[1]))
    }

    /// 2.x.x.
    pub fn is_success(&self) -> bool {
        self.class == 2
    }

    /// 4.x.x.
    pub fn is_transient(&self) -> bool {
        self.class == 4
    }

    /// 5.x.x.
    pub fn is_permanent(&self) -> bool {
        self.class == 5
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = BadEnhancedCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| BadEnhancedCode(s.chars().take(40).collect()))
    }
}

impl Serialize for EnhancedCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnhancedCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for text in ["2.0.0", "5.1.1", "4.7.0", "5.7.26", "4.123.999"] {
            let code: EnhancedCode = text.parse().unwrap();
            assert_eq!(code.to_string(), text);
        }
        assert_eq!(
            EnhancedCode::from_static("5.7.26"),
            EnhancedCode::new(5, 7, 26)
        );
        for bad in [
            "", "5", "5.1", "5.1.", "3.1.1", "5..1", "5.1.1.1", "5.1234.1", "5.1.1234", "x.1.1",
            "5.1.1 ", " 5.1.1", "5.a.1",
        ] {
            assert!(EnhancedCode::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn serialized_as_text() {
        let code = EnhancedCode::new(4, 4, 1);
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"4.4.1\"");
        let back: EnhancedCode = serde_json::from_str("\"4.4.1\"").unwrap();
        assert_eq!(back, code);
        assert!(serde_json::from_str::<EnhancedCode>("\"9.9.9\"").is_err());
    }
}
