//! Alerts over HTTP: active alerts, history, rules, and silences.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::alerts::rules::Phase;
use crate::alerts::{Alerting, Silence};

fn alerting(s: &AppState) -> Result<&std::sync::Arc<Alerting>, ApiError> {
    s.alerting.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is disabled (alerts.enabled = false)",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// pending, firing, resolved; default: pending and firing.
    state: Option<String>,
    fingerprint: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let a = alerting(&s)?;
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => Some(Phase::Pending),
        Some("firing") => Some(Phase::Firing),
        Some("resolved") => Some(Phase::Resolved),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state: {other:?} is not pending, firing or resolved"),
            ))
        }
    };
    let mut alerts = a.list(state, Utc::now().timestamp_millis());
    if let Some(fp) = &q.fingerprint {
        alerts.retain(|x| &x.alert.fingerprint == fp);
    }
    Ok(Json(json!({"count": alerts.len(), "alerts": alerts})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    limit: Option<usize>,
}

pub async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let a = alerting(&s)?.clone();
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    let events = tokio::task::spawn_blocking(move || a.history(limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({"events": events})).into_response())
}

pub async fn rules(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({"rules": alerting(&s)?.rules()})).into_response())
}

pub async fn silences(State(s): State<AppState>) -> Result<Response, ApiError> {
    let now = Utc::now().timestamp_millis();
    let list: Vec<serde_json::Value> = alerting(&s)?
        .silences()
        .into_iter()
        .map(|x| json!({"active": x.active(now), "silence": x}))
        .collect();
    Ok(Json(json!({"silences": list})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Label → value (`alertname` for the rule).
    matchers: std::collections::BTreeMap<String, String>,
    /// RFC 3339 end …
    ends_at: Option<String>,
    /// … or a duration from now, e.g. "2h".
    duration: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    created_by: String,
}

pub async fn create_silence(
    State(s): State<AppState>,
    body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(n) =
        body.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let a = alerting(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let mut errors = Vec::new();
    if n.matchers.is_empty() {
        errors.push(
            "matchers: at least one label is needed (a silence of everything is refused)"
                .to_string(),
        );
    }
    let ends = match (&n.ends_at, &n.duration) {
        (Some(t), None) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("ends_at: {t:?} is not RFC 3339 ({e})")),
        (None, Some(d)) => humantime::parse_duration(d)
            .map(|d| now + d.as_millis() as i64)
            .map_err(|e| format!("duration: {d:?}: {e}")),
        _ => Err("ends_at or duration: give exactly one".to_string()),
    };
    match &ends {
        Ok(e) if *e <= now => errors.push("ends_at: must be in the future".into()),
        Err(e) => errors.push(e.clone()),
        _ => {}
    }
    if !errors.is_empty() {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"status": 422, "message": "invalid silence", "errors": errors}})),
        )
            .into_response());
    }
    let silence = Silence {
        id: format!("{:016x}", rand::random::<u64>()),
        matchers: n.matchers,
        starts_at_ms: now,
        ends_at_ms: ends.unwrap_or(now),
        comment: n.comment,
        created_by: n.created_by,
    };
    let s2 = silence.clone();
    tokio::task::spawn_blocking(move || a.add_silence(s2))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(id = %silence.id, matchers = ?silence.matchers, "silence created");
    Ok((StatusCode::CREATED, Json(json!({"silence": silence}))).into_response())
}

pub async fn expire_silence(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = alerting(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let id2 = id.clone();
    let found = tokio::task::spawn_blocking(move || a.expire_silence(&id2, now))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if found {
        Ok(Json(json!({"expired": id})).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("silence {id:?} does not exist"),
        ))
    }
}
