//! AWS Signature Version 4, checked on the receiving side: the canonical request is
//! rebuilt from the headers the client says it signed, signed again with the secret of
//! its access key, and compared in constant time. Pure: no I/O, the clock is passed in.

use std::fmt::Write as _;

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request's `X-Amz-Date` may be from our clock, as AWS allows.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was not accepted; each maps to the error AWS gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("Signature expired: {0} is more than 15 minutes from the server's time.")]
    Expired(String),
    #[error("Credential should be scoped to {0}.")]
    WrongScope(String),
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

impl SigError {
    /// The AWS error code (`x-amzn-ErrorType`).
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationTokenException",
            SigError::Incomplete(_) => "IncompleteSignatureException",
            SigError::UnknownKey => "UnrecognizedClientException",
            SigError::Expired(_) => "InvalidSignatureException",
            SigError::WrongScope(_) | SigError::Mismatch => "SignatureDoesNotMatch",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            SigError::Incomplete(_) => 400,
            _ => 403,
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key_id: &'a str,
    /// `YYYYMMDD`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

impl<'a> Authorization<'a> {
    pub fn parse(value: &'a str) -> Result<Self, SigError> {
        let incomplete = |what: &str| SigError::Incomplete(format!("Authorization header {what}"));
        let rest = value
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(|| incomplete("must start with AWS4-HMAC-SHA256"))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((name, value)) = part.trim().split_once('=') else {
                return Err(incomplete("has a part without '='"));
            };
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let credential = credential.ok_or_else(|| incomplete("lacks Credential"))?;
        let signed = signed.ok_or_else(|| incomplete("lacks SignedHeaders"))?;
        let signature = signature.ok_or_else(|| incomplete("lacks Signature"))?;
        let mut scope = credential.split('/');
        let (
            Some(access_key_id),
            Some(date),
            Some(region),
            Some(service),
            Some("aws4_request"),
            None,
        ) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        )
        else {
            return Err(incomplete(
                "Credential must be <key>/<date>/<region>/<service>/aws4_request",
            ));
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(incomplete("Credential has a bad date"));
        }
        let signed_headers: Vec<&str> = signed.split(';').collect();
        if signed_headers.iter().any(|h| h.is_empty()) || !signed_headers.contains(&"host") {
            return Err(incomplete("SignedHeaders must list host"));
        }
        Ok(Self {
            access_key_id,
            date,
            region,
            service,
            signed_headers,
            signature,
        })
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// A request as it arrived.
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Who signed a request, and for which region.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    pub access_key_id: String,
    pub region: String,
}

/// Checks `request`'s signature for `service`: `secret` looks up an access key's
/// secret, `now` is the Unix time.
pub fn verify<'s>(
    request: &Request<'_>,
    service: &str,
    secret: impl FnOnce(&str) -> Option<&'s str>,
    now: i64,
) -> Result<Signed, SigError> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let value = header("authorization").ok_or(SigError::Missing)?;
    let auth = Authorization::parse(value)?;
    let amz_date = header("x-amz-date")
        .ok_or_else(|| SigError::Incomplete("the X-Amz-Date header is missing".into()))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        SigError::Incomplete(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if (now - signed_at).abs() > MAX_SKEW_SECS {
        return Err(SigError::Expired(amz_date.to_string()));
    }
    if !amz_date.starts_with(auth.date) {
        return Err(SigError::WrongScope(format!(
            "the date of X-Amz-Date ({})",
            &amz_date[..8]
        )));
    }
    if auth.service != service {
        return Err(SigError::WrongScope(format!("the service {service}")));
    }
    let secret = secret(auth.access_key_id).ok_or(SigError::UnknownKey)?;
    // The client signs the hash it declares (or UNSIGNED-PAYLOAD); a declared hash
    // must be the body's.
    let computed = hex(&Sha256::digest(request.body));
    let payload = match header("x-amz-content-sha256") {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD",
        Some(declared) if declared != computed => return Err(SigError::Mismatch),
        _ => computed.as_str(),
    };
    let canonical = canonical_request(request, &auth.signed_headers, payload);
    let expected = signature(secret, &auth, amz_date, &canonical);
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(Signed {
            access_key_id: auth.access_key_id.to_string(),
            region: auth.region.to_string(),
        })
    } else {
        Err(SigError::Mismatch)
    }
}

/// The signature of a canonical request, hex.
fn signature(secret: &str, auth: &Authorization<'_>, amz_date: &str, canonical: &str) -> String {
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region, auth.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, to_sign.as_bytes()))
}

/// The canonical request of SigV4: method, URI, query, signed headers, payload hash.
fn canonical_request(request: &Request<'_>, signed: &[&str], payload: &str) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n",
        request.method,
        uri_encode(request.uri.path(), false),
        canonical_query(request.uri.query().unwrap_or_default())
    );
    for name in signed {
        let mut values: Vec<String> = request
            .headers
            .get_all(*name)
            .iter()
            .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        // HTTP/2 carries the host as :authority, which is not among the headers.
        if values.is_empty()
            && *name == "host"
            && let Some(authority) = request.uri.authority()
        {
            values.push(authority.to_string());
        }
        let _ = writeln!(out, "{name}:{}", values.join(","));
    }
    let _ = write!(out, "\n{}\n{payload}", signed.join(";"));
    out
}

/// Trimmed, with runs of spaces made one.
fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The query, each name and value decoded and re-encoded the SigV4 way, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (
                uri_encode(&decode(name), true),
                uri_encode(&decode(value), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes all but the unreserved characters (and `/` in paths).
fn uri_encode(text: &str, slash_too: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash_too) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<i64> {
    let time = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok()?;
    Some(time.and_utc().timestamp())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// The example of the AWS documentation ("Create a signed AWS API request"): IAM
    /// ListUsers, signed on 2015-08-30 12:36:00 UTC.
    fn documented_request() -> (Method, Uri, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "iam.amazonaws.com"),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let uri: Uri = "/?Action=ListUsers&Version=2010-05-08".parse().unwrap();
        (Method::GET, uri, headers)
    }

    const DOCUMENTED_TIME: i64 = 1_440_938_160;

    #[test]
    fn the_documented_example_verifies() {
        let (method, uri, headers) = documented_request();
        let request = Request {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(
            &request,
            &["content-type", "host", "x-amz-date"],
            &hex(&Sha256::digest(b"")),
        );
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let found = verify(
            &request,
            "iam",
            |id| (id == "AKIDEXAMPLE").then_some(SECRET),
            DOCUMENTED_TIME + 60,
        );
        let signed = Signed {
            access_key_id: "AKIDEXAMPLE".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(found, Ok(signed));
    }

    #[test]
    fn any_change_or_wrong_secret_or_late_request_is_refused() {
        let (method, uri, headers) = documented_request();
        let check = |headers: &HeaderMap, body: &[u8], secret: &'static str, now: i64| {
            let request = Request {
                method: &method,
                uri: &uri,
                headers,
                body,
            };
            verify(&request, "iam", |_| Some(secret), now)
        };
        assert_eq!(
            check(&headers, b"x", SECRET, DOCUMENTED_TIME),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            check(&headers, b"", "other", DOCUMENTED_TIME),
            Err(SigError::Mismatch)
        );
        let mut changed = headers.clone();
        changed.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            check(&changed, b"", SECRET, DOCUMENTED_TIME),
            Err(SigError::Mismatch)
        );
        assert!(matches!(
            check(&headers, b"", SECRET, DOCUMENTED_TIME + 16 * 60),
            Err(SigError::Expired(_))
        ));
        let mut unsigned = headers.clone();
        unsigned.remove("authorization");
        assert_eq!(
            check(&unsigned, b"", SECRET, DOCUMENTED_TIME),
            Err(SigError::Missing)
        );
        let request = Request {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: b"",
        };
        assert!(matches!(
            verify(&request, "ses", |_| Some(SECRET), DOCUMENTED_TIME),
            Err(SigError::WrongScope(_))
        ));
        assert_eq!(
            verify(&request, "iam", |_| None, DOCUMENTED_TIME),
            Err(SigError::UnknownKey)
        );
    }

    #[test]
    fn an_unsigned_payload_is_signed_as_such_and_a_declared_hash_must_match() {
        let (method, uri, mut headers) = documented_request();
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let signed = ["content-type", "host", "x-amz-content-sha256", "x-amz-date"];
        let request = Request {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: b"any body",
        };
        let auth = Authorization {
            access_key_id: "AKIDEXAMPLE",
            date: "20150830",
            region: "us-east-1",
            service: "iam",
            signed_headers: signed.to_vec(),
            signature: "",
        };
        let canonical = canonical_request(&request, &signed, "UNSIGNED-PAYLOAD");
        let sig = signature(SECRET, &auth, "20150830T123600Z", &canonical);
        let value = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders={}, Signature={sig}",
            signed.join(";")
        );
        headers.insert("authorization", HeaderValue::from_str(&value).unwrap());
        let verify_with = |headers: &HeaderMap| {
            let request = Request {
                method: &method,
                uri: &uri,
                headers,
                body: b"any body",
            };
            verify(&request, "iam", |_| Some(SECRET), DOCUMENTED_TIME)
        };
        assert!(verify_with(&headers).is_ok());
        let mut wrong = headers.clone();
        wrong.insert("x-amz-content-sha256", HeaderValue::from_static("00"));
        assert_eq!(verify_with(&wrong), Err(SigError::Mismatch));
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete_not_panics() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/x, SignedHeaders=host, Signature=0",
            "AWS4-HMAC-SHA256 Credential=a/2015083/r/s/aws4_request, SignedHeaders=host, Signature=0",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=date, Signature=0",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request/x, SignedHeaders=host, Signature=0",
            "Bearer abc",
        ] {
            assert!(
                matches!(Authorization::parse(bad), Err(SigError::Incomplete(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn queries_and_paths_are_encoded_the_sigv4_way() {
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
        assert_eq!(uri_encode("/v2/email/a b~", false), "/v2/email/a%20b~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
