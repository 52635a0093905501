//! HJ 212-2025 against the running daemon over real TCP: an SM4-encrypting 2025 logger and a 2017
//! logger side by side in the same hourly compliance; keys set by a technician through the API
//! (audited, never shown); refusals (wrong key, truncated or flipped ciphertext, plaintext from a
//! logger that must encrypt) dead-lettered while the connection goes on; key rotation with frames in
//! flight and the logger's own CN 1014; a re-sent exceedance hour raising its alert in a real
//! Alertmanager; ST 44 electricity readings, heartbeats and CN 3020 site parameters with history.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use enviromon::api::auth::hash_token;
use enviromon::config::{AlertmanagerReceiver, ApiToken};
use enviromon::daemon;
use enviromon::ingest::hj212::codec::{parse_frame, Edition, Packet, Tolerance};
use enviromon::ingest::hj212::crypto::Key;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TECH: &str = "tech-token-2025";
const OPERATOR: &str = "operator-token-2025";
const CHANNELS: &str = r#"channels = [{ quantity = "SO2" }, { quantity = "NOx" }, { quantity = "PM" }, { quantity = "O2" }]"#;
/// The 2025 logger on 双源 #1 (must encrypt) and the 2017 logger on 双源 #2.
const MN_2025: &str = "010000A8900016F000169DC1";
const MN_2017: &str = "LYSY0002DAL00001";

fn seeds(dir: &Path) -> std::path::PathBuf {
    let d = dir.join("seeds");
    std::fs::create_dir_all(&d).unwrap();
    for (name, text) in enviromon::registry::EMBEDDED_SEEDS {
        std::fs::write(d.join(name), text).unwrap();
    }
    let extra = format!(
        "[[sensor]]\nid = \"sy-1-dal\"\nsite = \"shuangyuan\"\nunit = \"sy-1\"\nname_zh = \"双源#1数采仪\"\nname_en = \"sy-1 logger\"\ndomain = \"cems\"\nprotocol = \"hj212\"\n\
         hj212 = {{ mn = \"{MN_2025}\", password = \"123456\", encryption = \"required\" }}\n{CHANNELS}\n\n\
         [[sensor]]\nid = \"sy-2-dal\"\nsite = \"shuangyuan\"\nunit = \"sy-2\"\nname_zh = \"双源#2数采仪\"\nname_en = \"sy-2 logger\"\ndomain = \"cems\"\nprotocol = \"hj212\"\n\
         hj212 = {{ mn = \"{MN_2017}\", password = \"123456\" }}\n{CHANNELS}\n\n"
    );
    std::fs::write(d.join("sensors-hj212.toml"), extra).unwrap();
    d
}

async fn start(dir: &Path, mqtt: u16, id: &str, am: Option<u16>) -> daemon::Running {
    let mut cfg = daemon_config(dir, mqtt, id);
    cfg.registry.seeds_dir = Some(seeds(dir));
    cfg.hj212.enabled = true;
    cfg.hj212.listen = "127.0.0.1:0".into();
    cfg.hj212.key_overlap = Duration::from_secs(3600);
    cfg.standards.interval = Duration::from_millis(300);
    cfg.alerts.evaluation_interval = Duration::from_millis(200);
    cfg.alerts.resend_interval = Duration::from_secs(1);
    if let Some(port) = am {
        cfg.alerts.alertmanager.push(AlertmanagerReceiver {
            url: format!("http://127.0.0.1:{port}"),
        });
    }
    cfg.api.tokens = vec![
        ApiToken {
            name: "field-tech".into(),
            role: enviromon::config::Role::Technician,
            sha256: hash_token(TECH),
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `YYYYMMDDhhmmss` in CST.
fn dt(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + 8 * HOUR_MS)
        .unwrap()
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn pairs(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A packet: header fields in the standard's order, CP groups.
fn packet(
    mn: &str,
    st: &str,
    cn: &str,
    flag: u32,
    extra: &[(&str, &str)],
    qn_ms: i64,
    cp: Vec<Vec<(String, String)>>,
) -> Packet {
    let mut header = pairs(&[
        ("QN", format!("{}{:03}", dt(qn_ms), qn_ms.rem_euclid(1000))),
        ("ST", st.into()),
        ("CN", cn.into()),
        ("PW", "123456".into()),
        ("MN", mn.into()),
        ("Flag", flag.to_string()),
    ]);
    header.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Packet::new(header, cp)
}

/// One minute record (CN 2051) of SO2, NOx, PM and O2 starting at `start`.
fn minute(mn: &str, flag: u32, rf: bool, start: i64, so2: f64, o2: f64) -> Packet {
    let extra: &[(&str, &str)] = if rf { &[("RF", "1")] } else { &[] };
    let mut cp = vec![pairs(&[("DataTime", dt(start))])];
    for (code, v) in [
        ("a21026", so2),
        ("a21002", 30.0),
        ("a34013", 3.0),
        ("a19001", o2),
    ] {
        cp.push(pairs(&[
            (&format!("{code}-Avg"), format!("{v}")),
            (&format!("{code}-Flag"), "N".into()),
        ]));
    }
    packet(mn, "31", "2051", flag, extra, start + MINUTE_MS, cp)
}

/// The replies, parsed: each must be a valid frame.
async fn replies(s: &mut TcpStream, n: usize) -> Vec<Packet> {
    hj212_replies(s, n)
        .await
        .iter()
        .map(|f| parse_frame(f.as_bytes(), Tolerance::default()).expect("a valid reply frame"))
        .collect()
}

async fn send(s: &mut TcpStream, frames: &[String]) {
    s.write_all(frames.concat().as_bytes()).await.unwrap();
}

async fn call(
    method: reqwest::Method,
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get_as(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, Value) {
    call(reqwest::Method::GET, addr, path, token, None).await
}

async fn set_key(addr: std::net::SocketAddr, id: &str, key: &Key) -> Value {
    let (code, v) = call(
        reqwest::Method::PUT,
        addr,
        &format!("/api/v1/sensors/{id}/hj212-key"),
        TECH,
        Some(json!({"key": key.to_hex()})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// A broker, a data directory and the daemon; with `key`, 双源 #1's logger key already set.
async fn fixture(
    id: &str,
    am: Option<u16>,
    key: Option<&Key>,
) -> (Server, tempfile::TempDir, daemon::Running) {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), broker.port, id, am).await;
    if let Some(k) = key {
        set_key(running.http_addr, "sy-1-dal", k).await;
    }
    (broker, dir, running)
}

fn deadletters(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("deadletter.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(dir: &Path, sensor: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join("enviromon.db")).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM readings WHERE sensor = ?1",
        [sensor],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2025_sm4_logger_and_a_2017_logger_report_into_the_same_hourly_compliance() {
    let (_broker, dir, running) = fixture("enviromon-2025-fleet", None, None).await;
    let addr = running.http_addr;
    let key = Key::new(*b"jianxi-sy1-2026!");
    // A technician sets the logger's key: the answer and the audit log name it by fingerprint.
    let v = set_key(addr, "sy-1-dal", &key).await;
    assert_eq!(v["after"], key.fingerprint().as_str());
    assert_eq!(v["mn"], MN_2025);
    let (code, st) = get_as(addr, "/api/v1/sensors/sy-1-dal/hj212-key", TECH).await;
    assert_eq!(
        (code, st["fingerprint"].as_str()),
        (200, Some(key.fingerprint().as_str()))
    );
    let (_, audit) = get_as(addr, "/api/v1/audit", OPERATOR).await;
    let audit_text = audit.to_string();
    assert!(
        audit_text.contains("hj212_key") && audit_text.contains(&key.fingerprint()),
        "{audit_text}"
    );
    // The key is in its own owner-only file and nowhere the API or the registry export shows.
    let (_, export) = get_as(addr, "/api/v1/registry/export", OPERATOR).await;
    let (_, sensor) = get_as(addr, "/api/v1/sensors/sy-1-dal", TECH).await;
    for text in [
        audit_text,
        export.to_string(),
        sensor.to_string(),
        st.to_string(),
    ] {
        assert!(
            !text.to_uppercase().contains(&key.to_hex()),
            "the key leaked: {text}"
        );
    }
    let keys_file = dir.path().join("secrets/hj212-keys.json");
    assert!(std::fs::read_to_string(&keys_file)
        .unwrap()
        .contains(&key.to_hex()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&keys_file).unwrap().permissions().mode() & 0o077,
            0
        );
    }

    // The previous complete hour, minute by minute: 双源 #1 in HJ 212-2025 sealed with SM4 (Flag 9),
    // 双源 #2 in HJ 212-2017 plaintext (Flag 5), on two connections at once.
    // Hours are labelled by their end: `label(now)` is the end of the current hour.
    let end = time::label(now_ms(), HOUR_MS) - HOUR_MS;
    let start_h = end - HOUR_MS;
    let hj = running.hj212_addr.unwrap();
    let (mut a, mut b) = (
        TcpStream::connect(hj).await.unwrap(),
        TcpStream::connect(hj).await.unwrap(),
    );
    let sealed: Vec<String> = (0..60)
        .map(|i| {
            minute(MN_2025, 9, false, start_h + i * MINUTE_MS, 20.0, 6.0)
                .encode_sealed(&key)
                .unwrap()
        })
        .collect();
    let plain: Vec<String> = (0..60)
        .map(|i| minute(MN_2017, 5, false, start_h + i * MINUTE_MS, 30.0, 9.0).encode())
        .collect();
    assert!(
        sealed[0].contains("CP=&&{0x") && !sealed[0].contains("a21026"),
        "encrypted on the wire"
    );
    send(&mut a, &sealed).await;
    send(&mut b, &plain).await;
    // Each frame answered once its readings are in the spool, in the frame's own edition.
    let (ra, rb) = (replies(&mut a, 60).await, replies(&mut b, 60).await);
    for (r, ed) in ra
        .iter()
        .map(|r| (r, Edition::Hj212_2025))
        .chain(rb.iter().map(|r| (r, Edition::Hj212_2017)))
    {
        assert_eq!(
            (r.cn(), r.edition(), r.flag() & 3),
            ("9014", ed, 0),
            "{r:?}"
        );
    }
    assert_eq!(
        ra[59].qn(),
        minute(MN_2025, 9, false, start_h + 59 * MINUTE_MS, 0.0, 0.0).qn()
    );
    eventually(30, "240 readings from each logger stored", || async {
        (count(dir.path(), "sy-1-dal") == 240 && count(dir.path(), "sy-2-dal") == 240).then_some(())
    })
    .await;
    let metrics = get_text(addr, "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"enviromon_hj212_packets_total{edition="2025",encrypted="true"}"#
        ),
        60.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"enviromon_hj212_packets_total{edition="2017",encrypted="false"}"#
        ),
        60.0
    );

    // The same hourly figures for both. HJ 75-2017 correction to 6 % O2:
    // 双源 #1: 20 × (21 − 6)/(21 − 6) = 20.0, under 35; 双源 #2: 30 × (21 − 6)/(21 − 9) = 37.5 > 35.
    let hour = |u: &str| format!("/api/v1/cems/hourly?unit={u}&from={end}&to={end}");
    let sy1 = &wait_results(addr, &hour("sy-1"), 1).await[0]["pollutants"]["SO2"];
    let sy2 = &wait_results(addr, &hour("sy-2"), 1).await[0]["pollutants"]["SO2"];
    assert_eq!(
        (
            sy1["valid_minutes"].as_u64(),
            sy1["corrected"].as_f64(),
            sy1["exceeded"].as_bool()
        ),
        (Some(60), Some(20.0), Some(false)),
        "{sy1}"
    );
    assert_eq!(
        (
            sy2["valid_minutes"].as_u64(),
            sy2["corrected"].as_f64(),
            sy2["exceeded"].as_bool()
        ),
        (Some(60), Some(37.5), Some(true)),
        "{sy2}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_do_not_open_or_must_be_encrypted_are_refused_and_the_connection_goes_on() {
    let key = Key::new([0x30; 16]);
    let (_broker, dir, running) = fixture("enviromon-2025-refusals", None, Some(&key)).await;
    let t0 = time::label(now_ms(), MINUTE_MS) - 30 * MINUTE_MS;
    let good = |i: i64| minute(MN_2025, 9, false, t0 + i * MINUTE_MS, 20.0, 6.0);
    let wrong_key = good(1).encode_sealed(&Key::new([0x31; 16])).unwrap();
    // Drop the last whole byte of the ciphertext: no longer whole SM4 blocks.
    let sealed = good(2).encode_sealed(&key).unwrap();
    let close = sealed.find('}').unwrap();
    let truncated = format!("{}{}", &sealed[..close - 5], &sealed[close..]);
    // Flip one ciphertext byte.
    let sealed3 = good(3).encode_sealed(&key).unwrap();
    let at = sealed3.find("{0x").unwrap() + 3;
    let c = &sealed3[at..at + 2];
    let flipped_byte = format!("{:02X}", u8::from_str_radix(c, 16).unwrap() ^ 0x01);
    let flipped = format!("{}{}{}", &sealed3[..at], flipped_byte, &sealed3[at + 2..]);
    // Plaintext from a logger registered with `encryption = "required"`.
    let plaintext = good(4).encode();
    let mut s = TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    send(
        &mut s,
        &[
            wrong_key,
            truncated,
            flipped,
            plaintext,
            good(5).encode_sealed(&key).unwrap(),
        ],
    )
    .await;
    // Only the last frame is answered: the connection went on after four refusals.
    let r = replies(&mut s, 1).await;
    assert_eq!((r[0].cn(), r[0].qn()), ("9014", good(5).qn()));
    let dl = eventually(10, "four refusals dead-lettered", || async {
        let v = deadletters(dir.path());
        (v.len() >= 4).then_some(v)
    })
    .await;
    assert_eq!(dl.len(), 4, "{dl:?}");
    for d in &dl {
        assert_eq!(d["reason"], "encryption", "{d}");
    }
    let details: Vec<&str> = dl
        .iter()
        .map(|d| d["detail"].as_str().unwrap_or(""))
        .collect();
    assert!(details[1].contains("16-byte"), "truncated: {}", details[1]);
    assert!(
        details[3].contains("must encrypt"),
        "plaintext: {}",
        details[3]
    );
    assert!(
        details.iter().all(|d| !d.contains(&key.to_hex())),
        "no key in a record"
    );
    // Nothing of the refused frames was stored; the good one is (4 readings).
    eventually(10, "the good frame stored", || async {
        (count(dir.path(), "sy-1-dal") == 4).then_some(())
    })
    .await;
    // The 2017 logger is not required to encrypt: its plaintext is taken.
    let mut s2 = TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    send(
        &mut s2,
        &[minute(MN_2017, 5, false, t0, 20.0, 6.0).encode()],
    )
    .await;
    assert_eq!(replies(&mut s2, 1).await[0].cn(), "9014");
    // Split packets that never complete are bounded per connection (16 waiting): the 17th
    // incomplete one pushes out the oldest, and that is counted.
    let parts: Vec<String> = (0..17)
        .map(|q| {
            packet(
                MN_2017,
                "31",
                "2051",
                7,
                &[("PNUM", "2"), ("PNO", "1")],
                t0 + q,
                vec![pairs(&[("DataTime", dt(t0))])],
            )
            .encode()
        })
        .collect();
    send(&mut s2, &parts).await;
    eventually(10, "one incomplete split packet dropped", || async {
        let m = get_text(running.http_addr, "/metrics").await;
        // The series exists once the first drop is counted; wait for it, then for exactly one.
        let name = r#"enviromon_hj212_frames_total{result="split_dropped"}"#;
        (m.contains(name) && metric(&m, name) == 1.0).then_some(())
    })
    .await;
    // A technician sets 双源 #2's key from the CLI, reading it from a file: the output shows its
    // fingerprint, never the key; from then on its sealed frames open too.
    let k2 = Key::new([0x6B; 16]);
    let key_file = dir.path().join("sy2.key");
    std::fs::write(&key_file, format!("{}\n", k2.to_hex())).unwrap();
    let server = format!("http://{}", running.http_addr);
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
            .arg("sensors")
            .args(args)
            .args(["--server", &server])
            .env("ENVIROMON_TOKEN", TECH)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let key_path = key_file.display().to_string();
    let (code, out) =
        tokio::task::spawn_blocking(move || cli(&["set-key", "sy-2-dal", "--key-file", &key_path]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&k2.fingerprint()) && !out.contains(&k2.to_hex()),
        "{out}"
    );
    let sealed = minute(MN_2017, 9, false, t0 + MINUTE_MS, 20.0, 6.0)
        .encode_sealed(&k2)
        .unwrap();
    send(&mut s2, &[sealed]).await;
    assert_eq!(replies(&mut s2, 1).await[0].cn(), "9014");
    eventually(10, "both of 双源 #2's frames stored", || async {
        (count(dir.path(), "sy-2-dal") == 8).then_some(())
    })
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_frames_in_flight_and_the_loggers_cn_1014_rotates_it_again() {
    let (k1, k2, k3) = (Key::new([1; 16]), Key::new([2; 16]), Key::new([3; 16]));
    let (_broker, dir, running) = fixture("enviromon-2025-rotation", None, Some(&k1)).await;
    let t0 = time::label(now_ms(), MINUTE_MS) - 40 * MINUTE_MS;
    let f = |i: i64| minute(MN_2025, 9, false, t0 + i * MINUTE_MS, 20.0, 6.0);
    // Frames the logger sealed under k1 before it learnt of the rotation arrive after it.
    let in_flight: Vec<String> = (0..3).map(|i| f(i).encode_sealed(&k1).unwrap()).collect();
    let v = set_key(running.http_addr, "sy-1-dal", &k2).await;
    assert_eq!(
        (v["before"].as_str(), v["after"].as_str()),
        (
            Some(k1.fingerprint().as_str()),
            Some(k2.fingerprint().as_str())
        )
    );
    let mut s = TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    send(&mut s, &in_flight).await;
    send(&mut s, &[f(3).encode_sealed(&k2).unwrap()]).await;
    let r = replies(&mut s, 4).await;
    assert!(
        r.iter().all(|r| r.cn() == "9014"),
        "old-key frames open during the overlap"
    );
    // The logger's own key update, sealed with the current key k2, carries k3.
    let update = packet(
        MN_2025,
        "31",
        "1014",
        9,
        &[],
        now_ms(),
        vec![pairs(&[("NewKey", k3.to_hex())])],
    );
    send(&mut s, &[update.encode_sealed(&k2).unwrap()]).await;
    let r = replies(&mut s, 1).await;
    assert_eq!((r[0].cn(), r[0].edition()), ("9013", Edition::Hj212_2025));
    let (_, st) = get_as(
        running.http_addr,
        "/api/v1/sensors/sy-1-dal/hj212-key",
        TECH,
    )
    .await;
    assert_eq!(st["fingerprint"], k3.fingerprint().as_str());
    assert_eq!(st["previous_fingerprint"], k2.fingerprint().as_str());
    assert!(st["set_by"].as_str().unwrap().contains("CN 1014"), "{st}");
    // k3 and (in the overlap) k2 open; k1, two rotations back, no longer does.
    send(
        &mut s,
        &[
            f(4).encode_sealed(&k3).unwrap(),
            f(5).encode_sealed(&k2).unwrap(),
            f(6).encode_sealed(&k1).unwrap(),
            f(7).encode_sealed(&k3).unwrap(),
        ],
    )
    .await;
    let r = replies(&mut s, 3).await;
    assert_eq!(
        r.iter()
            .map(|r| r.qn().unwrap().to_string())
            .collect::<Vec<_>>(),
        [f(4), f(5), f(7)]
            .iter()
            .map(|p| p.qn().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    let dl = deadletters(dir.path());
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert!(
        dl[0]["detail"].as_str().unwrap().contains("does not open"),
        "{}",
        dl[0]
    );
    // A plaintext key update is refused: a key never changes in the clear.
    let bad = packet(
        MN_2025,
        "31",
        "1014",
        9,
        &[],
        now_ms(),
        vec![pairs(&[("NewKey", Key::new([9; 16]).to_hex())])],
    );
    send(&mut s, &[bad.encode()]).await;
    eventually(10, "plaintext CN 1014 refused", || async {
        (deadletters(dir.path()).len() == 2).then_some(())
    })
    .await;
    let (_, st) = get_as(
        running.http_addr,
        "/api/v1/sensors/sy-1-dal/hj212-key",
        TECH,
    )
    .await;
    assert_eq!(st["fingerprint"], k3.fingerprint().as_str(), "unchanged");
    let (_, audit) = get_as(running.http_addr, "/api/v1/audit", OPERATOR).await;
    assert!(
        audit.to_string().contains("(CN 1014)"),
        "the logger's rotation is audited"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_exceedance_hour_raises_its_alert_in_alertmanager() {
    let am = alertmanager();
    let key = Key::new([0x42; 16]);
    let (_broker, dir, running) = fixture("enviromon-2025-resend", Some(am.port), Some(&key)).await;
    let mut s = TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    // After a link outage the logger re-sends (RF=1) the hour that ended three hours ago: SO2 80 at
    // O2 6 % → corrected 80 > 35. Live data of the latest hour, 20, is under the limit.
    let now = now_ms();
    // Hours are labelled by their end: `label(now)` is the end of the current hour.
    let late_end = time::label(now, HOUR_MS) - 3 * HOUR_MS;
    let live_end = time::label(now, HOUR_MS) - HOUR_MS;
    let resent: Vec<String> = (0..60)
        .map(|i| {
            minute(
                MN_2025,
                9,
                true,
                late_end - HOUR_MS + i * MINUTE_MS,
                80.0,
                6.0,
            )
            .encode_sealed(&key)
            .unwrap()
        })
        .collect();
    let live: Vec<String> = (0..60)
        .map(|i| {
            minute(
                MN_2025,
                9,
                false,
                live_end - HOUR_MS + i * MINUTE_MS,
                20.0,
                6.0,
            )
            .encode_sealed(&key)
            .unwrap()
        })
        .collect();
    send(&mut s, &live).await;
    assert_eq!(replies(&mut s, 60).await.len(), 60);
    send(&mut s, &resent).await;
    assert_eq!(replies(&mut s, 60).await.len(), 60);
    eventually(10, "live and re-sent hours stored", || async {
        (count(dir.path(), "sy-1-dal") == 480).then_some(())
    })
    .await;
    let hour = format!("/api/v1/cems/hourly?unit=sy-1&from={late_end}&to={late_end}");
    let so2 = &wait_results(running.http_addr, &hour, 1).await[0]["pollutants"]["SO2"];
    assert_eq!(
        (so2["corrected"].as_f64(), so2["exceeded"].as_bool()),
        (Some(80.0), Some(true))
    );
    // Counted apart: 60 re-sent frames × 4 readings, each once.
    let metrics = get_text(running.http_addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, "enviromon_hj212_resent_readings_total"),
        240.0
    );
    // The alert names the re-sent hour, in Alertmanager.
    let label = time::cst_rfc3339(late_end);
    let a = eventually(30, "the re-sent hour's alert in Alertmanager", || async {
        am_alerts(am.port).await.into_iter().find(|a| {
            a["labels"]["alertname"] == "cems_ultra_low_exceedance" && a["labels"]["unit"] == "sy-1"
        })
    })
    .await;
    assert_eq!(a["labels"]["hour"], label.as_str(), "{a}");
    assert_eq!(a["labels"]["pollutant"], "SO2");
    assert!(
        a["annotations"]["summary_zh"]
            .as_str()
            .unwrap()
            .contains(&format!("截至 {label}")),
        "{a}"
    );
    // Re-sent once more (the logger missed the replies): stored once, no new alert.
    send(&mut s, &resent).await;
    assert_eq!(replies(&mut s, 60).await.len(), 60);
    assert_eq!(count(dir.path(), "sy-1-dal"), 480, "idempotent");
    // The live hour under the limit has no alert of its own.
    let alerts = get_json(running.http_addr, "/api/v1/alerts").await;
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "cems_ultra_low_exceedance")
        .collect();
    assert_eq!(firing.len(), 1, "{firing:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electricity_heartbeats_and_site_parameters_with_history() {
    let key = Key::new([0x55; 16]);
    let (_broker, _dir, running) = fixture("enviromon-2025-site", None, Some(&key)).await;
    let mut s = TcpStream::connect(running.hj212_addr.unwrap())
        .await
        .unwrap();
    let t = time::label(now_ms(), MINUTE_MS) - 5 * MINUTE_MS;
    // ST 44: electricity of a production facility (d2xxxx) and a treatment facility (d3xxxx).
    let power = packet(
        MN_2025,
        "44",
        "2011",
        9,
        &[],
        t,
        vec![
            pairs(&[("DataTime", dt(t))]),
            pairs(&[("d20105-Rtd", "220.20".into()), ("d20105-Flag", "N".into())]),
            pairs(&[("d30406-Rtd", "0.04".into()), ("d30406-Flag", "N".into())]),
        ],
    );
    // A heartbeat that asks for an answer.
    let beat = packet(MN_2025, "31", "9015", 9, &[], t + 1, vec![]);
    // CN 3020 twice: the stack cross-section declared 6.06 m², then 3.5 m².
    let info = |area: &str, at: i64| {
        packet(
            MN_2025,
            "31",
            "3020",
            9,
            &[],
            at,
            vec![
                pairs(&[("DataTime", dt(at))]),
                pairs(&[("PolId", "a34013".into()), ("i13004-Info", area.into())]),
            ],
        )
    };
    send(
        &mut s,
        &[
            power.encode_sealed(&key).unwrap(),
            beat.encode(),
            info("6.06", t).encode_sealed(&key).unwrap(),
            info("3.5", t + MINUTE_MS).encode_sealed(&key).unwrap(),
        ],
    )
    .await;
    // The heartbeat's 9013 goes out at once; the others once their data is recorded.
    let r = replies(&mut s, 4).await;
    let mut cns: Vec<&str> = r.iter().map(|r| r.cn()).collect();
    cns.sort();
    assert_eq!(cns, ["9013", "9014", "9014", "9014"]);
    let beat_reply = r.iter().find(|r| r.cn() == "9013").unwrap();
    assert_eq!(beat_reply.qn(), beat.qn());
    assert!(r.iter().all(|r| r.edition() == Edition::Hj212_2025));
    // The electricity readings, in their own domain, under their codes.
    let latest = eventually(10, "ST 44 readings", || async {
        let v = get_json(running.http_addr, "/api/v1/readings/latest?sensor=sy-1-dal").await;
        let arr = v["readings"].as_array().cloned().unwrap_or_default();
        (arr.len() >= 2).then_some(arr)
    })
    .await;
    let d = latest
        .iter()
        .find(|r| r["quantity"] == "d20105")
        .expect("d20105");
    assert_eq!(
        (d["domain"].as_str(), d["value"].as_f64()),
        (Some("power"), Some(220.2)),
        "{d}"
    );
    // The changed area: audited, counted, and the site_parameters_changed alert fires.
    let a = eventually(15, "site_parameters_changed", || async {
        get_json(running.http_addr, "/api/v1/alerts").await["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["rule"] == "site_parameters_changed")
            .cloned()
    })
    .await;
    assert_eq!(
        (
            a["labels"]["parameter"].as_str(),
            a["labels"]["before"].as_str(),
            a["labels"]["after"].as_str()
        ),
        (Some("i13004"), Some("6.06"), Some("3.5")),
        "{a}"
    );
    assert_eq!(a["phase"], "firing");
    assert!(
        a["annotations"]["summary_zh"]
            .as_str()
            .unwrap()
            .contains("由 6.06 改为 3.5"),
        "{a}"
    );
    let metrics = get_text(running.http_addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, "enviromon_hj212_site_parameter_changes_total"),
        1.0
    );
    let (_, audit) = get_as(running.http_addr, "/api/v1/audit", OPERATOR).await;
    assert!(
        audit.to_string().contains("hj212_site_parameter") && audit.to_string().contains("3.5"),
        "{audit}"
    );
    // Declaring the same area again changes nothing.
    send(
        &mut s,
        &[info("3.5", t + 2 * MINUTE_MS).encode_sealed(&key).unwrap()],
    )
    .await;
    replies(&mut s, 1).await;
    let metrics = get_text(running.http_addr, "/metrics").await;
    assert_eq!(
        metric(&metrics, "enviromon_hj212_site_parameter_changes_total"),
        1.0
    );
    running.shutdown().await;
}
