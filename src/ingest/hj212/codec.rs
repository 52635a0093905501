//! HJ 212-2017 frames: parsing with length and CRC checks, the data segment and its CP items, split
//! packets, a stream decoder for TCP, and an encoder (replies, simulators, tests).
//!
//! Frame: `##` + 4-digit decimal length of the data segment + data segment + 4 hex CRC + `\r\n`
//! (HJ 212-2017). The CRC is HJ 212's own (not CRC-16/MODBUS), computed over the data segment
//! and accepted in either hex case. Field quirks are accepted only when a source allows them
//! ([`Tolerance`]): a byte-swapped MODBUS CRC, frames longer than 1024, a missing QN.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The longest data segment HJ 212-2017 allows.
pub const MAX_DATA: usize = 1024;
/// The longest accepted with `Tolerance::long_frames` (a guard against garbage lengths).
pub const MAX_DATA_TOLERATED: usize = 9999;

/// Per-source acceptance of field quirks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerance {
    /// Accept a CRC-16/MODBUS printed with its bytes swapped (some data loggers do this).
    pub modbus_crc_swapped: bool,
    /// Accept data segments longer than 1024 bytes.
    pub long_frames: bool,
    /// Accept a data segment without QN (request number).
    pub missing_qn: bool,
}

/// HJ 212's CRC over `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc = (crc >> 8) ^ u16::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

/// CRC-16/MODBUS (for the byte-swapped quirk).
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Why a frame was refused — each says exactly what is wrong, for the technician reading a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame does not start with ##")]
    NoHeader,
    #[error("length field {0:?} is not 4 decimal digits")]
    BadLengthField(String),
    #[error("data segment of {len} bytes is longer than {max}")]
    TooLong { len: usize, max: usize },
    #[error("frame truncated: {needed} bytes needed, {have} present")]
    Truncated { needed: usize, have: usize },
    #[error("declared data length {declared} but the frame does not end with CRC and \\r\\n there ({detail})")]
    LengthMismatch { declared: usize, detail: String },
    #[error("CRC field {0:?} is not 4 hex digits")]
    BadCrcField(String),
    #[error("CRC mismatch: computed {expected}, frame says {found}")]
    BadCrc { expected: String, found: String },
    #[error("data segment is not ASCII/UTF-8 text")]
    NotText,
    #[error("data segment: {0}")]
    Segment(String),
}

/// Which CRC the frame carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrcKind {
    Hj212,
    ModbusSwapped,
}

/// A parsed data segment. Field order is kept so that encoding gives back the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packet {
    /// Header fields before CP, in order (QN, ST, CN, PW, MN, Flag, PNUM, PNO, …).
    pub header: Vec<(String, String)>,
    /// CP items in order: `;`-separated groups of `,`-separated `key=value` pairs.
    pub cp: Vec<Vec<(String, String)>>,
    pub crc: CrcKind,
}

impl Packet {
    pub fn field(&self, k: &str) -> Option<&str> {
        self.header
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn qn(&self) -> Option<&str> {
        self.field("QN")
    }
    pub fn st(&self) -> &str {
        self.field("ST").unwrap_or("")
    }
    pub fn cn(&self) -> &str {
        self.field("CN").unwrap_or("")
    }
    pub fn pw(&self) -> &str {
        self.field("PW").unwrap_or("")
    }
    pub fn mn(&self) -> &str {
        self.field("MN").unwrap_or("")
    }
    /// Flag: bit 0 = reply wanted, bit 1 = split packet, bits 2–7 = version.
    pub fn flag(&self) -> u32 {
        self.field("Flag").and_then(|f| f.parse().ok()).unwrap_or(0)
    }
    pub fn ack_wanted(&self) -> bool {
        self.flag() & 1 != 0
    }
    pub fn is_split(&self) -> bool {
        self.flag() & 2 != 0
    }
    pub fn pnum_pno(&self) -> Option<(u32, u32)> {
        Some((
            self.field("PNUM")?.parse().ok()?,
            self.field("PNO")?.parse().ok()?,
        ))
    }

    /// `DataTime` of the CP, if any.
    pub fn data_time(&self) -> Option<&str> {
        self.cp
            .iter()
            .flatten()
            .find(|(k, _)| k == "DataTime")
            .map(|(_, v)| v.as_str())
    }

    /// Pollutant fields: code → suffix (`Rtd`, `Avg`, `ZsRtd`, `Flag`, …) → value.
    pub fn pollutants(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in self.cp.iter().flatten() {
            if let Some((code, suffix)) = k.split_once('-') {
                out.entry(code.to_string())
                    .or_default()
                    .insert(suffix.to_string(), v.clone());
            }
        }
        out
    }

    /// The data segment text.
    pub fn data_segment(&self) -> String {
        let mut s: String = self
            .header
            .iter()
            .map(|(k, v)| format!("{k}={v};"))
            .collect();
        s.push_str("CP=&&");
        let groups: Vec<String> = self
            .cp
            .iter()
            .map(|g| {
                g.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        s.push_str(&groups.join(";"));
        s.push_str("&&");
        s
    }

    /// The whole frame, with HJ 212's CRC (upper-case hex).
    pub fn encode(&self) -> String {
        frame(&self.data_segment())
    }
}

/// Wrap a data segment into a frame.
pub fn frame(data: &str) -> String {
    format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        crc16(data.as_bytes())
    )
}

fn parse_pairs(text: &str, sep: char) -> Result<Vec<(String, String)>, FrameError> {
    text.split(sep)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| FrameError::Segment(format!("{p:?} is not key=value")))
        })
        .collect()
}

/// Parse the CP body (between `&&` and `&&`).
pub fn parse_cp(body: &str) -> Result<Vec<Vec<(String, String)>>, FrameError> {
    body.split(';')
        .filter(|g| !g.is_empty())
        .map(|g| parse_pairs(g, ','))
        .collect()
}

/// Parse one whole frame.
pub fn parse_frame(bytes: &[u8], tol: Tolerance) -> Result<Packet, FrameError> {
    if !bytes.starts_with(b"##") {
        return Err(FrameError::NoHeader);
    }
    if bytes.len() < 6 {
        return Err(FrameError::Truncated {
            needed: 6,
            have: bytes.len(),
        });
    }
    let len_field = String::from_utf8_lossy(&bytes[2..6]).to_string();
    let declared: usize = if len_field.bytes().all(|b| b.is_ascii_digit()) {
        len_field
            .parse()
            .map_err(|_| FrameError::BadLengthField(len_field.clone()))?
    } else {
        return Err(FrameError::BadLengthField(len_field));
    };
    let max = if tol.long_frames {
        MAX_DATA_TOLERATED
    } else {
        MAX_DATA
    };
    if declared > max {
        return Err(FrameError::TooLong { len: declared, max });
    }
    let needed = 6 + declared + 4 + 2;
    if bytes.len() < needed {
        return Err(FrameError::Truncated {
            needed,
            have: bytes.len(),
        });
    }
    let data = &bytes[6..6 + declared];
    let crc_field = &bytes[6 + declared..10 + declared];
    if &bytes[10 + declared..needed] != b"\r\n" || bytes.len() != needed {
        return Err(FrameError::LengthMismatch {
            declared,
            detail: format!(
                "{} bytes after the header, {} expected",
                bytes.len() - 6,
                declared + 6
            ),
        });
    }
    let crc_text = String::from_utf8_lossy(crc_field).to_string();
    let found = u16::from_str_radix(&crc_text, 16)
        .map_err(|_| FrameError::BadCrcField(crc_text.clone()))?;
    if crc_text.len() != 4 {
        return Err(FrameError::BadCrcField(crc_text));
    }
    let expected = crc16(data);
    let crc = if found == expected {
        CrcKind::Hj212
    } else if tol.modbus_crc_swapped && found == crc16_modbus(data).swap_bytes() {
        CrcKind::ModbusSwapped
    } else {
        return Err(FrameError::BadCrc {
            expected: format!("{expected:04X}"),
            found: crc_text,
        });
    };
    let text = std::str::from_utf8(data).map_err(|_| FrameError::NotText)?;
    let mut p = parse_data(text, tol)?;
    p.crc = crc;
    Ok(p)
}

/// Parse a data segment into a packet (CRC kind set to HJ 212).
pub fn parse_data(text: &str, tol: Tolerance) -> Result<Packet, FrameError> {
    let idx = text
        .find("CP=&&")
        .ok_or_else(|| FrameError::Segment("missing CP=&&…&&".into()))?;
    let header = parse_pairs(&text[..idx], ';')?;
    let rest = &text[idx + 5..];
    let end = rest
        .rfind("&&")
        .ok_or_else(|| FrameError::Segment("CP is not closed with &&".into()))?;
    if !rest[end + 2..].trim().is_empty() {
        return Err(FrameError::Segment(format!(
            "unexpected {:?} after CP",
            &rest[end + 2..]
        )));
    }
    let cp = parse_cp(&rest[..end])?;
    let p = Packet {
        header,
        cp,
        crc: CrcKind::Hj212,
    };
    let mut missing = Vec::new();
    for k in ["ST", "CN", "MN"] {
        if p.field(k).is_none() {
            missing.push(k);
        }
    }
    if p.qn().is_none() && !tol.missing_qn {
        missing.push("QN");
    }
    if !missing.is_empty() {
        return Err(FrameError::Segment(format!(
            "missing {}",
            missing.join(", ")
        )));
    }
    if p.is_split() && p.pnum_pno().is_none() {
        return Err(FrameError::Segment(
            "Flag says split packet but PNUM/PNO are missing".into(),
        ));
    }
    Ok(p)
}

/// What the stream decoder found.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Frame(Packet),
    /// A refused frame, with its bytes (for the dead-letter file).
    Bad(FrameError, Vec<u8>),
    /// Bytes before a `##` that belong to no frame.
    Garbage(Vec<u8>),
}

/// Frames out of a TCP byte stream: frames split across reads or packed in one read, and garbage
/// between frames, are all handled; a bad frame never loses the next good one.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    pub tolerance: Tolerance,
}

impl StreamDecoder {
    pub fn new(tolerance: Tolerance) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            tolerance,
        }
    }

    /// Bytes waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<Decoded> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let Some(start) = self.buf.windows(2).position(|w| w == b"##") else {
                // Keep a trailing '#' that may start a header; the rest is garbage.
                let keep = usize::from(self.buf.last() == Some(&b'#'));
                if self.buf.len() > keep {
                    let g: Vec<u8> = self.buf.drain(..self.buf.len() - keep).collect();
                    if !g.iter().all(|b| b.is_ascii_whitespace()) {
                        out.push(Decoded::Garbage(g));
                    }
                }
                return out;
            };
            if start > 0 {
                let g: Vec<u8> = self.buf.drain(..start).collect();
                if !g.iter().all(|b| b.is_ascii_whitespace()) {
                    out.push(Decoded::Garbage(g));
                }
            }
            if self.buf.len() < 6 {
                return out;
            }
            let len_text = &self.buf[2..6];
            let declared = if len_text.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(len_text)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
            } else {
                None
            };
            let max = if self.tolerance.long_frames {
                MAX_DATA_TOLERATED
            } else {
                MAX_DATA
            };
            let Some(declared) = declared.filter(|d| *d <= max) else {
                // Not a frame we can size: refuse up to the next "##" (or what we have).
                let next = self.buf[2..]
                    .windows(2)
                    .position(|w| w == b"##")
                    .map(|p| p + 2)
                    .unwrap_or(self.buf.len());
                let bad: Vec<u8> = self.buf.drain(..next).collect();
                let err = match parse_frame(&bad, self.tolerance) {
                    Err(e) => e,
                    Ok(_) => FrameError::BadLengthField(
                        String::from_utf8_lossy(&bad[2..6.min(bad.len())]).into(),
                    ),
                };
                out.push(Decoded::Bad(err, bad));
                continue;
            };
            let total = 6 + declared + 6;
            // A data segment never contains "##": one inside the declared length means this frame is
            // broken (wrong length, cut short) and the next frame has begun — refuse up to it.
            let horizon = total.min(self.buf.len());
            if let Some(p) = self.buf[2..horizon].windows(2).position(|w| w == b"##") {
                let next = p + 2;
                let bad: Vec<u8> = self.buf.drain(..next).collect();
                let err =
                    parse_frame(&bad, self.tolerance)
                        .err()
                        .unwrap_or(FrameError::Truncated {
                            needed: total,
                            have: next,
                        });
                out.push(Decoded::Bad(err, bad));
                continue;
            }
            if self.buf.len() < total {
                return out;
            }
            let bytes: Vec<u8> = self.buf.drain(..total).collect();
            match parse_frame(&bytes, self.tolerance) {
                Ok(p) => out.push(Decoded::Frame(p)),
                Err(e) => out.push(Decoded::Bad(e, bytes)),
            }
        }
    }
}

/// Split packets (Flag bit 1, PNUM/PNO) put back together, per (MN, QN).
#[derive(Debug, Default)]
pub struct Reassembler {
    parts: BTreeMap<(String, String), BTreeMap<u32, Packet>>,
}

impl Reassembler {
    /// Take a packet; returns the whole packet when it is complete (at once for unsplit ones).
    pub fn push(&mut self, p: Packet) -> Option<Packet> {
        let Some((pnum, pno)) = p.pnum_pno().filter(|_| p.is_split()) else {
            return Some(p);
        };
        let key = (p.mn().to_string(), p.qn().unwrap_or("").to_string());
        let parts = self.parts.entry(key.clone()).or_default();
        parts.insert(pno, p);
        if parts.len() < pnum as usize {
            return None;
        }
        let parts = self.parts.remove(&key)?;
        let mut iter = parts.into_values();
        let mut whole = iter.next()?;
        for more in iter {
            whole.cp.extend(more.cp);
        }
        whole.header.retain(|(k, _)| k != "PNUM" && k != "PNO");
        for (k, v) in whole.header.iter_mut() {
            if k == "Flag" {
                *v = (v.parse::<u32>().unwrap_or(0) & !2).to_string();
            }
        }
        Some(whole)
    }

    /// Incomplete split packets waiting.
    pub fn waiting(&self) -> usize {
        self.parts.len()
    }
}

/// A reply data segment (9011 request answered, 9012 execution result, 9014 data answer).
pub fn reply(p: &Packet, cn: &str, cp: &str) -> String {
    let data = format!(
        "QN={};ST=91;CN={cn};PW={};MN={};Flag=4;CP=&&{cp}&&",
        p.qn().unwrap_or(""),
        p.pw(),
        p.mn()
    );
    frame(&data)
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HJ 212-2017 Appendix A's example.
    const EXAMPLE: &str = "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

    #[test]
    fn the_standards_example_parses_and_its_crc_checks() {
        let p = parse_frame(EXAMPLE.as_bytes(), Tolerance::default()).unwrap();
        assert_eq!(
            (p.qn(), p.st(), p.cn(), p.pw()),
            (Some("20160801085857223"), "32", "1062", "100000")
        );
        assert_eq!(p.mn(), "010000A8900016F000169DC0");
        assert_eq!(p.flag(), 5);
        assert!(p.ack_wanted() && !p.is_split());
        assert_eq!(
            p.cp,
            vec![vec![("RtdInterval".to_string(), "30".to_string())]]
        );
        // Encoding the parsed packet gives the frame back byte for byte.
        assert_eq!(p.encode(), EXAMPLE);
        // The CRC in lower case is accepted too.
        let lower = EXAMPLE.replace("1C80", "1c80");
        assert!(parse_frame(lower.as_bytes(), Tolerance::default()).is_ok());
    }

    #[test]
    fn each_kind_of_bad_frame_gets_its_reason() {
        let t = Tolerance::default();
        let wrong_crc = EXAMPLE.replace("1C80", "1C81");
        assert_eq!(
            parse_frame(wrong_crc.as_bytes(), t),
            Err(FrameError::BadCrc {
                expected: "1C80".into(),
                found: "1C81".into()
            })
        );
        let wrong_len = EXAMPLE.replace("##0101", "##0102");
        assert!(matches!(
            parse_frame(wrong_len.as_bytes(), t),
            Err(FrameError::Truncated { .. } | FrameError::LengthMismatch { .. })
        ));
        let short = EXAMPLE.replace("##0101", "##0100");
        assert!(matches!(
            parse_frame(short.as_bytes(), t),
            Err(FrameError::LengthMismatch { .. })
        ));
        assert_eq!(
            parse_frame(&EXAMPLE.as_bytes()[..50], t),
            Err(FrameError::Truncated {
                needed: 113,
                have: 50
            })
        );
        assert_eq!(parse_frame(b"#0101QN", t), Err(FrameError::NoHeader));
        assert_eq!(
            parse_frame(b"##01a1xxxx", t),
            Err(FrameError::BadLengthField("01a1".into()))
        );
        let no_qn = frame("ST=32;CN=2011;PW=1;MN=X;Flag=4;CP=&&DataTime=20260101000000&&");
        assert_eq!(
            parse_frame(no_qn.as_bytes(), t),
            Err(FrameError::Segment("missing QN".into()))
        );
        assert!(parse_frame(
            no_qn.as_bytes(),
            Tolerance {
                missing_qn: true,
                ..t
            }
        )
        .is_ok());
    }

    #[test]
    fn quirks_only_with_their_tolerance() {
        let data = "QN=20260101000000000;ST=32;CN=2011;PW=1;MN=X;Flag=4;CP=&&DataTime=20260101000000;w01018-Rtd=20.5,w01018-Flag=N&&";
        let swapped = format!(
            "##{:04}{data}{:04X}\r\n",
            data.len(),
            crc16_modbus(data.as_bytes()).swap_bytes()
        );
        assert!(matches!(
            parse_frame(swapped.as_bytes(), Tolerance::default()),
            Err(FrameError::BadCrc { .. })
        ));
        let p = parse_frame(
            swapped.as_bytes(),
            Tolerance {
                modbus_crc_swapped: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.crc, CrcKind::ModbusSwapped);
        let long = format!(
            "QN=1;ST=32;CN=2011;PW=1;MN=X;Flag=4;CP=&&DataTime=20260101000000;{}&&",
            "a21026-Rtd=1.0;".repeat(80)
        );
        let f = frame(&long);
        assert!(matches!(
            parse_frame(f.as_bytes(), Tolerance::default()),
            Err(FrameError::TooLong { .. })
        ));
        assert!(parse_frame(
            f.as_bytes(),
            Tolerance {
                long_frames: true,
                ..Default::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn cp_items_group_by_pollutant_code() {
        let f = frame("QN=20260101101010000;ST=31;CN=2051;PW=123456;MN=DT1CEMS;Flag=4;CP=&&DataTime=20260101100000;a21026-Avg=18.2,a21026-ZsAvg=22.1,a21026-Flag=N;a19001-Avg=9.0,a19001-Flag=N;zz999-Avg=1&&");
        let p = parse_frame(f.as_bytes(), Tolerance::default()).unwrap();
        assert_eq!(p.data_time(), Some("20260101100000"));
        let pol = p.pollutants();
        assert_eq!(pol["a21026"]["Avg"], "18.2");
        assert_eq!(pol["a21026"]["ZsAvg"], "22.1");
        assert_eq!(pol["a19001"]["Flag"], "N");
        assert!(pol.contains_key("zz999"), "unknown codes are kept");
    }

    #[test]
    fn streams_split_packed_and_dirty_are_decoded_without_losing_good_frames() {
        let good = frame(
            "QN=1;ST=32;CN=2011;PW=1;MN=A;Flag=4;CP=&&DataTime=20260101000000;w01018-Rtd=20&&",
        );
        let bad_crc = EXAMPLE.replace("1C80", "0000");
        let mut d = StreamDecoder::new(Tolerance::default());
        // Split across three reads.
        let (a, b) = good.as_bytes().split_at(10);
        let (b, c) = b.split_at(30);
        assert!(d.push(a).is_empty());
        assert!(d.push(b).is_empty());
        assert!(matches!(d.push(c).as_slice(), [Decoded::Frame(_)]));
        // Three frames in one read, the middle one bad, garbage before and between.
        let packed = format!("noise{good}{bad_crc}xx{good}");
        let out = d.push(packed.as_bytes());
        let kinds: Vec<&str> = out
            .iter()
            .map(|x| match x {
                Decoded::Frame(_) => "frame",
                Decoded::Bad(..) => "bad",
                Decoded::Garbage(_) => "garbage",
            })
            .collect();
        assert_eq!(kinds, vec!["garbage", "frame", "bad", "garbage", "frame"]);
        assert!(
            matches!(&out[2], Decoded::Bad(FrameError::BadCrc { .. }, raw) if raw == bad_crc.as_bytes())
        );
        assert_eq!(d.pending(), 0);
        // A frame whose length is too short runs into the next one: refused, the next still decoded.
        let declared = &good[..6];
        let broken = good.replacen(declared, &format!("##{:04}", good.len() - 12 + 14), 1);
        let out = d.push(format!("{broken}{good}").as_bytes());
        assert!(matches!(out.last(), Some(Decoded::Frame(_))), "{out:?}");
        assert!(out.iter().any(|x| matches!(x, Decoded::Bad(..))));
    }

    #[test]
    fn split_packets_are_reassembled() {
        let part = |pno: u32| {
            frame(&format!("QN=20260101000000000;ST=32;CN=2061;PW=1;MN=WW;Flag=7;PNUM=2;PNO={pno};CP=&&DataTime=20260101000000;w0101{pno}-Avg={pno}&&"))
        };
        let mut r = Reassembler::default();
        let p2 = parse_frame(part(2).as_bytes(), Tolerance::default()).unwrap();
        assert!(r.push(p2).is_none());
        assert_eq!(r.waiting(), 1);
        let whole = r
            .push(parse_frame(part(1).as_bytes(), Tolerance::default()).unwrap())
            .unwrap();
        let pol = whole.pollutants();
        assert_eq!(
            (pol["w01011"]["Avg"].as_str(), pol["w01012"]["Avg"].as_str()),
            ("1", "2")
        );
        assert!(!whole.is_split());
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn replies_are_valid_frames() {
        let p = parse_frame(EXAMPLE.as_bytes(), Tolerance::default()).unwrap();
        let r = reply(&p, "9014", "");
        let back = parse_frame(r.as_bytes(), Tolerance::default()).unwrap();
        assert_eq!(
            (back.cn(), back.qn(), back.mn(), back.st()),
            ("9014", Some("20160801085857223"), p.mn(), "91")
        );
    }
}
