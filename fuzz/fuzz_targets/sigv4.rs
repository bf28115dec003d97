//! The SigV4 check of the SES compatible route (`postroad_api::fuzzing::sigv4`) on
//! arbitrary `Authorization` and `X-Amz-Date` header values and bodies.
//!
//! Properties: no panic; without the right signature nothing is accepted (a random
//! input that verified would mean the check compares nothing); every refusal maps to
//! an AWS error code and a 4xx status.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(result) = postroad_api::fuzzing::sigv4(data) else {
        return;
    };
    match result {
        Ok(key) => panic!("accepted a request signed by nobody, as {key}"),
        Err(e) => {
            assert!(!e.code().is_empty());
            assert!((400..500).contains(&e.status()));
        }
    }
});
