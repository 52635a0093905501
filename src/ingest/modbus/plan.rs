//! Request planning: read a device's values in as few requests as possible.
//!
//! Values of the same table are sorted by address and merged while the gap between them is at
//! most `max_gap` registers and the request stays within the protocol's limit (125 registers,
//! 2000 bits per read). `single` makes one request per value, for devices that refuse large reads.

use super::profile::{Profile, RegisterKind};

/// Registers per read (Modbus application protocol §6.3/6.4).
pub const MAX_REGISTERS: u16 = 125;
/// Bits per read (§6.1/6.2).
pub const MAX_BITS: u16 = 2000;

/// What a request carries: the profile's value `index`, or the status register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Value(usize),
    Status,
}

/// One read request and the values it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RegisterKind,
    pub start: u16,
    pub count: u16,
    pub slots: Vec<(Slot, u16)>,
}

/// Plan the reads of a profile.
pub fn plan(profile: &Profile, max_gap: u16, single: bool) -> Vec<Request> {
    let mut items: Vec<(RegisterKind, u16, u16, Slot)> = profile
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                v.register,
                v.address,
                if v.register.is_bit() {
                    1
                } else {
                    v.data_type.words()
                },
                Slot::Value(i),
            )
        })
        .collect();
    if let Some(s) = &profile.status {
        items.push((
            s.register,
            s.address,
            if s.register.is_bit() {
                1
            } else {
                s.data_type.words()
            },
            Slot::Status,
        ));
    }
    items.sort_by_key(|(k, a, _, _)| (*k, *a));
    let mut out: Vec<Request> = Vec::new();
    for (kind, addr, width, slot) in items {
        let limit = if kind.is_bit() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        };
        if !single {
            if let Some(last) = out.last_mut() {
                let end = last.start as u32 + last.count as u32;
                let new_end = (addr as u32 + width as u32).max(end);
                if last.kind == kind
                    && (addr as u32) <= end + max_gap as u32
                    && new_end - last.start as u32 <= limit as u32
                {
                    last.count = (new_end - last.start as u32) as u16;
                    last.slots.push((slot, addr));
                    continue;
                }
            }
        }
        out.push(Request {
            kind,
            start: addr,
            count: width,
            slots: vec![(slot, addr)],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::modbus::decode::DataType;
    use crate::ingest::modbus::profile::ValueDef;

    fn v(kind: RegisterKind, address: u16, t: DataType) -> ValueDef {
        ValueDef {
            quantity: "COD".into(),
            unit: None,
            register: kind,
            address,
            data_type: t,
            order: Default::default(),
            scale: 1.0,
            offset: 0.0,
        }
    }

    fn profile(values: Vec<ValueDef>) -> Profile {
        Profile {
            id: "t".into(),
            name_zh: "t".into(),
            name_en: "t".into(),
            description: String::new(),
            values,
            status: None,
        }
    }

    #[test]
    fn contiguous_and_near_values_merge_far_ones_split() {
        use DataType::*;
        use RegisterKind::*;
        let p = profile(vec![
            v(Holding, 0, F32),
            v(Holding, 2, F32),
            v(Holding, 10, U16),
            v(Holding, 100, F32),
            v(Input, 0, U16),
        ]);
        let r = plan(&p, 8, false);
        let shape: Vec<(RegisterKind, u16, u16, usize)> = r
            .iter()
            .map(|x| (x.kind, x.start, x.count, x.slots.len()))
            .collect();
        // 0..4 and 10 are 6 apart (≤ 8): one read of 0..=10 (11 registers); 100 is far; input separate.
        assert_eq!(
            shape,
            vec![(Holding, 0, 11, 3), (Holding, 100, 2, 1), (Input, 0, 1, 1)]
        );
        let single = plan(&p, 8, true);
        assert_eq!(single.len(), 5);
        let tight = plan(&p, 0, false);
        assert_eq!(
            tight.iter().map(|x| (x.start, x.count)).collect::<Vec<_>>(),
            vec![(0, 4), (10, 1), (100, 2), (0, 1)]
        );
    }

    #[test]
    fn a_read_never_exceeds_125_registers() {
        let values: Vec<ValueDef> = (0..100)
            .map(|i| v(RegisterKind::Holding, i * 2, DataType::F32))
            .collect();
        let r = plan(&profile(values), 10, false);
        assert!(r.iter().all(|x| x.count <= MAX_REGISTERS));
        assert_eq!(r.iter().map(|x| x.slots.len()).sum::<usize>(), 100);
        assert_eq!((r[0].start, r[0].count), (0, 124));
        assert_eq!(r.len(), 2);
    }
}
