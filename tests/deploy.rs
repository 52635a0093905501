//! The operators' view and the deployment, checked against the real tools (issue 8).
//!
//! - Every Grafana dashboard under `deploy/grafana/dashboards/` parses; every InfluxQL query in it
//!   (panel targets and template variables), with Grafana's macros substituted the way Grafana does,
//!   runs without error against Debian's InfluxDB 1.x populated by `enviromon demo` through the
//!   InfluxDB v1 store backend, and every panel of the overview returns data for the demo's day.
//! - Every PromQL query of the dashboards runs on a real Prometheus scraping that demo, and every
//!   `enviromon_*` metric the dashboards and the Prometheus rules name is one the daemon registers.
//! - `enviromon report` draws the day's PNG from the same demo.
//! - `promtool check config`, `promtool check rules`, `promtool test rules`, `amtool check-config`.
//! - The compose file names only files that exist and variables `.env.example` defines, and the
//!   daemon accepts the configuration it mounts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use common::{binary, eventually, free_port, influxdb1, influxql, Server};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Dashboards: parsing, panels, targets.

const DASHBOARDS: [&str; 5] = ["overview", "cems", "air", "water", "system"];
const INFLUX_UID: &str = "enviromon-influxql";
const PROM_UID: &str = "enviromon-prometheus";

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/grafana/dashboards") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        out.push((stem.to_string(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for name in DASHBOARDS {
        assert!(
            out.iter().any(|(n, _)| n == name),
            "deploy/grafana/dashboards/{name}.json is missing"
        );
    }
    out
}

/// Panels, including those inside collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ds {
    Influx,
    Prom,
}

fn ds_of(v: &Value) -> Option<Ds> {
    match v["datasource"]["uid"].as_str() {
        Some(INFLUX_UID) => Some(Ds::Influx),
        Some(PROM_UID) => Some(Ds::Prom),
        _ => None,
    }
}

struct Target {
    panel: String,
    ds: Ds,
    query: String,
}

fn targets(panel: &Value) -> Vec<Target> {
    let title = panel["title"].as_str().unwrap_or("").to_string();
    let mut out = Vec::new();
    for t in panel["targets"].as_array().into_iter().flatten() {
        let ds = ds_of(t).or_else(|| ds_of(panel)).unwrap_or_else(|| {
            panic!("panel {title:?}: target without the enviromon datasource uid: {t}")
        });
        let query = match ds {
            Ds::Influx => {
                assert_eq!(
                    t["rawQuery"], true,
                    "panel {title:?}: InfluxQL targets must be raw queries"
                );
                t["query"].as_str()
            }
            Ds::Prom => t["expr"].as_str(),
        }
        .unwrap_or_else(|| panic!("panel {title:?}: target without a query: {t}"))
        .to_string();
        out.push(Target {
            panel: title.clone(),
            ds,
            query,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Grafana's time ranges and macros.

const CST: i32 = 8 * 3600;

/// A Grafana relative time (`now`, `now-30d`, `now/d`, `now-1d/d`, `now/y`) in the dashboard's
/// time zone (Asia/Shanghai, UTC+8, no DST). `end` rounds up to the end of the unit, as Grafana
/// does for the `to` field.
fn grafana_time(expr: &str, now_ms: i64, end: bool) -> i64 {
    let tz = FixedOffset::east_opt(CST).expect("UTC+8");
    let rest = expr
        .strip_prefix("now")
        .unwrap_or_else(|| panic!("unsupported time {expr:?}"));
    let (offset, round) = match rest.split_once('/') {
        Some((o, r)) => (o, Some(r)),
        None => (rest, None),
    };
    let mut t = now_ms;
    if !offset.is_empty() {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let body = &offset[1..];
        let (n, unit) = body.split_at(body.len() - 1);
        let n: i64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad offset in {expr:?}"));
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => panic!("unsupported unit in {expr:?}"),
        };
        t += sign * n * unit_ms;
    }
    if let Some(r) = round {
        let local = tz.timestamp_millis_opt(t).single().expect("time");
        let date = local.date_naive();
        let start = match r {
            "d" => date,
            "w" => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
            "M" => NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("date"),
            "y" => NaiveDate::from_ymd_opt(date.year(), 1, 1).expect("date"),
            _ => panic!("unsupported rounding in {expr:?}"),
        };
        let next = match r {
            "d" => start + chrono::Days::new(1),
            "w" => start + chrono::Days::new(7),
            "M" => start + chrono::Months::new(1),
            _ => start + chrono::Months::new(12),
        };
        let at = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .expect("time")
                .timestamp_millis()
        };
        t = if end { at(next) - 1 } else { at(start) };
    }
    t
}

/// A panel's own range: Grafana's relative time override (`timeFrom`: "24h" → now-24h to now, or
/// a `now…` expression) and time shift (`timeShift`: "1d" moves both ends back).
fn panel_range(panel: &Value, from: i64, to: i64, now: i64) -> (i64, i64) {
    let span = |s: &str| {
        humantime::parse_duration(s)
            .unwrap_or_else(|e| panic!("panel time {s:?}: {e}"))
            .as_millis() as i64
    };
    let (mut from, mut to) = match panel["timeFrom"].as_str().filter(|s| !s.is_empty()) {
        Some(f) if f.starts_with("now") => (grafana_time(f, now, false), now),
        Some(f) => (now - span(f), now),
        None => (from, to),
    };
    if let Some(shift) = panel["timeShift"].as_str().filter(|s| !s.is_empty()) {
        let d = span(shift);
        from -= d;
        to -= d;
    }
    (from, to)
}

/// Grafana's automatic interval: the range over ~1000 points, rounded to a round step.
fn auto_interval(from: i64, to: i64) -> &'static str {
    let per_point = (to - from) / 1000;
    for (ms, s) in [
        (1_000, "1s"),
        (10_000, "10s"),
        (60_000, "1m"),
        (300_000, "5m"),
        (600_000, "10m"),
        (3_600_000, "1h"),
    ] {
        if per_point <= ms {
            return s;
        }
    }
    "1d"
}

fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\.+*?()|[]{}^$/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Substitute Grafana's macros and template variables. Inside a regex (`/^$var$/`), a variable
/// becomes `(a|b|c)` of its regex-escaped values, as Grafana formats multi-value variables there;
/// elsewhere its first value.
fn substitute(q: &str, from: i64, to: i64, vars: &BTreeMap<String, Vec<String>>) -> String {
    let mut s = q
        .replace(
            "$timeFilter",
            &format!("time >= {from}ms and time <= {to}ms"),
        )
        .replace("$__interval_ms", &(auto_interval_ms(from, to)).to_string())
        .replace("$__interval", auto_interval(from, to))
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__from", &from.to_string())
        .replace("$__to", &to.to_string());
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let values = &vars[name];
        let regex = format!(
            "({})",
            values
                .iter()
                .map(|v| regex_escape(v))
                .collect::<Vec<_>>()
                .join("|")
        );
        let first = values.first().cloned().unwrap_or_default();
        for form in [
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            let in_regex = format!("/^{form}$/");
            s = s.replace(&in_regex, &format!("/^{regex}$/"));
            s = s.replace(&form, &first);
        }
    }
    let left = s.char_indices().filter(|(_, c)| *c == '$').any(|(i, _)| {
        s[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
    });
    assert!(!left, "unsubstituted macro left in {q:?} → {s:?}");
    s
}

fn auto_interval_ms(from: i64, to: i64) -> i64 {
    humantime::parse_duration(auto_interval(from, to))
        .map(|d| d.as_millis() as i64)
        .unwrap_or(60_000)
}

fn influx_error(v: &Value) -> Option<String> {
    if let Some(e) = v["error"].as_str() {
        return Some(e.to_string());
    }
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| r["error"].as_str().map(str::to_string))
}

/// Non-null values across every series of an InfluxQL answer (the time column excluded).
fn influx_values(v: &Value) -> usize {
    let mut n = 0;
    for r in v["results"].as_array().into_iter().flatten() {
        for s in r["series"].as_array().into_iter().flatten() {
            let time_col = s["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|x| x == "time"));
            for row in s["values"].as_array().into_iter().flatten() {
                for (i, cell) in row.as_array().into_iter().flatten().enumerate() {
                    if Some(i) != time_col && !cell.is_null() {
                        n += 1;
                    }
                }
            }
        }
    }
    n
}

/// The values a template variable's query returns (`SHOW TAG VALUES` → the `value` column).
fn variable_values(v: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    for r in v["results"].as_array().into_iter().flatten() {
        for s in r["series"].as_array().into_iter().flatten() {
            let col = s["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|x| x == "value"))
                .unwrap_or(0);
            for row in s["values"].as_array().into_iter().flatten() {
                match &row[col] {
                    Value::String(x) => {
                        out.insert(x.clone());
                    }
                    Value::Null => {}
                    other => {
                        out.insert(other.to_string());
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The demo, writing into InfluxDB 1.x.

struct Demo {
    child: Child,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(influx_port: u16) -> Demo {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("influx.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nkind = \"influxdb1\"\n[store.influxdb1]\nurl = \"http://127.0.0.1:{influx_port}\"\ndatabase = \"enviromon\"\n"
        ),
    )
    .expect("write config");
    let http = free_port();
    let log = std::fs::File::create(dir.path().join("demo.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["demo", "--duration", "15m", "--http"])
        .arg(format!("127.0.0.1:{http}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start enviromon demo");
    Demo {
        child,
        http,
        _dir: dir,
    }
}

fn prometheus(scrape_port: u16) -> Server {
    let bin = binary("prometheus", "prometheus");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    Server::launch(
        "prometheus",
        port,
        dir,
        Box::new(move |dir, port| {
            let conf = dir.join("prometheus.yml");
            std::fs::write(
                &conf,
                format!(
                    "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: enviromon\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
                ),
            )
            .expect("write prometheus.yml");
            Command::new(&bin)
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(common::log_file(dir))
                .stderr(common::log_file(dir))
                .spawn()
                .expect("start prometheus")
        }),
    )
}

/// An instant query; `Null` when Prometheus answers something else than JSON (while it starts, it
/// says "Service Unavailable" in plain text).
async fn promql(port: u16, q: &str) -> Value {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .expect("PromQL request")
        .text()
        .await
        .expect("PromQL answer");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Every measurement the dashboards read, present with the standards results of the demo's month.
const MEASUREMENTS: [&str; 10] = [
    "air",
    "air_daily",
    "air_hourly",
    "cems",
    "cems_daily",
    "cems_hourly",
    "integrity_finding",
    "plan_targets",
    "water",
    "water_daily",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_real_servers_and_the_overview_shows_the_demo_day() {
    let dashes = dashboards();
    let influx = influxdb1();
    let created = influxql(influx.port, "", "CREATE DATABASE enviromon").await;
    assert!(influx_error(&created).is_none(), "{created}");
    let demo = start_demo(influx.port);
    let port = influx.port;
    // The demo backfills a month of hourly air and water data and six hours of CEMS minutes; wait
    // until the standards engine has written its results (and the first plan_targets point).
    eventually(240, "the demo's results in InfluxDB 1.x", || async move {
        let v = influxql(port, "enviromon", "SHOW MEASUREMENTS").await;
        let have: BTreeSet<String> = variable_values(&v).into_iter().collect();
        let n = influx_values(
            &influxql(port, "enviromon", "SELECT count(actual) FROM plan_targets").await,
        );
        // The month's backfill has reached the standards engine: 28 district days or more.
        let days = influxql(
            port,
            "enviromon",
            "SELECT count(aqi) FROM air_daily WHERE station = 'district'",
        )
        .await;
        let days = days["results"][0]["series"][0]["values"][0][1]
            .as_i64()
            .unwrap_or(0);
        (MEASUREMENTS.iter().all(|m| have.contains(*m)) && n >= 1 && days >= 28).then_some(())
    })
    .await;
    let prom = prometheus(demo.http);
    let prom_port = prom.port;
    eventually(60, "Prometheus scraping the demo", || async move {
        let v = promql(prom_port, "up{job=\"enviromon\"} == 1").await;
        (v["data"]["result"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    // A few scrapes, so rate() over 1m has points.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let now = Utc::now().timestamp_millis();
    // Just after Beijing midnight a panel showing "today" has no complete hour yet (hours are
    // labelled by their end): it must still run, but may be empty then.
    let today_start = grafana_time("now/d", now, false);
    let just_after_midnight = now - today_start < 70 * 60_000;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, dash) in &dashes {
        let from = grafana_time(
            dash["time"]["from"].as_str().unwrap_or("now-6h"),
            now,
            false,
        );
        let to = grafana_time(dash["time"]["to"].as_str().unwrap_or("now"), now, true);
        assert!(from < to, "{name}: empty default time range");
        // Template variables, in order (a later one may use an earlier one).
        let mut vars: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for var in dash["templating"]["list"].as_array().into_iter().flatten() {
            let vname = var["name"].as_str().unwrap_or("").to_string();
            let values = match var["type"].as_str() {
                Some("query") => {
                    let q = var["query"]
                        .as_str()
                        .or_else(|| var["query"]["query"].as_str())
                        .or_else(|| var["definition"].as_str())
                        .unwrap_or_else(|| panic!("{name}: variable {vname} has no query"));
                    assert_eq!(
                        ds_of(var),
                        Some(Ds::Influx),
                        "{name}: variable {vname} must use the InfluxQL datasource"
                    );
                    let q = substitute(q, from, to, &vars);
                    let v = influxql(influx.port, "enviromon", &q).await;
                    if let Some(e) = influx_error(&v) {
                        failures.push(format!("{name}: variable {vname}: {q}: {e}"));
                    }
                    let values = variable_values(&v);
                    if values.is_empty() {
                        failures.push(format!("{name}: variable {vname} has no values: {q}"));
                    }
                    report.push(format!("{name}: ${vname} = {values:?}"));
                    values
                }
                Some("custom") => var["query"]
                    .as_str()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                Some("constant") | Some("textbox") => {
                    vec![var["query"].as_str().unwrap_or("").to_string()]
                }
                _ => continue,
            };
            vars.insert(vname, values);
        }
        for panel in panels(dash) {
            let ts = targets(panel);
            if ts.is_empty() {
                continue;
            }
            let (from, to) = panel_range(panel, from, to, now);
            let mut panel_values = 0;
            for t in &ts {
                let q = substitute(&t.query, from, to, &vars);
                let (err, n) = match t.ds {
                    Ds::Influx => {
                        let v = influxql(influx.port, "enviromon", &q).await;
                        (influx_error(&v), influx_values(&v))
                    }
                    Ds::Prom => {
                        let v = promql(prom.port, &q).await;
                        let err = (v["status"] != "success")
                            .then(|| v["error"].as_str().unwrap_or("failed").to_string());
                        (
                            err,
                            v["data"]["result"].as_array().map(Vec::len).unwrap_or(0),
                        )
                    }
                };
                if let Some(e) = err {
                    failures.push(format!("{name}: panel {:?}: {q}: {e}", t.panel));
                }
                report.push(format!("{name}: {:?} {:?} → {n} values", t.panel, t.ds));
                panel_values += n;
            }
            if name == "overview"
                && panel_values == 0
                && !(just_after_midnight && from == today_start)
            {
                failures.push(format!(
                    "overview: panel {:?} shows no data for the demo's day",
                    panel["title"].as_str().unwrap_or("")
                ));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The daily briefing from the same demo: text with the API's figures, and the PNG.
    let day = chrono::Utc::now()
        .with_timezone(&FixedOffset::east_opt(CST).expect("UTC+8"))
        .date_naive();
    let png = influx.dir.path().join("report.png");
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["report", "--server"])
        .arg(format!("http://127.0.0.1:{}", demo.http))
        .arg("--day")
        .arg(day.to_string())
        .arg("--png")
        .arg(&png)
        .output()
        .expect("run enviromon report");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "report failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compliance = common::get_json(
        format!("127.0.0.1:{}", demo.http).parse().expect("addr"),
        "/api/v1/compliance",
    )
    .await;
    let treatment = compliance["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == "sewage_treatment_rate")
        .and_then(|i| i["actual"].as_f64())
        .expect("the demo's treatment rate");
    assert!(
        stdout.contains(&format!("城市污水集中处理率: {treatment:.1}%")),
        "{stdout}"
    );
    let img = image::open(&png).expect("a PNG").to_rgb8();
    use enviromon::report::draw::{AQI_HEIGHT, HEADER_HEIGHT, HEIGHT, WIDTH};
    assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    // Each bar has its grade's exact colour (HJ 633 table: 0–50 green, 51–100 yellow, 101–150
    // orange, …): a grade the month's daily AQI reached is painted, one it never reached is not.
    let air = common::get_json(
        format!("127.0.0.1:{}", demo.http).parse().expect("addr"),
        &format!(
            "/api/v1/air/daily?station=district&from={}&to={}",
            enviromon::standards::time::day_start_ms(day - chrono::Days::new(29)),
            enviromon::standards::time::day_start_ms(day)
        ),
    )
    .await;
    let aqis: Vec<f64> = air["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["aqi"]["aqi"].as_f64())
        .collect();
    assert!(!aqis.is_empty(), "the demo's month has daily AQI: {air}");
    for (lower, upper, rgb) in [
        (0.0, 50.0, [0u8, 228, 0]),
        (51.0, 100.0, [255, 255, 0]),
        (101.0, 150.0, [255, 126, 0]),
        (151.0, 200.0, [255, 0, 0]),
    ] {
        let reached = aqis.iter().any(|a| *a >= lower && *a <= upper);
        // The AQI chart's band, below the header (the CEMS charts' limit lines are red).
        let painted = img
            .enumerate_pixels()
            .filter(|(_, y, p)| {
                (HEADER_HEIGHT..HEADER_HEIGHT + AQI_HEIGHT).contains(y) && p.0 == rgb
            })
            .count();
        assert_eq!(
            reached,
            painted > 100,
            "grade {lower}–{upper}: reached {reached}, {painted} pixels of {rgb:?}"
        );
    }
    drop(demo);
}

// ---------------------------------------------------------------------------------------------
// Metric names, Prometheus and Alertmanager configs.

/// Metric names the daemon registers (the string literals of `src/metrics.rs`; vectors that have
/// not seen a label value yet are absent from `/metrics`, so the source is the complete list).
fn registered_metrics() -> BTreeSet<String> {
    let src = read(&repo().join("src/metrics.rs"));
    let mut out = BTreeSet::new();
    for part in src.split('"').skip(1).step_by(2) {
        if part.starts_with("enviromon_")
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.insert(part.to_string());
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{part}{suffix}"));
            }
        }
    }
    out
}

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("enviromon_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // A name ending in `_` is the prefix of a regex matcher (`{__name__=~"enviromon_x_(a|b)"}`).
        if boundary && !text[start..end].ends_with('_') {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn dashboards_and_rules_name_only_metrics_the_daemon_registers() {
    let known = registered_metrics();
    assert!(known.contains("enviromon_readings_written_total"));
    let mut texts = vec![(
        "deploy/prometheus/rules.yml".to_string(),
        read(&repo().join("deploy/prometheus/rules.yml")),
    )];
    for (name, dash) in dashboards() {
        let mut exprs = String::new();
        for panel in panels(&dash) {
            for t in targets(panel) {
                if t.ds == Ds::Prom {
                    exprs.push_str(&t.query);
                    exprs.push('\n');
                }
            }
        }
        texts.push((format!("dashboard {name}"), exprs));
    }
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (what, text) in &texts {
        for m in metric_names_in(text) {
            seen += 1;
            if !known.contains(&m) {
                unknown.push(format!("{what}: {m}"));
            }
        }
    }
    assert!(
        seen > 10,
        "the rules and the system dashboard name the daemon's metrics"
    );
    assert!(
        unknown.is_empty(),
        "unknown metrics:\n{}",
        unknown.join("\n")
    );
}

fn run_tool(bin: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_their_unit_tests() {
    let promtool = binary("promtool", "prometheus");
    let dir = repo().join("deploy/prometheus");
    let out = run_tool(&promtool, &["check", "config", "prometheus.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_tool(&promtool, &["check", "rules", "rules.yml"], &dir);
    // The issue names six conditions; each is at least one rule.
    let rules: usize = out
        .split_whitespace()
        .skip_while(|w| *w != "SUCCESS:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rules >= 6, "expected at least 6 rules: {out}");
    let out = run_tool(&promtool, &["test", "rules", "rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alerting rule has a test case that expects it to fire.
    let rules_text = read(&dir.join("rules.yml"));
    let tests_text = read(&dir.join("rules.test.yml"));
    for line in rules_text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            let name = name.trim();
            assert!(
                tests_text.contains(&format!("alertname: {name}")),
                "rules.test.yml has no case for {name}"
            );
        }
    }
}

#[test]
fn alertmanager_config_passes_amtool() {
    let amtool = binary("amtool", "prometheus-alertmanager");
    let dir = repo().join("deploy/alertmanager");
    let out = run_tool(&amtool, &["check-config", "alertmanager.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// The compose file.

fn yaml(path: &Path) -> yaml_rust2::Yaml {
    yaml_rust2::YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()))
}

/// `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$VAR` names in a text.
fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        if rest.starts_with('$') {
            rest = &rest[1..];
            continue;
        }
        let body = rest.strip_prefix('{').unwrap_or(rest);
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name.chars().next().is_some_and(|c| !c.is_ascii_digit()) {
            out.insert(name);
        }
    }
    out
}

#[test]
fn compose_names_files_that_exist_and_variables_the_example_env_defines() {
    let deploy = repo().join("deploy");
    let compose_text = read(&deploy.join("docker-compose.yml"));
    let compose = yaml(&deploy.join("docker-compose.yml"));
    let services = compose["services"]
        .as_hash()
        .expect("docker-compose.yml has services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for wanted in [
        "mosquitto",
        "influxdb",
        "grafana",
        "prometheus",
        "alertmanager",
        "enviromon",
    ] {
        assert!(names.contains(wanted), "compose has no {wanted} service");
    }
    for (name, svc) in services {
        let name = name.as_str().unwrap_or("");
        match (svc["image"].as_str(), svc["build"].is_badvalue()) {
            (Some(image), _) => {
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest",
                    "{name}: pin the image's version ({image})"
                );
            }
            (None, false) => {}
            (None, true) => panic!("{name}: neither image nor build"),
        }
        for v in svc["volumes"].as_vec().into_iter().flatten() {
            let Some(spec) = v.as_str() else { continue };
            let source = spec.split(':').next().unwrap_or("");
            if source.starts_with("./") || source.starts_with("../") {
                assert!(
                    deploy.join(source).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            }
        }
    }
    let example = read(&deploy.join(".env.example"));
    let defined: BTreeSet<String> = example
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.starts_with('#'))
        .collect();
    let used = variables(&compose_text);
    let missing: Vec<&String> = used.difference(&defined).collect();
    assert!(
        missing.is_empty(),
        ".env.example does not define {missing:?}"
    );

    // The daemon accepts the configuration compose mounts (the token comes from the env).
    let out = Command::new(env!("CARGO_BIN_EXE_enviromon"))
        .args(["check-config", "--config"])
        .arg(deploy.join("enviromon/enviromon.toml"))
        .env("ENVIROMON__STORE__INFLUXDB__TOKEN", "test-token")
        .current_dir(repo())
        .output()
        .expect("run check-config");
    assert!(
        out.status.success(),
        "deploy/enviromon/enviromon.toml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Grafana's provisioning names the two datasource uids the dashboards use.
    let ds = read(&deploy.join("grafana/provisioning/datasources/datasources.yml"));
    for uid in [INFLUX_UID, PROM_UID] {
        assert!(ds.contains(uid), "datasources.yml has no uid {uid}");
    }
    assert!(
        ds.contains("InfluxQL"),
        "the InfluxDB datasource uses InfluxQL"
    );
}

#[test]
fn grafana_time_ranges_follow_the_dashboard_time_zone() {
    // 2026-11-24 20:30 UTC = 2026-11-25 04:30 CST.
    let now = Utc
        .with_ymd_and_hms(2026, 11, 24, 20, 30, 0)
        .single()
        .expect("time")
        .timestamp_millis();
    let cst_midnight = Utc
        .with_ymd_and_hms(2026, 11, 24, 16, 0, 0)
        .single()
        .expect("time")
        .timestamp_millis();
    assert_eq!(grafana_time("now/d", now, false), cst_midnight);
    assert_eq!(
        grafana_time("now/d", now, true),
        cst_midnight + 86_400_000 - 1
    );
    assert_eq!(
        grafana_time("now-1d/d", now, false),
        cst_midnight - 86_400_000
    );
    assert_eq!(grafana_time("now-6h", now, false), now - 6 * 3_600_000);
    let vars = BTreeMap::from([("unit".to_string(), vec!["dt-1".into(), "sy.2".into()])]);
    assert_eq!(
        substitute(
            "SELECT x FROM m WHERE \"unit\" =~ /^$unit$/ AND $timeFilter GROUP BY time($__interval)",
            0,
            3_600_000,
            &vars
        ),
        "SELECT x FROM m WHERE \"unit\" =~ /^(dt-1|sy\\.2)$/ AND time >= 0ms and time <= 3600000ms GROUP BY time(10s)"
    );
}
