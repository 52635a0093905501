//! Air hours and days of one station or of the district, as pure functions of the hourly values
//! (GB 3095 Table 4, HJ 663, HJ 633): daily means, the O3 maxima, the AQI under an edition, the
//! district's values from its stations, and the monitoring plan (HJ 633-2026 §5.3.2).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::hj633::{self, Concentrations, Edition, Report};
use super::hj663;
use super::results::{
    AirDay, AirDayValidity, AirHour, AirMonth, AirMonthValue, AqiSummary, Values,
};
use crate::registry::{Domain, Registry, SiteKind};

/// Air pollutants with the unit HJ 633 uses.
pub const POLLUTANTS: [(&str, &str); 6] = [
    ("SO2", "ug/m3"),
    ("NO2", "ug/m3"),
    ("PM10", "ug/m3"),
    ("PM2.5", "ug/m3"),
    ("CO", "mg/m3"),
    ("O3", "ug/m3"),
];

/// Pollutants with a 24h mean in the daily report.
const DAILY_MEANS: [&str; 5] = ["SO2", "NO2", "PM10", "PM2.5", "CO"];

/// How the district's values are formed from its stations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistrictMethod {
    /// The stations' hourly values averaged into the district's hourly series; its daily means
    /// and its O3 8h moving means (and daily maximum) are taken from that series, like a station's.
    #[default]
    HourlySeries,
    /// The mean of the stations' daily values (O3: the mean of the stations' daily maxima).
    StationDays,
}

/// The district's air stations.
pub fn stations(reg: &Registry) -> Vec<String> {
    reg.sites
        .values()
        .filter(|s| s.kind == SiteKind::AirStation)
        .map(|s| s.id.clone())
        .collect()
}

/// The pollutants of the six that a station does not monitor (HJ 633-2026 §5.3.2): outside its
/// declared plan (`monitored`) or, without one, measured by none of its air sensors. For the
/// district: those no station monitors.
pub fn not_monitored(reg: &Registry, station: &str) -> Vec<String> {
    let monitored_by = |site: &str| -> Vec<String> {
        match reg.sites.get(site).and_then(|s| s.monitored.clone()) {
            Some(m) => m,
            None => reg
                .sensors
                .values()
                .filter(|s| s.site == site && s.domain == Domain::Air)
                .flat_map(|s| s.channels.iter().map(|c| c.quantity.clone()))
                .collect(),
        }
    };
    let monitored: Vec<String> = if station == "district" {
        stations(reg).iter().flat_map(|s| monitored_by(s)).collect()
    } else {
        monitored_by(station)
    };
    POLLUTANTS
        .iter()
        .map(|(q, _)| q.to_string())
        .filter(|q| !monitored.contains(q))
        .collect()
}

/// The AQI of a report with the station's plan.
pub fn aqi(
    ed: Edition,
    report: Report,
    c: &Concentrations,
    not_monitored: &[String],
) -> Option<AqiSummary> {
    let nm: Vec<&str> = not_monitored.iter().map(String::as_str).collect();
    hj633::aqi_for_plan(ed, report, c, &nm)
        .ok()
        .map(|r| AqiSummary::from_result(&r))
}

/// The district's hourly values: per pollutant the mean of the stations with a valid value, when
/// at least `min_stations` have one (HJ 663: 点位算术平均).
pub fn district_values(
    station_values: &[&Values],
    keys: &[&str],
    min_stations: u32,
) -> (Values, BTreeMap<String, u32>) {
    let mut values = Values::new();
    let mut counts = BTreeMap::new();
    for q in keys {
        let per: Vec<Option<f64>> = station_values
            .iter()
            .map(|v| v.get(*q).copied().flatten())
            .collect();
        let n = per.iter().flatten().count() as u32;
        counts.insert(q.to_string(), n);
        values.insert(
            q.to_string(),
            (n >= min_stations.max(1))
                .then(|| hj663::district_mean(&per))
                .flatten(),
        );
    }
    (values, counts)
}

/// A station's value held out of the district's mean: it is more than `factor` times off the
/// median of the stations' values (a unit registered wrong reads 1,000 times too large).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub station: String,
    pub value: f64,
    /// The median of all the stations' values that hour (this one included: with one station far
    /// off, the median is one of the others).
    pub median: f64,
}

/// Below this a ratio says nothing (values near the detection limit): gases and particulates
/// 5 µg/m³, CO 0.5 mg/m³. A value and the others' median are each raised to it before comparing.
fn outlier_floor(pollutant: &str) -> f64 {
    if pollutant.starts_with("CO") {
        0.5
    } else {
        5.0
    }
}

/// The median (the mean of the middle two for an even count); sorts `v`.
pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Hold out of the district's mean the station values more than `factor` times off (either way)
/// the median of all the stations' values, for the (station, key) pairs `checked` names (by
/// default the pollutants of sensors still in their first days: `standards.air`). It needs three
/// stations with a value: with two, there is no telling which is wrong, and with one far off the
/// median of three or more is one of the others. The held out values are set to `None` in `per`
/// and returned per key. `factor` ≤ 1 holds out nothing. Floors ([`outlier_floor`]): a value is
/// too high when above `factor` × max(median, floor), too low when the median is at least the
/// floor and the value below median / `factor`.
pub fn hold_out_outliers(
    stations: &[String],
    per: &mut [Values],
    keys: &[&str],
    factor: f64,
    checked: impl Fn(&str, &str) -> bool,
) -> BTreeMap<String, Vec<HeldOut>> {
    let mut out: BTreeMap<String, Vec<HeldOut>> = BTreeMap::new();
    if factor <= 1.0 {
        return out;
    }
    for q in keys {
        let floor = outlier_floor(q);
        let valid: Vec<(usize, f64)> = per
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.get(*q).copied().flatten().map(|x| (i, x)))
            .collect();
        if valid.len() < 3 {
            continue;
        }
        let Some(m) = median(&mut valid.iter().map(|(_, x)| *x).collect::<Vec<_>>()) else {
            continue;
        };
        let mut held = Vec::new();
        for &(i, x) in &valid {
            let Some(station) = stations.get(i) else {
                continue;
            };
            if !checked(station, q) {
                continue;
            }
            let too_high = x > factor * m.max(floor);
            let too_low = m >= floor && x < m / factor;
            if too_high || too_low {
                held.push((
                    i,
                    HeldOut {
                        station: station.clone(),
                        value: x,
                        median: m,
                    },
                ));
            }
        }
        for (i, h) in held {
            if let Some(v) = per.get_mut(i) {
                v.insert(q.to_string(), None);
            }
            out.entry(q.to_string()).or_default().push(h);
        }
    }
    out
}

/// A day's concentrations and validity from its 24 hourly results (labelled 01:00 … 24:00; missing
/// hours are `None`).
pub fn day_values(hours: &[Option<&AirHour>; 24]) -> (Values, AirDayValidity) {
    let series = |q: &str| -> [Option<f64>; 24] {
        std::array::from_fn(|i| hours[i].and_then(|h| h.values.get(q).copied().flatten()))
    };
    let mut values = Values::new();
    let mut validity = AirDayValidity::default();
    for q in DAILY_MEANS {
        let h = series(q);
        values.insert(q.into(), hj663::daily_mean(&h));
        validity
            .hours
            .insert(q.into(), h.iter().flatten().count() as u32);
    }
    let o3 = series("O3");
    let max8 = hj663::o3_daily_max_8h(&o3);
    values.insert("O3_8h_max".into(), max8.max.filter(|_| max8.counts));
    values.insert("O3_1h_max".into(), hj663::o3_daily_max_1h(&o3));
    validity
        .hours
        .insert("O3".into(), o3.iter().flatten().count() as u32);
    validity.o3_valid_8h_windows = Some(max8.valid_windows as u32);
    (values, validity)
}

/// A daily result: concentrations, validity, and the daily AQI under `edition`.
pub fn day(
    edition: Edition,
    station: &str,
    day: NaiveDate,
    values: Values,
    validity: AirDayValidity,
    not_monitored: Vec<String>,
) -> AirDay {
    let v = |q: &str| values.get(q).copied().flatten();
    let conc = Concentrations {
        so2: v("SO2"),
        no2: v("NO2"),
        pm10: v("PM10"),
        pm25: v("PM2.5"),
        co: v("CO"),
        o3_8h: v("O3_8h_max"),
        o3_1h: v("O3_1h_max"),
        so2_24h: None,
    };
    let any = values.values().any(Option::is_some);
    let aqi = any
        .then(|| aqi(edition, Report::Daily, &conc, &not_monitored))
        .flatten();
    let good_day = aqi.as_ref().and_then(|a| a.aqi).map(|a| a <= 100);
    AirDay {
        station: station.to_string(),
        day: day.to_string(),
        values,
        validity,
        aqi,
        good_day,
        not_monitored,
    }
}

/// A month from its daily results (HJ 663 statistics; see `hj663::MONTH_STATISTICS`). Values are
/// as reported: GB/T 8170 at the pollutant's precision (µg/m³ to the unit, CO 0.1 mg/m³).
pub fn month(station: &str, year: i32, month: u32, days: &[AirDay]) -> AirMonth {
    let mut values = BTreeMap::new();
    for (key, stat, label) in hj663::MONTH_STATISTICS {
        let daily: Vec<f64> = days
            .iter()
            .filter_map(|d| d.values.get(key).copied().flatten())
            .collect();
        let (v, n) = hj663::month_statistic(&daily, stat, month);
        let decimals_key = if key == "O3_8h_max" { "O3" } else { key };
        values.insert(
            label.to_string(),
            AirMonthValue {
                statistic: match stat {
                    hj663::MonthStatistic::Mean => "mean",
                    hj663::MonthStatistic::P95 => "p95",
                    hj663::MonthStatistic::P90 => "p90",
                }
                .to_string(),
                value: v.map(|x| {
                    crate::catalogue::reported(
                        decimals_key,
                        crate::catalogue::Reporting::Ambient,
                        x,
                    )
                }),
                days: n,
            },
        );
    }
    let aqis: Vec<u32> = days
        .iter()
        .filter_map(|d| d.aqi.as_ref().and_then(|a| a.aqi))
        .collect();
    let good = aqis.iter().filter(|a| **a <= 100).count() as u32;
    let n = aqis.len() as u32;
    AirMonth {
        station: station.to_string(),
        year,
        month,
        values,
        aqi_days: n,
        good_days: good,
        good_rate_percent: (n > 0).then(|| f64::from(good) * 100.0 / f64::from(n)),
    }
}

/// Re-evaluate a stored daily result under another edition: the stored concentrations do not
/// depend on the edition, so the AQI, grade and good-day verdict are computed again from them.
pub fn reevaluate(d: &AirDay, edition: Edition) -> AirDay {
    let date = NaiveDate::parse_from_str(&d.day, "%Y-%m-%d").unwrap_or_default();
    day(
        edition,
        &d.station,
        date,
        d.values.clone(),
        d.validity.clone(),
        d.not_monitored.clone(),
    )
}
