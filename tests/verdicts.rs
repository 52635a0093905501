//! Verdicts the bureau enforces on, end to end: hand-computed readings published over MQTT
//! (Mosquitto) into the daemon, answers read from the API. Every expected value is worked by hand
//! in the comments from the clause it comes from (HJ 75/76, HJ 633, GB 3095, GB 3838, GB/T 8170, and the README's
//! "Choices the standards leave").

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

/// Wait until `path`'s results satisfy `ok` (the engine recomputes every few hundred ms).
async fn wait_until(addr: std::net::SocketAddr, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(60, path, || async {
        let v = get_json(addr, path).await;
        ok(&v).then_some(v)
    })
    .await
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

/// One CEMS minute of dt-1 … sy-2: every value with its own flag.
fn minute(start_ms: i64, values: &[(&str, f64, &str)]) -> String {
    let v: serde_json::Map<String, Value> = values
        .iter()
        .map(|(q, x, f)| (q.to_string(), json!({"value": x, "flag": f})))
        .collect();
    json!({"ts": ts(start_ms), "period": "1min", "values": v}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cems_minute_is_judged_by_its_own_flag_and_its_correction_inputs() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-verdicts-cems");
    cfg.standards.interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let h = time::label(now, HOUR_MS) - 2 * HOUR_MS; // a complete hour
    let mut p = Publisher::connect(broker.port, "pub-verdicts-cems").await;
    for i in 0..60 {
        let start = h - HOUR_MS + i * MINUTE_MS;
        // dt-1: SO2 60 all hour; only PM flagged C (calibration) in minutes 0–19. O2 at the
        // reference (6 %), so corrected = measured.
        let pm_flag = if i < 20 { "C" } else { "N" };
        p.publish(
            "enviromon/datang/dt-1-cems",
            minute(
                start,
                &[
                    ("SO2", 60.0, "N"),
                    ("NOx", 30.0, "N"),
                    ("PM", 3.0, pm_flag),
                    ("O2", 6.0, "N"),
                ],
            ),
        )
        .await;
        // dt-2: only SO2 flagged T (over range) in minutes 0–4; NOx 30, PM 3.
        let so2_flag = if i < 5 { "T" } else { "N" };
        p.publish(
            "enviromon/datang/dt-2-cems",
            minute(
                start,
                &[
                    ("SO2", 20.0, so2_flag),
                    ("NOx", 30.0, "N"),
                    ("PM", 3.0, "N"),
                    ("O2", 6.0, "N"),
                ],
            ),
        )
        .await;
        // sy-1: O2 (the correction's input) in maintenance (M) for minutes 0–19: every pollutant
        // loses those minutes, although their own flags are N.
        let o2_flag = if i < 20 { "M" } else { "N" };
        p.publish(
            "enviromon/shuangyuan/sy-1-cems",
            minute(
                start,
                &[
                    ("SO2", 60.0, "N"),
                    ("NOx", 30.0, "N"),
                    ("PM", 3.0, "N"),
                    ("O2", 6.0, o2_flag),
                ],
            ),
        )
        .await;
        // sy-2: SO2 50 with 40 normal minutes and 20 in maintenance.
        let f = if i < 40 { "N" } else { "M" };
        p.publish(
            "enviromon/shuangyuan/sy-2-cems",
            minute(start, &[("SO2", 50.0, f), ("O2", 6.0, "N")]),
        )
        .await;
    }
    // …and sy-2's data logger also sends its own hourly record saying N.
    p.publish(
        "enviromon/shuangyuan/sy-2-cems",
        json!({"ts": ts(h - HOUR_MS), "period": "1h", "flag": "N", "values": {"SO2": 50.0, "O2": 6.0}})
            .to_string(),
    )
    .await;
    p.wait_acked().await;
    let addr = running.http_addr;
    let hour = |unit: &str| format!("/api/v1/cems/hourly?unit={unit}&from={h}&to={h}");
    let dt1 = &wait_results_where(addr, &hour("dt-1"), 1, all_minutes).await[0]["pollutants"];
    // SO2's own flag is N in all 60 minutes: valid (≥ 45, HJ 76-2017 App. B), 60 > 35 exceeded.
    assert_eq!(dt1["SO2"]["valid_minutes"], 60, "{dt1}");
    assert_eq!(dt1["SO2"]["status"], "valid");
    assert_eq!(dt1["SO2"]["exceeded"], true);
    // PM has 40 valid minutes (20 in calibration): invalid, never exceeded.
    assert_eq!(
        (
            dt1["PM"]["valid_minutes"].as_u64(),
            dt1["PM"]["status"].as_str()
        ),
        (Some(40), Some("invalid"))
    );
    let dt2 = &wait_results_where(addr, &hour("dt-2"), 1, all_minutes).await[0]["pollutants"];
    // SO2's T minutes do not touch NOx or PM: NOx 30 ≤ 50 and PM 3 ≤ 10 are within the limits.
    for q in ["NOx", "PM"] {
        assert_eq!(dt2[q]["exceeded"], false, "{q}: {dt2}");
        assert_eq!(dt2[q]["valid_minutes"], 60);
        assert_eq!(dt2[q]["over_range"], false);
    }
    // SO2 itself: the 5 T minutes count (valid, 60 minutes); mean 20 ≤ 35 and the default
    // `over_range = "mean_only"` judges the hour by its mean: over range, not exceeded.
    assert_eq!(
        (
            dt2["SO2"]["valid_minutes"].as_u64(),
            dt2["SO2"]["over_range"].as_bool(),
            dt2["SO2"]["exceeded"].as_bool()
        ),
        (Some(60), Some(true), Some(false))
    );
    let sy1 = &wait_results_where(addr, &hour("sy-1"), 1, all_minutes).await[0]["pollutants"];
    // O2 invalid for 20 minutes: each pollutant has 40 correctable minutes → invalid hour.
    for q in ["SO2", "NOx", "PM"] {
        assert_eq!(sy1[q]["valid_minutes"], 40, "{q}: {sy1}");
        assert_eq!(sy1[q]["excluded_minutes"], 20);
        assert_eq!(sy1[q]["status"], "invalid");
        assert_eq!(sy1[q]["exceeded"], false);
    }
    let sy2 = &wait_results_where(addr, &hour("sy-2"), 1, all_minutes).await[0]["pollutants"];
    // HJ 75 judges the hour by its valid minutes: 40 < 45 → invalid, whatever the logger's
    // hourly record says (default `hourly_record = "when_no_minutes"`).
    assert_eq!(
        (
            sy2["SO2"]["status"].as_str(),
            sy2["SO2"]["valid_minutes"].as_u64(),
            sy2["SO2"]["source"].as_str(),
            sy2["SO2"]["exceeded"].as_bool()
        ),
        (Some("invalid"), Some(40), Some("minutes"), Some(false))
    );
    running.shutdown().await;
}

/// Seeds with aq-jianxi-2's monitoring plan declared without CO (HJ 633-2026 §5.3.2).
fn seeds_without_co_at_station_2(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let out = dir.join("seeds");
    std::fs::create_dir_all(&out).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        if f.extension().and_then(|e| e.to_str()) == Some("toml") {
            let mut text = std::fs::read_to_string(&f).unwrap();
            if f.file_name().and_then(|n| n.to_str()) == Some("sites.toml") {
                let needle = "id = \"aq-jianxi-2\"\n";
                assert!(text.contains(needle));
                text = text.replace(
                    needle,
                    "id = \"aq-jianxi-2\"\nmonitored = [\"SO2\", \"NO2\", \"PM10\", \"PM2.5\", \"O3\"]\n",
                );
            }
            std::fs::write(out.join(f.file_name().unwrap()), text).unwrap();
        }
    }
    out
}

/// One station hour of the six pollutants (µg/m3, CO mg/m3); `None` leaves a pollutant out.
fn air_hour(start_ms: i64, v: [Option<f64>; 6]) -> Value {
    let keys = ["SO2", "NO2", "PM10", "PM2.5", "CO", "O3"];
    let values: serde_json::Map<String, Value> = keys
        .iter()
        .zip(v)
        .filter_map(|(k, x)| x.map(|x| (k.to_string(), json!(x))))
        .collect();
    json!({"ts": ts(start_ms), "period": "1h", "values": values})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_and_water_verdicts_follow_the_standards_text() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-verdicts-air");
    cfg.standards.interval = Duration::from_millis(300);
    cfg.standards.lateness = Duration::from_secs(20 * 86_400);
    cfg.registry.seeds_dir = Some(seeds_without_co_at_station_2(dir.path()));
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let addr = running.http_addr;
    let today = time::cst_date(chrono::Utc::now().timestamp_millis());
    let mut p = Publisher::connect(broker.port, "pub-verdicts-air").await;

    // 1. Ambient ppm at 298.15 K (GB 3095-2012 amendment 2018, GB 3095-2026): one hour at
    // station 1 with O3 0.1 ppm → 0.1 × 47.998/24.465 = 0.19619 mg/m3 = 196.2 µg/m3 (the flue-gas
    // factor 48/22.4 would give 214), CO 2 ppm → 2 × 28.010/24.465 = 2.29 mg/m3 (not 2.50).
    let ppm_day = time::add_days(today, -10);
    let ppm_hour = time::hour_labels(ppm_day)[11];
    p.publish(
        "enviromon/aq-jianxi-1/aq-jianxi-1-analyzers",
        json!({"ts": ts(ppm_hour - HOUR_MS), "period": "1h", "values": {
            "O3": {"value": 0.1, "unit": "ppm"}, "CO": {"value": 2.0, "unit": "ppm"}}})
        .to_string(),
    )
    .await;

    // 2. Five district days, both stations alike (the district mean equals each station's value),
    // every hour given: SO2 10, NO2 20, PM10 40/50, O3 96/100 µg/m3, CO 0.5 mg/m3.
    //  - days 0, 1: PM2.5 70. HJ 633-2026 (PM2.5 IAQI 100 at 60, 150 at 115): 100 + 50/55 × 10 =
    //    109.1 → 110, not good. HJ 633-2012 (100 at 75): 50 + 50/40 × 35 = 93.75 → 94, good.
    //  - day 2: CO not measured at station 1 (whose plan includes CO), PM2.5 20, PM10 40, O3 96:
    //    IAQIs SO2 10, NO2 25, PM10 40, PM2.5 29 (2026) / 29 (2012), O3 8h 48 → 48. 2026 §5.3.1: a
    //    pollutant missing and AQI ≤ 100 → "NA", not a valid day; 2012: AQI 48, good.
    //    Station 2 declares no CO analyser (§5.3.2): its day 2 has AQI 48 under 2026 too.
    //  - days 3, 4: PM2.5 150 → IAQI 200 under both: not good.
    // Expected: 2026 valid 4, good 0; 2012 valid 5, good 3 (60 %).
    let first = time::add_days(today, -8);
    for d in 0..5 {
        let day = time::add_days(first, d);
        for &label in time::hour_labels(day).iter() {
            let (pm25, pm10, o3) = match d {
                0 | 1 => (70.0, 50.0, 100.0),
                2 => (20.0, 40.0, 96.0),
                _ => (150.0, 50.0, 100.0),
            };
            for station in [1, 2] {
                let co = if d == 2 || station == 2 {
                    None
                } else {
                    Some(0.5)
                };
                let v = air_hour(
                    label - HOUR_MS,
                    [Some(10.0), Some(20.0), Some(pm10), Some(pm25), co, Some(o3)],
                );
                p.publish(
                    &format!("enviromon/aq-jianxi-{station}/aq-jianxi-{station}-analyzers"),
                    v.to_string(),
                )
                .await;
            }
        }
    }

    // 3. GB 3838: 24 hours of TP 0.1 mg/L at the Jian river section (COD 15, NH3-N 0.5, DO 7,
    // CODMn 4): the mean 0.10000000000000003 reported to 0.01 mg/L is 0.10 ≤ 0.1 → class II
    // (Table 1), not III.
    let water_day = time::add_days(today, -3);
    for &label in time::hour_labels(water_day).iter() {
        p.publish(
            "enviromon/jianhe-section/jianhe-quality",
            json!({"ts": ts(label - HOUR_MS), "period": "1h", "values": {
                "TP": 0.1, "COD": 15.0, "NH3-N": 0.5, "DO": 7.0, "CODMn": 4.0}})
            .to_string(),
        )
        .await;
    }
    p.wait_acked().await;

    let h = wait_until(
        addr,
        &format!("/api/v1/air/hourly?station=aq-jianxi-1&from={ppm_hour}&to={ppm_hour}"),
        |v| v["count"] == 1,
    )
    .await;
    let values = &h["results"][0]["values"];
    assert!(
        (values["O3"].as_f64().unwrap() - 196.2).abs() < 0.05,
        "{values}"
    );
    assert!(
        (values["CO"].as_f64().unwrap() - 2.29).abs() < 0.005,
        "{values}"
    );

    let last = time::add_days(first, 4);
    let q = format!("/api/v1/air/daily?station=district&from={first}&to={last}");
    let days = wait_until(addr, &q, |v| {
        v["count"] == 5 && v["results"][4]["aqi"]["aqi"] == 200
    })
    .await;
    let aqis: Vec<Value> = days["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["aqi"]["aqi"].clone())
        .collect();
    assert_eq!(
        aqis,
        vec![json!(110), json!(110), Value::Null, json!(200), json!(200)]
    );
    let old = get_json(addr, &format!("{q}&standard=HJ633-2012")).await;
    let aqis: Vec<Value> = old["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["aqi"]["aqi"].clone())
        .collect();
    assert_eq!(
        aqis,
        vec![json!(94), json!(94), json!(48), json!(200), json!(200)]
    );
    // Station 2 has no CO in its plan: its day 2 is published under 2026 (§5.3.2).
    let d2 = time::add_days(first, 2);
    let s2 = get_json(
        addr,
        &format!("/api/v1/air/daily?station=aq-jianxi-2&from={d2}&to={d2}"),
    )
    .await;
    assert_eq!(s2["results"][0]["aqi"]["aqi"], 48, "{s2}");
    assert_eq!(s2["results"][0]["not_monitored"], json!(["CO"]));
    assert_eq!(s2["results"][0]["aqi"]["missing"], json!([]));
    // The good-days rate over those days, computed again under each edition.
    let window = |ed: &str| format!("/api/v1/compliance?from={first}&to={last}&standard={ed}");
    let rate = |c: &Value| {
        let i = c["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "air_good_days_rate")
            .unwrap()
            .clone();
        (
            i["detail"]["valid_days"].as_u64(),
            i["detail"]["good_days"].as_u64(),
            i["actual"].as_f64(),
        )
    };
    assert_eq!(
        rate(&get_json(addr, &window("HJ633-2026")).await),
        (Some(4), Some(0), Some(0.0))
    );
    assert_eq!(
        rate(&get_json(addr, &window("HJ633-2012")).await),
        (Some(5), Some(3), Some(60.0))
    );

    let w = wait_until(
        addr,
        &format!("/api/v1/water/daily?sensor=jianhe-quality&from={water_day}&to={water_day}"),
        |v| v["count"] == 1 && v["results"][0]["hours"]["TP"] == 24,
    )
    .await;
    let class = &w["results"][0]["gb3838_class"];
    assert_eq!(class["class"], "II", "{class}");
    assert!(close(&class["reported"]["TP"], 0.1));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_day_budget_never_exceeds_the_days_left() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-verdicts-budget");
    cfg.standards.interval = Duration::from_millis(300);
    cfg.standards.lateness = Duration::from_secs(200 * 86_400);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let addr = running.http_addr;
    let today = time::cst_date(chrono::Utc::now().timestamp_millis());
    // 130 good days ending yesterday, in a window of 159 days (29 days after yesterday). Today
    // counts as a day of the window with no result yet: days left = 159 − 130 = 29 from today…
    // so as of today (no daily result yet) the elapsed days are 131, and 28 remain.
    let first: NaiveDate = time::add_days(today, -130);
    let last = time::add_days(first, 158);
    let mut p = Publisher::connect(broker.port, "pub-verdicts-budget").await;
    for d in 0..130 {
        let day = time::add_days(first, d);
        // Station 1 only (district = its values): every pollutant low, AQI 25 (NO2 20 → 25).
        let hours: Vec<Value> = time::hour_labels(day)
            .iter()
            .map(|&l| {
                air_hour(
                    l - HOUR_MS,
                    [
                        Some(10.0),
                        Some(20.0),
                        Some(20.0),
                        Some(10.0),
                        Some(0.5),
                        Some(40.0),
                    ],
                )
            })
            .collect();
        p.publish(
            "enviromon/aq-jianxi-1/aq-jianxi-1-analyzers",
            Value::Array(hours).to_string(),
        )
        .await;
    }
    p.wait_acked().await;
    let q = format!("/api/v1/compliance?from={first}&to={last}");
    let c = wait_until(addr, &q, |c| {
        c["indicators"][0]["detail"]["valid_days"] == 130
    })
    .await;
    let g = &c["indicators"][0]["detail"];
    // Window 159 days; as of today 131 have passed (130 valid and good, today without a result);
    // R = 28 remain. Needed good = ⌈0.8 × (130 + 28)⌉ = ⌈126.4⌉ = 127 ≤ 130: the formula gives
    // 28 − (127 − 130) = 31, more non-good days than remain; capped at 28, the days left.
    assert_eq!(g["good_days"], 130, "{g}");
    assert_eq!(g["remaining_days"], 28, "{g}");
    assert_eq!(g["affordable_non_good_days"], 28, "{g}");
    assert_eq!(
        g["assumed_valid_from"],
        json!(time::add_days(today, 1).to_string())
    );
    running.shutdown().await;
}
