//! DKIM signing (RFC 6376, RFC 8463) for Postroad: keys per sender domain from the
//! `[[dkim]]` entries of the config, RSA-SHA256 or Ed25519-SHA256 (read from the key),
//! relaxed/relaxed canonicalization, signed with `mail-auth`.
//!
//! A message is signed by every key of its `From:` domain, or of the nearest parent
//! domain that has keys (`news.example.com` by `example.com`'s: aligned for DMARC's
//! relaxed mode); a message whose `From:` has no such domain goes out unsigned. Several
//! keys for one domain (RSA and Ed25519 during a migration, or two selectors during a
//! rotation) give one signature each. The default headers are signed over (each named
//! once more than the message has it, RFC 6376 8.15): a `From:` or `Subject:` added on
//! the way, above the signed one, breaks the signature instead of being shown.

use std::collections::HashMap;
use std::path::PathBuf;

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// The headers signed unless a key lists its own: what receivers expect to be covered
/// (RFC 6376 5.4.1, RFC 8058 for the one-click unsubscribe pair).
pub const DEFAULT_HEADERS: [&str; 17] = [
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
];

/// One `[[dkim]]` entry: a key that signs a domain's mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The signing domain (`d=`): mail whose `From:` is this domain or below it.
    pub domain: String,
    /// The selector (`s=`): the key's public half is published at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8) for rsa-sha256,
    /// Ed25519 (PKCS#8 `BEGIN PRIVATE KEY`) for ed25519-sha256. Relative paths are
    /// relative to the working directory.
    pub key_file: PathBuf,
    /// Headers to sign, instead of [`DEFAULT_HEADERS`] (each of those is listed twice,
    /// to sign over it); must include `From`. A name listed once more than the message
    /// has it is signed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Seconds a signature stays valid (`x=`); 0: no expiry.
    #[serde(default)]
    pub expire_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key for {domain} (selector {selector}): cannot read {path}: {source}")]
    Read {
        domain: String,
        selector: String,
        path: String,
        source: std::io::Error,
    },
    #[error("dkim key for {domain} (selector {selector}) in {path}: {reason}")]
    Key {
        domain: String,
        selector: String,
        path: String,
        reason: String,
    },
    #[error("dkim: {0}")]
    Config(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The keys of every configured domain. Cheap to share behind an `Arc`.
pub struct Signer {
    /// Lowercased domain → its signers.
    by_domain: HashMap<String, Vec<Key>>,
}

struct Key {
    selector: String,
    signer: DkimSigner<DkimKey, Done>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut domains: Vec<_> = self.by_domain.keys().collect();
        domains.sort();
        f.debug_struct("Signer").field("domains", &domains).finish()
    }
}

impl Signer {
    /// Reads and checks every key; `None` when there are none (nothing to sign).
    pub fn load(keys: &[KeyConfig]) -> Result<Option<Self>, DkimError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut by_domain: HashMap<String, Vec<Key>> = HashMap::new();
        for config in keys {
            validate(config)?;
            let domain = config.domain.trim_end_matches('.').to_ascii_lowercase();
            let entry = by_domain.entry(domain.clone()).or_default();
            if entry.iter().any(|k| k.selector == config.selector) {
                return Err(DkimError::Config(format!(
                    "two keys for {domain} with selector {:?}",
                    config.selector
                )));
            }
            let key = read_key(config)?;
            let headers: Vec<String> = match &config.headers {
                Some(list) => list.clone(),
                None => DEFAULT_HEADERS
                    .iter()
                    .chain(DEFAULT_HEADERS.iter())
                    .map(|h| h.to_string())
                    .collect(),
            };
            let signer = DkimSigner::from_key(key)
                .domain(domain)
                .selector(config.selector.clone())
                .headers(headers)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .expiration(config.expire_secs);
            entry.push(Key {
                selector: config.selector.clone(),
                signer,
            });
        }
        Ok(Some(Self { by_domain }))
    }

    /// The domain whose keys sign mail from `from_domain`: itself or its nearest
    /// parent with keys.
    fn keys_for(&self, from_domain: &str) -> Option<&[Key]> {
        let mut domain = from_domain.trim_end_matches('.');
        loop {
            if let Some(keys) = self.by_domain.get(domain) {
                return Some(keys);
            }
            domain = domain.split_once('.')?.1;
        }
    }

    /// The message with its `DKIM-Signature` headers in front; `None` when no key signs
    /// for its `From:` domain (or it has no `From:` address).
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let Some(domain) = from_domain(message) else {
            return Ok(None);
        };
        let Some(keys) = self.keys_for(&domain) else {
            return Ok(None);
        };
        let mut headers = String::new();
        for key in keys {
            let signature = key
                .signer
                .sign(message)
                .map_err(|e| DkimError::Sign(e.to_string()))?;
            headers.push_str(&signature.to_header());
        }
        let mut signed = Vec::with_capacity(headers.len() + message.len());
        signed.extend_from_slice(headers.as_bytes());
        signed.extend_from_slice(message);
        Ok(Some(signed))
    }

    /// How many domains have keys.
    pub fn domains(&self) -> usize {
        self.by_domain.len()
    }
}

fn validate(config: &KeyConfig) -> Result<(), DkimError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let domain = config.domain.trim_end_matches('.');
    if domain.is_empty() || !domain.split('.').all(label_ok) {
        return Err(DkimError::Config(format!(
            "domain {:?} is not a domain name",
            config.domain
        )));
    }
    if !config.selector.split('.').all(label_ok) {
        return Err(DkimError::Config(format!(
            "selector {:?} of {domain} is not a DNS label",
            config.selector
        )));
    }
    if let Some(headers) = &config.headers {
        if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(DkimError::Config(format!(
                "the headers of {domain}'s key {:?} must include From (RFC 6376 5.4)",
                config.selector
            )));
        }
        if let Some(bad) = headers
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
        {
            return Err(DkimError::Config(format!(
                "header name {bad:?} of {domain}'s key {:?} is not a header field name",
                config.selector
            )));
        }
    }
    Ok(())
}

/// Reads an RSA or Ed25519 private key from a PEM file.
fn read_key(config: &KeyConfig) -> Result<DkimKey, DkimError> {
    let path = config.key_file.display().to_string();
    let fail = |reason: String| DkimError::Key {
        domain: config.domain.clone(),
        selector: config.selector.clone(),
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(&config.key_file).map_err(|source| DkimError::Read {
        domain: config.domain.clone(),
        selector: config.selector.clone(),
        path: path.clone(),
        source,
    })?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| fail(format!("no PEM private key ({e})")))?;
    let pkcs8 = match &der {
        PrivateKeyDer::Pkcs8(p) => Some(p.secret_pkcs8_der().to_vec()),
        _ => None,
    };
    match RsaKey::<Sha256>::from_key_der(der) {
        Ok(rsa) => Ok(DkimKey::Rsa(rsa)),
        Err(rsa_error) => match pkcs8 {
            Some(der) => Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
                .map(DkimKey::Ed25519)
                .map_err(|_| fail("neither an RSA nor an Ed25519 key".into())),
            None => Err(fail(format!("not a usable RSA key: {rsa_error}"))),
        },
    }
}

/// The lowercased domain of the first address of the first `From:` header.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}
