//! The AQI editions side by side (pure): the same stored daily concentrations evaluated under
//! HJ 633-2012 (the plan's 2016–2020 period) and HJ 633-2026 (today's), with what each gives —
//! the good-days rate, days per grade, primary pollutants, month by month — and the days whose
//! grade differs. Concentrations do not depend on the edition (`air::reevaluate`), so every
//! difference is the edition's: the PM2.5/PM10 breakpoints at IAQI 100 (75 → 60, 150 → 120
//! µg/m³), rounding before the formula, the daily O3 1h indicator dropped, grade I from 1.
//!
//! The good-days rate counts as the plan does (`plan::good_days`): good days (AQI ≤ 100) over
//! days with an AQI; a day whose AQI an edition withholds ("NA", HJ 633-2026 §5.3.1) counts under
//! neither.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::air;
use super::hj633::Edition;
use super::results::AirDay;

/// The editions compared, in order.
pub const EDITIONS: [Edition; 2] = [Edition::Hj633_2012, Edition::Hj633_2026];

/// One edition's totals over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditionTotals {
    pub edition: Edition,
    pub days_with_aqi: u32,
    pub good_days: u32,
    pub good_rate_percent: Option<f64>,
    /// Days per grade (I … VI).
    pub grades: BTreeMap<String, u32>,
    /// Days on which each pollutant was (one of) the primary pollutant(s).
    pub primary_pollutants: BTreeMap<String, u32>,
    /// Days with concentrations but no AQI under this edition.
    pub withheld_days: u32,
}

/// A month under both editions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthPair {
    /// `YYYY-MM`.
    pub month: String,
    /// Per edition (in [`EDITIONS`] order): days with an AQI, good days, rate.
    pub editions: Vec<MonthTotals>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthTotals {
    pub edition: Edition,
    pub days_with_aqi: u32,
    pub good_days: u32,
    pub good_rate_percent: Option<f64>,
}

/// One day under one edition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayVerdict {
    pub edition: Edition,
    pub aqi: Option<u32>,
    pub grade: Option<String>,
    pub primary_pollutants: Vec<String>,
    pub good_day: Option<bool>,
}

/// A day whose grade (or AQI's availability) differs between the editions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedDay {
    pub day: String,
    /// Whether it is good under one edition and not the other.
    pub good_day_changes: bool,
    pub editions: Vec<DayVerdict>,
}

/// The comparison over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub station: String,
    pub from: String,
    pub to: String,
    /// Days in the window with a stored daily result.
    pub days: u32,
    pub editions: Vec<EditionTotals>,
    pub months: Vec<MonthPair>,
    pub changed_days: Vec<ChangedDay>,
}

fn rate(good: u32, n: u32) -> Option<f64> {
    (n > 0).then(|| f64::from(good) * 100.0 / f64::from(n))
}

fn verdict(d: &AirDay, edition: Edition) -> DayVerdict {
    let r = air::reevaluate(d, edition);
    let aqi = r.aqi.as_ref().and_then(|a| a.aqi);
    DayVerdict {
        edition,
        aqi,
        grade: r
            .aqi
            .as_ref()
            .filter(|a| a.aqi.is_some())
            .and_then(|a| a.grade.clone()),
        primary_pollutants: r
            .aqi
            .as_ref()
            .filter(|a| a.aqi.is_some())
            .map(|a| a.primary_pollutants.clone())
            .unwrap_or_default(),
        good_day: aqi.map(|a| a <= 100),
    }
}

/// Compare the editions over `days` (the station's stored daily results, any order).
pub fn compare(
    station: &str,
    from: NaiveDate,
    to: NaiveDate,
    days: &[(NaiveDate, AirDay)],
) -> Comparison {
    let mut sorted: Vec<&(NaiveDate, AirDay)> = days
        .iter()
        .filter(|(d, _)| *d >= from && *d <= to)
        .collect();
    sorted.sort_by_key(|(d, _)| *d);
    let mut totals: Vec<EditionTotals> = EDITIONS
        .iter()
        .map(|e| EditionTotals {
            edition: *e,
            days_with_aqi: 0,
            good_days: 0,
            good_rate_percent: None,
            grades: BTreeMap::new(),
            primary_pollutants: BTreeMap::new(),
            withheld_days: 0,
        })
        .collect();
    let mut months: BTreeMap<(i32, u32), Vec<(u32, u32)>> = BTreeMap::new();
    let mut changed = Vec::new();
    for (day, d) in &sorted {
        let verdicts: Vec<DayVerdict> = EDITIONS.iter().map(|e| verdict(d, *e)).collect();
        let m = months
            .entry((day.year(), day.month()))
            .or_insert_with(|| vec![(0, 0); EDITIONS.len()]);
        for (i, v) in verdicts.iter().enumerate() {
            let t = &mut totals[i];
            match v.aqi {
                Some(a) => {
                    t.days_with_aqi += 1;
                    m[i].0 += 1;
                    if a <= 100 {
                        t.good_days += 1;
                        m[i].1 += 1;
                    }
                    if let Some(g) = &v.grade {
                        *t.grades.entry(g.clone()).or_insert(0) += 1;
                    }
                    for p in &v.primary_pollutants {
                        *t.primary_pollutants.entry(p.clone()).or_insert(0) += 1;
                    }
                }
                None if d.values.values().any(Option::is_some) => t.withheld_days += 1,
                None => {}
            }
        }
        let differs = verdicts
            .windows(2)
            .any(|w| w[0].grade != w[1].grade || w[0].aqi.is_some() != w[1].aqi.is_some());
        if differs {
            changed.push(ChangedDay {
                day: day.to_string(),
                good_day_changes: verdicts.windows(2).any(|w| w[0].good_day != w[1].good_day),
                editions: verdicts,
            });
        }
    }
    for t in &mut totals {
        t.good_rate_percent = rate(t.good_days, t.days_with_aqi);
    }
    Comparison {
        station: station.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        days: sorted.len() as u32,
        editions: totals,
        months: months
            .into_iter()
            .map(|((y, m), v)| MonthPair {
                month: format!("{y:04}-{m:02}"),
                editions: EDITIONS
                    .iter()
                    .zip(v)
                    .map(|(e, (n, g))| MonthTotals {
                        edition: *e,
                        days_with_aqi: n,
                        good_days: g,
                        good_rate_percent: rate(g, n),
                    })
                    .collect(),
            })
            .collect(),
        changed_days: changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standards::results::{AirDayValidity, Values};

    fn day(date: &str, pm25: f64, pm10: f64) -> (NaiveDate, AirDay) {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        let mut values = Values::new();
        for (k, v) in [
            ("SO2", 10.0),
            ("NO2", 30.0),
            ("CO", 0.8),
            ("O3_8h_max", 90.0),
            ("O3_1h_max", 120.0),
            ("PM2.5", pm25),
            ("PM10", pm10),
        ] {
            values.insert(k.into(), Some(v));
        }
        let ad = air::day(
            Edition::Hj633_2026,
            "district",
            d,
            values,
            AirDayValidity::default(),
            Vec::new(),
        );
        (d, ad)
    }

    #[test]
    fn the_editions_differ_where_the_pm_breakpoints_moved() {
        // HJ 633 Table 1: PM2.5 70 µg/m³ is IAQI 50 + 50·(70−35)/(75−35) = 93.75 → 94 (grade II)
        // under 2012; under 2026 the 100-breakpoint is 60: 100 + 50·(70−60)/(115−60) = 109.09
        // → 110 (grade III). PM10 130 is 50 + 50·(130−50)/(150−50) = 90 (II) under 2012 and
        // 100 + 50·(130−120)/(250−120) = 103.85 → 104 (III) under 2026. PM2.5 30 / PM10 40 is
        // grade I under both (IAQI 43 from PM2.5 30: 50·30/35 = 42.86 → 43).
        let days = vec![
            day("2020-01-01", 70.0, 80.0),
            day("2020-01-02", 30.0, 130.0),
            day("2020-01-03", 30.0, 40.0),
            day("2020-02-01", 50.0, 60.0),
        ];
        let from = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
        let to = NaiveDate::from_ymd_opt(2020, 12, 31).unwrap();
        let c = compare("district", from, to, &days);
        assert_eq!(c.days, 4);
        let (e12, e26) = (&c.editions[0], &c.editions[1]);
        assert_eq!((e12.days_with_aqi, e12.good_days), (4, 4));
        assert_eq!((e26.days_with_aqi, e26.good_days), (4, 2));
        assert_eq!(e12.good_rate_percent, Some(100.0));
        assert_eq!(e26.good_rate_percent, Some(50.0));
        assert_eq!(e26.grades.get("III"), Some(&2));
        assert_eq!(e26.primary_pollutants.get("PM10"), Some(&1));
        let changed: Vec<&str> = c.changed_days.iter().map(|d| d.day.as_str()).collect();
        assert_eq!(changed, ["2020-01-01", "2020-01-02"]);
        let first = &c.changed_days[0];
        assert!(first.good_day_changes);
        assert_eq!(first.editions[0].aqi, Some(94));
        assert_eq!(first.editions[1].aqi, Some(110));
        assert_eq!(c.months.len(), 2);
        assert_eq!(c.months[0].editions[1].good_days, 1);
        // PM2.5 50 is 50 + 50·15/40 = 68.75 → 69 (2012) and 50 + 50·15/25 = 80 (2026): both II.
        assert_eq!(c.months[1].editions[0].good_days, 1);
        assert_eq!(c.months[1].editions[1].good_days, 1);
    }
}
