//! Recipient lists: arbitrary bytes read as a CSV and as an NDJSON upload (what
//! `POST /v1/lists` and a campaign's inline recipients get from a client).
//!
//! Properties: no panic, no hang; the reading ends (at the end, or at a broken
//! upload); every accepted row has an address that parses and data that is a JSON
//! object; line numbers never go backwards.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad_api::campaigns::rows::{self, Format, Row};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Csv, Format::Ndjson] {
        let mut last_line = 0;
        let _ = rows::read(format, data, 1, |row| {
            match row {
                Row::Good(row) => {
                    assert!(row.address.contains('@'), "{row:?}");
                    if let Some(data) = &row.data {
                        let value: serde_json::Value = serde_json::from_str(data).unwrap();
                        assert!(value.is_object(), "{data}");
                    }
                }
                Row::Bad(error) => {
                    assert!(error.line >= last_line, "{error:?} after line {last_line}");
                    last_line = error.line;
                }
            }
            true
        });
    }
});
