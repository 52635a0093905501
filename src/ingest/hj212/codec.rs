//! HJ 212 frames (2005, 2017 and 2025 editions): parsing with length and CRC checks, the data
//! segment and its CP items, SM4-sealed frames, split packets, a stream decoder for TCP, and an
//! encoder (replies, simulators, tests).
//!
//! Frame: `##` + 4-digit decimal length of the data segment + data segment + 4 hex CRC + `\r\n`.
//! The CRC is HJ 212's own (not CRC-16/MODBUS), computed over the data segment and accepted in
//! either hex case. The edition is read per frame from the Flag's bits 7..2 ([`Edition`]).
//!
//! HJ 212-2025 §6.4 frames may carry an SM4-encrypted CP region (`CP=&&{0x..,…}tail&&`, see
//! [`super::crypto`]). Their CRC is over the *plaintext* data segment, so they are returned as
//! [`Sealed`] until the logger's key opens them. Their length field is the plaintext length in the
//! standard's own examples although more characters are sent; the transmitted length is accepted
//! too, and the frame's end is found at its `\r\n` (ciphertext never contains `#`, `&` or CR/LF).
//!
//! Field quirks are accepted only when a source allows them ([`Tolerance`]): a byte-swapped MODBUS
//! CRC, frames longer than 1024, a missing QN.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The longest data segment HJ 212-2017 allows.
pub const MAX_DATA: usize = 1024;
/// The longest accepted with `Tolerance::long_frames` (a guard against garbage lengths).
pub const MAX_DATA_TOLERATED: usize = 9999;
/// The most bytes a sealed frame may occupy on the wire (its ciphertext takes 5 characters a byte).
pub const MAX_SEALED_WIRE: usize = 6 + 5 * MAX_DATA_TOLERATED + 6;

/// The protocol edition of a frame: the Flag's bits 7..2 (HJ 212-2025 Table 3: 0 = HJ/T 212-2005,
/// 1 = HJ 212-2017, 2 = HJ 212-2025). Any other value is kept as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Edition {
    Hj212_2005,
    Hj212_2017,
    Hj212_2025,
    Other(u32),
}

impl Edition {
    pub fn from_flag(flag: u32) -> Edition {
        match flag >> 2 {
            0 => Edition::Hj212_2005,
            1 => Edition::Hj212_2017,
            2 => Edition::Hj212_2025,
            n => Edition::Other(n),
        }
    }
    /// The Flag bits of this edition (A and D bits clear).
    pub fn flag_bits(self) -> u32 {
        match self {
            Edition::Hj212_2005 => 0,
            Edition::Hj212_2017 => 4,
            Edition::Hj212_2025 => 8,
            Edition::Other(n) => n << 2,
        }
    }
    /// `"2005"`, `"2017"`, `"2025"`, or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Hj212_2005 => "2005",
            Edition::Hj212_2017 => "2017",
            Edition::Hj212_2025 => "2025",
            Edition::Other(_) => "unknown",
        }
    }
}

impl Serialize for Edition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Commands whose CP HJ 212-2025 §6.4 encrypts: every data upload (2000–2999), the key update
/// (1014) and site-unit information (3020).
pub fn cn_is_encrypted(cn: &str) -> bool {
    matches!(cn.parse::<u32>(), Ok(2000..=2999 | 1014 | 3020))
}

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
    #[error("CP is SM4-encrypted: the logger's key is needed to read it")]
    Sealed,
    #[error("SM4: {0}")]
    Decrypt(String),
    #[error("CRC mismatch after SM4 decryption (wrong key, or a damaged ciphertext): computed {expected}, frame says {found}")]
    BadCrcAfterDecrypt { expected: String, found: String },
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
    /// The CP arrived SM4-encrypted (and was opened with the logger's key).
    pub encrypted: bool,
}

fn field_of<'a>(header: &'a [(String, String)], k: &str) -> Option<&'a str> {
    header
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

impl Packet {
    /// A plain packet from its fields (HJ 212 CRC).
    pub fn new(header: Vec<(String, String)>, cp: Vec<Vec<(String, String)>>) -> Packet {
        Packet {
            header,
            cp,
            crc: CrcKind::Hj212,
            encrypted: false,
        }
    }
    pub fn field(&self, k: &str) -> Option<&str> {
        field_of(&self.header, k)
    }
    /// The edition the Flag names.
    pub fn edition(&self) -> Edition {
        Edition::from_flag(self.flag())
    }
    /// Re-sent (补传) data: `RF=1` (HJ 212-2025), in the header or among the CP items.
    pub fn resend(&self) -> bool {
        self.field("RF").or_else(|| {
            self.cp
                .iter()
                .flatten()
                .find(|(k, _)| k == "RF")
                .map(|(_, v)| v.as_str())
        }) == Some("1")
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
    /// Fields given more than once (`a21026-Rtd` twice): which value the logger meant is
    /// ambiguous, so the pollutant's values are refused rather than the last one kept.
    pub fn duplicate_fields(&self) -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut twice = std::collections::BTreeSet::new();
        for (k, _) in self.cp.iter().flatten() {
            if k.contains('-') && !seen.insert(k.as_str()) {
                twice.insert(k.clone());
            }
        }
        twice
    }

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

    fn header_text(&self) -> String {
        self.header
            .iter()
            .map(|(k, v)| format!("{k}={v};"))
            .collect()
    }

    /// The CP region's text (between `CP=&&` and `&&`).
    pub fn cp_text(&self) -> String {
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
        groups.join(";")
    }

    /// The (plaintext) data segment text.
    pub fn data_segment(&self) -> String {
        format!("{}CP=&&{}&&", self.header_text(), self.cp_text())
    }

    /// The whole frame, with HJ 212's CRC (upper-case hex), CP in plaintext.
    pub fn encode(&self) -> String {
        frame(&self.data_segment())
    }

    /// The whole frame with its CP region SM4-encrypted (HJ 212-2025 §6.4): the CRC over the
    /// plaintext data segment, the length field the plaintext length (as the standard's examples
    /// print it), whole blocks as `{0x..,…}`, a tail under 16 bytes in plaintext (so a CP region
    /// shorter than one block gives a plain frame).
    pub fn encode_sealed(&self, key: &super::crypto::Key) -> Result<String, FrameError> {
        let plain = self.data_segment();
        let region = self.cp_text();
        if !region.is_ascii() {
            return Err(FrameError::Decrypt(
                "only an ASCII CP region can be encrypted".into(),
            ));
        }
        let (cipher, tail) = key
            .seal(region.as_bytes())
            .map_err(|e| FrameError::Decrypt(e.to_string()))?;
        if cipher.is_empty() {
            // Under one block: all of it is the plaintext tail, and the frame is a plain one.
            return Ok(self.encode());
        }
        Ok(format!(
            "##{:04}{}CP=&&{}{}&&{:04X}\r\n",
            plain.len(),
            self.header_text(),
            super::crypto::write_braced(&cipher),
            String::from_utf8_lossy(tail),
            crc16(plain.as_bytes())
        ))
    }
}

/// A frame whose CP region is SM4-encrypted, before the logger's key opens it. The header (QN, ST,
/// CN, MN, Flag…) is plaintext, so the logger is known before decrypting.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub header: Vec<(String, String)>,
    /// The data segment's text before `CP=&&`, byte for byte (the CRC covers it).
    header_text: String,
    /// The encrypted whole blocks.
    pub cipher: Vec<u8>,
    /// The plaintext tail (under 16 bytes).
    pub tail: String,
    crc_text: String,
    declared: usize,
    transmitted: usize,
    /// The frame as it arrived (for the dead-letter file).
    pub raw: Vec<u8>,
}

impl Sealed {
    pub fn field(&self, k: &str) -> Option<&str> {
        field_of(&self.header, k)
    }
    pub fn mn(&self) -> &str {
        self.field("MN").unwrap_or("")
    }
    pub fn cn(&self) -> &str {
        self.field("CN").unwrap_or("")
    }

    /// Decrypt with `key`, then check the length (plaintext or transmitted convention) and the CRC
    /// over the plaintext data segment, and parse it.
    pub fn open(&self, key: &super::crypto::Key, tol: Tolerance) -> Result<Packet, FrameError> {
        let mut plain = key
            .open(&self.cipher)
            .map_err(|e| FrameError::Decrypt(e.to_string()))?;
        plain.extend_from_slice(self.tail.as_bytes());
        let region = String::from_utf8(plain)
            .ok()
            .filter(|t| !t.chars().any(|c| c.is_control()))
            .ok_or_else(|| {
                FrameError::Decrypt(
                    "the CP does not decrypt to text with this key (wrong key?)".into(),
                )
            })?;
        let data = format!("{}CP=&&{region}&&", self.header_text);
        if self.declared != data.len() && self.declared != self.transmitted {
            return Err(FrameError::LengthMismatch {
                declared: self.declared,
                detail: format!(
                    "decrypted data segment has {} bytes, {} were sent",
                    data.len(),
                    self.transmitted
                ),
            });
        }
        let max = if tol.long_frames {
            MAX_DATA_TOLERATED
        } else {
            MAX_DATA
        };
        if data.len() > max {
            return Err(FrameError::TooLong {
                len: data.len(),
                max,
            });
        }
        let crc = match check_crc(data.as_bytes(), &self.crc_text, tol) {
            Err(FrameError::BadCrc { expected, found }) => {
                return Err(FrameError::BadCrcAfterDecrypt { expected, found })
            }
            other => other?,
        };
        let mut p = parse_data(&data, tol)?;
        p.crc = crc;
        p.encrypted = true;
        Ok(p)
    }
}

/// A frame as it arrived: plain, or sealed until its key is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Plain(Packet),
    Sealed(Sealed),
}

/// Parse a frame whose CP region is encrypted (`CP=&&{`). The frame ends at its `\r\n`.
pub fn parse_sealed(bytes: &[u8]) -> Result<Sealed, FrameError> {
    let declared = length_field(bytes, 12)?;
    if !bytes.ends_with(b"\r\n") {
        return Err(FrameError::Truncated {
            needed: bytes.len() + 2,
            have: bytes.len(),
        });
    }
    let n = bytes.len();
    let data = &bytes[6..n - 6];
    let crc_text = String::from_utf8_lossy(&bytes[n - 6..n - 2]).to_string();
    let text = std::str::from_utf8(data).map_err(|_| FrameError::NotText)?;
    let idx = text
        .find("CP=&&")
        .ok_or_else(|| FrameError::Segment("missing CP=&&…&&".into()))?;
    let rest = &text[idx + 5..];
    let end = rest
        .rfind("&&")
        .filter(|e| rest[e + 2..].is_empty())
        .ok_or_else(|| FrameError::Segment("CP is not closed with && before the CRC".into()))?;
    let (cipher, tail) =
        super::crypto::read_braced(&rest[..end]).map_err(|e| FrameError::Decrypt(e.to_string()))?;
    let header = parse_pairs(&text[..idx], ';')?;
    let missing: Vec<&str> = ["ST", "CN", "MN"]
        .into_iter()
        .filter(|k| field_of(&header, k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(FrameError::Segment(format!(
            "missing {}",
            missing.join(", ")
        )));
    }
    Ok(Sealed {
        header,
        header_text: text[..idx].to_string(),
        cipher,
        tail: tail.to_string(),
        crc_text,
        declared,
        transmitted: data.len(),
        raw: bytes.to_vec(),
    })
}

/// Whether a frame's data segment (from byte 6) carries an encrypted CP.
fn is_sealed(after_length: &[u8]) -> Option<bool> {
    let at = after_length.windows(5).position(|w| w == b"CP=&&")?;
    after_length.get(at + 5).map(|b| *b == b'{')
}

/// Parse one whole frame, plain or sealed.
pub fn parse_any(bytes: &[u8], tol: Tolerance) -> Result<Frame, FrameError> {
    if bytes.len() > 6 && is_sealed(&bytes[6..]) == Some(true) {
        return parse_sealed(bytes).map(Frame::Sealed);
    }
    parse_frame(bytes, tol).map(Frame::Plain)
}

fn check_crc(data: &[u8], crc_text: &str, tol: Tolerance) -> Result<CrcKind, FrameError> {
    let found = u16::from_str_radix(crc_text, 16)
        .ok()
        .filter(|_| crc_text.len() == 4 && crc_text.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| FrameError::BadCrcField(crc_text.to_string()))?;
    let expected = crc16(data);
    if found == expected {
        Ok(CrcKind::Hj212)
    } else if tol.modbus_crc_swapped && found == crc16_modbus(data).swap_bytes() {
        Ok(CrcKind::ModbusSwapped)
    } else {
        Err(FrameError::BadCrc {
            expected: format!("{expected:04X}"),
            found: crc_text.to_string(),
        })
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

/// `##` and the 4-digit length field of a frame at least `min_len` bytes long.
fn length_field(bytes: &[u8], min_len: usize) -> Result<usize, FrameError> {
    if !bytes.starts_with(b"##") {
        return Err(FrameError::NoHeader);
    }
    if bytes.len() < min_len {
        return Err(FrameError::Truncated {
            needed: min_len,
            have: bytes.len(),
        });
    }
    let len_field = String::from_utf8_lossy(&bytes[2..6]).to_string();
    len_field
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| len_field.parse().ok())
        .flatten()
        .ok_or(FrameError::BadLengthField(len_field))
}

/// Parse one whole frame.
pub fn parse_frame(bytes: &[u8], tol: Tolerance) -> Result<Packet, FrameError> {
    if bytes.len() > 6 && bytes.starts_with(b"##") && is_sealed(&bytes[6..]) == Some(true) {
        return Err(FrameError::Sealed);
    }
    let declared = length_field(bytes, 6)?;
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
    let crc = check_crc(data, &crc_text, tol)?;
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
    let p = Packet::new(header, cp);
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
    /// A frame with an SM4-encrypted CP, waiting for its logger's key.
    Sealed(Sealed),
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
            let seen = self.buf.len().min(6 + declared);
            if is_sealed(&self.buf[6..seen]) == Some(true) {
                // Sealed: its length field may be the plaintext length; it ends at its CR LF.
                let end = self.buf[6..].windows(2).position(|w| w == b"\r\n");
                let next = self.buf[2..].windows(2).position(|w| w == b"##");
                // A "##" before the CR LF means this frame was cut short and the next has begun.
                let end = end.filter(|e| next.is_none_or(|n| n + 2 >= e + 8));
                match (end, next) {
                    (Some(e), _) => {
                        let bytes: Vec<u8> = self.buf.drain(..e + 8).collect();
                        match parse_sealed(&bytes) {
                            Ok(f) => out.push(Decoded::Sealed(f)),
                            Err(err) => out.push(Decoded::Bad(err, bytes)),
                        }
                    }
                    (_, Some(n)) => {
                        let bad: Vec<u8> = self.buf.drain(..n + 2).collect();
                        let have = bad.len();
                        out.push(Decoded::Bad(
                            FrameError::Truncated {
                                needed: have + 2,
                                have,
                            },
                            bad,
                        ));
                    }
                    (None, None) if self.buf.len() > MAX_SEALED_WIRE => {
                        let bad: Vec<u8> = std::mem::take(&mut self.buf);
                        out.push(Decoded::Bad(
                            FrameError::TooLong {
                                len: bad.len(),
                                max: MAX_SEALED_WIRE,
                            },
                            bad,
                        ));
                    }
                    (None, None) => return out,
                }
                continue;
            }
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

/// Split packets (Flag bit 1, PNUM/PNO) put back together, per (MN, QN). Bounded: past
/// `max_groups` incomplete packets or `max_bytes` of parts, the oldest incomplete packet is dropped
/// (counted in [`Reassembler::dropped`]); a part numbered outside 1..=PNUM is ignored.
#[derive(Debug)]
pub struct Reassembler {
    parts: BTreeMap<(String, String), BTreeMap<u32, Packet>>,
    /// Keys in arrival order of their first part.
    order: std::collections::VecDeque<(String, String)>,
    bytes: usize,
    max_groups: usize,
    max_bytes: usize,
    dropped: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::bounded(64, 4 << 20)
    }
}

fn packet_bytes(p: &Packet) -> usize {
    p.cp.iter()
        .flatten()
        .chain(p.header.iter())
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum()
}

impl Reassembler {
    pub fn bounded(max_groups: usize, max_bytes: usize) -> Self {
        Reassembler {
            parts: BTreeMap::new(),
            order: Default::default(),
            bytes: 0,
            max_groups: max_groups.max(1),
            max_bytes,
            dropped: 0,
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self.order.pop_front() {
            if let Some(g) = self.parts.remove(&k) {
                self.bytes -= g.values().map(packet_bytes).sum::<usize>();
                self.dropped += 1;
            }
        }
    }

    /// Take a packet; returns the whole packet when it is complete (at once for unsplit ones).
    pub fn push(&mut self, p: Packet) -> Option<Packet> {
        let Some((pnum, pno)) = p.pnum_pno().filter(|_| p.is_split()) else {
            return Some(p);
        };
        if pno == 0 || pno > pnum {
            self.dropped += 1;
            return None;
        }
        let key = (p.mn().to_string(), p.qn().unwrap_or("").to_string());
        if !self.parts.contains_key(&key) {
            while self.parts.len() >= self.max_groups {
                self.evict_oldest();
            }
            self.order.push_back(key.clone());
        }
        let size = packet_bytes(&p);
        let group = self.parts.entry(key.clone()).or_default();
        if let Some(old) = group.insert(pno, p) {
            self.bytes -= packet_bytes(&old);
        }
        self.bytes += size;
        let complete = group.len() >= pnum as usize;
        if !complete {
            while self.bytes > self.max_bytes && self.order.len() > 1 {
                self.evict_oldest();
            }
            return None;
        }
        self.order.retain(|k| k != &key);
        let parts = self.parts.remove(&key)?;
        self.bytes -= parts.values().map(packet_bytes).sum::<usize>();
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

    /// Incomplete split packets dropped (over the bounds) and parts numbered out of range.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A reply frame (9011 request answered, 9012 execution result, 9014 data answer).
/// The reply is in the frame's own edition (its Flag's edition bits; no reply asked of the reply).
pub fn reply(p: &Packet, cn: &str, cp: &str) -> String {
    let data = format!(
        "QN={};ST=91;CN={cn};PW={};MN={};Flag={};CP=&&{cp}&&",
        p.qn().unwrap_or(""),
        p.pw(),
        p.mn(),
        p.edition().flag_bits()
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
                Decoded::Sealed(_) => "sealed",
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

    // HJ 212-2025 Appendix A.2: SM4 with the key of sixteen bytes 0x30, ECB, no padding. The
    // ciphertexts are the standard's, transcribed byte for byte; the plaintexts are what it prints
    // before encryption, and their CRCs (2200 and B541, Appendix A.2) are over the plaintext.
    const A2_KEY: [u8; 16] = [0x30; 16];
    const A2_HEADER: &str =
        "QN=20240520210700000;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;";
    /// Example 2: 208 plaintext characters, 13 whole blocks, no plaintext tail.
    const A2_EX2_PLAIN: &str = "DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,a01011-Flag=N;a01012-Min=9.3,a01012-Avg=9.3,a01012-Max=9.3,a01012-Flag=N;a01014-Min=3.20,a01014-Avg=3.211,a01014-Max=3.212,a01014-Flag=N";
    const A2_EX2_CIPHER: &str = "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E1C2B3075592B4D1E09C4D8BB27BE97B559E3DA6643781A6F477769DEEB009B10DFFF3426922725D607DC4480F0CAC5F70DB2587B124BCB281592721D6E4BC180A97E5E111499CBE822E31C8D7761553543AA24207C290997BBDE64F9266BC5F529A172E381C1D898CA1A0D771A914A7B2D7467C70B94F1D4A7B0350A48DBF8B41";
    /// Example 4: 147 plaintext characters, 9 whole blocks and the tail "g=N" left in plaintext.
    const A2_EX4_PLAIN: &str = "DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,a01011-Flag=N;a01014-Min=3.20,a01014-Avg=3.20,a01014-Max=3.20,a01014-Flag=N";
    const A2_EX4_CIPHER: &str = "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E13B391A1D2A454B65388D5D9435DBF021528C7BF9755EF16518710C0CAC0ADEF9C5156CD0A5A17674AC0ED2ABC40023E9EF70128554B82438E91ADCE98A0D03A4";

    /// The standard's printed form of a ciphertext: `{0xE4,0x3E,…}` (written here independently
    /// of the encoder).
    fn braced(hex_text: &str) -> String {
        let bytes: Vec<String> = (0..hex_text.len())
            .step_by(2)
            .map(|i| format!("0x{}", &hex_text[i..i + 2]))
            .collect();
        format!("{{{}}}", bytes.join(","))
    }

    /// The frame as Appendix A.2 prints it: the plaintext length in the length field.
    fn a2_frame(cipher: &str, tail: &str, plain_len: usize, crc: &str) -> String {
        format!(
            "##{plain_len:04}{A2_HEADER}CP=&&{}{tail}&&{crc}\r\n",
            braced(cipher)
        )
    }

    #[test]
    fn appendix_a1_crc_example() {
        // HJ 212-2025 Appendix A.1: the data segment of 87 characters has CRC 2200.
        let seg = "QN=20240601085857223;ST=32;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&&&";
        assert_eq!(seg.len(), 87);
        assert_eq!(crc16(seg.as_bytes()), 0x2200);
        let p = parse_frame(
            format!("##0087{seg}2200\r\n").as_bytes(),
            Tolerance::default(),
        )
        .unwrap();
        assert_eq!(p.edition(), Edition::Hj212_2025);
        assert!(p.ack_wanted() && !p.is_split() && !p.encrypted);
    }

    #[test]
    fn appendix_a2_examples_decrypt_to_the_printed_plaintext_and_check() {
        let key = crate::ingest::hj212::crypto::Key::new(A2_KEY);
        for (cipher, tail, plain, crc) in [
            (A2_EX2_CIPHER, "", A2_EX2_PLAIN, "2200"),
            (A2_EX4_CIPHER, "g=N", A2_EX4_PLAIN, "B541"),
        ] {
            let plain_seg = format!("{A2_HEADER}CP=&&{plain}&&");
            assert_eq!(format!("{:04X}", crc16(plain_seg.as_bytes())), crc);
            let wire = a2_frame(cipher, tail, plain_seg.len(), crc);
            // As it arrives over TCP: the stream decoder finds its end although the length field
            // is the plaintext's, and holds it sealed until the key is known.
            let mut d = StreamDecoder::new(Tolerance::default());
            let (a, b) = wire.as_bytes().split_at(wire.len() / 3);
            assert!(d.push(a).is_empty());
            let out = d.push(b);
            let [Decoded::Sealed(s)] = out.as_slice() else {
                panic!("{out:?}")
            };
            assert_eq!((s.mn(), s.cn()), ("010000A8900016F000169DC0", "2051"));
            let p = s.open(&key, Tolerance::default()).unwrap();
            assert!(p.encrypted);
            assert_eq!(p.edition(), Edition::Hj212_2025);
            assert_eq!(p.cp_text(), plain);
            assert_eq!(p.data_segment(), plain_seg);
            // The encoder gives back the standard's frame byte for byte.
            assert_eq!(p.encode_sealed(&key).unwrap(), wire);
            // The transmitted-length convention is accepted too.
            let sent_len = wire.len() - 12;
            let other = format!("##{sent_len:04}{}", &wire[6..]);
            let long = Tolerance {
                long_frames: true,
                ..Default::default()
            };
            let out = StreamDecoder::new(long).push(other.as_bytes());
            let [Decoded::Sealed(s2)] = out.as_slice() else {
                panic!("{out:?}")
            };
            assert_eq!(s2.open(&key, long).unwrap().cp, p.cp);
            // Without its key a sealed frame is not a plain one.
            assert_eq!(
                parse_frame(wire.as_bytes(), Tolerance::default()),
                Err(FrameError::Sealed)
            );
        }
    }

    #[test]
    fn sealed_frames_that_do_not_open_say_why() {
        let key = crate::ingest::hj212::crypto::Key::new(A2_KEY);
        let wrong = crate::ingest::hj212::crypto::Key::new([0x31; 16]);
        let t = Tolerance::default();
        let plain_seg = format!("{A2_HEADER}CP=&&{A2_EX4_PLAIN}&&");
        let wire = a2_frame(A2_EX4_CIPHER, "g=N", plain_seg.len(), "B541");
        let s = parse_sealed(wire.as_bytes()).unwrap();
        assert!(matches!(
            s.open(&wrong, t),
            Err(FrameError::Decrypt(_) | FrameError::BadCrcAfterDecrypt { .. })
        ));
        // One flipped ciphertext byte: the block decrypts to other bytes; the CRC (or the text
        // check) refuses it.
        let flipped = A2_EX4_CIPHER.replacen("E43E", "E53E", 1);
        let s =
            parse_sealed(a2_frame(&flipped, "g=N", plain_seg.len(), "B541").as_bytes()).unwrap();
        assert!(matches!(
            s.open(&key, t),
            Err(FrameError::Decrypt(_) | FrameError::BadCrcAfterDecrypt { .. })
        ));
        // Truncated: 143 bytes is not whole blocks.
        let s = parse_sealed(
            a2_frame(&A2_EX4_CIPHER[..286], "g=N", plain_seg.len(), "B541").as_bytes(),
        )
        .unwrap();
        assert!(matches!(s.open(&key, t), Err(FrameError::Decrypt(m)) if m.contains("16-byte")));
        // A length that is neither the plaintext's nor the transmitted one.
        let s = parse_sealed(a2_frame(A2_EX4_CIPHER, "g=N", 200, "B541").as_bytes()).unwrap();
        assert!(matches!(
            s.open(&key, t),
            Err(FrameError::LengthMismatch { .. })
        ));
        // A frame cut short by the next one is refused and the next still decoded.
        let mut d = StreamDecoder::new(t);
        let cut = &wire[..wire.len() - 40];
        let out = d.push(format!("{cut}{wire}").as_bytes());
        assert!(
            matches!(out.as_slice(), [Decoded::Bad(..), Decoded::Sealed(_)]),
            "{out:?}"
        );
    }

    #[test]
    fn both_editions_round_trip_plain_encrypted_and_split() {
        let key = crate::ingest::hj212::crypto::Key::new([0x5A; 16]);
        for (flag, edition) in [(4u32, Edition::Hj212_2017), (8, Edition::Hj212_2025)] {
            for encrypted in [false, true] {
                if encrypted && edition != Edition::Hj212_2025 {
                    continue;
                }
                let mut r = Reassembler::default();
                let mut whole = None;
                for pno in [2u32, 1] {
                    let p = Packet::new(
                        vec![
                            ("QN".into(), "20260101000000000".into()),
                            ("ST".into(), "31".into()),
                            ("CN".into(), "2061".into()),
                            ("PW".into(), "123456".into()),
                            ("MN".into(), "MNX".into()),
                            ("Flag".into(), (flag | 3).to_string()),
                            ("PNUM".into(), "2".into()),
                            ("PNO".into(), pno.to_string()),
                        ],
                        vec![
                            vec![("DataTime".into(), "20260101000000".into())],
                            vec![
                                (format!("a2102{pno}-Avg"), format!("{pno}.5")),
                                (format!("a2102{pno}-Flag"), "N".into()),
                            ],
                        ],
                    );
                    let wire = if encrypted {
                        p.encode_sealed(&key).unwrap()
                    } else {
                        p.encode()
                    };
                    let out = StreamDecoder::new(Tolerance::default()).push(wire.as_bytes());
                    let back = match out.into_iter().next() {
                        Some(Decoded::Frame(b)) if !encrypted => b,
                        Some(Decoded::Sealed(s)) if encrypted => {
                            s.open(&key, Tolerance::default()).unwrap()
                        }
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(
                        (back.header.clone(), back.cp.clone()),
                        (p.header.clone(), p.cp.clone())
                    );
                    assert_eq!((back.edition(), back.encrypted), (edition, encrypted));
                    assert!(back.ack_wanted() && back.is_split());
                    whole = r.push(back).or(whole);
                }
                let whole = whole.expect("both parts reassemble");
                assert_eq!(whole.pollutants().len(), 2);
                assert_eq!(whole.edition(), edition);
                // The reply speaks the frame's edition and asks for no reply itself.
                let reply = parse_frame(
                    super::reply(&whole, "9014", "").as_bytes(),
                    Tolerance::default(),
                )
                .unwrap();
                assert_eq!(
                    (reply.flag(), reply.edition()),
                    (edition.flag_bits(), edition)
                );
            }
        }
    }

    #[test]
    fn resend_flag_and_editions_of_flag_values() {
        // HJ 212-2025 Table 3: Flag 8/9/10/11 are the 2025 edition, 4/5/7 the 2017 one.
        assert_eq!(Edition::from_flag(9), Edition::Hj212_2025);
        assert_eq!(Edition::from_flag(11), Edition::Hj212_2025);
        assert_eq!(Edition::from_flag(5), Edition::Hj212_2017);
        assert_eq!(Edition::from_flag(1), Edition::Hj212_2005);
        assert_eq!(Edition::from_flag(13).as_str(), "unknown");
        let live = parse_frame(
            frame("QN=1;ST=31;CN=2061;PW=1;MN=A;Flag=9;CP=&&DataTime=20260101000000&&").as_bytes(),
            Tolerance::default(),
        )
        .unwrap();
        let resent = parse_frame(
            frame("QN=1;ST=31;CN=2061;PW=1;MN=A;Flag=9;RF=1;CP=&&DataTime=20260101000000&&")
                .as_bytes(),
            Tolerance::default(),
        )
        .unwrap();
        assert!(!live.resend() && resent.resend());
        assert!(cn_is_encrypted("2061") && cn_is_encrypted("1014") && cn_is_encrypted("3020"));
        assert!(!cn_is_encrypted("9014") && !cn_is_encrypted("1011"));
    }

    #[test]
    fn split_reassembly_is_bounded() {
        let mut r = Reassembler::bounded(2, 1 << 20);
        for qn in 0..5 {
            let p = parse_frame(frame(&format!("QN={qn};ST=32;CN=2061;PW=1;MN=WW;Flag=7;PNUM=3;PNO=1;CP=&&DataTime=20260101000000&&")).as_bytes(), Tolerance::default()).unwrap();
            assert!(r.push(p).is_none());
        }
        assert_eq!((r.waiting(), r.dropped()), (2, 3));
        let bad = parse_frame(
            frame(
                "QN=9;ST=32;CN=2061;PW=1;MN=WW;Flag=7;PNUM=2;PNO=3;CP=&&DataTime=20260101000000&&",
            )
            .as_bytes(),
            Tolerance::default(),
        )
        .unwrap();
        assert!(r.push(bad).is_none());
        assert_eq!((r.waiting(), r.dropped()), (2, 4));
    }
}
