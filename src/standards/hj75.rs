//! Flue-gas CEMS data (HJ 75-2017 / HJ 76-2017, GB 13223-2011): conversions, validity, hourly means,
//! exceedance and mass emission.
//!
//! Formulas (`standards.md` §3):
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
//! T (over range) is valid and counts as exceeding. An hourly mean is valid with ≥ 45 valid minutes
//! (HJ 75-2017 as quoted in `standards.md`; the helper's search found no primary text to confirm
//! the number, so it is the reference's). An hour with ≥ 45 minutes flagged F is a stopped hour.

use serde::Serialize;

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

/// One minute of one pollutant, already corrected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minute {
    /// Measured (dry, standard state) concentration.
    pub measured: Option<f64>,
    /// Corrected to reference O2.
    pub corrected: Option<f64>,
    /// Mass rate, kg/h (needs the flow).
    pub mass_kg_h: Option<f64>,
    pub flag: DataFlag,
}

/// Status of an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HourStatus {
    /// ≥ 45 valid minutes.
    Valid,
    /// The unit was stopped (≥ 45 minutes flagged F).
    Stopped,
    /// Too few valid minutes (maintenance, calibration, fault, gaps).
    Invalid,
}

/// The hourly result for one pollutant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hour {
    pub status: HourStatus,
    pub valid_minutes: usize,
    pub measured_mean: Option<f64>,
    pub corrected_mean: Option<f64>,
    pub mass_kg_h: Option<f64>,
    /// Valid and above the limit (strictly).
    pub exceeded: bool,
    /// Some valid minute was flagged T (over range).
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

/// Aggregate an hour of minutes against `limit` (mg/m3 at reference O2).
pub fn hour(minutes: &[Minute], limit: Option<f64>, excluded: &[DataFlag]) -> Hour {
    let valid: Vec<&Minute> = minutes
        .iter()
        .filter(|m| !excluded.contains(&m.flag) && m.corrected.is_some())
        .collect();
    let stopped = minutes.iter().filter(|m| m.flag == DataFlag::F).count() >= MIN_VALID_MINUTES;
    let status = if valid.len() >= MIN_VALID_MINUTES {
        HourStatus::Valid
    } else if stopped {
        HourStatus::Stopped
    } else {
        HourStatus::Invalid
    };
    let ok = status == HourStatus::Valid;
    let corrected_mean = mean(valid.iter().filter_map(|m| m.corrected));
    let over_range = valid.iter().any(|m| m.flag == DataFlag::T);
    Hour {
        status,
        valid_minutes: valid.len(),
        measured_mean: mean(valid.iter().filter_map(|m| m.measured)),
        corrected_mean,
        mass_kg_h: mean(valid.iter().filter_map(|m| m.mass_kg_h)),
        exceeded: ok
            && (over_range || matches!((corrected_mean, limit), (Some(c), Some(l)) if c > l)),
        over_range,
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

    fn minutes(n_valid: usize, n_other: usize, other: DataFlag, corrected: f64) -> Vec<Minute> {
        let m = |flag| Minute {
            measured: Some(corrected),
            corrected: Some(corrected),
            mass_kg_h: Some(1.0),
            flag,
        };
        let mut v = vec![m(DataFlag::N); n_valid];
        v.extend(vec![m(other); n_other]);
        v
    }

    #[test]
    fn an_hour_needs_45_valid_minutes() {
        let h = hour(
            &minutes(44, 16, DataFlag::C, 20.0),
            Some(35.0),
            &DEFAULT_EXCLUDED,
        );
        assert_eq!((h.status, h.valid_minutes), (HourStatus::Invalid, 44));
        assert!(!h.exceeded);
        let h = hour(
            &minutes(45, 15, DataFlag::C, 20.0),
            Some(35.0),
            &DEFAULT_EXCLUDED,
        );
        assert_eq!(
            (h.status, h.valid_minutes, h.corrected_mean),
            (HourStatus::Valid, 45, Some(20.0))
        );
    }

    #[test]
    fn exceedance_is_strictly_above_the_limit_and_over_range_counts() {
        assert!(
            !hour(
                &minutes(60, 0, DataFlag::N, 35.0),
                Some(35.0),
                &DEFAULT_EXCLUDED
            )
            .exceeded
        );
        assert!(
            hour(
                &minutes(60, 0, DataFlag::N, 35.01),
                Some(35.0),
                &DEFAULT_EXCLUDED
            )
            .exceeded
        );
        // 50 normal minutes at 20 and 10 flagged T: T minutes are valid and the hour exceeds.
        let h = hour(
            &minutes(50, 10, DataFlag::T, 20.0),
            Some(35.0),
            &DEFAULT_EXCLUDED,
        );
        assert_eq!(
            (h.status, h.valid_minutes, h.over_range, h.exceeded),
            (HourStatus::Valid, 60, true, true)
        );
    }

    #[test]
    fn a_stopped_hour_is_neither_valid_nor_exceeding() {
        let h = hour(
            &minutes(0, 60, DataFlag::F, 3000.0),
            Some(35.0),
            &DEFAULT_EXCLUDED,
        );
        assert_eq!((h.status, h.exceeded), (HourStatus::Stopped, false));
        // With a unit whose excluded set omits F (configurable), the same minutes are valid.
        let h = hour(
            &minutes(0, 60, DataFlag::F, 3000.0),
            Some(35.0),
            &[DataFlag::M],
        );
        assert_eq!((h.status, h.exceeded), (HourStatus::Valid, true));
    }
}
