//! The web console in a real browser: Debian's headless Chromium driven through ChromeDriver's
//! W3C WebDriver protocol (plain HTTP, so no driver crate), against a running daemon with
//! Mosquitto. A technician adds an air station, registers its MQTT analyser through the form
//! after a dry run, sees its values on the status page and puts it in maintenance; the duty operator silences the alert it raises and sees a refused
//! message in the refusals view. Screenshots of the status, unit and register pages are taken on
//! a phone-sized window; with `ENVIROMON_SCREENSHOT_DIR` set (`scripts/screenshots`) they are
//! written there for the README.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use enviromon::api::auth::hash_token;
use enviromon::config::ApiToken;
use serde_json::{json, Value};

const TOKEN: &str = "console-operator-token";

/// ChromeDriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
    profile_dir: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} is missing: the console's browser tests need Debian's chromium and chromium-driver. \
         Run scripts/test (it installs them), or `apt-get install chromium chromium-driver`."
    );
}

async fn chromedriver() -> Driver {
    let bin = find("chromedriver");
    find("chromium");
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let profile = tempfile::tempdir().unwrap();
    let profile_dir = profile.path().to_path_buf();
    let d = Driver {
        child,
        url,
        _profile: profile,
        profile_dir,
    };
    let status = format!("{}/status", d.url);
    eventually(30, "chromedriver ready", || async {
        let r = reqwest::get(&status).await.ok()?;
        let v: Value = r.json().await.ok()?;
        (v["value"]["ready"] == true).then_some(())
    })
    .await;
    d
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    base: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn open(d: &Driver) -> Browser {
        let http = reqwest::Client::new();
        // The flags a closed network needs (no background connections), a fresh profile, and a
        // phone-sized window (412 × 915, a common Android size).
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": find("chromium").display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=412,915", "--lang=zh-CN",
                format!("--user-data-dir={}", d.profile_dir.display())]}}}});
        let r: Value = http
            .post(format!("{}/session", d.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", d.url),
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Run `script` in the page (its `return` value).
    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Wait until `css` matches an element, and give its WebDriver id.
    async fn element(&self, css: &str) -> String {
        let sel = css.to_string();
        eventually(30, &format!("element {css}"), || async {
            let r: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": sel}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            r["value"][ELEMENT].as_str().map(str::to_string)
        })
        .await
    }

    /// Click as a person would, once the element is in the middle of the window (clear of the
    /// sticky top bar).
    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.js(
            "arguments[0].scrollIntoView({block: 'center'});",
            json!([{ ELEMENT: e }]),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Type into a field as a person would (key events), after clearing it.
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Choose an option of a `<select>` by its value once the page has filled it in (and tell the
    /// page, as a person's choice does).
    async fn select(&self, css: &str, value: &str) {
        self.element(css).await;
        eventually(30, &format!("{css} offers {value:?}"), || async {
            let ok = self
                .js(
                    "const s = document.querySelector(arguments[0]);
                     if (!s || ![...s.options].some(o => o.value === arguments[1])) return false;
                     s.value = arguments[1]; s.dispatchEvent(new Event('input', {bubbles: true}));
                     s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
                    json!([css, value]),
                )
                .await;
            (ok == true).then_some(())
        })
        .await;
    }

    /// The text of the first element matching `css` ("" when there is none).
    async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Wait until the text of `css` satisfies `pred`; give it.
    async fn wait_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        eventually(30, what, || async {
            let t = self.text(css).await;
            pred(&t).then_some(t)
        })
        .await
    }

    async fn screenshot(&self, name: &str, dir: &Path) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }

    async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// A rule that fires at once on a high PM2.5 reading, so there is an alert to silence.
const RULES: &str = r#"
[[rule]]
name = "test_cod_high"
severity = "warning"
series = "reading"
quantity = "PM2.5"
condition = { above = 100 }
annotations = { summary_zh = "{{sensor_zh}} PM2.5 {{value}} 超过 100", summary_en = "{{sensor_en}} PM2.5 {{value}} above 100" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_adds_a_station_and_its_analyser_and_the_duty_operator_handles_its_alert_in_a_browser(
) {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let mut cfg = daemon_config(dir.path(), broker.port, "enviromon-console");
    cfg.api.tokens = vec![ApiToken {
        name: "duty-operator".into(),
        role: enviromon::config::Role::Operator,
        sha256: hash_token(TOKEN),
    }];
    cfg.alerts.rules_file = Some(rules);
    cfg.alerts.evaluation_interval = Duration::from_millis(300);
    cfg.validate().unwrap();
    let running = enviromon::daemon::start(cfg).await.unwrap();
    let addr = running.http_addr;
    eventually(10, "connected", || async {
        (running.metrics.mqtt_connected.get() == 1).then_some(())
    })
    .await;
    let shots = match std::env::var_os("ENVIROMON_SCREENSHOT_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            PathBuf::from(d)
        }
        None => dir.path().to_path_buf(),
    };
    let driver = chromedriver().await;
    let b = Browser::open(&driver).await;
    let site = format!("http://{addr}");

    // The console is served by the daemon itself, from the binary.
    b.goto(&format!("{site}/#/register")).await;
    b.type_into("#token", TOKEN).await;
    b.js(
        "document.querySelector('#token').dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await;

    // A new air station, through the site form.
    b.type_into("#site-form [data-path='id']", "aq-jianxi-5")
        .await;
    b.select("#site-form [data-path='kind']", "air_station")
        .await;
    b.type_into("#site-form [data-path='name_zh']", "涧西空气站5号")
        .await;
    b.type_into("#site-form [data-path='name_en']", "Jianxi air station 5")
        .await;
    b.click("#site-form [type='submit']").await;
    b.wait_text("#site-result", "site added", |t| t.contains("aq-jianxi-5"))
        .await;
    let sites = get_json(addr, "/api/v1/sites").await;
    assert!(
        sites["sites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "aq-jianxi-5" && x["kind"] == "air_station"),
        "{sites}"
    );

    // Register its MQTT PM2.5 analyser through the form, without a unit (an ambient analyser's
    // default is µg/m³), with a dry run first.
    let topic = "enviromon/aq-jianxi-5/aq5-pm";
    let form = "#sensor-form";
    b.type_into(&format!("{form} [data-path='id']"), "aq5-pm")
        .await;
    b.select(&format!("{form} [data-path='site']"), "aq-jianxi-5")
        .await;
    b.type_into(&format!("{form} [data-path='name_zh']"), "5号站颗粒物")
        .await;
    b.type_into(
        &format!("{form} [data-path='name_en']"),
        "station 5 particulates",
    )
    .await;
    b.select(&format!("{form} [data-path='domain']"), "air")
        .await;
    b.select(&format!("{form} [data-path='protocol']"), "mqtt")
        .await;
    b.type_into(&format!("{form} [data-path='topic']"), topic)
        .await;
    b.type_into(
        &format!("{form} [data-path='channels[0].quantity']"),
        "PM2.5",
    )
    .await;
    // Validated live, with the API's field paths: a unit it does not know is flagged at its field.
    let unit_field = format!("{form} [data-path='channels[0].unit']");
    b.type_into(&unit_field, "furlongs").await;
    eventually(30, "live field error", || async {
        let t = b
            .js(
                "const e = document.querySelector(arguments[0]);
                 const f = e && e.closest('.field') && e.closest('.field').querySelector('.field-error');
                 return f ? f.innerText : '';",
                json!([unit_field]),
            )
            .await;
        t.as_str().filter(|t| t.contains("unknown unit")).map(str::to_string)
    })
    .await;
    b.type_into(&unit_field, "").await;
    let mut p = Publisher::connect(broker.port, "pub-console").await;
    b.click("#dry-run").await;
    // The dry run listens from its request on: the analyser's message is sent until it is heard.
    let verdict = {
        let msg = json!({"quantity": "PM2.5", "value": 42.5}).to_string();
        let wait = b.wait_text("#dry-run-result .verdict", "dry-run verdict", |t| {
            !t.trim().is_empty()
        });
        tokio::pin!(wait);
        loop {
            p.publish(topic, msg.clone()).await;
            tokio::select! {
                t = &mut wait => break t,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    assert!(verdict.contains("OK"), "dry run: {verdict}");
    let result = b.text("#dry-run-result").await;
    assert!(
        result.contains("42.5") && result.contains("ug/m3"),
        "{result}"
    );
    // Nothing registered by the dry run.
    let r = reqwest::get(format!("{site}/api/v1/sensors/aq5-pm"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a dry run registers nothing");
    b.js(
        "document.querySelector('#dry-run-result').scrollIntoView({block: 'center'});",
        json!([]),
    )
    .await;
    b.screenshot("register", &shots).await;
    b.click("#commit").await;
    b.wait_text("#commit-result", "registered", |t| t.contains("aq5-pm"))
        .await;

    // A reading above the rule's 100: it shows on the status page, and raises the alert.
    p.publish(
        topic,
        json!({"quantity": "PM2.5", "value": 150.5}).to_string(),
    )
    .await;
    p.wait_acked().await;
    b.goto(&format!("{site}/#/status")).await;
    let value_css = "[data-sensor='aq5-pm'] .value[data-quantity='PM2.5']";
    b.wait_text(value_css, "value on the status page", |t| {
        t.contains("150.5")
    })
    .await;
    b.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
        json!([value_css]),
    )
    .await;
    b.screenshot("status", &shots).await;
    // Completeness today, for each unit and air station (whatever the hour: "n/m h").
    let c = b
        .wait_text(
            ".completeness[data-entity='dt-1']",
            "unit completeness",
            |t| t.contains("completeness today") && t.contains("SO2"),
        )
        .await;
    assert!(c.contains(" h"), "{c}");
    b.wait_text(
        ".completeness[data-entity='aq-jianxi-1']",
        "station completeness",
        |t| t.contains("completeness today"),
    )
    .await;

    // The duty page: the alert, silenced with a comment (refused without one).
    b.goto(&format!("{site}/#/duty")).await;
    let fp = eventually(30, "alert listed", || async {
        let v = b
            .js(
                "const r = [...document.querySelectorAll('#alerts [data-fingerprint]')]
                   .find(r => r.innerText.includes('test_cod_high'));
                 return r ? r.getAttribute('data-fingerprint') : null;",
                json!([]),
            )
            .await;
        v.as_str().map(str::to_string)
    })
    .await;
    let row = format!("#alerts [data-fingerprint='{fp}']");
    b.click(&format!("{row} .btn-silence")).await;
    let silences = get_json(addr, "/api/v1/silences").await;
    assert_eq!(
        silences["silences"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "no silence without a comment: {silences}"
    );
    b.type_into(
        &format!("{row} .comment-input"),
        "化验复核中 / lab re-check under way",
    )
    .await;
    b.click(&format!("{row} .btn-silence")).await;
    eventually(20, "silence created", || async {
        let v = get_json(addr, "/api/v1/silences").await;
        v["silences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                s["silence"]["comment"] == "化验复核中 / lab re-check under way"
                    && s["active"] == true
            })
            .cloned()
    })
    .await;

    // Acknowledged with a comment: who took it on shows in the API (and the row).
    b.type_into(&format!("{row} .comment-input"), "值班已接手 / on it")
        .await;
    b.click(&format!("{row} .btn-ack")).await;
    eventually(20, "acknowledged", || async {
        let v = get_json(addr, "/api/v1/alerts").await;
        let list = v["alerts"].as_array().cloned().unwrap_or_default();
        list.into_iter()
            .find(|a| a["fingerprint"] == fp.as_str() && a["acknowledged"]["by"] == "duty-operator")
    })
    .await;
    b.wait_text(&row, "acknowledged on the row", |t| {
        t.contains("duty-operator")
    })
    .await;

    // A refused message (not a number) shows in the refusals view with its reason and payload.
    p.publish(
        topic,
        json!({"quantity": "PM2.5", "value": "n/a"}).to_string(),
    )
    .await;
    p.wait_acked().await;
    let refusal = b
        .wait_text("#refusals", "refusal listed", |t| t.contains("n/a"))
        .await;
    assert!(refusal.contains(topic), "{refusal}");

    // Maintenance from the phone: on, with the reason the form asks for.
    b.goto(&format!("{site}/#/register")).await;
    let srow = "#sensor-list [data-sensor='aq5-pm']";
    b.click(&format!("{srow} .btn-maint-on")).await;
    b.type_into(
        &format!("{srow} .reason-input"),
        "更换试剂 / reagent change",
    )
    .await;
    b.click(&format!("{srow} .btn-confirm")).await;
    eventually(20, "in maintenance", || async {
        let v = get_json(addr, "/api/v1/sensors/aq5-pm").await;
        (v["status"] == "maintenance" && v["status_reason"] == "更换试剂 / reagent change")
            .then_some(())
    })
    .await;

    // History imported by the duty operator shows on the status page with its re-evaluation;
    // then the editions page compares its days. Two days of 2020 for the two stations: on
    // 2020-03-01 the district's PM2.5 is (66+74)/2 = 70 and PM10 (100+120)/2 = 110, AQI 94
    // (grade II) under HJ 633-2012 and 110 (III) under HJ 633-2026 (PM2.5 IAQI 50 + 50·35/40
    // = 93.75 → 94; 100 + 50·10/55 = 109.09 → 110); 2020-03-02 (PM2.5 30, PM10 40) is grade I
    // under both. So 2 of 2 days good under 2012, 1 of 2 under 2026: 50.0 %.
    let csv = two_station_days_csv();
    let form = reqwest::multipart::Form::new()
        .text("mapping", "period = \"1h\"\ntime_is = \"end\"\n")
        .part(
            "file",
            reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("stations-2020.csv"),
        );
    let r = reqwest::Client::new()
        .post(format!("{site}/api/v1/import"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    b.goto(&format!("{site}/#/status")).await;
    let imports = b
        .wait_text("#imports", "the import on the status page", |t| {
            t.contains("stations-2020.csv")
        })
        .await;
    assert!(imports.contains("576"), "{imports}");
    b.wait_text("#reevaluation", "re-evaluation done", |t| {
        t.contains("re-evaluation done")
    })
    .await;
    b.goto(&format!("{site}/#/compare")).await;
    b.element("#compare-form").await;
    b.js(
        "document.querySelector('#compare-from').value = '2020-03-01';
         document.querySelector('#compare-to').value = '2020-03-02';
         document.querySelector('#compare-form').requestSubmit();",
        json!([]),
    )
    .await;
    let rate = b
        .wait_text(
            "#compare-totals tr[data-edition='HJ633-2026'] td.rate",
            "2026 rate",
            |t| t.contains("50.0"),
        )
        .await;
    assert!(rate.contains('%'), "{rate}");
    b.wait_text(
        "#compare-totals tr[data-edition='HJ633-2012'] td.rate",
        "2012 rate",
        |t| t.contains("100.0"),
    )
    .await;
    b.element("#changed-days tr[data-day='2020-03-01'].good-change")
        .await;
    let bar = b
        .js(
            "const r = document.querySelector(\"#compare-chart rect.bar[data-edition='HJ633-2026'][data-month='2020-03']\");
             return r ? [r.getAttribute('data-rate'), r.getAttribute('height')] : null;",
            json!([]),
        )
        .await;
    assert_eq!(
        bar[0].as_str().map(|r| r.starts_with("50")),
        Some(true),
        "{bar}"
    );
    b.screenshot("compare", &shots).await;

    // The unit page: a chart of its corrected hours against its limits.
    b.goto(&format!("{site}/#/unit/dt-1")).await;
    b.element("#unit-chart").await;
    b.screenshot("unit", &shots).await;
    b.close().await;
    running.shutdown().await;
}
