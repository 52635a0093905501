//! The real binary under SIGTERM with readings in flight: it drains, flushes and exits 0; nothing
//! acknowledged is lost, and what it had not taken yet is still queued at the broker for the next
//! start (persistent session, fixed client id).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn write_config(dir: &Path, mqtt_port: u16, http_port: u16) -> std::path::PathBuf {
    let path = dir.join("enviromon.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\ndata_dir = {:?}\nshutdown_deadline = \"10s\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [mqtt]\nport = {mqtt_port}\nclient_id = \"enviromon-sigterm-test\"\n\
             [store]\nbatch_size = 200\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    path
}

fn spawn_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["run", "--config"])
        .arg(config)
        .env("ENVIROMON_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start enviromon")
}

async fn wait_ready(http_port: u16) {
    eventually(20, "daemon ready", || async move {
        let r = reqwest::get(format!("http://127.0.0.1:{http_port}/readyz"))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

fn sigterm_and_wait(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit within {secs} s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stored_count(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor = 'dt-1-cems'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_readings_in_flight_flushes_exits_zero_and_loses_nothing() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = write_config(dir.path(), broker.port, http_port);
    let log = dir.path().join("daemon.log");

    // First start registers the persistent session and subscription at the broker.
    let mut daemon = spawn_daemon(&config, &log);
    wait_ready(http_port).await;

    // Publish 20,000 readings; SIGTERM arrives while they are still flowing.
    const N: i64 = 20_000;
    let base = (chrono::Utc::now().timestamp_millis() / 1000 - 100_000) * 1000;
    let mut publisher = Publisher::connect(broker.port, "test-publisher-sigterm").await;
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let payload = json!({"ts": base + i, "quantity": "SO2", "value": i as f64});
            publisher
                .publish("enviromon/datang/dt-1-cems", payload.to_string())
                .await;
        }
        publisher.wait_acked().await;
    });
    let db = dir.path().join("data").join("enviromon.db");
    eventually(30, "the first 2000 readings stored", || async {
        (stored_count(&db) >= 2000).then_some(())
    })
    .await;
    let status = sigterm_and_wait(&mut daemon, 15);
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 after SIGTERM; log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let first = stored_count(&db);
    publishing.await.unwrap();
    assert!(
        first < N,
        "SIGTERM came with readings still in flight ({first} of {N} stored)"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGTERM received") && text.contains("outcome=Clean"),
        "{text}"
    );

    // What the first run had not taken is still at the broker: the next start gets all of it.
    let mut daemon = spawn_daemon(&config, &log);
    wait_ready(http_port).await;
    eventually(120, "all 20,000 readings stored", || async {
        (stored_count(&db) == N).then_some(())
    })
    .await;
    let c = rusqlite::Connection::open(&db).unwrap();
    let (min, max, sum): (i64, i64, f64) = c
        .query_row(
            "SELECT MIN(ts_ms), MAX(ts_ms), SUM(value) FROM readings WHERE sensor = 'dt-1-cems'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((min, max), (base, base + N - 1));
    assert_eq!(sum, (N * (N - 1) / 2) as f64, "every value exactly once");
    assert_eq!(sigterm_and_wait(&mut daemon, 15).code(), Some(0));
}

#[test]
fn check_config_reports_three_mistakes_with_their_paths_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[http]\nlisten = \"localhost\"\n[mqtt]\nqos = 3\n[store]\nkind = \"influxdb\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["check-config", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in ["http.listen:", "mqtt.qos:", "store.influxdb.url:"] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
    let ok = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["check-config"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "the built-in defaults are valid");
}
