//! Tables (CSV, XLSX): how a vendor's columns become readings.
//!
//! Two layouts, documented in the README ("Importing history"):
//! - **long**: one value a row — `time, sensor, quantity, value[, unit, flag, period]`;
//! - **wide**: one row holds several quantities — `time[, sensor], SO2, NOx(mg/m3), …[, flag]`.
//!
//! Without a mapping file the header decides (a `quantity` and a `value` column: long; otherwise
//! wide, every other column a catalogue quantity, optionally with its unit in brackets). A mapping
//! file ([`Mapping`], TOML) names a vendor's columns, units, status words, time format and zone.
//! Choices a table leaves open are explicit here, with their defaults: times without an offset
//! are Beijing time (`timezone = "+08:00"`), a row's time is the start of its period
//! (`time_is = "start"`), and cells that are empty or a dash are no value (counted, not refused).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde::Deserialize;
use serde_json::Value;

use crate::catalogue::{find_quantity, find_unit};
use crate::pipeline::payload::{CustomPaths, Paths, RawItem};
use crate::reading::Period;

/// A vendor's table described for the importer (`enviromon import --mapping FILE`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `long` or `wide`; default: decided by the header.
    #[serde(default)]
    pub layout: Option<Layout>,
    /// Zone of times written without an offset: `+08:00` (default, Beijing time), `UTC`, …
    #[serde(default)]
    pub timezone: Option<String>,
    /// Default: the first of `time`, `ts`, `timestamp`, `datetime`, `时间`, `监测时间`, `数据时间`.
    #[serde(default)]
    pub time_column: Option<String>,
    /// chrono strftime, e.g. `%Y-%m-%d %H:%M`; default: RFC 3339, `%Y-%m-%d %H:%M:%S`,
    /// `%Y-%m-%d %H:%M`, the same with `/`, a date alone, or epoch seconds / milliseconds.
    #[serde(default)]
    pub time_format: Option<String>,
    /// Whether a row's time labels the start (default) or the end of its period. Chinese hourly
    /// tables often label an hour by its end ("01:00" = 00:00–01:00); readings keep the start.
    #[serde(default)]
    pub time_is: TimeIs,
    /// What every value stands for: `1min`, `1h`, `1d` or `instant` (default), unless a
    /// `period` column says it per row.
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub period_column: Option<String>,
    /// The registered sensor of the whole file, or the column naming it (default `sensor`).
    #[serde(default)]
    pub sensor: Option<String>,
    #[serde(default)]
    pub sensor_column: Option<String>,
    /// Value of the sensor column → registered sensor id.
    #[serde(default)]
    pub sensor_values: BTreeMap<String, String>,
    /// The row's flag column (default `flag`, if present); in a wide table a column may have its
    /// own (`[[columns]] flag_column`, or a header `SO2_flag`).
    #[serde(default)]
    pub flag_column: Option<String>,
    /// A vendor's status words → HJ 212 data flags (`正常` → `N`); unmapped text is read as a flag.
    #[serde(default)]
    pub flag_values: BTreeMap<String, String>,
    /// Long layout: the columns of quantity, value and unit (defaults `quantity`, `value`, `unit`).
    #[serde(default)]
    pub quantity_column: Option<String>,
    #[serde(default)]
    pub value_column: Option<String>,
    #[serde(default)]
    pub unit_column: Option<String>,
    /// A vendor's quantity names → catalogue keys (`二氧化硫` → `SO2`).
    #[serde(default)]
    pub quantity_values: BTreeMap<String, String>,
    /// Wide layout: the value columns. Default: every column that is not time, sensor, flag or period.
    #[serde(default)]
    pub columns: Vec<ColumnMap>,
    /// CSV field delimiter (one character; default `,`).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Lines before the header (a title, an export note), skipped.
    #[serde(default)]
    pub skip_rows: usize,
    /// `utf-8` or `gbk` / `gb18030`; default: GB18030 when the file's first block is not UTF-8,
    /// else UTF-8 with any later field that is not UTF-8 read as GB18030.
    #[serde(default)]
    pub encoding: Option<String>,
    /// XLSX: the sheet to read (default: the first).
    #[serde(default)]
    pub sheet: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Long,
    Wide,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeIs {
    #[default]
    Start,
    End,
}

/// One value column of a wide table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnMap {
    pub column: String,
    pub quantity: String,
    /// The unit the column is in (default: the sensor channel's).
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub flag_column: Option<String>,
}

impl Mapping {
    /// Parse and check a mapping file; every problem is reported at once.
    pub fn from_toml(text: &str) -> Result<Mapping, String> {
        let m: Mapping = toml::from_str(text).map_err(|e| format!("mapping: {e}"))?;
        let mut errors = Vec::new();
        if let Err(e) = offset(m.timezone.as_deref()) {
            errors.push(format!("timezone: {e}"));
        }
        let period = match m.period.as_deref().map(Period::parse) {
            Some(None) => {
                errors.push(format!(
                    "period: {:?} is not 1min, 1h, 1d or instant",
                    m.period.as_deref().unwrap_or_default()
                ));
                None
            }
            Some(Some(p)) => Some(p),
            None => None,
        };
        if m.time_is == TimeIs::End
            && m.period_column.is_none()
            && period.is_none_or(|p| p == Period::Instant)
        {
            errors.push(
                "time_is = \"end\" needs a period (1min, 1h, 1d): a sample has no end".into(),
            );
        }
        if m.sensor.is_some() && m.sensor_column.is_some() {
            errors.push("sensor and sensor_column: give one".into());
        }
        for (i, c) in m.columns.iter().enumerate() {
            if find_quantity(&c.quantity).is_none() {
                errors.push(format!(
                    "columns[{i}].quantity: {:?} is not in the quantity catalogue",
                    c.quantity
                ));
            }
            if let Some(u) = &c.unit {
                if find_unit(u).is_none() {
                    errors.push(format!("columns[{i}].unit: unknown unit {u:?}"));
                }
            }
        }
        for (word, key) in &m.quantity_values {
            if find_quantity(key).is_none() {
                errors.push(format!(
                    "quantity_values.{word}: {key:?} is not in the quantity catalogue"
                ));
            }
        }
        for (word, flag) in &m.flag_values {
            if flag.parse::<crate::reading::DataFlag>().is_err() {
                errors.push(format!(
                    "flag_values.{word}: {flag:?} is not an HJ 212 data flag"
                ));
            }
        }
        if let Some(e) = m.encoding.as_deref() {
            if encoding(Some(e)).is_none() {
                errors.push(format!("encoding: {e:?} is not utf-8, gbk or gb18030"));
            }
        }
        if !m.layout.is_none_or(|l| l == Layout::Wide) && !m.columns.is_empty() {
            errors.push("columns: only a wide layout has value columns".into());
        }
        if errors.is_empty() {
            Ok(m)
        } else {
            Err(format!("mapping: {}", errors.join("; ")))
        }
    }
}

/// The text encoding a mapping asks for (`None`: unknown name).
pub fn encoding(name: Option<&str>) -> Option<&'static encoding_rs::Encoding> {
    match name.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("utf-8" | "utf8") => Some(encoding_rs::UTF_8),
        Some("gbk" | "gb2312" | "gb18030" | "cp936") => Some(encoding_rs::GB18030),
        _ => None,
    }
}

/// `+08:00`, `-0500`, `UTC`, `Z`; default Beijing time.
fn offset(tz: Option<&str>) -> Result<FixedOffset, String> {
    let beijing = FixedOffset::east_opt(8 * 3600).ok_or("offset")?;
    let Some(t) = tz.map(str::trim) else {
        return Ok(beijing);
    };
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
        return FixedOffset::east_opt(0).ok_or_else(|| "offset".into());
    }
    if t.eq_ignore_ascii_case("cst") || t.eq_ignore_ascii_case("asia/shanghai") {
        return Ok(beijing);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(format!("{t:?}: write an offset such as +08:00, or UTC")),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{t:?}: write an offset such as +08:00, or UTC"));
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok(), Some(0)),
        4 => (
            digits[..2].parse::<i32>().ok(),
            digits[2..].parse::<i32>().ok(),
        ),
        _ => (None, None),
    };
    match (h, m) {
        (Some(h), Some(m)) if h <= 14 && m < 60 => {
            FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .ok_or_else(|| format!("{t:?} is out of range"))
        }
        _ => Err(format!("{t:?}: write an offset such as +08:00, or UTC")),
    }
}

/// How one table's columns are read, resolved from its header.
#[derive(Debug, Clone)]
pub struct Plan {
    time: usize,
    time_format: Option<String>,
    offset: FixedOffset,
    time_is: TimeIs,
    period: PeriodFrom,
    sensor: SensorFrom,
    sensor_values: BTreeMap<String, String>,
    flag: Option<usize>,
    flag_values: BTreeMap<String, String>,
    layout: Resolved,
    header: Vec<String>,
}

#[derive(Debug, Clone)]
enum PeriodFrom {
    Fixed(Period),
    Column(usize),
}

#[derive(Debug, Clone)]
enum SensorFrom {
    Fixed(String),
    Column(usize),
}

#[derive(Debug, Clone)]
enum Resolved {
    Long {
        quantity: usize,
        value: usize,
        unit: Option<usize>,
        quantity_values: BTreeMap<String, String>,
    },
    Wide(Vec<WideColumn>),
}

#[derive(Debug, Clone)]
struct WideColumn {
    index: usize,
    quantity: &'static str,
    unit: Option<String>,
    flag: Option<usize>,
}

/// One row's items: (sensor id, item) for each value; what was empty; and a refusal of the whole
/// row (its time, its sensor) when there is one.
#[derive(Debug, Default)]
pub struct RowItems {
    pub items: Vec<(String, RawItem)>,
    pub empty: u64,
    pub refused: Option<crate::pipeline::Rejection>,
}

/// A header as compared: trimmed, without a byte-order mark, one spelling of the micro sign
/// (U+00B5 and U+03BC look alike) and of brackets (full-width ones as ASCII).
fn norm(s: &str) -> String {
    s.trim()
        .trim_start_matches('\u{feff}')
        .trim()
        .replace('\u{b5}', "\u{3bc}")
        .replace('（', "(")
        .replace('）', ")")
}

/// A cell that holds no value.
fn is_empty_cell(s: &str) -> bool {
    matches!(
        s.trim(),
        "" | "-" | "--" | "—" | "NA" | "N/A" | "na" | "n/a" | "null" | "NULL" | "NaN" | "nan"
    )
}

/// `SO2(mg/m3)`, `SO2 [mg/m³]`, `SO2（mg/m3）` → (`SO2`, Some(`mg/m3`)).
fn split_unit(header: &str) -> (String, Option<String>) {
    let h = header.trim().replace('（', "(").replace('）', ")");
    for (open, close) in [('(', ')'), ('[', ']')] {
        if let (Some(a), true) = (h.rfind(open), h.ends_with(close)) {
            let name = h[..a].trim().to_string();
            let unit = h[a + 1..h.len() - 1].trim().to_string();
            if !name.is_empty() {
                return (name, (!unit.is_empty()).then_some(unit));
            }
        }
    }
    (h, None)
}

/// A unit as the catalogue spells it: `μg/m³` → `ug/m3` when the catalogue knows it that way.
fn unit_spelling(u: &str) -> String {
    let t = u
        .trim()
        .replace('³', "3")
        .replace(['μ', 'µ'], "u")
        .replace('℃', "degC");
    match find_unit(&t).or_else(|| find_unit(u)) {
        Some(unit) => unit.symbol.to_string(),
        None => u.trim().to_string(),
    }
}

const TIME_NAMES: [&str; 7] = [
    "time",
    "ts",
    "timestamp",
    "datetime",
    "时间",
    "监测时间",
    "数据时间",
];

impl Plan {
    /// Resolve `mapping` against a header; an error names every column that cannot be placed.
    pub fn new(mapping: &Mapping, header: &[String]) -> Result<Plan, String> {
        let header: Vec<String> = header.iter().map(|h| norm(h)).collect();
        let find = |name: &str| header.iter().position(|h| *h == norm(name));
        let find_ci = |name: &str| {
            header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(&norm(name)))
        };
        let mut errors = Vec::new();
        let need = |errors: &mut Vec<String>, what: &str, name: &str| -> Option<usize> {
            let i = find(name).or_else(|| find_ci(name));
            if i.is_none() {
                errors.push(format!(
                    "{what}: no column {name:?} in the header ({})",
                    header.join(", ")
                ));
            }
            i
        };
        let time = match &mapping.time_column {
            Some(c) => need(&mut errors, "time_column", c),
            None => {
                let i = TIME_NAMES.iter().find_map(|n| find_ci(n));
                if i.is_none() {
                    errors.push(format!(
                        "time: no time column (one of {}; or name it with time_column) in the header ({})",
                        TIME_NAMES.join(", "),
                        header.join(", ")
                    ));
                }
                i
            }
        };
        let sensor = match (&mapping.sensor, &mapping.sensor_column) {
            (Some(s), _) => Some(SensorFrom::Fixed(s.clone())),
            (None, Some(c)) => need(&mut errors, "sensor_column", c).map(SensorFrom::Column),
            (None, None) => match find_ci("sensor") {
                Some(i) => Some(SensorFrom::Column(i)),
                None => {
                    errors.push(
                        "sensor: no sensor column; give the file's sensor (--sensor or a mapping's sensor = \"…\") or a sensor column".into(),
                    );
                    None
                }
            },
        };
        let flag = match &mapping.flag_column {
            Some(c) => need(&mut errors, "flag_column", c),
            None => find_ci("flag"),
        };
        let fixed_period = mapping
            .period
            .as_deref()
            .and_then(Period::parse)
            .unwrap_or_default();
        let period = match &mapping.period_column {
            Some(c) => need(&mut errors, "period_column", c).map(PeriodFrom::Column),
            None => Some(match (mapping.period.is_none(), find_ci("period")) {
                (true, Some(i)) => PeriodFrom::Column(i),
                _ => PeriodFrom::Fixed(fixed_period),
            }),
        };
        let long = match mapping.layout {
            Some(Layout::Long) => true,
            Some(Layout::Wide) => false,
            None => {
                mapping.columns.is_empty()
                    && (mapping.quantity_column.is_some()
                        || (find_ci("quantity").is_some() && find_ci("value").is_some()))
            }
        };
        let mut used: Vec<usize> = [time, flag].into_iter().flatten().collect();
        if let Some(SensorFrom::Column(i)) = &sensor {
            used.push(*i);
        }
        if let Some(PeriodFrom::Column(i)) = &period {
            used.push(*i);
        }
        let layout = if long {
            let q = need(
                &mut errors,
                "quantity_column",
                mapping.quantity_column.as_deref().unwrap_or("quantity"),
            );
            let v = need(
                &mut errors,
                "value_column",
                mapping.value_column.as_deref().unwrap_or("value"),
            );
            let unit = match &mapping.unit_column {
                Some(c) => need(&mut errors, "unit_column", c),
                None => find_ci("unit"),
            };
            match (q, v) {
                (Some(quantity), Some(value)) => Some(Resolved::Long {
                    quantity,
                    value,
                    unit,
                    quantity_values: mapping.quantity_values.clone(),
                }),
                _ => None,
            }
        } else {
            let mut cols = Vec::new();
            if mapping.columns.is_empty() {
                // Per-column flags by header: `SO2_flag`, `SO2 flag`, `SO2标识`.
                let flag_of = |name: &str| {
                    header.iter().position(|h| {
                        let l = h.to_ascii_lowercase();
                        let n = name.to_ascii_lowercase();
                        l == format!("{n}_flag")
                            || l == format!("{n} flag")
                            || *h == format!("{name}标识")
                    })
                };
                let mut flag_cols = Vec::new();
                for (i, h) in header.iter().enumerate() {
                    if used.contains(&i) || h.is_empty() {
                        continue;
                    }
                    let (name, unit) = split_unit(h);
                    let key = mapping
                        .quantity_values
                        .get(&name)
                        .map(String::as_str)
                        .unwrap_or(&name);
                    match find_quantity(key) {
                        Some(q) => {
                            let f = flag_of(&name);
                            flag_cols.extend(f);
                            cols.push(WideColumn {
                                index: i,
                                quantity: q.key,
                                unit: unit.map(|u| unit_spelling(&u)),
                                flag: f,
                            })
                        }
                        None => {
                            let lower = h.to_ascii_lowercase();
                            if !(lower.ends_with("_flag")
                                || lower.ends_with(" flag")
                                || h.ends_with("标识"))
                            {
                                errors.push(format!(
                                    "column {h:?}: not a catalogue quantity (map it in the mapping's [[columns]] or quantity_values)"
                                ));
                            }
                        }
                    }
                }
                cols.retain(|c| !flag_cols.contains(&c.index));
            } else {
                for c in &mapping.columns {
                    let Some(index) = need(&mut errors, "columns.column", &c.column) else {
                        continue;
                    };
                    let flag = match &c.flag_column {
                        Some(f) => need(&mut errors, "columns.flag_column", f),
                        None => None,
                    };
                    if let Some(q) = find_quantity(&c.quantity) {
                        cols.push(WideColumn {
                            index,
                            quantity: q.key,
                            unit: c.unit.as_deref().map(unit_spelling),
                            flag,
                        });
                    }
                }
            }
            if cols.is_empty() && errors.is_empty() {
                errors.push(format!(
                    "no value columns in the header ({})",
                    header.join(", ")
                ));
            }
            Some(Resolved::Wide(cols))
        };
        let offset = match offset(mapping.timezone.as_deref()) {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("timezone: {e}"));
                FixedOffset::east_opt(0).ok_or("offset")?
            }
        };
        match (time, sensor, period, layout) {
            (Some(time), Some(sensor), Some(period), Some(layout)) if errors.is_empty() => {
                Ok(Plan {
                    time,
                    time_format: mapping.time_format.clone(),
                    offset,
                    time_is: mapping.time_is,
                    period,
                    sensor,
                    sensor_values: mapping.sensor_values.clone(),
                    flag,
                    flag_values: mapping.flag_values.clone(),
                    layout,
                    header,
                })
            }
            _ => Err(errors.join("; ")),
        }
    }

    /// Parse a time cell into epoch milliseconds of the period's start.
    fn time(&self, cell: &str, period: Period) -> Result<i64, String> {
        let s = cell.trim();
        let ms = parse_time(s, self.time_format.as_deref(), self.offset)?;
        Ok(match self.time_is {
            TimeIs::Start => ms,
            TimeIs::End => ms - period_ms(period),
        })
    }

    /// Map one data row (`line` is its number in the file, for messages).
    pub fn row(&self, line: u64, cells: &[&str]) -> RowItems {
        let mut out = RowItems::default();
        let cell = |i: usize| cells.get(i).copied().unwrap_or("").trim();
        let refuse = |reason, detail: String| {
            Some(crate::pipeline::Rejection::new(
                reason,
                format!("line {line}: {detail}"),
            ))
        };
        let period = match &self.period {
            PeriodFrom::Fixed(p) => *p,
            PeriodFrom::Column(i) => match Period::parse(cell(*i)) {
                Some(p) => p,
                None => {
                    out.refused = refuse(
                        crate::pipeline::RejectReason::InvalidPayload,
                        format!(
                            "{:?}: {:?} is not a period (1min, 1h, 1d)",
                            self.header[*i],
                            cell(*i)
                        ),
                    );
                    return out;
                }
            },
        };
        let ts = match self.time(cell(self.time), period) {
            Ok(t) => t,
            Err(why) => {
                out.refused = refuse(
                    crate::pipeline::RejectReason::InvalidTimestamp,
                    format!("{:?}: {why}", self.header[self.time]),
                );
                return out;
            }
        };
        let sensor = match &self.sensor {
            SensorFrom::Fixed(s) => s.clone(),
            SensorFrom::Column(i) => {
                let v = cell(*i);
                self.sensor_values
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| v.to_string())
            }
        };
        let flag_text = |i: Option<usize>| -> Option<Value> {
            let f = cell(i?);
            if f.is_empty() {
                return None;
            }
            Some(Value::String(
                self.flag_values
                    .get(f)
                    .cloned()
                    .unwrap_or_else(|| f.to_string()),
            ))
        };
        let row_flag = flag_text(self.flag);
        let period_value = Value::String(period.as_str().to_string());
        let period_value = if period == Period::Instant {
            None
        } else {
            Some(period_value)
        };
        let mut push =
            |quantity: Value, value: &str, unit: Option<String>, flag: Option<Value>, col: &str| {
                let paths = Paths::custom(CustomPaths {
                    quantity: format!("line {line} {col:?}"),
                    value: format!("line {line} {col:?}"),
                    unit: format!("line {line} {col:?} unit"),
                    ts: format!("line {line} {:?}", self.header[self.time]),
                    flag: format!("line {line} flag"),
                    period: format!("line {line} period"),
                });
                out.items.push((
                    sensor.clone(),
                    RawItem {
                        quantity,
                        value: Value::String(value.to_string()),
                        unit: unit.map(Value::String),
                        ts: Some(Value::from(ts)),
                        flag,
                        period: period_value.clone(),
                        paths,
                    },
                ));
            };
        match &self.layout {
            Resolved::Long {
                quantity,
                value,
                unit,
                quantity_values,
            } => {
                let v = cell(*value);
                if is_empty_cell(v) {
                    out.empty += 1;
                    return out;
                }
                let q = cell(*quantity);
                let q = quantity_values.get(q).map(String::as_str).unwrap_or(q);
                let u = unit.map(cell).filter(|u| !u.is_empty()).map(unit_spelling);
                let col = self.header[*value].clone();
                push(Value::String(q.to_string()), v, u, row_flag, &col);
            }
            Resolved::Wide(cols) => {
                for c in cols {
                    let v = cell(c.index);
                    if is_empty_cell(v) {
                        out.empty += 1;
                        continue;
                    }
                    let flag = match c.flag {
                        Some(_) => flag_text(c.flag).or_else(|| row_flag.clone()),
                        None => row_flag.clone(),
                    };
                    let col = self.header[c.index].clone();
                    push(
                        Value::String(c.quantity.to_string()),
                        v,
                        c.unit.clone(),
                        flag,
                        &col,
                    );
                }
            }
        }
        out
    }
}

fn period_ms(p: Period) -> i64 {
    match p {
        Period::Instant => 0,
        Period::Minute => 60_000,
        Period::Hour => 3_600_000,
        Period::Day => 86_400_000,
    }
}

const FORMATS: [&str; 6] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
];

/// A time cell: `format` when given, else the usual spellings; without an offset, in `offset`.
pub fn parse_time(s: &str, format: Option<&str>, offset: FixedOffset) -> Result<i64, String> {
    let local = |n: NaiveDateTime| -> Result<i64, String> {
        offset
            .from_local_datetime(&n)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| format!("{s:?} is not a time in {offset}"))
    };
    if let Some(f) = format {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.timestamp_millis());
        }
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return local(n);
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return local(d.and_time(chrono::NaiveTime::MIN));
        }
        return Err(format!("{s:?} does not match the time format {f:?}"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in FORMATS {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return local(n);
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return local(d.and_time(chrono::NaiveTime::MIN));
        }
    }
    if let Ok(n) = s.parse::<i64>() {
        // Epoch seconds until 5138 AD are below 1e11; milliseconds since 1973 above.
        return Ok(if n.abs() < 100_000_000_000 {
            n * 1000
        } else {
            n
        });
    }
    Err(format!(
        "{s:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM[:SS], or set time_format)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn times_without_offset_are_beijing_time_and_end_labels_move_to_the_start() {
        let bj = offset(None).unwrap();
        // 2020-01-01 01:00 Beijing = 2019-12-31T17:00Z = 1577811600000 ms.
        assert_eq!(
            parse_time("2020-01-01 01:00", None, bj),
            Ok(1_577_811_600_000)
        );
        assert_eq!(
            parse_time("2020-01-01T01:00:00+08:00", None, bj),
            Ok(1_577_811_600_000)
        );
        assert_eq!(parse_time("1577811600", None, bj), Ok(1_577_811_600_000));
        let m = Mapping::from_toml(
            "time_column = \"监测时间\"\ntime_is = \"end\"\nperiod = \"1h\"\nsensor = \"s1\"\n",
        )
        .unwrap();
        let plan = Plan::new(&m, &h(&["监测时间", "PM2.5(μg/m³)"])).unwrap();
        let r = plan.row(2, &["2020-01-01 01:00", "35"]);
        assert_eq!(r.items.len(), 1);
        let (sensor, item) = &r.items[0];
        assert_eq!(sensor, "s1");
        // The hour labelled 01:00 is 00:00–01:00: its start, 2019-12-31T16:00Z.
        assert_eq!(item.ts, Some(Value::from(1_577_808_000_000_i64)));
        assert_eq!(item.unit, Some(Value::String("ug/m3".into())));
        assert_eq!(item.period, Some(Value::String("1h".into())));
    }

    #[test]
    fn a_header_decides_the_layout_without_a_mapping() {
        let m = Mapping::default();
        let long = Plan::new(&m, &h(&["time", "sensor", "quantity", "value", "unit"])).unwrap();
        let r = long.row(
            2,
            &["2026-01-01T00:00:00Z", "dt-1-cems", "SO2", "12.5", "mg/m3"],
        );
        assert_eq!(r.items[0].1.quantity, Value::String("SO2".into()));
        let wide = Plan::new(
            &m,
            &h(&["time", "sensor", "SO2 [mg/m3]", "NOx", "SO2_flag"]),
        )
        .unwrap();
        let r = wide.row(2, &["2026-01-01 08:00", "dt-1-cems", "12.5", "", "C"]);
        assert_eq!(r.items.len(), 1, "{r:?}");
        assert_eq!(r.empty, 1);
        assert_eq!(r.items[0].1.flag, Some(Value::String("C".into())));
        let bad = Plan::new(&m, &h(&["time", "sensor", "二氧化硫"])).unwrap_err();
        assert!(bad.contains("二氧化硫"), "{bad}");
        let none = Plan::new(&m, &h(&["when", "SO2"])).unwrap_err();
        assert!(none.contains("time") && none.contains("sensor"), "{none}");
    }

    #[test]
    fn a_mapping_reports_every_problem_at_once() {
        assert!(offset(Some("+1é1")).is_err());
        let e = Mapping::from_toml(
            "timezone = \"Mars\"\nperiod = \"2h\"\n[flag_values]\n\"正常\" = \"Q\"\n[[columns]]\ncolumn = \"x\"\nquantity = \"XYZ\"\n",
        )
        .unwrap_err();
        for part in ["timezone", "period", "flag_values", "columns[0].quantity"] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
        assert!(Mapping::from_toml("colums = []").is_err());
    }

    #[test]
    fn vendor_words_map_to_flags_and_sensors() {
        let m = Mapping::from_toml(
            "sensor_column = \"站点\"\nflag_column = \"状态\"\n[sensor_values]\n\"1号站\" = \"aq-1\"\n[flag_values]\n\"维护\" = \"M\"\n[[columns]]\ncolumn = \"CO(mg/m³)\"\nquantity = \"CO\"\nunit = \"mg/m3\"\n",
        )
        .unwrap();
        let plan = Plan::new(&m, &h(&["\u{feff}时间", "站点", "CO(mg/m³)", "状态"])).unwrap();
        let r = plan.row(3, &["2020-01-01 00:00", "1号站", "0.8", "维护"]);
        assert_eq!(r.items[0].0, "aq-1");
        assert_eq!(r.items[0].1.flag, Some(Value::String("M".into())));
        let bad = plan.row(4, &["yesterday", "1号站", "0.8", "维护"]);
        assert_eq!(
            bad.refused.map(|r| r.reason),
            Some(crate::pipeline::RejectReason::InvalidTimestamp)
        );
    }
}
