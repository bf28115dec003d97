//! The spool's redb tables and the encoding of their records.
//!
//! | table | key | value |
//! |---|---|---|
//! | `bodies` | message id | the body bytes |
//! | `envelopes` | message id | `[version][due_ms: u64 BE][postcard Envelope]` |
//! | `schedule` | `(lane | due_ms, id)` ([`schedule_key`]) | `()` |
//! | `dead_letters` | message id | `[version][postcard DeadLetter]` |
//! | `checkpoints` | name | a position ([`crate::Checkpoint`]), set with messages |
//!
//! Invariant (kept by doing every change in one write transaction): a message is queued
//! iff it has an `envelopes` record, a `bodies` record and exactly one `schedule` key,
//! and that key's `due_ms` is the one stored in the envelope record.

use redb::TableDefinition;

use super::legacy::{DeadLetterV1, EnvelopeV1};
use crate::{DeadLetter, Envelope, MessageId, Priority, QueueError, Result};

pub(crate) const BODIES: TableDefinition<u128, &[u8]> = TableDefinition::new("bodies");
pub(crate) const ENVELOPES: TableDefinition<u128, &[u8]> = TableDefinition::new("envelopes");
pub(crate) const SCHEDULE: TableDefinition<(u64, u128), ()> = TableDefinition::new("schedule");
pub(crate) const DEAD_LETTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("dead_letters");
pub(crate) const CHECKPOINTS: TableDefinition<&str, u64> = TableDefinition::new("checkpoints");

/// Bits of a schedule key's first half above the due time: the message's priority
/// lane. Normal is 0, so keys written before lanes existed are normal ones.
const LANE_SHIFT: u32 = 60;
const DUE_MASK: u64 = (1 << LANE_SHIFT) - 1;
const NORMAL_LANE: u64 = 0;
const HIGH_LANE: u64 = 1 << LANE_SHIFT;
const BULK_LANE: u64 = 2 << LANE_SHIFT;
/// The lanes in the order claims take them: every due `high` message before any
/// `normal` one, every due `normal` one before any `bulk` one.
pub(crate) const LANES: [u64; 3] = [HIGH_LANE, NORMAL_LANE, BULK_LANE];

/// Where a message due at `due_ms` sorts in the schedule: its lane, then its due time.
pub(crate) fn schedule_key(priority: Priority, due_ms: u64, id: u128) -> (u64, u128) {
    let lane = match priority {
        Priority::High => HIGH_LANE,
        Priority::Normal => NORMAL_LANE,
        Priority::Bulk => BULK_LANE,
    };
    (lane | due_ms.min(DUE_MASK), id)
}

/// The schedule keys of `lane` due at or before `now_ms`.
pub(crate) fn due_in(lane: u64, now_ms: u64) -> std::ops::RangeInclusive<(u64, u128)> {
    (lane, 0)..=(lane | now_ms.min(DUE_MASK), u128::MAX)
}

/// The schedule keys of `lane` due after `now_ms`.
pub(crate) fn later_in(lane: u64, now_ms: u64) -> std::ops::RangeInclusive<(u64, u128)> {
    (lane | now_ms.saturating_add(1).min(DUE_MASK), 0)..=(lane | DUE_MASK, u128::MAX)
}

/// Format versions of envelope records; bump (and keep a decoder in [`super::legacy`])
/// when `Envelope` changes. 1: before message metadata; 2: with it.
const ENVELOPE_V1: u8 = 1;
const ENVELOPE_V2: u8 = 2;
/// Format versions of dead-letter records (they hold an envelope): as for envelopes.
const DEAD_LETTER_V1: u8 = 1;
const DEAD_LETTER_V2: u8 = 2;
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
    buf.push(ENVELOPE_V2);
    buf.extend_from_slice(&due_ms.to_be_bytes());
    postcard::to_extend(envelope, buf)
        .map_err(|e| QueueError::Storage(format!("cannot encode envelope {}: {e}", envelope.id)))
}

/// Reads only the due time of an envelope record (enough to find its schedule key).
pub(crate) fn decode_due(id: MessageId, record: &[u8]) -> Result<u64> {
    match record {
        [ENVELOPE_V1 | ENVELOPE_V2, rest @ ..] if rest.len() >= 8 => {
            let mut due = [0u8; 8];
            due.copy_from_slice(&rest[..8]);
            Ok(u64::from_be_bytes(due))
        }
        [ENVELOPE_V1 | ENVELOPE_V2, ..] => Err(corrupt(id, "envelope record is truncated")),
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
    let body = &record[ENVELOPE_HEADER..];
    let envelope = if record[0] == ENVELOPE_V1 {
        postcard::from_bytes::<EnvelopeV1>(body).map(Envelope::from)
    } else {
        postcard::from_bytes::<Envelope>(body)
    };
    let envelope =
        envelope.map_err(|e| corrupt(context, format!("cannot decode envelope: {e}")))?;
    Ok((due, envelope))
}

pub(crate) fn encode_dead_letter(dead: &DeadLetter) -> Result<Vec<u8>> {
    postcard::to_extend(dead, vec![DEAD_LETTER_V2]).map_err(|e| {
        QueueError::Storage(format!(
            "cannot encode dead letter {}: {e}",
            dead.envelope.id
        ))
    })
}

pub(crate) fn decode_dead_letter(id: MessageId, record: &[u8]) -> Result<DeadLetter> {
    let decoded = match record {
        [DEAD_LETTER_V1, rest @ ..] => postcard::from_bytes::<DeadLetterV1>(rest).map(Into::into),
        [DEAD_LETTER_V2, rest @ ..] => postcard::from_bytes::<DeadLetter>(rest),
        [v, ..] => {
            return Err(corrupt(
                id,
                format!("unknown dead-letter format version {v}"),
            ));
        }
        [] => return Err(corrupt(id, "empty dead-letter record")),
    };
    decoded.map_err(|e| corrupt(id, format!("cannot decode dead letter: {e}")))
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
        assert_eq!(rec[0], ENVELOPE_V2);
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
            vec![ENVELOPE_V2],
            vec![ENVELOPE_V2, 0, 0, 0],
            vec![ENVELOPE_V1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
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

    /// A record written by the version before metadata (format 1, made by that
    /// version's `encode_envelope`) still reads, its priority and tags carried over.
    #[test]
    fn format_1_envelopes_still_read() {
        let record = include_bytes!("../../tests/data/envelope-v1.bin");
        let id = MessageId::from_u128(0x019a_c4d5_e3b8_7c1d_9a4f_0e2b_6c3d_8a71);
        let (due, env) = decode_envelope(id, record).unwrap();
        assert_eq!(due, 1_767_226_000_000);
        assert_eq!(env.sender, "app@example.com");
        assert_eq!(env.recipients.len(), 2);
        let bob = &env.recipients[0];
        assert_eq!(
            (bob.address.as_str(), bob.orcpt.as_deref(), bob.attempts),
            ("bob@example.net", Some("Bob@Example.NET"), 3)
        );
        assert!(bob.notify.success && bob.notify.failure && !bob.notify.never);
        assert_eq!(env.auth_identity.as_deref(), Some("app"));
        assert_eq!(env.client_ip.to_string(), "192.0.2.7");
        assert_eq!(env.helo, "app.example.com");
        assert_eq!(
            (env.received_at_ms, env.requeued_at_ms, env.size),
            (1_767_225_600_000, Some(1_767_225_900_000), 4242)
        );
        assert!(env.body_8bit && !env.smtputf8);
        assert_eq!(env.dsn_ret, Some(crate::DsnRet::Headers));
        assert_eq!(env.dsn_envid.as_deref(), Some("env-1"));
        assert_eq!(
            env.meta,
            crate::Metadata {
                tenant: Some("acme".into()),
                campaign: Some("spring-sale".into()),
                priority: crate::Priority::High,
                ..crate::Metadata::default()
            }
        );
        // Written again, it is format 2 and reads back the same.
        let again = encode_envelope(&env, due).unwrap();
        assert_eq!(again[0], ENVELOPE_V2);
        assert_eq!(decode_envelope(id, &again).unwrap(), (due, env));
    }

    #[test]
    fn metadata_round_trips() {
        let mut env = envelope();
        env.meta = crate::Metadata {
            user_id: Some(12345),
            email_type: Some("welcome".into()),
            variant: Some("B".into()),
            priority: crate::Priority::Bulk,
            tags: vec![("plan".into(), "pro".into())],
            ..crate::Metadata::default()
        };
        let rec = encode_envelope(&env, 1).unwrap();
        assert_eq!(decode_envelope(env.id, &rec).unwrap().1, env);
        // Limits are checked where metadata comes in, not when a stored message is read
        // (tighter limits later must not strand what is queued).
        env.meta.email_type = Some("no longer a token".into());
        let rec = encode_envelope(&env, 1).unwrap();
        assert_eq!(decode_envelope(env.id, &rec).unwrap().1, env);
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
