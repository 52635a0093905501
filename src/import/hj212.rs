//! HJ 212 capture files: what a data logger sent, one frame a line or a raw byte stream (garbage
//! between frames, such as a capture tool's time stamps, is skipped), either edition, SM4-sealed
//! frames opened with the logger's registered key. Each frame is decoded exactly as the TCP server
//! decodes it (`ingest::hj212`): MN → sensor, password and tolerances, split packets joined.
//! Only monitoring data (CN 2011/2051/2061/2031) is imported; other frames are counted.

use std::io::Read;

use super::{ImportError, Sink};
use crate::ingest::hj212::codec::{Decoded, Frame, Reassembler, StreamDecoder, Tolerance};
use crate::pipeline::{RejectReason, Rejection};

/// Read a capture into `sink`; each frame is one row.
pub fn import(mut input: impl Read, sink: &mut Sink<'_>) -> Result<(), ImportError> {
    // The widest tolerance here; each sensor's own is applied when its frame is opened.
    let mut decoder = StreamDecoder::new(Tolerance {
        modbus_crc_swapped: true,
        long_frames: true,
        missing_qn: true,
    });
    let mut reassembler = Reassembler::bounded(64, 4 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut row = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        for d in decoder.push(&buf[..n]) {
            let (frame, raw) = match d {
                Decoded::Frame(p) => {
                    let raw = p.encode().into_bytes();
                    (Frame::Plain(p), raw)
                }
                Decoded::Sealed(s) => {
                    let raw = s.raw.clone();
                    (Frame::Sealed(s), raw)
                }
                Decoded::Bad(e, raw) => {
                    row += 1;
                    if !sink.skip(row) {
                        let r = Rejection::new(
                            RejectReason::InvalidPayload,
                            format!("frame {row}: {e}"),
                        );
                        sink.refuse(row, r, &raw)?;
                    }
                    continue;
                }
                Decoded::Garbage(g) => {
                    sink.note_garbage(g.len());
                    continue;
                }
            };
            row += 1;
            if sink.skip(row) {
                continue;
            }
            frame_row(row, frame, &raw, &mut reassembler, sink)?;
        }
    }
    if decoder.pending() > 0 {
        sink.note_garbage(decoder.pending());
    }
    Ok(())
}

fn frame_row(
    row: u64,
    frame: Frame,
    raw: &[u8],
    reassembler: &mut Reassembler,
    sink: &mut Sink<'_>,
) -> Result<(), ImportError> {
    let mn = match &frame {
        Frame::Plain(p) => p.mn().to_string(),
        Frame::Sealed(s) => s.mn().to_string(),
    };
    let sensor = match sink.sensor_for_mn(&mn) {
        Ok(s) => s,
        Err(r) => return sink.refuse(row, r, raw),
    };
    let keys = sink.keys();
    let p = match crate::ingest::hj212::open_frame(&sensor, frame, keys, false, sink.now_ms())
        .and_then(|p| crate::ingest::hj212::check_source(&sensor, &p).map(|()| p))
    {
        Ok(p) => p,
        Err(r) => return sink.refuse(row, r, raw),
    };
    let whole = reassembler.push(p);
    // While a split packet waits for its parts, a resume must read it again from its first.
    if reassembler.waiting() == 0 {
        sink.hold_position_from(None);
    } else if whole.is_none() && !sink.holding() {
        sink.hold_position_from(Some(row));
    }
    let Some(whole) = whole else {
        return sink.row(row, Default::default(), raw, 0);
    };
    if crate::ingest::hj212::period_of(whole.cn()).is_none() {
        // Heartbeats, site information, answers: not monitoring data.
        sink.note_not_data();
        return sink.row(row, Default::default(), raw, 0);
    }
    let ctx = *sink.context();
    let d = if matches!(whole.st(), "44" | "45") {
        crate::ingest::hj212::facility_values(&sensor, &whole, &ctx).0
    } else {
        crate::ingest::hj212::readings(&sensor, &whole, &ctx)
    };
    sink.row(row, d, raw, 0)
}
