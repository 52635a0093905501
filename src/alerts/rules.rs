//! Alert rules and the lifecycle of one alert: pure, with time passed in, so every transition is
//! tested without waiting.
//!
//! A rule selects series (raw readings, CEMS hourly corrected values, AQI, the good-days budget, the
//! sewage treatment rate, the spool backlog), tests a condition on each, and fires after the
//! condition has held for `for`. It resolves only when its `clear` condition holds (hysteresis: fire
//! above 35, clear below 30), so a value wandering inside the band does not flap.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reading::DataFlag;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("alert rules {file}: {message}")]
    Parse { file: String, message: String },
    #[error("alert rules are invalid:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Stored readings, one series per (sensor, quantity).
    Reading,
    /// CEMS hourly mean corrected to reference O2, per (unit, pollutant, hour: its end), with its limit:
    /// every hour of the lateness window, so a late or re-sent hour is judged as it arrives. An
    /// event: one alert per hour (label `hour`), announced once.
    CemsHourly,
    /// Hourly (real-time) AQI per station and the district.
    AirHourlyAqi,
    /// Daily AQI per station and the district.
    AirDailyAqi,
    /// Per station and pollutant: how many times off the other stations its value in the latest
    /// district hour was, when it was held out of the district's mean (0 when it counted).
    AirHeldOut,
    /// Non-good days the district can still afford this year.
    GoodDaysBudget,
    /// Latest daily sewage treatment rate, %.
    SewageTreatmentRate,
    /// Age of the oldest reading waiting in the spool, seconds.
    SpoolBacklog,
    /// A CN 3020 site parameter a logger declared with a new value (per sensor, parameter and
    /// time of the change). An event, announced once.
    SiteParameters,
    /// A data-integrity finding (per unit, rule, channel and start; `crate::integrity`). An
    /// event, announced once: it resolves when the pattern has ended (after the rule's `hold`),
    /// or when re-evaluation on late or corrected data withdraws it.
    Integrity,
}

impl SeriesKind {
    /// Series whose alerts are events (one per hour or per change): they fire once, stay firing at
    /// least the rule's `hold`, resolve once superseded (a later hour under the clear condition;
    /// for a change, at once) or when their own value clears, and never fire again after that.
    pub fn is_event(self) -> bool {
        matches!(
            self,
            SeriesKind::CemsHourly | SeriesKind::SiteParameters | SeriesKind::Integrity
        )
    }
}

/// A condition; exactly one field is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Outside [low, high].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<[f64; 2]>,
    /// Above the series' own limit (CEMS hourly: the unit's limit), scaled by this factor (1 = the
    /// limit itself; 0.9 = 90 % of it, for a clear condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_limit: Option<f64>,
    /// Below the series' limit × factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_limit: Option<f64>,
    /// Changes faster than this many units per minute (either direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_above: Option<f64>,
    /// The same value this many times in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatline: Option<u32>,
    /// No new value for this long (evaluated on a timer, not on arrival).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub no_data: Option<Duration>,
    /// `event = true`: holds for every event the series yields (e.g. each changed site parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<bool>,
    /// `integrity = "warning"`: holds for every data-integrity finding at least this severe
    /// (`critical` > `warning` > `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Severity>,
}

/// What a condition is tested against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Latest value (None: never seen).
    pub value: Option<f64>,
    /// When it was measured, epoch ms.
    pub ts_ms: Option<i64>,
    pub limit: Option<f64>,
    /// Recent (ts_ms, value), oldest first, for rate and flatline.
    pub history: Vec<(i64, f64)>,
    /// For an event: something later has taken its place (a later CEMS hour that meets the clear
    /// condition; a recorded change, at once).
    pub superseded: bool,
    /// For a data-integrity finding: its severity.
    pub severity: Option<Severity>,
    /// Text for the annotations' templates only (not labels), e.g. a finding's explanation
    /// (`{{summary_zh}}`, `{{summary_en}}`).
    pub notes: BTreeMap<String, String>,
}

impl Condition {
    fn set_count(&self) -> usize {
        [
            self.above.is_some(),
            self.below.is_some(),
            self.outside.is_some(),
            self.above_limit.is_some(),
            self.below_limit.is_some(),
            self.rate_above.is_some(),
            self.flatline.is_some(),
            self.no_data.is_some(),
            self.event.is_some(),
            self.integrity.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count()
    }

    /// Whether the condition holds for `s` at `now_ms` (`since_ms`: when watching began, for a
    /// series that never reported).
    pub fn holds(&self, s: &Sample, now_ms: i64, since_ms: i64) -> bool {
        if let Some(d) = self.no_data {
            let last = s.ts_ms.unwrap_or(since_ms);
            return now_ms - last >= d.as_millis() as i64;
        }
        if let Some(n) = self.flatline {
            let n = n as usize;
            return s.history.len() >= n && {
                let tail = &s.history[s.history.len() - n..];
                tail.iter().all(|(_, v)| *v == tail[0].1)
            };
        }
        if let Some(r) = self.rate_above {
            let k = s.history.len();
            return k >= 2 && {
                let ((t0, v0), (t1, v1)) = (s.history[k - 2], s.history[k - 1]);
                let minutes = ((t1 - t0) as f64 / 60_000.0).max(1e-9);
                ((v1 - v0) / minutes).abs() > r
            };
        }
        if let Some(e) = self.event {
            return e;
        }
        if let Some(min) = self.integrity {
            // Critical orders first: "at least as severe" is "not after".
            return s.severity.is_some_and(|sv| sv <= min);
        }
        let Some(v) = s.value else { return false };
        if let Some(x) = self.above {
            return v > x;
        }
        if let Some(x) = self.below {
            return v < x;
        }
        if let Some([lo, hi]) = self.outside {
            return v < lo || v > hi;
        }
        if let Some(f) = self.above_limit {
            return s.limit.is_some_and(|l| v > l * f);
        }
        if let Some(f) = self.below_limit {
            return s.limit.is_some_and(|l| v < l * f);
        }
        false
    }
}

fn default_true() -> bool {
    true
}

fn default_ignore() -> Vec<DataFlag> {
    vec![DataFlag::M, DataFlag::C]
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; becomes the `alertname` label.
    pub name: String,
    pub severity: Severity,
    pub series: SeriesKind,
    /// Selectors (all optional; a missing one matches everything).
    #[serde(default)]
    pub domain: Option<crate::reading::Domain>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub sensor: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub quantity: Option<String>,
    #[serde(default)]
    pub pollutant: Option<String>,
    #[serde(default)]
    pub station: Option<String>,
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// Resolves only when this holds; default: the condition no longer holds.
    #[serde(default)]
    pub clear: Option<Condition>,
    /// For event series (`cems_hourly`, `site_parameters`): the least time an alert stays firing
    /// before being superseded resolves it, so the receivers see it firing. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub hold: Duration,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Templates: `{{value}}`, `{{limit}}`, and every label (`{{sensor}}`, `{{unit}}`, …).
    /// Bilingual: `summary_zh` first, `summary_en` beside.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// A sensor in maintenance does not fire this rule.
    #[serde(default = "default_true")]
    pub suppress_in_maintenance: bool,
    /// Readings with these flags are not evaluated (default M and C).
    #[serde(default = "default_ignore")]
    pub ignore_flags: Vec<DataFlag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// Parse and check a rules file (every problem at once).
pub fn parse(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let f: RuleFile = toml::from_str(text).map_err(|e| RuleError::Parse {
        file: file.into(),
        message: e.to_string(),
    })?;
    let mut errs = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in f.rule.iter().enumerate() {
        if !names.insert(r.name.clone()) {
            errs.push(format!("rule[{i}].name: {:?} is used twice", r.name));
        }
        if r.condition.set_count() != 1 {
            errs.push(format!("rule[{i}] ({}).condition: set exactly one of above, below, outside, above_limit, below_limit, rate_above, flatline, no_data, event, integrity", r.name));
        }
        if let Some(c) = &r.clear {
            if c.set_count() != 1 || c.no_data.is_some() {
                errs.push(format!(
                    "rule[{i}] ({}).clear: set exactly one condition (not no_data)",
                    r.name
                ));
            }
        }
        if r.condition.integrity.is_some() != (r.series == SeriesKind::Integrity) {
            errs.push(format!(
                "rule[{i}] ({}).condition: integrity is the condition of series = \"integrity\", and its only one",
                r.name
            ));
        }
        let uses_readings = r.condition.flatline.is_some() || r.condition.rate_above.is_some();
        if uses_readings && r.series != SeriesKind::Reading {
            errs.push(format!(
                "rule[{i}] ({}).condition: rate_above and flatline apply to series = \"reading\"",
                r.name
            ));
        }
    }
    if errs.is_empty() {
        Ok(f.rule)
    } else {
        Err(RuleError::Invalid(errs))
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
    Resolved,
}

/// One alert: a rule applied to one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub rule: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub phase: Phase,
    /// When the condition started holding (pending since).
    pub active_since_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub value: Option<f64>,
    /// When a notification for it was last sent (for re-notification).
    pub last_notified_ms: Option<i64>,
}

/// What a step produced for the notifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Fired,
    Resolved,
}

/// Advance one alert. `current` is its state (None: inactive); `holds`/`clear` are the rule's
/// conditions evaluated now.
pub fn step(
    current: Option<Alert>,
    fresh: impl FnOnce() -> Alert,
    holds: bool,
    clear: bool,
    for_: Duration,
    now_ms: i64,
) -> (Option<Alert>, Transition) {
    let for_ms = for_.as_millis() as i64;
    match current {
        None
        | Some(Alert {
            phase: Phase::Resolved,
            ..
        }) => {
            if !holds {
                return (current, Transition::None);
            }
            let mut a = fresh();
            a.active_since_ms = now_ms;
            a.fired_at_ms = None;
            a.resolved_at_ms = None;
            a.last_notified_ms = None;
            if for_ms == 0 {
                a.phase = Phase::Firing;
                a.fired_at_ms = Some(now_ms);
                (Some(a), Transition::Fired)
            } else {
                a.phase = Phase::Pending;
                (Some(a), Transition::None)
            }
        }
        Some(mut a) if a.phase == Phase::Pending => {
            if !holds {
                return (None, Transition::None);
            }
            if now_ms - a.active_since_ms >= for_ms {
                a.phase = Phase::Firing;
                a.fired_at_ms = Some(now_ms);
                (Some(a), Transition::Fired)
            } else {
                (Some(a), Transition::None)
            }
        }
        Some(mut a) => {
            // Firing: only the clear condition ends it.
            if clear {
                a.phase = Phase::Resolved;
                a.resolved_at_ms = Some(now_ms);
                (Some(a), Transition::Resolved)
            } else {
                (Some(a), Transition::None)
            }
        }
    }
}

/// Fill `{{name}}` placeholders.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out
            .replace(&format!("{{{{{k}}}}}"), v)
            .replace(&format!("{{{{ {k} }}}}"), v);
    }
    out
}

/// A stable id for (rule, series labels).
pub fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(rule.as_bytes());
    for (k, v) in labels {
        h.update([0u8]);
        h.update(k.as_bytes());
        h.update([1u8]);
        h.update(v.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_holds_for_findings_at_least_as_severe_and_only_on_its_series() {
        let c: Condition = toml::from_str(r#"integrity = "warning""#).unwrap();
        let f = |s: Severity| Sample {
            severity: Some(s),
            ..Default::default()
        };
        assert!(c.holds(&f(Severity::Critical), 0, 0));
        assert!(c.holds(&f(Severity::Warning), 0, 0));
        assert!(!c.holds(&f(Severity::Info), 0, 0));
        assert!(!c.holds(&Sample::default(), 0, 0));
        let wrong = r#"[[rule]]
name = "x"
severity = "warning"
series = "reading"
condition = { integrity = "warning" }
"#;
        assert!(parse("r.toml", wrong).is_err());
        let missing = r#"[[rule]]
name = "y"
severity = "warning"
series = "integrity"
condition = { above = 1 }
"#;
        assert!(parse("r.toml", missing).is_err());
        let ok = missing.replace("{ above = 1 }", "{ integrity = \"critical\" }");
        assert_eq!(
            parse("r.toml", &ok).unwrap()[0].series,
            SeriesKind::Integrity
        );
    }

    fn sample(v: f64) -> Sample {
        Sample {
            superseded: false,
            value: Some(v),
            ts_ms: Some(0),
            limit: Some(35.0),
            history: vec![],
            ..Default::default()
        }
    }

    fn fresh() -> Alert {
        Alert {
            fingerprint: "f".into(),
            rule: "r".into(),
            severity: Severity::Critical,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            phase: Phase::Pending,
            active_since_ms: 0,
            fired_at_ms: None,
            resolved_at_ms: None,
            value: None,
            last_notified_ms: None,
        }
    }

    #[test]
    fn conditions() {
        let c = |t: &str| -> Condition { toml::from_str(t).unwrap() };
        assert!(c("above = 35").holds(&sample(35.1), 0, 0));
        assert!(!c("above = 35").holds(&sample(35.0), 0, 0));
        assert!(c("below = 6").holds(&sample(5.9), 0, 0));
        assert!(c("outside = [6, 9]").holds(&sample(9.5), 0, 0));
        assert!(!c("outside = [6, 9]").holds(&sample(6.0), 0, 0));
        assert!(c("above_limit = 1.0").holds(&sample(36.0), 0, 0));
        assert!(
            c("below_limit = 0.9").holds(&sample(31.0), 0, 0),
            "clear below 90 % of 35 = 31.5"
        );
        let hist = |v: &[f64]| Sample {
            superseded: false,
            value: v.last().copied(),
            ts_ms: Some(0),
            limit: None,
            history: v
                .iter()
                .enumerate()
                .map(|(i, x)| (i as i64 * 60_000, *x))
                .collect(),
            ..Default::default()
        };
        assert!(c("flatline = 3").holds(&hist(&[1.0, 2.0, 2.0, 2.0]), 0, 0));
        assert!(!c("flatline = 3").holds(&hist(&[2.0, 2.0, 1.0]), 0, 0));
        assert!(
            c("rate_above = 5").holds(&hist(&[10.0, 16.0]), 0, 0),
            "6 per minute"
        );
        assert!(!c("rate_above = 5").holds(&hist(&[10.0, 14.0]), 0, 0));
        let nd = c("no_data = \"15m\"");
        let s = Sample {
            value: Some(1.0),
            ts_ms: Some(0),
            ..Default::default()
        };
        assert!(!nd.holds(&s, 15 * 60_000 - 1, 0));
        assert!(nd.holds(&s, 15 * 60_000, 0));
        assert!(
            nd.holds(&Sample::default(), 15 * 60_000, 0),
            "never seen: counted from when watching began"
        );
    }

    #[test]
    fn lifecycle_with_for_and_hysteresis() {
        let for_ = Duration::from_secs(60);
        let (a, t) = step(None, fresh, true, false, for_, 0);
        assert_eq!(
            (a.as_ref().unwrap().phase, t),
            (Phase::Pending, Transition::None)
        );
        let (a, t) = step(a, fresh, true, false, for_, 59_999);
        assert_eq!(
            (a.as_ref().unwrap().phase, t),
            (Phase::Pending, Transition::None)
        );
        let (a, t) = step(a, fresh, true, false, for_, 60_000);
        assert_eq!(
            (a.as_ref().unwrap().phase, t),
            (Phase::Firing, Transition::Fired)
        );
        // Inside the hysteresis band (condition false, clear false): still firing, no transition.
        let (a, t) = step(a, fresh, false, false, for_, 70_000);
        assert_eq!(
            (a.as_ref().unwrap().phase, t),
            (Phase::Firing, Transition::None)
        );
        let (a, t) = step(a, fresh, false, true, for_, 80_000);
        let a = a.unwrap();
        assert_eq!(
            (a.phase, t, a.resolved_at_ms),
            (Phase::Resolved, Transition::Resolved, Some(80_000))
        );
        // A pending alert whose condition stops holding goes away without ever firing.
        let (p, _) = step(None, fresh, true, false, for_, 0);
        let (p, t) = step(p, fresh, false, false, for_, 30_000);
        assert_eq!((p, t), (None, Transition::None));
        // for = 0 fires at once.
        let (a, t) = step(None, fresh, true, false, Duration::ZERO, 5);
        assert_eq!((a.unwrap().fired_at_ms, t), (Some(5), Transition::Fired));
    }

    #[test]
    fn templates_and_fingerprints() {
        let vars: BTreeMap<String, String> = [
            ("unit".to_string(), "dt-1".to_string()),
            ("value".to_string(), "41.2".to_string()),
        ]
        .into();
        assert_eq!(
            render("{{unit}} SO2 {{ value }} mg/m3", &vars),
            "dt-1 SO2 41.2 mg/m3"
        );
        let a: BTreeMap<String, String> = [("unit".into(), "dt-1".into())].into();
        let b: BTreeMap<String, String> = [("unit".into(), "dt-2".into())].into();
        assert_eq!(fingerprint("r", &a), fingerprint("r", &a));
        assert_ne!(fingerprint("r", &a), fingerprint("r", &b));
        assert_ne!(fingerprint("r", &a), fingerprint("s", &a));
    }

    #[test]
    fn rule_files_report_every_problem() {
        let text = r#"
            [[rule]]
            name = "a"
            severity = "critical"
            series = "reading"
            condition = { above = 1, below = 2 }
            [[rule]]
            name = "a"
            severity = "warning"
            series = "cems_hourly"
            condition = { flatline = 3 }
        "#;
        let RuleError::Invalid(errs) = parse("x", text).unwrap_err() else {
            panic!()
        };
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
