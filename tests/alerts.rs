//! Alerts end to end: readings over MQTT (Mosquitto), rules evaluated by the daemon, notifications to
//! a real Alertmanager and to a test webhook receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use enviromon::config::{AlertmanagerReceiver, Config, Secret, WebhookReceiver};
use enviromon::daemon;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use serde_json::{json, Value};

const SECRET: &str = "webhook-test-secret";
const OPERATOR: &str = "operator-token";

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn hook() -> (Hook, u16) {
    let h = Hook::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    h.serve(l);
    (h, port)
}

fn alert_config(dir: &Path, mqtt: u16, id: &str, rules: Option<&str>, hook_port: u16) -> Config {
    let mut cfg = daemon_config(dir, mqtt, id);
    cfg.standards.interval = Duration::from_millis(200);
    cfg.alerts.evaluation_interval = Duration::from_millis(200);
    cfg.alerts.resend_interval = Duration::from_secs(1);
    cfg.alerts.webhook.push(WebhookReceiver {
        name: "test-hook".into(),
        url: format!("http://127.0.0.1:{hook_port}/hook"),
        secret: Some(Secret::new(SECRET)),
        secret_file: None,
    });
    cfg.api.tokens = vec![enviromon::config::ApiToken {
        name: "duty-operator".into(),
        role: enviromon::config::Role::Operator,
        sha256: enviromon::api::auth::hash_token(OPERATOR),
    }];
    if let Some(r) = rules {
        let f = dir.join("alerts.toml");
        std::fs::write(&f, r).unwrap();
        cfg.alerts.rules_file = Some(f);
    }
    cfg.validate().unwrap();
    cfg
}

async fn api_alerts(addr: std::net::SocketAddr, q: &str) -> Vec<Value> {
    get_json(addr, &format!("/api/v1/alerts{q}")).await["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cems_hourly_exceedance_fires_in_alertmanager_and_resolves_there() {
    let broker = mosquitto();
    let am = alertmanager();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-cems",
        None,
        hook_port,
    );
    cfg.alerts.alertmanager.push(AlertmanagerReceiver {
        url: format!("http://127.0.0.1:{}", am.port),
    });
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let hour = time::label(now_ms(), HOUR_MS) - HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-alerts-cems").await;
    let publish_hour = |so2: f64| {
        (0..60)
            .map(|i| json!({"ts": ts(hour - HOUR_MS + i * MINUTE_MS), "period": "1min", "values": {"SO2": so2, "O2": 6.0, "NOx": 30.0, "PM": 2.0}}).to_string())
            .collect::<Vec<_>>()
    };
    // SO2 40 at O2 6 %: corrected 40 > 35.
    for m in publish_hour(40.0) {
        p.publish("enviromon/datang/dt-1-cems", m).await;
    }
    p.wait_acked().await;
    let a = eventually(30, "the alert in Alertmanager", || async {
        am_alerts(am.port)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "cems_ultra_low_exceedance")
    })
    .await;
    assert_eq!(a["labels"]["unit"], "dt-1");
    assert_eq!(a["labels"]["pollutant"], "SO2");
    assert_eq!(a["labels"]["site"], "datang");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["status"]["state"], "active");
    // One alert per exceeded hour: its label names the hour's end (Beijing time).
    let hour_label = time::cst_rfc3339(hour);
    assert_eq!(a["labels"]["hour"], hour_label.as_str());
    // The plant and unit by name, the hour, the value against the limit (seeds: dt-1 is
    // "大唐洛热 #1 机组"; 40 at O2 6 % corrected to 6 % is 40).
    assert_eq!(
        a["annotations"]["summary_zh"],
        format!("大唐洛热 #1 机组 SO2 截至 {hour_label} 的小时折算浓度 40 mg/m³，超过超低排放限值 35 mg/m³")
    );
    // Alertmanager's own fields: summary (Chinese / English) and description (with what to do).
    let summary = a["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("大唐洛热 #1 机组 SO2")
            && summary.contains(" / Datang Luoyang unit 1 SO2"),
        "{summary}"
    );
    let description = a["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("处置：联系电厂值班")
            && description.contains("What to do: call the plant"),
        "{description}"
    );
    // The link opens that unit's hour.
    let link = a["generatorURL"].as_str().unwrap();
    assert!(
        link.contains("/api/v1/cems/hourly?unit=dt-1&from="),
        "{link}"
    );
    let path = link
        .split_once("127.0.0.1")
        .map(|(_, p)| {
            p.split_once('/')
                .map(|(_, p)| format!("/{p}"))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let hourly = get_json(running.http_addr, &path).await;
    assert_eq!(hourly["count"], 1, "{link}: {hourly}");
    // The correction: the same hour re-sent at 20 (≤ 35 × 0.95): resolved, and gone from Alertmanager.
    for m in publish_hour(20.0) {
        p.publish("enviromon/datang/dt-1-cems", m).await;
    }
    p.wait_acked().await;
    eventually(30, "resolved in Alertmanager", || async {
        (!am_alerts(am.port)
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "cems_ultra_low_exceedance"))
        .then_some(())
    })
    .await;
    let resolved = api_alerts(running.http_addr, "?state=resolved").await;
    assert!(resolved
        .iter()
        .any(|a| a["rule"] == "cems_ultra_low_exceedance"));
    let events = hook.events();
    assert_eq!(
        events
            .iter()
            .filter(|(s, r)| s == "firing" && r == "cems_ultra_low_exceedance")
            .count(),
        1
    );
    eventually(10, "resolved notification", || async {
        hook.events()
            .iter()
            .any(|(s, r)| s == "resolved" && r == "cems_ultra_low_exceedance")
            .then_some(())
    })
    .await;
    // The resolved notification says what is true now, not the firing text again.
    let resolved_body = hook
        .bodies()
        .into_iter()
        .find(|b| b["status"] == "resolved" && b["alert"]["rule"] == "cems_ultra_low_exceedance")
        .unwrap();
    let text = resolved_body["alert"]["annotations"]["summary_zh"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("超标小时已结束") && !text.contains("超过超低排放限值"),
        "{text}"
    );
    running.shutdown().await;
}

/// A local silence must never read as "resolved" downstream: Alertmanager keeps the alert firing,
/// silenced by the same silence there, for longer than its endsAt horizon; expiring it here
/// expires it there. And a test notification reaches a receiver on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_keeps_the_alert_firing_in_alertmanager_and_a_test_notification_arrives() {
    let broker = mosquitto();
    let am = alertmanager();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-silence-am",
        None,
        hook_port,
    );
    cfg.alerts.alertmanager.push(AlertmanagerReceiver {
        url: format!("http://127.0.0.1:{}", am.port),
    });
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let hour = time::label(now_ms(), HOUR_MS) - HOUR_MS;
    let mut p = Publisher::connect(broker.port, "pub-alerts-silence-am").await;
    for i in 0..60 {
        p.publish(
            "enviromon/datang/dt-1-cems",
            json!({"ts": ts(hour - HOUR_MS + i * MINUTE_MS), "period": "1min", "values": {"SO2": 40.0, "O2": 6.0, "NOx": 30.0, "PM": 2.0}}).to_string(),
        )
        .await;
    }
    p.wait_acked().await;
    eventually(30, "the alert in Alertmanager", || async {
        am_alerts(am.port)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "cems_ultra_low_exceedance")
    })
    .await;
    let post = |body: Value, q: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/silences{q}"))
            .bearer_auth(OPERATOR)
            .json(&body)
            .send()
    };
    // A silence without a comment is refused; a preview lists what it would match.
    let r = post(json!({"matchers": {"alertname": "cems_ultra_low_exceedance", "unit": "dt-1"}, "duration": "1h"}), "").await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = post(json!({"matchers": {"alertname": "cems_ultra_low_exceedance", "unit": "dt-1"}, "duration": "1h", "comment": "FGD repair, ticket 42"}), "?dry_run=true").await.unwrap().json().await.unwrap();
    assert_eq!(v["matches"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["warning"].is_null());
    let v: Value = post(
        json!({"matchers": {"alertname": "no_such_rule"}, "duration": "1h", "comment": "x"}),
        "?dry_run=true",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(v["warning"].as_str().unwrap().contains("matches no"), "{v}");
    let r = post(json!({"matchers": {"alertname": "cems_ultra_low_exceedance", "unit": "dt-1"}, "duration": "1h", "comment": "FGD repair, ticket 42"}), "").await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        created["silence"]["created_by"], "duty-operator",
        "the author is the token's name"
    );
    let silenced_at = now_ms();
    // Mirrored into Alertmanager, by the same author …
    let am_silence = eventually(20, "the silence in Alertmanager", || async {
        am_silences(am.port)
            .await
            .into_iter()
            .find(|s| s["status"]["state"] == "active")
    })
    .await;
    assert_eq!(am_silence["createdBy"], "duty-operator");
    // … and the alert stays there, suppressed, well past the endsAt it had when silenced (4 ×
    // resend_interval = 4 s): enviromon keeps re-posting it.
    eventually(
        30,
        "the silenced alert still active in Alertmanager past its horizon",
        || async {
            am_alerts(am.port).await.into_iter().find(|a| {
                a["labels"]["alertname"] == "cems_ultra_low_exceedance"
                    && a["status"]["state"] == "suppressed"
                    && a["endsAt"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t.timestamp_millis() > silenced_at + 8_000)
            })
        },
    )
    .await;
    assert!(
        !hook.events().iter().any(|(s, _)| s == "resolved"),
        "nothing said resolved: {:?}",
        hook.events()
    );
    // Expired here: expired there, and the alert is active (unsilenced) again.
    let id = created["silence"]["id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .delete(format!("http://{addr}/api/v1/silences/{id}"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(20, "active again in Alertmanager", || async {
        am_alerts(am.port).await.into_iter().find(|a| {
            a["labels"]["alertname"] == "cems_ultra_low_exceedance"
                && a["status"]["state"] == "active"
        })
    })
    .await;
    // A test notification, on request, to the webhook and to Alertmanager.
    let receivers: Value = get_json(addr, "/api/v1/receivers").await;
    let names: Vec<&str> = receivers["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"alertmanager-0"), "{names:?}");
    for name in &names {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/receivers/{name}/test"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    assert!(hook
        .bodies()
        .iter()
        .any(|b| b["alert"]["rule"] == "enviromon_test_notification"));
    eventually(10, "the test alert in Alertmanager", || async {
        am_alerts(am.port)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "enviromon_test_notification")
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/receivers/nobody/test"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    running.shutdown().await;
}

const HYSTERESIS_RULES: &str = r#"
[[rule]]
name = "so2_high"
severity = "warning"
series = "reading"
sensor = "dt-2-cems"
quantity = "SO2"
condition = { above = 50.0 }
clear = { below = 40.0 }
annotations = { summary_zh = "{{sensor}} SO2 {{value}}", summary_en = "{{sensor}} SO2 {{value}}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_inside_the_hysteresis_band_do_not_flap_and_the_webhook_is_signed() {
    let broker = mosquitto();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-hyst",
        Some(HYSTERESIS_RULES),
        hook_port,
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-alerts-hyst").await;
    let send = |v: f64| json!({"ts": now_ms(), "quantity": "SO2", "value": v}).to_string();
    p.publish("enviromon/datang/dt-2-cems", send(52.0)).await;
    eventually(10, "firing", || async {
        hook.events()
            .contains(&("firing".into(), "so2_high".into()))
            .then_some(())
    })
    .await;
    // Around the threshold but inside the band (40 … 50): no resolve, no second page.
    for v in [45.0, 51.0, 44.0, 49.0, 41.0] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        p.publish("enviromon/datang/dt-2-cems", send(v)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        hook.events(),
        vec![("firing".to_string(), "so2_high".to_string())],
        "one page, no flapping"
    );
    p.publish("enviromon/datang/dt-2-cems", send(39.0)).await;
    eventually(10, "resolved", || async {
        (hook.events().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        hook.events()[1],
        ("resolved".to_string(), "so2_high".to_string())
    );
    // Every call is signed: sha256=HMAC(secret, body), checked here with an independent HMAC.
    use hmac::Mac;
    for (sig, body) in hook.calls.lock().unwrap().iter() {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        assert_eq!(
            sig.as_deref(),
            Some(format!(
                "sha256={}",
                hex::encode(mac.finalize().into_bytes())
            ))
            .as_deref()
        );
    }
    assert_eq!(
        hook.bodies()[0]["alert"]["annotations"]["summary_zh"],
        "dt-2-cems SO2 52"
    );
    running.shutdown().await;
}

const NO_DATA_RULES: &str = r#"
[[rule]]
name = "o2_silent"
severity = "warning"
series = "reading"
sensor = "sy-1-cems"
quantity = "O2"
condition = { no_data = "2s" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_fires_on_time_and_a_restart_neither_repages_nor_forgets() {
    let broker = mosquitto();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-nodata",
        Some(NO_DATA_RULES),
        hook_port,
    );
    let running = daemon::start(cfg.clone()).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-alerts-nodata").await;
    p.publish(
        "enviromon/shuangyuan/sy-1-cems",
        json!({"ts": now_ms(), "quantity": "O2", "value": 6.0}).to_string(),
    )
    .await;
    p.wait_acked().await;
    eventually(5, "the reading stored", || async {
        (running
            .metrics
            .readings_written
            .with_label_values(&["embedded"])
            .get()
            == 1)
            .then_some(())
    })
    .await;
    let stored_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(hook.events().is_empty(), "not before 2 s of silence");
    eventually(5, "no-data alert with nothing arriving", || async {
        (!hook.events().is_empty()).then_some(())
    })
    .await;
    let after = stored_at.elapsed();
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(4),
        "fired {after:?} after the last reading"
    );
    assert_eq!(
        hook.events(),
        vec![("firing".to_string(), "o2_silent".to_string())]
    );
    running.shutdown().await;

    // Restart while firing: no new page.
    let running = daemon::start(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hook.events().len(),
        1,
        "no duplicate page after the restart: {:?}",
        hook.events()
    );
    let firing = api_alerts(running.http_addr, "?state=firing").await;
    assert_eq!(firing.len(), 1, "the firing alert is remembered");
    // Data again: it resolves, and the resolve still arrives.
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    p.publish(
        "enviromon/shuangyuan/sy-1-cems",
        json!({"ts": now_ms(), "quantity": "O2", "value": 6.1}).to_string(),
    )
    .await;
    eventually(10, "resolved after restart", || async {
        hook.events()
            .contains(&("resolved".into(), "o2_silent".into()))
            .then_some(())
    })
    .await;
    running.shutdown().await;
}

const SUPPRESS_RULES: &str = r#"
[[rule]]
name = "so2_high_sy2"
severity = "warning"
series = "reading"
sensor = "sy-2-cems"
quantity = "SO2"
condition = { above = 50.0 }

[[rule]]
name = "so2_high_dt1"
severity = "warning"
series = "reading"
sensor = "dt-1-cems"
quantity = "SO2"
condition = { above = 50.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_suppresses_and_a_silence_expires_on_time() {
    let broker = mosquitto();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    // dt-1's CEMS is in maintenance (its readings are flagged M): its rule must not fire.
    let seeds = dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for (name, text) in enviromon::registry::EMBEDDED_SEEDS {
        let text = if name == "sensors.toml" {
            text.replacen(
                "id = \"dt-1-cems\"",
                "id = \"dt-1-cems\"\nstatus = \"maintenance\"",
                1,
            )
        } else {
            text.to_string()
        };
        std::fs::write(seeds.join(name), text).unwrap();
    }
    let mut cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-suppress",
        Some(SUPPRESS_RULES),
        hook_port,
    );
    cfg.registry.seeds_dir = Some(seeds);
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    // A silence on sy-2's rule for 2 s.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/silences"))
        .bearer_auth(OPERATOR)
        .json(&json!({"matchers": {"alertname": "so2_high_sy2"}, "duration": "2s", "comment": "FGD work"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let silenced_at = std::time::Instant::now();
    let mut p = Publisher::connect(broker.port, "pub-alerts-suppress").await;
    p.publish(
        "enviromon/shuangyuan/sy-2-cems",
        json!({"ts": now_ms(), "quantity": "SO2", "value": 60.0}).to_string(),
    )
    .await;
    p.publish(
        "enviromon/datang/dt-1-cems",
        json!({"ts": now_ms(), "quantity": "SO2", "value": 60.0}).to_string(),
    )
    .await;
    p.wait_acked().await;
    eventually(5, "sy-2 alert firing but silenced", || async {
        let a = api_alerts(addr, "?state=firing").await;
        a.iter()
            .any(|a| a["rule"] == "so2_high_sy2" && a["silenced"] == true)
            .then_some(())
    })
    .await;
    assert!(hook.events().is_empty(), "silenced: no notification");
    eventually(6, "notified once the silence ends", || async {
        hook.events()
            .contains(&("firing".into(), "so2_high_sy2".into()))
            .then_some(())
    })
    .await;
    assert!(
        silenced_at.elapsed() >= Duration::from_secs(2),
        "not before the silence's end"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !hook.events().iter().any(|(_, r)| r == "so2_high_dt1"),
        "maintenance suppresses: {:?}",
        hook.events()
    );
    assert!(!api_alerts(addr, "")
        .await
        .iter()
        .any(|a| a["rule"] == "so2_high_dt1"));
    // Bad silences are refused with every reason: no matcher, no comment, an end in the past.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/silences"))
        .bearer_auth(OPERATOR)
        .json(&json!({"matchers": {}, "ends_at": "2000-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["errors"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_retried_without_blocking_ingest() {
    let broker = mosquitto();
    let hook_port = free_port(); // nothing listens there yet
    let dir = tempfile::tempdir().unwrap();
    let running = daemon::start(alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-down",
        Some(HYSTERESIS_RULES),
        hook_port,
    ))
    .await
    .unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-alerts-down").await;
    p.publish(
        "enviromon/datang/dt-2-cems",
        json!({"ts": now_ms(), "quantity": "SO2", "value": 55.0}).to_string(),
    )
    .await;
    eventually(10, "retrying", || async {
        (running
            .metrics
            .alert_notifications
            .with_label_values(&["test-hook", "retried"])
            .get()
            >= 2)
            .then_some(())
    })
    .await;
    // Ingest goes on: 200 readings stored while the receiver is down.
    let base = now_ms() - 100_000;
    for i in 0..200 {
        p.publish(
            "enviromon/datang/dt-1-cems",
            json!({"ts": base + i, "quantity": "NOx", "value": 20.0}).to_string(),
        )
        .await;
    }
    p.wait_acked().await;
    let db = running.db_path.clone();
    eventually(10, "ingest unaffected", || async {
        let c = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE sensor='dt-1-cems' AND quantity='NOx'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (n == 200).then_some(())
    })
    .await;
    // The receiver comes up: the retried notification arrives.
    let h = Hook::default();
    h.serve(
        tokio::net::TcpListener::bind(("127.0.0.1", hook_port))
            .await
            .unwrap(),
    );
    eventually(15, "delivered after the receiver returns", || async {
        h.events()
            .contains(&("firing".into(), "so2_high".into()))
            .then_some(())
    })
    .await;
    assert!(
        running
            .metrics
            .alert_notifications
            .with_label_values(&["test-hook", "sent"])
            .get()
            >= 1
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_without_restart_and_a_bad_file_keeps_the_old_rules() {
    let broker = mosquitto();
    let (_hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-reload",
        Some(HYSTERESIS_RULES),
        hook_port,
    );
    let file = cfg.alerts.rules_file.clone().unwrap();
    let running = daemon::start(cfg).await.unwrap();
    let names = |v: Value| -> Vec<String> {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(get_json(running.http_addr, "/api/v1/alerts/rules").await),
        vec!["so2_high"]
    );
    // mtime resolution can be a second: make sure the new file's differs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, format!("{HYSTERESIS_RULES}{NO_DATA_RULES}")).unwrap();
    eventually(10, "reloaded", || async {
        (names(get_json(running.http_addr, "/api/v1/alerts/rules").await).len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "[[rule]]\nname = \"broken\"\n").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        names(get_json(running.http_addr, "/api/v1/alerts/rules").await),
        vec!["so2_high", "o2_silent"],
        "old rules stay"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_and_wecom_robots_get_markdown_messages() {
    let broker = mosquitto();
    let (hook, hook_port) = hook().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = alert_config(
        dir.path(),
        broker.port,
        "enviromon-alerts-robots",
        Some(HYSTERESIS_RULES),
        free_port(),
    );
    cfg.alerts.webhook.clear();
    cfg.alerts.dingtalk.push(WebhookReceiver {
        name: "dingtalk".into(),
        url: format!("http://127.0.0.1:{hook_port}/hook?access_token=x"),
        secret: Some(Secret::new("SECxyz")),
        secret_file: None,
    });
    cfg.alerts.wecom.push(enviromon::config::PlainReceiver {
        name: "wecom".into(),
        url: format!("http://127.0.0.1:{hook_port}/hook?key=y"),
    });
    let running = daemon::start(cfg).await.unwrap();
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-alerts-robots").await;
    p.publish(
        "enviromon/datang/dt-2-cems",
        json!({"ts": now_ms(), "quantity": "SO2", "value": 57.0}).to_string(),
    )
    .await;
    let bodies = eventually(10, "both robots called", || async {
        let b = hook.bodies();
        (b.len() == 2).then_some(b)
    })
    .await;
    let ding = bodies
        .iter()
        .find(|b| b["markdown"]["title"].is_string())
        .expect("DingTalk body");
    assert_eq!(ding["msgtype"], "markdown");
    let text = ding["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains("告警 / FIRING") && text.contains("dt-2-cems SO2 57"),
        "{text}"
    );
    let wecom = bodies
        .iter()
        .find(|b| b["markdown"]["content"].is_string())
        .expect("WeCom body");
    assert_eq!(wecom["msgtype"], "markdown");
    running.shutdown().await;
}
