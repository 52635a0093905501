//! HJ 633 — 环境空气质量指数（AQI）技术规定: individual indices (IAQI), the AQI, its grade and
//! category, and the primary pollutant. Both editions:
//!
//! - **HJ 633-2012** (the plan's 2016–2020 period): breakpoints of Table 1; SO2 1h above 800 µg/m3
//!   has no 1h index (the 24h one is used); O3 8h above 800 has no 8h index (the 1h one is used);
//!   the daily report has seven indicators (with the O3 daily max 1h); grade I is 0–50; a pollutant
//!   with IAQI > 100 is an exceeding pollutant (超标污染物).
//! - **HJ 633-2026** (in force from 2026-03-01, the default): PM10's IAQI-100 breakpoint is 120 and
//!   PM2.5's is 60; SO2 1h above 800 gives IAQI 200 and O3 8h above 800 gives IAQI 300; inputs are
//!   rounded per GB/T 8170 (round half to even) to integers (µg/m3) and CO to one decimal (mg/m3);
//!   the daily report has six indicators; the real-time report uses the six 1h means (PM10 and PM2.5
//!   1h values on the 24h breakpoints); the AQI runs 1–500; with a pollutant missing, the AQI is
//!   published only if it is above 100.
//!
//! Sources: HJ 633-2012 Table 1 and HJ 633-2026 Table 3, §4–5 (the 2026 text as scanned).
//! IAQI = (IAQI_Hi − IAQI_Lo)/(BP_Hi − BP_Lo) × (C − BP_Lo) + IAQI_Lo, rounded **up** to an integer.

use serde::{Deserialize, Serialize};

/// Which edition's rules apply. Read from text by [`Edition::parse`] (`"HJ633-2026"`, `"2026"`,
/// any case), so a configuration's misspelling is an error at start, never a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum Edition {
    #[serde(rename = "HJ633-2012")]
    Hj633_2012,
    #[serde(rename = "HJ633-2026")]
    Hj633_2026,
}

impl Edition {
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Hj633_2012 => "HJ633-2012",
            Edition::Hj633_2026 => "HJ633-2026",
        }
    }

    pub fn parse(s: &str) -> Option<Edition> {
        match s
            .trim()
            .to_ascii_uppercase()
            .replace([' ', '_'], "-")
            .as_str()
        {
            "HJ633-2012" | "2012" => Some(Edition::Hj633_2012),
            "HJ633-2026" | "2026" => Some(Edition::Hj633_2026),
            _ => None,
        }
    }
}

impl TryFrom<String> for Edition {
    type Error = String;
    fn try_from(s: String) -> Result<Edition, String> {
        Edition::parse(&s).ok_or_else(|| format!("{s:?} is not \"HJ633-2026\" or \"HJ633-2012\""))
    }
}

/// An AQI indicator: a pollutant with its averaging time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Indicator {
    #[serde(rename = "SO2_24h")]
    So2_24h,
    #[serde(rename = "SO2_1h")]
    So2_1h,
    #[serde(rename = "NO2_24h")]
    No2_24h,
    #[serde(rename = "NO2_1h")]
    No2_1h,
    #[serde(rename = "PM10_24h")]
    Pm10_24h,
    #[serde(rename = "CO_24h")]
    Co24h,
    #[serde(rename = "CO_1h")]
    Co1h,
    #[serde(rename = "O3_1h")]
    O3_1h,
    #[serde(rename = "O3_8h")]
    O3_8h,
    #[serde(rename = "PM2.5_24h")]
    Pm25_24h,
}

impl Indicator {
    pub const ALL: [Indicator; 10] = [
        Indicator::So2_24h,
        Indicator::So2_1h,
        Indicator::No2_24h,
        Indicator::No2_1h,
        Indicator::Pm10_24h,
        Indicator::Co24h,
        Indicator::Co1h,
        Indicator::O3_1h,
        Indicator::O3_8h,
        Indicator::Pm25_24h,
    ];

    /// Pollutant name as reported (首要污染物).
    pub fn pollutant(self) -> &'static str {
        match self {
            Indicator::So2_24h | Indicator::So2_1h => "SO2",
            Indicator::No2_24h | Indicator::No2_1h => "NO2",
            Indicator::Pm10_24h => "PM10",
            Indicator::Co24h | Indicator::Co1h => "CO",
            Indicator::O3_1h | Indicator::O3_8h => "O3",
            Indicator::Pm25_24h => "PM2.5",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::So2_24h => "SO2_24h",
            Indicator::So2_1h => "SO2_1h",
            Indicator::No2_24h => "NO2_24h",
            Indicator::No2_1h => "NO2_1h",
            Indicator::Pm10_24h => "PM10_24h",
            Indicator::Co24h => "CO_24h",
            Indicator::Co1h => "CO_1h",
            Indicator::O3_1h => "O3_1h",
            Indicator::O3_8h => "O3_8h",
            Indicator::Pm25_24h => "PM2.5_24h",
        }
    }

    /// Concentration breakpoints at IAQI 0, 50, 100, 150, 200, 300, 400, 500 (µg/m3; CO mg/m3).
    /// `None` past the last one the table gives.
    pub fn breakpoints(self, ed: Edition) -> &'static [f64] {
        match (self, ed) {
            (Indicator::So2_24h, _) => &[0.0, 50.0, 150.0, 475.0, 800.0, 1600.0, 2100.0, 2620.0],
            (Indicator::So2_1h, _) => &[0.0, 150.0, 500.0, 650.0, 800.0],
            (Indicator::No2_24h, _) => &[0.0, 40.0, 80.0, 180.0, 280.0, 565.0, 750.0, 940.0],
            (Indicator::No2_1h, _) => &[0.0, 100.0, 200.0, 700.0, 1200.0, 2340.0, 3090.0, 3840.0],
            (Indicator::Pm10_24h, Edition::Hj633_2012) => {
                &[0.0, 50.0, 150.0, 250.0, 350.0, 420.0, 500.0, 600.0]
            }
            (Indicator::Pm10_24h, Edition::Hj633_2026) => {
                &[0.0, 50.0, 120.0, 250.0, 350.0, 420.0, 500.0, 600.0]
            }
            (Indicator::Co24h, _) => &[0.0, 2.0, 4.0, 14.0, 24.0, 36.0, 48.0, 60.0],
            (Indicator::Co1h, _) => &[0.0, 5.0, 10.0, 35.0, 60.0, 90.0, 120.0, 150.0],
            (Indicator::O3_1h, _) => &[0.0, 160.0, 200.0, 300.0, 400.0, 800.0, 1000.0, 1200.0],
            (Indicator::O3_8h, _) => &[0.0, 100.0, 160.0, 215.0, 265.0, 800.0],
            (Indicator::Pm25_24h, Edition::Hj633_2012) => {
                &[0.0, 35.0, 75.0, 115.0, 150.0, 250.0, 350.0, 500.0]
            }
            (Indicator::Pm25_24h, Edition::Hj633_2026) => {
                &[0.0, 35.0, 60.0, 115.0, 150.0, 250.0, 350.0, 500.0]
            }
        }
    }

    /// Decimals kept by the 2026 rounding (GB/T 8170): CO one, the rest none.
    fn decimals(self) -> u32 {
        match self {
            Indicator::Co24h | Indicator::Co1h => 1,
            _ => 0,
        }
    }
}

/// IAQI at each breakpoint.
const IAQI_AT: [f64; 8] = [0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0];

/// Round half to even at `decimals` (GB/T 8170 修约: 四舍六入五成双). A value within 1e-9 of a
/// half is treated as the half (decimal inputs like 0.35 are not exact in binary).
pub fn round_half_even(x: f64, decimals: u32) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    let v = x * scale;
    let floor = v.floor();
    let frac = v - floor;
    let r = if (frac - 0.5).abs() < 1e-9 {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        v.round()
    };
    r / scale
}

/// The outcome for one indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Iaqi {
    /// An index 0..=500.
    Value(u32),
    /// Above the last breakpoint of the table: reported as 500.
    BeyondScale,
    /// 2012 only: SO2 1h or O3 8h above 800 has no index of its own (use the 24h / 1h one).
    NotApplicable,
}

impl Iaqi {
    /// The number reported (beyond scale is 500).
    pub fn number(self) -> Option<u32> {
        match self {
            Iaqi::Value(v) => Some(v),
            Iaqi::BeyondScale => Some(500),
            Iaqi::NotApplicable => None,
        }
    }
}

/// A concentration that cannot be indexed (negative, NaN, infinite).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{indicator}: concentration {value} is not a finite non-negative number")]
pub struct BadConcentration {
    pub indicator: &'static str,
    pub value: f64,
}

/// IAQI of one indicator (HJ 633 §5.1 / Table 1).
pub fn iaqi(ed: Edition, ind: Indicator, c: f64) -> Result<Iaqi, BadConcentration> {
    if !c.is_finite() || c < 0.0 {
        return Err(BadConcentration {
            indicator: ind.as_str(),
            value: c,
        });
    }
    let c = match ed {
        Edition::Hj633_2012 => c,
        Edition::Hj633_2026 => round_half_even(c, ind.decimals()),
    };
    let bp = ind.breakpoints(ed);
    let last = bp[bp.len() - 1];
    if c > last {
        return Ok(match (ed, ind) {
            (Edition::Hj633_2012, Indicator::So2_1h | Indicator::O3_8h) => Iaqi::NotApplicable,
            (Edition::Hj633_2026, Indicator::So2_1h) => Iaqi::Value(200),
            (Edition::Hj633_2026, Indicator::O3_8h) => Iaqi::Value(300),
            _ => Iaqi::BeyondScale,
        });
    }
    // The first segment whose upper breakpoint is ≥ C (at a breakpoint both neighbours agree).
    let i = (1..bp.len()).find(|&i| c <= bp[i]).unwrap_or(bp.len() - 1);
    let (bl, bh, il, ih) = (bp[i - 1], bp[i], IAQI_AT[i - 1], IAQI_AT[i]);
    let exact = (ih - il) / (bh - bl) * (c - bl) + il;
    // Rounded up; 1e-7 absorbs binary noise (50/35 × 35 = 50.000000000000007).
    Ok(Iaqi::Value((exact - 1e-7).ceil().max(0.0) as u32))
}

/// Air-quality grade (空气质量指数级别).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grade {
    I,
    II,
    III,
    IV,
    V,
    VI,
}

impl Grade {
    pub fn from_aqi(aqi: u32) -> Grade {
        match aqi {
            0..=50 => Grade::I,
            51..=100 => Grade::II,
            101..=150 => Grade::III,
            151..=200 => Grade::IV,
            201..=300 => Grade::V,
            _ => Grade::VI,
        }
    }

    pub fn roman(self) -> &'static str {
        match self {
            Grade::I => "I",
            Grade::II => "II",
            Grade::III => "III",
            Grade::IV => "IV",
            Grade::V => "V",
            Grade::VI => "VI",
        }
    }

    /// 类别 (Chinese, English).
    pub fn category(self) -> (&'static str, &'static str) {
        match self {
            Grade::I => ("优", "excellent"),
            Grade::II => ("良", "good"),
            Grade::III => ("轻度污染", "lightly polluted"),
            Grade::IV => ("中度污染", "moderately polluted"),
            Grade::V => ("重度污染", "heavily polluted"),
            Grade::VI => ("严重污染", "severely polluted"),
        }
    }
}

/// Which report the concentrations are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// 日报: 24h means and the O3 daily maxima.
    Daily,
    /// 实时报: hourly values.
    Hourly,
}

/// Concentrations for one report; `None` = missing or invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Concentrations {
    /// µg/m3.
    pub so2: Option<f64>,
    pub no2: Option<f64>,
    pub pm10: Option<f64>,
    pub pm25: Option<f64>,
    /// mg/m3.
    pub co: Option<f64>,
    /// O3: the daily max 8h moving mean (daily report) or the 8h moving mean (2012 hourly report).
    pub o3_8h: Option<f64>,
    /// O3: the daily max 1h (daily report, 2012) or the 1h mean (hourly report).
    pub o3_1h: Option<f64>,
    /// SO2 24h (moving) mean, used by the 2012 real-time report when SO2 1h is above 800.
    pub so2_24h: Option<f64>,
}

/// One computed AQI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AqiResult {
    pub edition: Edition,
    pub report: Report,
    /// `None` when 2026 §5.3.1 withholds it ("NA": a pollutant missing and the AQI ≤ 100), or when
    /// nothing could be indexed.
    pub aqi: Option<u32>,
    /// The AQI from the available indicators, even when withheld.
    pub aqi_from_available: Option<u32>,
    pub iaqi: Vec<(Indicator, Iaqi)>,
    pub grade: Option<Grade>,
    pub category_zh: Option<&'static str>,
    pub category_en: Option<&'static str>,
    /// 首要污染物: only when AQI > 50; ties all listed.
    pub primary_pollutants: Vec<&'static str>,
    /// 超标污染物 (2012 only): IAQI > 100.
    pub exceeding_pollutants: Vec<&'static str>,
    /// Indicators that were missing.
    pub missing: Vec<Indicator>,
}

/// The indicators a report uses, with their concentrations.
fn indicators(ed: Edition, report: Report, c: &Concentrations) -> Vec<(Indicator, Option<f64>)> {
    match (ed, report) {
        (Edition::Hj633_2012, Report::Daily) => vec![
            (Indicator::So2_24h, c.so2),
            (Indicator::No2_24h, c.no2),
            (Indicator::Pm10_24h, c.pm10),
            (Indicator::Co24h, c.co),
            (Indicator::O3_1h, c.o3_1h),
            (Indicator::O3_8h, c.o3_8h),
            (Indicator::Pm25_24h, c.pm25),
        ],
        (Edition::Hj633_2026, Report::Daily) => vec![
            (Indicator::So2_24h, c.so2),
            (Indicator::No2_24h, c.no2),
            (Indicator::Pm10_24h, c.pm10),
            (Indicator::Co24h, c.co),
            (Indicator::O3_8h, c.o3_8h),
            (Indicator::Pm25_24h, c.pm25),
        ],
        // 2012 real-time report: 1h SO2/NO2/CO/O3, the O3 8h moving mean, and PM values given as
        // their 24h (moving) means on the 24h breakpoints.
        (Edition::Hj633_2012, Report::Hourly) => vec![
            (Indicator::So2_1h, c.so2),
            (Indicator::No2_1h, c.no2),
            (Indicator::Pm10_24h, c.pm10),
            (Indicator::Co1h, c.co),
            (Indicator::O3_1h, c.o3_1h),
            (Indicator::O3_8h, c.o3_8h),
            (Indicator::Pm25_24h, c.pm25),
        ],
        // 2026 real-time report: the six 1h means; PM 1h values on the 24h breakpoints.
        (Edition::Hj633_2026, Report::Hourly) => vec![
            (Indicator::So2_1h, c.so2),
            (Indicator::No2_1h, c.no2),
            (Indicator::Pm10_24h, c.pm10),
            (Indicator::Co1h, c.co),
            (Indicator::O3_1h, c.o3_1h),
            (Indicator::Pm25_24h, c.pm25),
        ],
    }
}

/// Compute the AQI of a report (HJ 633 §5), every pollutant being in the monitoring plan.
pub fn aqi(ed: Edition, report: Report, c: &Concentrations) -> Result<AqiResult, BadConcentration> {
    aqi_for_plan(ed, report, c, &[])
}

/// Compute the AQI of a report for a station whose monitoring plan leaves out `not_monitored`
/// (pollutant names as [`Indicator::pollutant`] gives them: "SO2", "CO", …).
///
/// HJ 633-2026 §5.3.2: a pollutant that is not in the station's monitoring plan (and has not been
/// the primary pollutant of a polluted day in the last three years — the operator's declaration)
/// is not a missing pollutant, so its absence does not withhold the AQI under §5.3.1; §5.3.1
/// applies only to pollutants that should have been measured. A value that is nevertheless
/// present is indexed as usual.
pub fn aqi_for_plan(
    ed: Edition,
    report: Report,
    c: &Concentrations,
    not_monitored: &[&str],
) -> Result<AqiResult, BadConcentration> {
    let mut iaqis: Vec<(Indicator, Iaqi)> = Vec::new();
    let mut missing = Vec::new();
    let inds = indicators(ed, report, c);
    for (ind, conc) in &inds {
        match conc {
            Some(v) => iaqis.push((*ind, iaqi(ed, *ind, *v)?)),
            None if not_monitored.contains(&ind.pollutant()) => {}
            None => missing.push(*ind),
        }
    }
    // 2012 fall-backs: SO2 1h > 800 → the SO2 24h index instead (missing if no 24h mean is given);
    // O3 8h > 800 → the O3 1h index, which both 2012 reports already include.
    if ed == Edition::Hj633_2012 {
        let so2_na = iaqis
            .iter()
            .any(|(i, v)| *i == Indicator::So2_1h && *v == Iaqi::NotApplicable);
        if so2_na {
            match c.so2_24h {
                Some(v) => iaqis.push((Indicator::So2_24h, iaqi(ed, Indicator::So2_24h, v)?)),
                None => missing.push(Indicator::So2_24h),
            }
        }
    }
    let mut numbers: Vec<(Indicator, u32)> = iaqis
        .iter()
        .filter_map(|(i, v)| v.number().map(|n| (*i, n)))
        .collect();
    let max = numbers.iter().map(|(_, n)| *n).max();
    let mut aqi_val = max;
    if ed == Edition::Hj633_2026 {
        aqi_val = aqi_val.map(|a| a.max(1));
    }
    let published = match (ed, missing.is_empty(), aqi_val) {
        (Edition::Hj633_2026, false, Some(a)) if a <= 100 => None,
        (_, _, a) => a,
    };
    let grade = published.map(Grade::from_aqi);
    let mut primary: Vec<&'static str> = Vec::new();
    if let Some(a) = aqi_val {
        if a > 50 {
            numbers.sort_by_key(|(i, _)| *i);
            for (i, n) in &numbers {
                if *n == a && !primary.contains(&i.pollutant()) {
                    primary.push(i.pollutant());
                }
            }
        }
    }
    let mut exceeding = Vec::new();
    if ed == Edition::Hj633_2012 {
        for (i, n) in &numbers {
            if *n > 100 && !exceeding.contains(&i.pollutant()) {
                exceeding.push(i.pollutant());
            }
        }
    }
    Ok(AqiResult {
        edition: ed,
        report,
        aqi: published,
        aqi_from_available: aqi_val,
        iaqi: iaqis,
        grade,
        category_zh: grade.map(|g| g.category().0),
        category_en: grade.map(|g| g.category().1),
        primary_pollutants: if published.is_some() {
            primary
        } else {
            Vec::new()
        },
        exceeding_pollutants: exceeding,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Edition::{Hj633_2012 as E12, Hj633_2026 as E26};
    use Indicator::*;

    fn v(ed: Edition, ind: Indicator, c: f64) -> u32 {
        match iaqi(ed, ind, c).unwrap() {
            Iaqi::Value(n) => n,
            other => panic!("{ind:?} {c}: {other:?}"),
        }
    }

    /// Segment midpoints: the IAQI is the middle of the segment's IAQI range, e.g. SO2 24h
    /// [50, 150] → [50, 100]: C = 100 gives 75. HJ 633-2012 Table 1.
    #[test]
    fn every_segment_midpoint_2012() {
        let table: &[(Indicator, f64, u32)] = &[
            (So2_24h, 25.0, 25),
            (So2_24h, 100.0, 75),
            (So2_24h, 312.5, 125),
            (So2_24h, 637.5, 175),
            (So2_24h, 1200.0, 250),
            (So2_24h, 1850.0, 350),
            (So2_24h, 2360.0, 450),
            (So2_1h, 75.0, 25),
            (So2_1h, 325.0, 75),
            (So2_1h, 575.0, 125),
            (So2_1h, 725.0, 175),
            (No2_24h, 20.0, 25),
            (No2_24h, 60.0, 75),
            (No2_24h, 130.0, 125),
            (No2_24h, 230.0, 175),
            (No2_24h, 422.5, 250),
            (No2_24h, 657.5, 350),
            (No2_24h, 845.0, 450),
            (No2_1h, 50.0, 25),
            (No2_1h, 150.0, 75),
            (No2_1h, 450.0, 125),
            (No2_1h, 950.0, 175),
            (No2_1h, 1770.0, 250),
            (No2_1h, 2715.0, 350),
            (No2_1h, 3465.0, 450),
            (Pm10_24h, 25.0, 25),
            (Pm10_24h, 100.0, 75),
            (Pm10_24h, 200.0, 125),
            (Pm10_24h, 300.0, 175),
            (Pm10_24h, 385.0, 250),
            (Pm10_24h, 460.0, 350),
            (Pm10_24h, 550.0, 450),
            (Co24h, 1.0, 25),
            (Co24h, 3.0, 75),
            (Co24h, 9.0, 125),
            (Co24h, 19.0, 175),
            (Co24h, 30.0, 250),
            (Co24h, 42.0, 350),
            (Co24h, 54.0, 450),
            (Co1h, 2.5, 25),
            (Co1h, 7.5, 75),
            (Co1h, 22.5, 125),
            (Co1h, 47.5, 175),
            (Co1h, 75.0, 250),
            (Co1h, 105.0, 350),
            (Co1h, 135.0, 450),
            (O3_1h, 80.0, 25),
            (O3_1h, 180.0, 75),
            (O3_1h, 250.0, 125),
            (O3_1h, 350.0, 175),
            (O3_1h, 600.0, 250),
            (O3_1h, 900.0, 350),
            (O3_1h, 1100.0, 450),
            (O3_8h, 50.0, 25),
            (O3_8h, 130.0, 75),
            (O3_8h, 187.5, 125),
            (O3_8h, 240.0, 175),
            (O3_8h, 532.5, 250),
            (Pm25_24h, 17.5, 25),
            (Pm25_24h, 55.0, 75),
            (Pm25_24h, 95.0, 125),
            (Pm25_24h, 132.5, 175),
            (Pm25_24h, 200.0, 250),
            (Pm25_24h, 300.0, 350),
            (Pm25_24h, 425.0, 450),
        ];
        for &(ind, c, want) in table {
            assert_eq!(v(E12, ind, c), want, "2012 {ind:?} {c}");
        }
    }

    /// HJ 633-2026: the same table but PM10 and PM2.5 at IAQI 100 are 120 and 60, and the input is
    /// first rounded half-to-even to an integer (CO to 0.1). Each value worked by hand:
    #[test]
    fn every_segment_2026_by_hand() {
        let table: &[(Indicator, f64, u32)] = &[
            // PM10 [0,50,120,250,…]: 25 → 25; 85 → 50 + 50/70×35 = 75; 185 → 100 + 50/130×65 = 125;
            // 300 → 175; 385 → 250; 460 → 350; 550 → 450.
            (Pm10_24h, 25.0, 25),
            (Pm10_24h, 85.0, 75),
            (Pm10_24h, 185.0, 125),
            (Pm10_24h, 300.0, 175),
            (Pm10_24h, 385.0, 250),
            (Pm10_24h, 460.0, 350),
            (Pm10_24h, 550.0, 450),
            // PM2.5 [0,35,60,115,150,…]: 14 → 50/35×14 = 20; 45 → 50 + 50/25×10 = 70;
            // 71 → 100 + 50/55×11 = 110; 129 → 150 + 50/35×14 = 170; 200 → 250; 300 → 350; 425 → 450.
            (Pm25_24h, 14.0, 20),
            (Pm25_24h, 45.0, 70),
            (Pm25_24h, 71.0, 110),
            (Pm25_24h, 129.0, 170),
            (Pm25_24h, 200.0, 250),
            (Pm25_24h, 300.0, 350),
            (Pm25_24h, 425.0, 450),
            // Rounding before the formula: O3 8h 187.5 → 188 (187 is odd) → 100 + 50/55×28 = 125.45 → 126
            // (2012: 125). SO2 24h 637.5 → 638 → 150 + 50/325×163 = 175.08 → 176 (2012: 175).
            // SO2 24h 312.5 → 312 (even) → 100 + 50/325×162 = 124.92 → 125.
            (O3_8h, 187.5, 126),
            (So2_24h, 637.5, 176),
            (So2_24h, 312.5, 125),
            // PM2.5 34.5 → 34 (even) → 50/35×34 = 48.57 → 49; 35.5 → 36 → 50 + 2×1 = 52.
            (Pm25_24h, 34.5, 49),
            (Pm25_24h, 35.5, 52),
            // CO 24h 2.35 → 2.4 (23.5 → 24, 23 is odd) → 50 + 25×0.4 = 60 (2012: 50 + 25×0.35 = 58.75 → 59).
            (Co24h, 2.35, 60),
            // Unchanged segments, as in 2012: NO2 1h 950 → 175; CO 1h 47.5 → 175; O3 1h 600 → 250.
            (No2_1h, 950.0, 175),
            (Co1h, 47.5, 175),
            (O3_1h, 600.0, 250),
        ];
        for &(ind, c, want) in table {
            assert_eq!(v(E26, ind, c), want, "2026 {ind:?} {c}");
        }
        assert_eq!(v(E12, Co24h, 2.35), 59);
    }

    #[test]
    fn exact_breakpoints_give_the_table_index_in_both_editions() {
        for ed in [E12, E26] {
            for ind in Indicator::ALL {
                for (i, &bp) in ind.breakpoints(ed).iter().enumerate() {
                    assert_eq!(v(ed, ind, bp), IAQI_AT[i] as u32, "{ed:?} {ind:?} at {bp}");
                }
            }
        }
    }

    #[test]
    fn just_above_a_breakpoint_rounds_up_to_the_next_integer_2012() {
        // 0.01 above any breakpoint adds at most 25 × 0.01 = 0.25 (CO's steepest slope): ceil → +1.
        for ind in Indicator::ALL {
            let bp = ind.breakpoints(E12);
            for (i, &b) in bp.iter().enumerate().take(bp.len() - 1) {
                assert_eq!(
                    v(E12, ind, b + 0.01),
                    IAQI_AT[i] as u32 + 1,
                    "{ind:?} just above {b}"
                );
            }
        }
        // 2026 rounds 0.4 above a breakpoint back onto it.
        assert_eq!(v(E26, Pm25_24h, 35.4), 50);
        assert_eq!(v(E12, Pm25_24h, 35.4), 51);
    }

    #[test]
    fn decimals_and_the_2026_tightening() {
        // PM2.5 80: 2012 → 100 + 50/40×5 = 106.25 → 107; 2026 → 100 + 50/55×20 = 118.18 → 119.
        assert_eq!(v(E12, Pm25_24h, 80.0), 107);
        assert_eq!(v(E26, Pm25_24h, 80.0), 119);
        // PM10 130: 2012 → 50 + 50/100×80 = 90 (grade II); 2026 → 100 + 50/130×10 = 103.85 → 104 (III).
        assert_eq!(v(E12, Pm10_24h, 130.0), 90);
        assert_eq!(v(E26, Pm10_24h, 130.0), 104);
        // NO2 24h 30.3: 50/40 × 30.3 = 37.875 → 38.
        assert_eq!(v(E12, No2_24h, 30.3), 38);
    }

    #[test]
    fn beyond_scale_and_the_800_rules() {
        for ed in [E12, E26] {
            assert_eq!(iaqi(ed, Pm25_24h, 600.0).unwrap(), Iaqi::BeyondScale);
            assert_eq!(iaqi(ed, Pm25_24h, 1e9).unwrap().number(), Some(500));
            assert_eq!(iaqi(ed, So2_24h, 2621.0).unwrap(), Iaqi::BeyondScale);
        }
        assert_eq!(iaqi(E12, So2_1h, 801.0).unwrap(), Iaqi::NotApplicable);
        assert_eq!(iaqi(E26, So2_1h, 801.0).unwrap(), Iaqi::Value(200));
        assert_eq!(iaqi(E12, O3_8h, 900.0).unwrap(), Iaqi::NotApplicable);
        assert_eq!(iaqi(E26, O3_8h, 900.0).unwrap(), Iaqi::Value(300));
        assert!(iaqi(E26, O3_8h, -1.0).is_err());
        assert!(iaqi(E26, O3_8h, f64::NAN).is_err());
    }

    #[test]
    fn round_half_even_follows_gbt_8170() {
        assert_eq!(round_half_even(2.5, 0), 2.0);
        assert_eq!(round_half_even(3.5, 0), 4.0);
        assert_eq!(round_half_even(3.51, 0), 4.0);
        assert_eq!(round_half_even(0.35, 1), 0.4);
        assert_eq!(round_half_even(0.45, 1), 0.4);
        assert_eq!(round_half_even(12.25, 1), 12.2);
    }

    fn day(
        so2: f64,
        no2: f64,
        pm10: f64,
        co: f64,
        o3_1h: f64,
        o3_8h: f64,
        pm25: f64,
    ) -> Concentrations {
        Concentrations {
            so2: Some(so2),
            no2: Some(no2),
            pm10: Some(pm10),
            pm25: Some(pm25),
            co: Some(co),
            o3_8h: Some(o3_8h),
            o3_1h: Some(o3_1h),
            so2_24h: None,
        }
    }

    #[test]
    fn a_daily_aqi_by_hand_in_both_editions() {
        // IAQIs (2012): SO2 10 → 10; NO2 30 → 37.5 → 38; PM10 130 → 90; CO 0.8 → 20; O3 1h 120 → 37.5
        // → 38; O3 8h 100 → 50; PM2.5 80 → 107. AQI 107, grade III 轻度污染, primary PM2.5.
        let c = day(10.0, 30.0, 130.0, 0.8, 120.0, 100.0, 80.0);
        let r = aqi(E12, Report::Daily, &c).unwrap();
        assert_eq!(r.aqi, Some(107));
        assert_eq!(r.grade, Some(Grade::III));
        assert_eq!(r.category_zh, Some("轻度污染"));
        assert_eq!(r.primary_pollutants, vec!["PM2.5"]);
        assert_eq!(r.exceeding_pollutants, vec!["PM2.5"]);
        assert_eq!(r.iaqi.len(), 7);
        // 2026: six indicators (no O3 1h); PM10 130 → 104, PM2.5 80 → 119: AQI 119; PM10 and PM2.5
        // both exceed 100 but the 2026 edition has no 超标污染物.
        let r = aqi(E26, Report::Daily, &c).unwrap();
        assert_eq!(r.aqi, Some(119));
        assert_eq!(r.iaqi.len(), 6);
        assert_eq!(r.primary_pollutants, vec!["PM2.5"]);
        assert!(r.exceeding_pollutants.is_empty());
    }

    #[test]
    fn ties_list_every_primary_pollutant_and_none_at_50_or_below() {
        // PM10 150 → 100 and PM2.5 75 → 100 (2012): both primary.
        let r = aqi(
            E12,
            Report::Daily,
            &day(5.0, 5.0, 150.0, 0.2, 20.0, 20.0, 75.0),
        )
        .unwrap();
        assert_eq!(r.aqi, Some(100));
        assert_eq!(r.primary_pollutants, vec!["PM10", "PM2.5"]);
        // Everything ≤ 50: no primary pollutant.
        let r = aqi(
            E12,
            Report::Daily,
            &day(5.0, 5.0, 50.0, 0.2, 20.0, 20.0, 35.0),
        )
        .unwrap();
        assert_eq!(r.aqi, Some(50));
        assert!(r.primary_pollutants.is_empty());
        assert_eq!(r.grade, Some(Grade::I));
    }

    #[test]
    fn the_2026_range_starts_at_1_and_missing_pollutants_withhold_a_low_aqi() {
        let r = aqi(E26, Report::Daily, &day(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)).unwrap();
        assert_eq!(r.aqi, Some(1));
        let r = aqi(E12, Report::Daily, &day(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)).unwrap();
        assert_eq!(r.aqi, Some(0));
        let mut c = day(10.0, 30.0, 60.0, 0.8, 120.0, 100.0, 40.0);
        c.pm25 = None;
        // Without PM2.5: SO2 10 → 10, NO2 30 → 38, PM10 60 → 50 + 50/70×10 = 57.14 → 58, CO 0.8 → 20,
        // O3 8h 100 → 50: 58 ≤ 100, so the AQI is published as NA (HJ 633-2026 §5.3.1).
        let r = aqi(E26, Report::Daily, &c).unwrap();
        assert_eq!((r.aqi, r.aqi_from_available), (None, Some(58)));
        assert!(r.primary_pollutants.is_empty());
        assert_eq!(r.missing, vec![Indicator::Pm25_24h]);
        // With PM10 130 → 104 the AQI is above 100 and is published despite the gap.
        c.pm10 = Some(130.0);
        let r = aqi(E26, Report::Daily, &c).unwrap();
        assert_eq!(r.aqi, Some(104));
        assert_eq!(r.primary_pollutants, vec!["PM10"]);
    }

    #[test]
    fn the_2012_real_time_report_falls_back_to_so2_24h_above_800() {
        let mut c = Concentrations {
            so2: Some(900.0),
            no2: Some(50.0),
            ..Default::default()
        };
        let r = aqi(E12, Report::Hourly, &c).unwrap();
        assert!(
            r.missing.contains(&Indicator::So2_24h),
            "no 24h value given"
        );
        c.so2_24h = Some(500.0); // 24h: 150 + 50/325×25 = 153.85 → 154
        let r = aqi(E12, Report::Hourly, &c).unwrap();
        assert_eq!(r.aqi_from_available, Some(154));
        assert_eq!(r.primary_pollutants, vec!["SO2"]);
        // 2026: SO2 1h above 800 is simply 200.
        let r = aqi(
            E26,
            Report::Hourly,
            &Concentrations {
                so2: Some(900.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.aqi_from_available, Some(200));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn edition() -> impl Strategy<Value = Edition> {
            prop_oneof![Just(E12), Just(E26)]
        }

        fn indicator() -> impl Strategy<Value = Indicator> {
            proptest::sample::select(Indicator::ALL.to_vec())
        }

        proptest! {
            #[test]
            fn iaqi_is_monotone_in_concentration(ed in edition(), ind in indicator(), a in 0.0f64..4000.0, b in 0.0f64..4000.0) {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                if let (Some(x), Some(y)) = (iaqi(ed, ind, lo).unwrap().number(), iaqi(ed, ind, hi).unwrap().number()) {
                    prop_assert!(x <= y, "{:?} {:?}: {} → {}, {} → {}", ed, ind, lo, x, hi, y);
                }
            }

            #[test]
            fn aqi_is_the_max_iaqi_and_primary_only_above_50(
                ed in edition(),
                so2 in 0.0f64..3000.0, no2 in 0.0f64..1000.0, pm10 in 0.0f64..700.0, co in 0.0f64..70.0,
                o3_1h in 0.0f64..1300.0, o3_8h in 0.0f64..900.0, pm25 in 0.0f64..600.0,
            ) {
                let c = Concentrations { so2: Some(so2), no2: Some(no2), pm10: Some(pm10), pm25: Some(pm25), co: Some(co), o3_8h: Some(o3_8h), o3_1h: Some(o3_1h), so2_24h: None };
                let r = aqi(ed, Report::Daily, &c).unwrap();
                let max = r.iaqi.iter().filter_map(|(_, v)| v.number()).max().unwrap();
                let expected = if ed == E26 { max.max(1) } else { max };
                prop_assert_eq!(r.aqi, Some(expected));
                prop_assert!(r.aqi.unwrap() <= 500);
                prop_assert_eq!(r.primary_pollutants.is_empty(), expected <= 50);
                for p in &r.primary_pollutants {
                    prop_assert!(r.iaqi.iter().any(|(i, v)| i.pollutant() == *p && v.number() == Some(expected)));
                }
            }
        }
    }
}
