//! Amazon SNS HTTP(S) notifications, as SES event publishing sends them: the message's
//! signature checked (SignatureVersion 1, SHA1withRSA, and 2, SHA256withRSA, over the
//! documented fields in their documented order) with the public key of its signing
//! certificate, which comes from the operator's trust: certificates given by their URL
//! in the config, or fetched (and kept) from the hosts allowed for them, by HTTPS.
//! A message from a topic not listed, or with a signing certificate from anywhere else,
//! is refused before anything is read from it.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

/// Largest certificate read.
const MAX_CERTIFICATE: usize = 64 * 1024;

/// The fields of an SNS message (all of them strings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
}

/// Why a message is refused (the route answers 403, or 400 for what is not an SNS
/// message at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error("not an SNS message: {0}")]
    Malformed(String),
    #[error("topic {0} is not one of webhooks.ses.topics")]
    Topic(String),
    #[error("signing certificate URL {0} is not trusted")]
    CertificateUrl(String),
    #[error("cannot get the signing certificate: {0}")]
    Certificate(String),
    #[error("unknown SignatureVersion {0:?}")]
    Version(String),
    #[error("the signature does not verify")]
    Signature,
}

impl SnsMessage {
    pub fn parse(body: &[u8]) -> Result<Self, SnsError> {
        let m: SnsMessage =
            serde_json::from_slice(body).map_err(|e| SnsError::Malformed(e.to_string()))?;
        match m.kind.as_str() {
            "Notification" | "SubscriptionConfirmation" | "UnsubscribeConfirmation" => Ok(m),
            other => Err(SnsError::Malformed(format!("Type {other:?}"))),
        }
    }

    /// The text the signature is over: each field's name and value on lines of their
    /// own, in the order SNS documents for the message's type.
    pub fn string_to_sign(&self) -> Result<String, SnsError> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        if self.kind == "Notification" {
            if let Some(subject) = &self.subject {
                fields.push(("Subject", subject));
            }
        } else {
            let url = self
                .subscribe_url
                .as_deref()
                .ok_or_else(|| SnsError::Malformed("no SubscribeURL".into()))?;
            fields.push(("SubscribeURL", url));
        }
        fields.push(("Timestamp", &self.timestamp));
        if self.kind != "Notification" {
            let token = self
                .token
                .as_deref()
                .ok_or_else(|| SnsError::Malformed("no Token".into()))?;
            fields.push(("Token", token));
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        let mut out = String::new();
        for (name, value) in fields {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        }
        Ok(out)
    }
}

/// Where signing certificates may come from, and the topics accepted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Accepted topic ARNs; empty: any.
    pub topics: Vec<String>,
    /// Certificates known in advance, PEM, by their URL.
    pub certificates: HashMap<String, String>,
    /// Hosts certificates may be fetched from (`sns.us-east-1.amazonaws.com`; a
    /// leading `*.` matches any one label: `sns.*.amazonaws.com`).
    pub hosts: Vec<String>,
}

/// Checks messages against a [`Trust`], fetching certificates it allows and keeping
/// them.
pub struct Verifier {
    trust: Trust,
    http: reqwest::Client,
    /// Public keys (RSAPublicKey DER) by certificate URL.
    keys: Mutex<HashMap<String, Vec<u8>>>,
}

impl Verifier {
    pub fn new(trust: Trust, http: reqwest::Client) -> Result<Self, SnsError> {
        let mut keys = HashMap::new();
        for (url, pem) in &trust.certificates {
            keys.insert(url.clone(), public_key(pem.as_bytes())?);
        }
        Ok(Self {
            trust,
            http,
            keys: Mutex::new(keys),
        })
    }

    /// Whether `url` is a host certificates (and subscription confirmations) may be
    /// fetched from: HTTPS at an allowed host (plain HTTP only on loopback).
    pub fn allowed_url(&self, url: &str) -> bool {
        let Ok(url) = reqwest::Url::parse(url) else {
            return false;
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
        let host_port = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        scheme_ok
            && self
                .trust
                .hosts
                .iter()
                .any(|h| host_matches(h, &host_port) || host_matches(h, host))
    }

    /// Checks `m`'s topic and signature.
    pub async fn verify(&self, m: &SnsMessage) -> Result<(), SnsError> {
        if !self.trust.topics.is_empty() && !self.trust.topics.contains(&m.topic_arn) {
            return Err(SnsError::Topic(m.topic_arn.clone()));
        }
        let algorithm: &'static dyn signature::VerificationAlgorithm =
            match m.signature_version.as_str() {
                "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
                other => return Err(SnsError::Version(other.into())),
            };
        let key = self.key(&m.signing_cert_url).await?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(m.signature.trim())
            .map_err(|_| SnsError::Signature)?;
        UnparsedPublicKey::new(algorithm, &key)
            .verify(m.string_to_sign()?.as_bytes(), &signature)
            .map_err(|_| SnsError::Signature)
    }

    async fn key(&self, url: &str) -> Result<Vec<u8>, SnsError> {
        if let Some(key) = lock(&self.keys).get(url) {
            return Ok(key.clone());
        }
        if !self.allowed_url(url) {
            return Err(SnsError::CertificateUrl(url.into()));
        }
        let answer = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| SnsError::Certificate(e.to_string()))?;
        let pem = answer
            .bytes()
            .await
            .map_err(|e| SnsError::Certificate(e.to_string()))?;
        if pem.len() > MAX_CERTIFICATE {
            return Err(SnsError::Certificate("larger than 64 KiB".into()));
        }
        let key = public_key(&pem)?;
        lock(&self.keys).insert(url.to_string(), key.clone());
        Ok(key)
    }
}

/// The RSA public key of a PEM certificate (the RSAPublicKey ring verifies with).
fn public_key(pem: &[u8]) -> Result<Vec<u8>, SnsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| SnsError::Certificate(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| SnsError::Certificate(format!("not an X.509 certificate: {e}")))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// `pattern` (`sns.us-east-1.amazonaws.com`, `sns.*.amazonaws.com`, `127.0.0.1:8080`)
/// against a host (with its port when it has one), without case.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern
            .iter()
            .zip(&host)
            .all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_follows_the_documented_order() {
        let mut m = SnsMessage {
            kind: "Notification".into(),
            message_id: "id-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:123:t".into(),
            subject: Some("Hi".into()),
            message: "{}".into(),
            timestamp: "2026-12-07T00:00:00.000Z".into(),
            signature_version: "2".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            token: None,
            subscribe_url: None,
        };
        assert_eq!(
            m.string_to_sign().unwrap(),
            "Message\n{}\nMessageId\nid-1\nSubject\nHi\nTimestamp\n2026-12-07T00:00:00.000Z\n\
             TopicArn\narn:aws:sns:us-east-1:123:t\nType\nNotification\n"
        );
        m.kind = "SubscriptionConfirmation".into();
        m.subject = None;
        assert!(m.string_to_sign().is_err(), "no token, no URL");
        m.token = Some("tok".into());
        m.subscribe_url = Some("https://sns.us-east-1.amazonaws.com/?Action=x".into());
        assert_eq!(
            m.string_to_sign().unwrap(),
            "Message\n{}\nMessageId\nid-1\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=x\n\
             Timestamp\n2026-12-07T00:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:123:t\n\
             Type\nSubscriptionConfirmation\n"
        );
    }

    #[test]
    fn only_trusted_hosts_serve_certificates() {
        let v = Verifier::new(
            Trust {
                hosts: vec!["sns.*.amazonaws.com".into(), "127.0.0.1:8443".into()],
                ..Trust::default()
            },
            reqwest::Client::new(),
        )
        .unwrap();
        for (url, ok) in [
            (
                "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
                true,
            ),
            ("https://SNS.eu-west-1.amazonaws.com/x.pem", true),
            ("http://sns.us-east-1.amazonaws.com/x.pem", false),
            ("https://sns.us-east-1.amazonaws.com.evil.test/x.pem", false),
            ("https://evil.test/sns.us-east-1.amazonaws.com/x.pem", false),
            ("https://sns.amazonaws.com/x.pem", false),
            ("http://127.0.0.1:8443/cert.pem", true),
            ("http://127.0.0.1:9999/cert.pem", false),
            ("not a url", false),
        ] {
            assert_eq!(v.allowed_url(url), ok, "{url}");
        }
    }
}
