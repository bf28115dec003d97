//! The signed tokens of tracking and unsubscribe links: what they say (which message
//! and recipient, the message's metadata, for a click the link and where it goes),
//! packed small, with an HMAC-SHA256 tag, as URL-safe base64. Nothing is stored per
//! message: a token carries what its request records, and only Postroad can make one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use postroad_queue::{MessageId, Metadata};
use sha2::Sha256;

/// Version, purpose, message id and tag: the least a token holds.
const MIN_BYTES: usize = 2 + 16 + TAG;
/// Layout version; a token of another version is refused.
const VERSION: u8 = 1;
/// Bytes of the HMAC-SHA256 tag kept (128 bits).
const TAG: usize = 16;
/// The longest token accepted (a click's URL is bounded by [`MAX_URL`]).
pub const MAX_TOKEN: usize = 4096;
/// The shortest a token can be: its version, purpose, message id and tag (34 bytes)
/// in base64.
pub const MIN_TOKEN_CHARS: usize = 46;
/// The longest URL a click token carries.
pub const MAX_URL: usize = 2048;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    fn code(self) -> u8 {
        match self {
            Purpose::Open => 1,
            Purpose::Click => 2,
            Purpose::Unsubscribe => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Purpose::Open),
            2 => Some(Purpose::Click),
            3 => Some(Purpose::Unsubscribe),
            _ => None,
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub purpose: Purpose,
    pub message: MessageId,
    pub sender: String,
    pub recipient: String,
    /// The message's user id, email type, tenant, campaign and variant (its priority
    /// and tags are not carried).
    pub meta: Metadata,
    /// For a click: the link's position in the message (from 0) and its target.
    pub link: Option<(u16, String)>,
}

/// Why a token was refused (the caller answers 404 whatever the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token")]
    Malformed,
    #[error("the token's tag does not match")]
    Forged,
    #[error("a token of another layout version")]
    Version,
}

/// Signs and checks tokens with one key (every node of a cluster needs the same).
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<key>)")
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG] {
        let mut mac = self.mac.clone();
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// The token for `claims`; `None` when a field is too long to carry (over 65,535
    /// bytes, or a URL over [`MAX_URL`]).
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.push(claims.purpose.code());
        out.extend_from_slice(&claims.message.as_u128().to_be_bytes());
        put_str(&mut out, &claims.sender)?;
        put_str(&mut out, &claims.recipient)?;
        let m = &claims.meta;
        let texts = [&m.email_type, &m.tenant, &m.campaign, &m.variant];
        let mut present = 0u8;
        for (bit, text) in texts.iter().enumerate() {
            if text.is_some() {
                present |= 1 << bit;
            }
        }
        if m.user_id.is_some() {
            present |= 1 << 4;
        }
        if claims.link.is_some() {
            present |= 1 << 5;
        }
        out.push(present);
        for text in texts.into_iter().flatten() {
            put_str(&mut out, text)?;
        }
        if let Some(id) = m.user_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if let Some((index, url)) = &claims.link {
            if url.len() > MAX_URL {
                return None;
            }
            out.extend_from_slice(&index.to_be_bytes());
            put_str(&mut out, url)?;
        }
        let tag = self.tag(&out);
        out.extend_from_slice(&tag);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The claims of a token this key made; anything else is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() < MIN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG);
        let mut mac = self.mac.clone();
        mac.update(payload);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::Forged)?;
        if payload[0] != VERSION {
            return Err(TokenError::Version);
        }
        decode(payload).ok_or(TokenError::Malformed)
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    let len = u16::try_from(text.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Some(())
}

/// Reads a signed payload (its tag already checked).
fn decode(payload: &[u8]) -> Option<Claims> {
    let mut r = Reader(payload);
    r.take(1)?;
    let purpose = Purpose::from_code(r.take(1)?[0])?;
    let message = MessageId::from_u128(u128::from_be_bytes(r.take(16)?.try_into().ok()?));
    let sender = r.string()?;
    let recipient = r.string()?;
    let present = r.take(1)?[0];
    let mut texts: [Option<String>; 4] = Default::default();
    for (bit, text) in texts.iter_mut().enumerate() {
        if present & (1 << bit) != 0 {
            *text = Some(r.string()?);
        }
    }
    let [email_type, tenant, campaign, variant] = texts;
    let user_id = if present & (1 << 4) != 0 {
        Some(u64::from_be_bytes(r.take(8)?.try_into().ok()?))
    } else {
        None
    };
    let link = if present & (1 << 5) != 0 {
        let index = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        Some((index, r.string()?))
    } else {
        None
    };
    if !r.0.is_empty() || (purpose == Purpose::Click) != link.is_some() {
        return None;
    }
    Some(Claims {
        purpose,
        message,
        sender,
        recipient,
        meta: Metadata {
            user_id,
            email_type,
            tenant,
            campaign,
            variant,
            ..Metadata::default()
        },
        link,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(purpose: Purpose) -> Claims {
        Claims {
            purpose,
            message: MessageId::new(),
            sender: "news@example.com".into(),
            recipient: "ann@example.net".into(),
            meta: Metadata {
                user_id: Some(42),
                tenant: Some("acme".into()),
                campaign: Some("spring".into()),
                variant: Some("b".into()),
                ..Metadata::default()
            },
            link: (purpose == Purpose::Click).then(|| (3, "https://shop.example/?a=1&b=2".into())),
        }
    }

    #[test]
    fn no_token_is_shorter_than_min_token_chars() {
        assert_eq!(
            URL_SAFE_NO_PAD.encode([0u8; MIN_BYTES]).len(),
            MIN_TOKEN_CHARS
        );
        let signer = Signer::new(b"0123456789abcdef");
        let bare = Claims {
            purpose: Purpose::Open,
            message: MessageId::new(),
            sender: String::new(),
            recipient: String::new(),
            meta: Metadata::default(),
            link: None,
        };
        assert!(signer.sign(&bare).unwrap().len() >= MIN_TOKEN_CHARS);
    }

    #[test]
    fn tokens_say_what_they_were_made_with_and_only_to_their_key() {
        let signer = Signer::new(b"0123456789abcdef");
        for purpose in [Purpose::Open, Purpose::Click, Purpose::Unsubscribe] {
            let c = claims(purpose);
            let token = signer.sign(&c).unwrap();
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(signer.verify(&token), Ok(c.clone()));
            let other = Signer::new(b"another key of 16+");
            assert_eq!(other.verify(&token), Err(TokenError::Forged));
        }
        let open = signer.sign(&claims(Purpose::Open)).unwrap();
        // Compact: an open token carrying a sender, recipient, tenant, campaign,
        // variant and user id is at most 128 characters.
        assert!(open.len() <= 128, "{} characters", open.len());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let signer = Signer::new(b"0123456789abcdef");
        let token = signer.sign(&claims(Purpose::Click)).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let changed = URL_SAFE_NO_PAD.encode(changed);
            assert!(signer.verify(&changed).is_err(), "byte {i}");
        }
        for bad in ["", "abc", "!!!!", &"A".repeat(MAX_TOKEN + 4)] {
            assert!(signer.verify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_too_long_to_carry_make_no_token() {
        let signer = Signer::new(b"0123456789abcdef");
        let mut c = claims(Purpose::Click);
        c.link = Some((0, format!("https://x.example/{}", "a".repeat(MAX_URL))));
        assert_eq!(signer.sign(&c), None);
    }
}
