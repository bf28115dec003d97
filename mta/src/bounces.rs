//! `[bounces]`: return-path (bounce) domains. With one, each relayed copy leaves with
//! a VERP return path of its own (`bounces+TOKEN@<first domain>`), and the SMTP
//! listeners take mail for any address at these domains from anyone (it is never
//! relayed) as bounce and complaint reports, which become events of the message and
//! recipient they are about ([`postroad_webhooks::Reports`]).

use std::path::Path;
use std::sync::Arc;

use postroad_bounce::verp::{ReturnPaths, Verp};
use serde::{Deserialize, Serialize};

use crate::secret_file::{self, SecretFile};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BouncesConfig {
    /// The bounce domains (their MX must point at Postroad's listeners); the first is
    /// the one mail is sent with. Empty: return paths stay as submitted, and no mail
    /// is taken as a report.
    pub domains: Vec<String>,
    /// The key of the return paths' MACs, at least 16 characters; empty: generated
    /// into `<data_dir>/bounce.key` at first start. Every node of a cluster needs the
    /// same (`POSTROAD__BOUNCES__SECRET`).
    pub secret: String,
    /// What comes before the `+` of a return path.
    pub local_part: String,
}

impl Default for BouncesConfig {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            secret: String::new(),
            local_part: "bounces".into(),
        }
    }
}

/// The generated VERP key's file.
const KEY_FILE: SecretFile = SecretFile {
    name: "bounce.key",
    what: "bounce (VERP) key",
    check: secret_file::mac_key,
};

impl BouncesConfig {
    /// Rejects what cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for domain in &self.domains {
            let d = domain.trim().trim_end_matches('.');
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(format!("bounces.domains: {domain:?} is not a domain name"));
            }
        }
        if !self.secret.is_empty() {
            secret_file::mac_key(&self.secret).map_err(|e| format!("bounces.secret {e}"))?;
        }
        Verp::new(b"0123456789abcdef", &self.local_part)
            .map(|_| ())
            .map_err(|e| format!("bounces.local_part: {e}"))
    }

    /// The return paths, when bounce domains are set (the key loaded or generated).
    pub fn return_paths(&self, data_dir: &Path) -> anyhow::Result<Option<Arc<ReturnPaths>>> {
        if self.domains.is_empty() {
            return Ok(None);
        }
        self.validate().map_err(anyhow::Error::msg)?;
        let secret = secret_file::given_or_generated(&self.secret, &KEY_FILE, data_dir)?;
        let verp = Verp::new(secret.as_bytes(), &self.local_part)?;
        Ok(ReturnPaths::new(verp, &self.domains).map(Arc::new))
    }

    /// The config with its secret hidden, for printing.
    pub fn redacted(&self) -> Self {
        Self {
            secret: if self.secret.is_empty() {
                String::new()
            } else {
                "(set; not shown)".into()
            },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_and_bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            BouncesConfig::default()
                .return_paths(dir.path())
                .unwrap()
                .is_none()
        );
        let config = BouncesConfig {
            domains: vec!["bounce.example.com".into()],
            ..BouncesConfig::default()
        };
        let first = config.return_paths(dir.path()).unwrap().unwrap();
        let again = config.return_paths(dir.path()).unwrap().unwrap();
        let path = first.return_path(7, "bob@example.net");
        assert!(path.starts_with("bounces+") && path.ends_with("@bounce.example.com"));
        // The same key after a restart: a return path made before still reads.
        let token = again.verp().token(&path).unwrap();
        assert!(again.verp().names(&token, "bob@example.net"));
        let key = std::fs::read_to_string(dir.path().join("bounce.key")).unwrap();
        assert_eq!(key.trim().len(), 64);
        for (bad, key) in [
            (
                BouncesConfig {
                    domains: vec!["not a domain".into()],
                    ..BouncesConfig::default()
                },
                "bounces.domains",
            ),
            (
                BouncesConfig {
                    secret: "short".into(),
                    ..BouncesConfig::default()
                },
                "bounces.secret",
            ),
            (
                BouncesConfig {
                    local_part: "a+b".into(),
                    ..BouncesConfig::default()
                },
                "bounces.local_part",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        assert_eq!(
            BouncesConfig {
                secret: "0123456789abcdef0".into(),
                ..BouncesConfig::default()
            }
            .redacted()
            .secret,
            "(set; not shown)"
        );
    }
}
