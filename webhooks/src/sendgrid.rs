//! SendGrid's signed event webhook: each batch is signed with ECDSA P-256 over the
//! timestamp header followed by the raw body
//! (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER; `...-Timestamp`, Unix
//! seconds), checked against the public key shown in SendGrid's settings (base64 DER
//! SubjectPublicKeyInfo). A timestamp too far from now is refused: a recorded batch
//! cannot be played again later.

use std::time::Duration;

use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The header names SendGrid signs with.
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The OID of id-ecPublicKey and of the P-256 curve (prime256v1).
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const PRIME256V1: &str = "1.2.840.10045.3.1.7";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no {0} header")]
    Missing(&'static str),
    #[error("the timestamp {0:?} is not Unix seconds")]
    Timestamp(String),
    #[error("the timestamp is {0} s from now, more than allowed")]
    Stale(u64),
    #[error("the signature does not verify")]
    Invalid,
}

/// A verification key from SendGrid's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point.
    point: Vec<u8>,
}

impl PublicKey {
    /// From the base64 SubjectPublicKeyInfo SendGrid shows (`MFkwEwYH...`).
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.split_whitespace().collect::<String>())
            .map_err(|e| format!("not base64: {e}"))?;
        let (_, spki) = SubjectPublicKeyInfo::from_der(&der)
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        let algorithm = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        if algorithm != EC_PUBLIC_KEY || curve.as_deref() != Some(PRIME256V1) {
            return Err("not an ECDSA P-256 key".into());
        }
        Ok(Self {
            point: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Checks a batch: `timestamp` and `signature` are the headers' values, `now` Unix
    /// seconds; `max_age` is how far from now the timestamp may be.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: u64,
        max_age: Duration,
    ) -> Result<(), SignatureError> {
        let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
        let at: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::Timestamp(timestamp.into()))?;
        let skew = now.abs_diff(at);
        if skew > max_age.as_secs() {
            return Err(SignatureError::Stale(skew));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Invalid)?;
        let mut signed = Vec::with_capacity(timestamp.len() + body.len());
        signed.extend_from_slice(timestamp.trim().as_bytes());
        signed.extend_from_slice(body);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(&signed, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SendGrid's own published test vector (its client libraries' tests).
    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const PAYLOAD: &str =
        r#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
    const SIGNATURE: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const TIMESTAMP: &str = "1588788367";
    const MAX_AGE: Duration = Duration::from_secs(600);

    #[test]
    fn sendgrids_test_vector_verifies_and_every_change_breaks_it() {
        let key = PublicKey::from_base64(PUBLIC_KEY).unwrap();
        let then = 1_588_788_367 + 30;
        let check = |key: &PublicKey, ts: Option<&str>, sig: Option<&str>, body: &str, now: u64| {
            key.verify(ts, sig, body.as_bytes(), now, MAX_AGE)
        };
        assert_eq!(
            check(&key, Some(TIMESTAMP), Some(SIGNATURE), PAYLOAD, then),
            Ok(())
        );
        let other = PublicKey::from_base64(OTHER_KEY).unwrap();
        assert_eq!(
            check(&other, Some(TIMESTAMP), Some(SIGNATURE), PAYLOAD, then),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            check(&key, Some(TIMESTAMP), Some(SIGNATURE), "payload", then),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            check(
                &key,
                Some("1388788367"),
                Some(SIGNATURE),
                PAYLOAD,
                1_388_788_367
            ),
            Err(SignatureError::Invalid)
        );
        let flipped = SIGNATURE.replace("j/0=", "j/1=");
        assert!(check(&key, Some(TIMESTAMP), Some(&flipped), PAYLOAD, then).is_err());
        assert_eq!(
            check(&key, None, Some(SIGNATURE), PAYLOAD, then),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(&key, Some(TIMESTAMP), None, PAYLOAD, then),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        // A day later the same batch is refused.
        assert_eq!(
            check(
                &key,
                Some(TIMESTAMP),
                Some(SIGNATURE),
                PAYLOAD,
                then + 86_400
            ),
            Err(SignatureError::Stale(86_430))
        );
        assert!(matches!(
            check(&key, Some("soon"), Some(SIGNATURE), PAYLOAD, then),
            Err(SignatureError::Timestamp(_))
        ));
    }

    #[test]
    fn keys_that_are_not_p256_are_refused() {
        assert!(PublicKey::from_base64("not base64!").is_err());
        assert!(PublicKey::from_base64("AAAA").is_err());
        // An RSA key's SubjectPublicKeyInfo.
        let rsa = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMY2ls/bcpInqjpUvYefZ2vnAH1ArPo/l7iGHa+1mN+kuuXrv5B4dwhbsrjdb2IZcXiuPhOFdKxXUHfYmEjNn+UCAwEAAQ==";
        assert_eq!(
            PublicKey::from_base64(rsa).unwrap_err(),
            "not an ECDSA P-256 key"
        );
    }
}
