//! Air-quality data validity and aggregation: GB 3095 Table 4 and HJ 663 (环境空气质量评价技术规范).
//!
//! - Hourly mean: at least 45 minutes of data in the hour (GB 3095 Table 4).
//! - Daily mean (SO2, NO2, CO, PM10, PM2.5): at least 20 valid hourly values (GB 3095 Table 4;
//!   checked against secondary sources).
//! - O3 8h moving mean labelled X: hours X−7 … X, valid with at least 6 of the 8 (HJ 663).
//! - O3 daily maximum 8h: over the 17 windows labelled 08:00 … 24:00 of the day, valid with at least
//!   14 valid windows; with fewer, the day still counts when its maximum exceeds the grade II limit
//!   (160 µg/m3). The 17 windows and the 14/6 thresholds are HJ 663-2013's (secondary sources agree);
//!   the "counts when exceeding" exception is quoted from HJ 663 by secondary sources and could not
//!   be confirmed against the text — it is applied as those sources state it.
//! - District (区域) concentration: the arithmetic mean of the stations' values (HJ 663 点位平均;
//!   the arithmetic mean is what secondary sources describe).
//! - Month (月评价): SO2, NO2, PM10, PM2.5 as the mean of the daily means, CO as the 95th percentile
//!   of the daily means and O3 as the 90th percentile of the daily maximum 8h means (HJ 663's
//!   statistics for an evaluation period); a month's statistic needs at least 27 daily values
//!   (February 25), GB 3095 Table 4's monthly mean rule, applied here to every statistic. The
//!   percentile is HJ 663's: sort ascending, k = 1 + (n − 1)·p, interpolate between the s-th and
//!   (s + 1)-th values at s = ⌊k⌋ (secondary sources agree; the same as a spreadsheet's
//!   PERCENTILE.INC).

/// Minutes with data needed for a valid hourly mean.
pub const MIN_MINUTES_PER_HOUR: usize = 45;
/// Valid hourly values needed for a daily mean.
pub const MIN_HOURS_PER_DAY: usize = 20;
/// Valid hours needed in an O3 8h window.
pub const MIN_HOURS_PER_8H: usize = 6;
/// Valid 8h windows (of 17) needed for the O3 daily maximum.
pub const MIN_8H_WINDOWS: usize = 14;
/// GB 3095 grade II O3 8h limit, µg/m3.
pub const O3_8H_GRADE_II_LIMIT: f64 = 160.0;

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Hourly mean from the hour's minute means (one per minute with data), valid with ≥ 45.
pub fn hourly_mean(minute_means: &[f64]) -> Option<f64> {
    (minute_means.len() >= MIN_MINUTES_PER_HOUR)
        .then(|| mean(minute_means.iter().copied()))
        .flatten()
}

/// Daily mean from the day's 24 hourly values (`None` = invalid hour), valid with ≥ 20.
pub fn daily_mean(hours: &[Option<f64>]) -> Option<f64> {
    let valid: Vec<f64> = hours.iter().flatten().copied().collect();
    (valid.len() >= MIN_HOURS_PER_DAY)
        .then(|| mean(valid.into_iter()))
        .flatten()
}

/// The 8h moving mean over 8 consecutive hourly values, valid with ≥ 6.
pub fn o3_8h_mean(window: &[Option<f64>]) -> Option<f64> {
    let valid: Vec<f64> = window.iter().flatten().copied().collect();
    (valid.len() >= MIN_HOURS_PER_8H)
        .then(|| mean(valid.into_iter()))
        .flatten()
}

/// The O3 daily maximum 8h mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct O3DailyMax8h {
    /// The maximum over valid windows (present even when the day is not valid).
    pub max: Option<f64>,
    pub valid_windows: usize,
    /// Whether the value counts for the day: ≥ 14 valid windows, or fewer but above the limit.
    pub counts: bool,
}

/// From the day's 24 hourly O3 values (labelled 01:00 … 24:00): windows labelled 08:00 … 24:00.
pub fn o3_daily_max_8h(day_hours: &[Option<f64>; 24]) -> O3DailyMax8h {
    let means: Vec<f64> = (7..24)
        .filter_map(|end| o3_8h_mean(&day_hours[end - 7..=end]))
        .collect();
    let max = means.iter().copied().reduce(f64::max);
    let counts = means.len() >= MIN_8H_WINDOWS || max.is_some_and(|m| m > O3_8H_GRADE_II_LIMIT);
    O3DailyMax8h {
        max,
        valid_windows: means.len(),
        counts,
    }
}

/// The O3 daily maximum 1h value (HJ 633-2012 daily report), with the daily-mean validity (≥ 20
/// valid hours).
pub fn o3_daily_max_1h(day_hours: &[Option<f64>]) -> Option<f64> {
    let valid: Vec<f64> = day_hours.iter().flatten().copied().collect();
    (valid.len() >= MIN_HOURS_PER_DAY)
        .then(|| valid.into_iter().reduce(f64::max))
        .flatten()
}

/// The district value: the arithmetic mean of the stations that have one.
pub fn district_mean(stations: &[Option<f64>]) -> Option<f64> {
    mean(stations.iter().flatten().copied())
}

/// Daily values a month's statistic needs (GB 3095 Table 4): 27, February 25.
pub fn min_days_per_month(month: u32) -> usize {
    if month == 2 {
        25
    } else {
        27
    }
}

/// HJ 663's percentile `p` (0–1) of `values`: k = 1 + (n − 1)·p, s = ⌊k⌋,
/// X(s) + (X(s+1) − X(s))·(k − s) over the values sorted ascending (1-based).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let k = 1.0 + (v.len() - 1) as f64 * p;
    let s = k.floor() as usize;
    let lower = v[s - 1];
    let upper = v.get(s).copied().unwrap_or(lower);
    Some(lower + (upper - lower) * (k - s as f64))
}

/// How a pollutant's month is summarised (HJ 663).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthStatistic {
    Mean,
    /// CO: 95th percentile of the daily means.
    P95,
    /// O3: 90th percentile of the daily maximum 8h means.
    P90,
}

/// The month's statistic per pollutant key: (key of the daily value, statistic, label).
pub const MONTH_STATISTICS: [(&str, MonthStatistic, &str); 6] = [
    ("SO2", MonthStatistic::Mean, "SO2"),
    ("NO2", MonthStatistic::Mean, "NO2"),
    ("PM10", MonthStatistic::Mean, "PM10"),
    ("PM2.5", MonthStatistic::Mean, "PM2.5"),
    ("CO", MonthStatistic::P95, "CO-95per"),
    ("O3_8h_max", MonthStatistic::P90, "O3-8h-90per"),
];

/// One pollutant's month: the statistic when enough days are valid, and the days it had.
pub fn month_statistic(daily: &[f64], stat: MonthStatistic, month: u32) -> (Option<f64>, usize) {
    let n = daily.len();
    if n < min_days_per_month(month) {
        return (None, n);
    }
    let v = match stat {
        MonthStatistic::Mean => mean(daily.iter().copied()),
        MonthStatistic::P95 => percentile(daily, 0.95),
        MonthStatistic::P90 => percentile(daily, 0.90),
    };
    (v, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_monthly_statistics_by_hand() {
        // 1 … 30 sorted: k = 1 + 29 × 0.95 = 28.55 → X28 + 0.55 × (X29 − X28) = 28.55.
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert!((percentile(&v, 0.95).unwrap() - 28.55).abs() < 1e-9);
        // k = 1 + 29 × 0.9 = 27.1 → 27.1.
        assert!((percentile(&v, 0.90).unwrap() - 27.1).abs() < 1e-9);
        // Order does not matter; p = 1 is the maximum, p = 0 the minimum.
        let shuffled = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&shuffled, 1.0), Some(5.0));
        assert_eq!(percentile(&shuffled, 0.0), Some(1.0));
        // n = 5, p = 0.95: k = 4.8 → 4 + 0.8 × (5 − 4) = 4.8.
        assert!((percentile(&shuffled, 0.95).unwrap() - 4.8).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), None);
        // A month needs 27 daily values (February 25): 26 in November is no statistic.
        let days: Vec<f64> = (0..26).map(|_| 40.0).collect();
        assert_eq!(month_statistic(&days, MonthStatistic::Mean, 11), (None, 26));
        assert_eq!(
            month_statistic(&days, MonthStatistic::Mean, 2),
            (Some(40.0), 26)
        );
    }

    #[test]
    fn an_hour_needs_45_minutes() {
        assert_eq!(hourly_mean(&[10.0; 44]), None);
        assert_eq!(hourly_mean(&[10.0; 45]), Some(10.0));
        let mut m = vec![10.0; 44];
        m.push(55.0); // (44×10 + 55)/45 = 11
        assert_eq!(hourly_mean(&m), Some(11.0));
    }

    #[test]
    fn a_day_needs_20_hours() {
        let mut h: Vec<Option<f64>> = vec![Some(40.0); 19];
        h.extend([None; 5]);
        assert_eq!(daily_mean(&h), None, "19 valid hours");
        h[19] = Some(60.0); // (19×40 + 60)/20 = 41
        assert_eq!(daily_mean(&h), Some(41.0), "20 valid hours");
    }

    /// Window labelled E (index e = E − 1) covers indices e−7 … e; windows e = 7 … 23. Three
    /// consecutive missing hours at indices a … a+2 leave only 5 valid hours in windows
    /// e ∈ [a+2, a+7]; two missing leave 6 (still valid).
    #[test]
    fn o3_windows_need_6_hours_and_the_day_14_windows() {
        let mut day = [Some(100.0); 24];
        assert_eq!(
            o3_daily_max_8h(&day),
            O3DailyMax8h {
                max: Some(100.0),
                valid_windows: 17,
                counts: true
            }
        );
        // Missing indices 2,3,4: invalid windows e ∈ [4, 9] ∩ [7, 23] = 7, 8, 9 → 14 valid: the day counts.
        for slot in &mut day[2..=4] {
            *slot = None;
        }
        assert_eq!(
            (
                o3_daily_max_8h(&day).valid_windows,
                o3_daily_max_8h(&day).counts
            ),
            (14, true)
        );
        // Missing 3,4,5 instead: invalid e ∈ [5, 10] ∩ [7, 23] = 7 … 10 → 13 valid: the day does not count.
        let mut day = [Some(100.0); 24];
        for slot in &mut day[3..=5] {
            *slot = None;
        }
        let r = o3_daily_max_8h(&day);
        assert_eq!((r.valid_windows, r.counts), (13, false));
        assert_eq!(r.max, Some(100.0));
        // Missing 8 … 11 (four hours): windows with ≥ 3 of them are e = 10 … 16 → 17 − 7 = 10 valid.
        let mut day = [Some(100.0); 24];
        for slot in &mut day[8..=11] {
            *slot = None;
        }
        assert_eq!(o3_daily_max_8h(&day).valid_windows, 10);
        // Add 300 in indices 16 … 19: window e = 19 (12 … 19) = (4×100 + 4×300)/8 = 200, and so are
        // e = 20 … 23: the maximum 200 exceeds 160, so the day counts despite 10 windows.
        for slot in &mut day[16..=19] {
            *slot = Some(300.0);
        }
        let r = o3_daily_max_8h(&day);
        assert_eq!((r.max, r.valid_windows, r.counts), (Some(200.0), 10, true));
    }

    #[test]
    fn the_district_is_the_mean_of_stations_with_values() {
        assert_eq!(district_mean(&[Some(40.0), Some(60.0), None]), Some(50.0));
        assert_eq!(district_mean(&[None, None]), None);
    }
}
