//! Time conventions of the standards: China Standard Time (UTC+8) days, and hours and minutes
//! labelled by their end.
//!
//! GB 3095 / HJ 663: the hour labelled X covers (X−1:00, X:00]; a day is the 24 hours labelled
//! 01:00 … 24:00 CST. Minutes are labelled the same way. A mean over a window whose timestamp is the
//! window's start (HJ 212 DataTime) is labelled start + window.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Utc};

use crate::reading::Period;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// China Standard Time.
pub fn cst() -> FixedOffset {
    // 8 h is a valid offset; `east_opt` only fails beyond ±24 h.
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The end of the `period_ms` window that contains `ts_ms`, with windows (end − period, end].
pub fn label(ts_ms: i64, period_ms: i64) -> i64 {
    let r = ts_ms.rem_euclid(period_ms);
    if r == 0 {
        ts_ms
    } else {
        ts_ms - r + period_ms
    }
}

/// Label of the hour a reading belongs to (samples by their instant, means by their window).
pub fn hour_label_of(ts_ms: i64, period: Period) -> i64 {
    match period {
        Period::Instant => label(ts_ms, HOUR_MS),
        Period::Minute => label(ts_ms + MINUTE_MS, HOUR_MS),
        Period::Hour | Period::Day => ts_ms + HOUR_MS,
    }
}

/// Label of the minute a reading belongs to.
pub fn minute_label_of(ts_ms: i64, period: Period) -> i64 {
    match period {
        Period::Instant => label(ts_ms, MINUTE_MS),
        _ => ts_ms + MINUTE_MS,
    }
}

/// The CST day an hour label belongs to (the hour labelled 24:00 is the day's last).
pub fn day_of_hour(hour_label_ms: i64) -> NaiveDate {
    cst_date(hour_label_ms - 1)
}

/// CST calendar date of an instant.
pub fn cst_date(ts_ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .with_timezone(&cst())
        .date_naive()
}

/// Epoch ms of CST midnight starting `day`.
pub fn day_start_ms(day: NaiveDate) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    midnight.and_utc().timestamp_millis() - 8 * HOUR_MS
}

/// The 24 hour labels of a CST day, 01:00 … 24:00.
pub fn hour_labels(day: NaiveDate) -> [i64; 24] {
    let start = day_start_ms(day);
    std::array::from_fn(|i| start + (i as i64 + 1) * HOUR_MS)
}

/// `day` + n days.
pub fn add_days(day: NaiveDate, n: i64) -> NaiveDate {
    day + Duration::days(n)
}

/// RFC 3339 in CST, for people.
pub fn cst_rfc3339(ts_ms: i64) -> String {
    cst()
        .timestamp_millis_opt(ts_ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_labelled_by_their_end_in_cst() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let labels = hour_labels(day);
        // 2026-11-24 01:00 CST = 2026-11-23 17:00 UTC.
        assert_eq!(cst_rfc3339(labels[0]), "2026-11-24T01:00:00+08:00");
        assert_eq!(cst_rfc3339(labels[23]), "2026-11-25T00:00:00+08:00");
        assert_eq!(day_of_hour(labels[23]), day, "24:00 is the day's last hour");
        assert_eq!(day_of_hour(labels[0]), day);
        // A sample at 00:30 CST belongs to the hour labelled 01:00; one at exactly 01:00 too.
        let h1 = labels[0];
        assert_eq!(hour_label_of(h1 - 30 * MINUTE_MS, Period::Instant), h1);
        assert_eq!(hour_label_of(h1, Period::Instant), h1);
        assert_eq!(hour_label_of(h1 + 1, Period::Instant), labels[1]);
        // An hourly mean stamped with its start (00:00) is the hour labelled 01:00.
        assert_eq!(hour_label_of(h1 - HOUR_MS, Period::Hour), h1);
        // A minute mean stamped 00:59 covers 00:59–01:00: hour 01:00.
        assert_eq!(hour_label_of(h1 - MINUTE_MS, Period::Minute), h1);
        assert_eq!(minute_label_of(h1 - MINUTE_MS, Period::Minute), h1);
    }
}
