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
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
            .arg("sensors")
            .args(args)
            .args(["--server", &server, "--token-file"])
            .arg(&token_file)
            .env_remove("ENVIROMON_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
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
