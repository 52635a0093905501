//! Every rule with hand-built series: one that must fire, one near miss that must not. The clean
//! series is a 300 MW unit following a daily load curve, with analyser noise and a daily
//! calibration inside its declared window (09:00–09:30); each test changes only what it names.

use super::super::sim::{r2, raw_of, Noise};
use super::super::*;

/// 2026-03-02T00:00:00+08:00 (1772294400000 is 2026-03-01 00:00 CST; one day later).
const T0: i64 = 1_772_294_400_000 + DAY_MS;

fn facts() -> UnitFacts {
    UnitFacts {
        id: "dt-1".into(),
        capacity_mw: 300.0,
        limits: [Some(35.0), Some(50.0), Some(10.0)],
        ranges: [200.0, 200.0, 50.0],
        detection_limits: [3.0, 3.0, 0.5],
        stack_area_m2: Some(6.06),
        calibration: vec![Window {
            start_min: 9 * 60,
            end_min: 9 * 60 + 30,
        }],
        flow_dry_standard: true,
    }
}

/// One clean minute at `ts` with load `load` MW.
fn minute(n: &mut Noise, ts: i64, load: f64) -> Minute {
    let share = load / 300.0;
    let o2 = 6.0 + (1.0 - share) * 5.0 + 0.2 * n.gauss();
    let corrected = [
        18.0 + 6.0 * share + 1.5 * n.gauss(),
        32.0 + 4.0 * n.gauss(),
        2.5 + 0.4 * n.gauss(),
    ];
    let temp = 50.0 + 1.0 * n.gauss();
    let moisture = 12.0;
    let flow = load * 3700.0 * (1.0 + 0.01 * n.gauss());
    let k = 273.15 / (273.15 + temp) * (1.0 - moisture / 100.0);
    Minute {
        ts_ms: ts,
        raw: corrected.map(|c| Some(r2(raw_of(c, o2).max(0.0)))),
        corrected: corrected.map(|c| Some(r2(c.max(0.0)))),
        o2: Some(r2(o2)),
        flow: Some(flow.round()),
        temp: Some(r2(temp)),
        velocity: Some(r2(flow / (6.06 * 3600.0 * k))),
        moisture: Some(moisture),
        load_mw: Some(r2(load)),
        facility_power: None,
        stopped: false,
        calibration: false,
    }
}

fn load_at(ts: i64, n: &mut Noise) -> f64 {
    let h = cst_minute_of_day(ts) as f64 / 60.0;
    300.0 * (0.72 + 0.22 * (2.0 * std::f64::consts::PI * (h - 9.0) / 24.0).sin()) + 3.0 * n.gauss()
}

/// `days` clean days from T0, calibrating 09:05–09:15 every day (flag C, span gas 160 on SO2).
fn clean(days: i64) -> Vec<Minute> {
    let mut n = Noise::new(0x9E37_79B9_7F4A_7C15);
    (0..days * 1440)
        .map(|i| {
            let ts = T0 + i * MINUTE_MS;
            let load = load_at(ts, &mut n);
            let mut m = minute(&mut n, ts, load);
            let mod_ = cst_minute_of_day(ts);
            if (9 * 60 + 5..9 * 60 + 15).contains(&mod_) {
                m.calibration = true;
                m.raw[0] = Some(160.0 + 0.1 * n.gauss());
            }
            m
        })
        .collect()
}

fn run(minutes: &[Minute], params: &[ParamChange]) -> Vec<Finding> {
    run_with(minutes, params, &facts())
}

fn run_with(minutes: &[Minute], params: &[ParamChange], unit: &UnitFacts) -> Vec<Finding> {
    let until = minutes.last().map(|m| m.ts_ms + MINUTE_MS).unwrap_or(T0);
    let s = Series {
        unit,
        minutes,
        params,
        until_ms: until,
    };
    evaluate(&s, &Thresholds::default())
}

fn of<'a>(f: &'a [Finding], rule: &str) -> Vec<&'a Finding> {
    f.iter().filter(|x| x.rule == rule).collect()
}

/// Index of the minute at day `d` (from T0), hour `h`, minute `m` (CST).
fn at(d: i64, h: i64, m: i64) -> usize {
    (d * 1440 + h * 60 + m) as usize
}

#[test]
fn clean_week_has_no_findings() {
    let m = clean(7);
    let f = run(&m, &[]);
    assert!(f.is_empty(), "clean data gave findings: {f:#?}");
}

#[test]
fn constant_value_fires_at_60_identical_minutes_not_59() {
    for (len, fires) in [(60, true), (59, false)] {
        let mut m = clean(3);
        for x in &mut m[at(1, 13, 0)..at(1, 13, 0) + len] {
            x.raw[1] = Some(31.7);
        }
        let f = run(&m, &[]);
        let hits = of(&f, "constant_value");
        assert_eq!(hits.len(), usize::from(fires), "{len} minutes: {hits:#?}");
        if fires {
            assert_eq!(hits[0].channel, "NOx");
            assert_eq!(hits[0].start_ms, m[at(1, 13, 0)].ts_ms);
            assert_eq!(hits[0].end_ms, m[at(1, 14, 0)].ts_ms);
            assert_eq!(hits[0].evidence["minutes"], 60);
        }
    }
}

#[test]
fn narrow_band_fires_while_the_load_moves_and_on_a_steady_load_only_when_narrower() {
    // Day 1: SO2 replaced by 15 ± 0.7 (1st–99th percentile range ≈ 4.65 × 0.7 = 3.3: under 2 % of
    // 200 = 4, over 1 % = 2).
    let narrowed = |flat_load: bool| narrowed_by(0.7, flat_load);
    let f = run(&narrowed(false), &[]);
    let hits = of(&f, "narrow_band");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].channel, "SO2");
    assert_eq!(hits[0].start_ms, T0 + DAY_MS);
    // The load's 5th–95th percentile swing of the clean curve is ≈ 0.44 × 300 × 0.95 ≫ 60 MW.
    assert!(hits[0].evidence["load_swing_mw"].as_f64().unwrap() > 60.0);
    // Near miss: the same band on a day the load does not move either (steady load, 3.3 > 2).
    let f = run(&narrowed(true), &[]);
    assert!(of(&f, "narrow_band").is_empty());
    // At a steady load, 15 ± 0.3 (range ≈ 1.4 < 2) is too narrow for any load.
    let f = run(&narrowed_by(0.3, true), &[]);
    let hits = of(&f, "narrow_band");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].evidence["allowed"], 2.0);
    assert!(
        hits[0].summary_en.contains("steady load"),
        "{}",
        hits[0].summary_en
    );
}

/// Three clean days with day 1's SO2 replaced by 15 ± `sd`, and the load flat at 225 MW that
/// day when `flat_load`.
fn narrowed_by(sd: f64, flat_load: bool) -> Vec<Minute> {
    {
        let mut m = clean(3);
        let mut n = Noise::new(7);
        for x in &mut m[at(1, 0, 0)..at(2, 0, 0)] {
            if !x.calibration {
                x.raw[0] = Some(r2(15.0 + sd * n.gauss()));
            }
            if flat_load {
                x.load_mw = Some(225.0);
            }
        }
        m
    }
}

#[test]
fn detection_limit_hugging_fires_at_four_hours_not_three() {
    for (hours, fires) in [(4, true), (3, false)] {
        let mut m = clean(2);
        let mut n = Noise::new(11);
        // SO2 at 3.0–3.5 (DL 3, band up to 3.6).
        for x in &mut m[at(1, 12, 0)..at(1, 12, 0) + hours * 60] {
            x.raw[0] = Some(r2(3.0 + 0.5 * n.uniform()));
        }
        let f = run(&m, &[]);
        let hits = of(&f, "detection_limit_hugging");
        assert_eq!(hits.len(), usize::from(fires), "{hours} h: {hits:#?}");
        if fires {
            assert_eq!(hits[0].end_ms - hits[0].start_ms, 4 * HOUR_MS);
        }
    }
}

#[test]
fn limit_hugging_fires_when_almost_none_are_above() {
    // Day 1: SO2 corrected 29–34 every hour (in [28, 35)); near miss: 3 of 24 hours at 36
    // (12.5 % above the limit, more than 5 %).
    for (above, fires) in [(0, true), (3, false)] {
        let mut m = clean(3);
        let mut n = Noise::new(5);
        for (i, x) in m[at(1, 0, 0)..at(2, 0, 0)].iter_mut().enumerate() {
            let hour = i / 60;
            let v = if hour < above {
                36.0
            } else {
                31.5 + n.uniform() * 2.0
            };
            x.corrected[0] = Some(v);
        }
        let f = run(&m, &[]);
        let hits = of(&f, "limit_hugging");
        assert_eq!(hits.len(), usize::from(fires), "{above} above: {hits:#?}");
        if fires {
            assert_eq!(hits[0].evidence["hours_above"], 0);
            assert_eq!(hits[0].start_ms, T0 + DAY_MS);
        }
    }
}

#[test]
fn o2_dilution_fires_above_the_band_for_the_load() {
    // Day 5, 14:00–17:00: O2 + 4 points (air in the sample line: raw falls as (21 − O2)).
    // Near miss: + 1.2 points (under the 1.5-point floor).
    for (excess, fires) in [(4.0, true), (1.2, false)] {
        let mut m = clean(7);
        for x in &mut m[at(5, 14, 0)..at(5, 17, 0)] {
            let o2 = x.o2.unwrap() + excess;
            for p in 0..3 {
                x.raw[p] = x.raw[p].map(|r| r2(r * (21.0 - o2) / (21.0 - x.o2.unwrap())));
            }
            x.o2 = Some(r2(o2));
        }
        let f = run(&m, &[]);
        let hits = of(&f, "o2_dilution");
        assert_eq!(!hits.is_empty(), fires, "{excess}: {hits:#?}");
        if fires {
            assert!(hits.iter().any(|h| h.channel == "O2"
                && h.start_ms == m[at(5, 14, 0)].ts_ms
                && h.end_ms == m[at(5, 17, 0)].ts_ms));
        }
    }
}

#[test]
fn o2_dilution_fires_on_a_step_with_the_raw_value_falling_under_the_limit() {
    // 30 minutes: O2 + 2.5 points, raw SO2 down 40 %, corrected kept at 32 (in [28, 35)).
    let mut m = clean(3);
    for x in &mut m[at(1, 15, 0)..at(1, 15, 30)] {
        x.o2 = Some(x.o2.unwrap() + 2.5);
        x.raw[0] = Some(r2(x.raw[0].unwrap() * 0.6));
        x.corrected[0] = Some(32.0);
    }
    let f = run(&m, &[]);
    let hits = of(&f, "o2_dilution");
    assert!(
        hits.iter().any(|h| h.channel == "SO2"
            && h.start_ms <= m[at(1, 15, 0)].ts_ms
            && h.end_ms > m[at(1, 15, 0)].ts_ms),
        "{hits:#?}"
    );
    // Near miss: the same O2 step with the raw value unchanged (a real change of excess air).
    let mut m = clean(3);
    for x in &mut m[at(1, 15, 0)..at(1, 15, 30)] {
        x.o2 = Some(x.o2.unwrap() + 2.5);
    }
    assert!(of(&run(&m, &[]), "o2_dilution").is_empty());
}

#[test]
fn stopped_but_running_fires_at_30_minutes_and_not_for_a_real_stop() {
    for (len, fires) in [(30, true), (29, false)] {
        let mut m = clean(2);
        for x in &mut m[at(1, 10, 0)..at(1, 10, 0) + len] {
            x.stopped = true;
        }
        let hits = of(&run(&m, &[]), "stopped_but_running").len();
        assert_eq!(hits, usize::from(fires), "{len} minutes");
    }
    // A real stop: F with no load, no flow and a cold stack, for two hours.
    let mut m = clean(2);
    for x in &mut m[at(1, 10, 0)..at(1, 12, 0)] {
        x.stopped = true;
        x.load_mw = Some(0.0);
        x.flow = Some(0.0);
        x.temp = Some(28.0);
        x.velocity = Some(0.0);
    }
    assert!(of(&run(&m, &[]), "stopped_but_running").is_empty());
    // Without a load channel, flow and flue temperature decide.
    let mut m = clean(2);
    for x in &mut m {
        x.load_mw = None;
    }
    for x in &mut m[at(1, 10, 0)..at(1, 11, 0)] {
        x.stopped = true;
    }
    let f = run(&m, &[]);
    let hits = of(&f, "stopped_but_running");
    assert_eq!(hits.len(), 1);
    assert!(hits[0].evidence["load_mw"].is_null());
}

#[test]
fn flow_inconsistent_fires_on_a_declared_area_of_3_5_instead_of_6_06() {
    // The logger computes flow with 3.5 m² instead of 6.06: the flow reads 3.5/6.06 = 57.8 %.
    let mut m = clean(3);
    for x in &mut m[at(2, 10, 0)..at(2, 14, 0)] {
        x.flow = x.flow.map(|f| (f * 3.5 / 6.06).round());
    }
    let f = run(&m, &[]);
    let hits = of(&f, "flow_inconsistent");
    assert!(hits.len() >= 2, "{hits:#?}");
    let area = hits
        .iter()
        .find(|h| h.evidence.get("reported_over_velocity_area").is_some())
        .unwrap();
    let k = area.evidence["reported_over_velocity_area"]
        .as_f64()
        .unwrap();
    assert!((k - 3.5 / 6.06).abs() < 0.02, "{k}");
    let per_mw = hits
        .iter()
        .find(|h| h.evidence.get("flow_per_mw").is_some())
        .unwrap();
    assert_eq!(per_mw.start_ms, m[at(2, 10, 0)].ts_ms);
    assert_eq!(per_mw.end_ms, m[at(2, 14, 0)].ts_ms);
    // Near miss: 10 % low (inside both tolerances, 15 % and 25 %).
    let mut m = clean(3);
    for x in &mut m[at(2, 10, 0)..at(2, 14, 0)] {
        x.flow = x.flow.map(|f| (f * 0.9).round());
    }
    assert!(of(&run(&m, &[]), "flow_inconsistent").is_empty());
}

#[test]
fn gap_before_exceedance_fires_after_a_rise_not_after_ordinary_values() {
    // SO2 corrected 18 for an hour, then 32 for 15 minutes (≥ 0.85 × 35 = 29.75, ≥ 1.15 × 18),
    // then `gap` minutes missing.
    let build = |rise: bool, gap: usize| {
        let mut m = clean(2);
        let end = at(1, 14, 0);
        for (k, x) in m[end - 75..end].iter_mut().enumerate() {
            x.corrected[0] = Some(if rise && k >= 60 { 32.0 } else { 18.0 });
        }
        m.drain(end..end + gap);
        m
    };
    let f = run(&build(true, 40), &[]);
    let hits = of(&f, "gap_before_exceedance");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].channel, "SO2");
    assert_eq!(hits[0].evidence["gap_minutes"], 40);
    assert_eq!(hits[0].start_ms, T0 + DAY_MS + 14 * HOUR_MS);
    // Near misses: a 29-minute gap after the rise; a 40-minute gap after ordinary values.
    assert!(of(&run(&build(true, 29), &[]), "gap_before_exceedance").is_empty());
    assert!(of(&run(&build(false, 40), &[]), "gap_before_exceedance").is_empty());
}

#[test]
fn calibration_outside_window_declared_and_learned() {
    let calibrate = |m: &mut Vec<Minute>, from: usize| {
        for x in &mut m[from..from + 10] {
            x.calibration = true;
            x.raw[0] = Some(160.0);
        }
    };
    // Declared 09:00–09:30: a calibration at 14:00 fires; the daily ones at 09:05 do not.
    let mut m = clean(4);
    calibrate(&mut m, at(2, 14, 0));
    let f = run(&m, &[]);
    let hits = of(&f, "calibration_outside_window");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].start_ms, m[at(2, 14, 0)].ts_ms);
    assert_eq!(hits[0].evidence["schedule"], "declared");
    // Near miss: an extra calibration at 09:20, inside the window.
    let mut m = clean(4);
    calibrate(&mut m, at(2, 9, 20));
    assert!(of(&run(&m, &[]), "calibration_outside_window").is_empty());
    // None declared: the window is learned from the daily 09:05 calibrations.
    let mut unit = facts();
    unit.calibration.clear();
    let mut m = clean(4);
    calibrate(&mut m, at(2, 14, 0));
    let f = run_with(&m, &[], &unit);
    let hits = of(&f, "calibration_outside_window");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].evidence["schedule"], "learned");
    // An unflagged span plateau (160 = 0.8 × 200) at 14:00 while running fires too.
    let mut m = clean(4);
    for x in &mut m[at(2, 14, 0)..at(2, 14, 8)] {
        x.raw[0] = Some(160.3);
    }
    let f = run(&m, &[]);
    let hits = of(&f, "calibration_outside_window");
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0].evidence["kind"], "span");
}

#[test]
fn parameter_change_fires_on_a_change_not_on_a_first_declaration() {
    let m = clean(1);
    let change = ParamChange {
        at_ms: T0 + 3 * HOUR_MS,
        pol: String::new(),
        code: "i13004".into(),
        before: Some("6.06".into()),
        after: "3.5".into(),
    };
    let f = run(&m, std::slice::from_ref(&change));
    let hits = of(&f, "parameter_change");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].severity, Severity::Critical);
    assert_eq!(hits[0].evidence["before"], "6.06");
    // (3.5 − 6.06) / 6.06 = −0.4224.
    assert_eq!(hits[0].evidence["change"], -0.4224);
    let first = ParamChange {
        before: None,
        ..change
    };
    assert!(of(&run(&m, &[first]), "parameter_change").is_empty());
}

#[test]
fn repeated_day_fires_on_a_copy_not_on_a_partial_one() {
    // Day 3's SO2 copied from day 1; near miss: every fifth minute left as measured (80 % equal).
    for (every, fires) in [(usize::MAX, true), (5, false)] {
        let mut m = clean(4);
        for k in 0..1440 {
            if k % every == every - 1 {
                continue;
            }
            let src = m[at(1, 0, 0) + k];
            let dst = &mut m[at(3, 0, 0) + k];
            dst.raw[0] = src.raw[0];
        }
        let f = run(&m, &[]);
        let hits = of(&f, "repeated_day");
        assert_eq!(hits.len(), usize::from(fires), "{hits:#?}");
        if fires {
            assert_eq!(hits[0].start_ms, T0 + 3 * DAY_MS);
            assert_eq!(hits[0].evidence["copied_from"], "2026-03-03");
        }
    }
}
