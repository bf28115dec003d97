//! `X-Postroad-*` header fields (`postroad::smtp::metadata::take`) on arbitrary
//! messages, from trusted and untrusted clients.
//!
//! Properties: no panic; whatever the verdict, no `X-Postroad-` field is left in the
//! header section of an accepted message; the body (after the first empty line) is
//! never changed; an error is a `550 5.6.0` reply; metadata that is returned passes
//! its own validation; an untrusted client never sets any.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad::smtp::metadata::{PREFIX, take};

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let trusted = flags & 1 == 1;
    let mut message = rest.to_vec();
    let body_before = rest[header_end(rest)..].to_vec();
    match take(&mut message, trusted) {
        Ok(meta) => {
            assert!(
                meta.validate().is_ok(),
                "invalid metadata returned: {meta:?}"
            );
            if !trusted {
                assert!(meta.is_empty(), "an untrusted client set {meta:?}");
            }
            let end = header_end(&message);
            for line in message[..end].split(|&b| b == b'\n') {
                assert!(
                    line.len() < PREFIX.len()
                        || !line[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
                        || !line.contains(&b':'),
                    "a Postroad field survived: {:?}",
                    String::from_utf8_lossy(line)
                );
            }
            assert!(message.ends_with(&body_before), "the body changed");
        }
        Err(reply) => {
            assert_eq!(reply.code, 550);
            assert_eq!(
                reply.enhanced.map(|e| e.to_string()).as_deref(),
                Some("5.6.0")
            );
            assert_eq!(message, rest, "a refused message was changed");
        }
    }
});

/// Where the header section ends: after the first line that is empty (`\r\n` or
/// `\n`), or at the end.
fn header_end(message: &[u8]) -> usize {
    let mut pos = 0;
    while pos < message.len() {
        let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
        if matches!(&message[pos..end], b"\r\n" | b"\n") {
            return end;
        }
        pos = end;
    }
    message.len()
}
