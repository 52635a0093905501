//! Dry runs and live tests: what a device sends, decoded against a sensor, without storing it.
//!
//! - `POST /api/v1/sensors/dry-run` takes a sensor as it would be registered; it is checked like a
//!   registration (every field error at once), then tested: a Modbus device is read once, an MQTT
//!   topic or an HJ 212 MN is listened to (through the sources' taps). Nothing is registered,
//!   stored or alerted on.
//! - `POST /api/v1/sensors/dry-run?check=true` only checks the sensor (the console's live
//!   validation).
//! - `POST /api/v1/sensors/{id}/test` does the same for a registered sensor.
//!
//! Each value comes back decoded with its unit and whether it would be stored; each refusal with
//! its reason as the dead-letter file would give it; Modbus errors with the exception code named
//! and what to check ([`crate::ingest::modbus::explain`]). A first read where every value is 0 is
//! not called OK: a new device often reads 0 before it measures, and so does a wrong address.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::ingest::modbus::explain;
use crate::ingest::tap::Taps;
use crate::pipeline::validate::{self, Context};
use crate::reading::Source;
use crate::registry::{Protocol, Sensor};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// MQTT and HJ 212: how long to wait for a message (default 10, at most 60).
    seconds: Option<u64>,
    /// Only check the sensor as a registration would (every field error with its path) without
    /// touching the device: what the console's form asks as the technician types.
    #[serde(default)]
    check: bool,
}

/// `POST /api/v1/sensors/dry-run`.
pub async fn dry_run(
    State(s): State<AppState>,
    Query(q): Query<Params>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let sensor = match super::sensors::checked_candidate(&s, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if q.check {
        return Json(json!({"ok": true, "dry_run": true, "checked": sensor})).into_response();
    }
    probe(&s, sensor, q.seconds.unwrap_or(10), true).await
}

/// `POST /api/v1/sensors/{id}/test`.
pub async fn test(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let Some(sensor) = s.registry.snapshot().sensors.get(&id).cloned() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("sensor {id:?} does not exist"),
        )
        .into_response();
    };
    probe(&s, sensor, q.seconds.unwrap_or(10), false).await
}

fn context(source: Source) -> Context {
    Context {
        now: chrono::Utc::now(),
        // A dry run shows what the pipeline would do; its skew limit is the default's.
        max_future_skew: chrono::Duration::minutes(5),
        source,
    }
}

fn refusal(r: &crate::pipeline::Rejection) -> Value {
    json!({"reason": r.reason.as_str(), "detail": r.detail})
}

async fn probe(s: &AppState, sensor: Sensor, seconds: u64, dry: bool) -> Response {
    let seconds = seconds.clamp(1, 60);
    match sensor.protocol {
        Protocol::Modbus => modbus(s, sensor, dry).await,
        Protocol::Mqtt => {
            let Some(topic) = sensor.topic.clone() else {
                return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the sensor has no topic")
                    .into_response();
            };
            listen(
                s,
                sensor,
                Taps::mqtt(&topic),
                format!("topic {topic:?}"),
                seconds,
                dry,
            )
            .await
        }
        Protocol::Hj212 => {
            let Some(mn) = sensor.hj212.as_ref().map(|h| h.mn.clone()) else {
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the sensor has no hj212.mn",
                )
                .into_response();
            };
            listen(
                s,
                sensor,
                Taps::hj212(&mn),
                format!("MN {mn:?}"),
                seconds,
                dry,
            )
            .await
        }
    }
}

async fn modbus(s: &AppState, sensor: Sensor, dry: bool) -> Response {
    let Some(m) = sensor.modbus.clone() else {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the sensor has no modbus section",
        )
        .into_response();
    };
    let profiles = s
        .registration
        .as_ref()
        .map(|r| r.profiles())
        .unwrap_or_default();
    let Some(profile) = profiles.get(&m.profile).cloned() else {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("profile {:?} does not exist", m.profile),
        )
        .into_response();
    };
    let device = crate::ingest::modbus::poller::Device::new(sensor.id.clone(), m, profile.clone());
    let started = std::time::Instant::now();
    let r = match crate::ingest::modbus::poller::read_device(&device).await {
        Ok(r) => r,
        Err(e) => {
            let ex = explain::explain(&e);
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": {"status": 502, "message": format!("the device did not answer: {}", explain::describe(&e))},
                    "sensor": sensor.id, "protocol": "modbus", "dry_run": dry, "ok": false,
                    "detail": e, "explanation": ex})),
            )
                .into_response();
        }
    };
    let ctx = context(Source::Modbus);
    let items = crate::ingest::modbus::poller::poll_items(
        &device,
        &r.values,
        r.flag,
        ctx.now.timestamp_millis(),
    );
    let mut values = Vec::new();
    let mut stored = 0;
    for ((i, item), (_, raw)) in items.iter().zip(&r.values) {
        let d = &profile.values[*i];
        let (ok, value, unit, why) = match validate::validate_item(&sensor, item, &ctx) {
            Ok(reading) => {
                stored += 1;
                (true, reading.value, reading.unit, None)
            }
            Err(rej) => (
                false,
                *raw,
                d.unit.clone().unwrap_or_default(),
                Some(refusal(&rej)),
            ),
        };
        values.push(
            json!({"quantity": d.quantity, "value": value, "unit": unit, "raw": raw,
            "register": d.register, "address": d.address, "ok": ok, "refused": why}),
        );
    }
    let exceptions: Vec<Value> = r
        .exceptions
        .iter()
        .map(|(req, e)| json!({"request": req, "exception": e, "explanation": explain::explain(e)}))
        .collect();
    let mut warnings = Vec::new();
    if !r.values.is_empty() && r.values.iter().all(|(_, v)| *v == 0.0) {
        warnings.push(
            "全部读数为 0：新设备在首次测量前常读出 0，寄存器地址错位也会如此；请核对档案地址，待分析仪完成测量后再试 / \
             every value read 0: a new device often reads 0 before its first measurement, and so does a wrong register \
             address; check the profile's addresses and test again once the analyser has measured",
        );
    }
    let ok = exceptions.is_empty() && warnings.is_empty() && stored == values.len() && stored > 0;
    Json(
        json!({"sensor": sensor.id, "protocol": "modbus", "dry_run": dry, "ok": ok, "flag": r.flag,
        "values": values, "exceptions": exceptions, "warnings": warnings,
        "elapsed_ms": started.elapsed().as_millis() as u64}),
    )
    .into_response()
}

/// Wait for the first message on a tap and decode it against `sensor`.
async fn listen(
    s: &AppState,
    sensor: Sensor,
    key: String,
    what: String,
    seconds: u64,
    dry: bool,
) -> Response {
    let Some(taps) = s.taps.clone() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "listening is not available in this process",
        )
        .into_response();
    };
    let mut tap = taps.listen(key);
    let payload = match tokio::time::timeout(Duration::from_secs(seconds), tap.rx.recv()).await {
        Ok(Some(p)) => p,
        _ => {
            let hint = match sensor.protocol {
                Protocol::Hj212 => "检查数采仪的上位机地址与端口、MN 号 / check the logger's server address and port and its MN",
                _ => "检查设备发布的主题是否与此完全一致、是否连接到同一 broker / check that the device publishes to exactly this topic on the same broker",
            };
            return (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({"error": {"status": 504, "message": format!("no message from {what} within {seconds} s: {hint}")},
                    "sensor": sensor.id, "dry_run": dry, "ok": false})),
            )
                .into_response();
        }
    };
    // HJ 212 frames, from a logger or over MQTT, are opened with the loggers' keys.
    let frames = sensor.protocol == Protocol::Hj212
        || sensor.payload_format == crate::registry::PayloadFormat::Hj212;
    let source = if sensor.protocol == Protocol::Hj212 {
        Source::Hj212
    } else {
        Source::Mqtt
    };
    let decoded = if frames {
        let Some(keys) = s.registration.as_ref().and_then(|r| r.keystore()) else {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "HJ 212 keys are not available in this process",
            )
            .into_response();
        };
        crate::ingest::mqtt::hj212_payload(&sensor, &payload, &context(source), &keys)
    } else {
        validate::decode_payload(&sensor, &payload, &context(source))
    };
    let protocol = source.as_str();
    let readings: Vec<Value> = decoded
        .readings
        .iter()
        .map(|r| json!({"quantity": r.quantity, "value": r.value, "unit": r.unit, "flag": r.flag.as_str(),
            "time": r.ts.to_rfc3339(), "ok": true}))
        .collect();
    let refusals: Vec<Value> = decoded.rejections.iter().map(refusal).collect();
    let text = String::from_utf8_lossy(&payload[..payload.len().min(4096)]).into_owned();
    Json(
        json!({"sensor": sensor.id, "protocol": protocol, "dry_run": dry,
        "ok": refusals.is_empty() && !readings.is_empty(),
        "values": readings, "refusals": refusals, "payload": text}),
    )
    .into_response()
}
