//! A generator of realistic coal-unit CEMS behaviour with labelled manipulations, for measuring
//! the integrity rules (`enviromon integrity eval`) and for the demo's history.
//!
//! Clean behaviour per unit: a daily load curve (72 % ± 22 % of capacity) with dispatch steps
//! (± 12 % of capacity over about ten minutes, a few times a day), some days at base load all day,
//! some burning low-sulphur coal; one shut-down and start-up every two weeks (a one-hour ramp down, a day or so stopped with
//! the flag F and the stack cooling to ambient, a four-hour ramp up with high O2); O2 rising as the
//! load falls; concentrations with analyser noise and slow drift; flow proportional to the load,
//! velocity consistent with the surveyed stack area; a daily calibration (flag C, span gas at 80 %
//! of the range) inside the unit's calibration window; now and then a few minutes lost to the
//! network.
//!
//! Manipulations (one kind per rule, realistic magnitudes, each labelled with its span):
//! a frozen analyser output; a day fed with a narrow synthetic band; hours at the detection limit;
//! a day held in [0.84 L, 0.97 L); air drawn into the sample line (O2 up 3–5 points, raw down);
//! F flags while the unit runs; flow under-reported by 40 %; values rising to the limit then data
//! withheld; a calibration (flagged, or an unflagged span plateau) in the afternoon; the stack
//! cross-section re-declared 40 % smaller (CN 3020); a day copied from an earlier one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};

use super::{cst_day, cst_minute_of_day, Minute, ParamChange, DAY_MS, MINUTE_MS, RULES};
use crate::reading::{DataFlag, Domain, Period, Reading, Source};
use crate::registry::EmissionUnit;

/// Deterministic noise (xorshift64 and Box–Muller): a seed gives the same data everywhere.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.max(1))
    }
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + ((hi - lo + 1) as f64 * self.uniform()).floor() as i64
    }
    pub fn gauss(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

pub(crate) fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Raw (measured, dry) from corrected at `o2`: HJ 75-2017 inverted, C = C_ref × (21 − O2)/(21 − 6).
pub(crate) fn raw_of(corrected: f64, o2: f64) -> f64 {
    corrected * (21.0 - o2) / 15.0
}

fn corrected_of(raw: f64, o2: f64) -> Option<f64> {
    (o2 < 21.0).then(|| raw * 15.0 / (21.0 - o2))
}

/// A unit as the generator sees it.
#[derive(Debug, Clone)]
pub struct SimUnit {
    pub id: String,
    pub site: String,
    pub sensor: String,
    pub capacity_mw: f64,
    /// The surveyed stack cross-section, m².
    pub stack_area_m2: f64,
    /// When the daily calibration starts, minute of the CST day.
    pub cal_start_min: u32,
    pub limits: [f64; 3],
    pub ranges: [f64; 3],
    pub detection_limits: [f64; 3],
}

impl SimUnit {
    /// From a registered unit and the sensor that carries its CEMS data: the declared calibration
    /// window (calibrating 5 minutes into its first one; none declared: 10:00) and stack area
    /// (none declared: 0.075 m² per MW, a flue velocity near 15 m/s at full load).
    pub fn from_unit(u: &EmissionUnit, sensor: &str) -> SimUnit {
        let facts = u.integrity.facts(&u.id, u.capacity_mw, &u.limits, true);
        SimUnit {
            id: u.id.clone(),
            site: u.site.clone(),
            sensor: sensor.to_string(),
            capacity_mw: u.capacity_mw,
            stack_area_m2: facts.stack_area_m2.unwrap_or(0.075 * u.capacity_mw),
            cal_start_min: facts
                .calibration
                .first()
                .map_or(600, |w| (w.start_min + 5) % 1440),
            limits: facts.limits.map(|l| l.unwrap_or(f64::INFINITY)),
            ranges: facts.ranges,
            detection_limits: facts.detection_limits,
        }
    }
}

/// A labelled manipulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub unit: String,
    pub rule: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub note: String,
}

/// One unit's generated data.
#[derive(Debug, Clone)]
pub struct UnitData {
    pub unit: SimUnit,
    /// Oldest first; minutes lost (network, withheld data) are absent.
    pub minutes: Vec<Minute>,
    pub params: Vec<ParamChange>,
}

/// The state of a unit's operation at a minute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    Stopped { since_min: i64 },
}

/// The days unit number `k` of a scenario shuts down on (at 22:00, for 30 hours, then four hours
/// of start-up): one every two weeks, each unit on its own day.
pub fn stop_days(k: usize, days: i64) -> Vec<i64> {
    let first = 3 + (k as i64 * 4) % 10;
    (0..)
        .map(|j| first + 14 * j)
        .take_while(|d| *d + 3 < days)
        .collect()
}

/// `days` of clean data for `u` from `t0` (a CST midnight), shutting down on `stops` (days).
pub fn clean(u: &SimUnit, t0: i64, days: i64, stops: &[i64], seed: u64) -> Vec<Minute> {
    let mut n = Noise::new(seed);
    let cap = u.capacity_mw;
    let total = days * 1440;
    let stops: Vec<(i64, i64)> = stops
        .iter()
        .map(|d| (d * 1440 + 22 * 60, d * 1440 + 22 * 60 + 30 * 60))
        .collect();
    let mut drift = [0.0f64; 3];
    let mut walk = 0.0f64;
    // Dispatch (AGC) moves the load in steps a few times a day.
    let mut dispatch = 0.0f64;
    let mut temp = 50.0f64;
    let mut out = Vec::with_capacity(total as usize);
    let mut lost: BTreeSet<i64> = BTreeSet::new();
    // Network blips: about three a week, 5–20 minutes each.
    for _ in 0..(days * 3 / 7).max(1) {
        let at = n.int(0, total - 30);
        let len = n.int(5, 20);
        lost.extend(at..at + len);
    }
    // Days that are hard on the rules and happen on clean units: base load all day (dispatch
    // off: a flat load, flat values), and low-sulphur coal (SO2 at under half its usual level).
    let kinds: Vec<(bool, bool)> = (0..days.max(1))
        .map(|_| (n.uniform() < 0.15, n.uniform() < 0.1))
        .collect();
    for i in 0..total {
        let ts = t0 + i * MINUTE_MS;
        let h = cst_minute_of_day(ts) as f64 / 60.0;
        let (base_load, low_sulphur) = kinds[(i / 1440) as usize % kinds.len()];
        if n.uniform() < 1.0 / 240.0 {
            dispatch = n.range(-0.12, 0.12);
        }
        walk = (walk + 0.08 * (dispatch - walk) + 0.004 * n.gauss()).clamp(-0.15, 0.15);
        let mut share = if base_load {
            0.85 + 0.01 * n.gauss()
        } else {
            (0.72 + 0.22 * (2.0 * std::f64::consts::PI * (h - 9.0) / 24.0).sin() + walk)
                .clamp(0.35, 1.0)
        };
        let mut phase = Phase::Running;
        let mut startup = false;
        for &(s, e) in &stops {
            if i >= s - 60 && i < s {
                share *= (s - i) as f64 / 60.0;
            } else if i >= s && i < e {
                phase = Phase::Stopped { since_min: i - s };
            } else if i >= e && i < e + 240 {
                startup = true;
                share = (0.5 * (i - e) as f64 / 240.0).max(0.05);
            }
        }
        for d in &mut drift {
            *d = 0.98 * *d + 0.3 * n.gauss();
        }
        let moisture = r2(12.0 + 0.3 * n.gauss());
        let mut m = match phase {
            Phase::Running => {
                let load = share * cap + 0.01 * cap * n.gauss();
                let o2 = if startup {
                    (18.0 - 12.0 * share / 0.5) + 0.3 * n.gauss()
                } else {
                    (6.0 + (1.0 - share) * 10.0).clamp(3.0, 15.0) + 0.2 * n.gauss()
                };
                temp += (50.0 - temp) * 0.05 + 0.2 * n.gauss();
                let corrected = [
                    ((18.0 + 6.0 * share) * if low_sulphur { 0.45 } else { 1.0 }
                        + 1.5 * n.gauss()
                        + drift[0])
                        .max(0.5),
                    (32.0 + 4.0 * n.gauss() + drift[1]).max(1.0),
                    (2.5 + 0.4 * n.gauss() + 0.1 * drift[2]).max(0.3),
                ];
                let flow = load.max(0.0) * 3700.0 * (1.0 + 0.01 * n.gauss());
                let k = 273.15 / (273.15 + temp) * (1.0 - moisture / 100.0);
                Minute {
                    ts_ms: ts,
                    raw: corrected.map(|c| Some(r2(raw_of(c, o2).max(0.0)))),
                    corrected: [None; 3],
                    o2: Some(r2(o2)),
                    flow: Some(flow.round()),
                    temp: Some(r2(temp)),
                    velocity: Some(r2(flow / (u.stack_area_m2 * 3600.0 * k))),
                    moisture: Some(moisture),
                    load_mw: Some(r2(load.max(0.0))),
                    facility_power: None,
                    stopped: startup && share < 0.2,
                    calibration: false,
                }
            }
            Phase::Stopped { since_min } => {
                // The stack cools to ambient (20 °C) over a few hours; fans idle.
                temp = 20.0 + 30.0 * (-(since_min as f64) / 180.0).exp() + 0.2 * n.gauss();
                Minute {
                    ts_ms: ts,
                    raw: [
                        Some(r2((1.0 + 0.3 * n.gauss()).max(0.0))),
                        Some(r2((2.0 + 0.5 * n.gauss()).max(0.0))),
                        Some(r2((0.3 + 0.1 * n.gauss()).max(0.0))),
                    ],
                    corrected: [None; 3],
                    o2: Some(r2(20.8 + 0.05 * n.gauss())),
                    flow: Some((cap * 60.0 * (1.0 + 0.2 * n.gauss())).max(0.0).round()),
                    temp: Some(r2(temp)),
                    velocity: Some(r2(0.2 + 0.05 * n.gauss())),
                    moisture: Some(moisture),
                    load_mw: Some(0.0),
                    facility_power: None,
                    stopped: true,
                    calibration: false,
                }
            }
        };
        // The daily calibration: span gas at 80 % of the range, flag C, 10 minutes.
        let mod_ = cst_minute_of_day(ts);
        if (u.cal_start_min..u.cal_start_min + 10).contains(&mod_) && phase == Phase::Running {
            m.calibration = true;
            m.raw[0] = Some(r2(0.8 * u.ranges[0] + 0.1 * n.gauss()));
            m.raw[1] = Some(r2(0.8 * u.ranges[1] + 0.1 * n.gauss()));
        }
        if !lost.contains(&i) {
            out.push(m);
        }
    }
    fill_corrected(&mut out);
    out
}

/// Corrected values from raw and O2 (a C or F minute too: the rules judge the data).
fn fill_corrected(ms: &mut [Minute]) {
    for m in ms {
        for p in 0..3 {
            m.corrected[p] = m.raw[p]
                .zip(m.o2)
                .and_then(|(r, o2)| corrected_of(r, o2))
                .map(r2);
        }
    }
}

/// A scenario: units, how many days, how many manipulations of each rule.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub t0_ms: i64,
    pub days: i64,
    /// Manipulations per rule (spread over the units); 0: clean data.
    pub per_rule: usize,
    pub seed: u64,
    /// Days at the start left clean (baselines, learned calibration windows).
    pub burn_in_days: i64,
    /// Units shut down and start up every two weeks.
    pub stops: bool,
    /// The rules manipulated; empty: every rule.
    pub rules: Vec<&'static str>,
}

/// The CST midnight `days` days before the one of `now_ms`.
pub fn days_before(now_ms: i64, days: i64) -> i64 {
    cst_day(now_ms) - days * DAY_MS
}

/// Generate `sc` for `units`: their data and the labels of what was done to it.
pub fn scenario(units: &[SimUnit], sc: &Scenario) -> (Vec<UnitData>, Vec<Label>) {
    let mut n = Noise::new(sc.seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let stops = |k: usize| {
        if sc.stops {
            stop_days(k, sc.days)
        } else {
            Vec::new()
        }
    };
    let mut data: Vec<UnitData> = units
        .iter()
        .enumerate()
        .map(|(k, u)| UnitData {
            unit: u.clone(),
            minutes: clean(
                u,
                sc.t0_ms,
                sc.days,
                &stops(k),
                sc.seed.wrapping_add(k as u64 * 7919),
            ),
            params: Vec::new(),
        })
        .collect();
    let mut labels = Vec::new();
    if sc.per_rule == 0 || units.is_empty() {
        return (data, labels);
    }
    // Days of a unit's stops (the stop, the stopped day, the start-up day).
    let stopped = |k: usize, d: i64| stops(k).iter().any(|s| d >= *s && d <= s + 2);
    // Free days per unit: after the burn-in, not around a stop, not the last day.
    let mut free: Vec<Vec<i64>> = (0..data.len())
        .map(|k| {
            (sc.burn_in_days..sc.days - 1)
                .filter(|d| !stopped(k, *d))
                .collect()
        })
        .collect();
    // Days a copy may come from: running all day and not manipulated.
    let mut clean_days: Vec<BTreeSet<i64>> = (0..data.len())
        .map(|k| (1..sc.days - 1).filter(|d| !stopped(k, *d)).collect())
        .collect();
    let mut k = 0usize;
    for round in 0..sc.per_rule {
        for rule in RULES
            .into_iter()
            .filter(|r| sc.rules.is_empty() || sc.rules.contains(r))
        {
            // Round-robin over the units, each manipulation on a day of its own.
            let mut placed = false;
            for attempt in 0..data.len() {
                let ui = (k + attempt) % data.len();
                if free[ui].is_empty() {
                    continue;
                }
                let pick = n.int(0, free[ui].len() as i64 - 1) as usize;
                let day = free[ui][pick];
                let source = (1..=6)
                    .map(|b| day - b)
                    .find(|s| clean_days[ui].contains(s));
                if rule == "repeated_day" {
                    let Some(src) = source else {
                        continue;
                    };
                    // The copied day stays as it was, or the copy would no longer match it.
                    free[ui].retain(|d| *d != src);
                }
                let Some(pick) = free[ui].iter().position(|d| *d == day) else {
                    continue;
                };
                free[ui].remove(pick);
                clean_days[ui].remove(&day);
                let l = manipulate(&mut data[ui], rule, day, sc, &clean_days[ui], &mut n);
                labels.push(l);
                placed = true;
                k = ui + 1;
                break;
            }
            if !placed {
                tracing::warn!(rule, round, "integrity scenario: no free day left");
            }
        }
    }
    for d in &mut data {
        d.minutes.sort_by_key(|m| m.ts_ms);
        fill_corrected(&mut d.minutes);
    }
    labels.sort_by(|a, b| (a.start_ms, &a.unit).cmp(&(b.start_ms, &b.unit)));
    (data, labels)
}

/// Apply one manipulation of `rule` on `day` of `d`; returns its label.
fn manipulate(
    d: &mut UnitData,
    rule: &'static str,
    day: i64,
    sc: &Scenario,
    clean_days: &BTreeSet<i64>,
    n: &mut Noise,
) -> Label {
    let u = d.unit.clone();
    let day_start = sc.t0_ms + day * DAY_MS;
    // Intraday manipulations start between 11:00 and 17:00 (clear of the calibration) and end
    // with their day (the next day may hold another).
    let day_end = day_start + DAY_MS;
    let start = day_start + (11 * 60 + n.int(0, 360)) * MINUTE_MS;
    let idx = |ms: &[Minute], from: i64, to: i64| -> Vec<usize> {
        ms.iter()
            .enumerate()
            .filter(|(_, m)| m.ts_ms >= from && m.ts_ms < to)
            .map(|(i, _)| i)
            .collect()
    };
    let label = |start_ms: i64, end_ms: i64, note: String| Label {
        unit: u.id.clone(),
        rule,
        start_ms,
        end_ms,
        note,
    };
    let ms = &mut d.minutes;
    match rule {
        "constant_value" => {
            let p = n.int(0, 2) as usize;
            let len = n.int(90, 360);
            let end = (start + len * MINUTE_MS).min(day_end);
            let len = (end - start) / MINUTE_MS;
            let span = idx(ms, start, end);
            let v = span.first().and_then(|&i| ms[i].raw[p]);
            for &i in &span {
                ms[i].raw[p] = v;
            }
            label(
                start,
                end,
                format!(
                    "{} frozen at {:?} for {len} min",
                    ["SO2", "NOx", "PM"][p],
                    v
                ),
            )
        }
        "narrow_band" => {
            let p = n.int(0, 1) as usize;
            let span = idx(ms, day_start, day_start + DAY_MS);
            let vals: Vec<f64> = span.iter().filter_map(|&i| ms[i].raw[p]).collect();
            let base = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
            let width = n.range(0.6, 1.6);
            for &i in &span {
                if !ms[i].calibration {
                    ms[i].raw[p] = Some(r2(base + width * (n.uniform() - 0.5)));
                }
            }
            label(
                day_start,
                day_start + DAY_MS,
                format!("{} fed a {width:.1} mg/m3 band", ["SO2", "NOx"][p]),
            )
        }
        "detection_limit_hugging" => {
            let p = n.int(0, 1) as usize;
            let len = n.int(6, 12) * 60;
            let end = (start + len * MINUTE_MS).min(day_end);
            let len = (end - start) / MINUTE_MS;
            let dl = u.detection_limits[p];
            for i in idx(ms, start, end) {
                ms[i].raw[p] = Some(r2(dl * (1.0 + 0.15 * n.uniform())));
            }
            label(
                start,
                end,
                format!(
                    "{} at {dl}–{:.2} for {len} min",
                    ["SO2", "NOx"][p],
                    dl * 1.15
                ),
            )
        }
        "limit_hugging" => {
            let p = 0;
            let l = u.limits[p];
            let mut level = n.range(0.86, 0.95);
            for i in idx(ms, day_start, day_start + DAY_MS) {
                if ms[i].calibration || ms[i].stopped {
                    continue;
                }
                level = (level + 0.002 * n.gauss()).clamp(0.84, 0.97);
                let c = l * (level + 0.01 * n.gauss());
                if let Some(o2) = ms[i].o2 {
                    ms[i].raw[p] = Some(r2(raw_of(c, o2)));
                }
            }
            label(
                day_start,
                day_start + DAY_MS,
                format!("SO2 held in [0.84, 0.97] × {l}"),
            )
        }
        "o2_dilution" => {
            let len = n.int(3, 6) * 60;
            let end = (start + len * MINUTE_MS).min(day_end);
            let dil = n.range(0.2, 0.3);
            for i in idx(ms, start, end) {
                if let Some(o2) = ms[i].o2 {
                    ms[i].o2 = Some(r2(o2 + dil * (20.9 - o2)));
                }
                for p in 0..3 {
                    ms[i].raw[p] = ms[i].raw[p].map(|r| r2(r * (1.0 - dil)));
                }
            }
            label(
                start,
                end,
                format!(
                    "air drawn into the sample line, {:.0} % dilution",
                    dil * 100.0
                ),
            )
        }
        "stopped_but_running" => {
            let len = n.int(60, 180);
            let end = (start + len * MINUTE_MS).min(day_end);
            let len = (end - start) / MINUTE_MS;
            for i in idx(ms, start, end) {
                ms[i].stopped = true;
            }
            label(start, end, format!("flagged F for {len} min while running"))
        }
        "flow_inconsistent" => {
            let len = n.int(6, 12) * 60;
            let end = (start + len * MINUTE_MS).min(day_end);
            let len = (end - start) / MINUTE_MS;
            for i in idx(ms, start, end) {
                ms[i].flow = ms[i].flow.map(|f| (f * 0.6).round());
            }
            label(start, end, format!("flow reported 40 % low for {len} min"))
        }
        "gap_before_exceedance" => {
            let p = 0;
            let l = u.limits[p];
            let rise = 45;
            let gap = n.int(60, 180);
            let gap_start = start + rise * MINUTE_MS;
            for (j, i) in idx(ms, start, gap_start).into_iter().enumerate() {
                let target = l * (0.6 + 0.45 * (j as f64 + 1.0) / rise as f64);
                if let Some(o2) = ms[i].o2 {
                    ms[i].raw[p] = Some(r2(raw_of(target, o2)));
                }
            }
            let gap_end = gap_start + gap * MINUTE_MS;
            ms.retain(|m| m.ts_ms < gap_start || m.ts_ms >= gap_end);
            label(
                start,
                gap_end,
                format!("SO2 rose to 1.05 × {l}, then {gap} min withheld"),
            )
        }
        "calibration_outside_window" => {
            let flagged = n.uniform() < 0.5;
            let len = if flagged { 10 } else { 8 };
            let end = (start + len * MINUTE_MS).min(day_end);
            for i in idx(ms, start, end) {
                ms[i].calibration = flagged;
                ms[i].raw[0] = Some(r2(0.8 * u.ranges[0] + 0.1 * n.gauss()));
            }
            label(
                start,
                end,
                format!(
                    "{} span check at {}",
                    if flagged { "flagged" } else { "unflagged" },
                    super::cst(start)
                ),
            )
        }
        "parameter_change" => {
            let after = r2(u.stack_area_m2 * 0.6);
            d.params.push(ParamChange {
                at_ms: start,
                pol: "a00000".into(),
                code: "i13004".into(),
                before: Some(format!("{}", u.stack_area_m2)),
                after: format!("{after}"),
            });
            label(
                start,
                start + MINUTE_MS,
                format!("stack area re-declared {} → {after} m²", u.stack_area_m2),
            )
        }
        _ => {
            // repeated_day: the nearest clean day before, copied minute for minute.
            let src = (1..=6)
                .map(|b| day - b)
                .find(|s| clean_days.contains(s))
                .unwrap_or(day - 1);
            let src_start = sc.t0_ms + src * DAY_MS;
            let copy: Vec<Minute> = ms
                .iter()
                .filter(|m| m.ts_ms >= src_start && m.ts_ms < src_start + DAY_MS)
                .map(|m| Minute {
                    ts_ms: m.ts_ms + (day - src) * DAY_MS,
                    ..*m
                })
                .collect();
            ms.retain(|m| m.ts_ms < day_start || m.ts_ms >= day_start + DAY_MS);
            ms.extend(copy);
            label(
                day_start,
                day_start + DAY_MS,
                format!("copied from {}", &super::cst(src_start)[..10]),
            )
        }
    }
}

/// The readings a data logger would send for `minutes` (minute means, `"period": "1min"`), as
/// `source`: SO2, NOx, PM (measured, dry, standard state), O2, flow, flue temperature, velocity,
/// moisture and load, each flagged C while calibrating (pollutants), F while stopped, else N.
/// `quantities`: only these (a sensor's channels), or all.
pub fn readings(
    u: &SimUnit,
    minutes: &[Minute],
    source: Source,
    quantities: Option<&[&str]>,
) -> Vec<Reading> {
    let mut out = Vec::with_capacity(minutes.len() * 9);
    let want = |q: &str| quantities.is_none_or(|qs| qs.contains(&q));
    for m in minutes {
        let Some(ts) = Utc.timestamp_millis_opt(m.ts_ms).single() else {
            continue;
        };
        let base = if m.stopped { DataFlag::F } else { DataFlag::N };
        let mut push = |q: &str, v: Option<f64>, unit: &str, flag: DataFlag| {
            if let Some(v) = v.filter(|_| want(q)) {
                out.push(Reading {
                    sensor: u.sensor.clone(),
                    site: u.site.clone(),
                    domain: Domain::Cems,
                    quantity: q.to_string(),
                    value: v,
                    unit: unit.to_string(),
                    ts,
                    flag,
                    source,
                    period: Period::Minute,
                    ts_assumed: false,
                });
            }
        };
        let pf = if m.calibration && !m.stopped {
            DataFlag::C
        } else {
            base
        };
        push("SO2", m.raw[0], "mg/m3", pf);
        push("NOx", m.raw[1], "mg/m3", pf);
        push("PM", m.raw[2], "mg/m3", base);
        push("O2", m.o2, "%", base);
        push("flue_flow", m.flow, "m3/h", base);
        push("flue_temp", m.temp, "degC", base);
        push("flue_velocity", m.velocity, "m/s", base);
        push("moisture", m.moisture, "%", base);
        push("load", m.load_mw, "MW", base);
    }
    out
}

/// A finding as scored: (unit, rule, start, end).
pub type Found = (String, String, i64, i64);

/// Per rule: (true findings, all findings, manipulations found, manipulations), and the
/// manipulations no finding matched.
pub type Scores = (
    BTreeMap<&'static str, (usize, usize, usize, usize)>,
    Vec<Label>,
);

/// A finding matches a label of its rule on its unit when their spans overlap, widened by
/// `slack_ms` (a finding's span is what the rule saw, which may start or end a little apart).
pub fn score(findings: &[(String, String, i64, i64)], labels: &[Label], slack_ms: i64) -> Scores {
    let mut s: BTreeMap<&'static str, (usize, usize, usize, usize)> =
        RULES.iter().map(|r| (*r, (0, 0, 0, 0))).collect();
    let mut missed = Vec::new();
    let overlaps = |f: &Found, l: &Label| {
        f.0 == l.unit && f.1 == l.rule && f.2 < l.end_ms + slack_ms && f.3 > l.start_ms - slack_ms
    };
    for f in findings {
        if let Some(e) = RULES.iter().find(|r| **r == f.1).and_then(|r| s.get_mut(r)) {
            e.1 += 1;
            if labels.iter().any(|l| overlaps(f, l)) {
                e.0 += 1;
            }
        }
    }
    for l in labels {
        if let Some(e) = s.get_mut(l.rule) {
            e.3 += 1;
            if findings.iter().any(|f| overlaps(f, l)) {
                e.2 += 1;
            } else {
                missed.push(l.clone());
            }
        }
    }
    (s, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> SimUnit {
        SimUnit {
            id: "dt-1".into(),
            site: "datang".into(),
            sensor: "dt-1-cems".into(),
            capacity_mw: 300.0,
            stack_area_m2: 22.9,
            cal_start_min: 545,
            limits: [35.0, 50.0, 10.0],
            ranges: [200.0, 200.0, 50.0],
            detection_limits: [3.0, 3.0, 0.5],
        }
    }

    #[test]
    fn a_scenario_labels_one_manipulation_per_rule_on_days_of_their_own() {
        let sc = Scenario {
            t0_ms: 1_772_294_400_000,
            days: 21,
            per_rule: 1,
            seed: 1,
            burn_in_days: 5,
            stops: true,
            rules: Vec::new(),
        };
        let units = [
            unit(),
            SimUnit {
                id: "dt-2".into(),
                ..unit()
            },
        ];
        let (data, labels) = scenario(&units, &sc);
        assert_eq!(labels.len(), RULES.len());
        let rules: BTreeSet<&str> = labels.iter().map(|l| l.rule).collect();
        assert_eq!(rules.len(), RULES.len());
        // One manipulation per unit-day, none in the burn-in.
        let days: BTreeSet<(String, i64)> = labels
            .iter()
            .map(|l| (l.unit.clone(), (l.start_ms - sc.t0_ms).div_euclid(DAY_MS)))
            .collect();
        assert_eq!(days.len(), labels.len());
        assert!(days.iter().all(|(_, d)| *d >= sc.burn_in_days));
        // Minutes stay ordered and unique; the withheld ones are gone.
        for d in &data {
            assert!(d.minutes.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        }
        let gap = labels
            .iter()
            .find(|l| l.rule == "gap_before_exceedance")
            .unwrap();
        let d = data.iter().find(|d| d.unit.id == gap.unit).unwrap();
        let withheld = d
            .minutes
            .iter()
            .filter(|m| m.ts_ms >= gap.start_ms + 45 * MINUTE_MS && m.ts_ms < gap.end_ms)
            .count();
        assert_eq!(withheld, 0);
        // The re-declared stack area is 60 % of the surveyed one.
        let p = data.iter().flat_map(|d| &d.params).next().unwrap();
        assert_eq!(
            (p.before.as_deref(), p.after.as_str()),
            (Some("22.9"), "13.74")
        );
    }

    #[test]
    fn readings_carry_the_flags_of_calibration_and_stops() {
        let ms = clean(&unit(), 1_772_294_400_000, 3, &[0], 3);
        let rs = readings(&unit(), &ms, Source::Import, Some(&["SO2", "PM"]));
        assert!(rs.iter().all(|r| r.quantity == "SO2" || r.quantity == "PM"));
        let cal = rs
            .iter()
            .filter(|r| r.flag == DataFlag::C)
            .map(|r| r.quantity.as_str())
            .collect::<BTreeSet<_>>();
        // The span check is on the gas analysers, not on PM.
        assert_eq!(cal, BTreeSet::from(["SO2"]));
        assert!(rs.iter().any(|r| r.flag == DataFlag::F));
        // Day 0 22:00 (CST) stops: 30 hours flagged F, then F while the start-up's load is under
        // 20 % of capacity (load 0.5 × t/240 of it: the first 96 minutes); a network blip (at
        // most 20 minutes) may fall in it.
        let stopped = ms.iter().filter(|m| m.stopped).count();
        assert!(
            (30 * 60 + 96 - 20..=30 * 60 + 96).contains(&stopped),
            "{stopped}"
        );
    }
}
