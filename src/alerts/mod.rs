//! Alerts for on-call staff: rules evaluated on a timer (so "no data" fires with nothing arriving),
//! a lifecycle per alert (pending → firing → resolved, with `for` and hysteresis), state persisted
//! (a restart neither re-pages nor forgets), suppression (maintenance, M/C readings, silences), and
//! delivery to Alertmanager, signed webhooks and group robots.
//!
//! - [`rules`]: the rule model, conditions, the lifecycle step (pure).
//! - [`notify`]: receivers, each with its own queue and retries.
//!
//! Inputs: the store writer hands every stored chunk to [`Alerting::observe`] (latest values and a
//! short history per sensor and quantity, with arrival times); derived series come from the
//! standards engine and the metrics at evaluation time.

pub mod notify;
pub mod rules;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::reading::{DataFlag, Reading};
use crate::registry::{Registry, RegistryHandle, SensorStatus};
use crate::standards::engine::Engine;
use crate::sync::lock;
use notify::{Notification, Queue, Receiver, ReceiverKind};
use rules::{Alert, Phase, Rule, Sample, SeriesKind, Transition};

/// The default rules, compiled in (`config/alerts.toml`).
pub const DEFAULT_RULES: &str = include_str!("../../config/alerts.toml");

/// Values kept per series for rate and flatline conditions.
const HISTORY: usize = 64;
/// Resolved alerts are kept (for the API's history) this long.
const KEEP_RESOLVED_MS: i64 = 7 * 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Rules(#[from] rules::RuleError),
    #[error("cannot read alert rules {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("alert state: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("alert state encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Secret(#[from] crate::config::ConfigError),
}

/// A silence: alerts whose labels match every matcher are not notified until `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// Label → value; `alertname` is the rule name.
    pub matchers: BTreeMap<String, String>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub comment: String,
    pub created_by: String,
    /// The same silence in each Alertmanager (its URL → Alertmanager's silence id), so that
    /// Alertmanager keeps the alert firing, silenced, instead of resolving it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alertmanager: BTreeMap<String, String>,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    pub fn matches(&self, a: &Alert) -> bool {
        self.matchers.iter().all(|(k, v)| {
            if k == "alertname" {
                &a.rule == v
            } else {
                a.labels.get(k) == Some(v)
            }
        })
    }
}

/// One watched series: its labels, the sample to test, the flag of its latest value, and the
/// sensors behind it (for maintenance suppression).
type Watched = (
    BTreeMap<String, String>,
    Sample,
    Option<DataFlag>,
    Vec<String>,
);

#[derive(Debug, Default)]
struct SeriesInput {
    history: VecDeque<(i64, f64)>,
    flag: DataFlag,
    arrived_ms: i64,
}

/// An alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub silenced: bool,
    pub suppressed: bool,
    /// Who took it on, for this firing (an acknowledgement ends with the episode it was given in).
    pub acknowledged: Option<Ack>,
}

/// "I am on it": who acknowledged an alert, when, and what they said. Notifications go on as
/// before (silence an alert to quieten it); the acknowledgement tells the rest of the duty roster.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Ack {
    pub by: String,
    pub comment: String,
    pub at_ms: i64,
    /// The episode acknowledged: the alert's `active_since_ms` then.
    pub episode_ms: i64,
}

struct RulesSource {
    path: Option<PathBuf>,
    modified: Option<SystemTime>,
}

/// The alerting state.
pub struct Alerting {
    conn: Mutex<Connection>,
    rules: Mutex<Vec<Rule>>,
    source: Mutex<RulesSource>,
    alerts: Mutex<BTreeMap<String, Alert>>,
    /// Fingerprints currently suppressed (maintenance).
    suppressed: Mutex<std::collections::BTreeSet<String>>,
    /// Acknowledgements by fingerprint (valid for the episode they name).
    acks: Mutex<BTreeMap<String, Ack>>,
    inputs: Mutex<HashMap<(String, String), SeriesInput>>,
    silences: Mutex<Vec<Silence>>,
    started_ms: i64,
    external_url: String,
    repeat_ms: i64,
    /// endsAt of a firing alert sent to Alertmanager: this far ahead (4 × resend_interval).
    am_ends_ms: i64,
    /// CN 3020 site parameters, for the `site_parameters` series.
    site_info: std::sync::RwLock<Option<Arc<crate::ingest::hj212::site_info::SiteInfo>>>,
    /// The configured receivers (for test notifications).
    receivers: std::sync::RwLock<Vec<Receiver>>,
}

fn load_rules(path: Option<&Path>) -> Result<(Vec<Rule>, Option<SystemTime>), AlertError> {
    match path {
        None => Ok((
            rules::parse("config/alerts.toml (built in)", DEFAULT_RULES)?,
            None,
        )),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| AlertError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let modified = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            Ok((rules::parse(&p.display().to_string(), &text)?, modified))
        }
    }
}

impl Alerting {
    /// Open the state in the embedded database and load the rules.
    pub fn open(db_path: &Path, cfg: &AlertsConfig, now_ms: i64) -> Result<Alerting, AlertError> {
        let conn = crate::db::open(db_path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS alerts (fingerprint TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS alert_events (ts_ms INTEGER NOT NULL, fingerprint TEXT NOT NULL, event TEXT NOT NULL, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS alert_acks (fingerprint TEXT PRIMARY KEY, doc TEXT NOT NULL);",
        )?;
        let acks: BTreeMap<String, Ack> = {
            let mut stmt = conn.prepare("SELECT fingerprint, doc FROM alert_acks")?;
            let rows: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .filter_map(|(f, d)| serde_json::from_str(&d).ok().map(|a| (f, a)))
                .collect()
        };
        let (rules, modified) = load_rules(cfg.rules_file.as_deref())?;
        let mut alerts = BTreeMap::new();
        {
            let mut stmt = conn.prepare("SELECT doc FROM alerts")?;
            for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
                let a: Alert = serde_json::from_str(&doc?)?;
                alerts.insert(a.fingerprint.clone(), a);
            }
        }
        let silences: Vec<Silence> = {
            let mut stmt = conn.prepare("SELECT doc FROM silences")?;
            let docs: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            docs.iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        };
        let firing = alerts.values().filter(|a| a.phase == Phase::Firing).count();
        if firing > 0 {
            tracing::info!(
                firing,
                "alerts restored: firing alerts continue without a new page"
            );
        }
        Ok(Alerting {
            conn: Mutex::new(conn),
            rules: Mutex::new(rules),
            source: Mutex::new(RulesSource {
                path: cfg.rules_file.clone(),
                modified,
            }),
            alerts: Mutex::new(alerts),
            suppressed: Mutex::new(Default::default()),
            inputs: Mutex::new(HashMap::new()),
            silences: Mutex::new(silences),
            acks: Mutex::new(acks),
            started_ms: now_ms,
            external_url: cfg.external_url.trim_end_matches('/').to_string(),
            repeat_ms: cfg.repeat_interval.as_millis() as i64,
            am_ends_ms: (cfg.resend_interval * 4).as_millis() as i64,
            site_info: std::sync::RwLock::new(None),
            receivers: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Re-read the rules file if it changed; a bad file keeps the old rules.
    pub fn reload_if_changed(&self) -> Result<bool, AlertError> {
        let mut src = lock(&self.source);
        let Some(path) = src.path.clone() else {
            return Ok(false);
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified == src.modified {
            return Ok(false);
        }
        src.modified = modified;
        let (rules, _) = load_rules(Some(&path))?;
        tracing::info!(rules = rules.len(), path = %path.display(), "alert rules reloaded");
        *lock(&self.rules) = rules;
        Ok(true)
    }

    pub fn attach_receivers(&self, r: Vec<Receiver>) {
        *crate::sync::write(&self.receivers) = r;
    }

    pub fn receiver_list(&self) -> Vec<Receiver> {
        crate::sync::read(&self.receivers).clone()
    }

    /// Send a test notification to receiver `name` now (not queued): its answer, or why it failed.
    /// `None` when there is no such receiver.
    pub async fn test_receiver(&self, name: &str, by: &str) -> Option<Result<(), String>> {
        let r = self.receiver_list().into_iter().find(|r| r.name == name)?;
        let now = chrono::Utc::now().timestamp_millis();
        let labels: BTreeMap<String, String> = [
            ("test".to_string(), "true".to_string()),
            ("receiver".to_string(), name.to_string()),
        ]
        .into();
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary_zh".into(),
            format!(
                "测试通知：{by} 于 {} 发送，无需处理",
                crate::standards::time::cst_rfc3339(now)
            ),
        );
        annotations.insert(
            "summary_en".into(),
            format!("Test notification sent by {by}; nothing to do"),
        );
        let alert = Alert {
            fingerprint: rules::fingerprint("enviromon_test_notification", &labels),
            rule: "enviromon_test_notification".into(),
            severity: rules::Severity::Info,
            labels,
            annotations: with_conventional_annotations(annotations),
            phase: Phase::Firing,
            active_since_ms: now,
            fired_at_ms: Some(now),
            resolved_at_ms: None,
            value: None,
            last_notified_ms: None,
        };
        let n = Notification {
            generator_url: self.generator_url(&alert),
            alert,
            reason: "test",
            // Alertmanager shows it for five minutes, then resolves it by itself.
            ends_at_ms: now + 300_000,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Some(notify::send(&http, &r, &n).await)
    }

    /// Where the `site_parameters` series reads the loggers' declared parameters.
    pub fn attach_site_info(&self, si: Arc<crate::ingest::hj212::site_info::SiteInfo>) {
        *crate::sync::write(&self.site_info) = Some(si);
    }

    pub fn rules(&self) -> Vec<Rule> {
        lock(&self.rules).clone()
    }

    /// Take stored readings (called by the writer after each store success).
    pub fn observe(&self, readings: &[Reading], now_ms: i64) {
        let mut inputs = lock(&self.inputs);
        for r in readings {
            let s = inputs
                .entry((r.sensor.clone(), r.quantity.clone()))
                .or_default();
            if s.history.back().is_some_and(|(ts, _)| *ts > r.ts_ms()) {
                // Late or replayed: it changes arrival, not the latest value.
                s.arrived_ms = now_ms;
                continue;
            }
            s.history.push_back((r.ts_ms(), r.value));
            if s.history.len() > HISTORY {
                s.history.pop_front();
            }
            s.flag = r.flag;
            s.arrived_ms = now_ms;
        }
    }

    /// The series a rule watches: (labels, sample, flag of the latest value, sensors behind it).
    fn series(
        &self,
        rule: &Rule,
        reg: &Registry,
        engine: Option<&Engine>,
        metrics: &Metrics,
        now_ms: i64,
    ) -> Vec<Watched> {
        let m = |sel: &Option<String>, v: &str| sel.as_deref().is_none_or(|x| x == v);
        let mut out = Vec::new();
        match rule.series {
            SeriesKind::Reading => {
                let inputs = lock(&self.inputs);
                for s in reg.sensors.values() {
                    if s.status == SensorStatus::Retired
                        || !m(&rule.site, &s.site)
                        || !m(&rule.sensor, &s.id)
                        || rule.domain.is_some_and(|d| d != s.domain)
                    {
                        continue;
                    }
                    for ch in &s.channels {
                        if !m(&rule.quantity, &ch.quantity) {
                            continue;
                        }
                        let labels: BTreeMap<String, String> = [
                            ("site".into(), s.site.clone()),
                            ("sensor".into(), s.id.clone()),
                            ("quantity".into(), ch.quantity.clone()),
                        ]
                        .into();
                        let input = inputs.get(&(s.id.clone(), ch.quantity.clone()));
                        let sample = Sample {
                            superseded: false,
                            value: input.and_then(|i| i.history.back().map(|x| x.1)),
                            // Silence is judged by arrival: a device with a wrong clock still counts.
                            ts_ms: if rule.condition.no_data.is_some() {
                                input.map(|i| i.arrived_ms)
                            } else {
                                input.and_then(|i| i.history.back().map(|x| x.0))
                            },
                            limit: None,
                            history: input
                                .map(|i| i.history.iter().copied().collect())
                                .unwrap_or_default(),
                            ..Default::default()
                        };
                        out.push((labels, sample, input.map(|i| i.flag), vec![s.id.clone()]));
                    }
                }
            }
            SeriesKind::CemsHourly => {
                let Some(engine) = engine else { return out };
                use crate::standards::time::{cst_rfc3339, label, HOUR_MS};
                // Every hour of the lateness window up to the latest complete one: a late or
                // re-sent hour is judged when its result changes, with its own label.
                let last = label(now_ms, HOUR_MS) - HOUR_MS;
                let first = label(last - engine.lateness_ms(), HOUR_MS);
                for (uid, unit) in &reg.units {
                    if !m(&rule.unit, uid) || !m(&rule.site, &unit.site) {
                        continue;
                    }
                    let sensors: Vec<String> = reg
                        .sensors
                        .values()
                        .filter(|s| s.unit.as_deref() == Some(uid))
                        .map(|s| s.id.clone())
                        .collect();
                    let docs = engine
                        .results::<crate::standards::results::CemsHour>(Some(uid), first, last)
                        .unwrap_or_default();
                    for q in unit.limits.keys() {
                        if !m(&rule.pollutant, q) {
                            continue;
                        }
                        let hours: Vec<(i64, Option<f64>, f64)> = docs
                            .iter()
                            .filter_map(|(_, ts, d)| {
                                let p = d.pollutants.get(q)?;
                                Some((*ts, if p.is_valid() { p.corrected } else { None }, p.limit))
                            })
                            .collect();
                        for (i, (ts, value, limit)) in hours.iter().enumerate() {
                            let sample = Sample {
                                value: *value,
                                ts_ms: Some(*ts),
                                limit: Some(*limit),
                                history: vec![],
                                superseded: false,
                                ..Default::default()
                            };
                            // Superseded once a later valid hour meets the clear condition.
                            let superseded = hours[i + 1..].iter().any(|(t, v, l)| {
                                v.is_some() && {
                                    let later = Sample {
                                        value: *v,
                                        ts_ms: Some(*t),
                                        limit: Some(*l),
                                        ..Default::default()
                                    };
                                    match &rule.clear {
                                        Some(c) => c.holds(&later, now_ms, self.started_ms),
                                        None => {
                                            !rule.condition.holds(&later, now_ms, self.started_ms)
                                        }
                                    }
                                }
                            });
                            let labels: BTreeMap<String, String> = [
                                ("site".into(), unit.site.clone()),
                                ("unit".into(), uid.clone()),
                                ("pollutant".into(), q.clone()),
                                ("hour".into(), cst_rfc3339(*ts)),
                            ]
                            .into();
                            out.push((
                                labels,
                                Sample {
                                    superseded,
                                    ..sample
                                },
                                None,
                                sensors.clone(),
                            ));
                        }
                    }
                }
            }
            SeriesKind::SiteParameters => {
                let si = crate::sync::read(&self.site_info).clone();
                let Some(si) = si else { return out };
                let changes = si
                    .changes_since(now_ms - KEEP_RESOLVED_MS)
                    .unwrap_or_default();
                for c in changes {
                    let Some(s) = reg.sensors.get(&c.sensor) else {
                        continue;
                    };
                    if !m(&rule.sensor, &s.id) || !m(&rule.site, &s.site) {
                        continue;
                    }
                    let labels: BTreeMap<String, String> = [
                        ("site".into(), s.site.clone()),
                        ("sensor".into(), s.id.clone()),
                        ("mn".into(), c.mn.clone()),
                        ("pollutant".into(), c.pol.clone()),
                        ("parameter".into(), c.code.clone()),
                        ("before".into(), c.before.clone().unwrap_or_default()),
                        ("after".into(), c.value.clone()),
                        (
                            "changed_at".into(),
                            crate::standards::time::cst_rfc3339(c.since_ms),
                        ),
                    ]
                    .into();
                    out.push((
                        labels,
                        Sample {
                            value: c.value.parse().ok(),
                            ts_ms: Some(c.since_ms),
                            superseded: true,
                            ..Default::default()
                        },
                        None,
                        vec![s.id.clone()],
                    ));
                }
            }
            SeriesKind::Integrity => {
                let Some(engine) = engine else { return out };
                // Findings of the last week (by their end) and those first made in it.
                let found = engine
                    .integrity_findings(None, now_ms - KEEP_RESOLVED_MS, i64::MAX)
                    .unwrap_or_default();
                for f in found {
                    let Some(unit) = reg.units.get(&f.unit) else {
                        continue;
                    };
                    if !m(&rule.unit, &f.unit) || !m(&rule.site, &unit.site) {
                        continue;
                    }
                    let sensors: Vec<String> = reg
                        .sensors
                        .values()
                        .filter(|s| s.unit.as_deref() == Some(f.unit.as_str()))
                        .map(|s| s.id.clone())
                        .collect();
                    let labels: BTreeMap<String, String> = [
                        ("site".into(), unit.site.clone()),
                        ("unit".into(), f.unit.clone()),
                        ("integrity_rule".into(), f.rule.clone()),
                        ("channel".into(), f.channel.clone()),
                        (
                            "start".into(),
                            crate::standards::time::cst_rfc3339(f.start_ms),
                        ),
                    ]
                    .into();
                    let notes: BTreeMap<String, String> = [
                        ("summary_zh".to_string(), f.summary_zh.clone()),
                        ("summary_en".to_string(), f.summary_en.clone()),
                        (
                            "end".to_string(),
                            crate::standards::time::cst_rfc3339(f.end_ms),
                        ),
                        ("severity".to_string(), f.severity.as_str().to_string()),
                    ]
                    .into();
                    out.push((
                        labels,
                        Sample {
                            value: Some(((f.end_ms - f.start_ms) / 60_000) as f64),
                            ts_ms: Some(f.start_ms),
                            // Ended: the alert resolves after the rule's `hold`.
                            superseded: !f.ongoing,
                            severity: Some(f.severity),
                            notes,
                            ..Default::default()
                        },
                        None,
                        sensors,
                    ));
                }
            }
            SeriesKind::AirHourlyAqi | SeriesKind::AirDailyAqi => {
                let Some(engine) = engine else { return out };
                let station = rule.station.as_deref();
                let mut latest: BTreeMap<String, (i64, Option<f64>)> = BTreeMap::new();
                let found: Vec<(String, i64, Option<u32>)> =
                    if rule.series == SeriesKind::AirHourlyAqi {
                        engine
                            .results::<crate::standards::results::AirHour>(
                                station,
                                now_ms - 3 * 3_600_000,
                                now_ms,
                            )
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(e, ts, d)| (e, ts, d.aqi.and_then(|a| a.aqi)))
                            .collect()
                    } else {
                        engine
                            .results::<crate::standards::results::AirDay>(
                                station,
                                now_ms - 3 * 86_400_000,
                                now_ms,
                            )
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(e, ts, d)| (e, ts, d.aqi.and_then(|a| a.aqi)))
                            .collect()
                    };
                for (e, ts, aqi) in found {
                    if let Some(aqi) = aqi {
                        latest.insert(e, (ts, Some(f64::from(aqi))));
                    }
                }
                for (station, (ts, v)) in latest {
                    let sensors = reg
                        .sensors
                        .values()
                        .filter(|s| s.site == station)
                        .map(|s| s.id.clone())
                        .collect();
                    out.push((
                        [("station".into(), station)].into(),
                        Sample {
                            superseded: false,
                            value: v,
                            ts_ms: Some(ts),
                            limit: None,
                            history: vec![],
                            ..Default::default()
                        },
                        None,
                        sensors,
                    ));
                }
            }
            SeriesKind::AirHeldOut => {
                let Some(engine) = engine else { return out };
                // The latest district hour of the last three: per station and pollutant, how many
                // times off the stations' median it was when held out (0 when it counts).
                let latest = engine
                    .results::<crate::standards::results::AirHour>(
                        Some("district"),
                        now_ms - 3 * 3_600_000,
                        now_ms,
                    )
                    .unwrap_or_default()
                    .into_iter()
                    .max_by_key(|(_, ts, _)| *ts);
                let Some((_, ts, hour)) = latest else {
                    return out;
                };
                for station in crate::standards::air::stations(reg) {
                    for (q, _) in crate::standards::air::POLLUTANTS {
                        let held = hour
                            .held_out
                            .get(q)
                            .and_then(|hs| hs.iter().find(|h| h.station == station));
                        let ratio = held.map_or(0.0, |h| {
                            let (hi, lo) = (h.value.max(h.median), h.value.min(h.median));
                            (hi / lo.max(f64::MIN_POSITIVE) * 10.0).round() / 10.0
                        });
                        let sensors = reg
                            .sensors
                            .values()
                            .filter(|s| {
                                s.site == station && s.channels.iter().any(|c| c.quantity == q)
                            })
                            .map(|s| s.id.clone())
                            .collect();
                        out.push((
                            [
                                ("station".into(), station.clone()),
                                ("pollutant".into(), q.to_string()),
                            ]
                            .into(),
                            Sample {
                                value: Some(ratio),
                                ts_ms: Some(ts),
                                ..Default::default()
                            },
                            None,
                            sensors,
                        ));
                    }
                }
            }
            SeriesKind::GoodDaysBudget => {
                let Some(engine) = engine else { return out };
                let year = chrono::Datelike::year(&crate::standards::time::cst_date(now_ms));
                if let Ok(doc) = engine.compliance(year, now_ms, None) {
                    if let Some(g) = doc.good_days().filter(|g| g.valid_days > 0) {
                        out.push((
                            [("indicator".into(), "air_good_days_rate".into())].into(),
                            Sample {
                                value: Some(g.affordable_non_good_days as f64),
                                ts_ms: Some(now_ms),
                                ..Default::default()
                            },
                            None,
                            vec![],
                        ));
                    }
                }
            }
            SeriesKind::SewageTreatmentRate => {
                let Some(engine) = engine else { return out };
                let docs = engine
                    .results::<crate::standards::results::TreatmentDay>(
                        Some("treatment"),
                        now_ms - 3 * 86_400_000,
                        now_ms,
                    )
                    .unwrap_or_default();
                if let Some((_, ts, rate)) = docs
                    .iter()
                    .rev()
                    .find_map(|(_, ts, d)| d.treatment_rate_percent.map(|r| ((), *ts, r)))
                {
                    out.push((
                        [("indicator".into(), "sewage_treatment_rate".into())].into(),
                        Sample {
                            value: Some(rate),
                            ts_ms: Some(ts),
                            ..Default::default()
                        },
                        None,
                        vec![],
                    ));
                }
            }
            SeriesKind::SpoolBacklog => {
                let v = metrics.spool_oldest_age_seconds.get();
                out.push((
                    [("component".into(), "spool".into())].into(),
                    Sample {
                        value: Some(v),
                        ts_ms: Some(now_ms),
                        ..Default::default()
                    },
                    None,
                    vec![],
                ));
            }
        }
        out
    }

    /// Evaluate every rule once; returns the notifications to send.
    pub fn evaluate(
        &self,
        reg: &Registry,
        engine: Option<&Engine>,
        metrics: &Metrics,
        now_ms: i64,
    ) -> Result<Vec<Notification>, AlertError> {
        let rules = self.rules();
        let silences: Vec<Silence> = lock(&self.silences)
            .iter()
            .filter(|s| s.active(now_ms))
            .cloned()
            .collect();
        let mut notes = Vec::new();
        let mut changed: Vec<(Alert, &'static str)> = Vec::new();
        let mut suppressed_now = std::collections::BTreeSet::new();
        let mut alerts = lock(&self.alerts);
        for rule in &rules {
            let event = rule.series.is_event();
            let mut seen = std::collections::BTreeSet::new();
            for (series_labels, sample, flag, sensors) in
                self.series(rule, reg, engine, metrics, now_ms)
            {
                let fp = rules::fingerprint(&rule.name, &series_labels);
                seen.insert(fp.clone());
                if event && alerts.get(&fp).is_some_and(|a| a.phase == Phase::Resolved) {
                    // An event is announced once: its hour or change does not fire again.
                    continue;
                }
                let in_maintenance = rule.suppress_in_maintenance
                    && sensors.iter().any(|s| {
                        reg.sensors
                            .get(s)
                            .is_some_and(|x| x.status == SensorStatus::Maintenance)
                    });
                let flagged = flag.is_some_and(|f| rule.ignore_flags.contains(&f))
                    && rule.condition.no_data.is_none();
                if in_maintenance {
                    suppressed_now.insert(fp.clone());
                }
                if in_maintenance || flagged {
                    // Held as it is: maintenance and calibration readings neither fire nor resolve.
                    continue;
                }
                let firing = alerts.get(&fp).is_some_and(|a| a.phase == Phase::Firing);
                if rule.condition.no_data.is_some() && sample.ts_ms.is_none() && firing {
                    // Nothing seen since this process started: only new data resolves a "no data"
                    // alert carried over a restart.
                    continue;
                }
                let holds = rule.condition.holds(&sample, now_ms, self.started_ms);
                let mut clear = match &rule.clear {
                    Some(c) => c.holds(&sample, now_ms, self.started_ms),
                    None => !holds,
                };
                if event && sample.superseded {
                    let held = alerts
                        .get(&fp)
                        .and_then(|a| a.fired_at_ms)
                        .is_some_and(|t| {
                            now_ms - t >= rule.hold.as_millis().min(i64::MAX as u128) as i64
                        });
                    clear |= held;
                }
                let mut vars = series_labels.clone();
                vars.extend(sample.notes.clone());
                // Names people know (大唐 #1 机组, not dt-1), Chinese and English.
                for (k, v) in &series_labels {
                    let names = match k.as_str() {
                        "unit" => reg.units.get(v).map(|u| (&u.name_zh, &u.name_en)),
                        "site" | "station" => reg.sites.get(v).map(|x| (&x.name_zh, &x.name_en)),
                        "sensor" => reg.sensors.get(v).map(|x| (&x.name_zh, &x.name_en)),
                        _ => None,
                    };
                    if let Some((zh, en)) = names {
                        vars.insert(format!("{k}_zh"), zh.clone());
                        vars.insert(format!("{k}_en"), en.clone());
                    } else if matches!(k.as_str(), "unit" | "site" | "station" | "sensor") {
                        vars.insert(format!("{k}_zh"), v.clone());
                        vars.insert(format!("{k}_en"), v.clone());
                    }
                }
                vars.insert(
                    "value".into(),
                    sample
                        .value
                        .map(|v| format!("{}", (v * 100.0).round() / 100.0))
                        .unwrap_or_else(|| "—".into()),
                );
                vars.insert(
                    "limit".into(),
                    sample
                        .limit
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "—".into()),
                );
                let make = || {
                    let mut labels = series_labels.clone();
                    labels.extend(rule.labels.clone());
                    Alert {
                        fingerprint: fp.clone(),
                        rule: rule.name.clone(),
                        severity: rule.severity,
                        labels,
                        annotations: with_conventional_annotations(
                            rule.annotations
                                .iter()
                                .filter(|(k, _)| !k.starts_with("resolved_"))
                                .map(|(k, t)| (k.clone(), rules::render(t, &vars)))
                                .collect(),
                        ),
                        phase: Phase::Pending,
                        active_since_ms: now_ms,
                        fired_at_ms: None,
                        resolved_at_ms: None,
                        value: sample.value,
                        last_notified_ms: None,
                    }
                };
                let current = alerts.get(&fp).cloned();
                let (next, transition) =
                    rules::step(current.clone(), make, holds, clear, rule.for_, now_ms);
                match next {
                    None => {
                        if alerts.remove(&fp).is_some() {
                            changed.push((make(), "cleared_pending"));
                        }
                    }
                    Some(mut a) => {
                        if a.phase != Phase::Resolved {
                            a.value = sample.value;
                        }
                        if rule.series == SeriesKind::Integrity
                            && a.phase == Phase::Firing
                            && transition == Transition::None
                        {
                            // A finding extended or re-worded by late data: say what it is now.
                            a.annotations = make().annotations;
                        }
                        if transition == Transition::Resolved {
                            // Say what is true now, not the firing text again.
                            a.annotations = resolved_annotations(rule, &a.annotations, &vars);
                        }
                        let silenced = silences.iter().any(|s| s.matches(&a));
                        let event = match transition {
                            Transition::Fired => Some("firing"),
                            Transition::Resolved => a.last_notified_ms.map(|_| "resolved"),
                            Transition::None if a.phase == Phase::Firing && !silenced => {
                                match a.last_notified_ms {
                                    // Fired while silenced: notify once the silence is over.
                                    None => Some("firing"),
                                    Some(t) if now_ms - t >= self.repeat_ms => Some("repeat"),
                                    _ => None,
                                }
                            }
                            Transition::None => None,
                        };
                        if let Some(reason) = event {
                            if !silenced || reason == "resolved" {
                                a.last_notified_ms = Some(now_ms);
                                notes.push(Notification {
                                    alert: a.clone(),
                                    reason,
                                    generator_url: self.generator_url(&a),
                                    ends_at_ms: now_ms + self.am_ends_ms,
                                });
                            }
                        }
                        if current.as_ref() != Some(&a) {
                            changed.push((
                                a.clone(),
                                match transition {
                                    Transition::Fired => "fired",
                                    Transition::Resolved => "resolved",
                                    Transition::None => "updated",
                                },
                            ));
                        }
                        alerts.insert(fp.clone(), a);
                    }
                }
            }
            if event {
                // Events whose series is gone: an hour that left the lateness window, or an alert
                // of an older version without the `hour` label. Never on a failed read: only
                // what is provably out of the window is resolved.
                let cutoff = engine.map(|e| now_ms - e.lateness_ms() - 2 * 3_600_000);
                let gone: Vec<String> = alerts
                    .iter()
                    .filter(|(fp, a)| {
                        a.rule == rule.name && a.phase == Phase::Firing && !seen.contains(*fp)
                    })
                    .filter(|(_, a)| match (rule.series, a.labels.get("hour")) {
                        (SeriesKind::CemsHourly, None) => true,
                        (SeriesKind::CemsHourly, Some(h)) => {
                            chrono::DateTime::parse_from_rfc3339(h)
                                .is_ok_and(|t| cutoff.is_some_and(|c| t.timestamp_millis() < c))
                        }
                        // A finding withdrawn (re-evaluated on late or corrected data): only once
                        // the engine says it is gone, never on a failed read.
                        (SeriesKind::Integrity, _) => engine.is_some_and(|e| {
                            let l = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                            chrono::DateTime::parse_from_rfc3339(&l("start")).is_ok_and(|t| {
                                matches!(
                                    e.integrity_finding_exists(
                                        &l("unit"),
                                        &l("integrity_rule"),
                                        &l("channel"),
                                        t.timestamp_millis()
                                    ),
                                    Ok(false)
                                )
                            })
                        }),
                        _ => a.fired_at_ms.is_some_and(|t| now_ms - t > KEEP_RESOLVED_MS),
                    })
                    .map(|(fp, _)| fp.clone())
                    .collect();
                for fp in gone {
                    let Some(a) = alerts.get_mut(&fp) else {
                        continue;
                    };
                    a.phase = Phase::Resolved;
                    a.resolved_at_ms = Some(now_ms);
                    if rule.series == SeriesKind::Integrity {
                        let mut t = a.annotations.clone();
                        t.retain(|k, _| !matches!(k.as_str(), "summary" | "description"));
                        t.insert(
                            "firing_summary_zh".into(),
                            t.get("summary_zh").cloned().unwrap_or_default(),
                        );
                        t.insert(
                            "summary_zh".into(),
                            "已撤销：用迟到或更正的数据复核后，该数据真实性发现不再成立".into(),
                        );
                        t.insert(
                            "summary_en".into(),
                            "Withdrawn: re-evaluated with late or corrected data, the integrity finding no longer holds".into(),
                        );
                        a.annotations = with_conventional_annotations(t);
                    }
                    if a.last_notified_ms.is_some() {
                        a.last_notified_ms = Some(now_ms);
                        notes.push(Notification {
                            alert: a.clone(),
                            reason: "resolved",
                            generator_url: self.generator_url(a),
                            ends_at_ms: now_ms,
                        });
                    }
                    changed.push((a.clone(), "resolved"));
                }
            }
        }
        // Forget resolved alerts after a week.
        alerts.retain(|_, a| {
            !(a.phase == Phase::Resolved
                && a.resolved_at_ms
                    .is_some_and(|t| now_ms - t > KEEP_RESOLVED_MS))
        });
        let counts = alerts.values().fold(
            BTreeMap::new(),
            |mut m: BTreeMap<(&'static str, &'static str), i64>, a| {
                let state = match a.phase {
                    Phase::Pending => "pending",
                    Phase::Firing => "firing",
                    Phase::Resolved => "resolved",
                };
                *m.entry((state, a.severity.as_str())).or_default() += 1;
                m
            },
        );
        for state in ["pending", "firing", "resolved"] {
            for sev in ["critical", "warning", "info"] {
                metrics
                    .alerts
                    .with_label_values(&[state, sev])
                    .set(counts.get(&(state, sev)).copied().unwrap_or(0));
            }
        }
        drop(alerts);
        *lock(&self.suppressed) = suppressed_now;
        self.persist(&changed, now_ms)?;
        Ok(notes)
    }

    /// Where the notification's link leads: the data behind the alert (that unit's hour, that
    /// sensor's recent readings, that logger's declared parameters), else the alert itself.
    fn generator_url(&self, a: &Alert) -> String {
        let base = self.external_url.trim_end_matches('/');
        let l = |k: &str| {
            a.labels
                .get(k)
                .map(|v| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>())
        };
        match (
            a.rule.as_str(),
            l("unit"),
            l("hour"),
            l("sensor"),
            l("quantity"),
        ) {
            (_, Some(unit), Some(hour), _, _) => {
                format!("{base}/api/v1/cems/hourly?unit={unit}&from={hour}&to={hour}")
            }
            ("site_parameters_changed", _, _, Some(sensor), _) => {
                format!("{base}/api/v1/sensors/{sensor}/hj212-site-info")
            }
            (_, _, _, Some(sensor), Some(q)) => {
                format!("{base}/api/v1/readings?sensor={sensor}&quantity={q}&limit=60")
            }
            _ => format!("{base}/api/v1/alerts?fingerprint={}", a.fingerprint),
        }
    }

    fn persist(&self, changed: &[(Alert, &'static str)], now_ms: i64) -> Result<(), AlertError> {
        if changed.is_empty() {
            return Ok(());
        }
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        for (a, event) in changed {
            let doc = serde_json::to_string(a)?;
            if *event == "cleared_pending" {
                tx.execute(
                    "DELETE FROM alerts WHERE fingerprint = ?1",
                    [&a.fingerprint],
                )?;
            } else {
                tx.execute(
                    "INSERT OR REPLACE INTO alerts (fingerprint, doc) VALUES (?1, ?2)",
                    params![a.fingerprint, doc],
                )?;
            }
            if *event != "updated" {
                tx.execute("INSERT INTO alert_events (ts_ms, fingerprint, event, doc) VALUES (?1, ?2, ?3, ?4)", params![now_ms, a.fingerprint, event, doc])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Alerts for Alertmanager's keep-alive: every firing alert that is not silenced.
    ///
    /// Silenced and maintenance-held alerts are refreshed too: they are still firing, and an alert
    /// Alertmanager stops hearing of reads as "resolved" downstream. A local silence is mirrored
    /// into Alertmanager instead ([`Runner`]), so its receivers stay quiet.
    pub fn firing_for_refresh(&self, now_ms: i64, ends_in_ms: i64) -> Vec<Notification> {
        lock(&self.alerts)
            .values()
            .filter(|a| a.phase == Phase::Firing)
            .map(|a| Notification {
                alert: a.clone(),
                reason: "refresh",
                generator_url: self.generator_url(a),
                ends_at_ms: now_ms + ends_in_ms,
            })
            .collect()
    }

    /// Alerts for the API: `state` = pending, firing, resolved, or None for pending and firing.
    pub fn list(&self, state: Option<Phase>, now_ms: i64) -> Vec<AlertView> {
        let silences: Vec<Silence> = lock(&self.silences)
            .iter()
            .filter(|s| s.active(now_ms))
            .cloned()
            .collect();
        let suppressed = lock(&self.suppressed).clone();
        let acks = lock(&self.acks).clone();
        lock(&self.alerts)
            .values()
            .filter(|a| match state {
                Some(p) => a.phase == p,
                None => a.phase != Phase::Resolved,
            })
            .map(|a| AlertView {
                alert: a.clone(),
                silenced: silences.iter().any(|s| s.matches(a)),
                suppressed: suppressed.contains(&a.fingerprint),
                acknowledged: acks
                    .get(&a.fingerprint)
                    .filter(|k| k.episode_ms == a.active_since_ms)
                    .cloned(),
            })
            .collect()
    }

    /// Acknowledge a pending or firing alert for its current episode; `None` when there is no such
    /// alert (or it is resolved).
    pub fn acknowledge(
        &self,
        fingerprint: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<Option<Ack>, AlertError> {
        let episode = match lock(&self.alerts).get(fingerprint) {
            Some(a) if a.phase != Phase::Resolved => a.active_since_ms,
            _ => return Ok(None),
        };
        let ack = Ack {
            by: by.to_string(),
            comment: comment.to_string(),
            at_ms: now_ms,
            episode_ms: episode,
        };
        lock(&self.conn).execute(
            "INSERT OR REPLACE INTO alert_acks (fingerprint, doc) VALUES (?1, ?2)",
            params![fingerprint, serde_json::to_string(&ack)?],
        )?;
        lock(&self.acks).insert(fingerprint.to_string(), ack.clone());
        Ok(Some(ack))
    }

    /// The event history (newest first).
    pub fn history(&self, limit: usize) -> Result<Vec<serde_json::Value>, AlertError> {
        let conn = lock(&self.conn);
        let mut stmt = conn
            .prepare("SELECT ts_ms, event, doc FROM alert_events ORDER BY rowid DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ts, event, doc) = row?;
            out.push(serde_json::json!({"time": chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default().to_rfc3339(), "event": event, "alert": serde_json::from_str::<serde_json::Value>(&doc)?}));
        }
        Ok(out)
    }

    pub fn add_silence(&self, s: Silence) -> Result<(), AlertError> {
        lock(&self.conn).execute(
            "INSERT OR REPLACE INTO silences (id, doc) VALUES (?1, ?2)",
            params![s.id, serde_json::to_string(&s)?],
        )?;
        lock(&self.silences).push(s);
        Ok(())
    }

    pub fn silences(&self) -> Vec<Silence> {
        lock(&self.silences).clone()
    }

    /// Record (or with `None` forget) the Alertmanager silence that mirrors silence `id`.
    pub fn set_mirror(&self, id: &str, url: &str, am_id: Option<String>) -> Result<(), AlertError> {
        let mut ss = lock(&self.silences);
        let Some(s) = ss.iter_mut().find(|s| s.id == id) else {
            return Ok(());
        };
        match am_id {
            Some(a) => s.alertmanager.insert(url.to_string(), a),
            None => s.alertmanager.remove(url),
        };
        lock(&self.conn).execute(
            "INSERT OR REPLACE INTO silences (id, doc) VALUES (?1, ?2)",
            params![s.id, serde_json::to_string(&*s)?],
        )?;
        Ok(())
    }

    /// Alerts (pending or firing) a silence with these matchers would match now.
    pub fn matching(&self, matchers: &BTreeMap<String, String>) -> Vec<Alert> {
        let probe = Silence {
            id: String::new(),
            matchers: matchers.clone(),
            starts_at_ms: 0,
            ends_at_ms: 0,
            comment: String::new(),
            created_by: String::new(),
            alertmanager: BTreeMap::new(),
        };
        lock(&self.alerts)
            .values()
            .filter(|a| a.phase != Phase::Resolved && probe.matches(a))
            .cloned()
            .collect()
    }

    /// End a silence now; false if there is none with that id.
    pub fn expire_silence(&self, id: &str, now_ms: i64) -> Result<bool, AlertError> {
        let mut ss = lock(&self.silences);
        let Some(s) = ss.iter_mut().find(|s| s.id == id) else {
            return Ok(false);
        };
        s.ends_at_ms = s.ends_at_ms.min(now_ms);
        lock(&self.conn).execute(
            "INSERT OR REPLACE INTO silences (id, doc) VALUES (?1, ?2)",
            params![s.id, serde_json::to_string(&*s)?],
        )?;
        Ok(true)
    }
}

/// Alertmanager's conventional annotations from the bilingual ones: `summary` ("中文 / English")
/// and `description` (what happened and what to do, Chinese first, then English), unless the rule
/// sets them itself.
pub fn with_conventional_annotations(mut a: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    let (zh, en) = (get("summary_zh"), get("summary_en"));
    let (act_zh, act_en) = (get("action_zh"), get("action_en"));
    let has_text = !(zh.is_empty() && en.is_empty());
    if has_text && !a.contains_key("summary") {
        a.insert("summary".into(), format!("{zh} / {en}"));
    }
    if has_text && !a.contains_key("description") {
        let mut d = zh;
        if !act_zh.is_empty() {
            d.push_str(&format!("。处置：{act_zh}"));
        }
        d.push('\n');
        d.push_str(&en);
        if !act_en.is_empty() {
            d.push_str(&format!(". What to do: {act_en}"));
        }
        a.insert("description".into(), d);
    }
    a
}

/// The texts of a resolved alert: the rule's `resolved_zh`/`resolved_en` templates, or a plain
/// "已恢复 / resolved" line naming what it was about; never the firing text again.
fn resolved_annotations(
    rule: &Rule,
    firing: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let about: Vec<String> = [
        "unit_zh",
        "site_zh",
        "sensor_zh",
        "pollutant",
        "quantity",
        "hour",
    ]
    .iter()
    .filter_map(|k| vars.get(*k).cloned())
    .collect();
    let zh = rule
        .annotations
        .get("resolved_zh")
        .map(|t| rules::render(t, vars))
        .unwrap_or_else(|| format!("已恢复：{} {}", rule.name, about.join(" ")));
    let en = rule
        .annotations
        .get("resolved_en")
        .map(|t| rules::render(t, vars))
        .unwrap_or_else(|| format!("Resolved: {} {}", rule.name, about.join(" ")));
    let mut a: BTreeMap<String, String> = firing
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "summary" | "description" | "action_zh" | "action_en"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert(
        "firing_summary_zh".into(),
        firing.get("summary_zh").cloned().unwrap_or_default(),
    );
    a.insert("summary_zh".into(), zh);
    a.insert("summary_en".into(), en);
    with_conventional_annotations(a)
}

/// Build the receivers of the configuration.
pub fn receivers(cfg: &AlertsConfig) -> Result<Vec<Receiver>, AlertError> {
    let mut out = Vec::new();
    for (i, am) in cfg.alertmanager.iter().enumerate() {
        out.push(Receiver {
            name: format!("alertmanager-{i}"),
            kind: ReceiverKind::Alertmanager {
                url: am.url.clone(),
            },
        });
    }
    for w in &cfg.webhook {
        out.push(Receiver {
            name: w.name.clone(),
            kind: ReceiverKind::Webhook {
                url: w.url.clone(),
                secret: w.resolved_secret()?,
            },
        });
    }
    for d in &cfg.dingtalk {
        out.push(Receiver {
            name: d.name.clone(),
            kind: ReceiverKind::DingTalk {
                url: d.url.clone(),
                secret: d.resolved_secret()?,
            },
        });
    }
    for w in &cfg.wecom {
        out.push(Receiver {
            name: w.name.clone(),
            kind: ReceiverKind::WeCom { url: w.url.clone() },
        });
    }
    Ok(out)
}

/// The evaluation task: every `evaluation_interval`, reload rules if changed, evaluate, notify;
/// keep Alertmanager's view alive every `resend_interval`.
pub struct Runner {
    pub alerting: Arc<Alerting>,
    pub registry: RegistryHandle,
    pub engine: Option<Arc<Engine>>,
    pub metrics: Metrics,
    pub queues: Vec<(Receiver, Queue)>,
    pub evaluation_interval: Duration,
    pub resend_interval: Duration,
    pub stop: CancellationToken,
}

impl Runner {
    /// Mirror local silences into every Alertmanager (created while active, expired there once
    /// they end here). A failure is logged and retried on the next tick.
    async fn mirror_silences(&self, http: &reqwest::Client, now_ms: i64) {
        let urls: Vec<&str> = self
            .queues
            .iter()
            .filter_map(|(r, _)| match &r.kind {
                ReceiverKind::Alertmanager { url } => Some(url.as_str()),
                _ => None,
            })
            .collect();
        if urls.is_empty() {
            return;
        }
        for s in self.alerting.silences() {
            for url in &urls {
                let base = url.trim_end_matches('/');
                let mirrored = s.alertmanager.get(*url);
                let next = match (s.active(now_ms), mirrored) {
                    (true, None) => {
                        let matchers: Vec<serde_json::Value> = s
                            .matchers
                            .iter()
                            .map(|(k, v)| serde_json::json!({"name": k, "value": v, "isRegex": false, "isEqual": true}))
                            .collect();
                        let body = serde_json::json!({
                            "matchers": matchers,
                            "startsAt": notify::rfc3339(s.starts_at_ms),
                            "endsAt": notify::rfc3339(s.ends_at_ms),
                            "createdBy": s.created_by,
                            "comment": format!("{} (enviromon silence {})", s.comment, s.id),
                        });
                        let r = http
                            .post(format!("{base}/api/v2/silences"))
                            .json(&body)
                            .send()
                            .await;
                        match r {
                            Ok(resp) if resp.status().is_success() => resp
                                .json::<serde_json::Value>()
                                .await
                                .ok()
                                .and_then(|v| v["silenceID"].as_str().map(String::from))
                                .map(Some),
                            Ok(resp) => {
                                tracing::warn!(silence = %s.id, %url, status = resp.status().as_u16(), "cannot mirror the silence into Alertmanager; retrying");
                                None
                            }
                            Err(e) => {
                                tracing::warn!(silence = %s.id, %url, error = %e.without_url(), "cannot mirror the silence into Alertmanager; retrying");
                                None
                            }
                        }
                    }
                    (false, Some(am_id)) => {
                        let r = http
                            .delete(format!("{base}/api/v2/silence/{am_id}"))
                            .send()
                            .await;
                        match r {
                            Ok(resp)
                                if resp.status().is_success() || resp.status().as_u16() == 404 =>
                            {
                                Some(None)
                            }
                            Ok(resp) => {
                                tracing::warn!(silence = %s.id, %url, status = resp.status().as_u16(), "cannot expire the silence in Alertmanager; retrying");
                                None
                            }
                            Err(e) => {
                                tracing::warn!(silence = %s.id, %url, error = %e.without_url(), "cannot expire the silence in Alertmanager; retrying");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(am_id) = next {
                    let (a, id, u) = (self.alerting.clone(), s.id.clone(), url.to_string());
                    if let Ok(Err(e)) =
                        tokio::task::spawn_blocking(move || a.set_mirror(&id, &u, am_id)).await
                    {
                        tracing::error!(error = %e, "cannot record the Alertmanager silence");
                    }
                }
            }
        }
    }

    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.evaluation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resend = std::time::Instant::now() - self.resend_interval;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => break,
            }
            let a = self.alerting.clone();
            let (reg, engine, metrics) = (
                self.registry.snapshot(),
                self.engine.clone(),
                self.metrics.clone(),
            );
            let now = chrono::Utc::now().timestamp_millis();
            let result = tokio::task::spawn_blocking(move || {
                if let Err(e) = a.reload_if_changed() {
                    tracing::error!(error = %e, "alert rules not reloaded; the previous rules stay in force");
                }
                a.evaluate(&reg, engine.as_deref(), &metrics, now)
            })
            .await;
            let notes = match result {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "alert evaluation failed");
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!(error = %e, "alert evaluation task failed");
                    Vec::new()
                }
            };
            for n in &notes {
                tracing::info!(rule = %n.alert.rule, reason = n.reason, labels = ?n.alert.labels, "alert notification");
                for (r, q) in &self.queues {
                    if q.push(n.clone()) {
                        self.metrics
                            .alert_notifications
                            .with_label_values(&[&r.name, "dropped"])
                            .inc();
                    }
                }
            }
            // Silences first, so Alertmanager never hears of a silenced alert unsilenced.
            self.mirror_silences(&http, now).await;
            if last_resend.elapsed() >= self.resend_interval {
                last_resend = std::time::Instant::now();
                // Alertmanager resolves an alert it has not heard of by endsAt: keep it a few
                // resends ahead.
                let ends_in = (self.resend_interval * 4).as_millis() as i64;
                for n in self.alerting.firing_for_refresh(now, ends_in) {
                    for (r, q) in &self.queues {
                        if matches!(r.kind, ReceiverKind::Alertmanager { .. }) && q.push(n.clone())
                        {
                            self.metrics
                                .alert_notifications
                                .with_label_values(&[&r.name, "dropped"])
                                .inc();
                        }
                    }
                }
            }
        }
    }
}
