//! The daily briefing (日报), for when Grafana is not at hand: `enviromon report` on demand, and the
//! daemon's `[report] daily_at` job, which writes it to a directory and pushes it to the group robots.
//!
//! One gathering for both: [`gather`] asks the API (over HTTP from the CLI, in-process from the
//! daemon) for the district's daily AQI and PM over the 30 days ending on the chosen day, every unit's
//! hourly CEMS results of that day, the water sections' and the plant's daily verdicts, the firing
//! alerts and the plan's year-to-date indicators. The figures become text ([`ReportData::briefing`]),
//! robot markdown ([`ReportData::markdown`]) and a picture ([`draw::render_png`]); the numbers are
//! tested apart from the pixels.

pub mod draw;
pub mod schedule;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use chrono::NaiveDate;
use serde_json::Value;

use crate::standards::results::{
    AirDay, AirHour, AqiSummary, CemsHour, Compliance, IndicatorStatus, Page, TreatmentDay,
    WaterDay,
};
use crate::standards::time::{self, DAY_MS, HOUR_MS};

pub use draw::{load_font, render_png, Font, FONT_CANDIDATES};

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
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon's answer to {path}: {message}")]
    Fetch { path: String, message: String },
}

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
    pub comparison: String,
    pub unit: String,
    pub status: IndicatorStatus,
}

/// How an indicator's standing reads: Chinese, English, and a tone for colours.
pub fn status_words(s: IndicatorStatus) -> (&'static str, &'static str, Tone) {
    match s {
        IndicatorStatus::OnTrack => ("进度正常", "on track", Tone::Good),
        IndicatorStatus::Met => ("达标", "met", Tone::Good),
        IndicatorStatus::AtRisk => ("有风险", "at risk", Tone::Warn),
        IndicatorStatus::Missed => ("未达成", "missed", Tone::Bad),
        IndicatorStatus::NoData => ("无数据", "no data", Tone::None),
        IndicatorStatus::Manual => ("人工填报", "entered by hand", Tone::None),
    }
}

/// A verdict's tone: what colour it is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    None,
}

/// One day of the district's particulate matter (24 h means, µg/m³).
#[derive(Debug, Clone, PartialEq)]
pub struct DayPm {
    pub day: NaiveDate,
    pub pm25: Option<f64>,
    pub pm10: Option<f64>,
}

/// GB 3095 grade II 24-hour limits, µg/m³ (PM2.5, PM10): the lines the PM chart is drawn against.
pub const PM_LIMITS: [(&str, f64); 2] = [("PM2.5", 75.0), ("PM10", 150.0)];

/// One water sensor's day: its verdict and the values it was judged on.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterRow {
    pub sensor: String,
    /// The site's name people use.
    pub place: String,
    /// "III类 (GB 3838)", "一级A 达标 (GB 18918)", "日水量 / volume 150,000 m³".
    pub verdict_zh: String,
    pub verdict_en: String,
    pub tone: Tone,
    /// (parameter, value as reported, its decimal places).
    pub values: Vec<(String, f64, u32)>,
}

/// A firing alert, as the briefing lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub severity: String,
    pub summary_zh: String,
    pub summary_en: String,
    pub fired_at_ms: Option<i64>,
    pub silenced: bool,
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
    /// The district's PM over the same window as `aqi_days`, oldest first.
    pub pm_days: Vec<DayPm>,
    /// The day's latest district hour with PM (hour 1–24; 1 h means): shown while the day has no
    /// daily means yet.
    pub latest_hour_pm: Option<(u32, DayPm)>,
    /// Water sections and the treatment plant on the day.
    pub water: Vec<WaterRow>,
    /// The district's sewage treatment rate on the day, %.
    pub treatment_percent: Option<f64>,
    /// Alerts firing when the briefing was made, most severe first.
    pub alerts: Vec<AlertRow>,
    /// Data-integrity findings that overlap the day (`/api/v1/integrity/findings`), most severe
    /// first.
    pub integrity: Vec<IntegrityRow>,
}

/// Most severe first: critical, warning, then the rest.
fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// One data-integrity finding, as the briefing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrityRow {
    pub unit: String,
    pub rule: String,
    pub severity: String,
    pub start: String,
    pub ongoing: bool,
    pub summary_zh: String,
    pub summary_en: String,
}

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
        let mut pm_by_day: BTreeMap<NaiveDate, DayPm> = BTreeMap::new();
        for d in &air_daily.results {
            let Ok(date) = NaiveDate::parse_from_str(&d.day, "%Y-%m-%d") else {
                continue;
            };
            by_day.insert(date, DayAqi::from_report(date, d.aqi.as_ref()));
            let v = |k: &str| d.values.get(k).copied().flatten();
            pm_by_day.insert(
                date,
                DayPm {
                    day: date,
                    pm25: v("PM2.5"),
                    pm10: v("PM10"),
                },
            );
        }
        let window: Vec<NaiveDate> = (0..WINDOW_DAYS)
            .rev()
            .filter_map(|back| day.checked_sub_days(chrono::Days::new(back as u64)))
            .collect();
        let pm_days = window
            .iter()
            .map(|date| {
                pm_by_day.remove(date).unwrap_or(DayPm {
                    day: *date,
                    pm25: None,
                    pm10: None,
                })
            })
            .collect();
        let aqi_days = window
            .into_iter()
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
        let latest_hour_pm = air_hourly
            .results
            .iter()
            .filter_map(|h| {
                let offset = h.hour_ms - day_start;
                let v = |k: &str| h.values.get(k).copied().flatten();
                let pm = DayPm {
                    day,
                    pm25: v("PM2.5"),
                    pm10: v("PM10"),
                };
                (offset > 0 && offset <= DAY_MS && (pm.pm25.is_some() || pm.pm10.is_some()))
                    .then_some(((offset / HOUR_MS) as u32, pm))
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
                comparison: i.comparison.clone(),
                unit: i.unit.clone(),
                status: i.status,
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
            pm_days,
            latest_hour_pm,
            water: Vec::new(),
            treatment_percent: None,
            alerts: Vec::new(),
            integrity: Vec::new(),
        }
    }

    /// The day's data-integrity findings (`/api/v1/integrity/findings` over the day).
    pub fn with_integrity(mut self, doc: &Value) -> Self {
        let mut rows: Vec<IntegrityRow> = doc["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let t = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                IntegrityRow {
                    unit: t("unit"),
                    rule: t("rule"),
                    severity: t("severity"),
                    start: t("start"),
                    ongoing: f["ongoing"].as_bool().unwrap_or(false),
                    summary_zh: t("summary_zh"),
                    summary_en: t("summary_en"),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (severity_rank(&a.severity), &a.start).cmp(&(severity_rank(&b.severity), &b.start))
        });
        self.integrity = rows;
        self
    }

    fn integrity_line(&self, f: &IntegrityRow) -> String {
        let unit = self.unit_names.get(&f.unit).unwrap_or(&f.unit);
        format!(
            "[{}] {unit} {}{}：{}",
            f.severity,
            f.rule,
            if f.ongoing {
                "（进行中 / ongoing）"
            } else {
                ""
            },
            f.summary_zh
        )
    }

    /// The day's water verdicts (`/api/v1/water/daily` for the day) and treatment rate
    /// (`?sensor=treatment`), with the places' names (`/api/v1/sites`).
    pub fn with_water(
        mut self,
        water: &Page<WaterDay>,
        treatment: &Page<TreatmentDay>,
        site_names: &BTreeMap<String, String>,
    ) -> Self {
        let day = self.day.format("%Y-%m-%d").to_string();
        self.treatment_percent = treatment
            .results
            .iter()
            .find(|t| t.day == day)
            .and_then(|t| t.treatment_rate_percent);
        self.water = water
            .results
            .iter()
            .filter(|w| w.day == day)
            .filter_map(|w| water_row(w, site_names))
            .collect();
        self
    }

    /// The alerts firing now (`/api/v1/alerts`), most severe first, then the oldest first.
    pub fn with_alerts(mut self, alerts: &Value) -> Self {
        let mut rows: Vec<AlertRow> = alerts["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["phase"] == "firing")
            .map(|a| {
                let ann = |k: &str| a["annotations"][k].as_str().unwrap_or_default().to_string();
                let zh = ann("summary_zh");
                AlertRow {
                    severity: a["severity"].as_str().unwrap_or("info").to_string(),
                    summary_zh: if zh.is_empty() {
                        a["rule"].as_str().unwrap_or_default().to_string()
                    } else {
                        zh
                    },
                    summary_en: ann("summary_en"),
                    fired_at_ms: a["fired_at_ms"].as_i64(),
                    silenced: a["silenced"].as_bool().unwrap_or(false),
                }
            })
            .collect();
        rows.sort_by_key(|r| (severity_rank(&r.severity), r.fired_at_ms));
        self.alerts = rows;
        self
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

    /// The headline AQI line: the day's daily result, else the latest hour, else why neither.
    fn aqi_line(&self) -> String {
        match (self.today(), &self.latest_hour) {
            (Some(t), _) => format!(
                "日AQI / daily AQI {:.0}  {} ({})  首要污染物 / primary {}",
                t.aqi.unwrap_or_default(),
                t.category_zh.as_deref().unwrap_or(""),
                t.grade.as_deref().unwrap_or("-"),
                primary(t)
            ),
            (None, Some((hour, h))) => format!(
                "当日无有效日报，最新小时 / no valid daily result; latest hour {hour:02}:00: AQI {:.0}  {} ({})  首要污染物 / primary {}",
                h.aqi.unwrap_or_default(),
                h.category_zh.as_deref().unwrap_or(""),
                h.grade.as_deref().unwrap_or("-"),
                primary(h)
            ),
            (None, None) => "AQI: 当日无有效日报 / no valid daily result for this day".into(),
        }
    }

    /// An indicator as one line: name, figure against target, standing.
    pub fn indicator_line(i: &Indicator) -> String {
        let (zh, en, _) = status_words(i.status);
        format!(
            "{}: {} (目标 / target {} {}{}) {zh} / {en}",
            i.name_zh,
            i.actual
                .map(|a| format!("{a:.1}{}", i.unit))
                .unwrap_or_else(|| "—".into()),
            i.comparison.replace(">=", "≥").replace("<=", "≤"),
            i.target,
            i.unit
        )
    }

    /// The day's PM (24 h means) against GB 3095 grade II; without daily means yet, the latest
    /// hour's 1 h means (which GB 3095 has no 1 h PM limit for: shown without a verdict).
    fn pm_line(&self) -> String {
        let today = self
            .pm_days
            .last()
            .filter(|p| p.day == self.day && (p.pm25.is_some() || p.pm10.is_some()));
        let fmt = |v: Option<f64>, limit: Option<f64>| match (v, limit) {
            (Some(v), Some(l)) if v > l => {
                format!("{v:.0} µg/m³ (超二级 / over grade II {l:.0})")
            }
            (Some(v), _) => format!("{v:.0} µg/m³"),
            (None, _) => "—".into(),
        };
        match (today, &self.latest_hour_pm) {
            (Some(p), _) => format!(
                "日均 / 24 h: PM2.5 {}   PM10 {}",
                fmt(p.pm25, Some(PM_LIMITS[0].1)),
                fmt(p.pm10, Some(PM_LIMITS[1].1))
            ),
            (None, Some((hour, p))) => format!(
                "当日无日均值，最新小时 / no daily mean yet; latest hour {hour:02}:00: PM2.5 {}   PM10 {}",
                fmt(p.pm25, None),
                fmt(p.pm10, None)
            ),
            (None, None) => "当日无数据 / no data this day".into(),
        }
    }

    fn water_line(w: &WaterRow) -> String {
        let values: Vec<String> = w
            .values
            .iter()
            .map(|(k, v, places)| format!("{k} {v:.*}", *places as usize))
            .collect();
        format!(
            "{}: {} / {}{}",
            w.place,
            w.verdict_zh,
            w.verdict_en,
            if values.is_empty() {
                String::new()
            } else {
                format!("  ({})", values.join(", "))
            }
        )
    }

    fn alert_line(a: &AlertRow) -> String {
        format!(
            "[{}{}] {}",
            a.severity,
            if a.silenced {
                ", 已静默 / silenced"
            } else {
                ""
            },
            a.summary_zh
        )
    }

    /// The briefing as text, Chinese first with English beside.
    pub fn briefing(&self) -> String {
        let mut out = format!(
            "涧西区环境日报 / Jianxi district daily briefing — {}\n",
            self.day
        );
        out.push_str(&format!("  空气质量 / air: {}\n", self.aqi_line()));
        out.push_str(&format!("  颗粒物 / PM: {}\n", self.pm_line()));
        for i in &self.indicators {
            out.push_str(&format!("  {}\n", Self::indicator_line(i)));
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
        out.push_str("  水环境 / water:\n");
        if self.water.is_empty() {
            out.push_str("    当日无水质日报 / no water verdict this day\n");
        }
        for w in &self.water {
            out.push_str(&format!("    {}\n", Self::water_line(w)));
        }
        if let Some(t) = self.treatment_percent {
            out.push_str(&format!("    污水处理率 / sewage treated: {t:.1}%\n"));
        }
        out.push_str(&format!(
            "  数据真实性 / data integrity: {} 项发现 / findings\n",
            self.integrity.len()
        ));
        for f in &self.integrity {
            out.push_str(&format!("    {}\n", self.integrity_line(f)));
            out.push_str(&format!("      {}\n", f.summary_en));
        }
        out.push_str(&format!("  告警 / alerts firing: {}\n", self.alerts.len()));
        for a in &self.alerts {
            out.push_str(&format!("    {}\n", Self::alert_line(a)));
        }
        out
    }

    /// The briefing as a group robot's markdown. `image_url`: where the picture can be fetched
    /// (DingTalk shows images by URL only). WeCom colours `<font color="info|warning|comment">`;
    /// DingTalk takes hex colours.
    pub fn markdown(&self, flavour: Robot, image_url: Option<&str>) -> String {
        let colour = |tone: Tone, text: &str| {
            let c = match (flavour, tone) {
                (_, Tone::None) => return text.to_string(),
                (Robot::WeCom, Tone::Good) => "info",
                (Robot::WeCom, Tone::Warn) => "warning",
                (Robot::WeCom, Tone::Bad) => "warning",
                (Robot::DingTalk, Tone::Good) => "#1a9850",
                (Robot::DingTalk, Tone::Warn) => "#e08214",
                (Robot::DingTalk, Tone::Bad) => "#d73027",
            };
            format!("<font color=\"{c}\">{text}</font>")
        };
        let mut md = format!(
            "### 涧西区环境日报 {} / Jianxi daily briefing\n\n",
            self.day
        );
        md.push_str(&format!("**空气 / air**: {}\n\n", self.aqi_line()));
        md.push_str(&format!("**颗粒物 / PM**: {}\n\n", self.pm_line()));
        for i in &self.indicators {
            let (_, _, tone) = status_words(i.status);
            md.push_str(&format!("- {}\n", colour(tone, &Self::indicator_line(i))));
        }
        md.push('\n');
        for q in POLLUTANTS {
            let n = self.exceeded_hours(q);
            let line = format!("{q} 超限 {n} 机组·小时 / unit-hours over the limit");
            md.push_str(&format!(
                "- {}\n",
                colour(if n > 0 { Tone::Bad } else { Tone::Good }, &line)
            ));
        }
        md.push_str("\n**水环境 / water**\n\n");
        if self.water.is_empty() {
            md.push_str("- 当日无水质日报 / no water verdict this day\n");
        }
        for w in &self.water {
            md.push_str(&format!("- {}\n", colour(w.tone, &Self::water_line(w))));
        }
        if let Some(t) = self.treatment_percent {
            md.push_str(&format!("- 污水处理率 / sewage treated: {t:.1}%\n"));
        }
        md.push_str(&format!(
            "\n**告警 / alerts firing: {}**\n\n",
            self.alerts.len()
        ));
        for a in self.alerts.iter().take(MAX_ALERT_LINES) {
            let tone = if a.severity == "critical" {
                Tone::Bad
            } else {
                Tone::Warn
            };
            md.push_str(&format!("- {}\n", colour(tone, &Self::alert_line(a))));
        }
        if self.alerts.len() > MAX_ALERT_LINES {
            md.push_str(&format!(
                "- …… 另有 {} 条 / {} more\n",
                self.alerts.len() - MAX_ALERT_LINES,
                self.alerts.len() - MAX_ALERT_LINES
            ));
        }
        if !self.integrity.is_empty() {
            md.push_str(&format!(
                "\n**数据真实性 / data integrity: {} 项发现 / findings**\n\n",
                self.integrity.len()
            ));
            for f in self.integrity.iter().take(MAX_ALERT_LINES) {
                md.push_str(&format!(
                    "- {}\n",
                    colour(Tone::Warn, &self.integrity_line(f))
                ));
            }
        }
        let tail = image_url
            .map(|url| format!("\n![日报 / briefing]({url})\n"))
            .unwrap_or_default();
        let limit = match flavour {
            Robot::WeCom => WECOM_MARKDOWN_MAX,
            Robot::DingTalk => DINGTALK_MARKDOWN_MAX,
        };
        fit_lines(md, limit - tail.len()) + &tail
    }
}

/// WeCom robots take markdown up to 4096 bytes; DingTalk's limit is larger (20,000 is what its
/// documentation states). Longer briefings are cut at a line, saying so.
pub const WECOM_MARKDOWN_MAX: usize = 4096;
pub const DINGTALK_MARKDOWN_MAX: usize = 20_000;

/// `text` cut at a line boundary to at most `max` bytes, with a closing note when cut.
fn fit_lines(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const NOTE: &str = "\n……（已截断，全文见日报文件 / cut: the whole briefing is in its file）\n";
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if out.len() + line.len() + NOTE.len() > max {
            break;
        }
        out.push_str(line);
    }
    out + NOTE
}

/// Alerts listed by name in the markdown and the picture; the rest are counted.
pub const MAX_ALERT_LINES: usize = 10;

/// The robot a markdown is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Robot {
    DingTalk,
    WeCom,
}

fn primary(d: &DayAqi) -> String {
    if d.primary.is_empty() {
        "—".to_string()
    } else {
        d.primary.join("/")
    }
}

/// A water sensor's verdict of the day, if it has one (GB 3838 class, GB 18918 class 1A, or a
/// flow meter's volume).
fn water_row(w: &WaterDay, site_names: &BTreeMap<String, String>) -> Option<WaterRow> {
    use crate::standards::gb18918;
    use crate::standards::gb3838::{self, WaterClass};
    let place = w
        .site
        .as_ref()
        .and_then(|s| site_names.get(s).cloned())
        .unwrap_or_else(|| w.sensor.clone());
    if let Some(c) = &w.gb3838_class {
        let tone = match c.class {
            WaterClass::I | WaterClass::II | WaterClass::III => Tone::Good,
            WaterClass::IV => Tone::Warn,
            WaterClass::V | WaterClass::WorseThanV => Tone::Bad,
        };
        return Some(WaterRow {
            sensor: w.sensor.clone(),
            place,
            verdict_zh: format!("{} (GB 3838)", c.label_zh),
            verdict_en: format!("class {:?}", c.class).replace("WorseThanV", "worse than V"),
            tone,
            values: c
                .reported
                .iter()
                .map(|(k, v)| {
                    let places = gb3838::parameter_of(k).map_or(2, gb3838::reporting_decimals);
                    (k.clone(), *v, places)
                })
                .collect(),
        });
    }
    if let Some(g) = &w.gb18918_class_1a {
        let (zh, en, tone) = match g.compliant {
            Some(true) => ("一级A 达标", "class 1A met", Tone::Good),
            Some(false) => ("一级A 超标", "class 1A exceeded", Tone::Bad),
            None => ("一级A 数据不足", "class 1A: too few data", Tone::None),
        };
        return Some(WaterRow {
            sensor: w.sensor.clone(),
            place,
            verdict_zh: format!("{zh} (GB 18918)"),
            verdict_en: en.to_string(),
            tone,
            values: g
                .parameters
                .iter()
                .map(|v| {
                    let places = gb18918::reporting_decimals(&v.parameter);
                    (v.parameter.clone(), v.value, places)
                })
                .collect(),
        });
    }
    w.volume_m3.map(|v| WaterRow {
        sensor: w.sensor.clone(),
        place,
        verdict_zh: format!("日水量 {v:.0} m³"),
        verdict_en: "daily volume".to_string(),
        tone: Tone::None,
        values: Vec::new(),
    })
}

/// Everything the briefing asks the API for, in order (see [`gather`]).
pub fn api_paths(day: NaiveDate) -> Vec<String> {
    let ((air_from, air_to), (from, to)) = ranges(day);
    let start = time::day_start_ms(day);
    vec![
        format!("/api/v1/air/daily?station=district&from={air_from}&to={air_to}"),
        format!("/api/v1/air/hourly?station=district&from={from}&to={to}"),
        format!("/api/v1/cems/hourly?from={from}&to={to}"),
        format!("/api/v1/compliance?year={}", chrono::Datelike::year(&day)),
        "/api/v1/units".to_string(),
        format!("/api/v1/water/daily?from={start}&to={start}"),
        format!("/api/v1/water/daily?sensor=treatment&from={start}&to={start}"),
        "/api/v1/sites".to_string(),
        "/api/v1/alerts".to_string(),
        format!(
            "/api/v1/integrity/findings?from={start}&to={}",
            start + time::DAY_MS
        ),
    ]
}

/// Gather the briefing of `day` through `get` (an API path → its JSON answer): the CLI passes an
/// HTTP client, the daemon its own router.
pub async fn gather<F, Fut>(day: NaiveDate, get: F) -> Result<ReportData, ReportError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Value, String>>,
{
    let mut docs = Vec::new();
    for path in api_paths(day) {
        let doc = get(path.clone())
            .await
            .map_err(|message| ReportError::Fetch {
                path: path.clone(),
                message,
            })?;
        docs.push((path, doc));
    }
    fn typed<T: serde::de::DeserializeOwned>(d: (String, Value)) -> Result<T, ReportError> {
        serde_json::from_value(d.1).map_err(|e| ReportError::Fetch {
            path: d.0,
            message: e.to_string(),
        })
    }
    let names = |doc: &Value, key: &str| -> BTreeMap<String, String> {
        doc[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| {
                Some((
                    u["id"].as_str()?.to_string(),
                    u["name_zh"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let [air, hourly, cems, compliance, units, water, treatment, sites, alerts, integrity] =
        <[(String, Value); 10]>::try_from(docs).map_err(|_| ReportError::Fetch {
            path: "/api/v1".into(),
            message: "expected ten answers".into(),
        })?;
    Ok(ReportData::from_api(
        day,
        &typed(air)?,
        &typed(hourly)?,
        &typed(cems)?,
        &typed(compliance)?,
    )
    .with_unit_names(names(&units.1, "units"))
    .with_water(
        &typed(water)?,
        &typed(treatment)?,
        &names(&sites.1, "sites"),
    )
    .with_alerts(&alerts.1)
    .with_integrity(&integrity.1))
}

/// `enviromon report --compare-editions`: the editions side by side, in words (Chinese first).
pub fn editions_text(c: &crate::standards::compare::Comparison) -> String {
    let pct = |r: Option<f64>| r.map(|r| format!("{r:.1}%")).unwrap_or_else(|| "—".into());
    let mut out = format!(
        "空气质量评价标准对比 / AQI editions compared: {} {} … {} ({} 天有日结果 / days with a daily result)\n\n",
        if c.station == "district" { "全区 / district" } else { c.station.as_str() },
        c.from,
        c.to,
        c.days
    );
    out.push_str("标准 / edition     优良天数比例 / good-days rate   优良/有效 good/valid   I    II   III  IV   V    VI   未发布 NA\n");
    for e in &c.editions {
        let g = |k: &str| e.grades.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<18} {:>28}   {:>9}   {:<4} {:<4} {:<4} {:<4} {:<4} {:<4} {}\n",
            e.edition.as_str(),
            pct(e.good_rate_percent),
            format!("{}/{}", e.good_days, e.days_with_aqi),
            g("I"),
            g("II"),
            g("III"),
            g("IV"),
            g("V"),
            g("VI"),
            e.withheld_days
        ));
    }
    out.push_str("\n首要污染物（天）/ primary pollutant (days):\n");
    for e in &c.editions {
        let mut p: Vec<(&String, &u32)> = e.primary_pollutants.iter().collect();
        p.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = p.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  {}: {}\n", e.edition.as_str(), list.join(", ")));
    }
    out.push_str("\n逐月优良天数比例 / good-days rate by month:\n");
    for m in &c.months {
        let cells: Vec<String> = m
            .editions
            .iter()
            .map(|e| {
                format!(
                    "{} {} ({}/{})",
                    e.edition.as_str(),
                    pct(e.good_rate_percent),
                    e.good_days,
                    e.days_with_aqi
                )
            })
            .collect();
        out.push_str(&format!("  {}  {}\n", m.month, cells.join("   ")));
    }
    let changes = c.changed_days.iter().filter(|d| d.good_day_changes).count();
    out.push_str(&format!(
        "\n级别改变的日期 / days whose grade changes: {} (优良与否改变 / good or not changes: {changes})\n",
        c.changed_days.len()
    ));
    for d in &c.changed_days {
        let cells: Vec<String> = d
            .editions
            .iter()
            .map(|v| {
                format!(
                    "{} AQI {} {} {}",
                    v.edition.as_str(),
                    v.aqi.map(|a| a.to_string()).unwrap_or_else(|| "NA".into()),
                    v.grade.clone().unwrap_or_else(|| "—".into()),
                    v.primary_pollutants.join("+")
                )
            })
            .collect();
        out.push_str(&format!(
            "  {}{}  {}\n",
            d.day,
            if d.good_day_changes { " *" } else { "  " },
            cells.join("  →  ")
        ));
    }
    out
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
        let air_day = |day: &str, a: Value, values: Value| json!({"station": "district", "day": day, "values": values, "validity": {}, "aqi": a, "good_day": null});
        let air: Page<AirDay> = serde_json::from_value(json!({"count": 3, "results": [
            air_day("2026-11-24", aqi(Some(111), Some("III"), Some("轻度污染"), &["PM2.5"]), json!({"PM2.5": 84.0, "PM10": 120.0})),
            air_day("2026-11-20", aqi(Some(45), Some("I"), Some("优"), &[]), json!({"PM2.5": 20.0, "PM10": null})),
            air_day("2026-10-01", aqi(Some(60), None, None, &[]), json!({}))
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
        assert!(text.contains("daily AQI 111"), "{text}");
        assert!(text.contains("primary PM2.5"), "{text}");
        assert!(
            text.contains("37.9% (目标 / target ≥ 80%) 未达成 / missed"),
            "{text}"
        );
        // PM against GB 3095 grade II (24 h: PM2.5 75, PM10 150): 84 is over, 120 is not.
        assert!(
            text.contains("PM2.5 84 µg/m³ (超二级 / over grade II 75)   PM10 120 µg/m³\n"),
            "{text}"
        );
        assert_eq!(r.pm_days.len(), 30);
        assert_eq!(r.pm_days[25].pm25, Some(20.0));
        assert_eq!(r.pm_days[25].pm10, None);
        assert!(
            text.contains("当日无水质日报") && text.contains("alerts firing: 0"),
            "{text}"
        );
        // Without the day's daily result, the latest hour stands in.
        let no_daily =
            ReportData::from_api(day, &Page::new(Vec::new()), &hourly, &cems, &compliance);
        let text = no_daily.briefing();
        assert!(text.contains("no valid daily result"), "{text}");
        assert!(text.contains("latest hour 09:00: AQI 80"), "{text}");
    }

    #[test]
    fn water_verdicts_alerts_and_the_robots_markdown() {
        let day = d("2026-12-01");
        let water: Page<WaterDay> = serde_json::from_value(json!({"count": 3, "results": [
            {"sensor": "jianhe-quality", "site": "jianhe-section", "day": "2026-12-01", "values": {}, "hours": {},
             "gb3838_class": {"class": "IV", "label_zh": "IV类", "set_by": ["Nh3n"], "reported": {"NH3-N": 1.21}}},
            {"sensor": "wwtp-outlet-quality", "site": "jianxi-wwtp", "day": "2026-12-01", "values": {}, "hours": {},
             "gb18918_class_1a": {"compliant": false, "parameters": [{"parameter": "TP", "value": 0.62, "limit": "≤ 0.5", "compliant": false}]}},
            // Another day's row is not this day's; an inlet without a verdict is left out.
            {"sensor": "jianhe-quality", "site": "jianhe-section", "day": "2026-11-30", "values": {}, "hours": {},
             "gb3838_class": {"class": "II", "label_zh": "II类", "set_by": [], "reported": {}}},
            {"sensor": "wwtp-inlet-quality", "site": "jianxi-wwtp", "day": "2026-12-01", "values": {"COD": 300.0}, "hours": {}}
        ]}))
        .unwrap();
        let treatment: Page<TreatmentDay> = serde_json::from_value(json!({"count": 1, "results": [
            {"day": "2026-12-01", "treated_m3": 150000.0, "produced_m3": 154000.0, "treatment_rate_percent": 97.4026}
        ]}))
        .unwrap();
        let sites: BTreeMap<String, String> = [
            ("jianhe-section".to_string(), "涧河断面".to_string()),
            ("jianxi-wwtp".to_string(), "涧西污水处理厂".to_string()),
        ]
        .into();
        let alerts = json!({"alerts": [
            {"rule": "good_days_budget_low", "severity": "warning", "phase": "firing", "fired_at_ms": 1,
             "silenced": false, "annotations": {"summary_zh": "优良天数余量不足", "summary_en": "budget low"}},
            {"rule": "cems_ultra_low_exceedance", "severity": "critical", "phase": "firing", "fired_at_ms": 2,
             "silenced": true, "annotations": {"summary_zh": "大唐洛热 #1 机组 SO2 超限", "summary_en": "SO2 over"}},
            {"rule": "x", "severity": "critical", "phase": "resolved", "fired_at_ms": 0, "annotations": {}}
        ]});
        let r = ReportData::from_api(
            day,
            &Page::new(Vec::new()),
            &Page::new(Vec::new()),
            &Page::new(Vec::new()),
            &serde_json::from_value(
                json!({"year": 2026, "from": "2026-01-01", "to": "2026-12-31",
                "as_of": "2026-12-01", "indicators": []}),
            )
            .unwrap(),
        )
        .with_water(&water, &treatment, &sites)
        .with_alerts(&alerts);
        assert_eq!(r.water.len(), 2);
        assert_eq!(r.water[0].tone, Tone::Warn);
        assert_eq!(r.water[0].place, "涧河断面");
        assert_eq!(r.water[1].tone, Tone::Bad);
        assert_eq!(r.treatment_percent, Some(97.4026));
        // Firing only; critical first (even silenced, which is marked), then warnings.
        assert_eq!(r.alerts.len(), 2);
        assert_eq!(r.alerts[0].severity, "critical");
        assert!(r.alerts[0].silenced);
        let text = r.briefing();
        assert!(
            text.contains("涧河断面: IV类 (GB 3838) / class IV  (NH3-N 1.21)"),
            "{text}"
        );
        assert!(
            text.contains("涧西污水处理厂: 一级A 超标 (GB 18918) / class 1A exceeded  (TP 0.62)"),
            "{text}"
        );
        assert!(text.contains("sewage treated: 97.4%"), "{text}");
        assert!(
            text.contains("[critical, 已静默 / silenced] 大唐洛热 #1 机组 SO2 超限"),
            "{text}"
        );
        let wecom = r.markdown(Robot::WeCom, None);
        assert!(
            wecom.contains("<font color=\"warning\">涧西污水处理厂: 一级A 超标"),
            "{wecom}"
        );
        assert!(
            !wecom.contains("!["),
            "WeCom gets the picture as its own message"
        );
        let ding = r.markdown(Robot::DingTalk, Some("https://x/briefings/p.png"));
        assert!(
            ding.contains("<font color=\"#e08214\">涧河断面: IV类"),
            "{ding}"
        );
        assert!(
            ding.ends_with("![日报 / briefing](https://x/briefings/p.png)\n"),
            "{ding}"
        );
        assert!(
            !ding.contains("data integrity"),
            "no findings, no section: {ding}"
        );
    }

    #[test]
    fn integrity_findings_most_severe_first_with_unit_names() {
        let findings = json!({"findings": [
            {"unit": "sy-1", "rule": "constant_value", "channel": "SO2", "start": "2026-12-01T11:00:00+08:00",
             "end": "2026-12-01T13:00:00+08:00", "severity": "warning", "ongoing": false,
             "evidence": {}, "summary_zh": "SO2 连续 120 分钟同一数值", "summary_en": "SO2 identical for 120 minutes"},
            {"unit": "dt-1", "rule": "stopped_but_running", "channel": "", "start": "2026-12-01T14:00:00+08:00",
             "end": "2026-12-01T15:00:00+08:00", "severity": "critical", "ongoing": true,
             "evidence": {}, "summary_zh": "标记停运但机组在运行", "summary_en": "marked stopped while running"}
        ]});
        let r = ReportData::from_api(
            d("2026-12-01"),
            &Page::new(Vec::new()),
            &Page::new(Vec::new()),
            &Page::new(Vec::new()),
            &serde_json::from_value(
                json!({"year": 2026, "from": "2026-01-01", "to": "2026-12-31",
                "as_of": "2026-12-01", "indicators": []}),
            )
            .unwrap(),
        )
        .with_unit_names([("dt-1".to_string(), "大唐洛热 #1 机组".to_string())].into())
        .with_integrity(&findings);
        let text = r.briefing();
        let critical = text
            .find("[critical] 大唐洛热 #1 机组 stopped_but_running（进行中 / ongoing）：标记停运但机组在运行")
            .expect(&text);
        let warning = text
            .find("[warning] sy-1 constant_value：SO2 连续 120 分钟同一数值")
            .expect(&text);
        assert!(critical < warning, "{text}");
        assert!(text.contains("data integrity: 2 项发现"), "{text}");
        assert!(text.contains("SO2 identical for 120 minutes"), "{text}");
        let md = r.markdown(Robot::WeCom, None);
        assert!(md.contains("数据真实性 / data integrity: 2"), "{md}");
    }
}
