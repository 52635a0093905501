//! The HTTP API through `app(state)` with `tower::ServiceExt::oneshot`: no socket, no server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use axum::body::Body;
use axum::http::{Request, StatusCode};
use enviromon::api::{app, AppState, Health};
use enviromon::metrics::Metrics;
use enviromon::pipeline::writer::LatestValues;
use enviromon::registry::{Registry, RegistryHandle, Seeds};
use enviromon::store::embedded::EmbeddedStore;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn state(readings: Option<enviromon::store::embedded::EmbeddedReader>) -> AppState {
    let s = Seeds::embedded().unwrap();
    let reg = Registry::build(
        s.sites,
        s.units,
        s.sensors,
        s.targets,
        "enviromon/{site}/{sensor}",
    )
    .unwrap();
    AppState {
        briefings: None,
        taps: None,
        deadletter: None,
        site_info: None,
        registry: RegistryHandle::new(reg),
        metrics: Metrics::new().unwrap(),
        latest: LatestValues::default(),
        readings,
        health: std::sync::Arc::new(Health::default()),
        standards: None,
        modbus: None,
        alerting: None,
        registration: None,
        tokens: enviromon::api::auth::Tokens::open_read(),
        importer: None,
    }
}

async fn call(st: AppState, uri: &str) -> (StatusCode, serde_json::Value) {
    let resp = app(st)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn sensors_and_sites_are_listed_and_unknown_ids_are_json_404s() {
    let (s, v) = call(state(None), "/api/v1/sensors").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sensors"].as_array().unwrap().len(), 12);
    let (s, v) = call(state(None), "/api/v1/sensors/dt-1-cems").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["topic"], "enviromon/datang/dt-1-cems");
    let (s, v) = call(state(None), "/api/v1/sensors/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["status"], 404);
    assert_eq!(v["error"]["message"], "sensor \"nope\" does not exist");
    let (s, v) = call(state(None), "/api/v1/sites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sites"].as_array().unwrap().len(), 7);
    let (s, _) = call(state(None), "/no/such/thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `limit` gives the newest readings (newest first) unless `order=asc`; times are RFC 3339 at
/// +08:00 (Beijing time, as every result) unless `tz=utc`; values carry no float noise.
#[tokio::test]
async fn readings_newest_first_in_beijing_time_without_float_noise() {
    use enviromon::reading::{DataFlag, Domain, Period, Reading, Source};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
    // 2026-01-01T00:00:00Z + i minutes; pH 7.31 computed so that it carries binary noise.
    let t0 = 1_767_225_600_000i64;
    let batch: Vec<Reading> = (0..20)
        .map(|i| Reading {
            sensor: "dt-1-cems".into(),
            site: "datang".into(),
            domain: Domain::Cems,
            quantity: "SO2".into(),
            value: if i == 19 {
                7.3100000000000005
            } else {
                i as f64
            },
            unit: "mg/m3".into(),
            ts: chrono::DateTime::from_timestamp_millis(t0 + i * 60_000).unwrap(),
            flag: DataFlag::N,
            source: Source::Mqtt,
            ts_assumed: false,
            period: Period::Instant,
        })
        .collect();
    store.write(&batch).await.unwrap();
    let st = state(Some(store.reader().unwrap()));
    let (s, v) = call(st.clone(), "/api/v1/readings?sensor=dt-1-cems&limit=3").await;
    assert_eq!(s, StatusCode::OK);
    let ts: Vec<&str> = v["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts"].as_str().unwrap())
        .collect();
    // The newest three: minutes 19, 18, 17 → 00:19, 00:18, 00:17 UTC = 08:19… at +08:00.
    assert_eq!(
        ts,
        [
            "2026-01-01T08:19:00.000+08:00",
            "2026-01-01T08:18:00.000+08:00",
            "2026-01-01T08:17:00.000+08:00"
        ]
    );
    assert_eq!(v["readings"][0]["value"], 7.31);
    assert_eq!(v["order"], "desc");
    let (_, v) = call(
        st.clone(),
        "/api/v1/readings?sensor=dt-1-cems&limit=2&order=asc&tz=utc",
    )
    .await;
    let ts: Vec<&str> = v["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts"].as_str().unwrap())
        .collect();
    assert_eq!(ts, ["2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z"]);
    let (s, _) = call(st, "/api/v1/readings?sensor=dt-1-cems&order=sideways").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn readings_queries_are_checked_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
    let st = state(Some(store.reader().unwrap()));
    let (s, v) = call(
        st.clone(),
        "/api/v1/readings?sensor=dt-1-cems&from=yesterday",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("from: \"yesterday\""),
        "{v}"
    );
    let (s, v) = call(st.clone(), "/api/v1/readings?sensor=dt-1-cems&quantity=Hg").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"]["message"],
        "quantity: \"Hg\" is not in the catalogue"
    );
    let (s, _) = call(st.clone(), "/api/v1/readings?sensor=ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(st.clone(), "/api/v1/readings").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "sensor is required");
    let (s, v) = call(st, "/api/v1/readings?sensor=dt-1-cems&limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["message"], "limit: 0 is outside 1..=100000");
    let (s, _) = call(state(None), "/api/v1/readings?sensor=dt-1-cems").await;
    assert_eq!(
        s,
        StatusCode::NOT_IMPLEMENTED,
        "history lives in InfluxDB when it is the store"
    );
}

#[tokio::test]
async fn readiness_follows_the_broker_and_the_store() {
    let st = state(None);
    st.health
        .mqtt_enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    st.metrics.store_writable.set(1);
    let (s, v) = call(st.clone(), "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["checks"]["broker_connected"], false);
    st.metrics.mqtt_connected.set(1);
    let (s, _) = call(st.clone(), "/readyz").await;
    assert_eq!(s, StatusCode::OK);
    st.metrics.store_writable.set(0);
    let (s, v) = call(st, "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["checks"]["store_writable"], false);
}
