//! Modbus data types and word/byte orders.
//!
//! A register is a 16-bit word sent big-endian (bytes A B). Multi-register values name their byte
//! order with the letters of a 32-bit value `ABCD` (A the most significant byte):
//! - `ABCD`: words in order, bytes big-endian (the Modbus default, "big-endian");
//! - `CDAB`: words swapped, bytes big-endian ("word swap", common on PLCs and analysers);
//! - `BADC`: words in order, bytes swapped within each word ("byte swap");
//! - `DCBA`: words reversed and bytes swapped ("little-endian").
//!
//! For 64-bit types the same rule extends over four words; for 16-bit types only the byte swap
//! (`BADC`, `DCBA`) matters.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
}

impl DataType {
    /// Registers the type occupies (a bool is one register, or one bit of a coil/discrete input).
    pub fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];
}

/// The value's bytes, most significant first, after undoing `order`.
fn big_endian_bytes(words: &[u16], order: WordOrder) -> Vec<u8> {
    let swap_words = matches!(order, WordOrder::CDAB | WordOrder::DCBA);
    let swap_bytes = matches!(order, WordOrder::BADC | WordOrder::DCBA);
    let mut ws: Vec<u16> = words.to_vec();
    if swap_words {
        ws.reverse();
    }
    let mut out = Vec::with_capacity(ws.len() * 2);
    for w in ws {
        let [hi, lo] = w.to_be_bytes();
        if swap_bytes {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    }
    out
}

/// Decode `words` (exactly `t.words()` of them) as `t` in `order`. `None` for a wrong length or
/// a non-finite float.
pub fn decode(words: &[u16], t: DataType, order: WordOrder) -> Option<f64> {
    if words.len() != t.words() as usize {
        return None;
    }
    let b = big_endian_bytes(words, order);
    let v = match t {
        DataType::U16 => u16::from_be_bytes([b[0], b[1]]) as f64,
        DataType::I16 => i16::from_be_bytes([b[0], b[1]]) as f64,
        DataType::Bool => f64::from(u8::from(words[0] != 0)),
        DataType::U32 => u32::from_be_bytes(b[..4].try_into().ok()?) as f64,
        DataType::I32 => i32::from_be_bytes(b[..4].try_into().ok()?) as f64,
        // The f32's shortest decimal (28.21, not 28.209999084472656): what the device meant.
        DataType::F32 => f32::from_be_bytes(b[..4].try_into().ok()?)
            .to_string()
            .parse::<f64>()
            .ok()?,
        DataType::U64 => u64::from_be_bytes(b[..8].try_into().ok()?) as f64,
        DataType::I64 => i64::from_be_bytes(b[..8].try_into().ok()?) as f64,
        DataType::F64 => f64::from_be_bytes(b[..8].try_into().ok()?),
    };
    v.is_finite().then_some(v)
}

/// Encode a value as registers (for the simulator and tests).
pub fn encode(value: f64, t: DataType, order: WordOrder) -> Vec<u16> {
    let be: Vec<u8> = match t {
        DataType::U16 => (value as u16).to_be_bytes().to_vec(),
        DataType::I16 => (value as i16).to_be_bytes().to_vec(),
        DataType::Bool => u16::from(value != 0.0).to_be_bytes().to_vec(),
        DataType::U32 => (value as u32).to_be_bytes().to_vec(),
        DataType::I32 => (value as i32).to_be_bytes().to_vec(),
        DataType::F32 => (value as f32).to_be_bytes().to_vec(),
        DataType::U64 => (value as u64).to_be_bytes().to_vec(),
        DataType::I64 => (value as i64).to_be_bytes().to_vec(),
        DataType::F64 => value.to_be_bytes().to_vec(),
    };
    let swap_words = matches!(order, WordOrder::CDAB | WordOrder::DCBA);
    let swap_bytes = matches!(order, WordOrder::BADC | WordOrder::DCBA);
    let mut words: Vec<u16> = be
        .chunks(2)
        .map(|c| {
            if swap_bytes {
                u16::from_be_bytes([c[1], c[0]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        })
        .collect();
    if swap_words {
        words.reverse();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_in_each_order_by_hand() {
        // 123.456f32 = 0x42F6E979 (IEEE 754): A=42 B=F6 C=E9 D=79; reported as its shortest decimal.
        let v = 123.456;
        assert_eq!(
            decode(&[0x42F6, 0xE979], DataType::F32, WordOrder::ABCD),
            Some(v)
        );
        assert_eq!(
            decode(&[0xE979, 0x42F6], DataType::F32, WordOrder::CDAB),
            Some(v)
        );
        assert_eq!(
            decode(&[0xF642, 0x79E9], DataType::F32, WordOrder::BADC),
            Some(v)
        );
        assert_eq!(
            decode(&[0x79E9, 0xF642], DataType::F32, WordOrder::DCBA),
            Some(v)
        );
    }

    #[test]
    fn integers_by_hand() {
        // -2 as i16 = 0xFFFE; byte-swapped 0xFEFF.
        assert_eq!(
            decode(&[0xFFFE], DataType::I16, WordOrder::ABCD),
            Some(-2.0)
        );
        assert_eq!(
            decode(&[0xFEFF], DataType::I16, WordOrder::BADC),
            Some(-2.0)
        );
        // 70000 = 0x00011170: ABCD [0x0001, 0x1170], CDAB [0x1170, 0x0001].
        assert_eq!(
            decode(&[0x0001, 0x1170], DataType::U32, WordOrder::ABCD),
            Some(70000.0)
        );
        assert_eq!(
            decode(&[0x1170, 0x0001], DataType::U32, WordOrder::CDAB),
            Some(70000.0)
        );
        // 1e12 as u64 = 0x000000E8D4A51000.
        assert_eq!(
            decode(
                &[0x0000, 0x00E8, 0xD4A5, 0x1000],
                DataType::U64,
                WordOrder::ABCD
            ),
            Some(1e12)
        );
        assert_eq!(
            decode(
                &[0x1000, 0xD4A5, 0x00E8, 0x0000],
                DataType::U64,
                WordOrder::CDAB
            ),
            Some(1e12)
        );
        assert_eq!(
            decode(&[0x1], DataType::U32, WordOrder::ABCD),
            None,
            "wrong length"
        );
    }

    #[test]
    fn encode_and_decode_agree_for_every_type_and_order() {
        let cases = [
            (DataType::U16, 65535.0),
            (DataType::I16, -12345.0),
            (DataType::U32, 4_000_000_000.0),
            (DataType::I32, -2_000_000_000.0),
            (DataType::U64, 9_007_199_254_740_991.0),
            (DataType::I64, -9_007_199_254_740_991.0),
            (DataType::F32, -0.15625),
            (DataType::F32, 28.21),
            (DataType::F64, 12_345.678_901_234_5),
            (DataType::Bool, 1.0),
        ];
        for (t, v) in cases {
            for o in WordOrder::ALL {
                assert_eq!(decode(&encode(v, t, o), t, o), Some(v), "{t:?} {o:?}");
            }
        }
    }
}
