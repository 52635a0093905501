//! Importing history end to end, against a running daemon (embedded store; one test with
//! VictoriaMetrics): `enviromon import` and `POST /api/v1/import` for CSV (long, wide, a vendor's
//! GBK export with a mapping), XLSX, HJ 212 captures (2017 plaintext and 2025 SM4) and line
//! protocol; refusals in the dead-letter file; importing again changes nothing; an interrupted
//! upload resumes after its last durable row; history years older than the lateness window is
//! re-evaluated in the background, and the plan's year compared under both AQI editions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use enviromon::api::auth::hash_token;
use enviromon::config::{ApiToken, Config};
use enviromon::daemon;
use enviromon::ingest::hj212::codec::Packet;
use enviromon::ingest::hj212::crypto::Key;
use serde_json::Value;

const OPERATOR: &str = "operator-token-import";
const VIEWER: &str = "viewer-token-import";

fn config(dir: &Path) -> Config {
    // No broker: imports do not need one.
    let mut cfg = daemon_config(dir, 1, "import-test");
    cfg.mqtt.enabled = false;
    cfg.standards.interval = Duration::from_millis(300);
    cfg.api.anonymous_read = false;
    cfg.api.tokens = vec![
        ApiToken {
            name: "duty-operator".into(),
            role: enviromon::config::Role::Operator,
            sha256: hash_token(OPERATOR),
        },
        ApiToken {
            name: "viewer".into(),
            role: enviromon::config::Role::Viewer,
            sha256: hash_token(VIEWER),
        },
    ];
    cfg
}

async fn start(cfg: Config) -> daemon::Running {
    cfg.validate().unwrap();
    daemon::start(cfg).await.unwrap()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// `POST /api/v1/import?QUERY` with `body` as the request body, as `token`.
async fn post_file(
    addr: std::net::SocketAddr,
    query: &str,
    body: impl Into<reqwest::Body>,
    token: &str,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/import?{query}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The same as a multipart form: a `mapping` part (TOML), then the `file` part.
async fn post_form(
    addr: std::net::SocketAddr,
    name: &str,
    mapping: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("mapping", mapping.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(body).file_name(name.to_string()),
        );
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/import"))
        .bearer_auth(OPERATOR)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `enviromon import ARGS` against `addr` as the operator: exit code, stdout, stderr.
fn cli(addr: std::net::SocketAddr, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let token = dir.join("operator.token");
    std::fs::write(&token, OPERATOR).unwrap();
    enviromon_cli("import", args, &format!("http://{addr}"), &token)
}

/// (value, flag) of one reading once the store has it (the spool holds it when the import
/// counts it; the writer stores it right after).
async fn stored(db: &Path, sensor: &str, quantity: &str, ts_ms: i64) -> (f64, String) {
    let (db, sensor, quantity) = (db.to_path_buf(), sensor.to_string(), quantity.to_string());
    eventually(30, "the imported reading in the store", || {
        let (db, sensor, quantity) = (db.clone(), sensor.clone(), quantity.clone());
        async move {
            let c = rusqlite::Connection::open(&db).ok()?;
            c.query_row(
                "SELECT value, flag FROM readings WHERE sensor = ?1 AND quantity = ?2 AND ts_ms = ?3",
                rusqlite::params![sensor, quantity, ts_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
        }
    })
    .await
}

fn count(db: &Path, sensor_like: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor LIKE ?1",
        [sensor_like],
        |r| r.get(0),
    )
    .unwrap()
}

/// Epoch ms of a Beijing wall-clock time.
fn cst(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
        .timestamp_millis()
        - 8 * 3_600_000
}

async fn wait_reevaluated(addr: std::net::SocketAddr) {
    eventually(240, "imported hours re-evaluated", || async move {
        let v = get(addr, "/api/v1/imports").await;
        (v["reevaluation"]["pending_hours"].as_u64() == Some(0)).then_some(())
    })
    .await;
}

fn deadletter_reasons(v: &Value) -> Vec<String> {
    v["records"]
        .as_array()
        .or_else(|| v.as_array())
        .into_iter()
        .flatten()
        .filter(|r| r["source"] == "import")
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_goes_through_validation_and_refusals_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await;
    let addr = running.http_addr;
    let db = running.db_path.clone();

    // A long CSV without a mapping: the header says the layout. Row 3 is refused (pH above 14),
    // row 4 names no registered sensor, row 5 has no readable time; the others are stored.
    // SO2 in ppm is stored in the channel's mg/m3: 10 ppm × 2.86 (the catalogue's SO2 factor,
    // 64/22.4 at standard state) = 28.6.
    let long = "time,sensor,quantity,value,unit,flag\n\
        2026-11-01T08:00:00+08:00,wwtp-outlet-quality,COD,25.5,mg/L,N\n\
        2026-11-01T08:00:00+08:00,wwtp-outlet-quality,pH,15,,N\n\
        2026-11-01T08:00:00+08:00,no-such-sensor,COD,1,,\n\
        yesterday,wwtp-outlet-quality,COD,1,,\n\
        2026-11-01 09:00,dt-1-cems,SO2,10,ppm,N\n";
    let (code, s) = post_file(addr, "name=long.csv", long, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["state"], "done");
    assert_eq!(s["rows"], 5);
    assert_eq!(s["stored"], 2, "{s}");
    assert_eq!(s["refused"]["out_of_range"], 1, "{s}");
    assert_eq!(s["refused"]["unknown_topic"], 1, "{s}");
    assert_eq!(s["refused"]["invalid_timestamp"], 1, "{s}");
    assert_eq!(
        stored(&db, "wwtp-outlet-quality", "COD", cst("2026-11-01 08:00")).await,
        (25.5, "N".into())
    );
    let so2 = stored(&db, "dt-1-cems", "SO2", cst("2026-11-01 09:00")).await;
    assert!((so2.0 - 28.6).abs() < 1e-9, "{so2:?}");
    let dl = get(addr, "/api/v1/deadletter?limit=50").await;
    let reasons = deadletter_reasons(&dl);
    for r in ["out_of_range", "unknown_topic", "invalid_timestamp"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} not in {reasons:?}: {dl}"
        );
    }

    // A vendor's wide export in GBK, with a title line, Chinese headers, status words and an
    // empty cell; read through a mapping (multipart form).
    let mapping = r#"
        layout = "wide"
        skip_rows = 1
        time_column = "监测时间"
        time_format = "%Y/%m/%d %H:%M"
        sensor = "wwtp-outlet-quality"
        flag_column = "状态"
        [flag_values]
        "正常" = "N"
        "维护" = "M"
        [[columns]]
        column = "化学需氧量(mg/L)"
        quantity = "COD"
        [[columns]]
        column = "氨氮(mg/L)"
        quantity = "NH3-N"
    "#;
    let text = "涧西污水处理厂出口 2026年11月\n监测时间,化学需氧量(mg/L),氨氮(mg/L),状态\n\
        2026/11/02 10:00,31.2,1.05,正常\n2026/11/02 11:00,,0.98,维护\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(text);
    let (code, s) = post_form(addr, "出口.csv", mapping, gbk.into_owned()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["stored"].as_u64(),
            s["empty"].as_u64()
        ),
        (Some(2), Some(3), Some(1)),
        "{s}"
    );
    assert_eq!(
        stored(&db, "wwtp-outlet-quality", "NH3-N", cst("2026-11-02 11:00")).await,
        (0.98, "M".into())
    );
    assert_eq!(
        stored(&db, "wwtp-outlet-quality", "COD", cst("2026-11-02 10:00")).await,
        (31.2, "N".into())
    );

    // XLSX: real Excel dates and numbers, the sensor by column.
    let xlsx = {
        let mut wb = rust_xlsxwriter::Workbook::new();
        let ws = wb.add_worksheet();
        let fmt = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd hh:mm");
        for (c, h) in ["time", "sensor", "COD", "TP"].iter().enumerate() {
            ws.write_string(0, c as u16, *h).unwrap();
        }
        for (r, (hour, cod, tp)) in [(12u32, 28.0, 0.21), (13, 29.5, 0.19)].iter().enumerate() {
            let row = r as u32 + 1;
            let t = rust_xlsxwriter::ExcelDateTime::from_ymd(2026, 11, 3)
                .unwrap()
                .and_hms(*hour as u16, 0, 0)
                .unwrap();
            ws.write_datetime_with_format(row, 0, &t, &fmt).unwrap();
            ws.write_string(row, 1, "wwtp-outlet-quality").unwrap();
            ws.write_number(row, 2, *cod).unwrap();
            ws.write_number(row, 3, *tp).unwrap();
        }
        wb.save_to_buffer().unwrap()
    };
    let (code, s) = post_file(addr, "name=day.xlsx", xlsx, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(
        (s["format"].as_str(), s["stored"].as_u64()),
        (Some("xlsx"), Some(4)),
        "{s}"
    );
    assert_eq!(
        stored(&db, "wwtp-outlet-quality", "TP", cst("2026-11-03 13:00")).await,
        (0.19, "N".into())
    );

    // An HJ 212 capture as a capture tool writes it: a time stamp before each frame; the 2017
    // logger of 双源 #2 in plaintext, the 2025 logger of 双源 #1 sealed with SM4 (its key
    // registered), a heartbeat (not data) and a frame whose CRC is wrong (refused).
    let key = Key::new([0x5a; 16]);
    running
        .keys
        .set(
            "41030500000000000000A001",
            Some(&key),
            "test",
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
    let minute = |mn: &str, flag: u32, at: &str, so2: f64| {
        let dt = at.replace(['-', ' ', ':'], "") + "00";
        Packet::new(
            [
                ("QN", format!("{dt}000")),
                ("ST", "31".into()),
                ("CN", "2051".into()),
                ("PW", "123456".into()),
                ("MN", mn.into()),
                ("Flag", flag.to_string()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
            vec![
                vec![("DataTime".into(), dt.clone())],
                vec![
                    ("a21026-Avg".into(), so2.to_string()),
                    ("a21026-Flag".into(), "N".into()),
                ],
            ],
        )
    };
    let plain = minute("LYSY0002CEMS0001", 5, "2026-11-04 10:00", 21.5).encode();
    let sealed = minute("41030500000000000000A001", 9, "2026-11-04 10:00", 18.25)
        .encode_sealed(&key)
        .unwrap();
    let heartbeat = Packet::new(
        [
            ("QN", "20261104100000000"),
            ("ST", "31"),
            ("CN", "9015"),
            ("PW", "123456"),
            ("MN", "LYSY0002CEMS0001"),
            ("Flag", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        vec![],
    )
    .encode();
    let mut bad = minute("LYSY0002CEMS0001", 5, "2026-11-04 10:01", 22.0).encode();
    let crc_at = bad.len() - 6;
    bad.replace_range(crc_at..crc_at + 4, "0000");
    let capture = format!(
        "2026-11-04 10:01:02 RECV {plain}2026-11-04 10:01:03 RECV {sealed}2026-11-04 10:01:04 RECV {heartbeat}2026-11-04 10:02:00 RECV {bad}"
    );
    let (code, s) = post_file(addr, "name=logger.hj212", capture, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["format"], "hj212");
    assert_eq!(
        (
            s["rows"].as_u64(),
            s["stored"].as_u64(),
            s["not_data"].as_u64()
        ),
        (Some(4), Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(s["refused"]["invalid_payload"], 1, "{s}");
    assert!(s["garbage_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        stored(&db, "sy-1-cems", "SO2", cst("2026-11-04 10:00")).await,
        (18.25, "N".into())
    );
    assert_eq!(
        stored(&db, "sy-2-cems", "SO2", cst("2026-11-04 10:00")).await,
        (21.5, "N".into())
    );

    // Line protocol as enviromon's stores hold it, and a line that is not line protocol.
    let t = cst("2026-11-05 08:00");
    let lp = format!(
        "water,site=jianxi-wwtp,sensor=wwtp-outlet-quality,period=1h cod=22.5,cod_flag=\"C\",ph=7.2 {t}\n\
         this is not line protocol\n"
    );
    let (code, s) = post_file(addr, "name=dump.lp", lp, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(
        (
            s["stored"].as_u64(),
            s["refused"]["invalid_payload"].as_u64()
        ),
        (Some(2), Some(1)),
        "{s}"
    );
    stored(&db, "wwtp-outlet-quality", "COD", t).await;
    let c = rusqlite::Connection::open(&db).unwrap();
    let (v, f, period): (f64, String, String) = c
        .query_row(
            "SELECT value, flag, period FROM readings WHERE sensor = 'wwtp-outlet-quality' AND quantity = 'COD' AND ts_ms = ?1",
            [t],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((v, f.as_str(), period.as_str()), (22.5, "C", "1h"));

    // Imports need an operator; a viewer is refused before anything is read.
    let (code, _) = post_file(addr, "name=x.csv", long, VIEWER).await;
    assert_eq!(code, 403);
    // A header that cannot be placed is refused whole, saying why.
    let (code, s) = post_file(addr, "name=bad.csv", "when,what\n1,2\n", OPERATOR).await;
    assert_eq!(code, 422, "{s}");
    assert!(s["error"].as_str().unwrap().contains("time"), "{s}");
    running.shutdown().await;
}

/// A year of two stations' hourly history (the repository's `seeds/history`), imported with the
/// README's command: once, then again (nothing changes), then forced (every value a duplicate);
/// the plan's year then reads under both AQI editions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_history_imports_once_and_reads_under_both_editions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Keep the readings (2020 is past the default retention).
    cfg.store.embedded.retention = Duration::ZERO;
    let running = start(cfg).await;
    let addr = running.http_addr;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("seeds/history/air-2020-hourly.csv");
    let mapping = root.join("seeds/history/air-2020-hourly.mapping.toml");
    // What the file holds, counted here from its text: data rows, and value cells (six
    // pollutant columns; an empty cell is no value).
    let text = std::fs::read_to_string(&file).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let values: usize = rows
        .iter()
        .map(|l| {
            l.split(',')
                .skip(2)
                .take(6)
                .filter(|c| !c.trim().is_empty())
                .count()
        })
        .sum();
    let args = [
        file.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--json",
    ];

    let (code, out, err) = cli(addr, dir.path(), &args);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["rows"].as_u64(), Some(rows.len() as u64));
    assert_eq!(s["values"].as_u64(), Some(values as u64), "{s}");
    assert_eq!(s["stored"].as_u64(), Some(values as u64), "{s}");
    assert!(s["refused"].as_object().unwrap().is_empty(), "{s}");
    // The first row "2020-01-01 01:00" labels the hour 00:00–01:00 Beijing time (time_is = end).
    assert_eq!(s["first"], "2019-12-31T16:00:00Z");
    // Durable in the spool when counted; in the store once the writer has written it.
    let db = running.db_path.clone();
    let d2 = db.clone();
    let in_store = eventually(60, "every imported value in the store", || {
        let db = d2.clone();
        async move {
            let n = count(&db, "aq-jianxi-%");
            (n == values as i64).then_some(n)
        }
    })
    .await;

    // The same file again: recognised by its digest, nothing read, nothing stored.
    let (code, out, err) = cli(addr, dir.path(), &args);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let again: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(again["state"], "already_imported", "{again}");
    assert_eq!(again["stored"], 0);
    assert_eq!(again["already_imported"].as_u64(), Some(rows.len() as u64));
    // Forced: read again, and every value is already stored with the same value and flag.
    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, out, err) = cli(addr, dir.path(), &forced);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let f: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (f["stored"].as_u64(), f["duplicates"].as_u64()),
        (Some(0), Some(values as u64)),
        "{f}"
    );
    assert_eq!(count(&db, "aq-jianxi-%"), in_store);

    // Years older than the lateness window: re-evaluated in the background all the same.
    wait_reevaluated(addr).await;
    let cmp = get(
        addr,
        "/api/v1/compliance/compare?from=2020-01-01&to=2020-12-31",
    )
    .await;
    assert_eq!(cmp["days"], 366, "{cmp}");
    let e12 = &cmp["editions"][0];
    let e26 = &cmp["editions"][1];
    assert_eq!(
        (e12["edition"].as_str(), e26["edition"].as_str()),
        (Some("HJ633-2012"), Some("HJ633-2026"))
    );
    // Each edition's count agrees with the plan's indicator under that edition.
    for e in [e12, e26] {
        let ed = e["edition"].as_str().unwrap();
        let c = get(addr, &format!("/api/v1/compliance?year=2020&standard={ed}")).await;
        let ind = c["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "air_good_days_rate")
            .unwrap();
        assert_eq!(ind["detail"]["good_days"], e["good_days"], "{ed}");
        assert_eq!(ind["detail"]["valid_days"], e["days_with_aqi"], "{ed}");
    }
    // Every listed day's grade differs, as the daily results under each edition say.
    let changed = cmp["changed_days"].as_array().unwrap();
    assert!(!changed.is_empty());
    for d in changed.iter().take(5) {
        let day = d["day"].as_str().unwrap();
        let mut grades = Vec::new();
        for ed in ["HJ633-2012", "HJ633-2026"] {
            let v = get(
                addr,
                &format!("/api/v1/air/daily?station=district&from={day}&to={day}&standard={ed}"),
            )
            .await;
            grades.push(v["results"][0]["aqi"]["grade"].clone());
        }
        assert_ne!(grades[0], grades[1], "{day}: {d}");
        assert_eq!(d["editions"][0]["grade"], grades[0]);
    }
    // The month of 大唐 #1's CEMS minute export, through its mapping: measured values with the
    // vendor's status words. Its generator (scripts/gen-history) builds in exactly three
    // desulphurisation upsets of 60–90 minutes that put an hour's SO2 over the ultra-low 35 mg/m3
    // once corrected to 6 % O2, and checks that no other hour is; start-up, stopped, calibration
    // and fault minutes are mapped to F, C and D, which HJ 75 leaves out of the hourly means.
    let cems = root.join("seeds/history/dt-1-cems-2020-12-minute.csv");
    let cems_map = root.join("seeds/history/dt-1-cems-2020-12-minute.mapping.toml");
    let (code, out, err) = cli(
        addr,
        dir.path(),
        &[
            cems.to_str().unwrap(),
            "--mapping",
            cems_map.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let c: Value = serde_json::from_str(out.trim()).unwrap();
    // 31 days × 1440 minutes, seven channels each.
    assert_eq!(
        (c["rows"].as_u64(), c["stored"].as_u64()),
        (Some(44_640), Some(44_640 * 7)),
        "{c}"
    );
    wait_reevaluated(addr).await;
    let days = get(
        addr,
        "/api/v1/cems/daily?unit=dt-1&from=2020-12-01&to=2020-12-31",
    )
    .await;
    let results = days["results"].as_array().unwrap();
    assert_eq!(results.len(), 31, "{days}");
    let exceeded: u64 = results
        .iter()
        .map(|d| {
            d["pollutants"]["SO2"]["exceeded_hours"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(exceeded, 3, "{days}");

    // The report prints the same numbers.
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args([
            "report",
            "--compare-editions",
            "--from",
            "2020-01-01",
            "--to",
            "2020-12-31",
            "--server",
            &format!("http://{addr}"),
        ])
        .env("ENVIROMON_TOKEN", VIEWER)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let g12 = format!("{}/{}", e12["good_days"], e12["days_with_aqi"]);
    assert!(text.contains("HJ633-2012") && text.contains(&g12), "{text}");
    running.shutdown().await;
}

/// Hand-made history two years old: two stations' hours and a unit's minutes. The daily AQI under
/// each edition and the unit's corrected hour are computed here from the standards' text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_the_lateness_window_is_re_evaluated_as_the_standards_say() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await;
    let addr = running.http_addr;
    // Station 1: PM2.5 66, PM10 100; station 2: PM2.5 74, PM10 120, every hour of 2020-03-01
    // (hours labelled 01:00 … 24:00); both: SO2 10, NO2 30, CO 0.8, O3 80. On 2020-03-02 both
    // stations: PM2.5 30, PM10 40, the rest the same.
    let csv = two_station_days_csv();
    let mapping = "period = \"1h\"\ntime_is = \"end\"\n";
    let (code, s) = post_form(addr, "stations.csv", mapping, csv.into_bytes()).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["stored"], 2 * 24 * 2 * 6, "{s}");
    assert!(s["hours_queued"].as_u64().unwrap() >= 96, "{s}");

    // 大唐 #1, 2020-03-01 10:00–10:59 Beijing time, one minute mean a line: raw SO2 30,
    // NOx 32, PM 4 mg/m3 at O2 9 %. HJ 75: corrected = raw × (21 − 6)/(21 − 9) = raw × 1.25:
    // SO2 37.5 (over the ultra-low 35), NOx 40, PM 5.
    let mut lp = String::new();
    for m in 0..60 {
        let t = cst("2020-03-01 10:00") + m * 60_000;
        lp.push_str(&format!(
            "cems,site=datang,sensor=dt-1-cems,period=1min so2=30,nox=32,pm=4,o2=9,flue_flow=1000000 {t}\n"
        ));
    }
    let (code, s) = post_file(addr, "name=dt1.lp&precision=ms", lp, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["stored"], 60 * 5, "{s}");
    wait_reevaluated(addr).await;

    let hour = get(addr, "/api/v1/cems/hourly?unit=dt-1&from=2020-03-01T11:00:00%2B08:00&to=2020-03-01T11:00:00%2B08:00").await;
    let so2 = &hour["results"][0]["pollutants"]["SO2"];
    assert_eq!(so2["valid_minutes"], 60, "{hour}");
    assert!(
        (so2["corrected"].as_f64().unwrap() - 37.5).abs() < 1e-9,
        "{so2}"
    );
    assert_eq!(so2["exceeded"], true);
    let nox = &hour["results"][0]["pollutants"]["NOx"];
    assert!(
        (nox["corrected"].as_f64().unwrap() - 40.0).abs() < 1e-9,
        "{nox}"
    );
    assert_eq!(nox["exceeded"], false);

    // The district's 2020-03-01: PM2.5 (66+74)/2 = 70, PM10 (100+120)/2 = 110.
    // HJ 633-2012 Table 1: PM2.5 IAQI = 50 + 50·(70−35)/(75−35) = 93.75 → 94; PM10 = 50 +
    // 50·(110−50)/(150−50) = 80; O3 8h 80 → 40; NO2 30 → 37.5 → 38; CO 0.8 → 20; SO2 10 → 10;
    // O3 1h 80 → 25. AQI 94, grade II, primary PM2.5.
    // HJ 633-2026 (PM2.5 100 at 60, PM10 100 at 120): PM2.5 = 100 + 50·(70−60)/(115−60) =
    // 109.09 → 110; PM10 = 50 + 50·(110−50)/(120−50) = 92.86 → 93. AQI 110, grade III.
    // 2020-03-02: PM2.5 30 → 50·30/35 = 42.86 → 43 under both, the largest: grade I under both.
    for (ed, aqi, grade) in [("HJ633-2012", 94, "II"), ("HJ633-2026", 110, "III")] {
        let v = get(
            addr,
            &format!(
                "/api/v1/air/daily?station=district&from=2020-03-01&to=2020-03-01&standard={ed}"
            ),
        )
        .await;
        let a = &v["results"][0]["aqi"];
        assert_eq!(
            (a["aqi"].as_u64(), a["grade"].as_str()),
            (Some(aqi), Some(grade)),
            "{ed}: {v}"
        );
        assert_eq!(
            a["primary_pollutants"],
            serde_json::json!(["PM2.5"]),
            "{ed}"
        );
    }
    let cmp = get(
        addr,
        "/api/v1/compliance/compare?from=2020-03-01&to=2020-03-02",
    )
    .await;
    assert_eq!(cmp["days"], 2, "{cmp}");
    assert_eq!(
        (
            cmp["editions"][0]["good_days"].as_u64(),
            cmp["editions"][1]["good_days"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(cmp["editions"][1]["good_rate_percent"], 50.0);
    let changed: Vec<&str> = cmp["changed_days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["day"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["2020-03-01"], "{cmp}");
    assert_eq!(cmp["changed_days"][0]["editions"][1]["aqi"], 110);
    running.shutdown().await;
}

/// An upload cut off half-way: what was durable stays, the job says where it stopped, and the
/// same file (same digest) goes on after that row; in the end each value is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_after_its_last_durable_row() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path())).await;
    let addr = running.http_addr;
    let db = running.db_path.clone();
    // 12,000 minutes of one water analyser (COD, NH3-N): 24,000 values.
    let mut csv = String::from("time,COD,NH3-N\n");
    let t0 = cst("2026-10-01 00:00");
    for m in 0..12_000i64 {
        let t = chrono::DateTime::from_timestamp_millis(t0 + m * 60_000).unwrap();
        csv.push_str(&format!(
            "{},{}.5,0.{}\n",
            t.to_rfc3339(),
            20 + m % 10,
            m % 9 + 1
        ));
    }
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(csv.as_bytes()));
    // The first 60 % of the file, then the connection drops: a raw request that announces the
    // whole length and closes half-way.
    let query = format!("name=analyser.csv&sensor=wwtp-inlet-quality&key={key}");
    {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/v1/import?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            csv.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&csv.as_bytes()[..csv.len() * 6 / 10])
            .await
            .unwrap();
        sock.flush().await.unwrap();
        // Closed once the daemon has read what was sent (its job has moved past row 0).
        eventually(30, "the daemon reading the upload", || async move {
            let v = get(addr, "/api/v1/imports").await;
            (v["imports"][0]["rows"].as_u64().unwrap_or(0) > 0).then_some(())
        })
        .await;
        drop(sock);
    }
    let job = eventually(30, "the cut-off import recorded as failed", || async move {
        let v = get(addr, "/api/v1/imports").await;
        let j = v["imports"][0].clone();
        (j["state"] == "failed").then_some(j)
    })
    .await;
    let position = job["position"].as_u64().unwrap();
    assert!(position > 0, "{job}");
    // Every value the job counts as stored is durable, and reaches the store.
    let stored_first = job["stored"].as_u64().unwrap() as i64;
    let d2 = db.clone();
    eventually(60, "the first run's values in the store", || {
        let db = d2.clone();
        async move { (count(&db, "wwtp-inlet-quality") == stored_first).then_some(()) }
    })
    .await;
    // Two values a row: the rows up to `position` are all among them.
    assert!(stored_first as u64 >= 2 * position, "{job}");

    // The whole file again, with its digest: rows up to `position` are skipped.
    let (code, s) = post_file(addr, &query, csv.clone(), OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["resumed_after_row"].as_u64(), Some(position), "{s}");
    assert_eq!(s["already_imported"].as_u64(), Some(position));
    assert_eq!(s["rows"], 12_000);
    // Rows after `position` that the first run had stored already are duplicates, not rewritten.
    assert_eq!(
        s["stored"].as_u64().unwrap() + s["duplicates"].as_u64().unwrap(),
        2 * (12_000 - position),
        "{s}"
    );
    let d2 = db.clone();
    eventually(60, "each value stored once", || {
        let db = d2.clone();
        async move { (count(&db, "wwtp-inlet-quality") == 24_000).then_some(()) }
    })
    .await;
    // Finished now: the same file again is recognised, and the CLI can ask before sending it.
    let (_, again) = post_file(addr, &query, csv, OPERATOR).await;
    assert_eq!(again["state"], "already_imported", "{again}");
    let k = get(addr, &format!("/api/v1/imports/key/{key}")).await;
    assert_eq!(k["already"]["state"], "already_imported", "{k}");
    assert_eq!(k["already"]["rows"], 12_000);
    let other = get(addr, &format!("/api/v1/imports/key/{}", "0".repeat(64))).await;
    assert!(other["already"].is_null(), "{other}");
    running.shutdown().await;
}

/// Into VictoriaMetrics (a real `/api/v2/write` server), read back through its export API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_reach_victoria_metrics_through_the_same_writer() {
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.store.kind = enviromon::config::StoreKind::Influxdb;
    cfg.store.influxdb.url = format!("http://127.0.0.1:{}", vm.port);
    cfg.store.influxdb.token = Some(enviromon::config::Secret::new("t"));
    let running = start(cfg).await;
    let addr = running.http_addr;
    let csv = "time,sensor,quantity,value\n\
        2025-06-01T00:00:00Z,jianhe-quality,DO,7.25\n\
        2025-06-01T01:00:00Z,jianhe-quality,DO,7.5\n";
    let (code, s) = post_file(addr, "name=river.csv", csv, OPERATOR).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["stored"], 2);
    let port = vm.port;
    let series = eventually(30, "imported readings in VictoriaMetrics", || async move {
        let s = vm_export(port, r#"{__name__="water_do",sensor="jianhe-quality"}"#).await;
        let n: usize = s.iter().map(|x| x.values.len()).sum();
        (n >= 2).then_some(s)
    })
    .await;
    let mut values: Vec<f64> = series.iter().flat_map(|s| s.values.clone()).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [7.25, 7.5]);
    running.shutdown().await;
}
