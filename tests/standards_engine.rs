//! The standards engine on synthetic data: CEMS hours (44 vs 45 valid minutes, O2 correction,
//! stopped and over-range hours) and late data giving exactly the on-time result.
//! Expected values are worked by hand from the formulas of HJ 75-2017 / HJ 76-2017 (O2 correction, 45-minute hour).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

use chrono::{NaiveDate, TimeZone, Utc};
use enviromon::config::WaterStandardsConfig;
use enviromon::reading::{DataFlag, Domain, Period, Reading, Source};
use enviromon::registry::{self, RegistryHandle, Seeds};
use enviromon::standards::engine::{Engine, Settings};
use enviromon::standards::hj633::Edition;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use serde_json::Value;

/// The 2026 edition, a 30-day lateness window and history input kept 30 days.
fn settings(air: enviromon::config::AirStandardsConfig) -> Settings {
    Settings {
        edition: Edition::Hj633_2026,
        lateness_ms: 30 * 86_400_000,
        history_keep_ms: 30 * 86_400_000,
        cems: Default::default(),
        air,
        water: WaterStandardsConfig::default(),
        integrity: Default::default(),
    }
}

fn engine(dir: &std::path::Path) -> Engine {
    let db = dir.join("e.db");
    let conn = enviromon::db::open(&db).unwrap();
    let seeds = Seeds::embedded().unwrap();
    registry::apply_seeds(&conn, &seeds).unwrap();
    let reg = registry::load(&conn, "enviromon/{site}/{sensor}").unwrap();
    Engine::open(&db, RegistryHandle::new(reg), settings(Default::default())).unwrap()
}

fn minute(
    sensor: &str,
    domain: Domain,
    q: &str,
    start_ms: i64,
    value: f64,
    flag: DataFlag,
) -> Reading {
    Reading {
        sensor: sensor.into(),
        site: "datang".into(),
        domain,
        quantity: q.into(),
        value,
        unit: if q == "O2" {
            "%".into()
        } else {
            "mg/m3".into()
        },
        ts: Utc.timestamp_millis_opt(start_ms).unwrap(),
        flag,
        source: Source::Mqtt,
        ts_assumed: false,
        period: Period::Minute,
    }
}

/// 60 minute means of SO2 and O2 for the hour labelled `hour` of dt-1's CEMS.
fn cems_hour(hour: i64, minutes: impl Fn(i64) -> (f64, f64, DataFlag)) -> Vec<Reading> {
    let mut out = Vec::new();
    for i in 0..60 {
        let start = hour - HOUR_MS + i * MINUTE_MS;
        let (so2, o2, flag) = minutes(i);
        out.push(minute("dt-1-cems", Domain::Cems, "SO2", start, so2, flag));
        out.push(minute("dt-1-cems", Domain::Cems, "O2", start, o2, flag));
    }
    out
}

fn so2_of(e: &Engine, hour: i64) -> Value {
    let r = e
        .results_json("cems_hourly", Some("dt-1"), hour, hour)
        .unwrap();
    assert_eq!(r.len(), 1, "one result for the hour");
    r[0].2["pollutants"]["SO2"].clone()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|x| (x - b).abs() < 1e-9)
}

#[test]
fn cems_hours_validity_correction_stopped_and_over_range() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let h = time::hour_labels(day);
    let now = h[23] + HOUR_MS;
    let mut readings = Vec::new();
    // A: 45 minutes N and 15 C; SO2 20 at O2 9 % → 20 × (21−6)/(21−9) = 25. Valid, not exceeding 35.
    readings.extend(cems_hour(h[0], |i| {
        (20.0, 9.0, if i < 45 { DataFlag::N } else { DataFlag::C })
    }));
    // B: 44 minutes N and 16 M → invalid.
    readings.extend(cems_hour(h[1], |i| {
        (20.0, 6.0, if i < 44 { DataFlag::N } else { DataFlag::M })
    }));
    // C: stopped: 60 minutes F at O2 20.9 (the ×150 correction never counts).
    readings.extend(cems_hour(h[2], |_| (0.5, 20.9, DataFlag::F)));
    // D: 50 minutes N at 30 and 10 minutes T at 120, O2 6: mean (50×30 + 10×120)/60 = 45; T counts.
    readings.extend(cems_hour(h[3], |i| {
        if i < 50 {
            (30.0, 6.0, DataFlag::N)
        } else {
            (120.0, 6.0, DataFlag::T)
        }
    }));
    // E: exactly at the limit: 35 at O2 6 → 35, not above 35.
    readings.extend(cems_hour(h[4], |_| (35.0, 6.0, DataFlag::N)));
    // F: O2 at 6 % everywhere: corrected = measured = 12.
    readings.extend(cems_hour(h[5], |_| (12.0, 6.0, DataFlag::N)));
    e.ingest(&readings, now).unwrap();
    e.recompute(now).unwrap();

    let a = so2_of(&e, h[0]);
    assert_eq!(
        (a["status"].as_str(), a["valid_minutes"].as_u64()),
        (Some("valid"), Some(45))
    );
    assert!(close(&a["corrected"], 25.0), "{a}");
    assert_eq!(a["exceeded"], false);
    let b = so2_of(&e, h[1]);
    assert_eq!(
        (b["status"].as_str(), b["valid_minutes"].as_u64()),
        (Some("invalid"), Some(44))
    );
    let c = so2_of(&e, h[2]);
    assert_eq!(
        (c["status"].as_str(), c["exceeded"].as_bool()),
        (Some("stopped"), Some(false))
    );
    let d = so2_of(&e, h[3]);
    assert!(close(&d["corrected"], 45.0), "{d}");
    assert_eq!(
        (d["over_range"].as_bool(), d["exceeded"].as_bool()),
        (Some(true), Some(true))
    );
    let ee = so2_of(&e, h[4]);
    assert!(close(&ee["corrected"], 35.0));
    assert_eq!(ee["exceeded"], false, "35 is not above 35");
    assert!(close(&so2_of(&e, h[5])["corrected"], 12.0));

    // The day: valid hours A, D, E, F = 4; exceeded D = 1; stopped C = 1; 24 − 1 = 23 expected.
    let days = e
        .results_json(
            "cems_daily",
            Some("dt-1"),
            time::day_start_ms(day),
            time::day_start_ms(day),
        )
        .unwrap();
    let so2 = &days[0].2["pollutants"]["SO2"];
    assert_eq!(
        (
            so2["valid_hours"].as_i64(),
            so2["exceeded_hours"].as_i64(),
            so2["stopped_hours"].as_i64(),
            so2["expected_hours"].as_i64()
        ),
        (Some(4), Some(1), Some(1), Some(23))
    );
    assert!(
        close(&so2["compliance_percent"], 75.0),
        "3 of 4 valid hours within the limit"
    );
}

fn air_hour(sensor: &str, hour: i64, q: &str, v: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        site: "aq-jianxi-1".into(),
        domain: Domain::Air,
        quantity: q.into(),
        value: v,
        unit: if q == "CO" {
            "mg/m3".into()
        } else {
            "ug/m3".into()
        },
        ts: Utc.timestamp_millis_opt(hour - HOUR_MS).unwrap(),
        flag: DataFlag::N,
        source: Source::Mqtt,
        ts_assumed: false,
        period: Period::Hour,
    }
}

fn all_results(e: &Engine) -> Vec<(String, String, i64, Value)> {
    let mut out = Vec::new();
    for kind in ["cems_hourly", "cems_daily", "air_hourly", "air_daily"] {
        for (ent, ts, doc) in e.results_json(kind, None, 0, i64::MAX).unwrap() {
            out.push((kind.to_string(), ent, ts, doc));
        }
    }
    out
}

#[test]
fn late_data_gives_exactly_the_on_time_result() {
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let h = time::hour_labels(day);
    let mut readings = Vec::new();
    for (i, &hour) in h.iter().enumerate() {
        let f = i as f64;
        readings.push(air_hour("aq-jianxi-1-analyzers", hour, "PM2.5", 50.0 + f));
        readings.push(air_hour("aq-jianxi-1-analyzers", hour, "PM10", 90.0 + f));
        readings.push(air_hour(
            "aq-jianxi-1-analyzers",
            hour,
            "O3",
            60.0 + 5.0 * f,
        ));
        readings.push(air_hour("aq-jianxi-1-analyzers", hour, "NO2", 30.0));
        readings.push(air_hour("aq-jianxi-1-analyzers", hour, "SO2", 8.0));
        readings.push(air_hour("aq-jianxi-1-analyzers", hour, "CO", 0.9));
    }
    readings.extend(cems_hour(h[10], |i| {
        (20.0 + i as f64 / 10.0, 7.0, DataFlag::N)
    }));
    let end_of_day = h[23] + HOUR_MS;

    // On time: everything, then one recomputation.
    let d1 = tempfile::tempdir().unwrap();
    let on_time = engine(d1.path());
    on_time.ingest(&readings, end_of_day).unwrap();
    on_time.recompute(end_of_day).unwrap();

    // Late: hours 11 and 12 (air) and the CEMS hour arrive a day later, after results were published.
    let d2 = tempfile::tempdir().unwrap();
    let late = engine(d2.path());
    let is_late = |r: &Reading| {
        let hour = time::hour_label_of(r.ts_ms(), r.period);
        hour == h[10] || hour == h[11]
    };
    let (held, first): (Vec<Reading>, Vec<Reading>) = readings.iter().cloned().partition(is_late);
    late.ingest(&first, end_of_day).unwrap();
    late.recompute(end_of_day).unwrap();
    let before = late
        .results_json("air_daily", Some("aq-jianxi-1"), 0, i64::MAX)
        .unwrap();
    let a_day_later = end_of_day + 24 * HOUR_MS;
    // Delivered in reverse order, too.
    let mut held = held;
    held.reverse();
    late.ingest(&held, a_day_later).unwrap();
    late.recompute(a_day_later).unwrap();

    assert_ne!(
        before[0].2,
        on_time
            .results_json("air_daily", Some("aq-jianxi-1"), 0, i64::MAX)
            .unwrap()[0]
            .2,
        "the late hours changed the day"
    );
    let (a, b) = (all_results(&on_time), all_results(&late));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "late delivery must give the on-time result");
    }
    // And the day itself by hand: PM2.5 hours 50 … 73 → mean 61.5 → 2026 rounds to 62 (61.5 → even 62)
    // → 100 + 50/55 × 2 = 101.8 → 102; PM10 90 … 113 → 101.5 → 102 (even) → 50 + 50/70 × 52 = 87.1 → 88.
    let day_doc = &a
        .iter()
        .find(|(k, e, _, _)| k == "air_daily" && e == "aq-jianxi-1")
        .unwrap()
        .3;
    assert_eq!(day_doc["aqi"]["iaqi"]["PM2.5_24h"], 102);
    assert_eq!(day_doc["aqi"]["iaqi"]["PM10_24h"], 88);
}

/// HJ 663's month for the district: November 2026 (30 days), every hour of station 1 as 1 h means,
/// day d (1–30) constant through the day: SO2 10 + d, NO2 20, PM10 50 + d, PM2.5 30 µg/m³,
/// CO 0.5 + 0.1·d mg/m³, O3 100 + d µg/m³ (so the day's maximum 8h mean is 100 + d).
/// By hand: SO2 mean = 10 + 15.5 = 25.5 → 26 (GB/T 8170, half to even); PM10 65.5 → 66; NO2 20;
/// PM2.5 30; CO 95th percentile of 0.6 … 3.5: k = 1 + 29 × 0.95 = 28.55, 3.3 + 0.55 × 0.1 = 3.355
/// → 3.4; O3 90th of 101 … 130: k = 27.1, 127 + 0.1 = 127.1 → 127. The report table says the same.
#[test]
fn an_air_month_by_hj663_in_the_api_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let first = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    for d in 1..=30 {
        let day = first + chrono::Days::new(d - 1);
        let f = d as f64;
        let mut readings = Vec::new();
        for &hour in time::hour_labels(day).iter() {
            for (q, v) in [
                ("SO2", 10.0 + f),
                ("NO2", 20.0),
                ("PM10", 50.0 + f),
                ("PM2.5", 30.0),
                ("CO", 0.5 + 0.1 * f),
                ("O3", 100.0 + f),
            ] {
                readings.push(air_hour("aq-jianxi-1-analyzers", hour, q, v));
            }
        }
        let end = time::day_start_ms(day) + 24 * HOUR_MS;
        e.ingest(&readings, end).unwrap();
        e.recompute(end).unwrap();
    }
    let months = e.air_monthly("district", 2026).unwrap();
    assert_eq!(months.len(), 1, "{months:?}");
    let m = &months[0];
    assert_eq!((m.year, m.month), (2026, 11));
    let v = |k: &str| (m.values[k].value, m.values[k].days);
    assert_eq!(v("SO2"), (Some(26.0), 30));
    assert_eq!(v("NO2"), (Some(20.0), 30));
    assert_eq!(v("PM10"), (Some(66.0), 30));
    assert_eq!(v("PM2.5"), (Some(30.0), 30));
    assert_eq!(v("CO-95per"), (Some(3.4), 30));
    assert_eq!(v("O3-8h-90per"), (Some(127.0), 30));
    assert_eq!(m.values["CO-95per"].statistic, "p95");
    // Every day's AQI is under 100 here (PM10 ≤ 80 → IAQI ≤ 65; O3 8h ≤ 130 → ≤ 68).
    assert_eq!((m.aqi_days, m.good_days), (30, 30));
    assert_eq!(m.good_rate_percent, Some(100.0));

    let t = enviromon::tables::build(
        &e,
        enviromon::tables::Kind::AirMonthly,
        &enviromon::tables::Args {
            entity: "district".into(),
            year: Some(2026),
            ..Default::default()
        },
    )
    .unwrap();
    let csv = enviromon::tables::to_csv(&t);
    let rows: Vec<Vec<&str>> = csv
        .trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.split(',').collect())
        .collect();
    let col = |h: &str| {
        rows[0]
            .iter()
            .position(|x| x.starts_with(h))
            .unwrap_or_else(|| panic!("{h} in {:?}", rows[0]))
    };
    let row = rows
        .iter()
        .find(|r| r[0] == "2026-11")
        .expect("November's row");
    assert_eq!(row[col("SO2 µg/m³")], "26");
    assert_eq!(row[col("CO-95per mg/m³")], "3.4");
    assert_eq!(row[col("O3-8h-90per µg/m³")], "127");
    assert_eq!(row[col("CO-95per 有效天数")], "30");
    assert_eq!(row[col("优良率")], "100.0");
    // A month without its 27 daily values is no statistic (GB 3095 Table 4): no value, not a guess.
    let short = enviromon::standards::air::month("district", 2026, 11, &[]);
    assert_eq!(short.values["SO2"].value, None);
}

/// The engine over the seeds plus a third air station `aq-jianxi-3` whose analyser is registered
/// with `registered_at` (None: as if seeded), and `air` settings.
fn engine_with_third_station(
    dir: &std::path::Path,
    registered_at: Option<&str>,
    air: enviromon::config::AirStandardsConfig,
) -> Engine {
    let db = dir.join("e.db");
    let conn = enviromon::db::open(&db).unwrap();
    let mut seeds = Seeds::embedded().unwrap();
    seeds.sites.push(
        serde_json::from_value(
            serde_json::json!({"id": "aq-jianxi-3", "name_zh": "涧西空气站3号",
            "name_en": "Jianxi air station 3", "kind": "air_station"}),
        )
        .unwrap(),
    );
    seeds.sensors.push(
        serde_json::from_value(serde_json::json!({"id": "aq-3-so2", "site": "aq-jianxi-3",
            "name_zh": "3号站 SO2", "name_en": "station 3 SO2", "domain": "air", "protocol": "mqtt",
            "channels": [{"quantity": "SO2"}], "registered_at": registered_at}))
        .unwrap(),
    );
    registry::apply_seeds(&conn, &seeds).unwrap();
    let reg = registry::load(&conn, "enviromon/{site}/{sensor}").unwrap();
    Engine::open(&db, RegistryHandle::new(reg), settings(air)).unwrap()
}

/// The held-out station raises the built-in `air_station_held_out` alert, with how many times off
/// the median it was (8000 / 12 = 666.7), and only for that station and pollutant.
#[test]
fn a_held_out_station_raises_its_alert() {
    let hour = time::hour_labels(NaiveDate::from_ymd_opt(2026, 11, 20).unwrap())[10];
    let dir = tempfile::tempdir().unwrap();
    let just_now = chrono::Utc::now().to_rfc3339();
    let e = engine_with_third_station(dir.path(), Some(&just_now), Default::default());
    district_so2(&e, hour, 8000.0);
    let conn = enviromon::db::open(&dir.path().join("e.db")).unwrap();
    let reg = registry::load(&conn, "enviromon/{site}/{sensor}").unwrap();
    let now = hour + 10 * MINUTE_MS;
    let alerting = enviromon::alerts::Alerting::open(
        &dir.path().join("alerts.db"),
        &enviromon::config::AlertsConfig::default(),
        now,
    )
    .unwrap();
    let metrics = enviromon::metrics::Metrics::new().unwrap();
    alerting.evaluate(&reg, Some(&e), &metrics, now).unwrap();
    let held: Vec<_> = alerting
        .list(None, now)
        .into_iter()
        .filter(|a| a.alert.rule == "air_station_held_out")
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    let a = &held[0].alert;
    assert_eq!(
        (
            a.labels["station"].as_str(),
            a.labels["pollutant"].as_str(),
            a.value
        ),
        ("aq-jianxi-3", "SO2", Some(666.7))
    );
    assert!(
        a.annotations["summary_en"].contains("666.7 times off"),
        "{:?}",
        a.annotations
    );
}

/// The district's SO2 and what was held out, for an hour where stations 1 and 2 read 10 and 12
/// µg/m³ and station 3 reads `third`.
fn district_so2(e: &Engine, hour: i64, third: f64) -> (f64, Value) {
    let r = |sensor: &str, site: &str, v: f64| Reading {
        site: site.into(),
        ..air_hour(sensor, hour, "SO2", v)
    };
    e.ingest(
        &[
            r("aq-jianxi-1-analyzers", "aq-jianxi-1", 10.0),
            r("aq-jianxi-2-analyzers", "aq-jianxi-2", 12.0),
            r("aq-3-so2", "aq-jianxi-3", third),
        ],
        hour + HOUR_MS,
    )
    .unwrap();
    e.recompute(hour + HOUR_MS).unwrap();
    let (_, _, doc) = e
        .results_json("air_hourly", Some("district"), hour, hour)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    (
        doc["values"]["SO2"].as_f64().unwrap(),
        doc["held_out"].clone(),
    )
}

/// Issue 18: a newly registered station 100× or more off the others is held out of the
/// district's mean (standards.air.outlier_factor, 50 by default); a near miss counts; an
/// established station is not second-guessed unless `outlier_all_stations`.
#[test]
fn a_new_station_far_off_the_others_is_held_out_of_the_district_mean() {
    let hour = time::hour_labels(NaiveDate::from_ymd_opt(2026, 11, 20).unwrap())[10];
    let just_now = chrono::Utc::now().to_rfc3339();
    // SO2 registered as mg/m3 while the analyser reports µg/m³: 8 read as 8,000 µg/m³ — under the
    // ambient range (10,000), so only the neighbours can tell. The median of 10, 12 and 8000 is 12;
    // 8000 > 50 × 12 = 600: held out, the district is (10 + 12)/2 = 11.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_third_station(dir.path(), Some(&just_now), Default::default());
    let (so2, held) = district_so2(&e, hour, 8000.0);
    assert_eq!(so2, 11.0, "held out of the mean");
    assert_eq!(held["SO2"][0]["station"], "aq-jianxi-3", "{held}");
    assert_eq!(held["SO2"][0]["value"], 8000.0);
    assert_eq!(held["SO2"][0]["median"], 12.0);
    // Near miss: 500 < 600 counts: (10 + 12 + 500) / 3 = 174.0.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_third_station(dir.path(), Some(&just_now), Default::default());
    let (so2, held) = district_so2(&e, hour, 500.0);
    assert_eq!(so2, 174.0);
    assert!(held.is_null(), "{held}");
    // A seeded (established) station at 8000 is not checked by default: (10 + 12 + 8000) / 3 =
    // 2674.0; with outlier_all_stations it is held out again (and stations 1 and 2, within 50×
    // of the median 12, still count).
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_third_station(dir.path(), None, Default::default());
    assert_eq!(district_so2(&e, hour, 8000.0).0, 2674.0);
    let dir = tempfile::tempdir().unwrap();
    let all = enviromon::config::AirStandardsConfig {
        outlier_all_stations: true,
        ..Default::default()
    };
    let e = engine_with_third_station(dir.path(), None, all);
    assert_eq!(district_so2(&e, hour, 8000.0).0, 11.0);
    // Too low: the median of 10, 12 and 0.1 is 10 (≥ the 5 µg/m³ floor); 0.1 < 10 / 50 = 0.2: held.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_third_station(dir.path(), Some(&just_now), Default::default());
    assert_eq!(district_so2(&e, hour, 0.1).0, 11.0);
    // Registered more than outlier_probation (7 days) before the hour: not checked any more.
    let dir = tempfile::tempdir().unwrap();
    let long_ago =
        (chrono::Utc.timestamp_millis_opt(hour).unwrap() - chrono::Duration::days(8)).to_rfc3339();
    let e = engine_with_third_station(dir.path(), Some(&long_ago), Default::default());
    assert_eq!(district_so2(&e, hour, 8000.0).0, 2674.0);
}

/// Imported history: taken whatever its age (live ingest refuses it as too late), re-evaluated by
/// the background steps, and its input kept after the queue is empty, so a second file with
/// another quantity of the same hour is evaluated together with the first. HJ 75: corrected =
/// measured × (21 − 6)/(21 − O2): at O2 9 %, × 15/12 = 1.25: SO2 30 → 37.5, NOx 32 → 40.
#[test]
fn imported_history_is_re_evaluated_whatever_its_age_and_keeps_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let now = Utc::now().timestamp_millis();
    // The hour 2020-03-01 10:00–11:00 Beijing time, labelled 11:00.
    let hour = Utc
        .with_ymd_and_hms(2020, 3, 1, 3, 0, 0)
        .unwrap()
        .timestamp_millis();
    let mut first = cems_hour(hour, |_| (30.0, 9.0, DataFlag::N));
    for r in &mut first {
        r.source = Source::Import;
    }
    assert_eq!(e.ingest(&first, now).unwrap().too_late, 120);
    assert_eq!(e.backfill_pending().unwrap(), 0);
    let (stats, queued) = e.ingest_history(&first).unwrap();
    assert_eq!((stats.kept, queued), (120, 1));
    let drain = |e: &Engine| {
        while e.backfill_pending().unwrap() > 0 {
            e.backfill_step(24, now).unwrap();
        }
    };
    drain(&e);
    assert!(
        close(&so2_of(&e, hour)["corrected"], 37.5),
        "{}",
        so2_of(&e, hour)
    );
    // The queue is empty; the purge keeps imported input (history_input_keep, 30 days here).
    e.purge(now).unwrap();
    let nox: Vec<Reading> = (0..60)
        .map(|i| {
            let mut r = minute(
                "dt-1-cems",
                Domain::Cems,
                "NOx",
                hour - HOUR_MS + i * MINUTE_MS,
                32.0,
                DataFlag::N,
            );
            r.source = Source::Import;
            r
        })
        .collect();
    e.ingest_history(&nox).unwrap();
    drain(&e);
    let h = e
        .results_json("cems_hourly", Some("dt-1"), hour, hour)
        .unwrap();
    let p = &h[0].2["pollutants"];
    assert!(close(&p["NOx"]["corrected"], 40.0), "{p}");
    assert!(close(&p["SO2"]["corrected"], 37.5), "SO2 kept: {p}");
    // The day was re-evaluated with its hour.
    let day = time::day_start_ms(NaiveDate::from_ymd_opt(2020, 3, 1).unwrap());
    let d = e
        .results_json("cems_daily", Some("dt-1"), day, day)
        .unwrap();
    assert_eq!(
        d[0].2["pollutants"]["SO2"]["exceeded_hours"], 1,
        "{}",
        d[0].2
    );
}
