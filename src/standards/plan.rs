//! The plan's indicators (涧西区"十三五"规划): the share of days with air quality grade II or better
//! (≥ 80 %, 第二章) and the urban sewage treatment rate (≥ 96 %, 专栏 2-1 第 19 项).

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// Good-days figures for a window (a calendar year unless asked otherwise), up to `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodDays {
    pub year: i32,
    /// The window's first and last day.
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub target_percent: f64,
    /// Days with a valid daily AQI so far.
    pub valid_days: u32,
    /// Of those, AQI ≤ 100.
    pub good_days: u32,
    pub rate_percent: Option<f64>,
    /// Days of the window after `as_of`.
    pub remaining_days: u32,
    /// How many more non-good days the window can take and still reach the target, assuming every
    /// remaining day has a valid AQI (`assumed_valid_from` … `to`); never more than the days left;
    /// negative means the target is already out of reach.
    pub affordable_non_good_days: i64,
    /// The first of the days assumed valid (`None` when no day remains).
    pub assumed_valid_from: Option<NaiveDate>,
    pub already_missed: bool,
    pub months: Vec<MonthRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthRow {
    pub month: u32,
    pub valid_days: u32,
    pub good_days: u32,
    pub rate_percent: Option<f64>,
}

/// From the daily AQIs of the window `from ..= to` up to `as_of` (inclusive); `None` = no valid AQI
/// that day.
///
/// Share = good / valid days (HJ 663-2013 §4: 达标率 = 达标天数 / 有效监测天数). Budget: with G good
/// of V valid days and R days left, the window ends at (G + g)/(V + R) where g ≤ R good days are still
/// to come; the target t needs g ≥ ⌈t·(V + R)⌉ − G, so the non-good days still affordable are
/// R − (⌈t·(V + R)⌉ − G), and at most R: a window cannot have more non-good days than it has days.
pub fn good_days(
    (from, to): (NaiveDate, NaiveDate),
    as_of: NaiveDate,
    days: &[(NaiveDate, Option<u32>)],
    target_percent: f64,
) -> GoodDays {
    let mut months: Vec<MonthRow> = Vec::new();
    let (mut valid, mut good) = (0u32, 0u32);
    let mut sorted: Vec<&(NaiveDate, Option<u32>)> = days
        .iter()
        .filter(|(d, _)| *d >= from && *d <= to && *d <= as_of)
        .collect();
    sorted.sort_by_key(|(d, _)| *d);
    let mut month = from.with_day(1).unwrap_or(from);
    while month <= to.min(as_of.max(from)) {
        months.push(MonthRow {
            month: month.month(),
            valid_days: 0,
            good_days: 0,
            rate_percent: None,
        });
        match month.checked_add_months(chrono::Months::new(1)) {
            Some(m) => month = m,
            None => break,
        }
    }
    let first_month = from.year() * 12 + from.month0() as i32;
    for (d, aqi) in sorted {
        if let Some(a) = aqi {
            let idx = (d.year() * 12 + d.month0() as i32 - first_month) as usize;
            valid += 1;
            if *a <= 100 {
                good += 1;
            }
            if let Some(row) = months.get_mut(idx) {
                row.valid_days += 1;
                if *a <= 100 {
                    row.good_days += 1;
                }
            }
        }
    }
    for row in months.iter_mut() {
        row.rate_percent =
            (row.valid_days > 0).then(|| row.good_days as f64 * 100.0 / row.valid_days as f64);
    }
    let remaining = if as_of >= to {
        0
    } else {
        (to - as_of.max(from - chrono::Days::new(1)))
            .num_days()
            .max(0) as u32
    };
    let total = (valid + remaining) as f64;
    // ⌈t·total⌉ with a tolerance for binary noise (0.8 × 365 = 292.00000000000006).
    let needed_good = ((target_percent / 100.0) * total - 1e-9).ceil() as i64;
    let affordable = (remaining as i64 - (needed_good - good as i64)).min(remaining as i64);
    GoodDays {
        year: from.year(),
        from,
        to,
        target_percent,
        valid_days: valid,
        good_days: good,
        rate_percent: (valid > 0).then(|| good as f64 * 100.0 / valid as f64),
        remaining_days: remaining,
        affordable_non_good_days: affordable,
        assumed_valid_from: (remaining > 0).then(|| to - chrono::Days::new(remaining as u64 - 1)),
        already_missed: affordable < 0,
        months,
    }
}

/// A calendar year as a window.
pub fn year_window(year: i32) -> Option<(NaiveDate, NaiveDate)> {
    Some((
        NaiveDate::from_ymd_opt(year, 1, 1)?,
        NaiveDate::from_ymd_opt(year, 12, 31)?,
    ))
}

/// Sewage treatment rate, %: treated / produced.
pub fn treatment_rate_percent(treated_m3: f64, produced_m3: f64) -> Option<f64> {
    (produced_m3 > 0.0).then(|| treated_m3 * 100.0 / produced_m3)
}

/// Where an indicator stands, in the one vocabulary every indicator uses (API, metrics, briefing,
/// dashboards): while the window runs, `on_track` (at or above the target so far), `at_risk` (below
/// it, still reachable) or `missed` (no longer reachable whatever the rest brings); once the window
/// is over, `met` or `missed`. `no_data` without a figure.
pub fn standing(
    actual: Option<f64>,
    target: f64,
    window_over: bool,
    unreachable: bool,
) -> super::results::IndicatorStatus {
    use super::results::IndicatorStatus as S;
    match actual {
        None => S::NoData,
        Some(_) if unreachable => S::Missed,
        Some(a) if window_over && a >= target => S::Met,
        Some(_) if window_over => S::Missed,
        Some(a) if a >= target => S::OnTrack,
        Some(_) => S::AtRisk,
    }
}

/// Whether a share of valid hours within limits can still reach `target_percent` by the window's end:
/// the best case counts every hour left as valid and within limits.
pub fn hours_share_unreachable(
    valid: u32,
    exceeded: u32,
    hours_left: u32,
    target_percent: f64,
) -> bool {
    let total = f64::from(valid) + f64::from(hours_left);
    if total == 0.0 {
        return false;
    }
    let best = (f64::from(valid - exceeded.min(valid)) + f64::from(hours_left)) * 100.0 / total;
    best < target_percent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, day).unwrap()
    }

    #[test]
    fn one_vocabulary_for_every_indicator() {
        use crate::standards::results::IndicatorStatus as S;
        assert_eq!(standing(None, 80.0, false, false), S::NoData);
        assert_eq!(standing(Some(81.0), 80.0, false, false), S::OnTrack);
        assert_eq!(standing(Some(79.0), 80.0, false, false), S::AtRisk);
        assert_eq!(standing(Some(79.0), 80.0, false, true), S::Missed);
        assert_eq!(standing(Some(80.0), 80.0, true, false), S::Met);
        assert_eq!(standing(Some(79.9), 80.0, true, false), S::Missed);
        // 100 % of hours within limits: one exceeded hour of 1,000 can never be made up.
        assert!(hours_share_unreachable(1000, 1, 7000, 100.0));
        // 99 %: 10 exceeded of 1,000 valid, 7,000 hours left → best (990 + 7000) / 8000 = 99.9 %.
        assert!(!hours_share_unreachable(1000, 10, 7000, 99.0));
        // With no hours left it is the share itself: 990 / 1000 = 99 % < 99.5 %.
        assert!(hours_share_unreachable(1000, 10, 0, 99.5));
        assert!(!hours_share_unreachable(0, 0, 0, 100.0));
    }

    #[test]
    fn the_budget_by_hand() {
        // 2026 (365 days). By 10 Jan: 10 days, 8 good (AQI ≤ 100), 2 not; 355 days remain.
        let mut days: Vec<(NaiveDate, Option<u32>)> =
            (1..=8).map(|i| (d(1, i), Some(60 + i))).collect();
        days.push((d(1, 9), Some(101)));
        days.push((d(1, 10), Some(180)));
        let g = good_days(year_window(2026).unwrap(), d(1, 10), &days, 80.0);
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
        let g = good_days(year_window(2026).unwrap(), d(12, 31), &days, 80.0);
        assert_eq!((g.valid_days, g.good_days, g.remaining_days), (365, 250, 0));
        assert_eq!(g.affordable_non_good_days, 250 - 292);
        assert!(g.already_missed);
        // Invalid days do not count in either direction.
        let g = good_days(
            year_window(2026).unwrap(),
            d(1, 2),
            &[(d(1, 1), None), (d(1, 2), Some(50))],
            80.0,
        );
        assert_eq!((g.valid_days, g.good_days), (1, 1));
    }

    #[test]
    fn the_budget_never_exceeds_the_days_left() {
        // Window 1 Jan – 8 Jun 2026 (159 days); 130 of 130 days good by 10 May; 29 days left.
        // Needed good = ⌈0.8 × 159⌉ = ⌈127.2⌉ = 128 ≤ 130 already: the formula gives 29 − (128 − 130)
        // = 31, more non-good days than remain; capped at 29.
        let days: Vec<(NaiveDate, Option<u32>)> = (0..130)
            .map(|i| (d(1, 1) + chrono::Days::new(i), Some(50)))
            .collect();
        let g = good_days((d(1, 1), d(6, 8)), d(5, 10), &days, 80.0);
        assert_eq!(
            (g.valid_days, g.good_days, g.remaining_days),
            (130, 130, 29)
        );
        assert_eq!(g.affordable_non_good_days, 29);
        assert_eq!(g.assumed_valid_from, Some(d(5, 11)));
        assert_eq!(g.months.len(), 5);
        // The whole year: 235 days left, 292 needed, 130 good → 235 − 162 = 73 (under the cap).
        let g = good_days(year_window(2026).unwrap(), d(5, 10), &days, 80.0);
        assert_eq!((g.remaining_days, g.affordable_non_good_days), (235, 73));
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
