//! What an unsubscribe does, however it arrives: the one-click `POST /u/TOKEN` of
//! RFC 8058, or mail to the `mailto:` of `List-Unsubscribe` (RFC 2369), whose subject
//! carries the same signed token. The address goes on its tenant's suppression list
//! at once, then an `unsubscribed` event is recorded durably; either failing is an
//! error the caller answers with "try again" (a 503, an SMTP 451), so nothing is lost.

use std::sync::Arc;

use postroad_queue::{DeliveryEvent, EventKind, Queue, QueueError, unix_ms};
use postroad_webhooks::suppression::{Suppressions, entry_for};

use super::{Claims, Purpose, Tracking};

/// Most bytes of a message's text read for a token when its subject has none.
const MAX_TEXT_SCANNED: usize = 16 * 1024;

/// Why an unsubscribe was not done.
#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    #[error("cannot add the address to the suppression list: {0}")]
    Suppressions(String),
    #[error("cannot record the unsubscribed event: {0}")]
    Queue(#[from] QueueError),
}

/// Puts the token's recipient on its tenant's suppression list (when there is one),
/// then records its `unsubscribed` event.
pub async fn apply(
    claims: &Claims,
    suppressions: Option<&Suppressions>,
    queue: &dyn Queue,
) -> Result<(), UnsubscribeError> {
    let event = claims.event(
        EventKind::Unsubscribed,
        None,
        unix_ms(std::time::SystemTime::now()),
    );
    if let Some(list) = suppressions
        && let Some(entry) = entry_for(&event, 0)
    {
        list.add(vec![entry])
            .await
            .map_err(|e| UnsubscribeError::Suppressions(e.to_string()))?;
    }
    queue.record(vec![event]).await?;
    Ok(())
}

/// What became of mail to the unsubscribe address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// This recipient is unsubscribed.
    Unsubscribed(String),
    /// The mail carries no unsubscribe token of this server.
    NoToken,
}

/// Unsubscribes by mail: what the SMTP listener does with mail to the `mailto:`
/// address of `List-Unsubscribe`.
pub struct MailUnsubscribe {
    tracking: Arc<Tracking>,
    suppressions: Option<Arc<Suppressions>>,
    queue: Arc<dyn Queue>,
}

impl MailUnsubscribe {
    /// `None` when tracking has no unsubscribe address.
    pub fn new(
        tracking: Arc<Tracking>,
        suppressions: Option<Arc<Suppressions>>,
        queue: Arc<dyn Queue>,
    ) -> Option<Self> {
        tracking.unsubscribe_address()?;
        Some(Self {
            tracking,
            suppressions,
            queue,
        })
    }

    /// Whether `address` is the unsubscribe address.
    pub fn accepts(&self, address: &str) -> bool {
        self.tracking
            .unsubscribe_address()
            .is_some_and(|ours| ours.eq_ignore_ascii_case(address.trim_end_matches('.')))
    }

    /// Reads the token from the mail's subject (else its text) and unsubscribes its
    /// recipient.
    pub async fn receive(&self, raw: &[u8]) -> Result<MailOutcome, UnsubscribeError> {
        let Some(claims) = token_claims(&self.tracking, raw) else {
            return Ok(MailOutcome::NoToken);
        };
        apply(&claims, self.suppressions.as_deref(), &*self.queue).await?;
        Ok(MailOutcome::Unsubscribed(claims.recipient))
    }
}

/// The claims of the first valid unsubscribe token in the subject of `raw` (a mail
/// client sends the `mailto:`'s `subject=` as it is, perhaps after `Re:` or folded),
/// else in the first part of its text.
pub fn token_claims(tracking: &Tracking, raw: &[u8]) -> Option<Claims> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    let verify = |text: &str| {
        words(text).find_map(|word| {
            tracking
                .verify(word)
                .ok()
                .filter(|c| c.purpose == Purpose::Unsubscribe)
        })
    };
    if let Some(claims) = message.subject().and_then(verify) {
        return Some(claims);
    }
    let text = message.body_text(0)?;
    let end = text.floor_char_boundary(MAX_TEXT_SCANNED.min(text.len()));
    verify(&text[..end])
}

/// The runs of token characters (URL-safe base64) long enough to be a token.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| w.len() >= super::token::MIN_TOKEN_CHARS)
}

impl Claims {
    /// The event this token's request is, at `at_ms`.
    pub fn event(&self, kind: EventKind, reason: Option<String>, at_ms: u64) -> DeliveryEvent {
        let domain = self
            .recipient
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        DeliveryEvent {
            event_id: uuid::Uuid::now_v7(),
            kind,
            message_id: self.message,
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            domain,
            at_ms,
            attempt: 0,
            remote_host: None,
            reply: None,
            meta: self.meta.clone(),
            provider_message_id: None,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackingConfig;
    use crate::tracking::{Dressed, Wanted};
    use postroad_queue::{MessageId, Metadata};

    fn config() -> TrackingConfig {
        TrackingConfig {
            base_url: "https://t.example.com".into(),
            ..TrackingConfig::default()
        }
    }

    fn tracking() -> Tracking {
        Tracking::new(&config(), "a key of the unsubscribe tests")
            .with_unsubscribe_address("unsubscribe@bounces.example.com".into())
    }

    /// A new message from news@example.com to `recipient`, dressed as `wanted`.
    fn dress(tracking: &Tracking, recipient: &str, html: Option<&str>, wanted: Wanted) -> Dressed {
        let meta = Metadata::default();
        let sender = "news@example.com";
        tracking
            .dress(MessageId::new(), sender, recipient, &meta, html, wanted)
            .unwrap()
    }

    /// The mailto's token of a message to `recipient`, as `List-Unsubscribe` has it.
    fn mailto_token(tracking: &Tracking, recipient: &str) -> String {
        let wanted = Wanted {
            unsubscribe: true,
            ..Wanted::default()
        };
        let header = dress(tracking, recipient, None, wanted)
            .list_unsubscribe
            .unwrap();
        let (url, mailto) = header.split_once(",\r\n ").unwrap();
        assert!(url.starts_with("<https://t.example.com/u/"), "{header}");
        let token = mailto
            .strip_prefix("<mailto:unsubscribe@bounces.example.com?subject=")
            .and_then(|t| t.strip_suffix('>'))
            .unwrap();
        // The same token as the URL's.
        assert_eq!(url.trim_end_matches('>').rsplit('/').next(), Some(token));
        token.to_string()
    }

    fn mail(subject: &str, text: &str) -> Vec<u8> {
        format!(
            "From: ann@example.org\r\nTo: unsubscribe@bounces.example.com\r\n\
             Subject: {subject}\r\n\r\n{text}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_token_is_found_in_the_subject_however_the_client_sent_it() {
        let tracking = tracking();
        let token = mailto_token(&tracking, "ann@example.org");
        let encoded = format!(
            "=?utf-8?B?{}?=",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("Re: {token}")
            )
        );
        for subject in [
            token.clone(),
            format!("Re: {token}"),
            format!("unsubscribe\r\n {token}"),
            encoded,
        ] {
            let claims = token_claims(&tracking, &mail(&subject, "")).expect(&subject);
            assert_eq!(claims.recipient, "ann@example.org");
            assert_eq!(claims.purpose, Purpose::Unsubscribe);
        }
        // A client that put it in the text instead.
        let claims = token_claims(&tracking, &mail("unsubscribe", &format!("Please: {token}")));
        assert_eq!(claims.unwrap().recipient, "ann@example.org");
    }

    #[test]
    fn a_changed_foreign_or_other_purpose_token_unsubscribes_no_one() {
        let tracking = tracking();
        let token = mailto_token(&tracking, "ann@example.org");
        let mut changed = token.clone().into_bytes();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).unwrap();
        assert!(token_claims(&tracking, &mail(&changed, "")).is_none());
        let other = Tracking::new(&config(), "another server's key, not ours");
        assert!(token_claims(&other, &mail(&token, "")).is_none());
        // An open pixel's token is not an unsubscribe.
        let wanted = Wanted {
            opens: true,
            ..Wanted::default()
        };
        let page = Some("<html><body>Hi</body></html>");
        let html = dress(&tracking, "ann@example.org", page, wanted)
            .html
            .unwrap();
        let open = html
            .split("/t/o/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(token_claims(&tracking, &mail(open, "")).is_none());
        assert!(token_claims(&tracking, &mail("unsubscribe me", "please")).is_none());
        assert!(token_claims(&tracking, b"\xff\xfe not mail at all").is_none());
    }

    #[test]
    fn without_an_address_the_header_has_the_url_only() {
        let tracking = Tracking::new(&config(), "a key of the unsubscribe tests");
        let wanted = Wanted {
            unsubscribe: true,
            ..Wanted::default()
        };
        let header = dress(&tracking, "ann@example.org", None, wanted)
            .list_unsubscribe
            .unwrap();
        assert!(header.starts_with("<https://t.example.com/u/") && !header.contains("mailto"));
    }
}
