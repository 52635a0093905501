//! Any bytes into the HJ 212 frame parser, the stream decoder and the SM4 opening of sealed
//! (HJ 212-2025) frames: never a panic; a plain frame that parses re-encodes to one that parses to
//! the same packet, and sealed with a key it opens to the same packet again.
#![no_main]

use enviromon::ingest::hj212::codec::{parse_any, parse_frame, Decoded, Frame, StreamDecoder, Tolerance};
use enviromon::ingest::hj212::crypto::Key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let all = Tolerance { modbus_crc_swapped: true, long_frames: true, missing_qn: true };
    // HJ 212-2025 Appendix A.2's test key, and another.
    let keys = [Key::new([0x30; 16]), Key::new([0xA5; 16])];
    for tol in [Tolerance::default(), all] {
        match parse_any(data, tol) {
            Ok(Frame::Plain(p)) => {
                let again = parse_frame(p.encode().as_bytes(), tol).expect("an encoded packet parses");
                assert_eq!(again.header, p.header);
                assert_eq!(again.cp, p.cp);
                let _ = enviromon::ingest::hj212::items(&p);
                if let Ok(sealed) = p.encode_sealed(&keys[0]) {
                    // Under one block the CP stays plaintext and the frame is a plain one.
                    let opened = match parse_any(sealed.as_bytes(), all).expect("a sealed packet parses") {
                        Frame::Sealed(s) => s.open(&keys[0], all).expect("it opens with its key"),
                        Frame::Plain(q) => q,
                    };
                    assert_eq!((opened.header, opened.cp), (p.header.clone(), p.cp.clone()));
                }
            }
            Ok(Frame::Sealed(s)) => {
                for k in &keys {
                    if let Ok(p) = s.open(k, tol) {
                        assert!(p.encrypted);
                        let _ = enviromon::ingest::hj212::items(&p);
                    }
                }
            }
            Err(_) => {}
        }
        let mut d = StreamDecoder::new(tol);
        let (a, b) = data.split_at(data.len() / 2);
        for out in [d.push(a), d.push(b)] {
            for x in out {
                if let Decoded::Sealed(s) = x {
                    let _ = s.open(&keys[0], tol);
                }
            }
        }
    }
});
