//! Alerts over HTTP: active alerts, history, rules, and silences.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::Actor;
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
    /// Why (required): what on-call staff read when they wonder why nothing pages.
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceParams {
    /// `true`: only say which alerts it would match; nothing is created.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/silences` (operator): every mistake at once; the author is the token's name; the
/// answer lists the alerts it matches now, and warns when there are none.
pub async fn create_silence(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<SilenceParams>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let Json(n) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let a = alerting(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let mut errors = Vec::new();
    if n.matchers.is_empty() {
        errors.push(
            "matchers: at least one label is needed (a silence of everything is refused)"
                .to_string(),
        );
    }
    if n.comment.trim().is_empty() {
        errors.push("comment: say why (说明原因), e.g. the maintenance ticket".to_string());
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
    let matched: Vec<serde_json::Value> = a
        .matching(&n.matchers)
        .into_iter()
        .map(|x| json!({"fingerprint": x.fingerprint, "rule": x.rule, "labels": x.labels, "phase": x.phase}))
        .collect();
    let warning = matched.is_empty().then_some(
        "此静默当前不匹配任何告警 / this silence matches no pending or firing alert now",
    );
    if q.dry_run {
        return Ok(Json(json!({"matches": matched, "warning": warning})).into_response());
    }
    let silence = Silence {
        id: format!("{:016x}", rand::random::<u64>()),
        matchers: n.matchers,
        starts_at_ms: now,
        ends_at_ms: ends.unwrap_or(now),
        comment: n.comment,
        created_by: actor.name.clone(),
        alertmanager: Default::default(),
    };
    let s2 = silence.clone();
    tokio::task::spawn_blocking(move || a.add_silence(s2))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(id = %silence.id, matchers = ?silence.matchers, by = %silence.created_by, matched = matched.len(), "silence created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"silence": silence, "matches": matched, "warning": warning})),
    )
        .into_response())
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

/// `GET /api/v1/receivers`: the configured receivers' names and kinds (no URLs: they may hold
/// tokens).
pub async fn receivers(State(s): State<AppState>) -> Result<Response, ApiError> {
    let list: Vec<serde_json::Value> = alerting(&s)?
        .receiver_list()
        .into_iter()
        .map(|r| {
            let kind = match r.kind {
                crate::alerts::notify::ReceiverKind::Alertmanager { .. } => "alertmanager",
                crate::alerts::notify::ReceiverKind::Webhook { .. } => "webhook",
                crate::alerts::notify::ReceiverKind::DingTalk { .. } => "dingtalk",
                crate::alerts::notify::ReceiverKind::WeCom { .. } => "wecom",
            };
            json!({"name": r.name, "kind": kind})
        })
        .collect();
    Ok(Json(json!({"receivers": list})).into_response())
}

/// `POST /api/v1/receivers/{name}/test` (operator): send a test notification to that receiver now
/// and say whether it took it.
pub async fn test_receiver(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let a = alerting(&s)?.clone();
    match a.test_receiver(&name, &actor.name).await {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("receiver {name:?} does not exist (GET /api/v1/receivers lists them)"),
        )),
        Some(Ok(())) => {
            tracing::info!(receiver = %name, by = %actor.name, "test notification sent");
            Ok(Json(json!({"receiver": name, "sent": true})).into_response())
        }
        Some(Err(e)) => Ok((
            StatusCode::BAD_GATEWAY,
            Json(json!({"receiver": name, "sent": false, "error": {"status": 502, "message": format!("the receiver did not take it: {e}")}})),
        )
            .into_response()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    comment: String,
}

/// `POST /api/v1/alerts/{fingerprint}/ack` with `{"comment": "…"}`: take the alert on for its
/// current episode (shown in `GET /api/v1/alerts` as `acknowledged`).
pub async fn acknowledge(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(fingerprint): Path<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if b.comment.trim().is_empty() {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"error": {"status": 422, "message": "invalid acknowledgement",
                "errors": ["comment: say what you are doing about it (说明处理情况)"]}}),
            ),
        )
            .into_response());
    }
    let a = alerting(&s)?.clone();
    let now = Utc::now().timestamp_millis();
    let by = actor.name.clone();
    let r = tokio::task::spawn_blocking(move || a.acknowledge(&fingerprint, &by, &b.comment, now))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match r {
        Ok(Some(ack)) => Ok(Json(ack).into_response()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no pending or firing alert has that fingerprint",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}
