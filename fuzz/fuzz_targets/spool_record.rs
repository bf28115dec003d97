//! The spool's record decoders (`queue/src/spool/tables.rs`) on arbitrary bytes, as if
//! the database file had been damaged: an error, never a panic; and whatever decodes
//! must encode back to a record that decodes to the same value.
//!
//! The id the record is looked up under is taken from the bytes where an envelope
//! record keeps its own id (after the version byte and due time), so the fuzzer can
//! get past the "stored under another id" check.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad_queue::MessageId;
use postroad_queue::fuzzing::{
    decode_dead_letter, decode_due, decode_envelope, encode_dead_letter, encode_envelope,
};

fuzz_target!(|data: &[u8]| {
    let id = data
        .get(9..25)
        .map(|b| MessageId::from_u128(u128::from_be_bytes(b.try_into().unwrap())))
        .unwrap_or(MessageId::from_u128(0));

    let due = decode_due(id, data);
    match decode_envelope(id, data) {
        Ok((due_ms, envelope)) => {
            assert_eq!(due.ok(), Some(due_ms), "decode_due disagrees");
            assert_eq!(envelope.id, id);
            let record = encode_envelope(&envelope, due_ms).expect("re-encode envelope");
            let again = decode_envelope(id, &record).expect("decode re-encoded envelope");
            assert_eq!(again, (due_ms, envelope));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // A dead-letter record keeps its id after the version byte.
    let id = data
        .get(1..17)
        .map(|b| MessageId::from_u128(u128::from_be_bytes(b.try_into().unwrap())))
        .unwrap_or(MessageId::from_u128(0));
    match decode_dead_letter(id, data) {
        Ok(dead) => {
            let record = encode_dead_letter(&dead).expect("re-encode dead letter");
            let again = decode_dead_letter(id, &record).expect("decode re-encoded dead letter");
            assert_eq!(again, dead);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
