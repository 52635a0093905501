//! Standards results over HTTP: hourly and daily CEMS, air and water results, and the plan's
//! indicators.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
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

fn engine(s: &AppState) -> Result<&std::sync::Arc<crate::standards::engine::Engine>, ApiError> {
    s.standards.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the standards engine is disabled (standards.enabled = false)",
        )
    })
}

async fn results(
    s: AppState,
    kind: &'static str,
    entity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    default_span: i64,
    reevaluate: Option<crate::standards::hj633::Edition>,
) -> Result<Response, ApiError> {
    let engine = engine(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let to = to
        .as_deref()
        .map(|v| parse_bound("to", v))
        .transpose()?
        .unwrap_or(now + DAY_MS);
    let from = from
        .as_deref()
        .map(|v| parse_bound("from", v))
        .transpose()?
        .unwrap_or(now - default_span);
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "from: must not be after to",
        ));
    }
    let rows =
        tokio::task::spawn_blocking(move || engine.results(kind, entity.as_deref(), from, to))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| {
                tracing::error!(error = %e, "standards query failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "standards query failed; see the daemon's log",
                )
            })?;
    let docs: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(_, _, d)| match reevaluate {
            Some(ed) => crate::standards::engine::reevaluate_air_day(&d, ed),
            None => d,
        })
        .collect();
    Ok(Json(json!({"count": docs.len(), "results": docs})).into_response())
}

type Params = Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>;

fn params(q: Params) -> Result<RangeParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

pub async fn cems_hourly(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results(s, "cems_hourly", p.unit, p.from, p.to, DAY_MS, None).await
}

pub async fn cems_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results(s, "cems_daily", p.unit, p.from, p.to, 31 * DAY_MS, None).await
}

pub async fn air_hourly(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results(s, "air_hourly", p.station, p.from, p.to, DAY_MS, None).await
}

pub async fn air_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    let ed = edition(p.standard.as_deref())?;
    results(s, "air_daily", p.station, p.from, p.to, 31 * DAY_MS, ed).await
}

pub async fn water_daily(State(s): State<AppState>, q: Params) -> Result<Response, ApiError> {
    let p = params(q)?;
    results(s, "water_daily", p.sensor, p.from, p.to, 31 * DAY_MS, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearParams {
    year: Option<i32>,
    standard: Option<String>,
}

pub async fn compliance(
    State(s): State<AppState>,
    q: Result<Query<YearParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let ed = edition(q.standard.as_deref())?;
    let now = Utc::now().timestamp_millis();
    let year = q
        .year
        .unwrap_or_else(|| chrono::Datelike::year(&time::cst_date(now)));
    if !(2000..=2100).contains(&year) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("year: {year} is outside 2000..=2100"),
        ));
    }
    let doc = tokio::task::spawn_blocking(move || engine.compliance(year, now, ed))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "compliance query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "compliance query failed; see the daemon's log",
            )
        })?;
    Ok(Json(doc).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthlyParams {
    unit: Option<String>,
    year: Option<i32>,
}

pub async fn cems_monthly(
    State(s): State<AppState>,
    q: Result<Query<MonthlyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let engine = engine(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let year = q
        .year
        .unwrap_or_else(|| chrono::Datelike::year(&time::cst_date(now)));
    let docs = tokio::task::spawn_blocking(move || engine.cems_monthly(q.unit.as_deref(), year))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({"count": docs.len(), "results": docs})).into_response())
}
