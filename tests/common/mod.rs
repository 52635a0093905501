//! Real servers for the integration tests: each on a free loopback port with a temporary data
//! directory, killed when dropped. A missing binary fails the test with the command that installs
//! it (`scripts/test` installs them all from Debian's packages).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enviromon::config::{Config, StoreKind};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Find a server binary or fail with a clear message.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: this test needs the real server. Run scripts/test (it installs \
         what is missing), or `apt-get install -y {package}`."
    );
}

fn wait_port(port: u16, what: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on port {port} within 20 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Starts a server process given its data dir and port (called again to restart it).
pub type Launch = Box<dyn Fn(&Path, u16) -> Child + Send + Sync>;

/// A child server process with its temporary directory.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    restart: Launch,
    name: &'static str,
}

impl Server {
    /// Start a server the way the helpers below do (for a test's own server kind).
    pub fn launch(name: &'static str, port: u16, dir: tempfile::TempDir, launch: Launch) -> Server {
        Self::start(name, port, dir, launch)
    }

    fn start(name: &'static str, port: u16, dir: tempfile::TempDir, restart: Launch) -> Server {
        let mut child = restart(dir.path(), port);
        wait_port(port, name, &mut child, &dir.path().join("server.log"));
        Server {
            port,
            dir,
            child: Some(child),
            restart,
            name,
        }
    }

    /// Stop the server (SIGTERM, then wait) — data dir kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data dir.
    pub fn start_again(&mut self) {
        let mut child = (self.restart)(self.dir.path(), self.port);
        wait_port(
            self.port,
            self.name,
            &mut child,
            &self.dir.path().join("server.log"),
        );
        self.child = Some(child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn log_file(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map(Stdio::from)
        .unwrap_or(Stdio::null())
}

/// Mosquitto with persistence and queues large enough that the broker itself never drops a test's
/// QoS 1 messages (its default `max_queued_messages` is 1000).
pub fn mosquitto() -> Server {
    mosquitto_with("")
}

/// Started as root, Mosquitto switches to user `mosquitto`, which cannot write our temporary
/// directory: keep the invoking user.
fn run_as() -> String {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.ok().as_deref() == Some("0") {
        "user root\n".to_string()
    } else {
        String::new()
    }
}

/// Mosquitto with extra configuration lines (TLS, authentication, …).
pub fn mosquitto_with(extra: &str) -> Server {
    let extra = extra.to_string();
    let bin = binary("mosquitto", "mosquitto");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    Server::start(
        "mosquitto",
        port,
        dir,
        Box::new(move |dir, port| {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                     persistence_location {}/\nautosave_interval 1\nmax_queued_messages 1000000\n\
                     max_inflight_messages 100\nlog_dest stdout\n{}{extra}",
                    dir.display(),
                    run_as(),
                ),
            )
            .expect("write mosquitto.conf");
            Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdout(log_file(dir))
                .stderr(log_file(dir))
                .spawn()
                .expect("start mosquitto")
        }),
    )
}

/// VictoriaMetrics, a real server of the InfluxDB `/api/v2/write` API.
pub fn victoria_metrics() -> Server {
    let bin = binary("victoria-metrics", "victoria-metrics");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    Server::start(
        "victoria-metrics",
        port,
        dir,
        Box::new(move |dir, port| {
            Command::new(&bin)
                .arg(format!("-storageDataPath={}", dir.join("data").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-retentionPeriod=100y")
                .arg("-loggerLevel=ERROR")
                .stdout(log_file(dir))
                .stderr(log_file(dir))
                .spawn()
                .expect("start victoria-metrics")
        }),
    )
}

/// One exported series from VictoriaMetrics.
#[derive(Debug, serde::Deserialize)]
pub struct Series {
    pub metric: std::collections::BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

/// `POST /api/v1/export` with a series selector.
pub async fn vm_export(port: u16, selector: &str) -> Vec<Series> {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/export"))
        .form(&[("match[]", selector)])
        .send()
        .await
        .expect("export request");
    let text = resp.text().await.expect("export body");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("export line"))
        .collect()
}

/// A daemon configuration for tests: loopback, temp data dir, port 0 for HTTP.
pub fn daemon_config(data_dir: &Path, mqtt_port: u16, client_id: &str) -> Config {
    let mut cfg = Config::default();
    cfg.daemon.data_dir = data_dir.to_path_buf();
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.mqtt.port = mqtt_port;
    cfg.mqtt.client_id = client_id.into();
    cfg.mqtt.reconnect_max = Duration::from_secs(1);
    cfg.store.retry_max = Duration::from_secs(1);
    cfg.store.kind = StoreKind::Embedded;
    // No briefing at start (a test that wants one turns it on).
    cfg.report.daily_at = "off".into();
    cfg.validate().expect("valid test config");
    cfg
}

/// A test publisher that waits for the broker's PUBACK of every QoS 1 message it sends.
pub struct Publisher {
    client: AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    sent: u64,
}

impl Publisher {
    pub async fn connect(port: u16, id: &str) -> Publisher {
        Self::connect_with(MqttOptions::new(id, "127.0.0.1", port)).await
    }

    pub async fn connect_with(mut o: MqttOptions) -> Publisher {
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_inflight(1000);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acked: rx,
            sent: 0,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue publish");
        self.sent += 1;
    }

    /// Publish a retained message (QoS 1): the broker keeps it and sends it to every new
    /// subscription.
    pub async fn publish_retained(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.into())
            .await
            .expect("queue publish");
        self.sent += 1;
    }

    /// Wait until the broker has acknowledged everything sent.
    pub async fn wait_acked(&mut self) {
        let want = self.sent;
        tokio::time::timeout(Duration::from_secs(60), self.acked.wait_for(|n| *n >= want))
            .await
            .expect("broker acknowledged every publish within 60 s")
            .expect("publisher alive");
    }
}

/// Poll `f` until it returns `Some`, or panic after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET a JSON document from the daemon's API.
pub async fn get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

pub async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// The value of one sample in Prometheus text format, e.g. `enviromon_readings_rejected_total{reason="not_json"}`.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("metric {name_and_labels} not found"))
}

/// Debian's InfluxDB 1.x: a real InfluxQL engine (no /api/v2 endpoints). The database `env` exists.
pub fn influxdb1() -> Server {
    let bin = binary("influxd", "influxdb");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let rpc_port = free_port();
    let server = Server::start(
        "influxd",
        port,
        dir,
        Box::new(move |dir, port| {
            let base = Command::new(&bin)
                .arg("config")
                .output()
                .expect("influxd config")
                .stdout;
            let base = String::from_utf8_lossy(&base);
            let d = dir.display();
            let mut conf = String::new();
            let mut section = String::new();
            for line in base.lines() {
                let t = line.trim_start();
                if t.starts_with('[') {
                    section = t.to_string();
                }
                let replaced = match (section.as_str(), t.split('=').next().unwrap_or("").trim()) {
                    ("", "bind-address") => format!("bind-address = \"127.0.0.1:{rpc_port}\""),
                    ("", "reporting-disabled") | ("", "reporting-enabled") => line.to_string(),
                    ("[meta]", "dir") => format!("  dir = \"{d}/meta\""),
                    ("[data]", "dir") => format!("  dir = \"{d}/data\""),
                    ("[data]", "wal-dir") => format!("  wal-dir = \"{d}/wal\""),
                    ("[data]", "query-log-enabled") => "  query-log-enabled = false".into(),
                    ("[http]", "bind-address") => format!("  bind-address = \"127.0.0.1:{port}\""),
                    ("[http]", "log-enabled") => "  log-enabled = false".into(),
                    ("[monitor]", "store-enabled") => "  store-enabled = false".into(),
                    _ => line.to_string(),
                };
                conf.push_str(&replaced);
                conf.push('\n');
            }
            let path = dir.join("influxdb.conf");
            std::fs::write(&path, conf).expect("write influxdb.conf");
            Command::new(&bin)
                .arg("-config")
                .arg(&path)
                .stdout(log_file(dir))
                .stderr(log_file(dir))
                .spawn()
                .expect("start influxd")
        }),
    );
    server
}

/// Run an InfluxQL statement (POST /query) against database `db`; returns the JSON answer.
pub async fn influxql(port: u16, db: &str, q: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/query"))
        .form(&[("db", db), ("q", q), ("epoch", "ms")])
        .send()
        .await
        .expect("InfluxQL request");
    resp.json().await.expect("InfluxQL JSON")
}

/// Write line protocol to InfluxDB 1.x (`/write?db=&precision=ms`); returns the status and body.
pub async fn influx1_write(port: u16, db: &str, lines: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/write?db={db}&precision=ms"
        ))
        .body(lines.to_string())
        .send()
        .await
        .expect("write request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// The real `enviromon` binary, run with a config file in a temporary directory.
pub struct DaemonProcess {
    pub child: Child,
    pub http_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

impl DaemonProcess {
    /// Write `enviromon.toml` in `dir` (data in `dir/data`, HTTP on a free port) with `extra` TOML
    /// appended, and start the binary.
    pub fn start(dir: &Path, mqtt_port: u16, client_id: &str, extra: &str) -> DaemonProcess {
        let http_port = free_port();
        let data_dir = dir.join("data");
        let config = dir.join("enviromon.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\ndata_dir = {:?}\nshutdown_deadline = \"10s\"\n\
                 [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
                 [mqtt]\nport = {mqtt_port}\nclient_id = \"{client_id}\"\nreconnect_max = \"1s\"\n{extra}",
                data_dir.display().to_string()
            ),
        )
        .expect("write config");
        let log = dir.join("daemon.log");
        let child = Self::spawn(&config, &log);
        DaemonProcess {
            child,
            http_port,
            config,
            log,
            data_dir,
        }
    }

    fn spawn(config: &Path, log: &Path) -> Child {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_enviromon"))
            .args(["run", "--config"])
            .arg(config)
            .env("ENVIROMON_LOG", "info")
            // No briefing at start: these tests are about other things.
            .env("ENVIROMON__REPORT__DAILY_AT", "off")
            .stdout(Stdio::from(f.try_clone().expect("log file")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start enviromon")
    }

    /// Start the binary again with the same configuration and data.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config, &self.log);
    }

    pub async fn wait_ready(&self) {
        let port = self.http_port;
        eventually(20, "daemon ready", || async move {
            let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// Send a signal (`TERM`, `KILL`, …) and wait for the process to exit.
    pub fn signal_and_wait(&mut self, sig: &str, secs: u64) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {secs} s of SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn db(&self) -> PathBuf {
        self.data_dir.join("enviromon.db")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (count, min ts, max ts, sum of values) of one sensor's readings in the embedded database.
pub fn embedded_summary(db: &Path, sensor: &str) -> (i64, i64, i64, f64) {
    let c = rusqlite::Connection::open(db).expect("open db");
    c.query_row(
        "SELECT COUNT(*), COALESCE(MIN(ts_ms),0), COALESCE(MAX(ts_ms),0), COALESCE(SUM(value),0) FROM readings WHERE sensor = ?1",
        [sensor],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .expect("query")
}

/// Publish `n` single SO2 readings (values 0..n, timestamps base+i ms) on `topic` in a task;
/// the task ends when the broker has acknowledged all of them.
pub fn publish_in_background(
    port: u16,
    id: &str,
    topic: &str,
    n: i64,
    base: i64,
) -> tokio::task::JoinHandle<()> {
    let (id, topic) = (id.to_string(), topic.to_string());
    tokio::spawn(async move {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        let mut publisher = Publisher::connect_with(o).await;
        for i in 0..n {
            let payload = format!(r#"{{"ts":{},"quantity":"SO2","value":{i}}}"#, base + i);
            publisher.publish(&topic, payload).await;
        }
        publisher.wait_acked().await;
    })
}

/// Prometheus Alertmanager (Debian's package), clustering off, a single default route.
pub fn alertmanager() -> Server {
    let bin = binary("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    Server::start(
        "alertmanager",
        port,
        dir,
        Box::new(move |dir, port| {
            let conf = dir.join("alertmanager.yml");
            std::fs::write(
                &conf,
                "route:\n  receiver: default\n  group_wait: 1s\nreceivers:\n  - name: default\n",
            )
            .expect("write config");
            Command::new(&bin)
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdout(log_file(dir))
                .stderr(log_file(dir))
                .spawn()
                .expect("start alertmanager")
        }),
    )
}

/// (signature header, body) of each call a test webhook received.
pub type Calls = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver for tests: records every POST (headers and body).
#[derive(Clone, Default)]
pub struct Hook {
    pub calls: Calls,
}

impl Hook {
    /// Serve on `listener` until the task is dropped.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let calls = self.calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let calls = calls.clone();
                    async move {
                        let sig = headers
                            .get("x-enviromon-signature")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        calls.lock().unwrap().push((sig, body.to_vec()));
                        "ok"
                    }
                },
            ),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    /// The JSON bodies received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice(b).ok())
            .collect()
    }

    /// (status, rule) of each notification.
    pub fn events(&self) -> Vec<(String, String)> {
        self.bodies()
            .iter()
            .map(|b| {
                (
                    b["status"].as_str().unwrap_or("").to_string(),
                    b["alert"]["rule"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// Epoch milliseconds as RFC 3339 (UTC), as payloads carry them.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a timestamp in range")
        .to_rfc3339()
}

/// Wait until the standards API answers `path` with `n` results, and return them.
pub async fn wait_results(
    addr: std::net::SocketAddr,
    path: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    wait_results_where(addr, path, n, |_| true).await
}

/// `n` results that all satisfy `complete`: a result computed while its input was still
/// arriving (a busy machine) is waited past, not asserted on.
#[allow(dead_code)]
pub async fn wait_results_where(
    addr: std::net::SocketAddr,
    path: &str,
    n: usize,
    complete: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    eventually(60, path, || async {
        let v = get_json(addr, path).await;
        let r = v["results"].as_array().cloned().unwrap_or_default();
        (v["count"].as_u64() == Some(n as u64) && r.iter().all(&complete)).then_some(r)
    })
    .await
}

/// A CEMS hour computed from all of its 60 minutes.
#[allow(dead_code)]
pub fn all_minutes(h: &serde_json::Value) -> bool {
    h["minutes_with_data"] == 60
}

/// Every alert a real Alertmanager holds (active, silenced or inhibited), as its v2 API shows it.
#[allow(dead_code)]
pub async fn am_alerts(port: u16) -> Vec<serde_json::Value> {
    am_get(port, "alerts?active=true&silenced=true&inhibited=true").await
}

/// A real Alertmanager's silences.
#[allow(dead_code)]
pub async fn am_silences(port: u16) -> Vec<serde_json::Value> {
    am_get(port, "silences").await
}

async fn am_get(port: u16, path: &str) -> Vec<serde_json::Value> {
    reqwest::get(format!("http://127.0.0.1:{port}/api/v2/{path}"))
        .await
        .expect("Alertmanager answers")
        .json::<Vec<serde_json::Value>>()
        .await
        .expect("Alertmanager's JSON")
}

/// Read HJ 212 reply frames (lines ending CR LF) from a logger's connection until `n` have
/// arrived; fails after 30 s with what did arrive.
#[allow(dead_code)]
pub async fn hj212_replies(s: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while buf.windows(2).filter(|w| w == b"\r\n").count() < n {
        let r = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{n} replies in time; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            })
            .expect("the connection reads");
        assert!(r > 0, "connection closed");
        buf.extend_from_slice(&chunk[..r]);
    }
    String::from_utf8(buf)
        .expect("replies are text")
        .split_inclusive("\r\n")
        .map(String::from)
        .collect()
}

/// `enviromon COMMAND ARGS --server SERVER --token-file FILE`: its exit code, stdout and stderr.
pub fn enviromon_cli(
    command: &str,
    args: &[&str],
    server: &str,
    token_file: &std::path::Path,
) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .arg(command)
        .args(args)
        .args(["--server", server, "--token-file"])
        .arg(token_file)
        .env_remove("ENVIROMON_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Two days of 2020 (Beijing time, hours labelled by their end) for the two seeded air stations,
/// a wide CSV: on 2020-03-01 station 1 has PM2.5 66, PM10 100 and station 2 PM2.5 74, PM10 120;
/// on 2020-03-02 both PM2.5 30, PM10 40; every hour SO2 10, NO2 30, CO 0.8, O3 80. The district's
/// 2020-03-01 is then PM2.5 70, PM10 110. Read with `period = "1h"`, `time_is = "end"`.
pub fn two_station_days_csv() -> String {
    let mut csv = String::from("time,sensor,PM2.5,PM10,SO2,NO2,CO,O3\n");
    for day in [1u32, 2] {
        for h in 1..=24u32 {
            let label = if h == 24 {
                format!("2020-03-{:02} 00:00", day + 1)
            } else {
                format!("2020-03-{day:02} {h:02}:00")
            };
            let (a, b) = if day == 1 {
                ((66, 100), (74, 120))
            } else {
                ((30, 40), (30, 40))
            };
            csv.push_str(&format!(
                "{label},aq-jianxi-1-analyzers,{},{},10,30,0.8,80\n",
                a.0, a.1
            ));
            csv.push_str(&format!(
                "{label},aq-jianxi-2-analyzers,{},{},10,30,0.8,80\n",
                b.0, b.1
            ));
        }
    }
    csv
}
