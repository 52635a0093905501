//! Nothing lost: fault tests against real servers. Each counts readings in and readings stored and
//! asserts exact equality (count, time range and sum of values: every value exactly once).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use enviromon::config::{Config, Secret, StoreKind};
use enviromon::daemon::{self, ShutdownOutcome};
use enviromon::pipeline::deadletter;

const TOPIC: &str = "enviromon/datang/dt-1-cems";

fn vm_config(data: &std::path::Path, mqtt: u16, vm: u16, id: &str) -> Config {
    let mut cfg = daemon_config(data, mqtt, id);
    cfg.store.kind = StoreKind::Influxdb;
    cfg.store.influxdb.url = format!("http://127.0.0.1:{vm}");
    cfg.store.influxdb.token = Some(Secret::new("t"));
    cfg.store.influxdb.timeout = Duration::from_secs(2);
    cfg
}

/// (count, sum) of `cems_so2` samples of dt-1-cems in VictoriaMetrics.
async fn vm_so2(port: u16) -> (usize, f64) {
    let s = vm_export(port, r#"{__name__="cems_so2",sensor="dt-1-cems"}"#).await;
    (
        s.iter().map(|x| x.values.len()).sum(),
        s.iter().flat_map(|x| x.values.iter()).sum(),
    )
}

fn base_ts() -> i64 {
    (Utc::now().timestamp_millis() / 1000 - 200_000) * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_down_for_30s_while_10000_readings_arrive() {
    const N: i64 = 10_000;
    let broker = mosquitto();
    let mut vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(vm_config(
        dir.path(),
        broker.port,
        vm.port,
        "enviromon-vm-outage",
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    vm.stop();
    let down_at = std::time::Instant::now();
    let base = base_ts();
    publish_in_background(broker.port, "pub-vm-outage", TOPIC, N, base)
        .await
        .unwrap();
    eventually(
        30,
        "all readings spooled while the store is down",
        || async { (running.metrics.spool_appended_readings.get() == N as u64).then_some(()) },
    )
    .await;
    assert_eq!(
        running
            .metrics
            .readings_written
            .with_label_values(&["influxdb"])
            .get(),
        0
    );
    assert_eq!(running.metrics.store_writable.get(), 0);
    assert!(running.metrics.spool_unstored_bytes.get() > 0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed())).await;
    vm.start_again();
    let (count, sum) = eventually(90, "all 10,000 in VictoriaMetrics", || async {
        let r = vm_so2(vm.port).await;
        (r.0 == N as usize).then_some(r)
    })
    .await;
    assert_eq!((count, sum), (N as usize, (N * (N - 1) / 2) as f64));
    eventually(10, "spool drained", || async {
        (running.metrics.spool_unstored_bytes.get() == 0).then_some(())
    })
    .await;
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_locked_for_30s_while_10000_readings_arrive() {
    const N: i64 = 10_000;
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(daemon_config(
        dir.path(),
        broker.port,
        "enviromon-sqlite-outage",
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    // Another process-like connection holds the write lock: every write fails with SQLITE_BUSY.
    let db = running.db_path.clone();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        c.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let down_at = std::time::Instant::now();
    let base = base_ts();
    publish_in_background(broker.port, "pub-sqlite-outage", TOPIC, N, base)
        .await
        .unwrap();
    eventually(
        30,
        "all readings spooled while the store is locked",
        || async { (running.metrics.spool_appended_readings.get() == N as u64).then_some(()) },
    )
    .await;
    eventually(20, "the store reported unwritable", || async {
        (running.metrics.store_writable.get() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed())).await;
    release_tx.send(()).unwrap();
    locker.join().unwrap();
    let db = running.db_path.clone();
    let summary = eventually(60, "all 10,000 in the embedded store", || async {
        let s = embedded_summary(&db, "dt-1-cems");
        (s.0 == N).then_some(s)
    })
    .await;
    assert_eq!(summary, (N, base, base + N - 1, (N * (N - 1) / 2) as f64));
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_20000_readings_then_restart() {
    const N: i64 = 20_000;
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut d = DaemonProcess::start(dir.path(), broker.port, "enviromon-sigkill", "");
    d.wait_ready().await;
    let base = base_ts();
    let publishing = publish_in_background(broker.port, "pub-sigkill", TOPIC, N, base);
    let db = d.db();
    eventually(30, "3000 stored", || async {
        (embedded_summary(&db, "dt-1-cems").0 >= 3000).then_some(())
    })
    .await;
    let status = d.signal_and_wait("KILL", 5);
    assert_eq!(status.code(), None, "killed by the signal");
    let at_kill = embedded_summary(&db, "dt-1-cems").0;
    publishing.await.unwrap();
    assert!(at_kill < N, "killed mid-stream ({at_kill} of {N})");
    d.restart();
    d.wait_ready().await;
    let summary = eventually(120, "all 20,000 stored after restart", || async {
        let s = embedded_summary(&db, "dt-1-cems");
        (s.0 == N).then_some(s)
    })
    .await;
    // One row per (sensor, quantity, time): count == N with this sum means each value once.
    assert_eq!(summary, (N, base, base + N - 1, (N * (N - 1) / 2) as f64));
    assert_eq!(d.signal_and_wait("TERM", 15).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restarted_mid_stream_loses_nothing() {
    const N: i64 = 10_000;
    let mut broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(daemon_config(
        dir.path(),
        broker.port,
        "enviromon-broker-restart",
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let base = base_ts();
    let publishing = publish_in_background(broker.port, "pub-broker-restart", TOPIC, N, base);
    let db = running.db_path.clone();
    eventually(30, "2000 stored", || async {
        (embedded_summary(&db, "dt-1-cems").0 >= 2000).then_some(())
    })
    .await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.start_again();
    tokio::time::timeout(Duration::from_secs(90), publishing)
        .await
        .expect("publisher finished")
        .unwrap();
    let summary = eventually(90, "all 10,000 stored", || async {
        let s = embedded_summary(&db, "dt-1-cems");
        (s.0 == N).then_some(s)
    })
    .await;
    assert_eq!(summary, (N, base, base + N - 1, (N * (N - 1) / 2) as f64));
    assert!(
        running.metrics.mqtt_connection_errors.get() >= 1,
        "the daemon saw the broker go"
    );
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_pauses_ingest_and_drops_nothing() {
    const N: i64 = 5_000;
    let broker = mosquitto();
    let mut vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vm_config(dir.path(), broker.port, vm.port, "enviromon-spool-full");
    cfg.spool.max_bytes = 64 * 1024;
    cfg.spool.segment_bytes = 16 * 1024;
    // The broker closes a connection silent for 1.5 × keep-alive: 7.5 s.
    cfg.mqtt.keep_alive = Duration::from_secs(5);
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    vm.stop();
    let base = base_ts();
    let publishing = publish_in_background(broker.port, "pub-spool-full", TOPIC, N, base);
    eventually(30, "ingest paused on a full spool", || async {
        (running.metrics.spool_ingest_paused.get() == 1).then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("broker took everything")
        .unwrap();
    let spooled = running.metrics.spool_appended_readings.get();
    assert!(
        spooled < N as u64,
        "the spool stopped taking data ({spooled})"
    );
    assert!(
        running.metrics.spool_bytes.get() <= 64 * 1024 + 1024,
        "bounded: {}",
        running.metrics.spool_bytes.get()
    );
    // Paused past the keep-alive, the daemon says it is disconnected (the broker has dropped it).
    eventually(
        30,
        "mqtt_connected 0 while paused past the keep-alive",
        || async { (running.metrics.mqtt_connected.get() == 0).then_some(()) },
    )
    .await;
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("keep-alive"), "{why}");
    assert_eq!(
        running.metrics.spool_appended_readings.get(),
        spooled,
        "still paused, nothing dropped to make room"
    );
    vm.start_again();
    let (count, sum) = eventually(120, "all 5,000 stored after the store returns", || async {
        let r = vm_so2(vm.port).await;
        (r.0 == N as usize).then_some(r)
    })
    .await;
    assert_eq!((count, sum), (N as usize, (N * (N - 1) / 2) as f64));
    eventually(30, "reconnected after the pause", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    assert_eq!(running.metrics.spool_ingest_paused.get(), 0);
    assert!(running.metrics.spool_paused_seconds.get() > 1.0);
    assert_eq!(
        running
            .metrics
            .readings_rejected
            .with_label_values(&["store_rejected"])
            .get(),
        0
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_spool_record_is_detected_reported_and_skipped_alone() {
    const N: i64 = 200;
    let broker = mosquitto();
    let mut vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vm_config(dir.path(), broker.port, vm.port, "enviromon-spool-corrupt");
    cfg.daemon.shutdown_deadline = Duration::from_secs(2);
    vm.stop();
    let running = daemon::start(cfg.clone()).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let base = base_ts();
    publish_in_background(broker.port, "pub-spool-corrupt", TOPIC, N, base)
        .await
        .unwrap();
    eventually(20, "all spooled", || async {
        (running.metrics.spool_appended_readings.get() == N as u64).then_some(())
    })
    .await;
    let spool_dir = running.spool_dir.clone();
    assert_eq!(
        running.shutdown().await,
        ShutdownOutcome::LeftInSpool,
        "the store is down: the rest stays in the spool"
    );

    // Flip bytes in the middle of the spool file.
    let seg = std::fs::read_dir(&spool_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "seg") && std::fs::metadata(p).unwrap().len() > 0
        })
        .expect("a spool segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 3] {
        *b ^= 0x5A;
    }
    std::fs::write(&seg, &bytes).unwrap();

    vm.start_again();
    let running = daemon::start(cfg).await.unwrap();
    let (count, sum) = eventually(60, "everything but the damaged record stored", || async {
        let r = vm_so2(vm.port).await;
        (r.0 == (N - 1) as usize).then_some(r)
    })
    .await;
    assert_eq!(count, (N - 1) as usize, "only the damaged record is lost");
    let missing = (N * (N - 1) / 2) as f64 - sum;
    assert!(
        missing >= 0.0 && missing < N as f64 && missing.fract() == 0.0,
        "exactly one value is missing: {missing}"
    );
    eventually(10, "the damage is counted", || async {
        (running.metrics.spool_corrupt_records.get() == 1).then_some(())
    })
    .await;
    running.shutdown().await;
}

/// InfluxDB 1.x: the daemon creates its database when it may (and says "store ready" only once it
/// exists); when it may not, `/readyz` says not ready and why, until someone creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_influxdb1_database_is_created_or_named_in_readyz() {
    let broker = mosquitto();
    let influx = influxdb1();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-influx1-create");
    cfg.store.kind = StoreKind::Influxdb1;
    cfg.store.influxdb1.url = format!("http://127.0.0.1:{}", influx.port);
    cfg.store.influxdb1.database = "fresh".into();
    let running = daemon::start(cfg).await.unwrap();
    let shown = influxql(influx.port, "", "SHOW DATABASES")
        .await
        .to_string();
    assert!(shown.contains("\"fresh\""), "created at start: {shown}");
    let mut p = Publisher::connect(broker.port, "pub-influx1-create").await;
    p.publish(
        TOPIC,
        format!(
            r#"{{"ts":{},"quantity":"SO2","value":12.5}}"#,
            Utc::now().timestamp_millis()
        ),
    )
    .await;
    p.wait_acked().await;
    eventually(30, "the reading in the new database", || async {
        let v = influxql(influx.port, "fresh", "SELECT so2 FROM cems").await;
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|a| a.len())
            .filter(|n| *n == 1)
    })
    .await;
    running.shutdown().await;

    // Not permitted to create: not ready, with the reason, until the database appears.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-influx1-missing");
    cfg.store.kind = StoreKind::Influxdb1;
    cfg.store.influxdb1.url = format!("http://127.0.0.1:{}", influx.port);
    cfg.store.influxdb1.database = "absent".into();
    cfg.store.influxdb1.create_database = false;
    let running = daemon::start(cfg).await.unwrap();
    let r = reqwest::get(format!("http://{}/readyz", running.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["store_writable"], false);
    let reason = v["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("\"absent\" does not exist"), "{v}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_rejecting_some_lines_dead_letters_exactly_those() {
    let broker = mosquitto();
    let influx = influxdb1();
    influxql(influx.port, "", "CREATE DATABASE env").await;
    // Make `cod` a string field in `water`: every float `cod` then conflicts (HTTP 400).
    let now = Utc::now().timestamp_millis();
    let (status, _) = influx1_write(
        influx.port,
        "env",
        &format!("water,site=x,sensor=y cod=\"text\" {now}"),
    )
    .await;
    assert_eq!(status, 204);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-influx1-400");
    cfg.store.kind = StoreKind::Influxdb1;
    cfg.store.influxdb1.url = format!("http://127.0.0.1:{}", influx.port);
    cfg.store.influxdb1.database = "env".into();
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;

    // 40 good CEMS readings and 5 COD readings that the server will refuse, interleaved.
    let mut p = Publisher::connect(broker.port, "pub-influx1-400").await;
    let t0 = now - 60_000;
    for i in 0..40 {
        let payload = format!(
            r#"{{"ts":{},"flag":"C","values":{{"SO2":{i},"NOx":{}}}}}"#,
            t0 + i * 100,
            i * 2
        );
        p.publish(TOPIC, payload).await;
        if i % 8 == 0 {
            let payload = format!(
                r#"{{"ts":{},"quantity":"COD","value":{}}}"#,
                t0 + i * 100,
                20 + i
            );
            p.publish("enviromon/jianxi-wwtp/wwtp-outlet-quality", payload)
                .await;
        }
    }
    p.wait_acked().await;
    eventually(30, "five readings dead-lettered", || async {
        (running
            .metrics
            .readings_rejected
            .with_label_values(&["store_rejected"])
            .get()
            == 5)
            .then_some(())
    })
    .await;
    eventually(30, "the rest stored", || async {
        (running.metrics.spool_unstored_bytes.get() == 0).then_some(())
    })
    .await;
    let records = deadletter::read_all(&running.deadletter_path).unwrap();
    assert_eq!(records.len(), 5);
    let mut cod: Vec<f64> = records
        .iter()
        .map(|r| {
            assert_eq!(r.reason, "store_rejected");
            assert!(
                r.detail.contains("field type conflict"),
                "server's message kept: {}",
                r.detail
            );
            let reading: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
            assert_eq!(reading["quantity"], "COD");
            reading["value"].as_f64().unwrap()
        })
        .collect();
    cod.sort_by(f64::total_cmp);
    assert_eq!(cod, vec![20.0, 28.0, 36.0, 44.0, 52.0]);
    let v = influxql(
        influx.port,
        "env",
        "SELECT count(so2), sum(so2), sum(nox) FROM cems",
    )
    .await;
    let row = &v["results"][0]["series"][0]["values"][0];
    assert_eq!(
        (row[1].as_i64(), row[2].as_f64(), row[3].as_f64()),
        (Some(40), Some(780.0), Some(1560.0)),
        "{v}"
    );
    let flags = influxql(influx.port, "env", "SELECT so2_flag FROM cems LIMIT 1").await;
    assert_eq!(
        flags["results"][0]["series"][0]["values"][0][1], "C",
        "flags readable from InfluxDB 1.x"
    );
    running.shutdown().await;
}

/// A small tmpfs mounted for one test (CI runs as root); unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs to fill a disk and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding files (a failed test) does not keep the mount alive.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The spool's disk fills while the store is down: appends fail with ENOSPC part-way through a
/// write. Nothing is acknowledged that is not in the spool (the broker keeps the rest), `/readyz`
/// and `enviromon_spool_disk_full` say why, no record is torn or skipped as corrupt, and once the
/// store returns the writer's commits free the space (segments are deleted before the ledger is
/// written, so a full disk cannot block its own cleanup): every reading is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_acknowledges_nothing_it_cannot_keep() {
    const N: i64 = 6_000;
    let fs = Tmpfs::mount("256k");
    let broker = mosquitto();
    let mut vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vm_config(dir.path(), broker.port, vm.port, "enviromon-disk-full");
    cfg.spool.dir = Some(fs.dir.path().join("spool"));
    cfg.spool.segment_bytes = 32 * 1024;
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    vm.stop();
    let base = base_ts();
    // ~100 bytes a record: 6,000 records do not fit in 256 KiB.
    let publishing = publish_in_background(broker.port, "pub-disk-full", TOPIC, N, base);
    eventually(60, "the spool's disk is full", || async {
        (running.metrics.spool_disk_full.get() == 1).then_some(())
    })
    .await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["spool_disk_space"], false, "{body}");
    assert!(body["reasons"].to_string().contains("disk full"), "{body}");
    let spooled = running.metrics.spool_appended_readings.get();
    assert!(spooled < N as u64, "the disk stopped the spool ({spooled})");
    // What was acknowledged is what is in the spool: the spool reads back every appended reading.
    vm.start_again();
    let (count, sum) = eventually(120, "all 6,000 stored once space returns", || async {
        let r = vm_so2(vm.port).await;
        (r.0 == N as usize).then_some(r)
    })
    .await;
    assert_eq!((count, sum), (N as usize, (N * (N - 1) / 2) as f64));
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("every message acknowledged in the end")
        .unwrap();
    assert_eq!(running.metrics.spool_disk_full.get(), 0);
    assert_eq!(running.metrics.spool_appended_readings.get(), N as u64);
    assert_eq!(
        running.metrics.spool_corrupt_records.get(),
        0,
        "no record torn by ENOSPC"
    );
    eventually(20, "ready again", || async {
        (reqwest::get(format!("http://{addr}/readyz"))
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}

/// Fill `path`'s filesystem to the last byte with one file; returns its size.
fn fill_disk(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for size in [1 << 16, 512, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {
            written += size as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// The data directory's disk fills (the embedded store, the standards' input, the spool and the
/// dead-letter file all live on it) while readings arrive; later an operator frees space. Nothing
/// acknowledged is lost: the broker keeps what could not be spooled, and once there is room every
/// reading is in the store once and in the standards' input once (the engine retries a full disk
/// instead of computing verdicts from a thinned input), with no spool record torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_loses_nothing_and_recovers_when_space_is_freed() {
    const N: i64 = 3_000;
    let fs = Tmpfs::mount("16m");
    let broker = mosquitto();
    let mut cfg = daemon_config(
        &fs.dir.path().join("data"),
        broker.port,
        "enviromon-data-full",
    );
    cfg.standards.interval = Duration::from_millis(300);
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let ballast = fs.dir.path().join("ballast");
    assert!(fill_disk(&ballast) > 1 << 20, "the ballast took the disk");
    // Two hours ago: inside the standards' lateness window. Values 0..N.
    let base = Utc::now().timestamp_millis() - 2 * 3_600_000;
    let publishing = publish_in_background(broker.port, "pub-data-full", TOPIC, N, base);
    eventually(60, "the data disk is full", || async {
        (running.metrics.spool_disk_full.get() == 1).then_some(())
    })
    .await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        running.metrics.spool_appended_readings.get() < N as u64,
        "the full disk stopped the spool"
    );
    // The operator frees space.
    std::fs::remove_file(&ballast).unwrap();
    let db = fs.dir.path().join("data").join("enviromon.db");
    let want = (N, (N * (N - 1) / 2) as f64);
    let stored = eventually(120, "all readings stored once space returns", || {
        let db = db.clone();
        async move {
            let (count, _, _, sum) = embedded_summary(&db, "dt-1-cems");
            (count == N).then_some((count, sum))
        }
    })
    .await;
    assert_eq!(stored, want);
    let input = eventually(60, "all readings in the standards' input", || {
        let db = db.clone();
        async move {
            let c = rusqlite::Connection::open(&db).ok()?;
            let r: (i64, f64) = c
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(value), 0) FROM std_input WHERE sensor = 'dt-1-cems'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok()?;
            (r.0 == N).then_some(r)
        }
    })
    .await;
    assert_eq!(input, want);
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("every message acknowledged in the end")
        .unwrap();
    assert_eq!(running.metrics.spool_appended_readings.get(), N as u64);
    assert_eq!(running.metrics.spool_corrupt_records.get(), 0);
    eventually(20, "ready again", || async {
        (reqwest::get(format!("http://{addr}/readyz"))
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}

/// A message whose refusal cannot be recorded (the dead-letter file's writes fail: it is
/// `/dev/full` here, ENOSPC on every write) is not acknowledged, so the broker keeps it; after a
/// restart with a working file the broker delivers it again, its refusal is recorded and its good
/// value is stored, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_cannot_be_recorded_leaves_the_message_at_the_broker() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dead = data.join("deadletter.jsonl");
    std::os::unix::fs::symlink("/dev/full", &dead).unwrap();
    let cfg = daemon_config(&data, broker.port, "enviromon-deadletter-full");
    let running = daemon::start(cfg.clone()).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let ts = base_ts();
    let mut p = Publisher::connect(broker.port, "pub-deadletter-full").await;
    p.publish(
        TOPIC,
        format!(
            r#"[{{"ts":{ts},"quantity":"SO2","value":7}},{{"ts":{},"quantity":"SO2","value":"abc"}}]"#,
            ts + 1
        ),
    )
    .await;
    p.wait_acked().await;
    eventually(20, "the dead-letter write failed", || async {
        (running.metrics.deadletter_errors.get() >= 1).then_some(())
    })
    .await;
    assert_eq!(running.metrics.deadletter_records.get(), 0);
    let db = data.join("enviromon.db");
    eventually(20, "the good value stored", || {
        let db = db.clone();
        async move { (embedded_summary(&db, "dt-1-cems").0 == 1).then_some(()) }
    })
    .await;
    running.shutdown().await;

    // A working file: the broker resends what was never acknowledged (persistent session).
    std::fs::remove_file(&dead).unwrap();
    let running = daemon::start(cfg).await.unwrap();
    let records = eventually(30, "the refusal recorded after redelivery", || async {
        let r = deadletter::read_all(&running.deadletter_path).ok()?;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].reason, "non_numeric");
    assert!(records[0].payload.contains("abc"), "{}", records[0].payload);
    // Stores are idempotent: the redelivered good value is still one row.
    assert_eq!(embedded_summary(&db, "dt-1-cems"), (1, ts, ts, 7.0));
    running.shutdown().await;
}

/// Half-open HTTP clients (the issue: 500 of 500 still open after 35 s): connections that send no
/// complete request headers are closed after `http.header_read_timeout`, connections beyond
/// `http.max_connections` wait, and a real client is served once slots free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_http_connections_are_closed_and_do_not_lock_the_api_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-half-open");
    cfg.http.header_read_timeout = Duration::from_secs(1);
    cfg.http.max_connections = 50;
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            // Half a request: headers never completed.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    // A real client gets through while they are held.
    eventually(30, "a real request served", || async {
        let r = reqwest::get(format!("http://{addr}/healthz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // Every idle connection is closed by the server (EOF, or a 408 then EOF).
    for (i, s) in idle.iter_mut().enumerate() {
        let mut buf = vec![0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection {i} still open");
    }
    assert_eq!(running.shutdown().await, ShutdownOutcome::Clean);
}
