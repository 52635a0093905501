//! InfluxDB line protocol for readings (the schema is documented in the README).
//!
//! One line per reading: `{domain},site={site},sensor={sensor}[,period=1min|1h|1d] {field}={value},{field}_flag="{flag}" {ts_ms}`
//! — measurement `cems`, `air` or `water`; the quantity's catalogue field name (`so2`, `pm25`,
//! `nh3n`, …) holds the value in the sensor channel's unit; `{field}_flag` holds the HJ 212 flag.
//! Timestamps are epoch milliseconds (write with `precision=ms`).

use std::fmt::Write;

use crate::catalogue::find_quantity;
use crate::reading::Reading;

/// Escape a measurement name (commas and spaces).
fn escape_measurement(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escape a tag key or value (commas, equals signs, spaces).
pub fn escape_tag(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
}

/// A tag value, escaped: the one spelling every writer of this crate uses.
pub fn tag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_tag(s, &mut out);
    out
}

/// Escape a string field value (double quotes and backslashes), quoted.
pub fn string_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The field name of a reading's quantity.
pub fn field_name(quantity: &str) -> String {
    match find_quantity(quantity) {
        Some(q) => q.field.to_string(),
        None => quantity
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

/// Append one reading as a line (with trailing newline).
pub fn write_line(r: &Reading, out: &mut String) {
    escape_measurement(r.domain.measurement(), out);
    out.push_str(",site=");
    escape_tag(&r.site, out);
    out.push_str(",sensor=");
    escape_tag(&r.sensor, out);
    if r.period != crate::reading::Period::Instant {
        // Means over a window are their own series: they never overwrite samples at the same time.
        out.push_str(",period=");
        out.push_str(r.period.as_str());
    }
    let field = field_name(&r.quantity);
    // f64 Display never uses exponent notation and round-trips exactly.
    let _ = write!(
        out,
        " {field}={},{field}_flag=\"{}\" {}",
        r.value,
        r.flag.as_str(),
        r.ts_ms()
    );
    out.push('\n');
}

/// A whole batch as one body.
pub fn encode(batch: &[Reading]) -> String {
    let mut out = String::with_capacity(batch.len() * 96);
    for r in batch {
        write_line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{DataFlag, Domain, Source};
    use chrono::TimeZone;

    fn reading(site: &str, q: &str, v: f64) -> Reading {
        Reading {
            sensor: "dt-1-cems".into(),
            site: site.into(),
            domain: Domain::Cems,
            quantity: q.into(),
            value: v,
            unit: "mg/m3".into(),
            ts: chrono::Utc.timestamp_millis_opt(1_764_000_000_123).unwrap(),
            flag: DataFlag::T,
            source: Source::Mqtt,
            ts_assumed: false,
            period: crate::reading::Period::Instant,
        }
    }

    #[test]
    fn lines_follow_the_documented_schema() {
        assert_eq!(
            encode(&[reading("datang", "SO2", 12.3)]),
            "cems,site=datang,sensor=dt-1-cems so2=12.3,so2_flag=\"T\" 1764000000123\n"
        );
        assert_eq!(
            encode(&[reading("datang", "PM2.5", 0.0000125)]),
            "cems,site=datang,sensor=dt-1-cems pm25=0.0000125,pm25_flag=\"T\" 1764000000123\n"
        );
    }

    #[test]
    fn tag_values_are_escaped() {
        let line = encode(&[reading("a b,c=d", "NH3-N", 1.0)]);
        assert!(
            line.starts_with("cems,site=a\\ b\\,c\\=d,sensor=dt-1-cems nh3n=1,"),
            "{line}"
        );
    }
}
