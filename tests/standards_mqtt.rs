//! Standards through the whole path: readings published over MQTT (Mosquitto), stored, computed by
//! the engine and read back from the API. Expected values worked by hand (comments).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::time::Duration;

use chrono::NaiveDate;
use common::*;
use enviromon::daemon;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};

fn ts(ms: i64) -> String {
    rfc3339(ms)
}

/// A station's day computed from all 24 of its hours (SO2 is sent in every hour).
fn every_hour(d: &Value) -> bool {
    d["validity"]["hours"]["SO2"] == 24
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_air_day_gives_the_expected_daily_aqi_and_validity() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-air-day");
    cfg.standards.interval = Duration::from_millis(300);
    cfg.standards.lateness = Duration::from_secs(10 * 86_400);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;

    let today = time::cst_date(chrono::Utc::now().timestamp_millis());
    let day: NaiveDate = time::add_days(today, -3);
    let labels = time::hour_labels(day);
    let mut p = Publisher::connect(broker.port, "pub-air-day").await;
    // Station 1: NO2 valid in 19 hours (invalid day mean); O3 missing at hours 4–6 (indices 3..=5):
    // 13 valid 8h windows, max 100 ≤ 160 → the O3 value does not count; PM2.5 80 in 20 hours.
    // Station 2: NO2 in 20 hours; O3 missing at indices 2..=4: 14 windows; PM2.5 60 in 20 hours.
    for (station, no2_hours, o3_gap, pm25) in [(1, 19, 3..=5, 80.0), (2, 20, 2..=4, 60.0)] {
        for (i, &label) in labels.iter().enumerate() {
            let mut values = serde_json::Map::new();
            values.insert("SO2".into(), json!(10));
            values.insert("PM10".into(), json!(100));
            values.insert("CO".into(), json!(1.0));
            if i < no2_hours {
                values.insert("NO2".into(), json!(30));
            }
            if !o3_gap.contains(&i) {
                values.insert("O3".into(), json!(100));
            }
            if i < 20 {
                values.insert("PM2.5".into(), json!(pm25));
            }
            let payload = json!({"ts": ts(label - HOUR_MS), "period": "1h", "values": values});
            p.publish(
                &format!("enviromon/aq-jianxi-{station}/aq-jianxi-{station}-analyzers"),
                payload.to_string(),
            )
            .await;
        }
    }
    p.wait_acked().await;
    let addr = running.http_addr;
    let q = |s: &str| format!("/api/v1/air/daily?station={s}&from={day}&to={day}");
    let s1 = &wait_results_where(addr, &q("aq-jianxi-1"), 1, every_hour).await[0];
    // NO2 19 hours: no daily mean. O3: 13 windows and not above 160: none. PM2.5 80 → 100 + 50/55 × 20
    // = 118.2 → 119; PM10 100 → 50 + 50/70 × 50 = 85.7 → 86; SO2 10 → 10; CO 1.0 → 25. AQI 119 is above
    // 100, so it is published although NO2 and O3 are missing (HJ 633-2026 §5.3.1).
    assert_eq!(s1["validity"]["hours"]["NO2"], 19);
    assert_eq!(s1["validity"]["o3_valid_8h_windows"], 13);
    assert!(
        s1["values"]["NO2"].is_null() && s1["values"]["O3_8h_max"].is_null(),
        "{s1}"
    );
    assert_eq!(s1["aqi"]["aqi"], 119);
    assert_eq!(s1["aqi"]["primary_pollutants"], json!(["PM2.5"]));
    assert_eq!(s1["aqi"]["missing"], json!(["NO2_24h", "O3_8h"]));
    assert_eq!(s1["good_day"], false);
    let s2 = &wait_results_where(addr, &q("aq-jianxi-2"), 1, every_hour).await[0];
    // NO2 20 hours → 30 → 50/40 × 30 = 37.5 → 38; O3 14 windows → max 100 → 50; PM2.5 60 → exactly
    // the 2026 IAQI-100 breakpoint → 100. AQI 100: grade II, a good day; primary PM2.5 (100 > 50).
    assert_eq!(s2["validity"]["hours"]["NO2"], 20);
    assert_eq!(s2["validity"]["o3_valid_8h_windows"], 14);
    assert_eq!(s2["aqi"]["iaqi"]["NO2_24h"], 38);
    assert_eq!(s2["aqi"]["iaqi"]["O3_8h"], 50);
    assert_eq!(
        (s2["aqi"]["aqi"].as_u64(), s2["aqi"]["grade"].as_str()),
        (Some(100), Some("II"))
    );
    assert_eq!(s2["good_day"], true);
    // District: stations averaged first. PM2.5 (80 + 60)/2 = 70 → 100 + 50/55 × 10 = 109.1 → 110.
    let d = &wait_results(addr, &q("district"), 1).await[0];
    assert_eq!(d["values"]["PM2.5"], 70.0);
    assert_eq!(
        d["values"]["NO2"], 30.0,
        "only station 2 has a valid NO2 day"
    );
    assert_eq!(
        (d["aqi"]["aqi"].as_u64(), d["aqi"]["grade"].as_str()),
        (Some(110), Some("III"))
    );
    // Re-evaluated under HJ 633-2012 (the plan period's rules): station 2's PM2.5 60 is then
    // 50 + 50/40 × 25 = 81.25 → 82 and its day AQI 82 (PM10 100 → 75; NO2 38; O3 8h 50).
    let old = get_json(addr, &format!("{}&standard=HJ633-2012", q("aq-jianxi-2"))).await;
    assert_eq!(old["results"][0]["aqi"]["aqi"], 82);
    assert_eq!(old["results"][0]["aqi"]["edition"], "HJ633-2012");
    // The year's figures count the district day: valid, not good.
    let c = get_json(
        addr,
        &format!("/api/v1/compliance?year={}", chrono::Datelike::year(&day)),
    )
    .await;
    let air = c["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "air_good_days_rate")
        .unwrap();
    assert_eq!(
        (
            air["detail"]["valid_days"].as_u64(),
            air["detail"]["good_days"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(air["target"], 80.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cems_minutes_over_mqtt_give_hourly_compliance() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-cems-hours");
    cfg.standards.interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let h2 = time::label(now, HOUR_MS) - HOUR_MS; // the last full hour
    let h1 = h2 - HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-cems-hours").await;
    // Hour 1: 45 minutes at SO2 20, O2 9 (→ 25), 15 minutes in calibration (C): valid, within 35.
    // Hour 2: 44 minutes normal, 16 in maintenance (M): invalid.
    for (hour, n_ok, other) in [(h1, 45, "C"), (h2, 44, "M")] {
        for i in 0..60 {
            let flag = if i < n_ok { "N" } else { other };
            let payload = json!({"ts": ts(hour - HOUR_MS + i * MINUTE_MS), "period": "1min", "flag": flag, "values": {"SO2": 20.0, "O2": 9.0, "NOx": 24.0, "PM": 2.0}});
            p.publish("enviromon/datang/dt-1-cems", payload.to_string())
                .await;
        }
    }
    p.wait_acked().await;
    let addr = running.http_addr;
    let rows = wait_results_where(
        addr,
        &format!("/api/v1/cems/hourly?unit=dt-1&from={h1}&to={h2}"),
        2,
        all_minutes,
    )
    .await;
    let so2 = &rows[0]["pollutants"]["SO2"];
    assert_eq!(
        (so2["status"].as_str(), so2["valid_minutes"].as_u64()),
        (Some("valid"), Some(45))
    );
    assert!((so2["corrected"].as_f64().unwrap() - 25.0).abs() < 1e-9);
    // NOx 24 × 15/12 = 30 ≤ 50.
    assert!((rows[0]["pollutants"]["NOx"]["corrected"].as_f64().unwrap() - 30.0).abs() < 1e-9);
    assert_eq!(rows[1]["pollutants"]["SO2"]["status"], "invalid");
    assert_eq!(rows[1]["pollutants"]["SO2"]["valid_minutes"], 44);
    running.shutdown().await;
}

/// (command-line flag, indicator, [(concentration, expected IAQI)]).
type Segments = (&'static str, &'static str, &'static [(f64, u32)]);

/// `enviromon aqi` agrees with HJ 633's table: each segment's midpoint gives the middle of the
/// segment's index range (both editions, where the 2026 rounding leaves the midpoint unchanged).
#[test]
fn the_aqi_command_agrees_with_the_table_for_every_segment() {
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
            .arg("aqi")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // (flag, daily indicator name, midpoints with expected IAQI) — HJ 633 Table 1.
    let daily_2012: &[Segments] = &[
        (
            "--so2",
            "SO2_24h",
            &[
                (25.0, 25),
                (100.0, 75),
                (312.5, 125),
                (637.5, 175),
                (1200.0, 250),
                (1850.0, 350),
                (2360.0, 450),
            ],
        ),
        (
            "--no2",
            "NO2_24h",
            &[
                (20.0, 25),
                (60.0, 75),
                (130.0, 125),
                (230.0, 175),
                (422.5, 250),
                (657.5, 350),
                (845.0, 450),
            ],
        ),
        (
            "--pm10",
            "PM10_24h",
            &[
                (25.0, 25),
                (100.0, 75),
                (200.0, 125),
                (300.0, 175),
                (385.0, 250),
                (460.0, 350),
                (550.0, 450),
            ],
        ),
        (
            "--co",
            "CO_24h",
            &[
                (1.0, 25),
                (3.0, 75),
                (9.0, 125),
                (19.0, 175),
                (30.0, 250),
                (42.0, 350),
                (54.0, 450),
            ],
        ),
        (
            "--o3-8h",
            "O3_8h",
            &[
                (50.0, 25),
                (130.0, 75),
                (187.5, 125),
                (240.0, 175),
                (532.5, 250),
            ],
        ),
        (
            "--pm25",
            "PM2.5_24h",
            &[
                (17.5, 25),
                (55.0, 75),
                (95.0, 125),
                (132.5, 175),
                (200.0, 250),
                (300.0, 350),
                (425.0, 450),
            ],
        ),
    ];
    for (flag, name, points) in daily_2012 {
        for (c, want) in *points {
            let v = run(&[flag, &c.to_string(), "--standard", "HJ633-2012"]);
            assert_eq!(v["iaqi"][name], *want, "2012 {name} {c}");
            assert_eq!(v["aqi"], *want);
        }
    }
    let hourly: &[Segments] = &[
        (
            "--so2",
            "SO2_1h",
            &[(75.0, 25), (325.0, 75), (575.0, 125), (725.0, 175)],
        ),
        (
            "--no2",
            "NO2_1h",
            &[
                (50.0, 25),
                (150.0, 75),
                (450.0, 125),
                (950.0, 175),
                (1770.0, 250),
                (2715.0, 350),
                (3465.0, 450),
            ],
        ),
        (
            "--co",
            "CO_1h",
            &[
                (2.5, 25),
                (7.5, 75),
                (22.5, 125),
                (47.5, 175),
                (75.0, 250),
                (105.0, 350),
                (135.0, 450),
            ],
        ),
        (
            "--o3-1h",
            "O3_1h",
            &[
                (80.0, 25),
                (180.0, 75),
                (250.0, 125),
                (350.0, 175),
                (600.0, 250),
                (900.0, 350),
                (1100.0, 450),
            ],
        ),
    ];
    for ed in ["HJ633-2012", "HJ633-2026"] {
        for (flag, name, points) in hourly {
            for (c, want) in *points {
                let v = run(&[flag, &c.to_string(), "--hourly", "--standard", ed]);
                assert_eq!(v["iaqi"][name], *want, "{ed} {name} {c}");
            }
        }
    }
    // 2026's changed PM segments by hand: PM10 85 → 50 + 50/70 × 35 = 75; 185 → 100 + 50/130 × 65 = 125;
    // PM2.5 45 → 50 + 50/25 × 10 = 70; 71 → 100 + 50/55 × 11 = 110.
    for (flag, name, c, want) in [
        ("--pm10", "PM10_24h", 85.0, 75),
        ("--pm10", "PM10_24h", 185.0, 125),
        ("--pm25", "PM2.5_24h", 45.0, 70),
        ("--pm25", "PM2.5_24h", 71.0, 110),
    ] {
        assert_eq!(
            run(&[flag, &c.to_string()])["iaqi"][name],
            want,
            "2026 {name} {c}"
        );
    }
    // Beyond scale, and the 2026 fixed values above 800.
    assert_eq!(run(&["--pm25", "700"])["aqi"], 500);
    assert_eq!(run(&["--so2", "900", "--hourly"])["iaqi"]["SO2_1h"], 200);
    assert_eq!(run(&["--o3-8h", "900"])["iaqi"]["O3_8h"], 300);
    let v = run(&[
        "--so2", "10", "--no2", "30", "--pm10", "130", "--co", "0.8", "--o3-8h", "100", "--pm25",
        "80",
    ]);
    assert_eq!(
        (
            v["aqi"].as_u64(),
            v["grade"].as_str(),
            v["category_zh"].as_str()
        ),
        (Some(119), Some("III"), Some("轻度污染"))
    );
    assert_eq!(v["primary_pollutants"], json!(["PM2.5"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_exported_to_an_influxdb_store_as_their_own_measurements() {
    let broker = mosquitto();
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-results-export");
    cfg.store.kind = enviromon::config::StoreKind::Influxdb;
    cfg.store.influxdb.url = format!("http://127.0.0.1:{}", vm.port);
    cfg.store.influxdb.token = Some(enviromon::config::Secret::new("test-token"));
    cfg.standards.interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let hour = time::label(chrono::Utc::now().timestamp_millis(), HOUR_MS) - HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-results-export").await;
    for i in 0..60 {
        let payload = json!({"ts": ts(hour - HOUR_MS + i * MINUTE_MS), "period": "1min", "values": {"SO2": 40.0, "O2": 6.0, "NOx": 30.0, "PM": 2.0, "flue_flow": 1_000_000.0}});
        p.publish("enviromon/datang/dt-1-cems", payload.to_string())
            .await;
    }
    p.wait_acked().await;
    // SO2 40 at O2 6 %: corrected 40 > 35 → exceeded; mass 40 × 1e6 × 1e-6 = 40 kg/h.
    let series = eventually(30, "cems_hourly in VictoriaMetrics", || async {
        let s = vm_export(vm.port, r#"{__name__=~"cems_hourly_(corrected|exceeded|mass_kg_h)",unit="dt-1",pollutant="SO2"}"#).await;
        (s.len() == 3).then_some(s)
    })
    .await;
    let value = |name: &str| {
        series
            .iter()
            .find(|s| s.metric["__name__"] == name)
            .map(|s| (s.timestamps[0], s.values[0]))
            .unwrap()
    };
    assert_eq!(value("cems_hourly_corrected"), (hour, 40.0));
    assert_eq!(value("cems_hourly_exceeded"), (hour, 1.0));
    assert_eq!(value("cems_hourly_mass_kg_h"), (hour, 40.0));
    let targets = eventually(30, "plan_targets in VictoriaMetrics", || async {
        let s = vm_export(vm.port, r#"{__name__="plan_targets_goal"}"#).await;
        (s.len() >= 3).then_some(s)
    })
    .await;
    assert!(targets
        .iter()
        .any(|s| s.metric["target"] == "air_good_days_rate" && s.values.contains(&80.0)));
    running.shutdown().await;
}
