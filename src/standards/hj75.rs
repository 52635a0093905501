//! Flue-gas CEMS data (HJ 75-2017 / HJ 76-2017, GB 13223-2011): conversions, validity, hourly means,
//! exceedance and mass emission.
//!
//! Formulas (HJ 75-2017, HJ 76-2017):
//! - ppm → mg/m3 at standard state: × M/22.4 (in the quantity catalogue, applied at ingest);
//! - NOx as NO2: C_NOx = C_NO × 46/30 + C_NO2;
//! - wet → dry: C_dry = C_wet / (1 − X_sw);
//! - actual → standard state (273 K, 101.325 kPa): C_std = C × 101325/(Ba + Ps) × (273 + t_s)/273;
//! - reference oxygen: C_ref = C_dry × (21 − O2_ref)/(21 − O2_dry), O2_ref 6 % for coal-fired
//!   boilers; O2 ≥ 21 % is a sensor fault (invalid), never a division by zero;
//! - mass emission: kg/h = C_std (mg/m3) × Q_std (m3/h, dry) × 1e-6.
//!
//! Validity: a minute is valid unless its data flag is in the unit's excluded set (default F, M, C, D,
//! B — 停运, 维护, 校准, 故障, 通讯异常 are not used to judge exceedance, MEE 公告 2022 年第 21 号);
//! T (over range) minutes count; whether one makes its hour exceeded is [`OverRange`]. An hourly
//! mean is valid with ≥ 45 valid minutes (HJ 76-2017 Appendix B, as transcribed by secondary
//! sources). An hour with ≥ 45 minutes flagged F is a stopped hour. A minute is judged by its own
//! flag and its correction inputs (see [`Minute`]).

use serde::{Deserialize, Serialize};

use crate::reading::DataFlag;

/// Valid minutes needed for a valid hourly mean.
pub const MIN_VALID_MINUTES: usize = 45;

/// Flags that make a minute invalid for compliance by default.
pub const DEFAULT_EXCLUDED: [DataFlag; 5] = [
    DataFlag::F,
    DataFlag::M,
    DataFlag::C,
    DataFlag::D,
    DataFlag::B,
];

pub fn nox_as_no2(no_mg_m3: f64, no2_mg_m3: f64) -> f64 {
    no_mg_m3 * 46.0 / 30.0 + no2_mg_m3
}

/// `None` when the moisture is 100 % or more (a fault).
pub fn wet_to_dry(c_wet: f64, moisture_percent: f64) -> Option<f64> {
    let x = moisture_percent / 100.0;
    (0.0..1.0).contains(&x).then(|| c_wet / (1.0 - x))
}

/// Actual conditions → standard state. `ba_pa` atmospheric, `ps_pa` flue static (gauge) pressure.
pub fn to_standard_state(c: f64, ba_pa: f64, ps_pa: f64, t_celsius: f64) -> Option<f64> {
    let p = ba_pa + ps_pa;
    (p > 0.0 && t_celsius > -273.0).then(|| c * 101_325.0 / p * (273.0 + t_celsius) / 273.0)
}

/// Reference-oxygen correction; `None` when O2 ≥ 21 % or is not a number.
pub fn o2_corrected(c_dry: f64, o2_dry_percent: f64, o2_ref_percent: f64) -> Option<f64> {
    (0.0..21.0)
        .contains(&o2_dry_percent)
        .then(|| c_dry * (21.0 - o2_ref_percent) / (21.0 - o2_dry_percent))
}

pub fn mass_rate_kg_h(c_std_mg_m3: f64, q_std_m3_h: f64) -> f64 {
    c_std_mg_m3 * q_std_m3_h * 1e-6
}

/// How the hourly corrected (折算) concentration is formed. HJ 76-2017 Appendix B names the hourly
/// value a "1h 污染物折算浓度均值" (mean of the corrected concentrations), which reads as correcting
/// each minute and averaging: that is the default; the other reading is selectable. Both are in
/// the README ("Choices the standards leave").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum O2Correction {
    /// Correct every minute with its own O2, then average the corrected minutes.
    #[default]
    PerMinute,
    /// Correct the hour's mean concentration with the hour's mean O2 (both over the valid minutes).
    HourlyMeans,
}

/// Whether a counted over-range (T) minute makes its hour exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverRange {
    /// The hour is judged by its mean alone; T minutes count in it at their reported value and the
    /// hour is marked `over_range` (its true mean is at least the one shown).
    #[default]
    MeanOnly,
    /// Any counted T minute makes a valid hour exceeded, whatever its mean.
    AnyMinuteExceeds,
}

/// A pollutant-hour in which the unit was stopped (F) for part of the hour only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialStop {
    /// Valid only with ≥ 45 valid minutes, as any hour; otherwise invalid.
    #[default]
    Invalid,
    /// A stopped hour (neither valid nor expected) unless it has ≥ 45 valid minutes.
    Stopped,
    /// Judged on the minutes the unit ran: valid with valid minutes ≥ 75 % (45/60) of the
    /// minutes not flagged stopped.
    RunningMinutes,
}

/// The hour rules of one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct HourRules {
    /// Flags whose minutes do not count (the unit's `excluded_flags`, default F M C D B).
    pub excluded: Vec<DataFlag>,
    pub o2_correction: O2Correction,
    pub over_range: OverRange,
    pub partial_stop: PartialStop,
    /// Reference O2, %.
    pub o2_ref_percent: f64,
}

impl HourRules {
    /// The default rules at `o2_ref_percent`.
    pub fn new(o2_ref_percent: f64) -> HourRules {
        HourRules {
            excluded: DEFAULT_EXCLUDED.to_vec(),
            o2_correction: O2Correction::default(),
            over_range: OverRange::default(),
            partial_stop: PartialStop::default(),
            o2_ref_percent,
        }
    }
}

/// One minute of one pollutant, normalised to dry standard state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minute {
    /// Measured (dry, standard state) concentration; `None` when a value the normalisation needs
    /// (moisture, flue temperature) is missing or invalid.
    pub measured: Option<f64>,
    /// Dry O2, %, when valid.
    pub o2_dry: Option<f64>,
    /// Mass rate, kg/h (needs the flow; does not decide validity).
    pub mass_kg_h: Option<f64>,
    /// The pollutant's own flag (its channel's, never another channel's).
    pub flag: DataFlag,
    /// Every input the correction needs (O2, and moisture / temperature / pressure where used) is
    /// present with a flag that is not excluded.
    pub inputs_valid: bool,
}

impl Minute {
    fn corrected(&self, o2_ref: f64) -> Option<f64> {
        o2_corrected(self.measured?, self.o2_dry?, o2_ref)
    }

    /// Counts for the hour: own flag not excluded, inputs valid, and correctable.
    fn counts(&self, rules: &HourRules) -> bool {
        !rules.excluded.contains(&self.flag)
            && self.inputs_valid
            && self.corrected(rules.o2_ref_percent).is_some()
    }
}

/// Status of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HourStatus {
    /// ≥ 45 valid minutes (or, under `partial_stop = "running_minutes"`, enough of the running ones).
    Valid,
    /// The unit was stopped (≥ 45 minutes flagged F, or a partly stopped hour under
    /// `partial_stop = "stopped"`).
    Stopped,
    /// Too few valid minutes (maintenance, calibration, fault, gaps).
    Invalid,
}

/// The hourly result for one pollutant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hour {
    pub status: HourStatus,
    pub valid_minutes: usize,
    /// Minutes flagged F (stopped).
    pub stopped_minutes: usize,
    /// Minutes with data that do not count.
    pub excluded_minutes: usize,
    pub measured_mean: Option<f64>,
    pub corrected_mean: Option<f64>,
    pub mass_kg_h: Option<f64>,
    /// Valid and above the limit (strictly), or per [`OverRange`].
    pub exceeded: bool,
    /// Some counted minute was flagged T (over range).
    pub over_range: bool,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// Aggregate an hour of one pollutant's minutes against `limit` (mg/m3 at reference O2).
///
/// HJ 75-2017: the hour is judged by its own valid minutes — a minute counts when the pollutant's
/// own flag does not exclude it and the values its correction needs are valid; ≥ 45 make a valid
/// hour. A flag on another channel (PM in calibration, say) says nothing about this pollutant.
pub fn hour(minutes: &[Minute], limit: f64, rules: &HourRules) -> Hour {
    let o2_ref = rules.o2_ref_percent;
    let valid: Vec<&Minute> = minutes.iter().filter(|m| m.counts(rules)).collect();
    let stopped = minutes.iter().filter(|m| m.flag == DataFlag::F).count();
    let n = valid.len();
    let status = if n >= MIN_VALID_MINUTES {
        HourStatus::Valid
    } else if stopped >= MIN_VALID_MINUTES {
        HourStatus::Stopped
    } else if stopped > 0 {
        match rules.partial_stop {
            PartialStop::Invalid => HourStatus::Invalid,
            PartialStop::Stopped => HourStatus::Stopped,
            PartialStop::RunningMinutes => {
                // 45/60 of the minutes the unit ran: n ≥ 0.75 × (60 − stopped) ⇔ 4n ≥ 3(60 − stopped).
                let running = 60usize.saturating_sub(stopped);
                if n > 0 && 4 * n >= 3 * running {
                    HourStatus::Valid
                } else {
                    HourStatus::Invalid
                }
            }
        }
    } else {
        HourStatus::Invalid
    };
    let ok = status == HourStatus::Valid;
    let measured_mean = mean(valid.iter().filter_map(|m| m.measured));
    let corrected_mean = match rules.o2_correction {
        O2Correction::PerMinute => mean(valid.iter().filter_map(|m| m.corrected(o2_ref))),
        O2Correction::HourlyMeans => {
            let o2 = mean(valid.iter().filter_map(|m| m.o2_dry));
            measured_mean.and_then(|c| o2_corrected(c, o2?, o2_ref))
        }
    };
    let over_range = valid.iter().any(|m| m.flag == DataFlag::T);
    let above = corrected_mean.is_some_and(|c| c > limit);
    let exceeded = ok
        && match rules.over_range {
            OverRange::MeanOnly => above,
            OverRange::AnyMinuteExceeds => above || over_range,
        };
    Hour {
        status,
        valid_minutes: n,
        stopped_minutes: stopped,
        excluded_minutes: minutes
            .iter()
            .filter(|m| m.flag != DataFlag::F && !m.counts(rules))
            .count(),
        measured_mean,
        corrected_mean,
        mass_kg_h: mean(valid.iter().filter_map(|m| m.mass_kg_h)),
        exceeded,
        over_range,
    }
}

/// How a unit's flue-gas flow meter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowBasis {
    /// Dry gas at standard state (标干流量, what the mass formula needs): used as it is.
    #[default]
    DryStandard,
    /// Wet gas at standard state: × (1 − X_sw).
    WetStandard,
    /// Wet gas at actual flue conditions (工况流量): × 273/(273 + t_s) × (Ba + Ps)/101325 × (1 − X_sw).
    WetActual,
}

/// A flow as reported → dry standard state, m3/h. `None` when an input it needs is missing or the
/// moisture is 100 % or more.
pub fn flow_to_dry_standard(
    q: f64,
    basis: FlowBasis,
    moisture_percent: Option<f64>,
    flue_temp_c: Option<f64>,
    ba_pa: f64,
    ps_pa: f64,
) -> Option<f64> {
    let dry = |q: f64| -> Option<f64> {
        let x = moisture_percent? / 100.0;
        (0.0..1.0).contains(&x).then_some(q * (1.0 - x))
    };
    match basis {
        FlowBasis::DryStandard => Some(q),
        FlowBasis::WetStandard => dry(q),
        FlowBasis::WetActual => {
            let t = flue_temp_c?;
            let p = ba_pa + ps_pa;
            if p <= 0.0 || t <= -273.0 {
                return None;
            }
            dry(q * 273.0 / (273.0 + t) * p / 101_325.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn oxygen_correction_at_6_9_and_20_9_percent() {
        // C_ref = C × (21 − 6)/(21 − O2): O2 = 6 → ×1; O2 = 9 → ×15/12 = 1.25; O2 = 20.9 → ×150.
        assert!(close(o2_corrected(20.0, 6.0, 6.0).unwrap(), 20.0));
        assert!(close(o2_corrected(20.0, 9.0, 6.0).unwrap(), 25.0));
        assert!(close(o2_corrected(20.0, 20.9, 6.0).unwrap(), 3000.0));
        assert_eq!(
            o2_corrected(20.0, 21.0, 6.0),
            None,
            "O2 at 21 % is a fault, not infinity"
        );
        assert_eq!(o2_corrected(20.0, 25.0, 6.0), None);
        assert_eq!(o2_corrected(20.0, f64::NAN, 6.0), None);
    }

    #[test]
    fn conversions_by_hand() {
        // NO 20 mg/m3 → 20 × 46/30 = 30.667 as NO2, plus NO2 5 → 35.667.
        assert!(close(nox_as_no2(20.0, 5.0), 20.0 * 46.0 / 30.0 + 5.0));
        // 10 % moisture: 18 wet → 20 dry.
        assert!(close(wet_to_dry(18.0, 10.0).unwrap(), 20.0));
        assert_eq!(wet_to_dry(18.0, 100.0), None);
        // 50 °C, Ba 101325 Pa, Ps 0: × 323/273.
        assert!(close(
            to_standard_state(27.3, 101_325.0, 0.0, 50.0).unwrap(),
            32.3
        ));
        // 30 mg/m3 × 1,100,000 m3/h × 1e-6 = 33 kg/h.
        assert!(close(mass_rate_kg_h(30.0, 1_100_000.0), 33.0));
    }

    fn m(flag: DataFlag, c: f64, o2: f64) -> Minute {
        Minute {
            measured: Some(c),
            o2_dry: Some(o2),
            mass_kg_h: Some(1.0),
            flag,
            inputs_valid: true,
        }
    }

    /// `n_valid` normal minutes then `n_other` flagged `other`, all at `c` with O2 at the reference
    /// (so corrected = measured).
    fn minutes(n_valid: usize, n_other: usize, other: DataFlag, c: f64) -> Vec<Minute> {
        let mut v = vec![m(DataFlag::N, c, 6.0); n_valid];
        v.extend(vec![m(other, c, 6.0); n_other]);
        v
    }

    fn rules() -> HourRules {
        HourRules::new(6.0)
    }

    #[test]
    fn an_hour_needs_45_valid_minutes() {
        let h = hour(&minutes(44, 16, DataFlag::C, 20.0), 35.0, &rules());
        assert_eq!((h.status, h.valid_minutes), (HourStatus::Invalid, 44));
        assert!(!h.exceeded);
        let h = hour(&minutes(45, 15, DataFlag::C, 20.0), 35.0, &rules());
        assert_eq!(
            (h.status, h.valid_minutes, h.corrected_mean),
            (HourStatus::Valid, 45, Some(20.0))
        );
        // A minute whose correction input (O2) is invalid does not count either.
        let mut v = minutes(50, 0, DataFlag::N, 20.0);
        for x in v.iter_mut().take(10) {
            x.inputs_valid = false;
        }
        let h = hour(&v, 35.0, &rules());
        assert_eq!(
            (h.status, h.valid_minutes, h.excluded_minutes),
            (HourStatus::Invalid, 40, 10)
        );
    }

    #[test]
    fn exceedance_is_strictly_above_the_limit() {
        assert!(!hour(&minutes(60, 0, DataFlag::N, 35.0), 35.0, &rules()).exceeded);
        assert!(hour(&minutes(60, 0, DataFlag::N, 35.01), 35.0, &rules()).exceeded);
    }

    #[test]
    fn over_range_minutes_by_rule() {
        // 50 normal minutes at 20 and 10 flagged T at 20: T minutes count (valid, 60), mean 20 < 35.
        let v = minutes(50, 10, DataFlag::T, 20.0);
        let h = hour(&v, 35.0, &rules());
        assert_eq!(
            (h.status, h.valid_minutes, h.over_range, h.exceeded),
            (HourStatus::Valid, 60, true, false)
        );
        let strict = HourRules {
            over_range: OverRange::AnyMinuteExceeds,
            ..rules()
        };
        assert!(hour(&v, 35.0, &strict).exceeded);
    }

    #[test]
    fn o2_correction_on_hourly_means_or_per_minute() {
        // SO2 30 all hour; O2 3 % for 30 minutes then 12 % for 30 (reference 6 %).
        // Per minute: 30 × 15/18 = 25 and 30 × 15/9 = 50 → mean 37.5 (> 35).
        // Hourly means: O2 mean 7.5 → 30 × 15/13.5 = 33.33 (≤ 35).
        let mut v = vec![m(DataFlag::N, 30.0, 3.0); 30];
        v.extend(vec![m(DataFlag::N, 30.0, 12.0); 30]);
        let h = hour(&v, 35.0, &rules());
        assert!(close(h.corrected_mean.unwrap(), 37.5));
        assert!(h.exceeded);
        let means = HourRules {
            o2_correction: O2Correction::HourlyMeans,
            ..rules()
        };
        let h = hour(&v, 35.0, &means);
        assert!(close(h.corrected_mean.unwrap(), 30.0 * 15.0 / 13.5));
        assert!(!h.exceeded);
    }

    #[test]
    fn a_stopped_hour_is_neither_valid_nor_exceeding() {
        let h = hour(&minutes(0, 60, DataFlag::F, 3000.0), 35.0, &rules());
        assert_eq!((h.status, h.exceeded), (HourStatus::Stopped, false));
        // With a unit whose excluded set omits F (configurable), the same minutes are valid.
        let keep_f = HourRules {
            excluded: vec![DataFlag::M],
            ..rules()
        };
        let h = hour(&minutes(0, 60, DataFlag::F, 3000.0), 35.0, &keep_f);
        assert_eq!((h.status, h.exceeded), (HourStatus::Valid, true));
    }

    #[test]
    fn a_half_stopped_hour_by_rule() {
        // 30 running minutes at 50 (limit 35), 30 flagged F.
        let v = minutes(30, 30, DataFlag::F, 50.0);
        let h = hour(&v, 35.0, &rules());
        assert_eq!((h.status, h.exceeded), (HourStatus::Invalid, false));
        let stopped = HourRules {
            partial_stop: PartialStop::Stopped,
            ..rules()
        };
        assert_eq!(hour(&v, 35.0, &stopped).status, HourStatus::Stopped);
        // Running minutes: 30 valid of 30 running ≥ 75 % → valid, and 50 > 35 → exceeded.
        let running = HourRules {
            partial_stop: PartialStop::RunningMinutes,
            ..rules()
        };
        let h = hour(&v, 35.0, &running);
        assert_eq!((h.status, h.exceeded), (HourStatus::Valid, true));
        // 22 valid of 30 running (73 %) is not enough; 23 (77 %) is.
        let mut v = minutes(22, 30, DataFlag::F, 50.0);
        v.extend(vec![m(DataFlag::C, 50.0, 6.0); 8]);
        assert_eq!(hour(&v, 35.0, &running).status, HourStatus::Invalid);
        v[30 + 22] = m(DataFlag::N, 50.0, 6.0);
        let mut v2 = minutes(23, 30, DataFlag::F, 50.0);
        v2.extend(vec![m(DataFlag::C, 50.0, 6.0); 7]);
        assert_eq!(hour(&v2, 35.0, &running).status, HourStatus::Valid);
    }

    #[test]
    fn flow_to_dry_standard_by_hand() {
        // Dry standard: as is. Wet standard, 10 % moisture: 1,000,000 → 900,000.
        let f = |b, m, t| flow_to_dry_standard(1_000_000.0, b, m, t, 101_325.0, 0.0);
        assert_eq!(f(FlowBasis::DryStandard, None, None), Some(1_000_000.0));
        assert!(close(
            f(FlowBasis::WetStandard, Some(10.0), None).unwrap(),
            900_000.0
        ));
        // Wet actual at 50 °C, 10 %: × 273/323 × 0.9 = 760,681.1…
        let v = f(FlowBasis::WetActual, Some(10.0), Some(50.0)).unwrap();
        assert!(close(v, 1_000_000.0 * 273.0 / 323.0 * 0.9));
        assert_eq!(f(FlowBasis::WetStandard, None, None), None);
    }
}
