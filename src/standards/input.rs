//! The engine's input for one hour, as pure data: every reading of the hour's sensors grouped into
//! minute buckets per quantity, each bucket with the worst flag of **its own** samples (HJ 212 flags
//! are per parameter: `a21026-Flag` says nothing about `a34013`), plus the hourly means reported as
//! such (HJ 212 CN 2061, `"period": "1h"`).
//!
//! The engine reads the rows from `std_input` and builds an [`HourInput`]; the rules of each domain
//! (`cems`, `air`) read from it. A recompute holds one hour of one entity at a time: 60 buckets
//! per quantity, whatever the sampling rate.

use std::collections::{BTreeMap, BTreeSet};

use super::hj663;
use super::time;
use crate::reading::{DataFlag, Period};

/// Severity used to pick one flag for a minute from its samples.
pub fn severity(f: DataFlag) -> u8 {
    match f {
        DataFlag::N => 0,
        DataFlag::S => 1,
        DataFlag::T => 2,
        DataFlag::C => 3,
        DataFlag::M => 4,
        DataFlag::B => 5,
        DataFlag::D => 6,
        DataFlag::F => 7,
    }
}

/// The worse of two flags.
pub fn worst(a: DataFlag, b: DataFlag) -> DataFlag {
    if severity(b) > severity(a) {
        b
    } else {
        a
    }
}

/// Flags that make an air or water value unusable (GB 3095 / HJ 663 take only valid data).
pub const AIR_WATER_EXCLUDED: [DataFlag; 5] = [
    DataFlag::F,
    DataFlag::M,
    DataFlag::C,
    DataFlag::D,
    DataFlag::B,
];

/// One input row.
#[derive(Debug, Clone)]
pub struct Row {
    pub quantity: String,
    pub ts_ms: i64,
    pub period: Period,
    pub value: f64,
    pub flag: DataFlag,
}

/// One quantity's minute: sum and count of its samples, and their worst flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub sum: f64,
    pub count: usize,
    pub flag: DataFlag,
}

impl Bucket {
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Per quantity: minute label → bucket, plus hour-period values.
#[derive(Debug, Default)]
pub struct HourInput {
    pub minutes: BTreeMap<String, BTreeMap<i64, Bucket>>,
    pub hourly: BTreeMap<String, (f64, DataFlag)>,
    /// (quantity, minute) with a logged minute mean: samples of that minute are not mixed in.
    logged_minutes: BTreeSet<(String, i64)>,
}

impl HourInput {
    pub fn from_rows(rows: &[Row], hour: i64) -> HourInput {
        let mut h = HourInput::default();
        for r in rows {
            if time::hour_label_of(r.ts_ms, r.period) != hour {
                continue;
            }
            match r.period {
                Period::Instant | Period::Minute => {
                    let m = time::minute_label_of(r.ts_ms, r.period);
                    if r.period == Period::Minute {
                        // The data logger's own minute mean stands for the minute.
                        h.logged_minutes.insert((r.quantity.clone(), m));
                        h.minutes.entry(r.quantity.clone()).or_default().insert(
                            m,
                            Bucket {
                                sum: r.value,
                                count: 1,
                                flag: r.flag,
                            },
                        );
                        continue;
                    }
                    if h.logged_minutes.contains(&(r.quantity.clone(), m)) {
                        continue;
                    }
                    let e = h
                        .minutes
                        .entry(r.quantity.clone())
                        .or_default()
                        .entry(m)
                        .or_insert(Bucket {
                            sum: 0.0,
                            count: 0,
                            flag: DataFlag::N,
                        });
                    e.sum += r.value;
                    e.count += 1;
                    e.flag = worst(e.flag, r.flag);
                }
                Period::Hour => {
                    h.hourly.insert(r.quantity.clone(), (r.value, r.flag));
                }
                Period::Day => {}
            }
        }
        h
    }

    /// A quantity's minute: its mean and its own flag.
    pub fn minute(&self, q: &str, m: i64) -> Option<(f64, DataFlag)> {
        self.minutes
            .get(q)
            .and_then(|x| x.get(&m))
            .map(|b| (b.mean(), b.flag))
    }

    /// Every minute label any quantity has data for.
    pub fn minute_labels(&self) -> BTreeSet<i64> {
        self.minutes
            .values()
            .flat_map(|m| m.keys().copied())
            .collect()
    }

    /// Minute means of a quantity that are usable (own flag not excluded).
    fn usable_minutes(&self, q: &str, excluded: &[DataFlag]) -> Vec<f64> {
        self.minutes
            .get(q)
            .map(|m| {
                m.values()
                    .filter(|b| !excluded.contains(&b.flag))
                    .map(Bucket::mean)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hourly value of a quantity for air: from ≥ 45 usable minutes, else an hourly mean
    /// reported as such (HJ 212 2061 / `"period": "1h"`).
    pub fn air_hourly(&self, q: &str) -> Option<f64> {
        hj663::hourly_mean(&self.usable_minutes(q, &AIR_WATER_EXCLUDED)).or_else(|| {
            self.hourly
                .get(q)
                .filter(|(_, f)| !AIR_WATER_EXCLUDED.contains(f))
                .map(|(v, _)| *v)
        })
    }

    /// For water: any usable minute or hourly value (analysers sample every 1–4 h).
    pub fn water_hourly(&self, q: &str) -> Option<f64> {
        let m = self.usable_minutes(q, &AIR_WATER_EXCLUDED);
        if !m.is_empty() {
            return Some(m.iter().sum::<f64>() / m.len() as f64);
        }
        self.hourly
            .get(q)
            .filter(|(_, f)| !AIR_WATER_EXCLUDED.contains(f))
            .map(|(v, _)| *v)
    }
}
