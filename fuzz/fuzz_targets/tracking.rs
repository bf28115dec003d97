//! The tracking links: a token checked from arbitrary text (what `/t/o/`, `/t/c/` and
//! `/u/` get from anyone), an unsubscribe token looked for in arbitrary mail (what
//! the `mailto:` address gets from anyone), and arbitrary HTML dressed with tracked
//! links.
//!
//! Properties: no panic; no token verifies unless the key made it (a random input
//! that verified would mean the check compares nothing); dressing text without
//! markup changes nothing but the pixel at its end.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad_api::tracking::unsubscribe::token_claims;
use postroad_api::tracking::{Signer, Tracking, TrackingConfig, links};

fuzz_target!(|data: &[u8]| {
    let config = TrackingConfig {
        base_url: "https://t.test".into(),
        ..TrackingConfig::default()
    };
    let tracking = Tracking::new(&config, "the fuzzing key, 16+");
    assert!(
        token_claims(&tracking, data).is_none(),
        "found a token nobody made in mail"
    );
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signer = Signer::new(b"the fuzzing key, 16+");
    assert!(signer.verify(text).is_err(), "accepted a token nobody made");
    let dressed = links::decorate(text, |i, _| Some(format!("https://t.test/c/{i}")), Some("<img>"));
    assert!(dressed.html.contains("<img>"));
    if !text.contains('<') {
        assert_eq!(dressed.html, format!("{text}<img>"));
    }
});
