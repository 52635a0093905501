//! The engine's input for one hour, as pure data: every reading of the hour's sensors grouped into
//! minute buckets per quantity, each bucket with the worst flag of **its own** samples (HJ 212 flags
//! are per parameter: `a21026-Flag` says nothing about `a34013`), plus the hourly means reported as
//! such (HJ 212 CN 2061, `"period": "1h"`).
//!
//! The engine streams the rows from `std_input` into an [`HourInput`]; the rules of each domain
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
    /// Per quantity, the minutes with a logged minute mean: samples of those minutes are not
    /// mixed in.
    logged_minutes: BTreeMap<String, BTreeSet<i64>>,
}

impl HourInput {
    pub fn from_rows(rows: &[Row], hour: i64) -> HourInput {
        let mut h = HourInput::default();
        for r in rows {
            h.add(hour, &r.quantity, r.ts_ms, r.period, r.value, r.flag);
        }
        h
    }

    /// Fold one reading into the hour labelled `hour` (a reading of another hour is ignored). The
    /// engine streams an hour's rows through this, so what it holds is the buckets (at most 60 per
    /// quantity and a value per hour-period quantity), never the rows: memory does not grow with
    /// the sampling rate.
    pub fn add(
        &mut self,
        hour: i64,
        quantity: &str,
        ts_ms: i64,
        period: Period,
        value: f64,
        flag: DataFlag,
    ) {
        if time::hour_label_of(ts_ms, period) != hour {
            return;
        }
        match period {
            Period::Instant | Period::Minute => {
                let m = time::minute_label_of(ts_ms, period);
                if !self.minutes.contains_key(quantity) {
                    self.minutes.insert(quantity.to_string(), BTreeMap::new());
                }
                let logged = self
                    .logged_minutes
                    .get(quantity)
                    .is_some_and(|l| l.contains(&m));
                let Some(buckets) = self.minutes.get_mut(quantity) else {
                    return;
                };
                if period == Period::Minute {
                    // The data logger's own minute mean stands for the minute, whatever samples
                    // of it came before or come after.
                    if let Some(l) = self.logged_minutes.get_mut(quantity) {
                        l.insert(m);
                    } else {
                        self.logged_minutes
                            .insert(quantity.to_string(), BTreeSet::from([m]));
                    }
                    buckets.insert(
                        m,
                        Bucket {
                            sum: value,
                            count: 1,
                            flag,
                        },
                    );
                    return;
                }
                if logged {
                    return;
                }
                let e = buckets.entry(m).or_insert(Bucket {
                    sum: 0.0,
                    count: 0,
                    flag: DataFlag::N,
                });
                e.sum += value;
                e.count += 1;
                e.flag = worst(e.flag, flag);
            }
            Period::Hour => {
                self.hourly.insert(quantity.to_string(), (value, flag));
            }
            Period::Day => {}
        }
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
