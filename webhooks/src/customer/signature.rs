//! The signature of a webhook batch, as receivers check it:
//!
//! ```text
//! Postroad-Signature: t=1765108800,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! ```
//!
//! `v1` is the lowercase hex HMAC-SHA256, keyed with the endpoint's secret (the whole
//! `whsec_...` string, as bytes), of the timestamp, a `.`, and the raw request body.
//! `t` is when the request was signed (Unix seconds; each retry is signed anew): a
//! receiver refuses requests whose `t` is more than a few minutes from its clock, so a
//! recorded request cannot be replayed later, and compares in constant time.

use ring::hmac;

/// The header that carries the signature.
pub const HEADER: &str = "Postroad-Signature";

/// Why a signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no t= and v1= in the signature header")]
    Malformed,
    #[error("the signature's timestamp is {0} s from now")]
    Stale(u64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The header value for `body`, signed at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut hex = String::with_capacity(64);
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={timestamp},v1={hex}")
}

/// Checks a header value against `body`, at `now` (Unix seconds), allowing `tolerance`
/// seconds between the signing time and now.
pub fn verify(
    header: &str,
    secret: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => given.push(v),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp.filter(|_| !given.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let skew = now.abs_diff(timestamp);
    if skew > tolerance {
        return Err(SignatureError::Stale(skew));
    }
    let expected = sign(secret, timestamp, body);
    let expected = expected.rsplit_once("v1=").map_or("", |(_, v)| v);
    // Constant time: ring compares tags so; here both sides are hex of one length.
    let matches = given.iter().any(|v| {
        v.len() == expected.len()
            && v.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_body_and_time_only() {
        let secret = "whsec_test";
        let body = br#"{"events":[]}"#;
        let header = sign(secret, 1_765_108_800, body);
        assert!(header.starts_with("t=1765108800,v1="), "{header}");
        assert_eq!(header.len(), "t=1765108800,v1=".len() + 64);
        assert_eq!(verify(&header, secret, body, 1_765_108_900, 300), Ok(()));
        assert_eq!(
            verify(&header, secret, b"{}", 1_765_108_800, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, "whsec_other", body, 1_765_108_800, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, secret, body, 1_765_109_200, 300),
            Err(SignatureError::Stale(400))
        );
        let moved = header.replace("t=1765108800", "t=1765108801");
        assert_eq!(
            verify(&moved, secret, body, 1_765_108_800, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00"] {
            assert_eq!(
                verify(bad, secret, body, 0, 300),
                Err(SignatureError::Malformed)
            );
        }
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"Jefe", b"42.what do ya want for nothing?", sha256).hexdigest()
        assert_eq!(
            sign("Jefe", 42, b"what do ya want for nothing?"),
            "t=42,v1=246ed6bd2fdb55df4737c62ddbd57a0a74d18becf897aa14e71f8be0b5203c3d"
        );
    }
}
