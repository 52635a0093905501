//! Standards results over HTTP: hourly and daily CEMS, air and water results, and the plan's
//! indicators.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::catalogue::Reporting;

use super::{ApiError, AppState};
use crate::standards::results::{
    AirDay, AirHour, CemsDay, CemsHour, Page, Stored, TreatmentDay, WaterDay,
};
use crate::standards::time::{self, DAY_MS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    unit: Option<String>,
    station: Option<String>,
    sensor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Re-evaluate daily air results under this AQI edition (HJ633-2012 or HJ633-2026).
    standard: Option<String>,
}

fn edition(v: Option<&str>) -> Result<Option<crate::standards::hj633::Edition>, ApiError> {
    v.map(|s| {
        crate::standards::hj633::Edition::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("standard: {s:?} is not HJ633-2012 or HJ633-2026"),
            )
        })
    })
    .transpose()
}

/// RFC 3339, epoch ms, or a date (CST midnight).
fn parse_bound(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(time::day_start_ms(d));
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name}: {v:?} is not RFC 3339, epoch milliseconds or YYYY-MM-DD"),
            )
        })
}

pub(super) fn engine(
    s: &AppState,
) -> Result<&std::sync::Arc<crate::standards::engine::Engine>, ApiError> {
    s.standards.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the standards engine is disabled (standards.enabled = false)",
        )
    })
}

/// The `from`/`to` bounds of a range query, with a default span ending a day from now.
pub(super) fn bounds(
    from: Option<&str>,
    to: Option<&str>,
    default_span: i64,
) -> Result<(i64, i64), ApiError> {
    let now = Utc::now().timestamp_millis();
    let to = to
        .map(|v| parse_bound("to", v))
        .transpose()?
        .unwrap_or(now + DAY_MS);
    let from = from
        .map(|v| parse_bound("from", v))
        .transpose()?
        .unwrap_or(now - default_span);
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "from: must not be after to",
        ));
    }
    Ok((from, to))
}

/// Run a blocking engine query; its failure is logged and answered 500.
pub(super) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, crate::standards::engine::EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, query = what, "standards query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{what} query failed; see the daemon's log"),
            )
        })
}

/// Typed results of `T` over a range, mapped by `f` (e.g. re-evaluated), as a page.
async fn results<T: Stored + Send + 'static>(
    s: AppState,
    entity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    default_span: i64,
    f: impl Fn(T) -> T + Send + 'static,
) -> Result<Response, ApiError> {
    let engine = engine(&s)?.clone();
    let (from, to) = bounds(from.as_deref(), to.as_deref(), default_span)?;
    let docs = blocking(T::KIND, move || {
        Ok(engine
            .results::<T>(entity.as_deref(), from, to)?
            .into_iter()
            .map(|(_, _, d)| f(d))
            .collect::<Vec<T>>())
    })
    .await?;
    Ok(Json(Page::new(docs)).into_response())
}

type Params = Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>;

fn params(q: Params) -> Result<RangeParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

pub async fn cems_hourly(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results::<CemsHour>(s, p.unit, p.from, p.to, DAY_MS, |d| d).await
}

pub async fn cems_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results::<CemsDay>(s, p.unit, p.from, p.to, 31 * DAY_MS, |d| d).await
}

pub async fn air_hourly(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results::<AirHour>(s, p.station, p.from, p.to, DAY_MS, |mut d| {
        round_values(&mut d.values, Reporting::Ambient);
        d
    })
    .await
}

/// Means without a float's binary tail (`pH 7.3100000000000005`). Water means at their reporting
/// precision (`catalogue::reporting_decimals`, the finer of GB 3838's and GB 18918's); ambient
/// means one place finer than HJ 633's input rounding (0.1 ppm O3 reads 196.2 µg/m³, which the
/// AQI rounds to 196), so what the AQI rounded from stays visible.
fn round_values(values: &mut crate::standards::results::Values, r: Reporting) {
    let finer = u32::from(r == Reporting::Ambient);
    for (k, v) in values.iter_mut() {
        if let Some(x) = v {
            let places = crate::catalogue::reporting_decimals(k, r) + finer;
            *x = crate::standards::hj633::round_half_even(*x, places);
        }
    }
}

/// Daily air results; with `standard=`, the AQI and verdicts computed again from the stored
/// concentrations under that edition.
pub async fn air_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let ed = edition(p.standard.as_deref())?;
    results::<AirDay>(s, p.station, p.from, p.to, 31 * DAY_MS, move |d| {
        let mut d = match ed {
            Some(ed) => crate::standards::air::reevaluate(&d, ed),
            None => d,
        };
        round_values(&mut d.values, Reporting::Ambient);
        d
    })
    .await
}

/// Daily water results; `sensor=treatment` gives the district's sewage treatment days.
pub async fn water_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    if p.sensor.as_deref() == Some("treatment") {
        return results::<TreatmentDay>(s, p.sensor, p.from, p.to, 31 * DAY_MS, |d| d).await;
    }
    results::<WaterDay>(s, p.sensor, p.from, p.to, 31 * DAY_MS, |mut d| {
        round_values(&mut d.values, Reporting::Water);
        d
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearParams {
    year: Option<i32>,
    /// A window instead of a calendar year: first and last day (YYYY-MM-DD), both or neither.
    from: Option<String>,
    to: Option<String>,
    standard: Option<String>,
}

fn day_param(name: &str, v: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}: {v:?} is not a date (YYYY-MM-DD)"),
        )
    })
}

/// A window of days `from ..= to` (YYYY-MM-DD), at most ten years.
fn day_window(from: &str, to: &str) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (a, b) = (day_param("from", from)?, day_param("to", to)?);
    if a > b {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "from: must not be after to",
        ));
    }
    if (b - a).num_days() > 3660 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "to: a window is at most ten years",
        ));
    }
    Ok((a, b))
}

pub async fn compliance(
    State(s): State<AppState>,
    q: Result<Query<YearParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let ed = edition(q.standard.as_deref())?;
    let now = Utc::now().timestamp_millis();
    let window = match (q.from.as_deref(), q.to.as_deref(), q.year) {
        (Some(a), Some(b), None) => day_window(a, b)?,
        (None, None, year) => {
            let year = year.unwrap_or_else(|| chrono::Datelike::year(&time::cst_date(now)));
            if !(2000..=2100).contains(&year) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("year: {year} is outside 2000..=2100"),
                ));
            }
            crate::standards::plan::year_window(year)
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("year: {year}")))?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "from, to: give both (a window) or neither (year=…), not with year",
            ))
        }
    };
    let doc = blocking("compliance", move || {
        engine.compliance_window(window, now, ed)
    })
    .await?;
    Ok(Json(doc).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareParams {
    from: String,
    to: String,
    /// A station's days instead of the district's.
    station: Option<String>,
}

/// `GET /api/v1/compliance/compare?from=&to=`: the district's days (or a station's) under both
/// AQI editions: good-days rate, days per grade, primary pollutants, months, the days that change.
pub async fn compare(
    State(s): State<AppState>,
    q: Result<Query<CompareParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let (a, b) = day_window(&q.from, &q.to)?;
    let station = q.station.unwrap_or_else(|| "district".into());
    let doc = blocking("compare", move || engine.compare_editions(&station, a, b)).await?;
    Ok(Json(doc).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthlyParams {
    unit: Option<String>,
    year: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirMonthlyParams {
    /// A station, or `district` (the default).
    station: Option<String>,
    year: Option<i32>,
}

/// The year asked for, or this year in Beijing time.
fn year_or_this(year: Option<i32>) -> i32 {
    year.unwrap_or_else(|| chrono::Datelike::year(&time::cst_date(Utc::now().timestamp_millis())))
}

/// A station's months of a year (HJ 663): means, CO 95th and O3 90th percentiles, good days.
pub async fn air_monthly(
    State(s): State<AppState>,
    q: Result<Query<AirMonthlyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let year = year_or_this(q.year);
    let station = q.station.unwrap_or_else(|| "district".into());
    let docs = blocking("air monthly", move || engine.air_monthly(&station, year)).await?;
    Ok(Json(Page::new(docs)).into_response())
}

pub async fn cems_monthly(
    State(s): State<AppState>,
    q: Result<Query<MonthlyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let year = year_or_this(q.year);
    let docs = blocking("cems monthly", move || {
        engine.cems_monthly(q.unit.as_deref(), year)
    })
    .await?;
    Ok(Json(Page::new(docs)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableParams {
    /// The unit (CEMS tables), station (`air-daily`, `air-monthly`, `district` too) or sensor
    /// (`water-daily`).
    unit: Option<String>,
    station: Option<String>,
    sensor: Option<String>,
    /// `YYYY-MM-DD` (cems-hourly), `YYYY-MM` (the daily tables), `YYYY` (the monthly tables).
    day: Option<String>,
    month: Option<String>,
    year: Option<i32>,
    /// `csv` (default) or `xlsx`.
    format: Option<String>,
}

/// `GET /api/v1/reports/{table}`: a report table as CSV or XLSX (see `crate::tables`).
pub async fn table(
    State(s): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    q: Result<Query<TableParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    use crate::tables::{self, Kind};
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let kind = Kind::parse(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no table {name:?}; tables: {}", Kind::NAMES),
        )
    })?;
    let entity = q.unit.or(q.station).or(q.sensor).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unit, station or sensor is required",
        )
    })?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let day = q
        .day
        .as_deref()
        .map(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| bad(format!("day: {d:?} is not YYYY-MM-DD")))
        })
        .transpose()?;
    let month = q
        .month
        .as_deref()
        .map(|m| {
            chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
                .map(|d| (chrono::Datelike::year(&d), chrono::Datelike::month(&d)))
                .map_err(|_| bad(format!("month: {m:?} is not YYYY-MM")))
        })
        .transpose()?;
    let csv = match q.format.as_deref() {
        None | Some("csv") => true,
        Some("xlsx") => false,
        Some(other) => return Err(bad(format!("format: {other:?} is not csv or xlsx"))),
    };
    let args = tables::Args {
        entity: entity.clone(),
        day,
        month,
        year: q.year,
    };
    let e = engine(&s)?.clone();
    let built =
        tokio::task::spawn_blocking(move || -> Result<(String, Vec<u8>), tables::TableError> {
            let t = tables::build(&e, kind, &args)?;
            Ok(if csv {
                (
                    "text/csv; charset=utf-8".into(),
                    tables::to_csv(&t).into_bytes(),
                )
            } else {
                (
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".into(),
                    tables::to_xlsx(&t)?,
                )
            })
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (content_type, body) = match built {
        Ok(x) => x,
        Err(tables::TableError::Args(m)) => return Err(bad(m)),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
    };
    let period = q
        .day
        .or(q.month)
        .unwrap_or_else(|| q.year.map(|y| y.to_string()).unwrap_or_default());
    let file = format!(
        "{name}-{entity}-{period}.{}",
        if csv { "csv" } else { "xlsx" }
    );
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}
