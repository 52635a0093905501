//! The HTTP API: health, readiness, metrics, the registry and readings.
//!
//! `app(state)` builds the whole router, so tests drive it with `tower::ServiceExt::oneshot`
//! without a socket. Errors are JSON `{"error": {"status": …, "message": …}}` with the status code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::metrics::Metrics;
use crate::pipeline::writer::LatestValues;
use crate::reading::Reading;
use crate::registry::RegistryHandle;
use crate::store::embedded::{self, EmbeddedReader};

pub mod alerts;
pub mod auth;
pub mod briefings;
pub mod console;
pub mod dryrun;
pub mod import;
pub mod integrity;
pub mod sensors;
pub mod serve;
pub mod standards;

/// Liveness facts the readiness check reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Whether an MQTT source is configured at all.
    pub mqtt_enabled: AtomicBool,
    /// Why the broker cannot be reached, while it cannot.
    pub broker_error: std::sync::Mutex<Option<String>>,
    /// Why the store cannot work (e.g. its database is missing), while it cannot.
    pub store_error: std::sync::Mutex<Option<String>>,
}

impl Health {
    pub fn set(slot: &std::sync::Mutex<Option<String>>, why: Option<String>) {
        *crate::sync::lock(slot) = why;
    }
    fn get(slot: &std::sync::Mutex<Option<String>>) -> Option<String> {
        crate::sync::lock(slot).clone()
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: RegistryHandle,
    pub metrics: Metrics,
    pub latest: LatestValues,
    /// Present when readings go to the embedded store.
    pub readings: Option<EmbeddedReader>,
    pub health: Arc<Health>,
    /// Alerting, when enabled.
    pub alerting: Option<Arc<crate::alerts::Alerting>>,
    /// Registry changes (register, patch, retire, maintenance, profiles, audit).
    pub registration: Option<Arc<crate::registration::Registration>>,
    /// Bearer tokens and roles.
    pub tokens: auth::Tokens,
    /// Modbus device states, when polling is enabled.
    pub modbus: Option<crate::ingest::modbus::poller::States>,
    /// The standards engine's results, when enabled.
    pub standards: Option<Arc<crate::standards::engine::Engine>>,
    /// What HJ 212 loggers declared (CN 3020, ST 45), when the HJ 212 server runs.
    pub site_info: Option<Arc<crate::ingest::hj212::site_info::SiteInfo>>,
    /// The daily briefings (`[report]`), when the daemon makes them.
    pub briefings: Option<Arc<crate::report::schedule::Briefings>>,
    /// Copies of what the sources receive, for dry runs (MQTT topics, HJ 212 MNs).
    pub taps: Option<crate::ingest::tap::Taps>,
    /// The dead-letter file, for `GET /api/v1/deadletter`.
    pub deadletter: Option<Arc<crate::pipeline::deadletter::DeadLetter>>,
    /// Imports of history, when the daemon's pipeline runs.
    pub importer: Option<Arc<crate::import::Importer>>,
}

/// A JSON error with its status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn layer<H, T>(
    m: axum::routing::MethodRouter<AppState>,
    st: &AppState,
    f: H,
) -> axum::routing::MethodRouter<AppState>
where
    H: Fn(State<AppState>, axum::extract::Request, axum::middleware::Next) -> T
        + Clone
        + Send
        + Sync
        + 'static,
    T: std::future::Future<Output = Response> + Send + 'static,
{
    m.route_layer(axum::middleware::from_fn_with_state(st.clone(), f))
}

/// The router with every endpoint. `/healthz`, `/readyz` and `/metrics` are open; reads need the
/// viewer role (or `api.anonymous_read`); changes need technician, operator or admin.
pub fn app(state: AppState) -> Router {
    use axum::routing::{delete, patch, post, put};
    let st = &state;
    let view = |m| layer(m, st, auth::viewer);
    let tech = |m| layer(m, st, auth::technician);
    let oper = |m| layer(m, st, auth::operator);
    let admin = |m| layer(m, st, auth::admin);
    Router::new()
        .route("/", get(console::index))
        .route("/console/app.js", get(console::app_js))
        .route("/console/app.css", get(console::app_css))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/sites",
            view(get(list_sites)).merge(tech(post(sensors::register_site))),
        )
        .route("/api/v1/sites/{id}", tech(patch(sensors::patch_site)))
        .route("/api/v1/units", view(get(list_units)))
        .route("/api/v1/units/{id}", tech(patch(sensors::patch_unit)))
        .route(
            "/api/v1/sensors",
            view(get(list_sensors)).merge(tech(post(sensors::register))),
        )
        .route(
            "/api/v1/sensors/{id}",
            view(get(get_sensor)).merge(tech(patch(sensors::patch))),
        )
        .route("/api/v1/sensors/{id}/retire", tech(post(sensors::retire)))
        .route(
            "/api/v1/sensors/{id}/maintenance",
            tech(post(sensors::maintenance)),
        )
        .route("/api/v1/sensors/{id}/test", tech(post(dryrun::test)))
        .route("/api/v1/sensors/dry-run", tech(post(dryrun::dry_run)))
        .route("/api/v1/sensors/{id}/restore", tech(post(sensors::restore)))
        .route("/api/v1/deadletter", view(get(sensors::deadletter)))
        .route(
            "/api/v1/sensors/{id}/hj212-site-info",
            view(get(sensors::site_info)),
        )
        .route(
            "/api/v1/sensors/{id}/hj212-key",
            tech(get(sensors::key_status))
                .merge(tech(put(sensors::set_key)))
                .merge(tech(delete(sensors::remove_key))),
        )
        .route(
            "/api/v1/profiles",
            view(get(sensors::list_profiles)).merge(tech(post(sensors::register_profile))),
        )
        .route("/api/v1/audit", oper(get(sensors::audit)))
        .route("/api/v1/registry/export", oper(get(sensors::export)))
        .route("/api/v1/registry/import", admin(post(sensors::import)))
        .route(
            "/api/v1/import",
            oper(post(import::import)).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/v1/imports", view(get(import::list)))
        .route("/api/v1/imports/{id}", view(get(import::one)))
        .route("/api/v1/imports/key/{key}", view(get(import::by_key)))
        .route("/api/v1/readings/latest", view(get(latest)))
        .route("/api/v1/readings", view(get(readings)))
        .route("/api/v1/modbus/devices", view(get(modbus_devices)))
        .route("/api/v1/alerts", view(get(alerts::list)))
        .route("/api/v1/alerts/history", view(get(alerts::history)))
        .route(
            "/api/v1/alerts/{fingerprint}/ack",
            oper(post(alerts::acknowledge)),
        )
        .route("/api/v1/alerts/rules", view(get(alerts::rules)))
        .route(
            "/api/v1/silences",
            view(get(alerts::silences)).merge(oper(post(alerts::create_silence))),
        )
        .route(
            "/api/v1/silences/{id}",
            oper(delete(alerts::expire_silence)),
        )
        .route("/api/v1/receivers", view(get(alerts::receivers)))
        .route(
            "/api/v1/receivers/{name}/test",
            oper(post(alerts::test_receiver)),
        )
        .route("/api/v1/cems/hourly", view(get(standards::cems_hourly)))
        .route("/api/v1/integrity/findings", view(get(integrity::findings)))
        .route("/api/v1/cems/daily", view(get(standards::cems_daily)))
        .route("/api/v1/cems/monthly", view(get(standards::cems_monthly)))
        .route("/api/v1/air/hourly", view(get(standards::air_hourly)))
        .route("/api/v1/air/daily", view(get(standards::air_daily)))
        .route("/api/v1/air/monthly", view(get(standards::air_monthly)))
        .route("/api/v1/water/daily", view(get(standards::water_daily)))
        .route("/api/v1/compliance", view(get(standards::compliance)))
        .route("/api/v1/compliance/compare", view(get(standards::compare)))
        .route("/api/v1/reports/{table}", view(get(standards::table)))
        .route(
            "/api/v1/briefings",
            view(get(briefings::list)).merge(oper(post(briefings::make))),
        )
        .route("/briefings/{name}", get(briefings::png))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(state)
}

/// The largest request body any endpoint reads (2 MiB).
pub const BODY_LIMIT: usize = 2 << 20;

/// A body that says up front it is over [`BODY_LIMIT`] is answered 413 before a byte of it is
/// read, so a client is told why instead of seeing its upload cut off mid-way. (One without a
/// `Content-Length` is cut at the limit by the extractors, also 413.)
async fn refuse_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // An import is a file of any size, streamed (`import::import`).
    let streamed = req.uri().path() == "/api/v1/import";
    match declared {
        Some(n) if n > BODY_LIMIT as u64 && !streamed => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("请求体过大 / request body too large: {n} bytes, the limit is {BODY_LIMIT}"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let mqtt_enabled = s.health.mqtt_enabled.load(Ordering::Relaxed);
    let broker = !mqtt_enabled || s.metrics.mqtt_connected.get() == 1;
    // Writable until a write has failed; the gauge is set by every write.
    let store = s.metrics.store_writable.get() == 1;
    let store_error = Health::get(&s.health.store_error);
    let store = store && store_error.is_none();
    let mut reasons = Vec::new();
    if !broker {
        reasons.push(format!(
            "MQTT broker: {}",
            Health::get(&s.health.broker_error).unwrap_or_else(|| "not connected".into())
        ));
    }
    if !store {
        reasons.push(format!(
            "store: {}",
            store_error.unwrap_or_else(|| "the last write failed (see the log)".into())
        ));
    }
    let spool = s.metrics.spool_disk_full.get() == 0;
    if !spool {
        reasons.push(
            "spool: disk full; nothing is acknowledged until space is freed (sources keep their messages)"
                .into(),
        );
    }
    let ready = broker && store && spool;
    let body = json!({
        "ready": ready,
        "checks": {
            "broker_connected": if mqtt_enabled { json!(broker) } else { json!("disabled") },
            "store_writable": store,
            "spool_disk_space": spool,
        },
        "reasons": reasons,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn modbus_devices(State(s): State<AppState>) -> Response {
    let devices: Vec<crate::ingest::modbus::poller::DeviceState> = match &s.modbus {
        Some(st) => crate::sync::read(st).values().cloned().collect(),
        None => Vec::new(),
    };
    Json(json!({"enabled": s.modbus.is_some(), "devices": devices})).into_response()
}

async fn list_sites(State(s): State<AppState>) -> Response {
    let reg = s.registry.snapshot();
    Json(json!({"sites": reg.sites.values().collect::<Vec<_>>()})).into_response()
}

async fn list_units(State(s): State<AppState>) -> Response {
    let reg = s.registry.snapshot();
    Json(json!({"units": reg.units.values().collect::<Vec<_>>()})).into_response()
}

async fn list_sensors(State(s): State<AppState>) -> Response {
    let reg = s.registry.snapshot();
    Json(json!({"sensors": reg.sensors.values().collect::<Vec<_>>()})).into_response()
}

async fn get_sensor(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reg = s.registry.snapshot();
    let sensor = reg.sensors.get(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("sensor {id:?} does not exist"),
        )
    })?;
    Ok(Json(sensor).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatestParams {
    site: Option<String>,
    sensor: Option<String>,
    /// `cst` (default) or `utc`.
    tz: Option<String>,
}

async fn latest(
    State(s): State<AppState>,
    q: Result<Query<LatestParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let tz = tz_param(q.tz.as_deref())?;
    let now = Utc::now();
    let items: Vec<serde_json::Value> = s
        .latest
        .snapshot()
        .into_iter()
        .filter(|r| q.site.as_ref().is_none_or(|x| *x == r.site))
        .filter(|r| q.sensor.as_ref().is_none_or(|x| *x == r.sensor))
        .map(|r| {
            let mut v = reading_view(&r, tz);
            v["age_seconds"] = json!((now - r.ts).num_milliseconds() as f64 / 1000.0);
            v
        })
        .collect();
    Ok(Json(json!({"readings": items})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingsParams {
    sensor: String,
    quantity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `asc` or `desc`; default `desc` (the newest) when `limit` is given, else `asc`.
    order: Option<String>,
    /// `cst` (default: RFC 3339 at +08:00, as every result) or `utc`.
    tz: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tz {
    Cst,
    Utc,
}

fn tz_param(v: Option<&str>) -> Result<Tz, ApiError> {
    match v {
        None | Some("cst") | Some("+08:00") => Ok(Tz::Cst),
        Some("utc") | Some("UTC") | Some("Z") => Ok(Tz::Utc),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("tz: {other:?} is not cst or utc"),
        )),
    }
}

/// A reading as the API shows it: its time in the chosen zone (RFC 3339 with the offset, ms) and
/// its value without binary floating-point noise (rounded to 6 decimal places: no analyser
/// reports finer; `7.3100000000000005` is shown as `7.31`).
fn reading_view(r: &Reading, tz: Tz) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    let ts = match tz {
        Tz::Cst => {
            r.ts.with_timezone(&crate::standards::time::cst())
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
        }
        Tz::Utc => r.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    v["ts"] = json!(ts);
    // A reading keeps three places (what loggers send), pH two: never a float's binary tail
    // (`pH 7.3100000000000005`). Means are rounded to their reporting precision where they are
    // served (`catalogue::reporting_decimals`).
    let decimals = if r.quantity == "pH" { 2 } else { 3 };
    v["value"] = json!(crate::standards::hj633::round_half_even(r.value, decimals));
    v
}

/// RFC 3339 or epoch milliseconds.
fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name}: {v:?} is neither RFC 3339 nor epoch milliseconds ({e})"),
            )
        })
}

const MAX_LIMIT: usize = 100_000;

async fn readings(
    State(s): State<AppState>,
    q: Result<Query<ReadingsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let reader = s.readings.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "readings are stored in InfluxDB (store.kind = \"influxdb\"); query them there",
        )
    })?;
    if !s.registry.snapshot().sensors.contains_key(&q.sensor) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("sensor {:?} does not exist", q.sensor),
        ));
    }
    let quantity = match &q.quantity {
        Some(name) => Some(
            crate::catalogue::find_quantity(name)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("quantity: {name:?} is not in the catalogue"),
                    )
                })?
                .key
                .to_string(),
        ),
        None => None,
    };
    let from_ms = q
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to_ms = q.to.as_deref().map(|v| parse_time("to", v)).transpose()?;
    let limit = q.limit.unwrap_or(10_000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit: {limit} is outside 1..={MAX_LIMIT}"),
        ));
    }
    let newest_first = match q.order.as_deref() {
        None => q.limit.is_some(),
        Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("order: {other:?} is not asc or desc"),
            ))
        }
    };
    let tz = tz_param(q.tz.as_deref())?;
    let rows = reader
        .history(embedded::Query {
            sensor: q.sensor.clone(),
            quantity,
            from_ms,
            to_ms,
            limit,
            newest_first,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "readings query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "readings query failed; see the daemon's log",
            )
        })?;
    let rows: Vec<serde_json::Value> = rows.iter().map(|r| reading_view(r, tz)).collect();
    Ok(Json(json!({"sensor": q.sensor, "count": rows.len(), "order": if newest_first { "desc" } else { "asc" }, "readings": rows})).into_response())
}
