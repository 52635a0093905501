//! `enviromon report`: the daily briefing as a picture, for when Grafana is not at hand.
//!
//! It asks the daemon's API for the district's daily AQI over the 30 days ending on the chosen day,
//! every unit's hourly CEMS results of that day and the plan's year-to-date indicators, then draws
//! one PNG: the daily AQI against the HJ 633 grade bands, and each unit's hourly corrected SO2 and
//! NOx against its limit. The same figures are printed as text. Gathering ([`ReportData::from_api`])
//! is separate from drawing ([`render_png`]) so the numbers can be tested without pixels.
//!
//! Text is drawn with a CJK font found on the machine (Debian's `fonts-wqy-microhei` or
//! `fonts-noto-cjk`) or given with `--font`; plotters' pure-Rust `ab_glyph` renderer is used, so no
//! fontconfig is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::standards::results::{
    AirDay, AirHour, AqiSummary, CemsHour, Compliance, IndicatorStatus, Page,
};
use crate::standards::time::{self, DAY_MS, HOUR_MS};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "no CJK font found (looked in {searched}); install Debian's fonts-wqy-microhei or pass --font FILE"
    )]
    NoFont { searched: String },
    #[error("cannot read the font {path}: {source}")]
    FontRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a font plotters can use (TrueType/OpenType, or a collection)")]
    FontInvalid { path: PathBuf },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// Fonts with Chinese glyphs, in order of preference (Debian package paths).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
];

/// The family name the report draws with, registered once per process.
const FAMILY: &str = "enviromon-cjk";

/// One day of the district's AQI (HJ 633 daily report).
#[derive(Debug, Clone, PartialEq)]
pub struct DayAqi {
    pub day: NaiveDate,
    pub aqi: Option<f64>,
    pub grade: Option<String>,
    pub category_zh: Option<String>,
    pub primary: Vec<String>,
}

impl DayAqi {
    /// From an HJ 633 result as the API gives it.
    fn from_report(day: NaiveDate, aqi: Option<&AqiSummary>) -> DayAqi {
        DayAqi {
            day,
            aqi: aqi.and_then(|a| a.aqi).map(f64::from),
            grade: aqi.and_then(|a| a.grade.clone()),
            category_zh: aqi.and_then(|a| a.category_zh.clone()),
            primary: aqi
                .map(|a| a.primary_pollutants.clone())
                .unwrap_or_default(),
        }
    }
}

/// One unit's hourly corrected concentration of one pollutant (hour labelled by its end).
#[derive(Debug, Clone, PartialEq)]
pub struct HourPoint {
    /// 1–24: the hour's end, CST.
    pub hour: u32,
    pub corrected: f64,
    pub limit: Option<f64>,
    pub valid: bool,
}

/// A plan indicator's year-to-date value.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub id: String,
    pub name_zh: String,
    pub actual: Option<f64>,
    pub target: f64,
    pub status: String,
}

/// Everything the picture and the text show.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub day: NaiveDate,
    /// Oldest first; one entry per day of the window, with `aqi: None` where no daily result exists.
    pub aqi_days: Vec<DayAqi>,
    /// pollutant ("SO2", "NOx") → unit → hours.
    pub cems: BTreeMap<String, BTreeMap<String, Vec<HourPoint>>>,
    pub indicators: Vec<Indicator>,
    /// The remaining number of non-good days the year can afford (negative: already missed).
    pub affordable_non_good_days: Option<f64>,
    /// The day's latest district hour with an AQI (hour 1–24, its AQI): shown while the day's
    /// daily result does not exist yet (the day is not over, or too few hours are valid).
    pub latest_hour: Option<(u32, DayAqi)>,
    /// Unit id → the name people use (大唐洛热 #1 机组), for the legends.
    pub unit_names: BTreeMap<String, String>,
}

/// Columns right of the last day that hold the grade names.
const LABEL_COLUMNS: i32 = 2;

/// Days of daily AQI shown.
pub const WINDOW_DAYS: i64 = 30;
/// Pollutants drawn against their limits.
pub const POLLUTANTS: [&str; 2] = ["SO2", "NOx"];

/// The API ranges the report asks for: (district air daily from/to, the day's hours from/to), in
/// ms, inclusive, as `/api/v1/air/daily`, `/api/v1/air/hourly` and `/api/v1/cems/hourly` take them.
pub fn ranges(day: NaiveDate) -> ((i64, i64), (i64, i64)) {
    let start = time::day_start_ms(day);
    (
        (start - (WINDOW_DAYS - 1) * DAY_MS, start),
        (start + HOUR_MS, start + DAY_MS),
    )
}

impl ReportData {
    /// Build from the API's answers: `/api/v1/air/daily?station=district`,
    /// `/api/v1/air/hourly?station=district` and `/api/v1/cems/hourly` (the day's hours), and
    /// `/api/v1/compliance`.
    pub fn from_api(
        day: NaiveDate,
        air_daily: &Page<AirDay>,
        air_hourly: &Page<AirHour>,
        cems_hourly: &Page<CemsHour>,
        compliance: &Compliance,
    ) -> Self {
        let mut by_day: BTreeMap<NaiveDate, DayAqi> = BTreeMap::new();
        for d in &air_daily.results {
            let Ok(date) = NaiveDate::parse_from_str(&d.day, "%Y-%m-%d") else {
                continue;
            };
            by_day.insert(date, DayAqi::from_report(date, d.aqi.as_ref()));
        }
        let aqi_days = (0..WINDOW_DAYS)
            .rev()
            .filter_map(|back| day.checked_sub_days(chrono::Days::new(back as u64)))
            .map(|date| {
                by_day.remove(&date).unwrap_or(DayAqi {
                    day: date,
                    aqi: None,
                    grade: None,
                    category_zh: None,
                    primary: Vec::new(),
                })
            })
            .collect();

        let day_start = time::day_start_ms(day);
        let latest_hour = air_hourly
            .results
            .iter()
            .filter_map(|h| {
                let offset = h.hour_ms - day_start;
                h.aqi.as_ref()?.aqi?;
                (offset > 0 && offset <= DAY_MS).then(|| {
                    (
                        (offset / HOUR_MS) as u32,
                        DayAqi::from_report(day, h.aqi.as_ref()),
                    )
                })
            })
            .max_by_key(|(hour, _)| *hour);
        let mut cems: BTreeMap<String, BTreeMap<String, Vec<HourPoint>>> = BTreeMap::new();
        for h in &cems_hourly.results {
            let offset = h.hour_ms - day_start;
            if offset <= 0 || offset > DAY_MS {
                continue;
            }
            let hour = (offset / HOUR_MS) as u32;
            for q in POLLUTANTS {
                let Some(p) = h.pollutants.get(q) else {
                    continue;
                };
                let Some(corrected) = p.corrected else {
                    continue;
                };
                cems.entry(q.to_string())
                    .or_default()
                    .entry(h.unit.clone())
                    .or_default()
                    .push(HourPoint {
                        hour,
                        corrected,
                        limit: Some(p.limit),
                        valid: p.is_valid(),
                    });
            }
        }
        for units in cems.values_mut() {
            for points in units.values_mut() {
                points.sort_by_key(|p| p.hour);
            }
        }

        let indicators = compliance
            .indicators
            .iter()
            .filter(|i| i.status != IndicatorStatus::Manual)
            .map(|i| Indicator {
                id: i.id.clone(),
                name_zh: i.name_zh.clone(),
                actual: i.actual,
                target: i.target,
                status: serde_json::to_value(i.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect();
        let affordable = compliance
            .good_days()
            .map(|g| g.affordable_non_good_days as f64);
        ReportData {
            day,
            aqi_days,
            cems,
            indicators,
            affordable_non_good_days: affordable,
            latest_hour,
            unit_names: BTreeMap::new(),
        }
    }

    /// Name the units in the legends (from `GET /api/v1/units`).
    pub fn with_unit_names(mut self, names: BTreeMap<String, String>) -> Self {
        self.unit_names = names;
        self
    }

    /// The chosen day's district AQI, if its daily result exists.
    pub fn today(&self) -> Option<&DayAqi> {
        self.aqi_days
            .last()
            .filter(|d| d.day == self.day && d.aqi.is_some())
    }

    /// Unit-hours of the day whose valid hourly corrected value exceeded its limit, per pollutant.
    pub fn exceeded_hours(&self, pollutant: &str) -> usize {
        self.cems
            .get(pollutant)
            .map(|units| {
                units
                    .values()
                    .flatten()
                    .filter(|p| p.valid && p.limit.is_some_and(|l| p.corrected > l))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The briefing as text, Chinese first with English beside.
    pub fn briefing(&self) -> String {
        let mut out = format!(
            "涧西区环境日报 / Jianxi district daily briefing — {}\n",
            self.day
        );
        match self.today() {
            Some(t) => out.push_str(&format!(
                "  空气质量指数 / AQI: {:.0}  {} ({})  首要污染物 / primary: {}\n",
                t.aqi.unwrap_or_default(),
                t.category_zh.as_deref().unwrap_or(""),
                t.grade.as_deref().unwrap_or("-"),
                primary(t)
            )),
            None => {
                out.push_str(
                    "  空气质量指数 / AQI: 当日无有效日报 / no valid daily result for this day\n",
                );
                if let Some((hour, h)) = &self.latest_hour {
                    out.push_str(&format!(
                        "  最新小时 / latest hour {hour:02}:00: AQI {:.0}  {} ({})  首要污染物 / primary: {}\n",
                        h.aqi.unwrap_or_default(),
                        h.category_zh.as_deref().unwrap_or(""),
                        h.grade.as_deref().unwrap_or("-"),
                        primary(h)
                    ));
                }
            }
        }
        for i in &self.indicators {
            out.push_str(&format!(
                "  {} / {}: {} (目标 / target ≥ {}%) [{}]\n",
                i.name_zh,
                i.id,
                i.actual
                    .map(|a| format!("{a:.1}%"))
                    .unwrap_or_else(|| "—".into()),
                i.target,
                i.status
            ));
        }
        if let Some(a) = self.affordable_non_good_days {
            out.push_str(&format!(
                "  剩余可超标天数 / non-good days the year can still afford: {a:.0}\n"
            ));
        }
        for q in POLLUTANTS {
            let units = self.cems.get(q).map(BTreeMap::len).unwrap_or(0);
            out.push_str(&format!(
                "  {q} 超限小时 / hours over the limit: {} ({units} 台机组 / units reporting)\n",
                self.exceeded_hours(q)
            ));
        }
        out
    }
}

fn primary(d: &DayAqi) -> String {
    if d.primary.is_empty() {
        "—".to_string()
    } else {
        d.primary.join("/")
    }
}

/// Load a CJK font: the given file, or the first of [`FONT_CANDIDATES`] that exists.
pub fn load_font(explicit: Option<&Path>) -> Result<(), ReportError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ReportError::NoFont {
                searched: FONT_CANDIDATES.join(", "),
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|source| ReportError::FontRead {
        path: path.clone(),
        source,
    })?;
    // plotters keeps registered fonts for the process's life; the report is a one-shot command.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| ReportError::FontInvalid { path })
}

/// HJ 633 grade bands: (upper AQI bound, colour, label).
const GRADES: [(f64, RGBColor, &str); 6] = [
    (50.0, RGBColor(0, 228, 0), "优 I"),
    (100.0, RGBColor(255, 255, 0), "良 II"),
    (150.0, RGBColor(255, 126, 0), "轻度 III"),
    (200.0, RGBColor(255, 0, 0), "中度 IV"),
    (300.0, RGBColor(153, 0, 76), "重度 V"),
    (500.0, RGBColor(126, 0, 35), "严重 VI"),
];

fn grade_colour(aqi: f64) -> RGBColor {
    GRADES
        .iter()
        .find(|(upper, _, _)| aqi <= *upper)
        .map(|g| g.1)
        .unwrap_or(GRADES[5].1)
}

const UNIT_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Draw the briefing to `path` (1600×1100 PNG). [`load_font`] must have been called.
pub fn render_png(data: &ReportData, path: &Path) -> Result<(), ReportError> {
    draw(data, path).map_err(|e| ReportError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(data: &ReportData, path: &Path) -> DrawResult {
    let root = BitMapBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(110);
    header.draw(&Text::new(
        format!(
            "涧西区环境日报 / Jianxi district daily briefing  {}",
            data.day
        ),
        (20, 12),
        (FAMILY, 34).into_font(),
    ))?;
    let mut line = match (data.today(), &data.latest_hour) {
        (Some(t), _) => format!(
            "日AQI / daily AQI {:.0} {} ({}) 首要污染物 / primary {}",
            t.aqi.unwrap_or_default(),
            t.category_zh.as_deref().unwrap_or(""),
            t.grade.as_deref().unwrap_or("-"),
            primary(t)
        ),
        (None, Some((hour, h))) => format!(
            "{hour:02}:00 实时AQI / latest hour AQI {:.0} {} ({}) 首要污染物 / primary {}",
            h.aqi.unwrap_or_default(),
            h.category_zh.as_deref().unwrap_or(""),
            h.grade.as_deref().unwrap_or("-"),
            primary(h)
        ),
        (None, None) => "AQI: 当日无有效日报 / no valid daily result".into(),
    };
    for i in &data.indicators {
        if let Some(a) = i.actual {
            line.push_str(&format!("   {} {a:.1}% (≥{}%)", i.name_zh, i.target));
        }
    }
    header.draw(&Text::new(line, (20, 62), (FAMILY, 20).into_font()))?;

    let (top, bottom) = body.split_vertically(480);
    draw_aqi(data, &top)?;
    let halves = bottom.split_evenly((1, 2));
    for (area, q) in halves.iter().zip(POLLUTANTS) {
        draw_cems(data, q, area)?;
    }
    root.present()?;
    Ok(())
}

fn draw_aqi(
    data: &ReportData,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
) -> DrawResult {
    let max = data
        .aqi_days
        .iter()
        .filter_map(|d| d.aqi)
        .fold(150.0_f64, f64::max);
    let y_top = GRADES
        .iter()
        .map(|g| g.0)
        .find(|u| *u >= max)
        .unwrap_or(500.0);
    let n = data.aqi_days.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "区域日 AQI 与分级 / District daily AQI against the HJ 633 grades",
            (FAMILY, 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0..n + LABEL_COLUMNS, 0.0..y_top)?;
    let days = data.aqi_days.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(15)
        .x_label_formatter(&|i| {
            days.get(*i as usize)
                .map(|d| d.day.format("%m-%d").to_string())
                .unwrap_or_default()
        })
        .y_desc("AQI")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FAMILY, 14))
        .draw()?;
    // Grade bands behind the bars; their names in the two spare columns on the right.
    let mut lower = 0.0;
    for (upper, colour, _) in GRADES {
        if lower >= y_top {
            break;
        }
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, lower), (n + LABEL_COLUMNS, upper.min(y_top))],
            colour.mix(0.18).filled(),
        )))?;
        lower = upper;
    }
    chart.draw_series(data.aqi_days.iter().enumerate().filter_map(|(i, d)| {
        d.aqi.map(|aqi| {
            let x = i as i32;
            Rectangle::new([(x, 0.0), (x + 1, aqi)], grade_colour(aqi).filled())
        })
    }))?;
    chart.draw_series(data.aqi_days.iter().enumerate().filter_map(|(i, d)| {
        d.aqi.map(|aqi| {
            Rectangle::new(
                [(i as i32, 0.0), (i as i32 + 1, aqi)],
                BLACK.stroke_width(1),
            )
        })
    }))?;
    let mut lower = 0.0;
    for (upper, _, label) in GRADES {
        if lower >= y_top {
            break;
        }
        chart.draw_series(std::iter::once(Text::new(
            label.to_string(),
            (n, (lower + upper.min(y_top)) / 2.0 + 4.0),
            (FAMILY, 15).into_font(),
        )))?;
        lower = upper;
    }
    Ok(())
}

/// The colour of "no data" messages.
const EMPTY_GREY: RGBColor = RGBColor(110, 110, 110);

/// Width of the legend column right of each CEMS plot: legends never cover the data.
pub const LEGEND_WIDTH: u32 = 240;

fn draw_cems(
    data: &ReportData,
    pollutant: &str,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
) -> DrawResult {
    let empty = BTreeMap::new();
    let units = data.cems.get(pollutant).unwrap_or(&empty);
    let title =
        format!("{pollutant} 小时折算浓度 / hourly corrected, mg/m³ (虚线: 限值 / dashed: limit)");
    if units.is_empty() {
        // An explicit empty state, not an empty axis.
        area.draw(&Text::new(title, (16, 12), (FAMILY, 20).into_font()))?;
        let (_, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            format!("{pollutant}：当日无机组小时数据 / no unit reported an hour this day"),
            (24, (h / 2) as i32),
            (FAMILY, 22).into_font().color(&EMPTY_GREY),
        ))?;
        return Ok(());
    }
    let (w, _) = area.dim_in_pixel();
    let (plot, legend) = area.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
    let limit = units.values().flatten().find_map(|p| p.limit);
    let max = units
        .values()
        .flatten()
        .map(|p| p.corrected)
        .chain(limit)
        .fold(1.0_f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0u32..24u32, 0.0..max)?;
    chart
        .configure_mesh()
        .x_labels(12)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("时 / hour (CST, 整点结束 / labelled by its end)")
        .label_style((FAMILY, 14))
        .draw()?;
    if let Some(l) = limit {
        chart.draw_series(DashedLineSeries::new(
            [(0u32, l), (24u32, l)],
            10,
            6,
            RED.stroke_width(2),
        ))?;
    }
    for (i, (unit, points)) in units.iter().enumerate() {
        let colour = UNIT_COLOURS[i % UNIT_COLOURS.len()];
        chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.hour, p.corrected)),
            colour.stroke_width(2),
        ))?;
        // Filled: a valid hour (HJ 75); hollow: too few valid minutes.
        chart.draw_series(points.iter().map(|p| {
            let style = if p.valid {
                colour.filled()
            } else {
                colour.stroke_width(1)
            };
            Circle::new((p.hour, p.corrected), 4, style)
        }))?;
        // The legend, in its own column: the unit's name, and how many hours exceeded.
        let y = 48 + 26 * i as i32;
        legend.draw(&PathElement::new([(8, y), (36, y)], colour.stroke_width(3)))?;
        let over = points
            .iter()
            .filter(|p| p.valid && p.limit.is_some_and(|l| p.corrected > l))
            .count();
        let name = data
            .unit_names
            .get(unit)
            .cloned()
            .unwrap_or_else(|| unit.clone());
        legend.draw(&Text::new(
            format!("{name}  超限 {over} h"),
            (42, y - 8),
            (FAMILY, 15).into_font(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ranges_cover_thirty_days_and_the_days_hour_labels() {
        let ((af, at), (cf, ct)) = ranges(d("2026-11-24"));
        // 2026-11-24 00:00 CST = 2026-11-23 16:00 UTC = 1795449600000 ms.
        assert_eq!(at, 1_795_449_600_000);
        assert_eq!(at - af, 29 * DAY_MS);
        // Hours are labelled by their end: 01:00 … 24:00 CST.
        assert_eq!(cf, at + HOUR_MS);
        assert_eq!(ct, at + 24 * HOUR_MS);
    }

    #[test]
    fn gathers_the_window_units_and_indicators() {
        let day = d("2026-11-24");
        let start = time::day_start_ms(day);
        // Fixtures in the API's shapes, decoded by the same types the daemon serves.
        let aqi = |v: Option<u32>, grade: Option<&str>, cat: Option<&str>, primary: &[&str]| {
            json!({"aqi": v, "aqi_from_available": v, "grade": grade, "category_zh": cat, "category_en": null,
                   "primary_pollutants": primary, "iaqi": {}, "missing": [], "edition": "HJ633-2026"})
        };
        let air_day = |day: &str, a: Value| json!({"station": "district", "day": day, "values": {}, "validity": {}, "aqi": a, "good_day": null});
        let air: Page<AirDay> = serde_json::from_value(json!({"count": 3, "results": [
            air_day("2026-11-24", aqi(Some(111), Some("III"), Some("轻度污染"), &["PM2.5"])),
            air_day("2026-11-20", aqi(Some(45), Some("I"), Some("优"), &[])),
            air_day("2026-10-01", aqi(Some(60), None, None, &[]))
        ]}))
        .unwrap();
        let p = |c: f64, status: &str| {
            json!({"status": status, "valid_minutes": 60, "measured": c, "corrected": c, "limit": 35.0,
                   "exceeded": false, "over_range": false, "mass_kg_h": null, "source": "minutes"})
        };
        let hour = |unit: &str, ms: i64, pollutants: Value| {
            json!({"unit": unit, "site": "x", "hour": "", "hour_ms": ms, "o2_ref_percent": 6.0, "o2_mean": null,
                   "flue_flow_mean": null, "minutes_with_data": 60, "pollutants": pollutants})
        };
        let mut nox = p(20.0, "valid");
        nox["limit"] = json!(50.0);
        let cems: Page<CemsHour> = serde_json::from_value(json!({"count": 4, "results": [
            hour("dt-1", start + 2 * HOUR_MS, json!({"SO2": p(40.0, "valid"), "NOx": nox})),
            hour("dt-1", start + HOUR_MS, json!({"SO2": p(36.0, "invalid")})),
            hour("sy-1", start + 24 * HOUR_MS, json!({"SO2": p(10.0, "valid")})),
            // The previous day's 24:00 is not this day's.
            hour("sy-1", start, json!({"SO2": p(99.0, "valid")}))
        ]}))
        .unwrap();
        let good: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "year": 2026, "from": "2026-01-01", "to": "2026-12-31", "target_percent": 80.0,
            "valid_days": 300, "good_days": 114, "rate_percent": 37.9, "remaining_days": 37,
            "affordable_non_good_days": -5, "assumed_valid_from": "2026-11-25", "already_missed": true,
            "months": []
        }))
        .unwrap();
        let compliance: Compliance = serde_json::from_value(json!({
            "year": 2026, "from": "2026-01-01", "to": "2026-12-31", "as_of": "2026-11-24",
            "indicators": [
                {"id": "air_good_days_rate", "name_zh": "空气质量二级以上天数比例", "name_en": "", "unit": "%",
                 "comparison": ">=", "actual": 37.9, "target": 80.0, "status": "missed", "detail": good},
                {"id": "green_coverage_rate", "name_zh": "", "name_en": "", "unit": "%", "comparison": ">=",
                 "actual": null, "target": 43.0, "status": "manual"}
            ]
        }))
        .unwrap();
        let air_hour = |ms: i64, a: Value| json!({"station": "district", "hour": "", "hour_ms": ms, "values": {}, "aqi": a});
        let hourly: Page<AirHour> = serde_json::from_value(json!({"count": 3, "results": [
            air_hour(start + 9 * HOUR_MS, aqi(Some(80), Some("II"), Some("良"), &["PM2.5"])),
            air_hour(start + 10 * HOUR_MS, aqi(None, None, None, &[])),
            air_hour(start + 8 * HOUR_MS, aqi(Some(70), None, None, &[]))
        ]}))
        .unwrap();
        let r = ReportData::from_api(day, &air, &hourly, &cems, &compliance);
        // The day's daily result exists, so the briefing shows it, not the latest hour.
        assert!(!r.briefing().contains("latest hour"));
        // The latest hour with an AQI (10:00 has none).
        assert_eq!(
            r.latest_hour.as_ref().map(|(h, a)| (*h, a.aqi)),
            Some((9, Some(80.0)))
        );
        assert_eq!(r.aqi_days.len(), 30);
        assert_eq!(r.aqi_days[0].day, d("2026-10-26"));
        assert_eq!(r.today().and_then(|t| t.aqi), Some(111.0));
        assert_eq!(r.aqi_days[25].aqi, Some(45.0));
        assert_eq!(r.aqi_days.iter().filter(|d| d.aqi.is_some()).count(), 2);
        let so2 = &r.cems["SO2"];
        assert_eq!(
            so2["dt-1"].iter().map(|p| p.hour).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(so2["sy-1"].len(), 1);
        assert_eq!(so2["sy-1"][0].hour, 24);
        // Only dt-1's valid 02:00 hour (40 > 35) counts; its 01:00 hour is invalid.
        assert_eq!(r.exceeded_hours("SO2"), 1);
        assert_eq!(r.exceeded_hours("NOx"), 0);
        assert_eq!(r.indicators.len(), 1);
        assert_eq!(r.affordable_non_good_days, Some(-5.0));
        let text = r.briefing();
        assert!(text.contains("AQI: 111"), "{text}");
        assert!(text.contains("PM2.5"), "{text}");
        assert!(text.contains("37.9%"), "{text}");
        // Without the day's daily result, the latest hour stands in.
        let no_daily =
            ReportData::from_api(day, &Page::new(Vec::new()), &hourly, &cems, &compliance);
        let text = no_daily.briefing();
        assert!(text.contains("no valid daily result"), "{text}");
        assert!(text.contains("latest hour 09:00: AQI 80"), "{text}");
    }

    #[test]
    fn grade_colours_follow_the_bands() {
        assert_eq!(grade_colour(50.0), GRADES[0].1);
        assert_eq!(grade_colour(51.0), GRADES[1].1);
        assert_eq!(grade_colour(301.0), GRADES[5].1);
        assert_eq!(grade_colour(900.0), GRADES[5].1);
    }

    /// The picture's regions: each unit's legend sits in the column right of its plot, named as
    /// people know it; a pollutant without data says so instead of drawing an empty axis.
    #[test]
    fn legends_sit_outside_the_plots_and_an_empty_chart_says_so() {
        load_font(None).expect("a CJK font (scripts/test installs fonts-wqy-microhei)");
        let day = d("2026-12-01");
        let point = |hour, corrected| HourPoint {
            hour,
            corrected,
            limit: Some(35.0),
            valid: true,
        };
        let mut so2 = BTreeMap::new();
        so2.insert(
            "dt-1".to_string(),
            (1..=24)
                .map(|h| point(h, 20.0 + h as f64))
                .collect::<Vec<_>>(),
        );
        so2.insert(
            "sy-1".to_string(),
            (1..=24).map(|h| point(h, 10.0)).collect::<Vec<_>>(),
        );
        let data = ReportData {
            day,
            aqi_days: Vec::new(),
            cems: [("SO2".to_string(), so2)].into(),
            indicators: Vec::new(),
            affordable_non_good_days: None,
            latest_hour: None,
            unit_names: BTreeMap::new(),
        }
        .with_unit_names([("dt-1".to_string(), "大唐洛热 #1 机组".to_string())].into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.png");
        render_png(&data, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // The bottom band (below the 110-px header and the 480-px AQI chart), split in two:
        // SO2 on the left (x < 800), NOx on the right.
        let count = |x: std::ops::Range<u32>, rgb: [u8; 3]| {
            img.enumerate_pixels()
                .filter(|(px, py, p)| x.contains(px) && *py >= 590 && p.0 == rgb)
                .count()
        };
        let legend = 800 - LEGEND_WIDTH..800;
        for c in &UNIT_COLOURS[..2] {
            assert!(
                count(legend.clone(), [c.0, c.1, c.2]) > 40,
                "legend entry {c:?} in its column"
            );
        }
        // Nothing of the legend's box is drawn over the plot: no white-on-black frame there, and
        // the data lines are in the plot.
        assert!(
            count(
                0..800 - LEGEND_WIDTH,
                [UNIT_COLOURS[0].0, UNIT_COLOURS[0].1, UNIT_COLOURS[0].2]
            ) > 100
        );
        // NOx has no data: its half carries the grey message.
        assert!(count(800..1600, [EMPTY_GREY.0, EMPTY_GREY.1, EMPTY_GREY.2]) > 50);
    }
}
