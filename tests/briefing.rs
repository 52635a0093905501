//! The daily briefing end to end: readings over real MQTT into the standards and the alerts, the
//! `[report] daily_at` timer making the briefing when it is due (at start, for a run missed while
//! the daemon was down), the files it writes, the group robots it pushes to (DingTalk markdown
//! with the picture's link, WeCom the picture itself and markdown), a robot that refuses, the
//! picture served without a token, `POST /api/v1/briefings`, and `enviromon report` over HTTP
//! giving the same text as the daemon's own briefing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use enviromon::api::auth::hash_token;
use enviromon::config::{ApiToken, Config, PlainReceiver, Secret, WebhookReceiver};
use enviromon::daemon;
use enviromon::standards::time::{self, HOUR_MS, MINUTE_MS};
use md5::Digest;
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token-for-briefings";

fn config(dir: &std::path::Path, broker: u16, robots: Option<(u16, u16)>) -> Config {
    let mut cfg = daemon_config(dir, broker, "enviromon-briefing");
    cfg.standards.interval = Duration::from_millis(300);
    // The fixture's CEMS values are constant for an hour, which the integrity rules rightly
    // find; those findings would arrive between the daemon's briefing and the CLI's, which this
    // test compares (the briefing's integrity section is tested in `report`).
    cfg.standards.integrity.enabled = false;
    cfg.alerts.evaluation_interval = Duration::from_millis(300);
    cfg.api.tokens.push(ApiToken {
        name: "duty-operator".into(),
        role: enviromon::config::Role::Operator,
        sha256: hash_token(OPERATOR),
    });
    if let Some((hook, refusing)) = robots {
        cfg.alerts.dingtalk.push(WebhookReceiver {
            name: "dingtalk-duty".into(),
            url: format!("http://127.0.0.1:{hook}/hook?access_token=x"),
            secret: Some(Secret::new("SECbriefing")),
            secret_file: None,
        });
        cfg.alerts.wecom.push(PlainReceiver {
            name: "wecom-duty".into(),
            url: format!("http://127.0.0.1:{hook}/hook?key=y"),
        });
        cfg.alerts.wecom.push(PlainReceiver {
            name: "wecom-refusing".into(),
            url: format!("http://127.0.0.1:{refusing}/cgi-bin/webhook/send?key=wrong"),
        });
        // Due at 00:00 Beijing time, covering the previous day: at any time of day, the run of
        // today 00:00 is due and has not been made, so the daemon makes it as it starts.
        cfg.report.daily_at = "00:00".into();
        cfg.report.day = enviromon::config::BriefingDay::Previous;
        // Alert notifications go to the robots too; only the briefing is counted here.
        cfg.alerts.repeat_interval = Duration::from_secs(24 * 3600);
    }
    cfg.validate().expect("valid config");
    cfg
}

/// A robot that answers as WeCom does for a wrong key: HTTP 200 with a non-zero errcode. Counts
/// the pictures it was sent (the briefing's first message; alerts send markdown only).
async fn refusing_robot() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/cgi-bin/webhook/send",
        axum::routing::post(move |body: axum::Json<Value>| {
            if body["msgtype"] == "image" {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            async { axum::Json(json!({"errcode": 93000, "errmsg": "invalid webhook url"})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_briefing_is_made_when_due_pushed_to_the_robots_and_never_twice() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();

    // 1. Yesterday's 12:00 hour of 大唐 #1, uploaded late (as loggers do after an outage):
    //    SO2 40 at O2 9 % → corrected 40 × (21 − 6)/(21 − 9) = 50 mg/m³ > 35 (HJ 75), exceeded.
    let now = chrono::Utc::now().timestamp_millis();
    let yesterday = time::cst_date(now).pred_opt().unwrap();
    let end = time::day_start_ms(yesterday) + 12 * HOUR_MS;
    let running = daemon::start(config(dir.path(), broker.port, None))
        .await
        .unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-briefing").await;
    for i in 0..60 {
        p.publish(
            "enviromon/datang/dt-1-cems",
            json!({"ts": rfc3339(end - HOUR_MS + i * MINUTE_MS), "period": "1min",
                   "values": {"SO2": 40.0, "NOx": 30.0, "PM": 3.0, "O2": 9.0, "flue_flow": 900000.0}})
            .to_string(),
        )
        .await;
    }
    p.wait_acked().await;
    let hour = &wait_results(
        addr,
        &format!("/api/v1/cems/hourly?unit=dt-1&from={end}&to={end}"),
        1,
    )
    .await[0];
    assert_eq!(hour["pollutants"]["SO2"]["corrected"].as_f64(), Some(50.0));
    eventually(20, "the late exceedance fires", || async {
        let a = get_json(addr, "/api/v1/alerts").await;
        a["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["rule"] == "cems_ultra_low_exceedance" && a["phase"] == "firing")
            .then_some(())
    })
    .await;
    // The timer is off in this configuration: nothing was made.
    assert!(get_json(addr, "/api/v1/briefings").await["count"] == 0);
    running.shutdown().await;

    // 2. Restarted with `daily_at = "00:00"`: today's run is due, covering yesterday.
    let hook = Hook::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let _served = hook.serve(listener);
    let (refusing_port, refused_calls) = refusing_robot().await;
    let cfg = config(dir.path(), broker.port, Some((hook_port, refusing_port)));
    let running = daemon::start(cfg.clone()).await.unwrap();
    let addr = running.http_addr;
    let made = eventually(30, "the briefing is made and pushed", || async {
        let text = get_text(addr, "/metrics").await;
        let done = text.contains("enviromon_briefings_total{result=\"made\"} 1")
            && text.contains(
                "enviromon_briefing_pushes_total{receiver=\"wecom-refusing\",result=\"failed\"} 1",
            );
        done.then_some(text)
    })
    .await;
    assert_eq!(
        metric(
            &made,
            "enviromon_briefing_pushes_total{receiver=\"dingtalk-duty\",result=\"sent\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &made,
            "enviromon_briefing_pushes_total{receiver=\"wecom-duty\",result=\"sent\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&made, "enviromon_briefings_total{result=\"failed\"}"),
        0.0
    );
    // The refusing robot was tried PUSH_ATTEMPTS (4) times and each refusal read as a failure.
    assert_eq!(refused_calls.load(std::sync::atomic::Ordering::SeqCst), 4);

    let list = get_json(addr, "/api/v1/briefings").await;
    assert_eq!(list["count"], 1, "{list}");
    let m = &list["briefings"][0];
    assert_eq!(m["day"], yesterday.to_string());
    assert_eq!(m["pushed"]["dingtalk-duty"], "sent");
    assert_eq!(m["pushed"]["wecom-duty"], "sent");
    let refusal = m["pushed"]["wecom-refusing"].as_str().unwrap();
    assert!(refusal.contains("errcode 93000"), "{refusal}");
    let png_name = m["png"].as_str().expect("a picture").to_string();

    // The files: text with the day's figures.
    let bdir = dir.path().join("briefings");
    let text = std::fs::read_to_string(bdir.join(format!("{yesterday}.txt"))).unwrap();
    assert!(
        text.contains(&format!("daily briefing — {yesterday}")),
        "{text}"
    );
    assert!(
        text.contains("SO2 超限小时 / hours over the limit: 1 (1 台机组"),
        "{text}"
    );
    assert!(
        text.contains("NOx 超限小时 / hours over the limit: 0"),
        "{text}"
    );
    assert!(
        text.contains("当日无水质日报 / no water verdict this day"),
        "{text}"
    );
    // The firing alert, named as people know the unit, with its value and limit.
    assert!(text.contains("[critical] 大唐洛热 #1 机组 SO2"), "{text}");
    assert!(
        text.contains("50 mg/m³") && text.contains("35 mg/m³"),
        "{text}"
    );

    // The picture, without a token, by its link; anything else in the directory is not served.
    let resp = reqwest::get(format!("http://{addr}/briefings/{png_name}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let png = resp.bytes().await.unwrap().to_vec();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (
            enviromon::report::draw::WIDTH,
            enviromon::report::draw::HEIGHT
        )
    );
    for other in [
        format!("{yesterday}.json"),
        format!("{yesterday}.txt"),
        "x.png".into(),
    ] {
        let r = reqwest::get(format!("http://{addr}/briefings/{other}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{other}");
    }

    // What the robots got. DingTalk: one markdown, signed, with the picture's link and the
    // coloured standing of the exceedance; WeCom: the picture itself (its MD5 checks), then markdown.
    let bodies: Vec<Value> = hook
        .bodies()
        .into_iter()
        .filter(|b| {
            let t = b["markdown"]["title"].as_str().unwrap_or("");
            let c = b["markdown"]["content"].as_str().unwrap_or("");
            b["msgtype"] == "image" || t.contains("日报") || c.contains("日报")
        })
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let ding = bodies
        .iter()
        .find(|b| b["markdown"]["title"].is_string())
        .expect("DingTalk markdown");
    let md = ding["markdown"]["text"].as_str().unwrap();
    assert!(
        md.contains(&format!("http://127.0.0.1:8080/briefings/{png_name}")),
        "{md}"
    );
    assert!(
        md.contains("<font color=\"#d73027\">SO2 超限 1 机组·小时"),
        "{md}"
    );
    let image = bodies
        .iter()
        .find(|b| b["msgtype"] == "image")
        .expect("WeCom picture");
    let sent = base64::engine::general_purpose::STANDARD
        .decode(image["image"]["base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(sent, png, "the picture WeCom got is the one served");
    assert_eq!(
        image["image"]["md5"].as_str().unwrap(),
        hex::encode(md5::Md5::digest(&sent))
    );
    let wecom = bodies
        .iter()
        .find(|b| b["markdown"]["content"].is_string())
        .expect("WeCom markdown");
    assert!(
        wecom["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("<font color=\"warning\">SO2 超限 1"),
        "{wecom}"
    );

    // `enviromon report` over HTTP says what the daemon's own briefing says.
    let png_path = dir.path().join("cli.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["report", "--server"])
        .arg(format!("http://{addr}"))
        .arg("--day")
        .arg(yesterday.to_string())
        .arg("--png")
        .arg(&png_path)
        .output()
        .expect("run enviromon report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&text), "CLI:\n{stdout}\ndaemon:\n{text}");
    assert!(image::open(&png_path).is_ok());

    // Made on demand by an operator, without pushing: the day before, which has no data.
    let http = reqwest::Client::new();
    let before = yesterday.pred_opt().unwrap();
    let r = http
        .post(format!("http://{addr}/api/v1/briefings?day={before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "making one needs a token");
    let r = http
        .post(format!("http://{addr}/api/v1/briefings?day={before}"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["pushed"], json!({}));
    let empty = std::fs::read_to_string(bdir.join(format!("{before}.txt"))).unwrap();
    assert!(
        empty.contains("SO2 超限小时 / hours over the limit: 0 (0 台机组"),
        "{empty}"
    );
    running.shutdown().await;

    // 3. Restarted again the same day: the due briefing exists, so nothing is pushed twice.
    let running = daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(20, "the due briefing is found made", || async {
        let text = get_text(addr, "/metrics").await;
        text.contains("enviromon_briefings_total{result=\"already_made\"} 1")
            .then_some(())
    })
    .await;
    let text = get_text(addr, "/metrics").await;
    assert_eq!(
        metric(&text, "enviromon_briefings_total{result=\"made\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "enviromon_briefing_pushes_total{receiver=\"wecom-duty\",result=\"sent\"}"
        ),
        0.0
    );
    let briefings_pushed = hook
        .bodies()
        .iter()
        .filter(|b| b["msgtype"] == "image")
        .count();
    assert_eq!(briefings_pushed, 1);
    assert_eq!(get_json(addr, "/api/v1/briefings").await["count"], 2);
    running.shutdown().await;
}
