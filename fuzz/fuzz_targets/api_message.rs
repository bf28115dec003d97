//! One JSON message of the HTTP API (`POST /v1/messages`, explicit and raw forms) read
//! and prepared (`postroad_api::fuzzing::message`).
//!
//! Properties: no panic; a refusal names at least one field; an accepted message has
//! 1 to 5 recipients that are valid mailboxes, a valid sender, a body within the
//! limit that starts with a header field, and, when Postroad built it, no `Bcc` field
//! and no header field line without a colon (no injected line).

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_wire::parse_mailbox;

fuzz_target!(|data: &[u8]| {
    let Some(result) = postroad_api::fuzzing::message(data) else {
        return;
    };
    let prepared = match result {
        Ok(prepared) => prepared,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal without a reason");
            return;
        }
    };
    let envelope = &prepared.envelope;
    assert!((1..=5).contains(&envelope.recipients.len()));
    for r in &envelope.recipients {
        assert!(parse_mailbox(&r.address).is_ok(), "{:?}", r.address);
    }
    assert!(parse_mailbox(&envelope.sender).is_ok(), "{:?}", envelope.sender);
    let body = &prepared.body;
    assert!(body.len() <= 64 * 1024);
    let raw_form = serde_json::from_slice::<serde_json::Value>(data)
        .is_ok_and(|v| v.get("raw").is_some());
    if raw_form {
        return;
    }
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a built message has a header section");
    for line in body[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue; // a folded continuation
        }
        assert!(line.contains(&b':'), "a header line without a field name: {line:?}");
        assert!(
            !line.to_ascii_lowercase().starts_with(b"bcc:"),
            "Bcc leaked into the message"
        );
    }
});
