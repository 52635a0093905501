//! SM4 for HJ 212-2025 (§6.4): the CP region of data uploads, key updates and site information is
//! encrypted with a per-logger 128-bit key, SM4 (GB/T 32907) in ECB mode without padding.
//!
//! What is encrypted is the text between `CP=&&` and the closing `&&`: every whole 16-byte block of
//! it; a tail shorter than a block stays plaintext. The ciphertext is written `{0xE4,0x3E,…}` (5
//! characters a byte) followed by that tail. The frame's CRC is computed over the plaintext data
//! segment, so a receiver decrypts first and checks the CRC after. The cipher is RustCrypto's `sm4`
//! through its `ecb` block mode; nothing here implements SM4 itself.

use std::fmt;

use ecb::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyInit};
use sha2::Digest;

/// SM4's block size in bytes.
pub const BLOCK: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("SM4 key must be 32 hex digits (16 bytes), got {0} characters")]
    KeyLength(usize),
    #[error("SM4 key is not hex")]
    KeyNotHex,
    #[error("ciphertext is not written as {{0x..,0x..}}: {0}")]
    Syntax(String),
    #[error("ciphertext of {0} bytes is not a whole number of 16-byte SM4 blocks (truncated?)")]
    Partial(usize),
    #[error("SM4 block operation failed")]
    Block,
}

/// A logger's SM4 key. Its bytes never appear in `Debug` output or logs; [`Key::fingerprint`] names
/// it for audit records.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; BLOCK]);

impl Key {
    pub fn new(bytes: [u8; BLOCK]) -> Key {
        Key(bytes)
    }

    /// From 32 hex digits (either case, spaces ignored).
    pub fn from_hex(text: &str) -> Result<Key, CryptoError> {
        let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if clean.len() != 2 * BLOCK {
            return Err(CryptoError::KeyLength(clean.len()));
        }
        let v = hex::decode(&clean).map_err(|_| CryptoError::KeyNotHex)?;
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(&v);
        Ok(Key(b))
    }

    /// The key as 32 upper-case hex digits (for the secrets file only).
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// The first 8 hex digits of SHA-256 of the key: tells two keys apart without revealing either.
    pub fn fingerprint(&self) -> String {
        let d = sha2::Sha256::digest(self.0);
        hex::encode(&d[..4])
    }

    /// Encrypt the whole blocks of `plain` (ECB, no padding); the tail under 16 bytes is returned
    /// apart, unencrypted, as the standard writes it.
    pub fn seal<'a>(&self, plain: &'a [u8]) -> Result<(Vec<u8>, &'a [u8]), CryptoError> {
        let whole = plain.len() - plain.len() % BLOCK;
        let mut buf = plain[..whole].to_vec();
        ecb::Encryptor::<sm4::Sm4>::new(&self.0.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, whole)
            .map_err(|_| CryptoError::Block)?;
        Ok((buf, &plain[whole..]))
    }

    /// Decrypt whole SM4 blocks (ECB, no padding).
    pub fn open(&self, cipher: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if cipher.len() % BLOCK != 0 {
            return Err(CryptoError::Partial(cipher.len()));
        }
        let mut buf = cipher.to_vec();
        let n = ecb::Decryptor::<sm4::Sm4>::new(&self.0.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::Block)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(fingerprint {})", self.fingerprint())
    }
}

/// `{0xE4,0x3E,…}` for `bytes`.
pub fn write_braced(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 5);
    s.push('{');
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("0x{b:02X}"));
    }
    s.push('}');
    s
}

/// Split a CP region that starts with `{0x..,…}` into the ciphertext bytes and the plaintext tail.
pub fn read_braced(region: &str) -> Result<(Vec<u8>, &str), CryptoError> {
    let body = region
        .strip_prefix('{')
        .ok_or_else(|| CryptoError::Syntax("no opening {".into()))?;
    let close = body
        .find('}')
        .ok_or_else(|| CryptoError::Syntax("no closing }".into()))?;
    let mut out = Vec::with_capacity(close / 5 + 1);
    if body[..close].trim().is_empty() {
        return Ok((out, &body[close + 1..]));
    }
    for (i, item) in body[..close].split(',').enumerate() {
        let t = item.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .filter(|h| (1..=2).contains(&h.len()))
            .ok_or_else(|| CryptoError::Syntax(format!("byte {i} is {t:?}, not 0xHH")))?;
        out.push(
            u8::from_str_radix(hex, 16)
                .map_err(|_| CryptoError::Syntax(format!("byte {i} is {t:?}, not 0xHH")))?,
        );
    }
    Ok((out, &body[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32907-2016 Appendix A, example 1: key = plaintext = 0123456789ABCDEFFEDCBA9876543210,
    /// ciphertext 681EDF34D206965E86B3E94F536E4246. Shows the crate is SM4 as the national standard
    /// defines it, independently of HJ 212's examples.
    #[test]
    fn gb_t_32907_example() {
        let k = Key::from_hex("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let plain = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let (c, tail) = k.seal(&plain).unwrap();
        assert_eq!(hex::encode_upper(&c), "681EDF34D206965E86B3E94F536E4246");
        assert!(tail.is_empty());
        assert_eq!(k.open(&c).unwrap(), plain);
    }

    #[test]
    fn tails_stay_plain_and_braces_round_trip() {
        let k = Key::new([0x30; 16]);
        let text = b"DataTime=20260101000000;a21026-Avg=1"; // 36 bytes: 2 blocks + 4
        let (c, tail) = k.seal(text).unwrap();
        assert_eq!((c.len(), tail), (32, &b"vg=1"[..]));
        let written = format!("{}{}", write_braced(&c), std::str::from_utf8(tail).unwrap());
        let (back, rest) = read_braced(&written).unwrap();
        assert_eq!((back.as_slice(), rest), (c.as_slice(), "vg=1"));
        assert_eq!(k.open(&back).unwrap(), &text[..32]);
        assert_eq!(k.open(&back[..31]), Err(CryptoError::Partial(31)));
        assert!(matches!(read_braced("{0xZZ}"), Err(CryptoError::Syntax(_))));
        assert_eq!(read_braced("{}abc").unwrap(), (vec![], "abc"));
        assert!(matches!(
            read_braced("{0x01,}"),
            Err(CryptoError::Syntax(_))
        ));
        assert!(matches!(read_braced("{0x01"), Err(CryptoError::Syntax(_))));
    }

    #[test]
    fn keys_are_hex_and_never_printed() {
        assert_eq!(Key::from_hex("00"), Err(CryptoError::KeyLength(2)));
        assert_eq!(Key::from_hex(&"zz".repeat(16)), Err(CryptoError::KeyNotHex));
        let k = Key::from_hex(&"30".repeat(16)).unwrap();
        assert_eq!(k, Key::new([0x30; 16]));
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("3030"), "{dbg}");
        assert_eq!(k.fingerprint().len(), 8);
    }
}
