//! The report tables operators hand in, from the standards' typed results, as CSV and XLSX.
//!
//! - CEMS (HJ 75-2017's appendix tables): a unit's hourly values of a day, daily values of a month,
//!   monthly values of a year — measured and O2-corrected concentrations, flow, emissions, valid
//!   hours and status.
//! - Air (HJ 633): a station's (or the district's) daily values and AQI of a month, and its monthly
//!   statistics of a year (HJ 663: means, CO 95th and O3 8h 90th percentiles, good days).
//! - Water: an analyser's daily values of a month, with its GB 18918 verdict.
//!
//! Every number is the API's own (the same typed result), rounded only for display. Headers are
//! bilingual, Chinese first. CSV is UTF-8 with a BOM (so Excel opens Chinese headers correctly).

use chrono::NaiveDate;

use crate::standards::engine::{Engine, EngineError};
use crate::standards::results::{AirDay, CemsDay, CemsHour, WaterDay};
use crate::standards::time;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Args(String),
    #[error("XLSX: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
}

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CemsHourly,
    CemsDaily,
    CemsMonthly,
    AirDaily,
    AirMonthly,
    WaterDaily,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "cems-hourly" => Kind::CemsHourly,
            "cems-daily" => Kind::CemsDaily,
            "cems-monthly" => Kind::CemsMonthly,
            "air-daily" => Kind::AirDaily,
            "air-monthly" => Kind::AirMonthly,
            "water-daily" => Kind::WaterDaily,
            _ => return None,
        })
    }
    pub const NAMES: &'static str =
        "cems-hourly, cems-daily, cems-monthly, air-daily, air-monthly, water-daily";
}

/// A cell: text, or a number (None: no valid value).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Num(Option<f64>, u32),
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}
fn num(v: Option<f64>, decimals: u32) -> Cell {
    Cell::Num(v, decimals)
}

/// A table: its title, bilingual headers and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// What a table is about: the unit/station/sensor and the period.
#[derive(Debug, Clone, Default)]
pub struct Args {
    pub entity: String,
    pub day: Option<NaiveDate>,
    pub month: Option<(i32, u32)>,
    pub year: Option<i32>,
}

const POLLUTANTS: [&str; 3] = ["SO2", "NOx", "PM"];

fn status_zh(s: &str) -> &str {
    match s {
        "valid" => "有效 valid",
        "invalid" => "无效 invalid",
        "stopped" => "停运 stopped",
        "no_data" => "无数据 no data",
        other => other,
    }
}

fn month_days(year: i32, month: u32) -> Option<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some((first, next.pred_opt()?))
}

/// Build a table from the engine's results. Blocking (SQLite).
pub fn build(engine: &Engine, kind: Kind, a: &Args) -> Result<Table, TableError> {
    let need = |what: &str| TableError::Args(format!("{what} is required for this table"));
    match kind {
        Kind::CemsHourly => {
            let day = a.day.ok_or_else(|| need("day (YYYY-MM-DD)"))?;
            let labels = time::hour_labels(day);
            let docs = engine.results::<CemsHour>(Some(&a.entity), labels[0], labels[23])?;
            let mut headers = vec![
                "时段（截至）/ Hour ending".to_string(),
                "氧含量 / O2 %".into(),
                "标干流量 / Flow m³/h".into(),
            ];
            for p in POLLUTANTS {
                headers.push(format!("{p} 实测 / measured mg/m³"));
                headers.push(format!("{p} 折算 / corrected mg/m³"));
                headers.push(format!("{p} 排放量 / emission kg/h"));
                headers.push(format!("{p} 有效分钟 / valid min"));
                headers.push(format!("{p} 状态 / status"));
                headers.push(format!("{p} 超标 / exceeded"));
            }
            let rows = docs
                .iter()
                .map(|(_, _, h)| {
                    let mut r = vec![text(&h.hour), num(h.o2_mean, 2), num(h.flue_flow_mean, 0)];
                    for p in POLLUTANTS {
                        match h.pollutants.get(p) {
                            Some(x) => {
                                let status = serde_json::to_value(x.status)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default();
                                r.extend([
                                    num(x.measured, 2),
                                    num(x.corrected, 2),
                                    num(x.mass_kg_h, 3),
                                    num(Some(x.valid_minutes as f64), 0),
                                    text(status_zh(&status)),
                                    text(if x.exceeded { "是 yes" } else { "否 no" }),
                                ]);
                            }
                            None => r.extend((0..6).map(|_| num(None, 0))),
                        }
                    }
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {day} 小时均值 / hourly values (HJ 75-2017)", a.entity),
                headers,
                rows,
            })
        }
        Kind::CemsDaily => {
            let (y, m) = a.month.ok_or_else(|| need("month (YYYY-MM)"))?;
            let (first, last) = month_days(y, m).ok_or_else(|| need("a valid month"))?;
            let docs = engine.results::<CemsDay>(
                Some(&a.entity),
                time::day_start_ms(first),
                time::day_start_ms(last),
            )?;
            let mut headers = vec!["日期 / Day".to_string()];
            for p in POLLUTANTS {
                headers.push(format!("{p} 日均实测 / daily measured mg/m³"));
                headers.push(format!("{p} 日均折算 / daily corrected mg/m³"));
                headers.push(format!("{p} 排放量 / emission kg"));
                headers.push(format!("{p} 有效小时 / valid h"));
                headers.push(format!("{p} 超标小时 / exceeded h"));
                headers.push(format!("{p} 停运小时 / stopped h"));
            }
            let rows = docs
                .iter()
                .map(|(_, _, d)| {
                    let mut r = vec![text(&d.day)];
                    for p in POLLUTANTS {
                        match d.pollutants.get(p) {
                            Some(x) => r.extend([
                                num(x.measured_mean, 2),
                                num(x.corrected_mean, 2),
                                num(Some(x.mass_kg), 2),
                                num(Some(x.valid_hours as f64), 0),
                                num(Some(x.exceeded_hours as f64), 0),
                                num(Some(x.stopped_hours as f64), 0),
                            ]),
                            None => r.extend((0..6).map(|_| num(None, 0))),
                        }
                    }
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {y}-{m:02} 日均值 / daily values (HJ 75-2017)", a.entity),
                headers,
                rows,
            })
        }
        Kind::CemsMonthly => {
            let y = a.year.ok_or_else(|| need("year"))?;
            let months = engine.cems_monthly(Some(&a.entity), y)?;
            let mut headers = vec!["月份 / Month".to_string()];
            for p in POLLUTANTS {
                headers.push(format!("{p} 排放量 / emission kg"));
                headers.push(format!("{p} 有效天数 / valid days"));
                headers.push(format!("{p} 有效小时 / valid h"));
                headers.push(format!("{p} 超标小时 / exceeded h"));
                headers.push(format!("{p} 达标率 / compliance %"));
                headers.push(format!("{p} 月有效 / month valid"));
            }
            let rows = months
                .iter()
                .map(|mo| {
                    let mut r = vec![text(format!("{}-{:02}", mo.year, mo.month))];
                    for p in POLLUTANTS {
                        match mo.pollutants.get(p) {
                            Some(x) => r.extend([
                                num(Some(x.mass_kg), 2),
                                num(Some(x.valid_days as f64), 0),
                                num(Some(x.valid_hours as f64), 0),
                                num(Some(x.exceeded_hours as f64), 0),
                                num(x.compliance_percent, 1),
                                text(if x.month_valid { "是 yes" } else { "否 no" }),
                            ]),
                            None => r.extend((0..6).map(|_| num(None, 0))),
                        }
                    }
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {y} 月均值 / monthly values (HJ 75-2017)", a.entity),
                headers,
                rows,
            })
        }
        Kind::AirDaily => {
            let (y, m) = a.month.ok_or_else(|| need("month (YYYY-MM)"))?;
            let (first, last) = month_days(y, m).ok_or_else(|| need("a valid month"))?;
            let docs = engine.results::<AirDay>(
                Some(&a.entity),
                time::day_start_ms(first),
                time::day_start_ms(last),
            )?;
            let keys = ["SO2", "NO2", "CO", "O3_8h_max", "PM10", "PM2.5"];
            let mut headers = vec!["日期 / Day".to_string()];
            for k in keys {
                let unit = if k == "CO" { "mg/m³" } else { "µg/m³" };
                headers.push(format!("{k} {unit}"));
            }
            headers.extend([
                "AQI".to_string(),
                "级别 / Grade".into(),
                "类别 / Category".into(),
                "首要污染物 / Primary".into(),
            ]);
            let rows = docs
                .iter()
                .map(|(_, _, d)| {
                    let mut r = vec![text(&d.day)];
                    for k in keys {
                        let dec = if k == "CO" { 1 } else { 0 };
                        r.push(num(d.values.get(k).copied().flatten(), dec));
                    }
                    let aqi = d.aqi.as_ref();
                    r.push(num(aqi.and_then(|x| x.aqi).map(f64::from), 0));
                    r.push(text(aqi.and_then(|x| x.grade.clone()).unwrap_or_default()));
                    r.push(text(
                        aqi.and_then(|x| {
                            Some(format!(
                                "{} {}",
                                x.category_zh.as_ref()?,
                                x.category_en.as_ref()?
                            ))
                        })
                        .unwrap_or_default(),
                    ));
                    r.push(text(
                        aqi.map(|x| x.primary_pollutants.join(", "))
                            .unwrap_or_default(),
                    ));
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {y}-{m:02} 日报 / daily AQI (HJ 633)", a.entity),
                headers,
                rows,
            })
        }
        Kind::AirMonthly => {
            let y = a.year.ok_or_else(|| need("year"))?;
            let months = engine.air_monthly(&a.entity, y)?;
            let mut headers = vec!["月份 / Month".to_string()];
            for (key, _, label) in crate::standards::hj663::MONTH_STATISTICS {
                let unit = if key == "CO" { "mg/m³" } else { "µg/m³" };
                headers.push(format!("{label} {unit}"));
                headers.push(format!("{label} 有效天数 / days"));
            }
            headers.extend([
                "AQI 有效天数 / AQI days".to_string(),
                "优良天数 / Good days".into(),
                "优良率 / Good rate %".into(),
            ]);
            let rows = months
                .iter()
                .map(|m| {
                    let mut r = vec![text(format!("{}-{:02}", m.year, m.month))];
                    for (key, _, label) in crate::standards::hj663::MONTH_STATISTICS {
                        let v = m.values.get(label);
                        r.push(num(
                            v.and_then(|v| v.value),
                            if key == "CO" { 1 } else { 0 },
                        ));
                        r.push(num(v.map(|v| v.days as f64), 0));
                    }
                    r.push(num(Some(f64::from(m.aqi_days)), 0));
                    r.push(num(Some(f64::from(m.good_days)), 0));
                    r.push(num(m.good_rate_percent, 1));
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {y} 月评价 / monthly statistics (HJ 663)", a.entity),
                headers,
                rows,
            })
        }
        Kind::WaterDaily => {
            let (y, m) = a.month.ok_or_else(|| need("month (YYYY-MM)"))?;
            let (first, last) = month_days(y, m).ok_or_else(|| need("a valid month"))?;
            let docs = engine.results::<WaterDay>(
                Some(&a.entity),
                time::day_start_ms(first),
                time::day_start_ms(last),
            )?;
            let mut keys: Vec<String> = docs
                .iter()
                .flat_map(|(_, _, d)| d.values.keys().cloned())
                .collect();
            keys.sort();
            keys.dedup();
            let mut headers = vec!["日期 / Day".to_string()];
            headers.extend(keys.iter().map(|k| format!("{k} 日均 / daily mean")));
            headers.push("水量 / Volume m³".into());
            headers.push("一级A / GB 18918 Class 1A".into());
            let rows = docs
                .iter()
                .map(|(_, _, d)| {
                    let mut r = vec![text(&d.day)];
                    for k in &keys {
                        let dec = crate::catalogue::reporting_decimals(
                            k,
                            crate::catalogue::Reporting::Water,
                        );
                        r.push(num(d.values.get(k).copied().flatten(), dec));
                    }
                    r.push(num(d.volume_m3, 0));
                    r.push(text(
                        match d.gb18918_class_1a.as_ref().and_then(|g| g.compliant) {
                            Some(true) => "达标 compliant",
                            Some(false) => "超标 exceeded",
                            None => "",
                        },
                    ));
                    r
                })
                .collect();
            Ok(Table {
                title: format!("{} {y}-{m:02} 日均值 / daily values", a.entity),
                headers,
                rows,
            })
        }
    }
}

fn rounded(v: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (v * f).round() / f
}

/// CSV (RFC 4180 quoting), UTF-8 with a BOM; an empty cell for a value that is not valid.
pub fn to_csv(t: &Table) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("\u{feff}");
    out.push_str(
        &t.headers
            .iter()
            .map(|h| field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("\r\n");
    for r in &t.rows {
        let cells: Vec<String> = r
            .iter()
            .map(|c| match c {
                Cell::Text(s) => field(s),
                Cell::Num(Some(v), d) => format!("{:.*}", *d as usize, rounded(*v, *d)),
                Cell::Num(None, _) => String::new(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// XLSX: the title in A1, headers in row 2, numbers as numbers (formatted to their precision).
pub fn to_xlsx(t: &Table) -> Result<Vec<u8>, TableError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    let bold = Format::new().set_bold();
    ws.write_string_with_format(0, 0, &t.title, &bold)?;
    for (c, h) in t.headers.iter().enumerate() {
        ws.write_string_with_format(1, c as u16, h, &bold)?;
    }
    for (r, row) in t.rows.iter().enumerate() {
        let r = (r + 2) as u32;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Text(s) => {
                    ws.write_string(r, c, s)?;
                }
                Cell::Num(Some(v), d) => {
                    let pattern = if *d == 0 {
                        "0".to_string()
                    } else {
                        format!("0.{}", "0".repeat(*d as usize))
                    };
                    ws.write_number_with_format(
                        r,
                        c,
                        rounded(*v, *d),
                        &Format::new().set_num_format(&pattern),
                    )?;
                }
                Cell::Num(None, _) => {}
            }
        }
    }
    Ok(wb.save_to_buffer()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_leaves_invalid_values_empty() {
        let t = Table {
            title: "t".into(),
            headers: vec!["日期 / Day".into(), "a, b".into()],
            rows: vec![
                vec![text("2026-12-01"), num(Some(37.456), 2)],
                vec![text("x\"y"), num(None, 2)],
            ],
        };
        let csv = to_csv(&t);
        assert!(csv.starts_with('\u{feff}'));
        assert_eq!(
            csv.trim_start_matches('\u{feff}'),
            "日期 / Day,\"a, b\"\r\n2026-12-01,37.46\r\n\"x\"\"y\",\r\n"
        );
        assert!(to_xlsx(&t).unwrap().starts_with(b"PK"), "an XLSX is a zip");
    }
}
