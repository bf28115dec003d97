//! The spool's redb tables and the encoding of their records.
//!
//! | table | key | value |
//! |---|---|---|
//! | `bodies` | message id | the body bytes |
//! | `envelopes` | message id | `[version][due_ms: u64 BE][postcard Envelope]` |
//! | `schedule` | `(due_ms, id)` | `()` |
//! | `dead_letters` | message id | `[version][postcard DeadLetter]` |
//!
//! Invariant (kept by doing every change in one write transaction): a message is queued
//! iff it has an `envelopes` record, a `bodies` record and exactly one `schedule` key,
//! and that key's `due_ms` is the one stored in the envelope record.

use redb::TableDefinition;

use crate::{DeadLetter, Envelope, MessageId, QueueError, Result};

pub(crate) const BODIES: TableDefinition<u128, &[u8]> = TableDefinition::new("bodies");
pub(crate) const ENVELOPES: TableDefinition<u128, &[u8]> = TableDefinition::new("envelopes");
pub(crate) const SCHEDULE: TableDefinition<(u64, u128), ()> = TableDefinition::new("schedule");
pub(crate) const DEAD_LETTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("dead_letters");

/// Format version of envelope records; bump (and keep a decoder) when `Envelope` changes.
const ENVELOPE_V1: u8 = 1;
/// Format version of dead-letter records.
const DEAD_LETTER_V1: u8 = 1;
/// Version byte + due time.
const ENVELOPE_HEADER: usize = 1 + 8;

/// Any redb error as a [`QueueError::Storage`].
pub(crate) fn storage(e: impl Into<redb::Error>) -> QueueError {
    QueueError::Storage(e.into().to_string())
}

fn corrupt(id: MessageId, reason: impl Into<String>) -> QueueError {
    QueueError::Corrupt {
        id,
        reason: reason.into(),
    }
}

/// Encodes an envelope record, due at `due_ms`.
pub(crate) fn encode_envelope(envelope: &Envelope, due_ms: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    buf.push(ENVELOPE_V1);
    buf.extend_from_slice(&due_ms.to_be_bytes());
    postcard::to_extend(envelope, buf)
        .map_err(|e| QueueError::Storage(format!("cannot encode envelope {}: {e}", envelope.id)))
}

/// Reads only the due time of an envelope record (enough to find its schedule key).
pub(crate) fn decode_due(id: MessageId, record: &[u8]) -> Result<u64> {
    match record {
        [ENVELOPE_V1, rest @ ..] if rest.len() >= 8 => {
            let mut due = [0u8; 8];
            due.copy_from_slice(&rest[..8]);
            Ok(u64::from_be_bytes(due))
        }
        [ENVELOPE_V1, ..] => Err(corrupt(id, "envelope record is truncated")),
        [v, ..] => Err(corrupt(id, format!("unknown envelope format version {v}"))),
        [] => Err(corrupt(id, "empty envelope record")),
    }
}

/// Decodes an envelope record into its due time and envelope.
pub(crate) fn decode_envelope(id: MessageId, record: &[u8]) -> Result<(u64, Envelope)> {
    let (due, envelope) = decode_any_envelope(id, record)?;
    if envelope.id != id {
        return Err(corrupt(
            id,
            format!("envelope stored under this id says it is {}", envelope.id),
        ));
    }
    Ok((due, envelope))
}

/// Decodes an envelope record without knowing its id beforehand (a Kafka record);
/// `context` only names the record in errors.
pub(crate) fn decode_any_envelope(context: MessageId, record: &[u8]) -> Result<(u64, Envelope)> {
    let due = decode_due(context, record)?;
    let envelope: Envelope = postcard::from_bytes(&record[ENVELOPE_HEADER..])
        .map_err(|e| corrupt(context, format!("cannot decode envelope: {e}")))?;
    Ok((due, envelope))
}

pub(crate) fn encode_dead_letter(dead: &DeadLetter) -> Result<Vec<u8>> {
    postcard::to_extend(dead, vec![DEAD_LETTER_V1]).map_err(|e| {
        QueueError::Storage(format!(
            "cannot encode dead letter {}: {e}",
            dead.envelope.id
        ))
    })
}

pub(crate) fn decode_dead_letter(id: MessageId, record: &[u8]) -> Result<DeadLetter> {
    match record {
        [DEAD_LETTER_V1, rest @ ..] => postcard::from_bytes(rest)
            .map_err(|e| corrupt(id, format!("cannot decode dead letter: {e}"))),
        [v, ..] => Err(corrupt(
            id,
            format!("unknown dead-letter format version {v}"),
        )),
        [] => Err(corrupt(id, "empty dead-letter record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipient;

    fn envelope() -> Envelope {
        Envelope::new(
            "a@example.com",
            vec![Recipient::new("b@example.net")],
            "192.0.2.1".parse().unwrap(),
        )
    }

    #[test]
    fn envelope_round_trip() {
        let env = envelope();
        let rec = encode_envelope(&env, 42).unwrap();
        assert_eq!(rec[0], ENVELOPE_V1);
        assert_eq!(decode_due(env.id, &rec).unwrap(), 42);
        assert_eq!(decode_envelope(env.id, &rec).unwrap(), (42, env));
    }

    #[test]
    fn bad_envelope_records_are_corrupt_not_panics() {
        let env = envelope();
        let rec = encode_envelope(&env, 7).unwrap();
        let id = env.id;
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![ENVELOPE_V1],
            vec![ENVELOPE_V1, 0, 0, 0],
            vec![99; 40],
            rec[..rec.len() - 3].to_vec(),
            rec[..ENVELOPE_HEADER].to_vec(),
        ];
        for case in cases {
            assert!(
                matches!(decode_envelope(id, &case), Err(QueueError::Corrupt { .. })),
                "{case:?}"
            );
        }
        // Stored under another id.
        assert!(matches!(
            decode_envelope(MessageId::new(), &rec),
            Err(QueueError::Corrupt { .. })
        ));
    }

    #[test]
    fn dead_letter_round_trip() {
        let dead = DeadLetter {
            envelope: envelope(),
            at_ms: 5,
            reason: "550 no such user".into(),
        };
        let rec = encode_dead_letter(&dead).unwrap();
        assert_eq!(decode_dead_letter(dead.envelope.id, &rec).unwrap(), dead);
        assert!(matches!(
            decode_dead_letter(dead.envelope.id, &rec[..3]),
            Err(QueueError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_dead_letter(dead.envelope.id, &[]),
            Err(QueueError::Corrupt { .. })
        ));
    }
}
