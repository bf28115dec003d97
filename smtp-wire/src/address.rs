//! Mailbox addresses as RFC 5321 `Mailbox` defines them, with RFC 6531's UTF-8: what
//! may be put in a `MAIL FROM` or `RCPT TO` path, for input that does not arrive as an
//! SMTP command (the HTTP API).

use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1: the longest local part, in octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2: the longest domain, in octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3 (a 256-octet path, less the angle brackets).
pub const MAX_ADDRESS: usize = 254;

/// Why an address is not a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is empty")]
    Empty,
    #[error("has no @domain")]
    NoDomain,
    #[error("is longer than {MAX_ADDRESS} octets")]
    TooLong,
    #[error("has a local part longer than {MAX_LOCAL_PART} octets")]
    LocalTooLong,
    #[error("has an empty local part")]
    EmptyLocal,
    #[error("has a local part that is neither a dot-atom nor a quoted string")]
    BadLocal,
    #[error("has a control character")]
    Control,
    #[error("has an invalid domain")]
    BadDomain,
}

/// A valid mailbox, split at its last `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox<'a> {
    pub local: &'a str,
    pub domain: &'a str,
}

impl Mailbox<'_> {
    /// Whether delivering to (or from) it needs the SMTPUTF8 extension.
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

/// Checks `address` (`local@domain`, no angle brackets) against RFC 5321 `Mailbox`:
/// a dot-atom or quoted-string local part of at most 64 octets, a domain of
/// letter-digit-hyphen labels (UTF-8 labels allowed, RFC 6531) or an address literal.
pub fn parse_mailbox(address: &str) -> Result<Mailbox<'_>, AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address.chars().any(char::is_control) {
        return Err(AddressError::Control);
    }
    if address.len() > MAX_ADDRESS {
        return Err(AddressError::TooLong);
    }
    let (local, domain) = address.rsplit_once('@').ok_or(AddressError::NoDomain)?;
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalTooLong);
    }
    if !(is_dot_string(local) || is_quoted_string(local)) {
        return Err(AddressError::BadLocal);
    }
    if !(is_domain(domain) || is_address_literal(domain)) {
        return Err(AddressError::BadDomain);
    }
    Ok(Mailbox { local, domain })
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// RFC 5321 `Dot-string`.
fn is_dot_string(local: &str) -> bool {
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// RFC 5321 `Quoted-string`: printable characters (and space) between quotes, with `"`
/// and `\` escaped by a backslash.
fn is_quoted_string(local: &str) -> bool {
    let Some(inner) = local
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(' '..='~') => {}
                _ => return false,
            },
            '"' => return false,
            ' '..='~' => {}
            c if !c.is_ascii() => {}
            _ => return false,
        }
    }
    true
}

/// RFC 5321 `Domain`: dot-separated labels of letters, digits and inner hyphens, at
/// most 63 octets each; labels with UTF-8 (U-labels) are allowed as RFC 6531 lets them.
pub fn is_domain(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.len() <= MAX_DOMAIN
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// RFC 5321 `address-literal`: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn is_address_literal(domain: &str) -> bool {
    let Some(inner) = domain
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_users_write_are_accepted() {
        for ok in [
            "user@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "\"john doe\"@example.com",
            "\"a\\\"b\"@example.com",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "用户@例子.广告",
            "x@localhost",
            "x@example.com.",
        ] {
            assert!(parse_mailbox(ok).is_ok(), "{ok}");
        }
        assert!(parse_mailbox("用户@例子.广告").unwrap().needs_smtputf8());
        assert!(!parse_mailbox("a@b.test").unwrap().needs_smtputf8());
    }

    #[test]
    fn what_is_not_a_mailbox_is_refused_with_the_reason() {
        for (bad, why) in [
            ("", AddressError::Empty),
            ("user", AddressError::NoDomain),
            ("@example.com", AddressError::EmptyLocal),
            ("a..b@example.com", AddressError::BadLocal),
            (".a@example.com", AddressError::BadLocal),
            ("a b@example.com", AddressError::BadLocal),
            ("a@b@example.com", AddressError::BadLocal),
            ("user@", AddressError::BadDomain),
            ("user@-x.test", AddressError::BadDomain),
            ("user@x..test", AddressError::BadDomain),
            ("user@x_y.test", AddressError::BadDomain),
            ("user@[300.1.1.1]", AddressError::BadDomain),
            ("user@example.com\r\nRCPT TO:<x@y>", AddressError::Control),
            ("us\0er@example.com", AddressError::Control),
        ] {
            assert_eq!(parse_mailbox(bad), Err(why), "{bad:?}");
        }
        let long_local = format!("{}@x.test", "a".repeat(65));
        assert_eq!(parse_mailbox(&long_local), Err(AddressError::LocalTooLong));
        let long = format!("a@{}.test", "b".repeat(60).repeat(5));
        assert_eq!(parse_mailbox(&long), Err(AddressError::TooLong));
    }
}
