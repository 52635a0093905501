//! Sensor registration end to end: the API and the `enviromon sensors` CLI against a running daemon
//! with Mosquitto and a simulated Modbus device — applied without restart, validated with field
//! paths, authorised by role, audited.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use enviromon::api::auth::hash_token;
use enviromon::config::ApiToken;
use enviromon::daemon;
use enviromon::demo::modbus_sim::{self, Sim};
use enviromon::ingest::modbus::decode::{DataType, WordOrder};
use enviromon::ingest::modbus::profile::RegisterKind;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TECH: &str = "tech-token-123";
const VIEWER: &str = "viewer-token-456";
const OPERATOR: &str = "operator-token-789";

async fn start(dir: &std::path::Path, mqtt: u16, id: &str) -> daemon::Running {
    let mut cfg = daemon_config(dir, mqtt, id);
    cfg.api.tokens = vec![
        ApiToken {
            name: "field-tech".into(),
            role: enviromon::config::Role::Technician,
            sha256: hash_token(TECH),
        },
        ApiToken {
            name: "viewer".into(),
            role: enviromon::config::Role::Viewer,
            sha256: hash_token(VIEWER),
        },
        ApiToken {
            name: "duty-operator".into(),
            role: enviromon::config::Role::Operator,
            sha256: hash_token(OPERATOR),
        },
    ];
    cfg.validate().unwrap();
    daemon::start(cfg).await.unwrap()
}

async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn water_sensor(id: &str, port: u16, unit: u8) -> Value {
    json!({
        "id": id, "site": "jianxi-wwtp", "name_zh": "新水质仪", "name_en": "new analyser", "domain": "water", "protocol": "modbus",
        "modbus": {"transport": "tcp", "address": format!("127.0.0.1:{port}"), "unit_id": unit, "profile": "generic-water-analyzer", "interval": "500ms", "timeout": "300ms"},
        "channels": [{"quantity": "COD"}, {"quantity": "NH3-N"}, {"quantity": "TP"}, {"quantity": "TN"}, {"quantity": "pH"}, {"quantity": "water_temp"}]
    })
}

fn count(db: &std::path::Path, sensor: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor = ?1",
        [sensor],
        |r| r.get(0),
    )
    .unwrap()
}

async fn modbus_device() -> (Sim, u16, CancellationToken) {
    let sim = Sim::default();
    for (i, v) in [42.5, 1.25, 0.3, 11.0, 7.1, 15.5].iter().enumerate() {
        sim.set(
            5,
            RegisterKind::Input,
            (i * 2) as u16,
            *v,
            DataType::F32,
            WordOrder::ABCD,
        );
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(l, sim.clone(), stop.clone()));
    (sim, port, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_modbus_sensor_is_polled_within_one_interval_without_restart() {
    let broker = mosquitto();
    let (_sim, port, stop) = modbus_device().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-modbus").await;
    let addr = running.http_addr;
    let (status, body) = post(
        addr,
        "/api/v1/sensors",
        Some(TECH),
        water_sensor("wwtp-new-cod", port, 5),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let registered = std::time::Instant::now();
    let db = running.db_path.clone();
    eventually(5, "its readings stored", || async {
        (count(&db, "wwtp-new-cod") >= 6).then_some(())
    })
    .await;
    // First poll jittered within the 500 ms interval, plus the write: well inside 2 s.
    assert!(
        registered.elapsed() < Duration::from_secs(3),
        "{:?}",
        registered.elapsed()
    );
    let latest = get_json(addr, "/api/v1/readings/latest?sensor=wwtp-new-cod").await;
    let cod = latest["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["quantity"] == "COD")
        .unwrap()
        .clone();
    assert_eq!(
        (cod["value"].as_f64(), cod["source"].as_str()),
        (Some(42.5), Some("modbus"))
    );
    let devices = get_json(addr, "/api/v1/modbus/devices").await;
    assert!(devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["sensor"] == "wwtp-new-cod" && d["up"] == true));
    let metrics = get_text(addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, "enviromon_modbus_up{device=\"wwtp-new-cod\"}"),
        1.0,
        "visible in /metrics"
    );
    // Live test through the API: the device read now.
    let (status, t) = post(
        addr,
        "/api/v1/sensors/wwtp-new-cod/test",
        Some(TECH),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert!(t["values"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["quantity"] == "pH" && v["value"] == 7.1));
    // Retired: polling stops.
    let (status, _) = post(
        addr,
        "/api/v1/sensors/wwtp-new-cod/retire",
        Some(TECH),
        json!({"reason": "replaced"}),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let n = count(&db, "wwtp-new-cod");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&db, "wwtp-new-cod"),
        n,
        "no more polls after retiring"
    );
    assert!(n > 0, "history kept");
    running.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_sensor_is_mapped_at_once_and_retired_messages_are_dead_lettered() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-mqtt").await;
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    // A topic outside `enviromon/#`: the daemon subscribes to it.
    let sensor = json!({"id": "lab-cod-1", "site": "jianxi-wwtp", "name_zh": "化验室COD", "name_en": "lab COD", "domain": "water",
        "protocol": "mqtt", "topic": "plant/lab/cod-1", "channels": [{"quantity": "COD"}]});
    let (status, body) = post(addr, "/api/v1/sensors", Some(TECH), sensor).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = Publisher::connect(broker.port, "pub-reg-mqtt").await;
    p.publish(
        "plant/lab/cod-1",
        json!({"quantity": "COD", "value": 23.5}).to_string(),
    )
    .await;
    p.wait_acked().await;
    let db = running.db_path.clone();
    eventually(10, "stored", || async {
        (count(&db, "lab-cod-1") == 1).then_some(())
    })
    .await;
    let (status, _) = post(
        addr,
        "/api/v1/sensors/lab-cod-1/retire",
        Some(TECH),
        json!({"reason": "lab closed"}),
    )
    .await;
    assert_eq!(status, 200);
    p.publish(
        "plant/lab/cod-1",
        json!({"quantity": "COD", "value": 24.0}).to_string(),
    )
    .await;
    p.wait_acked().await;
    eventually(10, "dead-lettered as retired", || async {
        let recs =
            enviromon::pipeline::deadletter::read_all(&running.deadletter_path).unwrap_or_default();
        recs.iter()
            .any(|r| r.reason == "retired_sensor" && r.topic == "plant/lab/cod-1")
            .then_some(())
    })
    .await;
    assert_eq!(
        count(&db, "lab-cod-1"),
        1,
        "nothing stored after retiring; history kept"
    );
    let s = get_json(addr, "/api/v1/sensors/lab-cod-1").await;
    assert_eq!(
        (s["status"].as_str(), s["status_reason"].as_str()),
        (Some("retired"), Some("lab closed"))
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registrations_are_refused_with_their_field_paths_and_nothing_is_applied() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-invalid").await;
    let addr = running.http_addr;
    let before = get_json(addr, "/api/v1/sensors").await["sensors"]
        .as_array()
        .unwrap()
        .len();
    let base = || json!({"id": "new-1", "site": "datang", "unit": "dt-1", "name_zh": "新", "name_en": "new", "domain": "cems", "protocol": "mqtt", "channels": [{"quantity": "SO2"}]});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let modbus = |unit: u8, profile: &str| {
        let mut b = water_sensor("new-mb", 5020, unit);
        b["modbus"]["profile"] = json!(profile);
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("id", json!("dt-1-cems")),
            "id",
            "sensor \"dt-1-cems\" already exists",
        ),
        (
            with("id", json!("Bad Id!")),
            "id",
            "\"Bad Id!\" may only contain a-z, 0-9, - and _ (1–64 characters)",
        ),
        (
            with("site", json!("nowhere")),
            "site",
            "\"nowhere\" does not exist",
        ),
        (
            with("unit", json!("dt-9")),
            "unit",
            "\"dt-9\" does not exist",
        ),
        (
            with("channels", json!([{"quantity": "Hg"}])),
            "channels[0].quantity",
            "\"Hg\" is not in the quantity catalogue",
        ),
        (
            with(
                "channels",
                json!([{"quantity": "SO2"}, {"quantity": "NOx", "unit": "mg/L"}]),
            ),
            "channels[1].unit",
            "cannot convert mg/m3 to mg/L for NOx",
        ),
        (
            with("channels", json!([])),
            "channels",
            "must list at least one quantity",
        ),
        (
            with("topic", json!("enviromon/datang/dt-1-cems")),
            "topic",
            "already used by sensor dt-1-cems",
        ),
        (
            with("topic", json!("enviromon/+/x")),
            "topic",
            "\"enviromon/+/x\" must be an exact topic (no + or #)",
        ),
        (
            modbus(9, "hach-cod-x"),
            "modbus.profile",
            "\"hach-cod-x\" does not exist",
        ),
        (
            modbus(2, "generic-water-analyzer"),
            "modbus.unit_id",
            "2 on tcp://127.0.0.1:5020 is already used by sensor wwtp-outlet-quality",
        ),
        (
            with(
                "channels",
                json!([{"quantity": "SO2", "min": 10, "max": 5}]),
            ),
            "channels[0].min",
            "10 must be below max 5",
        ),
        (
            with("channels", json!("SO2")),
            "channels",
            "invalid type: string \"SO2\", expected a sequence",
        ),
        (
            with("hj212", json!({"mn": "41030500000000000000A001"})),
            "hj212.mn",
            "\"41030500000000000000A001\" is already used by sensor sy-1-cems",
        ),
        (
            with("protocol", json!("hj212")),
            "hj212",
            "an HJ 212 sensor needs hj212 = { mn = \"…\" }",
        ),
    ];
    for (body, path, message) in &cases {
        let (status, v) = post(addr, "/api/v1/sensors", Some(TECH), body.clone()).await;
        assert_eq!(status, 422, "{path}: {v}");
        let errs = v["error"]["errors"].as_array().unwrap();
        assert!(
            errs.iter()
                .any(|e| e["path"] == *path && e["message"] == *message),
            "expected {path}: {message}\ngot {v}"
        );
    }
    // Several mistakes at once are all reported.
    let mut many = base();
    many["site"] = json!("nowhere");
    many["channels"] = json!([{"quantity": "Hg"}]);
    let (status, v) = post(addr, "/api/v1/sensors", Some(TECH), many).await;
    assert_eq!(
        (status, v["error"]["errors"].as_array().unwrap().len()),
        (422, 2)
    );
    // Mistakes serde finds are all reported too, each with its path: two missing fields, an
    // unknown one and a wrong type, in one answer.
    let mut shape = base();
    let obj = shape.as_object_mut().unwrap();
    obj.remove("name_zh");
    obj.remove("name_en");
    obj.insert("colour".into(), json!("red"));
    obj.insert("illustrative".into(), json!("yes"));
    let (status, v) = post(addr, "/api/v1/sensors", Some(TECH), shape).await;
    assert_eq!(status, 422);
    let mut paths: Vec<&str> = v["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["colour", "illustrative", "name_en", "name_zh"],
        "{v}"
    );
    // A profile with an impossible address.
    let profile = json!({"id": "hach-cod-x", "name_zh": "x", "name_en": "x", "values": [
        {"quantity": "COD", "register": "input", "address": 0, "type": "f32"},
        {"quantity": "TP", "register": "input", "address": 2, "type": "f32"},
        {"quantity": "TN", "register": "input", "address": 70000, "type": "f32"}]});
    let (status, v) = post(addr, "/api/v1/profiles", Some(TECH), profile).await;
    assert_eq!(status, 422);
    assert_eq!(
        v["error"]["errors"][0],
        json!({"path": "values[2].address", "message": "70000 is outside 0..=65535"})
    );
    // A body's own problems keep their HTTP meaning: broken JSON is 400, no JSON content type is
    // 415; neither is a registration error (422). A body declared over the 2 MiB limit is 413
    // before any of it is read: the request's head alone gets the answer (sent raw, so no client
    // is still writing the 10 MiB when the server answers).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/v1/sensors HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TECH}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            10 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("request body too large"), "{answer}");
    }
    let http = reqwest::Client::new();
    let raw = |body: Vec<u8>, json: bool| {
        let mut r = http
            .post(format!("http://{addr}/api/v1/sensors"))
            .bearer_auth(TECH)
            .body(body);
        if json {
            r = r.header("content-type", "application/json");
        }
        r.send()
    };
    assert_eq!(
        raw(b"{\"id\": ".to_vec(), true).await.unwrap().status(),
        400
    );
    assert_eq!(
        raw(base().to_string().into_bytes(), false)
            .await
            .unwrap()
            .status(),
        415
    );
    assert_eq!(
        get_json(addr, "/api/v1/sensors").await["sensors"]
            .as_array()
            .unwrap()
            .len(),
        before,
        "nothing half-applied"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_changes_are_audited() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-auth").await;
    let addr = running.http_addr;
    let sensor = json!({"id": "aq-extra", "site": "aq-jianxi-1", "name_zh": "加测", "name_en": "extra", "domain": "air", "protocol": "mqtt", "channels": [{"quantity": "PM2.5"}]});
    assert_eq!(
        post(addr, "/api/v1/sensors", None, sensor.clone()).await.0,
        401,
        "no token"
    );
    assert_eq!(
        post(addr, "/api/v1/sensors", Some("wrong"), sensor.clone())
            .await
            .0,
        401,
        "unknown token"
    );
    let (status, v) = post(addr, "/api/v1/sensors", Some(VIEWER), sensor.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(
        v["error"]["message"],
        "viewer is a viewer; this needs the technician role"
    );
    assert_eq!(
        post(addr, "/api/v1/sensors", Some(TECH), sensor).await.0,
        201
    );
    assert_eq!(
        reqwest::get(format!("http://{addr}/api/v1/sensors/aq-extra"))
            .await
            .unwrap()
            .status(),
        200,
        "reads are open"
    );
    // The audit log: operators only; it names who did what, with before and after.
    assert_eq!(
        reqwest::Client::new()
            .get(format!("http://{addr}/api/v1/audit"))
            .bearer_auth(TECH)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let audit: Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/audit"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &audit["entries"][0];
    assert_eq!(
        (
            e["actor"].as_str(),
            e["action"].as_str(),
            e["target"].as_str()
        ),
        (Some("field-tech"), Some("register"), Some("aq-extra"))
    );
    assert!(e["before"].is_null() && e["after"]["id"] == "aq-extra");
    // Silences need an operator.
    assert_eq!(
        post(
            addr,
            "/api/v1/silences",
            Some(TECH),
            json!({"matchers": {"alertname": "x"}, "duration": "1h", "comment": "test"})
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            addr,
            "/api/v1/silences",
            Some(OPERATOR),
            json!({"matchers": {"alertname": "x"}, "duration": "1h", "comment": "test"})
        )
        .await
        .0,
        201
    );
    // No token ever reaches the log.
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensors_cli_adds_tests_and_sets_maintenance_against_a_running_daemon() {
    let broker = mosquitto();
    let (_sim, port, stop) = modbus_device().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-cli").await;
    let server = format!("http://{}", running.http_addr);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TECH}\n")).unwrap();
    let file = dir.path().join("sensor.toml");
    std::fs::write(
        &file,
        format!(
            "[[sensor]]\nid = \"wwtp-cli-cod\"\nsite = \"jianxi-wwtp\"\nname_zh = \"现场新增\"\nname_en = \"added in the field\"\n\
             domain = \"water\"\nprotocol = \"modbus\"\n\
             modbus = {{ transport = \"tcp\", address = \"127.0.0.1:{port}\", unit_id = 5, profile = \"generic-water-analyzer\", interval = \"1s\" }}\n\
             channels = [{{ quantity = \"COD\" }}, {{ quantity = \"NH3-N\" }}, {{ quantity = \"TP\" }}, {{ quantity = \"TN\" }}, {{ quantity = \"pH\" }}, {{ quantity = \"water_temp\" }}]\n"
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| enviromon_cli("sensors", args, &server, &token_file);
    let (code, out, err) = cli(&["add", "--file", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("registered: wwtp-cli-cod"), "{out}");
    let (code, out, _) = cli(&["test", "wwtp-cli-cod"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("COD") && out.contains("42.5"), "{out}");
    let (code, out, _) = cli(&[
        "maintenance",
        "wwtp-cli-cod",
        "--on",
        "--reason",
        "calibration",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("maintenance"), "{out}");
    // Readings are now flagged M.
    let addr = running.http_addr;
    eventually(10, "readings flagged M", || async {
        let v = get_json(addr, "/api/v1/readings/latest?sensor=wwtp-cli-cod").await;
        v["readings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["flag"] == "M")
            .then_some(())
    })
    .await;
    let (code, out, _) = cli(&["list", "--json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == "wwtp-cli-cod" && s["status"] == "maintenance"));
    let (code, out, _) = cli(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("wwtp-cli-cod") && l.contains("maintenance")),
        "{out}"
    );
    let (code, out, _) = cli(&["maintenance", "wwtp-cli-cod", "--off"]);
    assert_eq!((code, out.contains("active")), (Some(0), true), "{out}");
    // `sensors edit`: a merge patch from --set; the nested address changes, the rest stays.
    let (code, out, err) = cli(&[
        "edit",
        "wwtp-cli-cod",
        "--set",
        "modbus.interval=2s",
        "--set",
        "name_en=COD (moved)",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let s = get_json(addr, "/api/v1/sensors/wwtp-cli-cod").await;
    assert_eq!(
        (
            s["modbus"]["interval"].as_str(),
            s["modbus"]["unit_id"].as_u64(),
            s["name_en"].as_str()
        ),
        (Some("2s"), Some(5), Some("COD (moved)")),
        "{s}"
    );
    // A wrong value is refused with its path, in words.
    let (code, _, err) = cli(&["edit", "wwtp-cli-cod", "--set", "modbus.unit_id=300"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("modbus.unit_id"), "{err}");
    // `sites add` and `sites edit` (the same client, its own command).
    let site_file = dir.path().join("site.toml");
    std::fs::write(&site_file, "id = \"aq-jianxi-4\"\nname_zh = \"涧西空气站4号\"\nname_en = \"Jianxi air station 4\"\nkind = \"air_station\"\n").unwrap();
    let sites = |args: &[&str]| enviromon_cli("sites", args, &server, &token_file);
    let (code, out, err) = sites(&["add", "--file", site_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = sites(&[
        "edit",
        "aq-jianxi-4",
        "--set",
        "monitored=[\"PM2.5\",\"PM10\"]",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = sites(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("aq-jianxi-4") && l.contains("air_station")),
        "{out}"
    );
    let v = get_json(addr, "/api/v1/sites").await;
    let site = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "aq-jianxi-4")
        .unwrap()
        .clone();
    assert_eq!(site["monitored"], json!(["PM2.5", "PM10"]));
    // The token from the environment, as the README's walkthrough does it.
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args([
            "sensors",
            "retire",
            "wwtp-cli-cod",
            "--reason",
            "replaced",
            "--server",
            &server,
        ])
        .env("ENVIROMON_TOKEN", TECH)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("retired"));
    let (code, out, _) = cli(&["show", "wwtp-cli-cod"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"status\": \"retired\""), "{out}");
    // A mistake prints every error with its path and exits non-zero.
    std::fs::write(&file, "id = \"x y\"\nsite = \"nowhere\"\nname_zh = \"x\"\nname_en = \"x\"\ndomain = \"air\"\nprotocol = \"mqtt\"\nchannels = []\n").unwrap();
    let (code, _, err) = cli(&["add", "--file", file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("- id:")
            && err.contains("- site: \"nowhere\" does not exist")
            && err.contains("- channels: must list at least one quantity"),
        "{err}"
    );
    running.shutdown().await;
    stop.cancel();
}

/// Publish `payload` on `topic` every 200 ms until `done` resolves (a dry run listens from the
/// moment its request arrives, so the message is sent until it has been heard), and give its result.
async fn publish_until<T>(
    p: &mut Publisher,
    topic: &str,
    payload: &str,
    done: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(done);
    loop {
        p.publish(topic, payload.to_string()).await;
        tokio::select! {
            r = &mut done => return r,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn patch(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .patch(format!("http://{addr}{path}"))
        .bearer_auth(TECH)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Issue 18's three mistakes, refused with a clear message instead of corrupting data, and a new
/// air station added at run time:
/// - an ambient analyser registered without units stores µg/m³ (not the flue-gas mg/m³);
/// - a range wider than an ambient analyser reports is refused at registration, and a value
///   outside it at ingest (dead-lettered, shown by `GET /api/v1/deadletter?sensor=`);
/// - a shipped profile cannot be overwritten;
/// - PATCH is a JSON merge patch: `{"modbus": {"address": …}}` keeps the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_protects_the_district_figures() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-protect").await;
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    // A sensor at a station that does not exist yet: refused, then the station is added.
    let sensor = json!({"id": "aq-3-analyser", "site": "aq-jianxi-3", "name_zh": "3号站分析仪", "name_en": "station 3 analysers",
        "domain": "air", "protocol": "mqtt", "channels": [{"quantity": "SO2"}, {"quantity": "NO2"}, {"quantity": "CO"}]});
    let (status, body) = post(addr, "/api/v1/sensors", Some(TECH), sensor.clone()).await;
    assert_eq!(
        (status, body["error"]["errors"][0]["path"].as_str()),
        (422, Some("site")),
        "{body}"
    );
    let site = json!({"id": "aq-jianxi-3", "name_zh": "涧西空气站3号", "name_en": "Jianxi air station 3", "kind": "air_station"});
    let (status, body) = post(addr, "/api/v1/sites", Some(TECH), site).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = patch(
        addr,
        "/api/v1/sites/aq-jianxi-3",
        json!({"note": "新建站 / new station"}),
    )
    .await;
    assert_eq!(
        (status, body["note"].as_str(), body["kind"].as_str()),
        (200, Some("新建站 / new station"), Some("air_station")),
        "{body}"
    );
    // A range no ambient analyser reports: refused with its path, nothing registered.
    let mut wide = sensor.clone();
    wide["channels"][0]["max"] = json!(100000);
    let (status, body) = post(addr, "/api/v1/sensors", Some(TECH), wide).await;
    assert_eq!(status, 422, "{body}");
    let e = &body["error"]["errors"][0];
    assert_eq!(e["path"], "channels[0].max", "{body}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("ambient SO2 analyser reports (10000 ug/m3)"),
        "{body}"
    );
    // Without units: SO2 and NO2 in µg/m³, CO in mg/m³ (GB 3095's units).
    let (status, body) = post(addr, "/api/v1/sensors", Some(TECH), sensor).await;
    assert_eq!(status, 201, "{body}");
    let topic = body["topic"].as_str().unwrap().to_string();
    let mut p = Publisher::connect(broker.port, "pub-reg-protect").await;
    // Ingest: SO2 20 µg/m³ and CO 0.8 mg/m³ are stored as such; NO2 20,000 is more than any ambient
    // analyser reports (10,000 µg/m³): refused with its reason, the others kept.
    let msg = json!([{"quantity": "SO2", "value": 20}, {"quantity": "CO", "value": 0.8}, {"quantity": "NO2", "value": 20000}]).to_string();
    let latest = publish_until(
        &mut p,
        &topic,
        &msg,
        eventually(20, "stored in µg/m³", || async {
            let v = get_json(addr, "/api/v1/readings/latest?sensor=aq-3-analyser").await;
            let rs = v["readings"].as_array().cloned().unwrap_or_default();
            (rs.len() >= 2).then_some(rs)
        }),
    )
    .await;
    let of = |q: &str| {
        latest
            .iter()
            .find(|r| r["quantity"] == q)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        (of("SO2")["value"].as_f64(), of("SO2")["unit"].as_str()),
        (Some(20.0), Some("ug/m3"))
    );
    assert_eq!(
        (of("CO")["value"].as_f64(), of("CO")["unit"].as_str()),
        (Some(0.8), Some("mg/m3"))
    );
    assert!(of("NO2").is_null(), "NO2 refused: {latest:?}");
    let refusals = eventually(10, "refusal listed", || async {
        let v = get_json(addr, "/api/v1/deadletter?sensor=aq-3-analyser").await;
        let rs = v["records"].as_array().cloned().unwrap_or_default();
        rs.into_iter().find(|r| r["reason"] == "out_of_range")
    })
    .await;
    assert!(
        refusals["detail"]
            .as_str()
            .unwrap()
            .contains("20000 ug/m3 is outside the plausible range 0..=10000"),
        "{refusals}"
    );
    assert!(
        refusals["payload"].as_str().unwrap().contains("20000"),
        "{refusals}"
    );
    // A shipped profile is never replaced; the answer names the devices using it.
    let profile = json!({"id": "generic-water-analyzer", "name_zh": "改", "name_en": "changed", "values": [
        {"quantity": "COD", "register": "input", "address": 0, "type": "f32"}]});
    let (status, body) = post(addr, "/api/v1/profiles", Some(TECH), profile).await;
    assert_eq!(status, 422, "{body}");
    let m = body["error"]["errors"][0]["message"].as_str().unwrap();
    assert!(
        m.contains("is shipped with enviromon and is never replaced")
            && m.contains("wwtp-outlet-quality"),
        "{m}"
    );
    // JSON merge patch (RFC 7396): the nested address changes, transport and profile stay.
    let (_sim, port, stop) = modbus_device().await;
    let (status, body) = post(
        addr,
        "/api/v1/sensors",
        Some(TECH),
        water_sensor("wwtp-new-cod", port, 5),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = patch(
        addr,
        "/api/v1/sensors/wwtp-new-cod",
        json!({"modbus": {"address": "10.20.0.15:502"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["modbus"]["address"].as_str(),
            body["modbus"]["transport"].as_str(),
            body["modbus"]["profile"].as_str()
        ),
        (
            Some("10.20.0.15:502"),
            Some("tcp"),
            Some("generic-water-analyzer")
        )
    );
    stop.cancel();
    running.shutdown().await;
}

/// A dry run tests a device before anything is registered: each value decoded with its unit, or
/// exactly why it is refused; a wrong unit id behind a gateway named as exception 0x0B with what
/// to check; a first read of all zeros not called OK; an MQTT topic listened to and its message
/// decoded against the sensor-to-be. Nothing is registered or stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reads_before_anything_is_committed() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, "enviromon-reg-dry").await;
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let (sim, port, stop) = modbus_device().await;
    sim.set_gateway(true);
    // The right unit id (5): every value decoded in its unit; OK.
    let (status, t) = post(
        addr,
        "/api/v1/sensors/dry-run",
        Some(TECH),
        water_sensor("dry-cod", port, 5),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["ok"], true, "{t}");
    let cod = t["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["quantity"] == "COD")
        .unwrap()
        .clone();
    assert_eq!(
        (
            cod["value"].as_f64(),
            cod["unit"].as_str(),
            cod["ok"].as_bool()
        ),
        (Some(42.5), Some("mg/L"), Some(true)),
        "{t}"
    );
    // A wrong unit id: the gateway answers 0x0B; the technician is told to check the unit id.
    let (status, t) = post(
        addr,
        "/api/v1/sensors/dry-run",
        Some(TECH),
        water_sensor("dry-cod", port, 6),
    )
    .await;
    let ex = if status == 502 {
        t["explanation"].clone()
    } else {
        t["exceptions"][0]["explanation"].clone()
    };
    assert_eq!(ex["code"], 0x0B, "{status} {t}");
    assert!(
        ex["hint_en"]
            .as_str()
            .unwrap()
            .contains("check the unit id"),
        "{t}"
    );
    // A device that reads all zeros (registers set, nothing measured yet): not OK, and why.
    for i in 0..6u16 {
        sim.set(
            7,
            RegisterKind::Input,
            i * 2,
            0.0,
            DataType::F32,
            WordOrder::ABCD,
        );
    }
    let (status, t) = post(
        addr,
        "/api/v1/sensors/dry-run",
        Some(TECH),
        water_sensor("dry-cod", port, 7),
    )
    .await;
    assert_eq!((status, t["ok"].as_bool()), (200, Some(false)), "{t}");
    assert!(
        t["warnings"][0]
            .as_str()
            .unwrap()
            .contains("every value read 0"),
        "{t}"
    );
    // Field errors come back as a registration's would, with their paths.
    let mut bad = water_sensor("dry-cod", port, 5);
    bad["modbus"]["address"] = json!("no-port");
    let (status, t) = post(addr, "/api/v1/sensors/dry-run", Some(TECH), bad).await;
    assert_eq!(
        (status, t["error"]["errors"][0]["path"].as_str()),
        (422, Some("modbus.address")),
        "{t}"
    );
    // MQTT: the topic is listened to; a value with a unit that cannot be converted is refused
    // with its reason, the other decoded.
    let sensor = json!({"id": "dry-mqtt", "site": "jianxi-wwtp", "name_zh": "试运行", "name_en": "dry run", "domain": "water",
        "protocol": "mqtt", "topic": "enviromon/jianxi-wwtp/dry-mqtt", "channels": [{"quantity": "COD"}, {"quantity": "pH"}]});
    let mut p = Publisher::connect(broker.port, "pub-reg-dry").await;
    let msg = json!([{"quantity": "COD", "value": 31.5}, {"quantity": "pH", "value": 7.2, "unit": "degC"}]).to_string();
    let (status, t) = publish_until(
        &mut p,
        "enviromon/jianxi-wwtp/dry-mqtt",
        &msg,
        post(
            addr,
            "/api/v1/sensors/dry-run?seconds=20",
            Some(TECH),
            sensor,
        ),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["ok"], false, "{t}");
    assert_eq!(
        (
            t["values"][0]["quantity"].as_str(),
            t["values"][0]["value"].as_f64()
        ),
        (Some("COD"), Some(31.5)),
        "{t}"
    );
    assert!(
        t["refusals"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("degC"),
        "{t}"
    );
    // Nothing was registered or stored.
    let r = reqwest::get(format!("http://{addr}/api/v1/sensors/dry-mqtt"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        count(&running.db_path, "dry-cod") + count(&running.db_path, "dry-mqtt"),
        0
    );
    stop.cancel();
    running.shutdown().await;
}
