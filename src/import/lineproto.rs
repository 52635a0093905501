//! InfluxDB line protocol: what enviromon's own stores hold (`store::line_protocol`: measurement
//! `cems`/`air`/`water`, tags `site`, `sensor`, `period`, a field per quantity and its `_flag`),
//! or one value a line with a `quantity` tag and a `value` field (and an optional `flag` field),
//! as other tools export it. Values are in the sensor channel's unit. Timestamps: the
//! `precision` asked for, else read by magnitude (s, ms, µs or ns since the epoch).

use std::io::BufRead;

use serde_json::Value;

use super::{ImportError, Sink};
use crate::pipeline::payload::{CustomPaths, Paths, RawItem};
use crate::pipeline::{RejectReason, Rejection};

/// Timestamp precision of a line-protocol file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    S,
    Ms,
    Us,
    Ns,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "s" => Some(Precision::S),
            "ms" => Some(Precision::Ms),
            "us" | "u" => Some(Precision::Us),
            "ns" | "n" => Some(Precision::Ns),
            _ => None,
        }
    }
}

/// One parsed line: measurement, tags, fields (name, value), timestamp.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub ts: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// Split at the first unescaped `stop` character outside double quotes.
fn take<'a>(s: &'a str, stops: &[char], quotes: bool) -> (&'a str, &'a str) {
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if quotes => quoted = !quoted,
            c if !quoted && stops.contains(&c) => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parse one line (not a comment or blank).
pub fn parse_line(line: &str) -> Result<Line, String> {
    let (head, rest) = take(line, &[' '], false);
    let (measurement, mut tagtext) = take(head, &[','], false);
    if measurement.is_empty() {
        return Err("no measurement".into());
    }
    let mut tags = Vec::new();
    while let Some(t) = tagtext.strip_prefix(',') {
        let (pair, r) = take(t, &[','], false);
        tagtext = r;
        let (k, v) = take(pair, &['='], false);
        let v = v
            .strip_prefix('=')
            .ok_or_else(|| format!("tag {k:?} has no value"))?;
        tags.push((unescape(k), unescape(v)));
    }
    let rest = rest.trim_start_matches(' ');
    let (fieldtext, ts) = take(rest, &[' '], true);
    let mut fields = Vec::new();
    let mut ft = fieldtext;
    loop {
        let (pair, r) = take(ft, &[','], true);
        let (k, v) = take(pair, &['='], false);
        let v = v
            .strip_prefix('=')
            .ok_or_else(|| format!("field {k:?} has no value"))?;
        let value = if let Some(q) = v.strip_prefix('"') {
            FieldValue::Text(unescape(
                q.strip_suffix('"').ok_or("unterminated string field")?,
            ))
        } else if matches!(v, "t" | "T" | "true" | "True" | "TRUE") {
            FieldValue::Bool(true)
        } else if matches!(v, "f" | "F" | "false" | "False" | "FALSE") {
            FieldValue::Bool(false)
        } else {
            let num = v.strip_suffix(['i', 'u']).unwrap_or(v);
            FieldValue::Number(
                num.parse::<f64>()
                    .map_err(|_| format!("field {k:?}: {v:?} is not a number"))?,
            )
        };
        fields.push((unescape(k), value));
        match r.strip_prefix(',') {
            Some(next) => ft = next,
            None => break,
        }
    }
    if fields.is_empty() {
        return Err("no fields".into());
    }
    let ts = ts.trim();
    let ts = if ts.is_empty() {
        None
    } else {
        Some(
            ts.parse::<i64>()
                .map_err(|_| format!("timestamp {ts:?} is not an integer"))?,
        )
    };
    Ok(Line {
        measurement: unescape(measurement),
        tags,
        fields,
        ts,
    })
}

/// Epoch milliseconds of a line's timestamp.
pub fn to_ms(ts: i64, precision: Option<Precision>) -> i64 {
    let p = precision.unwrap_or(match ts.unsigned_abs() {
        n if n >= 100_000_000_000_000_000 => Precision::Ns,
        n if n >= 100_000_000_000_000 => Precision::Us,
        n if n >= 100_000_000_000 => Precision::Ms,
        _ => Precision::S,
    });
    match p {
        Precision::S => ts.saturating_mul(1000),
        Precision::Ms => ts,
        Precision::Us => ts / 1000,
        Precision::Ns => ts / 1_000_000,
    }
}

/// Read a line-protocol file into `sink`; each line is one row.
pub fn import(
    input: impl BufRead,
    precision: Option<Precision>,
    sink: &mut Sink<'_>,
) -> Result<(), ImportError> {
    let mut row = 0u64;
    for (n, line) in input.split(b'\n').enumerate() {
        let bytes = line?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches('\r').trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        row += 1;
        if sink.skip(row) {
            continue;
        }
        let lineno = n as u64 + 1;
        let l = match parse_line(text) {
            Ok(l) => l,
            Err(why) => {
                let r = Rejection::new(
                    RejectReason::InvalidPayload,
                    format!("line {lineno}: {why}"),
                );
                sink.refuse(row, r, text.as_bytes())?;
                continue;
            }
        };
        let tag = |k: &str| l.tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
        let Some(sensor) = tag("sensor") else {
            let r = Rejection::new(
                RejectReason::InvalidPayload,
                format!("line {lineno}: no sensor tag (enviromon's schema: sensor=ID)"),
            );
            sink.refuse(row, r, text.as_bytes())?;
            continue;
        };
        let Some(ts) = l.ts.map(|t| to_ms(t, precision)) else {
            let r = Rejection::new(
                RejectReason::InvalidTimestamp,
                format!("line {lineno}: no timestamp (history needs its time)"),
            );
            sink.refuse(row, r, text.as_bytes())?;
            continue;
        };
        let period = tag("period").map(|p| Value::String(p.to_string()));
        let text_field = |k: &str| {
            l.fields.iter().find_map(|(f, v)| match v {
                FieldValue::Text(s) if f == k => Some(s.clone()),
                _ => None,
            })
        };
        let mut items = super::mapping::RowItems::default();
        let single = tag("quantity");
        for (f, v) in &l.fields {
            let FieldValue::Number(x) = v else { continue };
            let (quantity, flag) = match single {
                Some(q) if f == "value" => (q.to_string(), text_field("flag")),
                Some(_) => continue,
                None => (f.clone(), text_field(&format!("{f}_flag"))),
            };
            items.items.push((
                sensor.to_string(),
                RawItem {
                    quantity: Value::String(quantity),
                    value: Value::from(*x),
                    unit: None,
                    ts: Some(Value::from(ts)),
                    flag: flag.map(Value::String),
                    period: period.clone(),
                    paths: Paths::custom(CustomPaths {
                        quantity: format!("line {lineno} field {f:?}"),
                        value: format!("line {lineno} field {f:?}"),
                        unit: format!("line {lineno} field {f:?}"),
                        ts: format!("line {lineno} timestamp"),
                        flag: format!("line {lineno} field {f:?}_flag"),
                        period: format!("line {lineno} tag period"),
                    }),
                },
            ));
        }
        sink.table_row(row, items, || text.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes_strings_and_precision() {
        let l = parse_line(r#"cems,site=da\ tang,sensor=dt-1-cems,period=1min so2=12.5,so2_flag="C",nox=30i 1577808000000"#)
            .unwrap();
        assert_eq!(l.measurement, "cems");
        assert_eq!(l.tags[0], ("site".into(), "da tang".into()));
        assert_eq!(l.fields[0], ("so2".into(), FieldValue::Number(12.5)));
        assert_eq!(
            l.fields[1],
            ("so2_flag".into(), FieldValue::Text("C".into()))
        );
        assert_eq!(l.fields[2], ("nox".into(), FieldValue::Number(30.0)));
        assert_eq!(l.ts, Some(1_577_808_000_000));
        let q = parse_line(r#"m,sensor=s value=1,note="a b, c" 1"#).unwrap();
        assert_eq!(q.fields[1].1, FieldValue::Text("a b, c".into()));
        assert!(parse_line("m,sensor=s").is_err());
        assert!(parse_line("m value=abc 1").is_err());
        // 2020-01-01T00:00Z in each precision, read by magnitude.
        for t in [
            1_577_836_800,
            1_577_836_800_000,
            1_577_836_800_000_000,
            1_577_836_800_000_000_000,
        ] {
            assert_eq!(to_ms(t, None), 1_577_836_800_000, "{t}");
        }
        assert_eq!(to_ms(1_577_836_800, Some(Precision::Ms)), 1_577_836_800);
    }
}
