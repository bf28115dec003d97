//! The bounce classifier (`postroad_bounce::analyse`) on arbitrary bytes, as any
//! stranger can send them to a bounce domain: no panic, and whatever it reports stays
//! within its bounds (at most 1,000 recipients, each an address, a one-line diagnostic
//! of at most 1,000 bytes, codes that look like codes); the same message with CRLF or
//! CR line endings is read the same way as with LF.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad_bounce::{Analysis, analyse};

fn check(a: &Analysis) {
    assert!(a.recipients.len() <= 1000, "{} recipients", a.recipients.len());
    for r in &a.recipients {
        assert!(r.recipient.contains('@'), "{:?}", r.recipient);
        assert!(r.diagnostic.len() <= 1000, "{}", r.diagnostic.len());
        assert!(!r.diagnostic.contains(['\r', '\n']), "{:?}", r.diagnostic);
        assert!(
            r.replycode.is_empty()
                || (r.replycode.len() == 3 && r.replycode.bytes().all(|b| b.is_ascii_digit())),
            "{:?}",
            r.replycode
        );
        assert!(
            r.deliverystatus.is_empty()
                || r.deliverystatus.split('.').count() == 3
                    && r.deliverystatus.split('.').all(|p| {
                        !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
                    }),
            "{:?}",
            r.deliverystatus
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let lf = analyse(data);
    check(&lf);
    if !data.contains(&b'\r') {
        let crlf: Vec<u8> = data
            .iter()
            .flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] })
            .collect();
        assert_eq!(analyse(&crlf), lf, "CRLF read differently");
        let cr: Vec<u8> = data.iter().map(|&b| if b == b'\n' { b'\r' } else { b }).collect();
        assert_eq!(analyse(&cr), lf, "CR read differently");
    }
});
