//! The daily briefings: the list (`GET /api/v1/briefings`), making one now
//! (`POST /api/v1/briefings?day=YYYY-MM-DD&push=true`, operators) and the pictures robots show
//! (`GET /briefings/{name}`, no token: the name is an unguessable link).

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

fn briefings(s: &AppState) -> Result<&crate::report::schedule::Briefings, ApiError> {
    s.briefings.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "briefings are not enabled on this daemon ([report])",
        )
    })
}

pub async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    let b = briefings(&s)?;
    let list = b.list();
    Ok(Json(json!({"count": list.len(), "briefings": list})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeParams {
    /// The day (CST); default the day the timer would cover now.
    day: Option<String>,
    /// Push to the robots too. Default false: make and look first.
    #[serde(default)]
    push: bool,
}

pub async fn make(
    State(s): State<AppState>,
    q: Result<Query<MakeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let b = briefings(&s)?;
    let day = match q.day.as_deref() {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("day: {d:?} is not a date (YYYY-MM-DD)"),
            )
        })?,
        None => crate::standards::time::cst_date(chrono::Utc::now().timestamp_millis()),
    };
    let m = b
        .make(day, q.push)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((StatusCode::CREATED, Json(m)).into_response())
}

pub async fn png(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(bytes) = s.briefings.as_deref().and_then(|b| b.png(&name)) else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such briefing picture").into_response();
    };
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}
