//! The real binary under SIGTERM with readings in flight: it drains, flushes and exits 0; nothing
//! acknowledged is lost, and what it had not taken yet is still queued at the broker for the next
//! start (persistent session, fixed client id).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_readings_in_flight_flushes_exits_zero_and_loses_nothing() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    // The first start registers the persistent session and subscription at the broker.
    let mut daemon = DaemonProcess::start(
        dir.path(),
        broker.port,
        "enviromon-sigterm-test",
        "[store]\nbatch_size = 200\n",
    );
    daemon.wait_ready().await;

    // Publish 20,000 readings; SIGTERM arrives while they are still flowing.
    const N: i64 = 20_000;
    let base = (chrono::Utc::now().timestamp_millis() / 1000 - 100_000) * 1000;
    let publishing = publish_in_background(
        broker.port,
        "test-publisher-sigterm",
        "enviromon/datang/dt-1-cems",
        N,
        base,
    );
    let db = daemon.db();
    eventually(30, "the first 2000 readings stored", || async {
        (embedded_summary(&db, "dt-1-cems").0 >= 2000).then_some(())
    })
    .await;
    let status = daemon.signal_and_wait("TERM", 15);
    assert_eq!(
        status.code(),
        Some(0),
        "exit 0 after SIGTERM; log:\n{}",
        daemon.log_text()
    );
    let first = embedded_summary(&db, "dt-1-cems").0;
    publishing.await.unwrap();
    assert!(
        first < N,
        "SIGTERM came with readings still in flight ({first} of {N} stored)"
    );
    let text = daemon.log_text();
    assert!(
        text.contains("SIGTERM received") && text.contains("outcome=Clean"),
        "{text}"
    );

    // What the first run had not taken is still at the broker: the next start gets all of it.
    daemon.restart();
    daemon.wait_ready().await;
    let summary = eventually(120, "all 20,000 readings stored", || async {
        let s = embedded_summary(&db, "dt-1-cems");
        (s.0 == N).then_some(s)
    })
    .await;
    assert_eq!(
        summary,
        (N, base, base + N - 1, (N * (N - 1) / 2) as f64),
        "every value exactly once"
    );
    assert_eq!(daemon.signal_and_wait("TERM", 15).code(), Some(0));
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
    // Eight mistakes of every kind (wrong type, unknown key, missing field in an array element,
    // unknown table, bad value, missing credentials): all eight, once each, in one run.
    std::fs::write(
        &f,
        "[http]\nlisten = \"nowhere\"\n[mqtt]\nport = \"eighteen\"\nhots = \"x\"\n[store]\nkind = \"influxdb\"\n\
         [store.influxdb]\nurl = \"http://127.0.0.1:8086\"\n[[alerts.webhook]]\nurl = \"http://a\"\n\
         [[alerts.webhook]]\nname = \"b\"\nurl = \"http://b\"\ncolour = \"red\"\n[hj212]\nmax_connections = -1\n[bogus]\nx = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["check-config", "--config"])
        .arg(&f)
        .env_remove("ENVIROMON__STORE__INFLUXDB__TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(lines.len(), 8, "{err}");
    for path in [
        "http.listen:",
        "mqtt.port:",
        "mqtt.hots:",
        "store.influxdb.token:",
        "alerts.webhook[0].name:",
        "alerts.webhook[1].colour:",
        "hj212.max_connections:",
        "bogus:",
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(path)).count(),
            1,
            "{path} once in:\n{err}"
        );
    }
}

/// `enviromon demo` without `--data-dir` makes its data directory under the system's temporary
/// directory and removes it when it stops (runs used to leave one behind per process id).
#[test]
fn the_demo_removes_the_data_directory_it_made() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["demo", "--duration", "3s", "--http"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("TMPDIR", tmp.path())
        .env("ENVIROMON_LOG", "warn")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("数据目录 / data dir:"))
        .map(|d| std::path::PathBuf::from(d.trim()))
        .unwrap_or_else(|| panic!("the demo names its data directory: {stdout}"));
    assert!(made.starts_with(tmp.path()), "{}", made.display());
    assert!(!made.exists(), "{} left behind", made.display());
    assert!(stdout.contains("demo data removed"), "{stdout}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
