//! What a server announces in its EHLO reply (RFC 5321 4.1.1.1).

use crate::Reply;

/// The service extensions of one EHLO reply; all off after HELO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `Some(0)` when offered without a limit, `Some(n)` with a limit
    /// of `n` bytes.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// `AUTH` mechanisms, upper case, in the server's order.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (its first line is the server's name).
    pub fn parse(ehlo: &Reply) -> Self {
        Self::parse_text(&ehlo.text)
    }

    /// [`Capabilities::parse`] on a reply's text, lines joined with `\n`.
    pub fn parse_text(text: &str) -> Self {
        let mut caps = Capabilities::default();
        for line in text.split('\n').skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => caps.auth.extend(words.map(str::to_ascii_uppercase)),
                _ => {}
            }
        }
        caps
    }

    /// The text of an EHLO reply announcing these capabilities: `first_line` (the
    /// server's name and greeting), then one keyword per line.
    pub fn ehlo_text(&self, first_line: &str) -> String {
        let mut text = first_line.to_string();
        let mut line = |keyword: &str| {
            text.push('\n');
            text.push_str(keyword);
        };
        let flags = [
            (self.pipelining, "PIPELINING"),
            (self.eight_bit_mime, "8BITMIME"),
            (self.smtputf8, "SMTPUTF8"),
            (self.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (self.chunking, "CHUNKING"),
            (self.dsn, "DSN"),
            (self.starttls, "STARTTLS"),
        ];
        match self.size {
            Some(0) => line("SIZE"),
            Some(n) => line(&format!("SIZE {n}")),
            None => {}
        }
        for (on, keyword) in flags {
            if on {
                line(keyword);
            }
        }
        if !self.auth.is_empty() {
            line(&format!("AUTH {}", self.auth.join(" ")));
        }
        text
    }

    /// Whether `AUTH` offers `mechanism` (any case).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The server's SIZE limit, when it announced one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        let caps = Capabilities::parse_text(
            "mx.example greets you\nPIPELINING\nSIZE 1000\n8BITMIME\nsmtputf8\nDSN\nSTARTTLS\nCHUNKING\nENHANCEDSTATUSCODES\nAUTH login PLAIN\n",
        );
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                chunking: true,
                starttls: true,
                enhanced_status_codes: true,
                auth: vec!["LOGIN".into(), "PLAIN".into()],
            }
        );
        assert!(caps.offers_auth("plain") && !caps.offers_auth("CRAM-MD5"));
        // What a server announces reads back the same.
        let text = caps.ehlo_text("mx.example Hello");
        assert!(
            text.starts_with("mx.example Hello\nSIZE 1000\nPIPELINING\n"),
            "{text}"
        );
        assert_eq!(Capabilities::parse_text(&text), caps);
        assert_eq!(Capabilities::default().ehlo_text("mx"), "mx");
        assert_eq!(caps.size_limit(), Some(1000));
        let bare = Capabilities::parse_text("mx\nSIZE");
        assert_eq!((bare.size, bare.size_limit()), (Some(0), None));
        assert_eq!(Capabilities::parse_text("mx\nSIZE huge").size, Some(0));
        // The first line is the server's name, never a keyword.
        assert_eq!(
            Capabilities::parse_text("PIPELINING"),
            Capabilities::default()
        );
    }
}
