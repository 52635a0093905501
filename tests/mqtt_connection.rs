//! The MQTT connection itself against a real Mosquitto: TLS with a private CA and a password read
//! from a file, and reconnection after the broker goes away and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use enviromon::config::TlsConfig;
use enviromon::daemon;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let openssl = binary("openssl", "openssl");
    let d = |f: &str| dir.join(f);
    run(Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=enviromon test CA",
        ])
        .arg("-keyout")
        .arg(d("ca-key.pem"))
        .arg("-out")
        .arg(d("ca.pem")));
    run(Command::new(&openssl)
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(d("server-key.pem"))
        .arg("-out")
        .arg(d("server.csr")));
    std::fs::write(d("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d("server.csr"))
        .arg("-CA")
        .arg(d("ca.pem"))
        .arg("-CAkey")
        .arg(d("ca-key.pem"))
        .arg("-extfile")
        .arg(d("ext.cnf"))
        .arg("-out")
        .arg(d("server.pem")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_a_password_file() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let passwd = certs.path().join("passwd");
    run(Command::new(binary("mosquitto_passwd", "mosquitto"))
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["enviromon", "s3cret-pw"]));
    let c = |f: &str| certs.path().join(f).display().to_string();
    let broker = mosquitto_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\n",
        c("ca.pem"),
        c("server.pem"),
        c("server-key.pem"),
        passwd.display()
    ));
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("mqtt-password");
    std::fs::write(&pw_file, "s3cret-pw\n").unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-tls-test");
    cfg.mqtt.username = Some("enviromon".into());
    cfg.mqtt.password_file = Some(pw_file);
    cfg.mqtt.tls = Some(TlsConfig {
        ca_file: certs.path().join("ca.pem"),
        client_cert_file: None,
        client_key_file: None,
    });
    cfg.validate().unwrap();
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "the password never reaches Debug output"
    );
    let running = daemon::start(cfg).await.unwrap();
    eventually(15, "MQTT connected over TLS", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;

    let mut o = MqttOptions::new("test-publisher-tls", "127.0.0.1", broker.port);
    o.set_credentials("enviromon", "s3cret-pw");
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: std::fs::read(certs.path().join("ca.pem")).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let mut publisher = Publisher::connect_with(o).await;
    let ts = chrono::Utc::now().timestamp_millis() - 1000;
    publisher
        .publish(
            "enviromon/datang/dt-1-cems",
            format!(r#"{{"ts":{ts},"quantity":"SO2","value":21.5}}"#),
        )
        .await;
    publisher.wait_acked().await;
    let addr = running.http_addr;
    let v = eventually(15, "the reading stored", || async {
        let v = get_json(addr, "/api/v1/readings?sensor=dt-1-cems").await;
        (v["count"] == 1).then_some(v)
    })
    .await;
    assert_eq!(v["readings"][0]["value"].as_f64(), Some(21.5));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_retrying_and_shows_disconnected() {
    let dir0 = tempfile::tempdir().unwrap();
    let passwd = dir0.path().join("passwd");
    run(Command::new(binary("mosquitto_passwd", "mosquitto"))
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["enviromon", "right"]));
    let broker = mosquitto_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-badpw-test");
    cfg.mqtt.username = Some("enviromon".into());
    cfg.mqtt.password = Some(enviromon::config::Secret::new("wrong"));
    let running = daemon::start(cfg).await.unwrap();
    eventually(15, "several refused connection attempts", || async {
        (running.metrics.mqtt_connection_errors.get() >= 3).then_some(())
    })
    .await;
    assert_eq!(running.metrics.mqtt_connected.get(), 0);
    let r = reqwest::get(format!("http://{}/readyz", running.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Why, in words: the broker's address and what it said.
    let v: serde_json::Value = r.json().await.unwrap();
    let reason = v["reasons"][0].as_str().unwrap_or_default().to_string();
    assert!(
        reason.starts_with("MQTT broker: ") && reason.contains(&format!(":{}", broker.port)),
        "{v}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reconnects_when_the_broker_comes_back() {
    let mut broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(daemon_config(
        dir.path(),
        broker.port,
        "enviromon-reconnect-test",
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    broker.stop();
    eventually(10, "disconnected seen", || async {
        (running.metrics.mqtt_connected.get() == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // several failed attempts, backoff at its cap (1 s)
    broker.start_again();
    eventually(15, "reconnected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut publisher = Publisher::connect(broker.port, "test-publisher-reconnect").await;
    let ts = chrono::Utc::now().timestamp_millis() - 1000;
    publisher
        .publish(
            "enviromon/shuangyuan/sy-1-cems",
            format!(r#"{{"ts":{ts},"quantity":"NOx","value":33.25}}"#),
        )
        .await;
    publisher.wait_acked().await;
    let addr = running.http_addr;
    eventually(15, "the reading after reconnect stored", || async {
        let v = get_json(addr, "/api/v1/readings?sensor=sy-1-cems").await;
        (v["count"] == 1 && v["readings"][0]["value"].as_f64() == Some(33.25)).then_some(())
    })
    .await;
    assert!(running.metrics.mqtt_connection_errors.get() >= 2);
    running.shutdown().await;
}
