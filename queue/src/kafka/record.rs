//! How a message travels in a Kafka record: the body as the value, the envelope (in
//! the spool's own versioned encoding, with the due time) in a header, and the
//! recipient domain as the key.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::spool::tables;
use crate::{Envelope, MessageId, QueueError, Result};

/// Header with the encoded envelope and due time.
pub const ENVELOPE_HEADER: &str = "postroad-envelope";
/// Header with the reason a record is in the dead-letter topic.
pub const REASON_HEADER: &str = "postroad-reason";
/// Header with the event id of a record in the events topic.
pub const EVENT_ID_HEADER: &str = "postroad-event-id";

/// Bytes a record adds to the message beyond its envelope: key, header names,
/// record framing. Counted against `max_record_bytes`.
const RECORD_OVERHEAD: usize = 512;

/// The headers of a message record.
pub fn headers(envelope: &Envelope, due_ms: u64, reason: Option<&str>) -> Result<OwnedHeaders> {
    let encoded = tables::encode_envelope(envelope, due_ms)?;
    let headers = OwnedHeaders::new_with_capacity(2).insert(Header {
        key: ENVELOPE_HEADER,
        value: Some(&encoded),
    });
    Ok(match reason {
        Some(reason) => headers.insert(Header {
            key: REASON_HEADER,
            value: Some(reason.as_bytes()),
        }),
        None => headers,
    })
}

/// The size a record for this message will have, as the producer counts it.
pub fn record_size(envelope: &Envelope, body_len: usize) -> usize {
    let recipients: usize = envelope
        .recipients
        .iter()
        .map(|r| r.address.len() + r.orcpt.as_ref().map_or(0, String::len) + 8)
        .sum();
    body_len + envelope.sender.len() + envelope.helo.len() + recipients + RECORD_OVERHEAD
}

/// The envelope and due time from a record's headers.
pub fn decode<H: Headers>(headers: Option<&H>) -> Result<(u64, Envelope)> {
    let nil = MessageId::from_u128(0);
    let value = headers
        .and_then(|h| h.iter().find(|h| h.key == ENVELOPE_HEADER))
        .and_then(|h| h.value)
        .ok_or_else(|| QueueError::Corrupt {
            id: nil,
            reason: format!("record without a {ENVELOPE_HEADER} header"),
        })?;
    tables::decode_any_envelope(nil, value)
}

/// Splits a message's recipients by domain: one envelope per partition key.
pub fn split_by_domain(envelope: Envelope) -> Vec<(String, Envelope)> {
    let mut domains: Vec<String> = envelope.recipients.iter().map(|r| r.domain()).collect();
    domains.sort_unstable();
    domains.dedup();
    if domains.len() == 1 {
        let domain = domains.pop().unwrap_or_default();
        return vec![(domain, envelope)];
    }
    domains
        .into_iter()
        .map(|domain| {
            let mut part = envelope.clone();
            part.recipients.retain(|r| r.domain() == domain);
            (domain, part)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipient;
    use rdkafka::message::OwnedHeaders;

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope::new(
            "s@a.test",
            rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            "127.0.0.1".parse().unwrap(),
        )
    }

    #[test]
    fn headers_round_trip() {
        let e = envelope(&["x@b.test"]);
        let h = headers(&e, 1234, Some("bounced")).unwrap();
        let (due, back) = decode(Some(&h)).unwrap();
        assert_eq!(due, 1234);
        assert_eq!(back, e);
        let reason = h.iter().find(|h| h.key == REASON_HEADER).unwrap();
        assert_eq!(reason.value, Some(&b"bounced"[..]));
    }

    #[test]
    fn missing_or_corrupt_headers_are_errors_not_panics() {
        assert!(decode::<OwnedHeaders>(None).is_err());
        let junk = OwnedHeaders::new().insert(Header {
            key: ENVELOPE_HEADER,
            value: Some(&b"\x01junk"[..]),
        });
        assert!(matches!(
            decode(Some(&junk)),
            Err(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn split_keeps_one_record_per_domain() {
        let e = envelope(&["a@x.test", "b@y.test", "c@X.test"]);
        let parts = split_by_domain(e.clone());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "x.test");
        assert_eq!(parts[0].1.recipients.len(), 2);
        assert_eq!(parts[1].0, "y.test");
        assert!(parts.iter().all(|(_, p)| p.id == e.id));
        assert_eq!(split_by_domain(envelope(&["a@x.test"])).len(), 1);
    }
}
