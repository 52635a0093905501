//! Modbus polling against real servers: tokio-modbus's server (the simulated gateway, with fault
//! injection) and pymodbus (a third-party implementation), over Modbus TCP and RTU over TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use enviromon::daemon;
use enviromon::demo::modbus_sim::{self, Sim};
use enviromon::ingest::modbus::decode::{DataType, WordOrder};
use enviromon::ingest::modbus::poller::{read_device, Device};
use enviromon::ingest::modbus::profile::{Profile, RegisterKind, ValueDef};
use enviromon::registry::{ModbusDevice, ModbusTransport};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TYPES: [(&str, DataType, f64); 8] = [
    ("u16", DataType::U16, 54_321.0),
    ("i16", DataType::I16, -12_345.0),
    ("u32", DataType::U32, 3_000_000_001.0),
    ("i32", DataType::I32, -1_999_999_999.0),
    ("u64", DataType::U64, 9_007_199_254_740_000.0),
    ("i64", DataType::I64, -9_007_199_254_740_000.0),
    ("f32", DataType::F32, 28.21),
    ("f64", DataType::F64, -12_345.678_901_25),
];
const ORDERS: [(&str, WordOrder); 4] = [
    ("ABCD", WordOrder::ABCD),
    ("CDAB", WordOrder::CDAB),
    ("BADC", WordOrder::BADC),
    ("DCBA", WordOrder::DCBA),
];

fn python() -> PathBuf {
    let p = std::env::var_os("ENVIROMON_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3")
        });
    assert!(
        p.is_file(),
        "{} is missing: these tests need pymodbus in a virtualenv. Run scripts/test (it creates it), or \
         `python3 -m venv target/test-venv && target/test-venv/bin/pip install pymodbus==3.8.6`.",
        p.display()
    );
    p
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/pymodbus_server.py")
}

/// Every type in every order (plus a bool), 4 registers apart from address 0.
fn spec() -> Vec<(String, DataType, WordOrder, f64, u16)> {
    let mut out = Vec::new();
    let mut addr = 0;
    for (tn, t, v) in TYPES {
        for (on, o) in ORDERS {
            out.push((format!("{tn}/{on}"), t, o, v, addr));
            addr += 4;
        }
    }
    out.push((
        "bool/ABCD".into(),
        DataType::Bool,
        WordOrder::ABCD,
        1.0,
        addr,
    ));
    out
}

fn spec_json(dir: &Path) -> PathBuf {
    let items: Vec<Value> = spec()
        .iter()
        .map(|(name, _, _, v, a)| {
            let (t, o) = name.split_once('/').unwrap();
            json!({"type": t, "order": o, "value": v, "address": a})
        })
        .collect();
    let p = dir.join("spec.json");
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    p
}

fn device(transport: ModbusTransport, port: u16, unit: u8, profile: Profile) -> Device {
    let cfg = ModbusDevice {
        transport,
        address: Some(format!("127.0.0.1:{port}")),
        serial: None,
        unit_id: unit,
        profile: profile.id.clone(),
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        retries: 1,
        max_gap: 8,
        single_reads: false,
    };
    Device::new("test".into(), cfg, profile)
}

fn spec_profile() -> Profile {
    Profile {
        id: "all-types".into(),
        name_zh: "全部类型".into(),
        name_en: "all types".into(),
        description: String::new(),
        values: spec()
            .into_iter()
            .map(|(_, t, o, _, a)| ValueDef {
                quantity: "COD".into(),
                unit: None,
                register: RegisterKind::Holding,
                address: a,
                data_type: t,
                order: o,
                scale: 1.0,
                offset: 0.0,
            })
            .collect(),
        status: None,
    }
}

fn assert_all_decoded(got: &[(usize, f64)], server: &str) {
    let want = spec();
    assert_eq!(got.len(), want.len(), "{server}: every value read");
    for (i, v) in got {
        let (name, _, _, expected, _) = &want[*i];
        assert_eq!(v, expected, "{server}: {name}");
    }
}

struct PyServer(Child);
impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_word_order_decodes_against_tokio_modbus_and_pymodbus() {
    let dir = tempfile::tempdir().unwrap();
    let spec_file = spec_json(dir.path());
    // The register image, computed by Python's struct module (not by enviromon's encoder).
    let out = Command::new(python())
        .arg(script())
        .arg("--dump")
        .arg(&spec_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image: std::collections::BTreeMap<String, u16> =
        serde_json::from_slice(&out.stdout).unwrap();

    // 1. tokio-modbus's server, loaded with that image.
    let sim = Sim::default();
    for (addr, w) in &image {
        sim.set_words(1, RegisterKind::Holding, addr.parse().unwrap(), &[*w]);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let r = read_device(&device(ModbusTransport::Tcp, port, 1, spec_profile()))
        .await
        .unwrap();
    assert_all_decoded(&r.values, "tokio-modbus");

    // 2. pymodbus serving the same image.
    let py_port = free_port();
    let mut child = Command::new(python())
        .arg(script())
        .arg("--serve")
        .arg(py_port.to_string())
        .arg(&spec_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "READY");
    let _guard = PyServer(child);
    let r = eventually(15, "pymodbus answering", || async {
        read_device(&device(ModbusTransport::Tcp, py_port, 1, spec_profile()))
            .await
            .ok()
    })
    .await;
    assert_all_decoded(&r.values, "pymodbus");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_framing_over_tcp() {
    let sim = Sim::default();
    sim.set(
        7,
        RegisterKind::Input,
        0,
        21.5,
        DataType::F32,
        WordOrder::ABCD,
    );
    sim.set(
        7,
        RegisterKind::Input,
        2,
        0.75,
        DataType::F32,
        WordOrder::ABCD,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_rtu_over_tcp(
        listener,
        sim.clone(),
        stop.clone(),
    ));
    let profile =
        enviromon::ingest::modbus::profile::embedded().unwrap()["generic-water-analyzer"].clone();
    let r = read_device(&device(ModbusTransport::RtuOverTcp, port, 7, profile))
        .await
        .unwrap();
    assert!(
        r.values.contains(&(0, 21.5)) && r.values.contains(&(1, 0.75)),
        "{:?}",
        r.values
    );
    // The wrong framing against the same server fails instead of decoding garbage.
    let profile =
        enviromon::ingest::modbus::profile::embedded().unwrap()["generic-water-analyzer"].clone();
    assert!(read_device(&device(ModbusTransport::Tcp, port, 7, profile))
        .await
        .is_err());
    stop.cancel();
}

/// A daemon whose registry has three water analysers behind one simulated gateway (unit ids 1–3).
async fn gateway_daemon(
    dir: &Path,
    gateway_port: u16,
    extra_sensor_fields: &str,
) -> daemon::Running {
    let seeds = dir.join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for (name, text) in enviromon::registry::EMBEDDED_SEEDS {
        if name != "sensors.toml" {
            std::fs::write(seeds.join(name), text).unwrap();
        }
    }
    let mut sensors = String::new();
    for unit in 1..=3 {
        sensors.push_str(&format!(
            "[[sensor]]\nid = \"gw-{unit}\"\nsite = \"jianxi-wwtp\"\nname_zh = \"测试{unit}\"\nname_en = \"test {unit}\"\n\
             domain = \"water\"\nprotocol = \"modbus\"\n\
             modbus = {{ transport = \"tcp\", address = \"127.0.0.1:{gateway_port}\", unit_id = {unit}, profile = \"generic-water-analyzer\", interval = \"300ms\", timeout = \"150ms\"{extra_sensor_fields} }}\n\
             channels = [{{ quantity = \"COD\" }}, {{ quantity = \"NH3-N\" }}, {{ quantity = \"TP\" }}, {{ quantity = \"TN\" }}, {{ quantity = \"pH\" }}, {{ quantity = \"water_temp\" }}]\n\n"
        ));
    }
    std::fs::write(seeds.join("sensors.toml"), sensors).unwrap();
    let mut cfg = daemon_config(dir, 1, "unused");
    cfg.mqtt.enabled = false;
    cfg.registry.seeds_dir = Some(seeds);
    cfg.modbus.reconnect_max = Duration::from_millis(500);
    cfg.modbus.device_backoff_max = Duration::from_secs(1);
    cfg.validate().unwrap();
    daemon::start(cfg).await.unwrap()
}

fn water_sim() -> Sim {
    let sim = Sim::default();
    for unit in 1..=3u8 {
        for (i, v) in [30.0 + unit as f64, 1.5, 0.3, 10.0, 7.2, 16.0]
            .iter()
            .enumerate()
        {
            sim.set(
                unit,
                RegisterKind::Input,
                (i * 2) as u16,
                *v,
                DataType::F32,
                WordOrder::ABCD,
            );
        }
    }
    sim
}

async fn devices(addr: std::net::SocketAddr) -> Value {
    get_json(addr, "/api/v1/modbus/devices").await
}

fn polls(v: &Value, sensor: &str) -> (u64, bool) {
    let d = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sensor"] == sensor)
        .unwrap();
    (d["polls"].as_u64().unwrap(), d["up"].as_bool().unwrap())
}

fn cod_count(db: &Path, sensor: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor = ?1 AND quantity = 'COD'",
        [sensor],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_behind_a_gateway_does_not_stop_the_others_and_comes_back() {
    let sim = water_sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let dir = tempfile::tempdir().unwrap();
    let running = gateway_daemon(dir.path(), port, "").await;
    let addr = running.http_addr;
    eventually(10, "all three up", || async {
        let v = devices(addr).await;
        (1..=3)
            .all(|u| polls(&v, &format!("gw-{u}")).1)
            .then_some(())
    })
    .await;
    sim.set_silent(2, true);
    eventually(10, "gw-2 down", || async {
        (!polls(&devices(addr).await, "gw-2").1).then_some(())
    })
    .await;
    let before = devices(addr).await;
    let db = running.db_path.clone();
    let (c1, c3) = (cod_count(&db, "gw-1"), cod_count(&db, "gw-3"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = devices(addr).await;
    // 3 s at a 300 ms interval is 10 polls; with gw-2 timing out (150 ms, then backing off) the others
    // still make at least 6 each, all of them successful.
    for u in [1, 3] {
        let s = format!("gw-{u}");
        let (p0, _) = polls(&before, &s);
        let (p1, up) = polls(&after, &s);
        assert!(
            up && p1 - p0 >= 6,
            "{s}: {p0} → {p1} polls while gw-2 is silent"
        );
    }
    assert!(
        cod_count(&db, "gw-1") - c1 >= 6 && cod_count(&db, "gw-3") - c3 >= 6,
        "their readings are stored"
    );
    let text = get_text(addr, "/metrics").await;
    assert_eq!(metric(&text, "enviromon_modbus_up{device=\"gw-2\"}"), 0.0);
    assert!(
        metric(
            &text,
            "enviromon_modbus_errors_total{device=\"gw-2\",kind=\"timeout\"}"
        ) >= 1.0
    );
    // Back: readings resume within the device backoff cap (1 s).
    let c2 = cod_count(&db, "gw-2");
    sim.set_silent(2, false);
    eventually(10, "gw-2 up again", || async {
        polls(&devices(addr).await, "gw-2").1.then_some(())
    })
    .await;
    eventually(10, "gw-2 readings resume", || async {
        (cod_count(&db, "gw-2") > c2 + 2).then_some(())
    })
    .await;
    running.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_illegal_address_loses_only_that_value() {
    let sim = water_sim();
    sim.set_illegal(1, RegisterKind::Input, 4); // TP
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let profile =
        enviromon::ingest::modbus::profile::embedded().unwrap()["generic-water-analyzer"].clone();
    let r = read_device(&device(ModbusTransport::Tcp, port, 1, profile))
        .await
        .unwrap();
    let quantities: Vec<usize> = r.values.iter().map(|(i, _)| *i).collect();
    // Values 0 COD, 1 NH3-N, 3 TN, 4 pH, 5 water_temp read; 2 TP refused.
    assert_eq!(quantities, vec![0, 1, 3, 4, 5]);
    assert_eq!(r.values[0].1, 31.0);
    assert_eq!(r.exceptions.len(), 1);
    let (req, exc) = r.exceptions.iter().next().unwrap();
    assert_eq!(
        (req.as_str(), exc.as_str()),
        ("input@4+2", "IllegalDataAddress")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_does_not_desynchronise_later_polls() {
    let sim = water_sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let dir = tempfile::tempdir().unwrap();
    let running = gateway_daemon(dir.path(), port, ", retries = 0").await;
    let addr = running.http_addr;
    eventually(10, "gw-1 up", || async {
        polls(&devices(addr).await, "gw-1").1.then_some(())
    })
    .await;
    // The next answer to unit 1 comes 400 ms late (timeout 150 ms), then everything is normal.
    sim.delay_next(1, Duration::from_millis(400));
    eventually(10, "the timeout seen", || async {
        let t = get_text(addr, "/metrics").await;
        (metric(
            &t,
            "enviromon_modbus_errors_total{device=\"gw-1\",kind=\"timeout\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await;
    let v = devices(addr).await;
    let (p0, _) = polls(&v, "gw-1");
    let failures0 = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sensor"] == "gw-1")
        .unwrap()["failures"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = devices(addr).await;
    let d = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sensor"] == "gw-1")
        .unwrap()
        .clone();
    assert!(
        d["polls"].as_u64().unwrap() - p0 >= 5,
        "polling went on: {d}"
    );
    assert_eq!(
        d["failures"].as_u64().unwrap(),
        failures0,
        "no failure after the late answer: no desync"
    );
    let t = get_text(addr, "/metrics").await;
    assert_eq!(
        metric(
            &t,
            "enviromon_modbus_errors_total{device=\"gw-1\",kind=\"transport\"}"
        ),
        0.0,
        "no mismatched answer"
    );
    // Values still right after the reconnect (COD of unit 1 is 31).
    let latest = get_json(addr, "/api/v1/readings/latest?sensor=gw-1").await;
    let cod = latest["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["quantity"] == "COD")
        .unwrap();
    assert_eq!(cod["value"], 31.0);
    running.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_resumes_after_an_outage_longer_than_the_backoff_cap() {
    let sim = water_sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let dir = tempfile::tempdir().unwrap();
    let running = gateway_daemon(dir.path(), port, "").await;
    let addr = running.http_addr;
    eventually(10, "up", || async {
        polls(&devices(addr).await, "gw-3").1.then_some(())
    })
    .await;
    stop.cancel(); // the gateway goes away
    eventually(10, "down", || async {
        (!polls(&devices(addr).await, "gw-3").1).then_some(())
    })
    .await;
    // 4 s: eight times the reconnect cap (500 ms) and four times the device backoff cap (1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    eventually(10, "all three up again without a restart", || async {
        let v = devices(addr).await;
        (1..=3)
            .all(|u| polls(&v, &format!("gw-{u}")).1)
            .then_some(())
    })
    .await;
    let t = get_text(addr, "/metrics").await;
    assert!(
        metric(
            &t,
            "enviromon_modbus_errors_total{device=\"gw-1\",kind=\"connect\"}"
        ) >= 1.0
    );
    running.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_register_sets_the_flag_and_coils_read_as_bools() {
    let sim = water_sim();
    sim.set(
        1,
        RegisterKind::Input,
        20,
        1.0,
        DataType::U16,
        WordOrder::ABCD,
    ); // 1 = calibrating → C
    sim.set(
        1,
        RegisterKind::Coil,
        5,
        1.0,
        DataType::Bool,
        WordOrder::ABCD,
    );
    sim.set(
        1,
        RegisterKind::DiscreteInput,
        9,
        0.0,
        DataType::Bool,
        WordOrder::ABCD,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let mut profile =
        enviromon::ingest::modbus::profile::embedded().unwrap()["generic-water-analyzer"].clone();
    let r = read_device(&device(ModbusTransport::Tcp, port, 1, profile.clone()))
        .await
        .unwrap();
    assert_eq!(r.flag, enviromon::reading::DataFlag::C);
    sim.set(
        1,
        RegisterKind::Input,
        20,
        3.0,
        DataType::U16,
        WordOrder::ABCD,
    ); // 3 = fault → D
    assert_eq!(
        read_device(&device(ModbusTransport::Tcp, port, 1, profile.clone()))
            .await
            .unwrap()
            .flag,
        enviromon::reading::DataFlag::D
    );
    sim.set(
        1,
        RegisterKind::Input,
        20,
        0.0,
        DataType::U16,
        WordOrder::ABCD,
    );
    assert_eq!(
        read_device(&device(ModbusTransport::Tcp, port, 1, profile.clone()))
            .await
            .unwrap()
            .flag,
        enviromon::reading::DataFlag::N
    );
    profile.values = vec![
        ValueDef {
            quantity: "pH".into(),
            unit: None,
            register: RegisterKind::Coil,
            address: 5,
            data_type: DataType::Bool,
            order: WordOrder::ABCD,
            scale: 1.0,
            offset: 0.0,
        },
        ValueDef {
            quantity: "pH".into(),
            unit: None,
            register: RegisterKind::DiscreteInput,
            address: 9,
            data_type: DataType::Bool,
            order: WordOrder::ABCD,
            scale: 1.0,
            offset: 0.0,
        },
    ];
    profile.status = None;
    let r = read_device(&device(ModbusTransport::Tcp, port, 1, profile))
        .await
        .unwrap();
    assert_eq!(r.values, vec![(0, 1.0), (1, 0.0)]);
    stop.cancel();
}

/// A late answer that the retry makes good: the poll succeeds (no failure, the value delivered),
/// and the timeout is still counted, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_the_retry_makes_good_is_counted() {
    let sim = water_sim();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(modbus_sim::serve_tcp(listener, sim.clone(), stop.clone()));
    let dir = tempfile::tempdir().unwrap();
    let running = gateway_daemon(dir.path(), port, ", retries = 1").await;
    let addr = running.http_addr;
    eventually(10, "gw-1 up", || async {
        polls(&devices(addr).await, "gw-1").1.then_some(())
    })
    .await;
    let failures = |v: &Value| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["sensor"] == "gw-1")
            .unwrap()["failures"]
            .as_u64()
            .unwrap()
    };
    let before = failures(&devices(addr).await);
    sim.delay_next(1, Duration::from_millis(400));
    eventually(10, "the timeout counted", || async {
        let t = get_text(addr, "/metrics").await;
        (metric(
            &t,
            "enviromon_modbus_errors_total{device=\"gw-1\",kind=\"timeout\"}",
        ) == 1.0)
            .then_some(())
    })
    .await;
    // The poll after it succeeds, and the retried one did not count as a failure.
    let (p0, _) = polls(&devices(addr).await, "gw-1");
    eventually(10, "polling goes on", || async {
        (polls(&devices(addr).await, "gw-1").0 >= p0 + 2).then_some(())
    })
    .await;
    assert_eq!(
        failures(&devices(addr).await),
        before,
        "the retry made the poll good"
    );
    running.shutdown().await;
    stop.cancel();
}
