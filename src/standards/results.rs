//! The standards engine's results as types: what the API serves, the alerts and the report read,
//! and what is persisted in `std_results` (as the JSON these types serialise to).
//!
//! Every consumer reads these fields by name, so a result's shape is checked by the compiler on
//! both sides; the JSON shapes are the ones the API has always served (new fields were added, none
//! renamed). Optional values serialise as `null`, never as a default that could pass for a value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hj633::{AqiResult, Edition};
use super::hj75::HourStatus;
use super::plan::GoodDays;

/// Where a CEMS hourly value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HourSource {
    /// Computed from the hour's minute values (HJ 75-2017).
    Minutes,
    /// The data logger's hourly record (HJ 212 CN 2061), concentration corrected here.
    HourlyReport,
    /// The data logger's hourly record with its own corrected (折算, `-ZsAvg`) value.
    HourlyReportConverted,
}

/// One pollutant of one unit for one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsPollutantHour {
    pub status: HourStatus,
    /// Minutes that count: own flag not excluded, and every value the correction needs valid.
    pub valid_minutes: usize,
    /// Minutes of this pollutant flagged as the unit stopped (F).
    #[serde(default)]
    pub stopped_minutes: usize,
    /// Minutes with data that did not count (own flag excluded, or a correction input invalid).
    #[serde(default)]
    pub excluded_minutes: usize,
    /// Measured (dry, standard state) mean, mg/m3.
    pub measured: Option<f64>,
    /// Corrected to the reference O2, mg/m3: what the limit applies to.
    pub corrected: Option<f64>,
    pub limit: f64,
    /// Valid and above the limit (see `standards.cems.over_range` for over-range minutes).
    pub exceeded: bool,
    /// Some counted minute was flagged T (over range): the true mean is at least the one shown.
    pub over_range: bool,
    pub mass_kg_h: Option<f64>,
    pub source: HourSource,
}

impl CemsPollutantHour {
    pub fn is_valid(&self) -> bool {
        self.status == HourStatus::Valid
    }
}

/// One unit's hour (labelled by its end, CST).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsHour {
    pub unit: String,
    pub site: String,
    /// RFC 3339, CST: the hour's end.
    pub hour: String,
    pub hour_ms: i64,
    pub o2_ref_percent: f64,
    pub o2_mean: Option<f64>,
    pub flue_flow_mean: Option<f64>,
    pub minutes_with_data: usize,
    pub pollutants: BTreeMap<String, CemsPollutantHour>,
}

/// One pollutant of one unit for one day (HJ 76-2017: a valid day has ≥ 20 valid hours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsPollutantDay {
    pub valid_hours: u32,
    pub exceeded_hours: u32,
    pub stopped_hours: u32,
    pub expected_hours: u32,
    pub compliance_percent: Option<f64>,
    pub completeness_percent: Option<f64>,
    pub mass_kg: f64,
    pub day_valid: bool,
    /// Daily mean of the valid hourly measured means, mg/m3 (only for a valid day).
    #[serde(default)]
    pub measured_mean: Option<f64>,
    /// Daily mean of the valid hourly corrected means, mg/m3 (only for a valid day).
    #[serde(default)]
    pub corrected_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsDay {
    pub unit: String,
    pub day: String,
    pub hours_elapsed: u32,
    pub pollutants: BTreeMap<String, CemsPollutantDay>,
}

/// One pollutant of one unit for one month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsPollutantMonth {
    pub valid_hours: u32,
    pub exceeded_hours: u32,
    pub stopped_hours: u32,
    pub expected_hours: u32,
    pub compliance_percent: Option<f64>,
    pub completeness_percent: Option<f64>,
    pub mass_kg: f64,
    pub valid_days: u32,
    /// HJ 76-2017 as quoted: ≥ 25 valid days (February ≥ 23).
    pub month_valid: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CemsMonth {
    pub unit: String,
    pub year: i32,
    pub month: u32,
    pub pollutants: BTreeMap<String, CemsPollutantMonth>,
}

/// An AQI as served: the HJ 633 result with indicator names as strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AqiSummary {
    /// `None`: withheld ("NA", HJ 633-2026 §5.3.1) or nothing to index.
    pub aqi: Option<u32>,
    pub aqi_from_available: Option<u32>,
    pub grade: Option<String>,
    pub category_zh: Option<String>,
    pub category_en: Option<String>,
    pub primary_pollutants: Vec<String>,
    /// Indicator → IAQI (`null` where the indicator has no index of its own).
    pub iaqi: BTreeMap<String, Option<u32>>,
    /// Indicators that should have been measured and were not.
    pub missing: Vec<String>,
    pub edition: Edition,
}

impl AqiSummary {
    pub fn from_result(r: &AqiResult) -> AqiSummary {
        AqiSummary {
            aqi: r.aqi,
            aqi_from_available: r.aqi_from_available,
            grade: r.grade.map(|g| g.roman().to_string()),
            category_zh: r.category_zh.map(str::to_string),
            category_en: r.category_en.map(str::to_string),
            primary_pollutants: r.primary_pollutants.iter().map(|s| s.to_string()).collect(),
            iaqi: r
                .iaqi
                .iter()
                .map(|(i, v)| (i.as_str().to_string(), v.number()))
                .collect(),
            missing: r.missing.iter().map(|i| i.as_str().to_string()).collect(),
            edition: r.edition,
        }
    }
}

/// Concentrations by key (`SO2`, `NO2`, `PM10`, `PM2.5`, `CO`, `O3`, `O3_8h_max`, `O3_1h_max`);
/// `null` = missing or invalid. µg/m3, CO mg/m3.
pub type Values = BTreeMap<String, Option<f64>>;

/// One station's (or the district's) hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirHour {
    pub station: String,
    pub hour: String,
    pub hour_ms: i64,
    pub values: Values,
    pub aqi: Option<AqiSummary>,
    /// District only: the stations it is formed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stations: Option<Vec<String>>,
    /// District only: per pollutant, how many stations had a valid value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stations_valid: Option<BTreeMap<String, u32>>,
    /// District only: per pollutant, the station values held out of the mean as implausible
    /// against the other stations (`standards.air.outlier_factor`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held_out: BTreeMap<String, Vec<super::air::HeldOut>>,
}

/// How a day's values were found valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AirDayValidity {
    /// Valid hourly values per pollutant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hours: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o3_valid_8h_windows: Option<u32>,
    /// District only: its stations and how the value was formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stations: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// One station's (or the district's) day: its concentrations, their validity, and the daily AQI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirDay {
    pub station: String,
    pub day: String,
    pub values: Values,
    pub validity: AirDayValidity,
    pub aqi: Option<AqiSummary>,
    pub good_day: Option<bool>,
    /// Pollutants outside the station's monitoring plan (HJ 633-2026 §5.3.2): their absence does
    /// not withhold the AQI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_monitored: Vec<String>,
}

/// One pollutant's month (HJ 663): its statistic, and the daily values it is from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirMonthValue {
    /// "mean", "p95" (CO) or "p90" (O3 daily maximum 8h).
    pub statistic: String,
    /// `null` with fewer daily values than the month needs (27, February 25).
    pub value: Option<f64>,
    pub days: usize,
}

/// A station's (or the district's) month (HJ 663 月评价).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirMonth {
    pub station: String,
    pub year: i32,
    pub month: u32,
    /// By statistic name: SO2, NO2, PM10, PM2.5, CO-95per, O3-8h-90per.
    pub values: BTreeMap<String, AirMonthValue>,
    /// Days with a daily AQI, and of those AQI ≤ 100 (grade II or better).
    pub aqi_days: u32,
    pub good_days: u32,
    pub good_rate_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaterHour {
    pub sensor: String,
    pub hour_ms: i64,
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gb18918Summary {
    pub compliant: Option<bool>,
    pub parameters: Vec<super::gb18918::Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gb3838Summary {
    pub class: super::gb3838::WaterClass,
    pub label_zh: String,
    pub set_by: Vec<String>,
    /// The values compared, as reported (GB/T 8170 rounding to each parameter's precision).
    #[serde(default)]
    pub reported: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaterDay {
    pub sensor: String,
    pub site: Option<String>,
    pub day: String,
    pub values: Values,
    pub hours: BTreeMap<String, u32>,
    /// Flow meters: the day's volume from ≥ 20 hourly mean flows, m3 (`null` otherwise).
    #[serde(default)]
    pub volume_m3: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb18918_class_1a: Option<Gb18918Summary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb3838_class: Option<Gb3838Summary>,
}

/// The district's sewage treatment for one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentDay {
    pub day: String,
    pub treated_m3: Option<f64>,
    pub produced_m3: Option<f64>,
    pub treatment_rate_percent: Option<f64>,
}

/// A plan indicator's standing: one vocabulary for every indicator (see `plan::standing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndicatorStatus {
    NoData,
    /// The window runs and the figure so far meets the target.
    OnTrack,
    /// The window runs, the figure is below the target, and it can still be reached.
    AtRisk,
    /// The target can no longer be reached (or the window ended below it).
    Missed,
    /// The window ended with the target reached.
    Met,
    /// No sensor measures it: entered by hand.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthVolumes {
    pub month: u32,
    pub treated_m3: f64,
    pub produced_m3: f64,
    pub rate_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SewageDetail {
    pub treated_m3: f64,
    pub produced_m3: f64,
    pub months: Vec<MonthVolumes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitHours {
    pub valid_hours: u32,
    pub exceeded_hours: u32,
    pub compliance_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCompliance {
    pub unit: String,
    pub name_zh: String,
    pub pollutants: BTreeMap<String, UnitHours>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitsDetail {
    pub units: Vec<UnitCompliance>,
}

/// What stands behind an indicator's figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IndicatorDetail {
    GoodDays(GoodDays),
    Sewage(SewageDetail),
    Units(UnitsDetail),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Indicator {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub unit: String,
    pub target: f64,
    pub comparison: String,
    pub actual: Option<f64>,
    pub status: IndicatorStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<Edition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<IndicatorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The plan's indicators over a window (a calendar year unless asked otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compliance {
    pub year: i32,
    /// First and last day of the window (CST dates).
    pub from: String,
    pub to: String,
    /// The last day counted so far.
    pub as_of: String,
    pub indicators: Vec<Indicator>,
}

impl Compliance {
    pub fn indicator(&self, id: &str) -> Option<&Indicator> {
        self.indicators.iter().find(|i| i.id == id)
    }

    /// The good-days figures, when the air indicator has them.
    pub fn good_days(&self) -> Option<&GoodDays> {
        match self.indicator("air_good_days_rate")?.detail.as_ref()? {
            IndicatorDetail::GoodDays(g) => Some(g),
            _ => None,
        }
    }
}

/// A result kept in `std_results` under its kind.
pub trait Stored: Serialize + serde::de::DeserializeOwned {
    const KIND: &'static str;
}

impl Stored for CemsHour {
    const KIND: &'static str = "cems_hourly";
}
impl Stored for CemsDay {
    const KIND: &'static str = "cems_daily";
}
impl Stored for AirHour {
    const KIND: &'static str = "air_hourly";
}
impl Stored for AirDay {
    const KIND: &'static str = "air_daily";
}
impl Stored for WaterHour {
    const KIND: &'static str = "water_hourly";
}
impl Stored for WaterDay {
    const KIND: &'static str = "water_daily";
}
impl Stored for TreatmentDay {
    const KIND: &'static str = "treatment_daily";
}

/// A page of results as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub count: usize,
    pub results: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(results: Vec<T>) -> Page<T> {
        Page {
            count: results.len(),
            results,
        }
    }
}
