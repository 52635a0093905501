//! The report tables operators hand in, end to end: readings over real MQTT into the standards,
//! then `GET /api/v1/reports/…` as CSV and `enviromon report --table … --format xlsx` read back
//! (calamine): every number equals the API's own result.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use common::*;
use enviromon::daemon;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cems_tables_in_csv_and_xlsx_carry_the_apis_numbers() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-tables");
    cfg.standards.interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    // The last complete hour of 大唐 #1: SO2 40 at O2 9 % → corrected 40 × 15/12 = 50 (HJ 75).
    let end = time::label(chrono::Utc::now().timestamp_millis(), HOUR_MS) - HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-tables").await;
    for i in 0..60 {
        let ts = rfc3339(end - HOUR_MS + i * MINUTE_MS);
        p.publish(
            "enviromon/datang/dt-1-cems",
            json!({"ts": ts, "period": "1min", "values": {"SO2": 40.0, "NOx": 30.0, "PM": 3.0, "O2": 9.0, "flue_flow": 900000.0}}).to_string(),
        )
        .await;
    }
    p.wait_acked().await;
    let api = &wait_results_where(
        addr,
        &format!("/api/v1/cems/hourly?unit=dt-1&from={end}&to={end}"),
        1,
        all_minutes,
    )
    .await[0];
    assert_eq!(api["pollutants"]["SO2"]["corrected"].as_f64(), Some(50.0));
    let day = time::day_of_hour(end);
    // CSV from the API: the hour's row has the API's values.
    let csv = reqwest::get(format!(
        "http://{addr}/api/v1/reports/cems-hourly?unit=dt-1&day={day}"
    ))
    .await
    .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let rows = csv_rows(&csv.text().await.unwrap());
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let row = rows
        .iter()
        .find(|r| r[0] == api["hour"].as_str().unwrap())
        .expect("the hour's row");
    let api_num = |v: &Value, d: i32| {
        let f = 10f64.powi(d);
        format!("{:.*}", d as usize, (v.as_f64().unwrap() * f).round() / f)
    };
    assert_eq!(
        row[col("SO2 折算 / corrected mg/m³")],
        api_num(&api["pollutants"]["SO2"]["corrected"], 2)
    );
    assert_eq!(
        row[col("SO2 实测 / measured mg/m³")],
        api_num(&api["pollutants"]["SO2"]["measured"], 2)
    );
    assert_eq!(
        row[col("SO2 排放量 / emission kg/h")],
        api_num(&api["pollutants"]["SO2"]["mass_kg_h"], 3)
    );
    assert_eq!(row[col("SO2 有效分钟 / valid min")], "60");
    assert_eq!(row[col("SO2 超标 / exceeded")], "是 yes");
    assert_eq!(row[col("氧含量 / O2 %")], api_num(&api["o2_mean"], 2));

    // XLSX from the CLI, read back: the month's daily table has the API's day.
    let daily = &wait_results(
        addr,
        &format!("/api/v1/cems/daily?unit=dt-1&from={day}&to={day}"),
        1,
    )
    .await[0];
    let out = dir.path().join("daily.xlsx");
    let month = day.format("%Y-%m").to_string();
    let server = format!("http://{addr}");
    let (out2, month2) = (out.clone(), month.clone());
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
            .args([
                "report",
                "--table",
                "cems-daily",
                "--unit",
                "dt-1",
                "--month",
                &month2,
                "--format",
                "xlsx",
                "--server",
                &server,
                "--out",
            ])
            .arg(&out2)
            .env_remove("ENVIROMON_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut wb: Xlsx<_> = calamine::open_workbook(&out).unwrap();
    let sheet = wb.worksheet_range_at(0).unwrap().unwrap();
    let cells: Vec<Vec<Data>> = sheet.rows().map(|r| r.to_vec()).collect();
    assert!(
        matches!(&cells[0][0], Data::String(t) if t.contains(&month)),
        "title {:?}",
        cells[0][0]
    );
    let headers: Vec<String> = cells[1].iter().map(|c| c.to_string()).collect();
    let c = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {headers:?}"))
    };
    let r = cells
        .iter()
        .find(|r| matches!(&r[0], Data::String(d) if d == daily["day"].as_str().unwrap()))
        .expect("the day's row");
    let n = |d: &Data| match d {
        Data::Float(f) => *f,
        Data::Int(i) => *i as f64,
        other => panic!("not a number: {other:?}"),
    };
    let so2 = &daily["pollutants"]["SO2"];
    assert_eq!(
        n(&r[c("SO2 有效小时 / valid h")]),
        so2["valid_hours"].as_f64().unwrap()
    );
    assert_eq!(
        n(&r[c("SO2 超标小时 / exceeded h")]),
        so2["exceeded_hours"].as_f64().unwrap()
    );
    assert_eq!(
        n(&r[c("SO2 排放量 / emission kg")]),
        (so2["mass_kg"].as_f64().unwrap() * 100.0).round() / 100.0
    );
    // The year's monthly table: the month's emission is the API's.
    let year = chrono::Datelike::year(&day);
    let monthly: Value =
        get_json(addr, &format!("/api/v1/cems/monthly?unit=dt-1&year={year}")).await;
    let api_month = monthly["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| format!("{}-{:02}", m["year"], m["month"].as_u64().unwrap()) == month)
        .cloned()
        .expect("the month in the API");
    let text = reqwest::get(format!(
        "http://{addr}/api/v1/reports/cems-monthly?unit=dt-1&year={year}"
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let rows = csv_rows(&text);
    let mcol = rows[0]
        .iter()
        .position(|h| h == "SO2 排放量 / emission kg")
        .unwrap();
    let mrow = rows
        .iter()
        .find(|r| r[0] == month)
        .expect("the month's row");
    assert_eq!(
        mrow[mcol],
        api_num(&api_month["pollutants"]["SO2"]["mass_kg"], 2)
    );
    // The air and water tables answer with their headers (no data in them here).
    for q in [
        "air-daily?station=district",
        "water-daily?sensor=wwtp-outlet-quality",
    ] {
        let r = reqwest::get(format!("http://{addr}/api/v1/reports/{q}&month={month}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{q}");
        assert!(r.text().await.unwrap().contains("日期 / Day"), "{q}");
    }
    // A table without what it needs says so.
    let r = reqwest::get(format!(
        "http://{addr}/api/v1/reports/cems-hourly?unit=dt-1"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::get(format!("http://{addr}/api/v1/reports/nothing?unit=dt-1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    running.shutdown().await;
}
