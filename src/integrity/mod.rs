//! Data-integrity findings for CEMS: whether a unit's emission data can be believed, not only
//! whether it is under the limit.
//!
//! The rules (`rules.rs`) are pure functions over one unit's minute series: the raw channels as the
//! analysers report them, the values corrected to reference O2, the unit's load, flow, flue
//! temperature and velocity, and the data flags. Each is gated on the unit running as its physical
//! channels show it (load, or flow and flue temperature), never on the flags alone, because a flag
//! is one of the things that can be falsified. Baselines (the unit's O2 per load band, its flow per
//! MW, its calibration times) are medians over the series itself, so the manipulations the rules
//! look for, which cover a small share of a unit's history, do not move them.
//!
//! Every threshold is in [`Thresholds`], with its default and why it is there.

pub mod rules;

use serde::{Deserialize, Serialize};

pub use crate::alerts::rules::Severity;

/// The pollutants the rules look at, in the order of [`Minute::raw`] and [`Minute::corrected`].
pub const POLLUTANTS: [&str; 3] = ["SO2", "NOx", "PM"];

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// China Standard Time, for days and times of day (calibration schedules are local).
const CST_MS: i64 = 8 * HOUR_MS;

/// One minute of a unit (its start, epoch ms). A channel without data that minute is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Minute {
    pub ts_ms: i64,
    /// SO2, NOx, PM as the analysers report them, mg/m3.
    pub raw: [Option<f64>; 3],
    /// The same corrected to the unit's reference O2 (dry, standard state), mg/m3.
    pub corrected: [Option<f64>; 3],
    /// O2, % (dry).
    pub o2: Option<f64>,
    /// Flue-gas flow as reported, m3/h.
    pub flow: Option<f64>,
    /// Flue temperature, °C.
    pub temp: Option<f64>,
    /// Flue-gas velocity, m/s.
    pub velocity: Option<f64>,
    /// Moisture, %.
    pub moisture: Option<f64>,
    /// The unit's load, MW (its DCS or the logger's ST 44 power).
    pub load_mw: Option<f64>,
    /// Some channel carries F (停运, stopped) this minute.
    pub stopped: bool,
    /// Some channel carries C (校准, calibration) this minute.
    pub calibration: bool,
}

/// A daily window of minutes of the day (China Standard Time), `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_min: u32,
    pub end_min: u32,
}

impl Window {
    /// Whether minute of the day `m` is inside, widened by `slack` minutes each side.
    pub fn contains(&self, m: u32, slack: u32) -> bool {
        let day = 1440;
        let (s, e) = (
            (self.start_min + day - slack % day) % day,
            (self.end_min + slack) % day,
        );
        if s <= e {
            (s..e).contains(&m)
        } else {
            m >= s || m < e
        }
    }
}

/// What is known of a unit besides its data.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitFacts {
    pub id: String,
    pub capacity_mw: f64,
    /// Hourly limits, mg/m3 at reference O2, per pollutant in [`POLLUTANTS`] order.
    pub limits: [Option<f64>; 3],
    /// Analyser ranges (full scale), mg/m3.
    pub ranges: [f64; 3],
    /// Analysers' detection limits, mg/m3.
    pub detection_limits: [f64; 3],
    /// The stack cross-section surveyed at the monitoring point, m² (for velocity × area).
    pub stack_area_m2: Option<f64>,
    /// Declared calibration windows; empty: learned from the C flags in the series.
    pub calibration: Vec<Window>,
    /// Whether the reported flow is at dry standard state (标干); else actual, wet.
    pub flow_dry_standard: bool,
}

/// A site parameter a logger declared with a new value (HJ 212 CN 3020).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamChange {
    pub at_ms: i64,
    pub pol: String,
    pub code: String,
    pub before: Option<String>,
    pub after: String,
}

/// What the rules read: the unit, its minutes (oldest first, at most one per minute), the
/// parameter changes in the period, and the time the series is known up to (a gap at its end is a
/// gap only up to then).
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub unit: &'a UnitFacts,
    pub minutes: &'a [Minute],
    pub params: &'a [ParamChange],
    pub until_ms: i64,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub unit: String,
    pub rule: &'static str,
    /// The channel it is about (`SO2`, `O2`, `flue_flow`, a parameter code), or empty.
    pub channel: String,
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
    pub severity: Severity,
    pub evidence: serde_json::Value,
    pub summary_zh: String,
    pub summary_en: String,
}

/// Thresholds, per unit; every default is documented with why it is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Running when the load is at least this share of capacity (a coal unit's minimum stable
    /// load is 30–40 %; 20 % leaves start-up and shut-down ramps in). Default 0.2.
    pub running_load_share: f64,
    /// Without a load channel: running when the flow is at least this share of the unit's median
    /// positive flow. Default 0.3.
    pub running_flow_share: f64,
    /// … and the flue is at least this warm, °C. After wet desulphurisation a running unit's flue
    /// gas is 45–55 °C; a stopped stack cools to ambient. Default 40.
    pub running_temp_c: f64,
    /// `constant_value`: this many consecutive running minutes with the same value. Default 60.
    pub constant_minutes: usize,
    /// … "the same": within this much, mg/m3 (or %). Default 0 (identical as reported).
    pub constant_epsilon: f64,
    /// `narrow_band`: a day's range (1st to 99th percentile of running minutes) under this share
    /// of the analyser's range… Default 0.02.
    pub narrow_band_share: f64,
    /// … while the load's range (5th to 95th percentile) is at least this share of capacity.
    /// Default 0.2.
    pub narrow_load_swing_share: f64,
    /// … over at least this many running minutes of the day. Default 1080 (18 h).
    pub narrow_min_minutes: usize,
    /// `detection_limit_hugging`: a minute at or just above the detection limit is in
    /// [DL, DL × (1 + margin)]. Default 0.2.
    pub dl_margin: f64,
    /// … an hour hugs when this share of its running minutes do. Default 0.9.
    pub dl_hour_share: f64,
    /// … this many consecutive hugging hours. Default 4.
    pub dl_hours: usize,
    /// `limit_hugging`: a day's valid running hours, at least this many. Default 16.
    pub hug_min_hours: usize,
    /// … in [low × L, L): this share of them or more. Default 0.7.
    pub hug_share: f64,
    /// … the band's lower edge as a share of the limit (贴限: 0.8). Default 0.8.
    pub hug_low: f64,
    /// … and at most this share of them at or above L. Default 0.05.
    pub hug_above_max: f64,
    /// `o2_dilution`: an hour's O2 above its load band's median by this many robust standard
    /// deviations (1.4826 × MAD)… Default 4.
    pub o2_k: f64,
    /// … and by at least this many percentage points. Default 1.5.
    pub o2_min_excess: f64,
    /// … for this many consecutive running hours. Default 2.
    pub o2_hours: usize,
    /// … a load band (10 % of capacity) needs this many hours of history. Default 24.
    pub o2_min_band_hours: usize,
    /// `o2_dilution` step: O2 rising by this many points between the 10 minutes before and
    /// after… Default 1.5.
    pub o2_step: f64,
    /// … while a raw pollutant falls by this share, its corrected value staying in
    /// [hug_low × L, L). Default 0.2.
    pub o2_step_raw_drop: f64,
    /// `stopped_but_running`: this many consecutive minutes flagged stopped while running.
    /// Default 30.
    pub stopped_minutes: usize,
    /// `flow_inconsistent`: reported flow against velocity × area off by more than this share.
    /// Default 0.15.
    pub flow_area_tolerance: f64,
    /// … flow per MW outside the unit's median by more than this share. Default 0.25.
    pub flow_per_mw_tolerance: f64,
    /// … for this many consecutive running hours at ≥ 30 % load. Default 3.
    pub flow_hours: usize,
    /// `gap_before_exceedance`: a gap of at least this many minutes… Default 30.
    pub gap_minutes: usize,
    /// … after the last 15 minutes' corrected mean reached this share of the limit… Default 0.85.
    pub gap_rise_share: f64,
    /// … having risen by this factor over the hour before. Default 1.15.
    pub gap_rise_factor: f64,
    /// `calibration_outside_window`: C-flagged runs (or unflagged zero/span plateaus) of at least
    /// this many minutes. Default 3 (flagged), 5 for a plateau.
    pub cal_min_minutes: usize,
    /// … a run may start this many minutes outside its window. Default 15.
    pub cal_slack_minutes: u32,
    /// … the span gas as a share of the analyser's range (plateau detection). Default 0.8.
    pub cal_span_share: f64,
    /// … a learned window needs calibrations on this many days. Default 3.
    pub cal_learn_min_days: usize,
    /// `repeated_day`: compare each day with the days this far back. Default 7.
    pub repeated_lookback_days: usize,
    /// … at least this many running minutes compared. Default 600.
    pub repeated_min_minutes: usize,
    /// … this share of them equal (within `repeated_epsilon`). Default 0.9.
    pub repeated_share: f64,
    /// Default 1e-6 (equal as reported).
    pub repeated_epsilon: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            running_load_share: 0.2,
            running_flow_share: 0.3,
            running_temp_c: 40.0,
            constant_minutes: 60,
            constant_epsilon: 0.0,
            narrow_band_share: 0.02,
            narrow_load_swing_share: 0.2,
            narrow_min_minutes: 1080,
            dl_margin: 0.2,
            dl_hour_share: 0.9,
            dl_hours: 4,
            hug_min_hours: 16,
            hug_share: 0.7,
            hug_low: 0.8,
            hug_above_max: 0.05,
            o2_k: 4.0,
            o2_min_excess: 1.5,
            o2_hours: 2,
            o2_min_band_hours: 24,
            o2_step: 1.5,
            o2_step_raw_drop: 0.2,
            stopped_minutes: 30,
            flow_area_tolerance: 0.15,
            flow_per_mw_tolerance: 0.25,
            flow_hours: 3,
            gap_minutes: 30,
            gap_rise_share: 0.85,
            gap_rise_factor: 1.15,
            cal_min_minutes: 3,
            cal_slack_minutes: 15,
            cal_span_share: 0.8,
            cal_learn_min_days: 3,
            repeated_lookback_days: 7,
            repeated_min_minutes: 600,
            repeated_share: 0.9,
            repeated_epsilon: 1e-6,
        }
    }
}

/// Every rule id, as the API and the alerts name them.
pub const RULES: [&str; 11] = [
    "constant_value",
    "narrow_band",
    "detection_limit_hugging",
    "limit_hugging",
    "o2_dilution",
    "stopped_but_running",
    "flow_inconsistent",
    "gap_before_exceedance",
    "calibration_outside_window",
    "parameter_change",
    "repeated_day",
];

/// Every rule over `s`, findings ordered by start.
pub fn evaluate(s: &Series<'_>, th: &Thresholds) -> Vec<Finding> {
    let ctx = rules::Context::new(s, th);
    let mut out = Vec::new();
    out.extend(rules::constant_value(&ctx));
    out.extend(rules::narrow_band(&ctx));
    out.extend(rules::detection_limit_hugging(&ctx));
    out.extend(rules::limit_hugging(&ctx));
    out.extend(rules::o2_dilution(&ctx));
    out.extend(rules::stopped_but_running(&ctx));
    out.extend(rules::flow_inconsistent(&ctx));
    out.extend(rules::gap_before_exceedance(&ctx));
    out.extend(rules::calibration_outside_window(&ctx));
    out.extend(rules::parameter_change(&ctx));
    out.extend(rules::repeated_day(&ctx));
    out.sort_by(|a, b| (a.start_ms, a.rule).cmp(&(b.start_ms, b.rule)));
    out
}

/// The CST day (its start, epoch ms) of `ts_ms`.
pub fn cst_day(ts_ms: i64) -> i64 {
    (ts_ms + CST_MS).div_euclid(DAY_MS) * DAY_MS - CST_MS
}

/// Minute of the CST day.
pub fn cst_minute_of_day(ts_ms: i64) -> u32 {
    ((ts_ms + CST_MS).rem_euclid(DAY_MS) / MINUTE_MS) as u32
}

/// A time as China Standard Time, RFC 3339.
pub fn cst(ts_ms: i64) -> String {
    crate::standards::time::cst_rfc3339(ts_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight_and_widen() {
        let w = Window {
            start_min: 23 * 60 + 30,
            end_min: 30,
        };
        assert!(w.contains(0, 0));
        assert!(w.contains(23 * 60 + 45, 0));
        assert!(!w.contains(60, 0));
        assert!(w.contains(40, 15));
        let day = Window {
            start_min: 9 * 60,
            end_min: 9 * 60 + 30,
        };
        assert!(day.contains(9 * 60 + 10, 0));
        assert!(!day.contains(8 * 60 + 50, 0));
        assert!(day.contains(8 * 60 + 50, 15));
        assert!(!day.contains(10 * 60, 15));
    }

    #[test]
    fn cst_days_start_at_local_midnight() {
        // 2026-03-01T00:00:00+08:00 = 2026-02-28T16:00:00Z = 1772294400000.
        let midnight = 1_772_294_400_000;
        assert_eq!(cst_day(midnight), midnight);
        assert_eq!(cst_day(midnight + DAY_MS - 1), midnight);
        assert_eq!(
            cst_minute_of_day(midnight + 9 * HOUR_MS + 5 * MINUTE_MS),
            545
        );
    }
}
