//! CEMS hours and days of one unit, as pure functions of its [`HourInput`] and its registration:
//! per-parameter validity, normalisation to dry standard state, reference-oxygen correction, the
//! data logger's hourly record as a fallback (by policy), mass emission, daily figures.
//!
//! A pollutant's minute is judged by **its own** flag and by the validity of what its correction
//! needs (HJ 212 flags are per parameter; HJ 75-2017 corrects with the O2 measured at the same time):
//! - O2, always (reference-oxygen correction);
//! - moisture, for a wet-basis analyser (`measured_basis = "wet"`);
//! - flue temperature and (when reported) flue pressure, for an actual-state analyser
//!   (`measured_state = "actual"`).
//!
//! The flow only enters the mass emission: an invalid flow leaves the concentration verdict alone.
//! NOx computed from NO and NO2 carries the worse of their two flags.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hj75::{self, HourRules, HourStatus};
use super::input::{worst, HourInput};
use super::results::{CemsDay, CemsHour, CemsPollutantDay, CemsPollutantHour, HourSource};
use super::time;
use crate::reading::DataFlag;
use crate::registry::{EmissionUnit, MeasuredBasis, MeasuredState};

/// When the data logger's own hourly record (HJ 212 CN 2061) stands for the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HourlyRecord {
    /// Only when the pollutant has no minute data in the hour: HJ 75-2017 judges an hour by its
    /// valid minutes, so a logger's record never overrides minutes that make the hour invalid.
    #[default]
    WhenNoMinutes,
    /// Also when the minutes make an invalid hour (the first wave's behaviour).
    WhenMinutesInvalid,
    /// Never: hours come from minutes only.
    Never,
}

/// What the engine needs to know about a unit's rules (from its registration and the config).
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: HourRules,
    pub hourly_record: HourlyRecord,
}

impl Policy {
    pub fn for_unit(unit: &EmissionUnit, cfg: &crate::config::CemsStandardsConfig) -> Policy {
        Policy {
            rules: HourRules {
                excluded: unit
                    .excluded_flags
                    .clone()
                    .unwrap_or_else(|| hj75::DEFAULT_EXCLUDED.to_vec()),
                o2_correction: cfg.o2_correction,
                over_range: cfg.over_range,
                partial_stop: cfg.partial_stop,
                o2_ref_percent: unit.o2_ref_percent,
            },
            hourly_record: cfg.hourly_record,
        }
    }
}

/// A value with its flag, valid for a correction when present and not excluded.
fn input_ok(v: Option<(f64, DataFlag)>, excluded: &[DataFlag]) -> Option<f64> {
    v.filter(|(_, f)| !excluded.contains(f)).map(|(x, _)| x)
}

/// One pollutant's raw minute: NOx from its own channel, else NO × 46/30 + NO2.
fn raw(input: &HourInput, q: &str, m: i64) -> Option<(f64, DataFlag)> {
    if q == "NOx" {
        if let Some(v) = input.minute("NOx", m) {
            return Some(v);
        }
        let (no, f_no) = input.minute("NO", m)?;
        let (no2, f_no2) = input.minute("NO2", m).unwrap_or((0.0, DataFlag::N));
        return Some((hj75::nox_as_no2(no, no2), worst(f_no, f_no2)));
    }
    input.minute(q, m)
}

/// The minutes of pollutant `q`, normalised, each with its own flag and its inputs' validity.
pub fn minutes(
    unit: &EmissionUnit,
    input: &HourInput,
    q: &str,
    rules: &HourRules,
) -> Vec<hj75::Minute> {
    input
        .minute_labels()
        .into_iter()
        .filter_map(|m| minute_at(unit, input, q, m, rules))
        .collect()
}

/// Pollutant `q`'s minute labelled `m`, normalised, with its flag and its inputs' validity.
fn minute_at(
    unit: &EmissionUnit,
    input: &HourInput,
    q: &str,
    m: i64,
    rules: &HourRules,
) -> Option<hj75::Minute> {
    let ex = &rules.excluded;
    let ba_pa = unit.ambient_pressure_kpa * 1000.0;
    let (c, flag) = raw(input, q, m)?;
    let o2 = input.minute("O2", m);
    let moisture = input.minute("moisture", m);
    let temp = input.minute("flue_temp", m);
    let pressure = input.minute("flue_pressure", m);
    let mut inputs_valid = input_ok(o2, ex).is_some();
    let wet = unit.measured_basis == MeasuredBasis::Wet;
    let actual = unit.measured_state == MeasuredState::Actual;
    if wet {
        inputs_valid &= input_ok(moisture, ex).is_some();
    }
    if actual {
        inputs_valid &= input_ok(temp, ex).is_some();
        // Gauge pressure: optional (0 when not reported), but an excluded one is invalid.
        inputs_valid &= pressure.is_none_or(|(_, f)| !ex.contains(&f));
    }
    let ps_pa = pressure.map(|(p, _)| p * 1000.0).unwrap_or(0.0);
    let mut measured = Some(c);
    if wet {
        measured = measured.and_then(|c| hj75::wet_to_dry(c, moisture?.0));
    }
    if actual {
        measured = measured.and_then(|c| hj75::to_standard_state(c, ba_pa, ps_pa, temp?.0));
    }
    let o2_dry = o2.and_then(|(o2, _)| match unit.measured_basis {
        MeasuredBasis::Dry => Some(o2),
        MeasuredBasis::Wet => hj75::wet_to_dry(o2, moisture?.0),
    });
    let flow = input_ok(input.minute("flue_flow", m), ex).and_then(|f| {
        hj75::flow_to_dry_standard(
            f,
            unit.flow_basis,
            input_ok(moisture, ex),
            input_ok(temp, ex),
            ba_pa,
            ps_pa,
        )
    });
    Some(hj75::Minute {
        measured,
        o2_dry,
        mass_kg_h: measured.and_then(|c| Some(hj75::mass_rate_kg_h(c, flow?))),
        flag,
        inputs_valid,
    })
}

/// The hour's minutes as the integrity rules read them (`crate::integrity`): per minute (by its
/// start), each pollutant as reported and corrected to reference O2 (normalised as for the
/// verdict, whatever its flag: the rules judge the data, not the hour), O2 (dry), flow, flue
/// temperature, velocity, moisture, load, the production facilities' electricity use (ST 44
/// `d2xxxx` codes, summed), and whether any channel is flagged F (stopped) or C (calibration).
pub fn integrity_minutes(
    unit: &EmissionUnit,
    input: &HourInput,
    rules: &HourRules,
) -> Vec<crate::integrity::Minute> {
    use crate::integrity::{Minute, POLLUTANTS};
    input
        .minute_labels()
        .into_iter()
        .map(|m| {
            let v = |q: &str| input.minute(q, m).map(|(x, _)| x);
            let mut out = Minute {
                ts_ms: m - time::MINUTE_MS,
                o2: None,
                flow: v("flue_flow"),
                temp: v("flue_temp"),
                velocity: v("flue_velocity"),
                moisture: v("moisture"),
                load_mw: v("load"),
                ..Minute::default()
            };
            for (i, q) in POLLUTANTS.iter().enumerate() {
                out.raw[i] = raw(input, q, m).map(|(x, _)| x);
                if let Some(h) = minute_at(unit, input, q, m, rules) {
                    out.corrected[i] = h
                        .measured
                        .zip(h.o2_dry)
                        .and_then(|(c, o2)| hj75::o2_corrected(c, o2, rules.o2_ref_percent));
                    out.o2 = out.o2.or(h.o2_dry);
                }
            }
            if out.o2.is_none() {
                out.o2 = v("O2");
            }
            let mut power = None;
            for (q, buckets) in &input.minutes {
                if let Some(b) = buckets.get(&m) {
                    out.stopped |= b.flag == DataFlag::F;
                    out.calibration |= b.flag == DataFlag::C;
                    if q.starts_with("d2") && !q.ends_with("_cou") {
                        power = Some(power.unwrap_or(0.0) + b.mean());
                    }
                }
            }
            out.facility_power = power;
            out
        })
        .collect()
}

/// The data logger's hourly record of `q`, when it may stand for the hour.
fn from_hourly_record(
    unit: &EmissionUnit,
    input: &HourInput,
    q: &str,
    limit: f64,
    rules: &HourRules,
) -> Option<(hj75::Hour, HourSource)> {
    let ex = &rules.excluded;
    let flow = input.hourly.get("flue_flow").and_then(|(f, fl)| {
        (!ex.contains(fl)).then_some(())?;
        let moisture = input.hourly.get("moisture").map(|(m, _)| *m);
        let temp = input.hourly.get("flue_temp").map(|(t, _)| *t);
        hj75::flow_to_dry_standard(
            *f,
            unit.flow_basis,
            moisture,
            temp,
            unit.ambient_pressure_kpa * 1000.0,
            0.0,
        )
    });
    let over_range_exceeds = rules.over_range == hj75::OverRange::AnyMinuteExceeds;
    let hour = |measured: Option<f64>, corrected: Option<f64>, flag: DataFlag| hj75::Hour {
        status: if corrected.is_some() {
            HourStatus::Valid
        } else {
            HourStatus::Invalid
        },
        valid_minutes: 0,
        stopped_minutes: 0,
        excluded_minutes: 0,
        measured_mean: measured,
        corrected_mean: corrected,
        mass_kg_h: measured.and_then(|c| Some(hj75::mass_rate_kg_h(c, flow?))),
        exceeded: corrected.is_some_and(|c| c > limit)
            || (corrected.is_some() && over_range_exceeds && flag == DataFlag::T),
        over_range: flag == DataFlag::T,
    };
    // An already corrected (折算, `-ZsAvg`) record is used as it is, never corrected again.
    if let Some((zc, zf)) = input
        .hourly
        .get(&format!("{q}_zs"))
        .filter(|(_, f)| !ex.contains(f))
    {
        let measured = input.hourly.get(q).map(|(c, _)| *c);
        return Some((
            hour(measured, Some(*zc), *zf),
            HourSource::HourlyReportConverted,
        ));
    }
    let (c, f) = input.hourly.get(q).filter(|(_, f)| !ex.contains(f))?;
    let (o2, o2f) = input.hourly.get("O2")?;
    if ex.contains(o2f) {
        return Some((hour(Some(*c), None, *f), HourSource::HourlyReport));
    }
    let corrected = hj75::o2_corrected(*c, *o2, rules.o2_ref_percent);
    Some((hour(Some(*c), corrected, *f), HourSource::HourlyReport))
}

/// One unit's hour, or `None` when it has no data at all.
pub fn hour(
    unit_id: &str,
    unit: &EmissionUnit,
    input: &HourInput,
    hour_ms: i64,
    policy: &Policy,
) -> Option<CemsHour> {
    let rules = &policy.rules;
    let mut pollutants = BTreeMap::new();
    let mut any = false;
    for (q, limit) in &unit.limits {
        let minutes = minutes(unit, input, q, rules);
        let mut h = hj75::hour(&minutes, *limit, rules);
        let mut source = HourSource::Minutes;
        let use_record = match policy.hourly_record {
            HourlyRecord::Never => false,
            HourlyRecord::WhenNoMinutes => minutes.is_empty(),
            HourlyRecord::WhenMinutesInvalid => h.status != HourStatus::Valid,
        };
        if use_record {
            if let Some((rh, rs)) = from_hourly_record(unit, input, q, *limit, rules) {
                h = rh;
                source = rs;
            }
        }
        any |= !minutes.is_empty() || source != HourSource::Minutes;
        pollutants.insert(
            q.clone(),
            CemsPollutantHour {
                status: h.status,
                valid_minutes: h.valid_minutes,
                stopped_minutes: h.stopped_minutes,
                excluded_minutes: h.excluded_minutes,
                measured: h.measured_mean,
                corrected: h.corrected_mean,
                limit: *limit,
                exceeded: h.exceeded,
                over_range: h.over_range,
                mass_kg_h: h.mass_kg_h,
                source,
            },
        );
    }
    if !any {
        return None;
    }
    let labels = input.minute_labels();
    let avg = |q: &str| {
        let v: Vec<f64> = labels
            .iter()
            .filter_map(|&m| input.minute(q, m).map(|x| x.0))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Some(CemsHour {
        unit: unit_id.to_string(),
        site: unit.site.clone(),
        hour: time::cst_rfc3339(hour_ms),
        hour_ms,
        o2_ref_percent: unit.o2_ref_percent,
        o2_mean: avg("O2"),
        flue_flow_mean: avg("flue_flow"),
        minutes_with_data: labels.len(),
        pollutants,
    })
}

/// HJ 76-2017 Appendix B: a valid day has ≥ 20 valid hours.
pub const MIN_VALID_HOURS_PER_DAY: u32 = 20;

/// One unit's day from its hours; `elapsed` hours of the day have ended.
pub fn day(
    unit_id: &str,
    unit: &EmissionUnit,
    day: chrono::NaiveDate,
    hours: &[CemsHour],
    elapsed: u32,
) -> CemsDay {
    let mut pollutants = BTreeMap::new();
    for q in unit.limits.keys() {
        let (mut valid, mut exceeded, mut stopped, mut mass) = (0u32, 0u32, 0u32, 0.0);
        let (mut measured, mut corrected) = (Vec::new(), Vec::new());
        for h in hours {
            let Some(p) = h.pollutants.get(q) else {
                continue;
            };
            match p.status {
                HourStatus::Valid => {
                    valid += 1;
                    exceeded += u32::from(p.exceeded);
                    mass += p.mass_kg_h.unwrap_or(0.0);
                    measured.extend(p.measured);
                    corrected.extend(p.corrected);
                }
                HourStatus::Stopped => stopped += 1,
                HourStatus::Invalid => {}
            }
        }
        let expected = elapsed.saturating_sub(stopped);
        let day_valid = valid >= MIN_VALID_HOURS_PER_DAY;
        let mean = |v: &[f64]| {
            (day_valid && !v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        pollutants.insert(
            q.clone(),
            CemsPollutantDay {
                valid_hours: valid,
                exceeded_hours: exceeded,
                stopped_hours: stopped,
                expected_hours: expected,
                compliance_percent: (valid > 0)
                    .then(|| f64::from(valid - exceeded) * 100.0 / f64::from(valid)),
                completeness_percent: (expected > 0)
                    .then(|| f64::from(valid.min(expected)) * 100.0 / f64::from(expected)),
                mass_kg: mass,
                day_valid,
                measured_mean: mean(&measured),
                corrected_mean: mean(&corrected),
            },
        );
    }
    CemsDay {
        unit: unit_id.to_string(),
        day: day.to_string(),
        hours_elapsed: elapsed,
        pollutants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Period;
    use crate::standards::input::Row;
    use proptest::prelude::*;

    fn unit() -> EmissionUnit {
        crate::registry::Seeds::embedded()
            .unwrap()
            .units
            .into_iter()
            .find(|u| u.id == "dt-1")
            .unwrap()
    }

    /// An hour of minute rows: per quantity, its value and per-minute flags.
    fn input(hour: i64, channels: &[(&str, f64, &[DataFlag])]) -> HourInput {
        let mut rows = Vec::new();
        for (q, v, flags) in channels {
            for (i, f) in flags.iter().enumerate() {
                rows.push(Row {
                    quantity: q.to_string(),
                    ts_ms: hour - time::HOUR_MS + i as i64 * time::MINUTE_MS,
                    period: Period::Minute,
                    value: *v,
                    flag: *f,
                });
            }
        }
        HourInput::from_rows(&rows, hour)
    }

    fn flags() -> impl Strategy<Value = Vec<DataFlag>> {
        prop::collection::vec(prop::sample::select(DataFlag::ALL.to_vec()), 60)
    }

    proptest! {
        /// A flag on one channel never changes another channel's verdict unless that channel's
        /// correction depends on it: PM's flags never change SO2's or NOx's hour; O2's do.
        #[test]
        fn a_flag_on_one_channel_leaves_the_others_alone(
            so2 in flags(), nox in flags(), pm_a in flags(), pm_b in flags(), o2 in flags(),
            so2_v in 0.0f64..120.0,
        ) {
            let u = unit();
            let policy = Policy::for_unit(&u, &Default::default());
            let hour_ms = 1_790_000_000_000 - 1_790_000_000_000 % time::HOUR_MS;
            let run = |pm: &[DataFlag], o2f: &[DataFlag]| {
                let i = input(hour_ms, &[("SO2", so2_v, &so2), ("NOx", 30.0, &nox), ("PM", 3.0, pm), ("O2", 6.0, o2f)]);
                hour("dt-1", &u, &i, hour_ms, &policy).unwrap()
            };
            let a = run(&pm_a, &o2);
            let b = run(&pm_b, &o2);
            for q in ["SO2", "NOx"] {
                prop_assert_eq!(&a.pollutants[q], &b.pollutants[q]);
            }
            // With O2 all normal, SO2's valid minutes are exactly its own countable minutes.
            let normal = vec![DataFlag::N; 60];
            let c = run(&pm_a, &normal);
            let own = so2.iter().filter(|f| !hj75::DEFAULT_EXCLUDED.contains(f)).count();
            prop_assert_eq!(c.pollutants["SO2"].valid_minutes, own);
            // O2 is SO2's correction input: its excluded minutes are SO2's too.
            let both = so2.iter().zip(&o2).filter(|(s, o)| {
                !hj75::DEFAULT_EXCLUDED.contains(s) && !hj75::DEFAULT_EXCLUDED.contains(o)
            }).count();
            prop_assert_eq!(a.pollutants["SO2"].valid_minutes, both);
        }
    }
}
