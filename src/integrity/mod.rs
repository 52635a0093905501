//! Data-integrity findings for CEMS: whether a unit's emission data can be believed, not only
//! whether it is under the limit.
//!
//! The rules (`rules.rs`) are pure functions over one unit's minute series: the raw channels as the
//! analysers report them, the values corrected to reference O2, the unit's load, flow, flue
//! temperature and velocity, and the data flags. Each is gated on the unit running as its physical
//! channels show it (load; or flow and flue temperature, or ST 44 power), never on the flags alone,
//! because a flag is one of the things that can be falsified. Baselines (the unit's O2 per load band, its flow per
//! MW, its calibration times) are medians over the series itself, so the manipulations the rules
//! look for, which cover a small share of a unit's history, do not move them.
//!
//! Every threshold is in [`Thresholds`], with its default and why it is there; what a unit declares
//! is [`UnitIntegrity`]. The standards engine feeds the rules and keeps their findings
//! (`persist.rs`); `sim.rs` generates units with labelled manipulations and `eval.rs` measures the
//! rules on them (`enviromon integrity eval`).

pub mod eval;
pub mod persist;
pub mod rules;
pub mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// The unit's load, MW (its DCS, catalogue quantity `load`).
    pub load_mw: Option<f64>,
    /// Electricity use of the unit's production facilities (HJ 212-2025 ST 44, `d2xxxx` codes,
    /// summed), in the logger's unit: only compared with its own median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility_power: Option<f64>,
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
    /// Without a load channel, also running when the production facilities' electricity use
    /// (ST 44) is at least this share of its median positive value (fans and mills draw power
    /// only while the unit runs). Default 0.3.
    pub running_power_share: f64,
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
    /// … or, on a day the load is steady, under this share of the analyser's range: a running
    /// stack's own variation (coal, FGD and SCR control) leaves more than that at any load.
    /// Default 0.01.
    pub narrow_flat_share: f64,
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
            running_power_share: 0.3,
            constant_minutes: 60,
            constant_epsilon: 0.0,
            narrow_band_share: 0.02,
            narrow_load_swing_share: 0.2,
            narrow_flat_share: 0.01,
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

/// `[standards.integrity]`: whether and over what history the rules run, their thresholds, and what
/// each unit declares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Run the rules at all. Default true.
    pub enabled: bool,
    /// The minutes the rules look at: a unit is re-evaluated over this much history whenever its
    /// data changes (live, late or imported). Three weeks holds the `repeated_day` look-back and
    /// enough hours per load band for the O2 baseline. Default 21 days.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// A unit whose data changed is re-evaluated at most this often (each evaluation reads its
    /// whole history; minute data arrives once a minute). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Findings are kept this long after they end (they are the record an inspection reads).
    /// Default 400 days.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// The thresholds of every unit (each field documented with its default in [`Thresholds`]).
    pub thresholds: Thresholds,
    /// Per unit (by id): declarations and threshold overrides. They win, field by field, over
    /// the `integrity` table of the unit's registration (`seeds/units.toml`).
    pub units: BTreeMap<String, UnitIntegrity>,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            enabled: true,
            history: Duration::from_secs(21 * 86_400),
            interval: Duration::from_secs(60),
            keep: Duration::from_secs(400 * 86_400),
            thresholds: Thresholds::default(),
            units: BTreeMap::new(),
        }
    }
}

/// What a unit declares for the rules: in its registration (`[unit.integrity]` in
/// `seeds/units.toml`) and in the config (`standards.integrity.units.<id>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnitIntegrity {
    /// Daily calibration windows, China Standard Time, `"HH:MM-HH:MM"` (e.g. `"09:00-09:30"`).
    /// None declared: learned from the C flags of the unit's history.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<String>,
    /// The stack cross-section surveyed at the monitoring point, m² (for flow against velocity ×
    /// area). None: that check is off and only the flow per MW is checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_area_m2: Option<f64>,
    /// Analyser ranges (full scale), mg/m3, by pollutant (`SO2`, `NOx`, `PM`). Default 200, 200, 50.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, f64>,
    /// Analysers' detection limits, mg/m3, by pollutant. Default 3, 3, 0.5.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub detection_limits: BTreeMap<String, f64>,
    /// Threshold overrides for this unit, by [`Thresholds`] field name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, serde_json::Value>,
}

impl UnitIntegrity {
    pub fn is_empty(&self) -> bool {
        self == &UnitIntegrity::default()
    }

    /// `self` with `over`'s declarations on top, field by field.
    pub fn overlaid(&self, over: Option<&UnitIntegrity>) -> UnitIntegrity {
        let mut out = self.clone();
        let Some(o) = over else {
            return out;
        };
        if !o.calibration.is_empty() {
            out.calibration = o.calibration.clone();
        }
        if o.stack_area_m2.is_some() {
            out.stack_area_m2 = o.stack_area_m2;
        }
        out.ranges.extend(o.ranges.clone());
        out.detection_limits.extend(o.detection_limits.clone());
        out.thresholds.extend(o.thresholds.clone());
        out
    }

    /// Every problem with the declarations, as (field, message).
    pub fn problems(&self, base: &Thresholds) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, w) in self.calibration.iter().enumerate() {
            if let Err(e) = parse_window(w) {
                out.push((format!("calibration[{i}]"), e));
            }
        }
        if let Some(a) = self.stack_area_m2 {
            if !(a.is_finite() && a > 0.0) {
                out.push(("stack_area_m2".into(), format!("{a} must be above 0")));
            }
        }
        for (name, map) in [
            ("ranges", &self.ranges),
            ("detection_limits", &self.detection_limits),
        ] {
            for (k, v) in map {
                if !POLLUTANTS.contains(&k.as_str()) {
                    out.push((
                        format!("{name}.{k}"),
                        format!("{k:?} is not one of SO2, NOx, PM"),
                    ));
                } else if !(v.is_finite() && *v > 0.0) {
                    out.push((format!("{name}.{k}"), format!("{v} must be above 0")));
                }
            }
        }
        match self.thresholds(base) {
            Err(e) => out.push(("thresholds".into(), e)),
            Ok(th) => {
                for (f, m) in th.problems() {
                    if self.thresholds.contains_key(&f) {
                        out.push((format!("thresholds.{f}"), m));
                    }
                }
            }
        }
        out
    }

    /// `base` with this unit's overrides.
    pub fn thresholds(&self, base: &Thresholds) -> Result<Thresholds, String> {
        if self.thresholds.is_empty() {
            return Ok(base.clone());
        }
        let mut v = serde_json::to_value(base).map_err(|e| e.to_string())?;
        if let Some(obj) = v.as_object_mut() {
            for (k, x) in &self.thresholds {
                // TOML and env give 60 as 60.0 at times: a whole number becomes an integer, so
                // count fields take it.
                let x = match x.as_f64() {
                    Some(f) if f.fract() == 0.0 && (0.0..1e15).contains(&f) && !x.is_i64() => {
                        serde_json::Value::from(f as u64)
                    }
                    _ => x.clone(),
                };
                obj.insert(k.clone(), x);
            }
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The facts the rules read, for a unit of `capacity_mw` with `limits`.
    pub fn facts(
        &self,
        id: &str,
        capacity_mw: f64,
        limits: &BTreeMap<String, f64>,
        flow_dry_standard: bool,
    ) -> UnitFacts {
        let pick = |m: &BTreeMap<String, f64>, d: [f64; 3]| {
            let mut out = d;
            for (i, q) in POLLUTANTS.iter().enumerate() {
                if let Some(v) = m.get(*q) {
                    out[i] = *v;
                }
            }
            out
        };
        UnitFacts {
            id: id.to_string(),
            capacity_mw,
            limits: POLLUTANTS.map(|q| limits.get(q).copied()),
            ranges: pick(&self.ranges, DEFAULT_RANGES),
            detection_limits: pick(&self.detection_limits, DEFAULT_DETECTION_LIMITS),
            stack_area_m2: self.stack_area_m2,
            calibration: self
                .calibration
                .iter()
                .filter_map(|w| parse_window(w).ok())
                .collect(),
            flow_dry_standard,
        }
    }
}

/// Analyser ranges when none is declared, mg/m3 (SO2, NOx, PM): the ranges ultra-low-emission
/// units' extractive analysers are commonly set to.
pub const DEFAULT_RANGES: [f64; 3] = [200.0, 200.0, 50.0];
/// Detection limits when none is declared, mg/m3 (SO2, NOx, PM).
pub const DEFAULT_DETECTION_LIMITS: [f64; 3] = [3.0, 3.0, 0.5];

/// `"HH:MM-HH:MM"` (CST) as a [`Window`]; the end may be past midnight (`"23:30-00:30"`).
pub fn parse_window(s: &str) -> Result<Window, String> {
    let bad = || format!("{s:?} is not HH:MM-HH:MM");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (start_min, end_min) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    if start_min == end_min {
        return Err(format!("{s:?} is an empty window"));
    }
    Ok(Window { start_min, end_min })
}

impl Thresholds {
    /// Every field that cannot be a threshold (negative, not finite, a zero count), as
    /// (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in map {
            if v.is_u64() {
                if v.as_u64() == Some(0) && k != "cal_slack_minutes" {
                    out.push((k, "must be at least 1".into()));
                }
            } else if !v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) {
                out.push((k, format!("{v} must be a number ≥ 0")));
            }
        }
        out
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
    fn declarations_parse_and_every_problem_is_reported() {
        assert_eq!(
            parse_window("09:00-09:30"),
            Ok(Window {
                start_min: 540,
                end_min: 570
            })
        );
        assert_eq!(parse_window("23:30-00:30").map(|w| w.end_min), Ok(30));
        assert!(parse_window("9-10").is_err());
        assert!(parse_window("25:00-26:00").is_err());
        assert!(parse_window("10:00-10:00").is_err());
        let u: UnitIntegrity = toml::from_str(
            r#"calibration = ["09:00-09:30", "nine"]
               stack_area_m2 = -1
               ranges = { SO2 = 100.0, Hg = 1.0 }
               thresholds = { constant_minutes = 90, no_such = 1 }"#,
        )
        .unwrap();
        let fields: Vec<String> = u
            .problems(&Thresholds::default())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            ["calibration[1]", "stack_area_m2", "ranges.Hg", "thresholds"]
        );
        // Overrides apply field by field over the base, a whole number taken for a count.
        let ok: UnitIntegrity =
            toml::from_str("thresholds = { constant_minutes = 90.0, hug_share = 0.8 }").unwrap();
        let th = ok.thresholds(&Thresholds::default()).unwrap();
        assert_eq!((th.constant_minutes, th.hug_share), (90, 0.8));
        assert_eq!(th.gap_minutes, Thresholds::default().gap_minutes);
        // The config's declarations win over the registration's, field by field.
        let reg: UnitIntegrity = toml::from_str(
            r#"calibration = ["09:00-09:30"]
                              stack_area_m2 = 22.9"#,
        )
        .unwrap();
        let over: UnitIntegrity = toml::from_str("stack_area_m2 = 21.5").unwrap();
        let both = reg.overlaid(Some(&over));
        assert_eq!(both.stack_area_m2, Some(21.5));
        assert_eq!(both.calibration, ["09:00-09:30"]);
        let facts = both.facts("dt-1", 300.0, &BTreeMap::from([("SO2".into(), 35.0)]), true);
        assert_eq!(facts.limits, [Some(35.0), None, None]);
        assert_eq!(facts.ranges, DEFAULT_RANGES);
        assert_eq!(facts.calibration.len(), 1);
    }

    #[test]
    fn thresholds_that_cannot_be_are_named() {
        let th = Thresholds {
            hug_share: -0.1,
            constant_minutes: 0,
            o2_k: f64::NAN,
            ..Thresholds::default()
        };
        let mut fields: Vec<String> = th.problems().into_iter().map(|(f, _)| f).collect();
        fields.sort();
        assert_eq!(fields, ["constant_minutes", "hug_share", "o2_k"]);
        assert!(Thresholds::default().problems().is_empty());
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
