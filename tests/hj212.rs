//! HJ 212 over TCP and MQTT against the running daemon: stream framing, replies, MN/password
//! mapping, 200 units at once, and packets flowing into the hourly compliance figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use enviromon::daemon;
use enviromon::ingest::hj212::codec::{frame, parse_frame, Tolerance};
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CEMS_CHANNELS: &str = r#"channels = [{ quantity = "SO2" }, { quantity = "NOx" }, { quantity = "PM" }, { quantity = "O2" }, { quantity = "flue_temp" }, { quantity = "moisture" }, { quantity = "flue_flow" }]"#;

/// Embedded seeds plus an HJ 212 logger on unit dt-2, `n_air` air loggers, and an MQTT sensor that
/// sends HJ 212 frames.
fn seeds(dir: &Path, n_air: usize) -> std::path::PathBuf {
    let d = dir.join("seeds");
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in enviromon::registry::EMBEDDED_SEEDS {
        std::fs::write(d.join(name), text).unwrap();
    }
    let mut extra = format!(
        "[[sensor]]\nid = \"dt-2-dal\"\nsite = \"datang\"\nunit = \"dt-2\"\nname_zh = \"数采仪\"\nname_en = \"logger\"\ndomain = \"cems\"\nprotocol = \"hj212\"\n\
         hj212 = {{ mn = \"DT2DAL0001\", password = \"123456\" }}\n{CEMS_CHANNELS}\n\n\
         [[sensor]]\nid = \"lab-hj212\"\nsite = \"jianxi-wwtp\"\nname_zh = \"化验\"\nname_en = \"lab\"\ndomain = \"water\"\nprotocol = \"mqtt\"\n\
         topic = \"plant/hj212/lab\"\npayload_format = \"hj212\"\nhj212 = {{ mn = \"LAB0001\" }}\nchannels = [{{ quantity = \"COD\" }}]\n\n"
    );
    for i in 0..n_air {
        extra.push_str(&format!(
            "[[sensor]]\nid = \"aq-dal-{i}\"\nsite = \"aq-jianxi-2\"\nname_zh = \"站{i}\"\nname_en = \"station {i}\"\ndomain = \"air\"\nprotocol = \"hj212\"\n\
             hj212 = {{ mn = \"AQ{i:06}\" }}\nchannels = [{{ quantity = \"PM2.5\" }}]\n\n"
        ));
    }
    std::fs::write(d.join("sensors-hj212.toml"), extra).unwrap();
    d
}

async fn start(dir: &Path, mqtt: u16, n_air: usize) -> daemon::Running {
    let mut cfg = daemon_config(dir, mqtt, "enviromon-hj212");
    cfg.registry.seeds_dir = Some(seeds(dir, n_air));
    cfg.hj212.enabled = true;
    cfg.hj212.listen = "127.0.0.1:0".into();
    cfg.standards.interval = Duration::from_millis(300);
    cfg.validate().unwrap();
    daemon::start(cfg).await.unwrap()
}

/// `YYYYMMDDhhmmss` in CST.
fn dt(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + 8 * HOUR_MS)
        .unwrap()
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn count(db: &Path, sensor: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor = ?1",
        [sensor],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_packed_dirty_and_refused_over_tcp() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, 0).await;
    let addr = running.hj212_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 120_000;
    let rt = |i: i64, pw: &str, mn: &str| {
        frame(&format!("QN={}000;ST=31;CN=2011;PW={pw};MN={mn};Flag=5;CP=&&DataTime={};a21026-Rtd={}.5,a21026-Flag=N;a19001-Rtd=6.0&&", dt(t0 + i * 1000), dt(t0 + i * 1000), 10 + i))
    };
    // Split across writes, with garbage first.
    let f0 = rt(0, "123456", "DT2DAL0001");
    s.write_all(b"\x00\x01junk").await.unwrap();
    s.write_all(&f0.as_bytes()[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&f0.as_bytes()[20..]).await.unwrap();
    let r = hj212_replies(&mut s, 1).await;
    let reply = parse_frame(r[0].as_bytes(), Tolerance::default()).unwrap();
    let qn = format!("{}000", dt(t0));
    assert_eq!(
        (reply.cn(), reply.mn(), reply.qn()),
        ("9014", "DT2DAL0001", Some(qn.as_str())),
        "9014 for the frame that asked, with its QN"
    );
    // Three frames in one write: good, bad CRC, good; then a wrong password and an unknown MN.
    let bad = rt(1, "123456", "DT2DAL0001")
        .replace("\r\n", "")
        .chars()
        .rev()
        .skip(4)
        .collect::<String>()
        .chars()
        .rev()
        .collect::<String>()
        + "0000\r\n";
    let packed = format!(
        "{}{}{}",
        rt(2, "123456", "DT2DAL0001"),
        bad,
        rt(3, "123456", "DT2DAL0001")
    );
    s.write_all(packed.as_bytes()).await.unwrap();
    s.write_all(rt(4, "wrong", "DT2DAL0001").as_bytes())
        .await
        .unwrap();
    s.write_all(rt(5, "123456", "NOBODY").as_bytes())
        .await
        .unwrap();
    s.write_all(rt(6, "123456", "DT2DAL0001").as_bytes())
        .await
        .unwrap();
    let r = hj212_replies(&mut s, 3).await;
    assert_eq!(
        r.len(),
        3,
        "replies for the three accepted frames only: {r:?}"
    );
    let db = running.db_path.clone();
    // Accepted: frames 0, 2, 3, 6 → 4 × (SO2, O2) readings.
    eventually(10, "8 readings", || async {
        (count(&db, "dt-2-dal") == 8).then_some(())
    })
    .await;
    let recs = enviromon::pipeline::deadletter::read_all(&running.deadletter_path).unwrap();
    let details: Vec<&str> = recs.iter().map(|r| r.detail.as_str()).collect();
    assert!(
        details.iter().any(|d| d.contains("CRC mismatch")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("PW: wrong password")),
        "{details:?}"
    );
    assert!(recs
        .iter()
        .any(|r| r.reason == "unknown_topic" && r.detail.contains("NOBODY")));
    // The values, and the SO2 of frame 3 is 13.5 at t0 + 3 s.
    let v = get_json(
        running.http_addr,
        "/api/v1/readings?sensor=dt-2-dal&quantity=SO2",
    )
    .await;
    let vals: Vec<f64> = v["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(vals, vec![10.5, 12.5, 13.5, 16.5]);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_units_each_sending_every_second_for_a_minute() {
    const UNITS: usize = 200;
    const SECONDS: i64 = 60;
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, UNITS).await;
    let addr = running.hj212_addr.unwrap();
    let t0 = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 2 * 60_000;
    let mut tasks = Vec::new();
    for u in 0..UNITS {
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for i in 0..SECONDS {
                tick.tick().await;
                let f = frame(&format!("QN={}{u:03};ST=22;CN=2011;PW=1;MN=AQ{u:06};Flag=5;CP=&&DataTime={};a34004-Rtd={}&&", dt(t0 + i * 1000), dt(t0 + i * 1000), u as i64 + i));
                s.write_all(f.as_bytes()).await.unwrap();
            }
            let replies = hj212_replies(&mut s, SECONDS as usize).await;
            let ok = replies.iter().filter(|r| parse_frame(r.as_bytes(), Tolerance::default()).is_ok_and(|p| p.cn() == "9014" && p.mn() == format!("AQ{u:06}"))).count();
            ok
        }));
    }
    let mut replies = 0;
    for t in tasks {
        replies += t.await.unwrap();
    }
    assert_eq!(
        replies,
        UNITS * SECONDS as usize,
        "every frame answered with its 9014, to its own unit"
    );
    let db = running.db_path.clone();
    let total = eventually(30, "every reading stored", || async {
        let c = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE sensor LIKE 'aq-dal-%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (n == (UNITS as i64) * SECONDS).then_some(n)
    })
    .await;
    assert_eq!(total, 12_000);
    let c = rusqlite::Connection::open(&db).unwrap();
    let sum: f64 = c
        .query_row(
            "SELECT SUM(value) FROM readings WHERE sensor LIKE 'aq-dal-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Σ_u Σ_i (u + i) = 60 × Σu + 200 × Σi = 60 × 19900 + 200 × 1770.
    assert_eq!(sum, (60 * 19_900 + 200 * 1_770) as f64);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minute_and_hourly_packets_flow_into_the_hourly_compliance_figures() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, 0).await;
    let addr = running.hj212_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let h2 = time::label(now, HOUR_MS) - HOUR_MS;
    let h1 = h2 - HOUR_MS;
    // Hour 1: 60 minute packets (2051), SO2 20 at O2 9 % → corrected 20 × 15/12 = 25.
    let mut all = String::new();
    for i in 0..60 {
        let start = h1 - HOUR_MS + i * MINUTE_MS;
        all.push_str(&frame(&format!("QN={}000;ST=31;CN=2051;PW=123456;MN=DT2DAL0001;Flag=4;CP=&&DataTime={};a21026-Avg=20,a21026-Flag=N;a19001-Avg=9&&", dt(start), dt(start))));
    }
    // Hour 2: one hourly packet (2061) with a measured 30 and a converted (折算) 40: 40 is used as
    // it is — correcting it again at O2 9 % would give 50.
    all.push_str(&frame(&format!("QN={}000;ST=31;CN=2061;PW=123456;MN=DT2DAL0001;Flag=4;CP=&&DataTime={};a21026-Avg=30,a21026-ZsAvg=40,a21026-Flag=N;a19001-Avg=9&&", dt(h2 - HOUR_MS), dt(h2 - HOUR_MS))));
    s.write_all(all.as_bytes()).await.unwrap();
    let http = running.http_addr;
    let rows = eventually(20, "two CEMS hours", || async {
        let v = get_json(
            http,
            &format!("/api/v1/cems/hourly?unit=dt-2&from={h1}&to={h2}"),
        )
        .await;
        (v["count"] == 2).then(|| v["results"].as_array().cloned().unwrap())
    })
    .await;
    let so2 = |i: usize| rows[i]["pollutants"]["SO2"].clone();
    assert_eq!(
        (so2(0)["status"].as_str(), so2(0)["valid_minutes"].as_u64()),
        (Some("valid"), Some(60))
    );
    assert!((so2(0)["corrected"].as_f64().unwrap() - 25.0).abs() < 1e-9);
    assert_eq!(
        (so2(1)["corrected"].as_f64(), so2(1)["source"].as_str()),
        (Some(40.0), Some("hourly_report_converted"))
    );
    assert_eq!(so2(1)["exceeded"], true, "40 > 35");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hj212_frames_over_mqtt_use_the_same_codec() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, 0).await;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 60_000;
    let f = frame(&format!("QN={}000;ST=32;CN=2011;PW=1;MN=LAB0001;Flag=4;CP=&&DataTime={};w01018-Rtd=23.25,w01018-Flag=N&&", dt(t), dt(t)));
    let mut p = Publisher::connect(broker.port, "pub-hj212-mqtt").await;
    p.publish("plant/hj212/lab", f.clone().into_bytes()).await;
    p.publish("plant/hj212/lab", f.replace("\r\n", "").into_bytes())
        .await; // no terminator: refused
    p.wait_acked().await;
    let db = running.db_path.clone();
    eventually(10, "stored", || async {
        (count(&db, "lab-hj212") == 1).then_some(())
    })
    .await;
    let v = get_json(running.http_addr, "/api/v1/readings?sensor=lab-hj212").await;
    assert_eq!(
        (
            v["readings"][0]["value"].as_f64(),
            v["readings"][0]["source"].as_str()
        ),
        (Some(23.25), Some("mqtt"))
    );
    eventually(10, "the bad frame dead-lettered", || async {
        let recs =
            enviromon::pipeline::deadletter::read_all(&running.deadletter_path).unwrap_or_default();
        recs.iter()
            .any(|r| r.topic == "plant/hj212/lab" && r.detail.contains("HJ 212 frame refused"))
            .then_some(())
    })
    .await;
    running.shutdown().await;
}

/// A frame with a refused value whose record cannot be written (the dead-letter file is
/// `/dev/full`: ENOSPC on every write) is not answered 9014, so the logger keeps it and sends it
/// again. The heartbeat sent after it is the first thing answered: replies on a connection go out
/// in order, so no 9014 went out before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_cannot_be_recorded_is_not_answered_9014() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("deadletter.jsonl")).unwrap();
    let running = start(dir.path(), broker.port, 0).await;
    let mut s = tokio::net::TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    let t0 = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 120_000;
    let data = frame(&format!(
        "QN={}000;ST=31;CN=2011;PW=123456;MN=DT2DAL0001;Flag=5;CP=&&DataTime={};a21026-Rtd=abc,a21026-Flag=N;a19001-Rtd=6.0&&",
        dt(t0),
        dt(t0)
    ));
    s.write_all(data.as_bytes()).await.unwrap();
    eventually(20, "the dead-letter write failed", || async {
        (running.metrics.deadletter_errors.get() >= 1).then_some(())
    })
    .await;
    let heartbeat = frame(&format!(
        "QN={}001;ST=31;CN=9015;PW=123456;MN=DT2DAL0001;Flag=5;CP=&&&&",
        dt(t0)
    ));
    s.write_all(heartbeat.as_bytes()).await.unwrap();
    let r = hj212_replies(&mut s, 1).await;
    let reply = parse_frame(r[0].as_bytes(), Tolerance::default()).unwrap();
    assert_eq!(
        reply.cn(),
        "9013",
        "the heartbeat's answer comes first: {r:?}"
    );
    assert_eq!(running.metrics.deadletter_records.get(), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_surplus_connections_are_closed() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-hj212-limits");
    cfg.registry.seeds_dir = Some(seeds(dir.path(), 0));
    cfg.hj212.enabled = true;
    cfg.hj212.listen = "127.0.0.1:0".into();
    cfg.hj212.max_connections = 2;
    cfg.hj212.idle_timeout = Duration::from_secs(1);
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.hj212_addr.unwrap();
    let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually(10, "two connections held", || async {
        (running.metrics.hj212_connections.get() == 2).then_some(())
    })
    .await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "a third connection is refused");
    // Idle for more than 1 s: closed by the server.
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
        .await
        .expect("closed when idle")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let t = get_text(running.http_addr, "/metrics").await;
    assert!(
        metric(
            &t,
            "enviromon_hj212_frames_total{result=\"connection_refused\"}"
        ) >= 1.0
    );
    // Both idle connections closed: their places are given back, and a new logger gets one.
    eventually(10, "the idle connections' places given back", || async {
        (running.metrics.hj212_connections.get() == 0).then_some(())
    })
    .await;
    let _d = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually(10, "a new connection accepted", || async {
        (running.metrics.hj212_connections.get() == 1).then_some(())
    })
    .await;
    running.shutdown().await;
}

/// 256 KiB of `#` on the port (the issue's flood: 131,070 "frames", 36 MB of fsynced records, a
/// legitimate logger kept waiting): the flood is recorded up to its limit and counted, the
/// dead-letter file stays small, and a logger on another connection is answered and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_is_bounded_and_never_holds_up_another_logger() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, 0).await;
    let addr = running.hj212_addr.unwrap();
    let mut flood = tokio::net::TcpStream::connect(addr).await.unwrap();
    let garbage = vec![b'#'; 256 * 1024];
    let flooding = tokio::spawn(async move {
        let _ = flood.write_all(&garbage).await;
        flood
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 60_000;
    let f = frame(&format!(
        "QN={}000;ST=31;CN=2011;PW=123456;MN=DT2DAL0001;Flag=5;CP=&&DataTime={};a21026-Rtd=12.5,a21026-Flag=N&&",
        dt(t),
        dt(t)
    ));
    s.write_all(f.as_bytes()).await.unwrap();
    let replies = hj212_replies(&mut s, 1).await;
    assert!(replies[0].contains("CN=9014"), "{replies:?}");
    eventually(20, "the logger's reading stored", || async {
        (count(&running.db_path, "dt-2-dal") == 1).then_some(())
    })
    .await;
    let _flood = flooding.await.unwrap();
    // Every garbage refusal counted; only the burst and the rate recorded one by one.
    let m = &running.metrics;
    let refused = eventually(30, "the whole flood refused", || async {
        let n = m
            .readings_rejected
            .with_label_values(&["invalid_payload"])
            .get();
        (n >= 1000 && m.deadletter_suppressed.get() > 0).then_some(n)
    })
    .await;
    let size = std::fs::metadata(&running.deadletter_path).unwrap().len();
    assert!(
        m.deadletter_records.get() < refused / 4,
        "{} records for {refused} refusals",
        m.deadletter_records.get()
    );
    assert!(size < 2 << 20, "dead-letter file {size} bytes");
    running.shutdown().await;
}

/// Issue 18: a dry run of a new HJ 212 logger listens for its MN (frames from an MN not yet
/// registered are refused as usual) and shows each value decoded against the sensor-to-be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_listens_for_a_new_loggers_mn() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-hj212-dry");
    cfg.hj212.enabled = true;
    cfg.hj212.listen = "127.0.0.1:0".into();
    cfg.api.tokens = vec![enviromon::config::ApiToken {
        name: "field-tech".into(),
        role: enviromon::config::Role::Technician,
        sha256: enviromon::api::auth::hash_token("tech-token"),
    }];
    cfg.validate().unwrap();
    let running = daemon::start(cfg).await.unwrap();
    let (http, hj) = (running.http_addr, running.hj212_addr.unwrap());
    let sensor = serde_json::json!({"id": "dt-1-new-dal", "site": "datang", "unit": "dt-1", "name_zh": "新数采仪",
        "name_en": "new logger", "domain": "cems", "protocol": "hj212", "hj212": {"mn": "NEWDAL0001"},
        "channels": [{"quantity": "SO2"}, {"quantity": "O2"}]});
    let req = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/sensors/dry-run?seconds=20"))
        .bearer_auth("tech-token")
        .json(&sensor)
        .send();
    tokio::pin!(req);
    let mut s = tokio::net::TcpStream::connect(hj).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 60_000;
    let f = frame(&format!(
        "QN={}000;ST=31;CN=2011;PW=123456;MN=NEWDAL0001;Flag=4;CP=&&DataTime={};a21026-Rtd=12.5,a21026-Flag=N;a19001-Rtd=6.1,a19001-Flag=N&&",
        dt(now),
        dt(now)
    ));
    // Sent until the dry run has heard it (it listens from its request on).
    let resp = loop {
        s.write_all(f.as_bytes()).await.unwrap();
        tokio::select! {
            r = &mut req => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (v["protocol"].as_str(), v["ok"].as_bool()),
        (Some("hj212"), Some(true)),
        "{v}"
    );
    let so2 = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["quantity"] == "SO2")
        .unwrap()
        .clone();
    assert_eq!(
        (so2["value"].as_f64(), so2["unit"].as_str()),
        (Some(12.5), Some("mg/m3")),
        "{v}"
    );
    // Not registered: its frames are still refused and nothing is stored.
    let r = reqwest::get(format!("http://{http}/api/v1/sensors/dt-1-new-dal"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(count(&running.db_path, "dt-1-new-dal"), 0);
    running.shutdown().await;
}
