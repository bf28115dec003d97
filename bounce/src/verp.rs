//! VERP return paths (variable envelope return path): each (message, recipient) is
//! sent with its own envelope sender, `bounces+TOKEN@bounce-domain`, so a bounce maps
//! back to them even when its body says nothing useful. The token is the message id
//! and a short HMAC-SHA256 over the message id and the recipient, in lowercase base32
//! (34 characters: a local part of at most 64 even with a longer prefix); the MAC
//! tells which recipient a bounce is about, and that nobody made the address up.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of the MAC kept in a token: one chance in 2^40 for a forger per guess.
const MAC_LEN: usize = 5;
/// Message id and MAC.
const TOKEN_LEN: usize = 16 + MAC_LEN;

/// Why a VERP setup is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("the VERP secret must be at least 16 bytes")]
    ShortSecret,
    #[error("the VERP local part {0:?} must be 1 to 24 letters, digits, '-' or '_'")]
    LocalPart(String),
}

/// Makes and reads return paths with one secret.
#[derive(Clone)]
pub struct Verp {
    key: Vec<u8>,
    local_part: String,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verp")
            .field("local_part", &self.local_part)
            .finish_non_exhaustive()
    }
}

/// What a return path carries: the message, and a MAC naming its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub message_id: u128,
    mac: [u8; MAC_LEN],
}

impl Verp {
    /// `secret`: shared by every node that sends or reads return paths; `local_part`:
    /// what comes before the `+` (`bounces`).
    pub fn new(secret: &[u8], local_part: &str) -> Result<Self, VerpError> {
        if secret.len() < 16 {
            return Err(VerpError::ShortSecret);
        }
        if local_part.is_empty()
            || local_part.len() > 24
            || !local_part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(VerpError::LocalPart(local_part.into()));
        }
        Ok(Self {
            key: secret.to_vec(),
            local_part: local_part.to_ascii_lowercase(),
        })
    }

    /// The return path of `message_id`'s copy for `recipient`, at `domain`.
    pub fn return_path(&self, message_id: u128, recipient: &str, domain: &str) -> String {
        let mut token = [0u8; TOKEN_LEN];
        token[..16].copy_from_slice(&message_id.to_be_bytes());
        token[16..].copy_from_slice(&self.mac(message_id, recipient));
        format!(
            "{}+{}@{domain}",
            self.local_part,
            data_encoding::BASE32_DNSSEC.encode(&token)
        )
    }

    /// The token of a return path (`bounces+TOKEN@...`, any case), if it is one of
    /// this prefix; what it names is checked by [`Verp::names`].
    pub fn token(&self, address: &str) -> Option<Token> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        let (prefix, token) = local.split_once('+')?;
        if !prefix.eq_ignore_ascii_case(&self.local_part) {
            return None;
        }
        let bytes = data_encoding::BASE32_DNSSEC
            .decode(token.to_ascii_lowercase().as_bytes())
            .ok()?;
        let bytes: [u8; TOKEN_LEN] = bytes.try_into().ok()?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&bytes[16..]);
        Some(Token {
            message_id: u128::from_be_bytes(id),
            mac,
        })
    }

    /// Whether `token` was made for `recipient` (compared without case).
    pub fn names(&self, token: &Token, recipient: &str) -> bool {
        self.mac(token.message_id, recipient)
            .ct_eq(&token.mac)
            .into()
    }

    fn mac(&self, message_id: u128, recipient: &str) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(&message_id.to_be_bytes());
        mac.update(recipient.trim().to_ascii_lowercase().as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// An installation's return paths: its VERP key and its bounce domains (the first is
/// the one mail is sent with; reports to any of them are read).
#[derive(Debug, Clone)]
pub struct ReturnPaths {
    verp: Verp,
    domains: Vec<String>,
}

impl ReturnPaths {
    /// `domains` must name at least one domain.
    pub fn new(verp: Verp, domains: &[String]) -> Option<Self> {
        let domains: Vec<String> = domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        (!domains.is_empty()).then_some(Self { verp, domains })
    }

    pub fn verp(&self) -> &Verp {
        &self.verp
    }

    /// Where a report about `message_id`'s copy for `recipient` should go.
    pub fn return_path(&self, message_id: u128, recipient: &str) -> String {
        self.verp
            .return_path(message_id, recipient, &self.domains[0])
    }

    /// Whether `address` is at one of the bounce domains (any local part: the
    /// address a feedback loop sends to is one too).
    pub fn is_report_address(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(_, d)| {
            let d = d.trim_end_matches('.');
            self.domains.iter().any(|b| b.eq_ignore_ascii_case(d))
        })
    }

    /// The tokens of the return paths at the bounce domains found in `text` (a
    /// report quotes the original's `Return-Path:` and headers), at most `max`,
    /// each once.
    pub fn tokens_in(&self, text: &[u8], max: usize) -> Vec<Token> {
        let lower = text.to_ascii_lowercase();
        let prefix = format!("{}+", self.verp.local_part);
        let finder = memchr::memmem::Finder::new(prefix.as_bytes());
        let mut out: Vec<Token> = Vec::new();
        for at in finder.find_iter(&lower) {
            if out.len() >= max {
                break;
            }
            // Only where a local part starts, and only up to the domain.
            if at > 0 && (lower[at - 1].is_ascii_alphanumeric() || b".-_+".contains(&lower[at - 1]))
            {
                continue;
            }
            let rest = &lower[at..];
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b"+-_.@".contains(b)))
                .unwrap_or(rest.len());
            let Ok(address) = std::str::from_utf8(&rest[..end]) else {
                continue;
            };
            let address = address.trim_end_matches('.');
            if self.is_report_address(address)
                && let Some(token) = self.verp.token(address)
                && !out.contains(&token)
            {
                out.push(token);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: u128 = 0x019a_c4d5_e3b8_7c1d_9a4f_0e2b_6c3d_8a71;

    #[test]
    fn a_return_path_names_its_message_and_recipient() {
        let verp = Verp::new(b"0123456789abcdef-secret", "bounces").unwrap();
        let path = verp.return_path(ID, "Bob@Example.NET", "bounce.example.com");
        let (local, domain) = path.split_once('@').unwrap();
        assert_eq!(domain, "bounce.example.com");
        assert!(
            local.starts_with("bounces+") && local.len() <= 64,
            "{local}"
        );
        assert_eq!(local.len(), "bounces+".len() + 34);
        assert!(local.bytes().all(|b| !b.is_ascii_uppercase()), "{local}");
        // Receivers may change the case of the local part.
        for seen in [path.clone(), path.to_uppercase()] {
            let token = verp.token(&seen).unwrap();
            assert_eq!(token.message_id, ID);
            assert!(verp.names(&token, "bob@example.net"));
            assert!(verp.names(&token, " BOB@example.net"));
            assert!(!verp.names(&token, "ann@example.net"));
        }
    }

    #[test]
    fn what_is_not_a_return_path_of_ours_is_none() {
        let verp = Verp::new(b"0123456789abcdef-secret", "bounces").unwrap();
        let other = Verp::new(b"another secret of 16+ bytes", "bounces").unwrap();
        let path = verp.return_path(ID, "bob@example.net", "b.example");
        // Another key: the token reads, the MAC does not verify.
        let token = other.token(&path).unwrap();
        assert!(!other.names(&token, "bob@example.net"));
        for bad in [
            "bounces@b.example",
            "postmaster@b.example",
            "other+aaaa@b.example",
            "bounces+not-base32!@b.example",
            "bounces+0123@b.example",
            "",
            "+@",
        ] {
            assert_eq!(verp.token(bad), None, "{bad}");
        }
        // One character changed: the MAC no longer names the recipient.
        let mut forged = path.clone().into_bytes();
        let at = forged.iter().position(|b| *b == b'@').unwrap() - 1;
        forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        if let Some(t) = verp.token(&forged) {
            assert!(!verp.names(&t, "bob@example.net"));
        }
    }

    #[test]
    fn return_paths_are_found_in_a_report() {
        let verp = Verp::new(b"0123456789abcdef-secret", "bounces").unwrap();
        let paths =
            ReturnPaths::new(verp, &["Bounce.Example.com.".into(), "b2.example".into()]).unwrap();
        let path = paths.return_path(ID, "bob@example.net");
        assert!(path.ends_with("@bounce.example.com"), "{path}");
        assert!(paths.is_report_address(&path));
        assert!(paths.is_report_address("fbl@B2.example"));
        assert!(!paths.is_report_address("bounces@example.com"));
        let other = paths.return_path(ID + 1, "ann@example.org");
        let report = format!(
            "Return-Path: <{path}>\r\nX-Other: xbounces+{}@bounce.example.com\r\n\
             Received: from x (envelope-from {})\r\n{path}\r\n",
            &path[8..42],
            other.to_uppercase()
        );
        let tokens = paths.tokens_in(report.as_bytes(), 8);
        assert_eq!(tokens.len(), 2, "{tokens:?}");
        assert!(paths.verp().names(&tokens[0], "bob@example.net"));
        assert!(paths.verp().names(&tokens[1], "ann@example.org"));
        assert_eq!(paths.tokens_in(report.as_bytes(), 1).len(), 1);
        // At another domain, a look-alike is not ours.
        let elsewhere = path.replace("bounce.example.com", "example.org");
        assert!(paths.tokens_in(elsewhere.as_bytes(), 8).is_empty());
        assert!(ReturnPaths::new(Verp::new(b"0123456789abcdef", "b").unwrap(), &[]).is_none());
    }

    #[test]
    fn bad_setups_are_refused() {
        assert_eq!(
            Verp::new(b"short", "bounces").unwrap_err(),
            VerpError::ShortSecret
        );
        for local in ["", "a+b", "bounces@x", "x".repeat(25).as_str()] {
            assert!(Verp::new(b"0123456789abcdef", local).is_err(), "{local}");
        }
    }
}
