//! Any text into the data-segment and CP parsers: never a panic.
#![no_main]

use enviromon::ingest::hj212::codec::{parse_cp, parse_data, Tolerance};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_cp(text);
        if let Ok(p) = parse_data(text, Tolerance { missing_qn: true, ..Default::default() }) {
            let _ = p.pollutants();
            let _ = enviromon::ingest::hj212::items(&p);
        }
    }
});
