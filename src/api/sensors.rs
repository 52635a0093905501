//! Sensor registration over HTTP: register, change (JSON merge patch), retire and restore,
//! maintenance; sites; device profiles; the audit log; the recent refusals; export and import of
//! the registry as TOML. Dry runs and live tests are in `dryrun.rs`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Actor;
use super::{ApiError, AppState};
use crate::registration::{RegError, Registration};
use crate::registry::SensorStatus;

fn registration(s: &AppState) -> Result<std::sync::Arc<Registration>, ApiError> {
    s.registration.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registration is not available",
        )
    })
}

/// 422 with every error and its field path; 404; 500.
fn reg_error(e: RegError) -> Response {
    match e {
        RegError::Invalid(errs) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"status": 422, "message": format!("{} error(s); nothing was changed", errs.len()),
                "errors": errs.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>()}})),
        )
            .into_response(),
        RegError::NotFound(what) => ApiError::new(StatusCode::NOT_FOUND, format!("{what} does not exist")).into_response(),
        other => {
            tracing::error!(error = %other, "registration failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registration failed; see the daemon's log").into_response()
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(reg_error),
        Err(e) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
        }
    }
}

/// Run a registration call on a JSON body off the async runtime: its result, or the error response
/// (bad JSON, registration disabled, or the registration error).
async fn with_body<T: Send + 'static>(
    s: &AppState,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
    f: impl FnOnce(&Registration, &Value) -> Result<T, RegError> + Send + 'static,
) -> Result<T, Response> {
    // A body's own problem keeps the status it calls for: 413 over the limit, 415 without a JSON
    // content type, 400 for JSON that does not parse; one that parses but does not fit is 422
    // like every registration error.
    let body = match body {
        Ok(Json(v)) => v,
        Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
            return Err(reg_error(RegError::Invalid(vec![
                crate::config::FieldError {
                    path: String::new(),
                    message: e.body_text(),
                },
            ])))
        }
        Err(e) => return Err(ApiError::new(e.status(), e.body_text()).into_response()),
    };
    let reg = registration(s).map_err(IntoResponse::into_response)?;
    blocking(move || f(&reg, &body)).await
}

/// A registration call taking a JSON body: 201 with what was stored, or the registration error.
async fn create<T: serde::Serialize + Send + 'static>(
    s: AppState,
    actor: Actor,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
    f: impl FnOnce(&Registration, &str, &Value) -> Result<T, RegError> + Send + 'static,
) -> Response {
    match with_body(&s, body, move |r, b| f(r, &actor.name, b)).await {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(r) => r,
    }
}

pub async fn register(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    create(s, actor, body, |r, who, b| r.register(who, b)).await
}

pub async fn patch(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match with_body(&s, body, move |r, b| r.patch(&actor.name, &id, b)).await {
        Ok(sensor) => Json(sensor).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// Maintenance on (true) or off (false).
    #[serde(default)]
    on: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

async fn status(
    s: AppState,
    actor: Actor,
    id: String,
    status: SensorStatus,
    reason: Option<String>,
) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.set_status(&actor.name, &id, status, reason)).await {
        Ok(sensor) => Json(sensor).into_response(),
        Err(r) => r,
    }
}

pub async fn retire(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Option<Json<StatusBody>>,
) -> Response {
    let reason = body.and_then(|Json(b)| b.reason);
    status(s, actor, id, SensorStatus::Retired, reason).await
}

pub async fn maintenance(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let b = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()).into_response()
        }
    };
    let Some(on) = b.on else {
        return reg_error(RegError::Invalid(vec![crate::config::FieldError {
            path: "on".into(),
            message: "true to start maintenance, false to end it".into(),
        }]));
    };
    if on && b.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return reg_error(RegError::Invalid(vec![crate::config::FieldError {
            path: "reason".into(),
            message: "say why the sensor goes into maintenance".into(),
        }]));
    }
    status(
        s,
        actor,
        id,
        if on {
            SensorStatus::Maintenance
        } else {
            SensorStatus::Active
        },
        b.reason,
    )
    .await
}

/// The sensor of a dry run's body, checked as a registration would be (422 with every error).
pub async fn checked_candidate(
    s: &AppState,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<crate::registry::Sensor, Response> {
    with_body(s, body, |r, b| r.candidate(b)).await
}

/// `POST /api/v1/sensors/{id}/restore`: a retired sensor back to active (checked again: its topic,
/// MN or unit id may have been taken since).
pub async fn restore(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.restore(&actor.name, &id)).await {
        Ok(sensor) => Json(sensor).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/v1/sites`: add a site (an air station, a river section…) at run time.
pub async fn register_site(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    create(s, actor, body, |r, who, b| r.register_site(who, b)).await
}

/// `PATCH /api/v1/sites/{id}`: change a site by JSON merge patch (RFC 7396).
pub async fn patch_site(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match with_body(&s, body, move |r, b| r.patch_site(&actor.name, &id, b)).await {
        Ok(site) => Json(site).into_response(),
        Err(r) => r,
    }
}

/// `PATCH /api/v1/units/{id}` with `{"integrity": {…}}` (technician): what the integrity rules
/// need to know of the unit (calibration windows, stack area, ranges, detection limits).
pub async fn patch_unit(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match with_body(&s, body, move |r, b| r.patch_unit(&actor.name, &id, b)).await {
        Ok(unit) => Json(unit).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterParams {
    /// At most this many records (default 100, at most 1000).
    limit: Option<usize>,
    /// Only the refusals of this sensor (its topic, its MN, or its id for Modbus polls).
    sensor: Option<String>,
}

/// `GET /api/v1/deadletter`: the recent refusals, newest first, with reason, detail and payload.
pub async fn deadletter(State(s): State<AppState>, Query(q): Query<DeadLetterParams>) -> Response {
    let Some(dl) = s.deadletter.clone() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the dead-letter file is not available in this process",
        )
        .into_response();
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = match &q.sensor {
        None => None,
        Some(id) => {
            let reg = s.registry.snapshot();
            let Some(sensor) = reg.sensors.get(id) else {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("sensor {id:?} does not exist"),
                )
                .into_response();
            };
            Some((
                sensor.id.clone(),
                sensor.topic.clone(),
                sensor.hj212.as_ref().map(|h| format!("MN={};", h.mn)),
            ))
        }
    };
    let path = dl.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        crate::pipeline::deadletter::recent(&path, limit, |r| match &filter {
            None => true,
            Some((id, topic, mn)) => {
                r.topic == *id
                    || topic.as_deref() == Some(r.topic.as_str())
                    || mn.as_deref().is_some_and(|m| r.payload.contains(m))
            }
        })
    })
    .await;
    match r {
        Ok(Ok(records)) => Json(json!({"records": records})).into_response(),
        Ok(Err(e)) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the dead-letter file: {e}"),
        )
        .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn list_profiles(State(s): State<AppState>) -> Response {
    let profiles: Vec<_> = s
        .registration
        .as_ref()
        .map(|r| r.profiles().into_values().collect())
        .unwrap_or_default();
    Json(json!({"profiles": profiles})).into_response()
}

pub async fn register_profile(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    create(s, actor, body, |r, who, b| r.register_profile(who, b)).await
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    limit: Option<usize>,
}

pub async fn audit(State(s): State<AppState>, Query(q): Query<AuditParams>) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    match blocking(move || reg.audit_log(limit)).await {
        Ok(entries) => Json(json!({"entries": entries})).into_response(),
        Err(r) => r,
    }
}

pub async fn export(State(s): State<AppState>) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.export_toml()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/toml; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}

pub async fn import(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: String,
) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.import_toml(&actor.name, &body)).await {
        Ok(n) => Json(json!({"imported": n})).into_response(),
        Err(r) => r,
    }
}

/// `PUT /api/v1/sensors/{id}/hj212-key` with `{"key": "<32 hex>"}`: set (or rotate) the SM4 key of
/// the sensor's HJ 212-2025 logger. The answer and the audit log name keys by fingerprint only.
pub async fn set_key(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let r = with_body(&s, body, move |r, b| {
        let key = match b.get("key").and_then(Value::as_str) {
            Some(k) => crate::ingest::hj212::crypto::Key::from_hex(k).map_err(|e| {
                RegError::Invalid(vec![crate::config::FieldError {
                    path: "key".into(),
                    message: e.to_string(),
                }])
            })?,
            None => {
                return Err(RegError::Invalid(vec![crate::config::FieldError {
                    path: "key".into(),
                    message: "the SM4 key, 32 hex digits".into(),
                }]))
            }
        };
        r.set_hj212_key(&actor.name, &id, Some(&key))
    })
    .await;
    match r {
        Ok(change) => Json(change).into_response(),
        Err(resp) => resp,
    }
}

/// `DELETE /api/v1/sensors/{id}/hj212-key`: remove the logger's SM4 key (its sealed frames are then
/// refused).
pub async fn remove_key(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.set_hj212_key(&actor.name, &id, None)).await {
        Ok(change) => Json(change).into_response(),
        Err(resp) => resp,
    }
}

/// `GET /api/v1/sensors/{id}/hj212-key`: the key's fingerprint, when and by whom it was set, and
/// the previous key still accepted during the overlap. Never the key.
pub async fn key_status(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let reg = match registration(&s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match blocking(move || reg.hj212_key_status(&id)).await {
        Ok(Some(st)) => Json(st).into_response(),
        Ok(None) => Json(json!({"fingerprint": null})).into_response(),
        Err(resp) => resp,
    }
}

/// `GET /api/v1/sensors/{id}/hj212-site-info`: everything the sensor's logger declared (CN 3020 site
/// parameters, ST 45 conditions), each value with when it was declared, what it replaced and when
/// it was replaced, oldest first.
pub async fn site_info(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(si) = s.site_info.clone() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the HJ 212 server is not enabled",
        )
        .into_response();
    };
    let reg = s.registry.snapshot();
    let Some(mn) = reg
        .sensors
        .get(&id)
        .map(|x| x.hj212.as_ref().map(|h| h.mn.clone()))
    else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("sensor {id:?} does not exist"),
        )
        .into_response();
    };
    let Some(mn) = mn else {
        return Json(json!({"sensor": id, "declared": []})).into_response();
    };
    match tokio::task::spawn_blocking(move || si.history(&mn)).await {
        Ok(Ok(rows)) => {
            let declared: Vec<Value> = rows
                .into_iter()
                .map(|d| {
                    json!({"kind": d.kind, "pollutant": d.pol, "parameter": d.code, "value": d.value,
                        "before": d.before, "since": crate::standards::time::cst_rfc3339(d.since_ms),
                        "until": d.until_ms.map(crate::standards::time::cst_rfc3339)})
                })
                .collect();
            Json(json!({"sensor": id, "declared": declared})).into_response()
        }
        Ok(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
