//! Data-integrity findings through the whole path: minute data published over MQTT (Mosquitto),
//! stored in VictoriaMetrics (an InfluxDB v2 write API), formed into hours and integrity minutes by
//! the standards engine, judged by the rules, served by `GET /api/v1/integrity/findings`, exported
//! as `integrity_finding`, alerted on (`cems_data_integrity`), and withdrawn when corrected data
//! arrives late. And `enviromon integrity eval`, the generator through the engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::time::Duration;

use common::*;
use enviromon::daemon;
use enviromon::standards::time::{cst_rfc3339, label, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};

/// dt-1's minute `i` from `t0`: a running unit (flow 900 000 m3/h, flue gas 50 °C), values that
/// move every minute, flagged `flag`.
fn minute(t0: i64, i: i64, flag: &str) -> String {
    let w = (i % 7) as f64;
    json!({"ts": rfc3339(t0 + i * MINUTE_MS), "period": "1min", "flag": flag,
           "values": {"SO2": 20.0 + 0.3 * w, "NOx": 30.0 + 0.5 * w, "PM": 2.0 + 0.05 * w, "O2": 7.0 + 0.02 * w,
                      "flue_temp": 50.0, "moisture": 12.0, "flue_flow": 900_000.0 + 1000.0 * w}})
    .to_string()
}

async fn findings(addr: std::net::SocketAddr) -> Vec<Value> {
    get_json(addr, "/api/v1/integrity/findings?unit=dt-1&from=2020-01-01").await["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn integrity_alerts(addr: std::net::SocketAddr, query: &str) -> Vec<Value> {
    get_json(addr, &format!("/api/v1/alerts{query}")).await["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["rule"] == "cems_data_integrity")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_while_running_is_found_extended_while_ongoing_and_withdrawn_by_late_data() {
    let broker = mosquitto();
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-integrity");
    cfg.store.kind = enviromon::config::StoreKind::Influxdb;
    cfg.store.influxdb.url = format!("http://127.0.0.1:{}", vm.port);
    cfg.store.influxdb.token = Some(enviromon::config::Secret::new("test-token"));
    cfg.standards.interval = Duration::from_millis(300);
    cfg.standards.integrity.interval = Duration::from_millis(300);
    cfg.alerts.evaluation_interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let t0 = label(chrono::Utc::now().timestamp_millis(), HOUR_MS) - 3 * HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-integrity").await;
    let topic = "enviromon/datang/dt-1-cems";
    // Minutes 0–59: F (停运) from minute 30 while flow and flue temperature say the unit runs.
    // stopped_minutes = 30 (default): minutes 30..60 are exactly enough.
    for i in 0..60 {
        p.publish(topic, minute(t0, i, if i >= 30 { "F" } else { "N" }))
            .await;
    }
    p.wait_acked().await;
    let first = eventually(60, "a stopped_but_running finding", || async {
        let f = findings(addr).await;
        (f.len() == 1).then(|| f[0].clone())
    })
    .await;
    assert_eq!(first["rule"], "stopped_but_running");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["start"], cst_rfc3339(t0 + 30 * MINUTE_MS));
    assert_eq!(first["end"], cst_rfc3339(t0 + 60 * MINUTE_MS));
    assert_eq!(first["evidence"]["minutes"], 30);
    // The mean flow of minutes 30..60: 900 000 + 1000 × mean(i mod 7) over i = 30..59. Residues
    // 2,3,4,5,6,0,1 repeat: four full cycles (i = 30..57, sum 84), then 58 → 2 and 59 → 3:
    // (84 + 5)/30 = 2.9667 → 902 966.67, shown rounded to 902 967.
    assert_eq!(first["evidence"]["flow_m3_h"], 902_967.0);
    assert!(
        first["summary_zh"].as_str().unwrap().contains("停运（F）"),
        "{first}"
    );
    assert!(
        first["summary_en"]
            .as_str()
            .unwrap()
            .starts_with("Marked stopped (F) for 30 minutes"),
        "{first}"
    );
    // While it goes on, the same finding grows: 15 more F minutes extend its end, nothing new.
    for i in 60..75 {
        p.publish(topic, minute(t0, i, "F")).await;
    }
    p.wait_acked().await;
    let grown = eventually(60, "the finding extended to minute 75", || async {
        let f = findings(addr).await;
        (f.len() == 1 && f[0]["end"] == cst_rfc3339(t0 + 75 * MINUTE_MS)).then(|| f[0].clone())
    })
    .await;
    assert_eq!(grown["start"], first["start"]);
    assert_eq!(grown["first_seen"], first["first_seen"]);
    assert_eq!(grown["evidence"]["minutes"], 45);
    // On call: one alert for the finding, with its own explanation.
    let alert = eventually(30, "the cems_data_integrity alert firing", || async {
        let a = integrity_alerts(addr, "").await;
        (a.len() == 1 && a[0]["phase"] == "firing").then(|| a[0].clone())
    })
    .await;
    assert_eq!(alert["labels"]["integrity_rule"], "stopped_but_running");
    assert_eq!(alert["labels"]["unit"], "dt-1");
    assert_eq!(alert["labels"]["start"], first["start"]);
    let zh = alert["annotations"]["summary_zh"].as_str().unwrap();
    assert!(zh.starts_with("大唐洛热 #1 机组 数据真实性存疑"), "{zh}");
    // Grafana's source: the finding as line protocol in the store.
    let series = eventually(30, "integrity_finding in VictoriaMetrics", || async {
        let s = vm_export(
            vm.port,
            r#"{__name__="integrity_finding_minutes",unit="dt-1",rule="stopped_but_running"}"#,
        )
        .await;
        s.iter().any(|x| x.values.contains(&45.0)).then_some(s)
    })
    .await;
    assert!(series
        .iter()
        .all(|s| s.timestamps.iter().all(|t| *t == t0 + 30 * MINUTE_MS)));
    // The logger re-sends minutes 30–74 corrected (flag N): the finding is withdrawn, and the
    // alert says so instead of "resolved".
    for i in 30..75 {
        p.publish(topic, minute(t0, i, "N")).await;
    }
    p.wait_acked().await;
    eventually(60, "the finding withdrawn", || async {
        findings(addr).await.is_empty().then_some(())
    })
    .await;
    // (While the re-sent minutes arrive, a shorter run may be found for a moment: it is withdrawn
    // too. What matters is that none stays firing and the first one says why it ended.)
    let resolved = eventually(30, "the alert resolved as withdrawn", || async {
        let active = integrity_alerts(addr, "").await;
        integrity_alerts(addr, "?state=resolved")
            .await
            .into_iter()
            .find(|x| x["labels"]["start"] == first["start"])
            .filter(|_| active.is_empty())
    })
    .await;
    assert!(
        resolved["annotations"]["summary_zh"]
            .as_str()
            .unwrap()
            .starts_with("已撤销"),
        "{resolved}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn the_findings_api_refuses_unknown_units_and_rules_and_a_technician_declares_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), free_port(), "enviromon-integrity-api");
    cfg.mqtt.enabled = false;
    cfg.api.tokens = vec![enviromon::config::ApiToken {
        name: "field-tech".into(),
        role: enviromon::config::Role::Technician,
        sha256: enviromon::api::auth::hash_token("tech-token"),
    }];
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("/api/v1/integrity/findings?unit=nope").await, 404);
    assert_eq!(status("/api/v1/integrity/findings?rule=nope").await, 400);
    assert_eq!(
        status("/api/v1/integrity/findings?from=yesterday").await,
        400
    );
    let empty = get_json(addr, "/api/v1/integrity/findings?unit=sy-2").await;
    assert_eq!(empty, json!({"findings": []}));
    // The calibration schedule and surveyed stack area, registered by a technician.
    let patch = |body: Value| async move {
        let r = reqwest::Client::new()
            .patch(format!("http://{addr}/api/v1/units/sy-2"))
            .bearer_auth("tech-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, unit) =
        patch(json!({"integrity": {"calibration": ["10:00-10:30"], "stack_area_m2": 12.6}})).await;
    assert_eq!(status, 200, "{unit}");
    assert_eq!(unit["integrity"]["calibration"], json!(["10:00-10:30"]));
    let units = get_json(addr, "/api/v1/units").await;
    let sy2 = units["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "sy-2")
        .unwrap()
        .clone();
    assert_eq!(sy2["integrity"]["stack_area_m2"], 12.6);
    // Limits are the permit's, and a window must be one.
    let (status, err) = patch(json!({"limits": {"SO2": 100.0}})).await;
    assert_eq!(status, 422, "{err}");
    assert!(err.to_string().contains("limits"), "{err}");
    let (status, err) = patch(json!({"integrity": {"calibration": ["ten"]}})).await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err.to_string().contains("integrity.calibration[0]"),
        "{err}"
    );
    running.shutdown().await;
}

#[test]
fn the_eval_prints_precision_recall_and_false_findings_per_rule() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args([
            "integrity",
            "eval",
            "--days",
            "16",
            "--clean-days",
            "7",
            "--per-rule",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in enviromon::integrity::RULES {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(rule))
            .unwrap_or_else(|| panic!("no line for {rule}:\n{text}"));
        // manipulations, found, recall, findings, precision, clean per unit-week
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "{line}");
        assert_eq!(cols[1], "1", "one manipulation of {rule}: {line}");
        assert_eq!(cols[3], "1.00", "recall of {rule}: {line}");
    }
    assert!(text.contains("per unit-week (target ≤ 1)"), "{text}");
    assert!(text.contains("met 达标"), "{text}");
}
