//! Any bytes into the HJ 212 frame parser and stream decoder: never a panic, and a frame that parses
//! re-encodes to one that parses to the same packet.
#![no_main]

use enviromon::ingest::hj212::codec::{parse_frame, StreamDecoder, Tolerance};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let all = Tolerance { modbus_crc_swapped: true, long_frames: true, missing_qn: true };
    for tol in [Tolerance::default(), all] {
        if let Ok(p) = parse_frame(data, tol) {
            let again = parse_frame(p.encode().as_bytes(), tol).expect("an encoded packet parses");
            assert_eq!(again.header, p.header);
            assert_eq!(again.cp, p.cp);
            let _ = enviromon::ingest::hj212::items(&p);
        }
        let mut d = StreamDecoder::new(tol);
        let (a, b) = data.split_at(data.len() / 2);
        let _ = d.push(a);
        let _ = d.push(b);
    }
});
