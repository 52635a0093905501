//! MQTT ingest end to end against real servers: Mosquitto as the broker, VictoriaMetrics as a real
//! InfluxDB `/api/v2/write` server, and the embedded store read back through the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use common::*;
use enviromon::config::StoreKind;
use enviromon::daemon;
use enviromon::pipeline::deadletter;
use serde_json::json;

const SENSORS: [(&str, &str); 4] = [
    ("datang", "dt-1-cems"),
    ("datang", "dt-2-cems"),
    ("shuangyuan", "sy-1-cems"),
    ("shuangyuan", "sy-2-cems"),
];

/// Value of message `i`: the double nearest a two-decimal number, so every store (VictoriaMetrics
/// keeps 12 significant digits) gives it back exactly.
fn value(sensor_idx: usize, i: usize) -> f64 {
    let hundredths = 1000 + sensor_idx * 1000 + i;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readings_reach_victoria_metrics_with_exact_values_tags_and_timestamps() {
    let broker = mosquitto();
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-vm-test");
    cfg.store.kind = StoreKind::Influxdb;
    cfg.store.influxdb.url = format!("http://127.0.0.1:{}", vm.port);
    cfg.store.influxdb.token = Some(enviromon::config::Secret::new("test-token"));
    cfg.validate().unwrap();
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "MQTT connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;

    // 4 sensors × 250 single-reading messages, one second apart, starting an hour ago.
    let base = (Utc::now().timestamp_millis() / 1000 - 3600) * 1000;
    let mut publisher = Publisher::connect(broker.port, "test-publisher-vm").await;
    for i in 0..250 {
        for (s, (site, sensor)) in SENSORS.iter().enumerate() {
            let payload = json!({"ts": base + i as i64 * 1000, "quantity": "SO2", "value": value(s, i), "unit": "mg/m3", "flag": "N"});
            publisher
                .publish(&format!("enviromon/{site}/{sensor}"), payload.to_string())
                .await;
        }
    }
    publisher.wait_acked().await;

    let series = eventually(30, "1000 samples in VictoriaMetrics", || async {
        let s = vm_export(vm.port, r#"{__name__="cems_so2"}"#).await;
        (s.iter().map(|x| x.values.len()).sum::<usize>() == 1000).then_some(s)
    })
    .await;
    assert_eq!(series.len(), 4, "one series per sensor");
    for (s, (site, sensor)) in SENSORS.iter().enumerate() {
        let ser = series
            .iter()
            .find(|x| x.metric.get("sensor").map(String::as_str) == Some(sensor))
            .unwrap();
        assert_eq!(ser.metric.get("site").map(String::as_str), Some(*site));
        let expected: BTreeMap<i64, f64> = (0..250)
            .map(|i| (base + i as i64 * 1000, value(s, i)))
            .collect();
        let got: BTreeMap<i64, f64> = ser
            .timestamps
            .iter()
            .copied()
            .zip(ser.values.iter().copied())
            .collect();
        assert_eq!(got, expected, "{sensor}");
    }
    // Writes, not unique readings: on a busy machine the broker may deliver a message again after
    // a reconnect, which is written again (VictoriaMetrics keeps one sample, as checked above).
    let metrics = get_text(running.http_addr, "/metrics").await;
    let written = metric(
        &metrics,
        "enviromon_readings_written_total{store=\"influxdb\"}",
    );
    let redelivered = written - 1000.0;
    assert!(redelivered >= 0.0, "{written} written for 1000 stored");
    assert_eq!(running.shutdown().await, daemon::ShutdownOutcome::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readings_reach_the_embedded_store_and_the_readings_api() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(daemon_config(
        dir.path(),
        broker.port,
        "enviromon-embedded-test",
    ))
    .await
    .unwrap();
    eventually(10, "MQTT connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;

    // 100 messages, each an array of two multi-value objects with 5 quantities: 1000 readings.
    let base = (Utc::now().timestamp_millis() / 1000 - 7200) * 1000;
    let flags = ["N", "C", "M", "T"];
    let mut publisher = Publisher::connect(broker.port, "test-publisher-embedded").await;
    for i in 0..100 {
        let t0 = base + i as i64 * 2000;
        let payload = json!([
            {"ts": t0, "flag": flags[i % 4], "values": {"SO2": value(0, i), "NOx": value(1, i), "PM": value(2, i) - 20.0, "O2": 6.25, "flue_temp": 50.5}},
            {"ts": t0 + 1000, "values": {"SO2": value(0, i) + 0.5, "NOx": {"value": value(1, i), "flag": "D"}, "PM": 1.5, "O2": 7.5, "flue_temp": 49.5}}
        ]);
        publisher
            .publish("enviromon/datang/dt-1-cems", payload.to_string())
            .await;
    }
    publisher.wait_acked().await;

    let addr = running.http_addr;
    let rows = eventually(30, "1000 readings in the embedded store", || async {
        let v = get_json(addr, "/api/v1/readings?sensor=dt-1-cems&limit=5000").await;
        (v["count"] == 1000).then_some(v)
    })
    .await;
    let readings = rows["readings"].as_array().unwrap();
    let find = |ts: i64, q: &str| {
        readings
            .iter()
            .find(|r| {
                r["quantity"] == q
                    && chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap())
                        .unwrap()
                        .timestamp_millis()
                        == ts
            })
            .unwrap_or_else(|| panic!("{q} at {ts}"))
    };
    for i in 0..100 {
        let t0 = base + i as i64 * 2000;
        let so2 = find(t0, "SO2");
        assert_eq!(so2["value"].as_f64(), Some(value(0, i)));
        assert_eq!(so2["flag"], flags[i % 4]);
        assert_eq!(so2["unit"], "mg/m3");
        assert_eq!(so2["site"], "datang");
        // The API shows values without float noise (6 decimal places).
        let pm = ((value(2, i) - 20.0) * 1e6).round() / 1e6;
        assert_eq!(find(t0, "PM")["value"].as_f64(), Some(pm));
        assert_eq!(
            find(t0 + 1000, "SO2")["value"].as_f64(),
            Some(value(0, i) + 0.5)
        );
        assert_eq!(find(t0 + 1000, "NOx")["flag"], "D");
        assert_eq!(find(t0 + 1000, "O2")["value"].as_f64(), Some(7.5));
    }
    // Filtering by quantity and time range.
    let from = chrono::DateTime::from_timestamp_millis(base + 10 * 2000)
        .unwrap()
        .to_rfc3339();
    let to = base + 19 * 2000 + 1000;
    let q = get_json(
        addr,
        &format!(
            "/api/v1/readings?sensor=dt-1-cems&quantity=so2&from={}&to={to}",
            urlencode(&from)
        ),
    )
    .await;
    assert_eq!(q["count"], 20);
    // Latest: the newest O2 of the sensor.
    let latest = get_json(addr, "/api/v1/readings/latest?sensor=dt-1-cems").await;
    let o2 = latest["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["quantity"] == "O2")
        .unwrap();
    assert_eq!(o2["value"].as_f64(), Some(7.5));
    assert_eq!(running.shutdown().await, daemon::ShutdownOutcome::Clean);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_malformed_payload_is_counted_dead_lettered_and_the_next_valid_one_stored() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(daemon_config(
        dir.path(),
        broker.port,
        "enviromon-malformed-test",
    ))
    .await
    .unwrap();
    eventually(10, "MQTT connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let future = Utc::now().timestamp_millis() + 3_600_000;
    let topic = "enviromon/datang/dt-1-cems";
    let one_mb = vec![b'x'; 1024 * 1024];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            topic,
            br#"{"quantity":"SO2","value":1"#.to_vec(),
            "not_json",
        ),
        (
            topic,
            br#"{"quantity":"SO2","value":true}"#.to_vec(),
            "non_numeric",
        ),
        (
            topic,
            br#"{"quantity":"SO2","value":"NaN"}"#.to_vec(),
            "non_finite",
        ),
        (topic, Vec::new(), "empty_payload"),
        (topic, one_mb, "payload_too_large"),
        (
            "enviromon/nowhere/ghost",
            br#"{"quantity":"SO2","value":1}"#.to_vec(),
            "unknown_topic",
        ),
        (
            topic,
            format!(r#"{{"quantity":"SO2","value":1,"ts":{future}}}"#).into_bytes(),
            "future_timestamp",
        ),
        (
            topic,
            br#"{"quantity":"Hg","value":0.01}"#.to_vec(),
            "unknown_quantity",
        ),
        (
            topic,
            br#"{"quantity":"SO2","value":1,"unit":"mg/L"}"#.to_vec(),
            "unit_mismatch",
        ),
        (
            topic,
            br#"{"quantity":"O2","value":50}"#.to_vec(),
            "out_of_range",
        ),
        (
            topic,
            br#"{"quantity":"SO2","value":1,"flag":"Z"}"#.to_vec(),
            "invalid_flag",
        ),
        // One element that is not an object (each element of an array is refused on its own).
        (topic, b"[1]".to_vec(), "invalid_payload"),
        (
            topic,
            br#"{"quantity":"SO2","value":1,"ts":"yesterday"}"#.to_vec(),
            "invalid_timestamp",
        ),
        (
            topic,
            br#"{"quantity":"COD","value":20}"#.to_vec(),
            "unconfigured_quantity",
        ),
    ];
    let mut publisher = Publisher::connect(broker.port, "test-publisher-malformed").await;
    for (t, payload, _) in &cases {
        publisher.publish(t, payload.clone()).await;
    }
    let ts = Utc::now().timestamp_millis() - 1000;
    publisher
        .publish(
            topic,
            format!(r#"{{"quantity":"SO2","value":12.5,"ts":{ts}}}"#),
        )
        .await;
    publisher.wait_acked().await;

    let addr = running.http_addr;
    let stored = eventually(20, "the valid reading after the bad ones", || async {
        let v = get_json(addr, "/api/v1/readings?sensor=dt-1-cems").await;
        (v["count"] == 1).then_some(v)
    })
    .await;
    assert_eq!(stored["readings"][0]["value"].as_f64(), Some(12.5));

    let metrics = get_text(addr, "/metrics").await;
    for (_, _, reason) in &cases {
        assert_eq!(
            metric(
                &metrics,
                &format!("enviromon_readings_rejected_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{reason}"
        );
    }
    let records = deadletter::read_all(&running.deadletter_path).unwrap();
    assert_eq!(records.len(), cases.len());
    for ((t, payload, reason), rec) in cases.iter().zip(&records) {
        assert_eq!(&rec.reason, reason);
        assert_eq!(&rec.topic, t);
        assert_eq!(rec.source, "mqtt");
        assert_eq!(rec.payload_bytes, payload.len());
        assert!(!rec.detail.is_empty());
        if payload.len() < 1000 {
            assert_eq!(
                rec.payload.as_bytes(),
                &payload[..],
                "{reason}: raw payload kept"
            );
        }
    }
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "still ready after every bad payload");
    assert_eq!(running.shutdown().await, daemon::ShutdownOutcome::Clean);
}

/// A retained message without a timestamp is sent again by the broker at every subscription; with
/// the arrival time as its time it became a new reading at every restart. Ignored (and counted) by
/// default; a retained message with its own timestamp is stored once, however often it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_without_a_timestamp_never_become_new_readings() {
    let broker = mosquitto();
    let mut p = Publisher::connect(broker.port, "pub-retained").await;
    let ts = Utc::now().timestamp_millis() - 60_000;
    p.publish_retained(
        "enviromon/datang/dt-1-cems",
        json!({"quantity": "SO2", "value": 11.0}).to_string(),
    )
    .await;
    p.publish_retained(
        "enviromon/datang/dt-2-cems",
        json!({"ts": ts, "quantity": "SO2", "value": 22.0}).to_string(),
    )
    .await;
    p.wait_acked().await;
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=2 {
        let running = daemon::start(daemon_config(dir.path(), broker.port, "enviromon-retained"))
            .await
            .unwrap();
        eventually(20, "both retained messages handled", || async {
            let timed = embedded_summary(&running.db_path, "dt-2-cems").0 == 1;
            (timed && running.metrics.mqtt_retained_untimed.get() == 1).then_some(())
        })
        .await;
        assert_eq!(
            embedded_summary(&running.db_path, "dt-1-cems").0,
            0,
            "round {round}: the untimed retained reading is not stored"
        );
        assert_eq!(
            embedded_summary(&running.db_path, "dt-2-cems").0,
            1,
            "round {round}"
        );
        running.shutdown().await;
    }
}
