//! The plan's indicators (涧西区"十三五"规划): the share of days with air quality grade II or better
//! (≥ 80 %, 第二章) and the urban sewage treatment rate (≥ 96 %, 专栏 2-1 第 19 项).

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

/// Year-to-date good-days figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoodDays {
    pub year: i32,
    pub target_percent: f64,
    /// Days with a valid daily AQI so far.
    pub valid_days: u32,
    /// Of those, AQI ≤ 100.
    pub good_days: u32,
    pub rate_percent: Option<f64>,
    /// Days of the year after `as_of`.
    pub remaining_days: u32,
    /// How many more non-good days the year can take and still reach the target, assuming every
    /// remaining day is valid; negative means the target is already out of reach.
    pub affordable_non_good_days: i64,
    pub already_missed: bool,
    pub months: Vec<MonthRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthRow {
    pub month: u32,
    pub valid_days: u32,
    pub good_days: u32,
    pub rate_percent: Option<f64>,
}

fn days_in_year(year: i32) -> u32 {
    if NaiveDate::from_ymd_opt(year, 2, 29).is_some() {
        366
    } else {
        365
    }
}

/// From the daily AQIs of `year` up to `as_of` (inclusive); `None` = no valid AQI that day.
///
/// Share = good / valid days (the "[verify]" reading of HJ 663 in `standards.md` §2). Budget: with G
/// good of V valid days and R days left, the year ends at (G + g)/(V + R) where g ≤ R good days are
/// still to come; the target t needs g ≥ ⌈t·(V + R)⌉ − G, so the non-good days still affordable are
/// R − (⌈t·(V + R)⌉ − G).
pub fn good_days(
    year: i32,
    as_of: NaiveDate,
    days: &[(NaiveDate, Option<u32>)],
    target_percent: f64,
) -> GoodDays {
    let mut months: Vec<MonthRow> = (1..=12)
        .map(|m| MonthRow {
            month: m,
            valid_days: 0,
            good_days: 0,
            rate_percent: None,
        })
        .collect();
    let (mut valid, mut good) = (0u32, 0u32);
    for (d, aqi) in days {
        if d.year() != year || *d > as_of {
            continue;
        }
        if let Some(a) = aqi {
            let row = &mut months[d.month0() as usize];
            row.valid_days += 1;
            valid += 1;
            if *a <= 100 {
                row.good_days += 1;
                good += 1;
            }
        }
    }
    for row in months.iter_mut() {
        row.rate_percent =
            (row.valid_days > 0).then(|| row.good_days as f64 * 100.0 / row.valid_days as f64);
    }
    months.retain(|r| r.month <= as_of.month() || as_of.year() > year);
    let elapsed = if as_of.year() > year {
        days_in_year(year)
    } else {
        as_of.ordinal()
    };
    let remaining = days_in_year(year).saturating_sub(elapsed);
    let total = (valid + remaining) as f64;
    // ⌈t·total⌉ with a tolerance for binary noise (0.8 × 365 = 292.00000000000006).
    let needed_good = ((target_percent / 100.0) * total - 1e-9).ceil() as i64;
    let affordable = remaining as i64 - (needed_good - good as i64);
    GoodDays {
        year,
        target_percent,
        valid_days: valid,
        good_days: good,
        rate_percent: (valid > 0).then(|| good as f64 * 100.0 / valid as f64),
        remaining_days: remaining,
        affordable_non_good_days: affordable,
        already_missed: affordable < 0,
        months,
    }
}

/// Sewage treatment rate, %: treated / produced.
pub fn treatment_rate_percent(treated_m3: f64, produced_m3: f64) -> Option<f64> {
    (produced_m3 > 0.0).then(|| treated_m3 * 100.0 / produced_m3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    #[test]
    fn the_budget_by_hand() {
        // 2026 (365 days). By 10 Jan: 10 days, 8 good (AQI ≤ 100), 2 not; 355 days remain.
        let mut days: Vec<(NaiveDate, Option<u32>)> =
            (1..=8).map(|i| (d(1, i), Some(60 + i))).collect();
        days.push((d(1, 9), Some(101)));
        days.push((d(1, 10), Some(180)));
        let g = good_days(2026, d(1, 10), &days, 80.0);
        assert_eq!((g.valid_days, g.good_days, g.remaining_days), (10, 8, 355));
        assert_eq!(g.rate_percent, Some(80.0));
        // Needed good days = ⌈0.8 × 365⌉ = 292; still to come: 292 − 8 = 284 of 355 → 71 non-good affordable.
        assert_eq!(g.affordable_non_good_days, 71);
        assert!(!g.already_missed);
        assert_eq!(g.months.len(), 1);
        assert_eq!(g.months[0].good_days, 8);
    }

    #[test]
    fn a_year_can_be_already_missed() {
        // By 31 Dec with 250 good days of 365 valid: 250/365 = 68.5 %; nothing remains; needs 292.
        let mut days = Vec::new();
        let mut day = d(1, 1);
        for i in 0..365 {
            days.push((day, Some(if i < 250 { 80 } else { 150 })));
            day = day.succ_opt().unwrap();
        }
        let g = good_days(2026, d(12, 31), &days, 80.0);
        assert_eq!((g.valid_days, g.good_days, g.remaining_days), (365, 250, 0));
        assert_eq!(g.affordable_non_good_days, 250 - 292);
        assert!(g.already_missed);
        // Invalid days do not count in either direction.
        let g = good_days(2026, d(1, 2), &[(d(1, 1), None), (d(1, 2), Some(50))], 80.0);
        assert_eq!((g.valid_days, g.good_days), (1, 1));
    }

    #[test]
    fn treatment_rate_by_hand() {
        // 145,000 m3 treated of 150,000 produced: 96.67 %.
        assert!(
            (treatment_rate_percent(145_000.0, 150_000.0).unwrap() - 96.666_666_666_666_67).abs()
                < 1e-9
        );
        assert_eq!(treatment_rate_percent(1.0, 0.0), None);
    }
}
