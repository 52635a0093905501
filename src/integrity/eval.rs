//! `enviromon integrity eval`: the generator's data (`sim`) through the real standards engine
//! (readings into `std_input` as imported history, the background re-evaluation forming each
//! hour and its integrity minutes, the integrity step persisting findings) in a temporary
//! database, scored against the labels: per rule precision and recall on manipulated data, and
//! false findings per unit-week on clean data.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use super::sim::{self, Label, Scenario, SimUnit, UnitData};
use super::{ParamChange, RULES};
use crate::reading::Source;
use crate::registry::{self, RegistryHandle, Seeds};
use crate::standards::engine::{Engine, EngineError, Settings};
use crate::standards::time::HOUR_MS;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("integrity eval: {0}")]
    Setup(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Days of manipulated data per unit.
    pub days: i64,
    /// Days of clean data per unit (for false findings per unit-week).
    pub clean_days: i64,
    /// Manipulations per rule, spread over the units.
    pub per_rule: usize,
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            days: 56,
            clean_days: 28,
            per_rule: 10,
            seed: 20_260_301,
        }
    }
}

/// One rule's line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleScore {
    pub rule: &'static str,
    pub manipulations: usize,
    pub detected: usize,
    pub findings: usize,
    pub true_findings: usize,
    /// Findings of this rule on clean data.
    pub clean_findings: usize,
}

impl RuleScore {
    pub fn recall(&self) -> Option<f64> {
        (self.manipulations > 0).then(|| self.detected as f64 / self.manipulations as f64)
    }
    pub fn precision(&self) -> Option<f64> {
        (self.findings > 0).then(|| self.true_findings as f64 / self.findings as f64)
    }
}

/// What the eval measured.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub rows: Vec<RuleScore>,
    pub units: usize,
    pub clean_unit_weeks: f64,
    pub readings: usize,
    pub seconds: f64,
    /// Manipulations no finding of their rule matched (to look into).
    pub missed: Vec<Label>,
}

impl EvalReport {
    pub fn clean_findings(&self) -> usize {
        self.rows.iter().map(|r| r.clean_findings).sum()
    }
    /// False findings per unit-week on clean data, all rules together.
    pub fn false_per_unit_week(&self) -> f64 {
        self.clean_findings() as f64 / self.clean_unit_weeks.max(f64::MIN_POSITIVE)
    }
    /// The README's targets: recall ≥ 0.9 per rule, ≤ 1 false finding per unit-week.
    pub fn meets_targets(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.recall().is_none_or(|x| x >= 0.9))
            && self.false_per_unit_week() <= 1.0
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| format!("{v:.2}"))
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "数据真实性规则评估 / integrity rules evaluation ({} units, {:.1} clean unit-weeks, {} readings, {:.1} s)",
            self.units, self.clean_unit_weeks, self.readings, self.seconds
        )?;
        writeln!(
            f,
            "{:<28} {:>7} {:>8} {:>7} {:>9} {:>10} {:>14}",
            "rule 规则", "manip.", "found", "recall", "findings", "precision", "clean/unit-wk"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<28} {:>7} {:>8} {:>7} {:>9} {:>10} {:>14.2}",
                r.rule,
                r.manipulations,
                r.detected,
                pct(r.recall()),
                r.findings,
                pct(r.precision()),
                r.clean_findings as f64 / self.clean_unit_weeks.max(f64::MIN_POSITIVE)
            )?;
        }
        writeln!(
            f,
            "clean data 无篡改数据: {} false findings in {:.1} unit-weeks = {:.2} per unit-week (target ≤ 1)",
            self.clean_findings(),
            self.clean_unit_weeks,
            self.false_per_unit_week()
        )?;
        for m in &self.missed {
            writeln!(
                f,
                "missed 漏检: {} {} {} ({})",
                m.unit,
                m.rule,
                super::cst(m.start_ms),
                m.note
            )?;
        }
        writeln!(
            f,
            "targets 目标 (recall ≥ 0.9 per rule, ≤ 1 false finding per unit-week): {}",
            if self.meets_targets() {
                "met 达标"
            } else {
                "NOT met 未达标"
            }
        )
    }
}

/// An engine over a fresh database in `dir` with the district's seeds, the integrity history
/// covering `days`.
fn engine(dir: &Path, days: i64) -> Result<Engine, EvalError> {
    let db = dir.join("integrity-eval.db");
    let conn = crate::db::open(&db)?;
    let seeds = Seeds::embedded()?;
    registry::apply_seeds(&conn, &seeds)?;
    let reg = registry::load(&conn, "enviromon/{site}/{sensor}")?;
    drop(conn);
    let mut cfg = crate::config::StandardsConfig::default();
    cfg.integrity.history = std::time::Duration::from_secs((days as u64 + 2) * 86_400);
    Ok(Engine::open(
        &db,
        RegistryHandle::new(reg),
        Settings::from_config(&cfg),
    )?)
}

/// The district's units as the generator sees them (each with its CEMS sensor).
pub fn district_units() -> Result<Vec<SimUnit>, EvalError> {
    let seeds = Seeds::embedded()?;
    let mut out = Vec::new();
    for u in &seeds.units {
        let sensor = seeds
            .sensors
            .iter()
            .find(|s| s.unit.as_deref() == Some(u.id.as_str()))
            .map(|s| s.id.clone())
            .ok_or_else(|| EvalError::Setup(format!("unit {} has no sensor", u.id)))?;
        out.push(SimUnit::from_unit(u, &sensor));
    }
    Ok(out)
}

/// Feed `data` through `engine` as imported history and evaluate; returns the findings as
/// (unit, rule, start, end) and the readings fed.
pub fn run_through(
    engine: &Engine,
    data: &[UnitData],
    now_ms: i64,
) -> Result<(Vec<sim::Found>, usize), EvalError> {
    let mut n = 0;
    for d in data {
        for chunk in d.minutes.chunks(1440) {
            let rs = sim::readings(&d.unit, chunk, Source::Import, None);
            n += rs.len();
            engine.ingest_history(&rs)?;
        }
    }
    while engine.backfill_pending()? > 0 {
        engine.backfill_step(24, now_ms)?;
    }
    let params: BTreeMap<String, Vec<ParamChange>> = data
        .iter()
        .map(|d| (d.unit.id.clone(), d.params.clone()))
        .collect();
    engine.integrity_mark(data.iter().map(|d| d.unit.id.clone()));
    engine.integrity_step(now_ms, &params)?;
    let found = engine
        .integrity_findings(None, i64::MIN, i64::MAX)?
        .into_iter()
        .map(|f| (f.unit, f.rule, f.start_ms, f.end_ms))
        .collect();
    Ok((found, n))
}

/// Generate `sc` for `units` and run it through a fresh engine in `dir`: its labels, the
/// findings and the readings fed.
fn run_scenario(
    units: &[SimUnit],
    sc: &Scenario,
    dir: &Path,
    now_ms: i64,
) -> Result<(Vec<Label>, Vec<sim::Found>, usize), EvalError> {
    let (data, labels) = sim::scenario(units, sc);
    std::fs::create_dir_all(dir).map_err(|e| EvalError::Setup(e.to_string()))?;
    let e = engine(dir, sc.days)?;
    let (found, n) = run_through(&e, &data, now_ms)?;
    Ok((labels, found, n))
}

/// Run the evaluation in `dir` (two databases: manipulated and clean).
pub fn run(opts: &EvalOptions, dir: &Path) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let units = district_units()?;
    let now = chrono::Utc::now().timestamp_millis();
    let manipulated = Scenario {
        t0_ms: sim::days_before(now, opts.days + 1),
        days: opts.days,
        per_rule: opts.per_rule,
        seed: opts.seed,
        burn_in_days: 7.min(opts.days / 3),
        stops: true,
        rules: Vec::new(),
    };
    let (labels, found, n_manipulated) =
        run_scenario(&units, &manipulated, &dir.join("manipulated"), now)?;
    // A finding's span is what its rule saw: allow it two hours either side of the label.
    let (scores, missed) = sim::score(&found, &labels, 2 * HOUR_MS);
    let clean = Scenario {
        t0_ms: sim::days_before(now, opts.clean_days + 1),
        days: opts.clean_days,
        per_rule: 0,
        seed: opts.seed.wrapping_mul(31).wrapping_add(7),
        burn_in_days: 0,
        stops: true,
        rules: Vec::new(),
    };
    let (_, clean_found, n_clean) = run_scenario(&units, &clean, &dir.join("clean"), now)?;
    let readings = n_manipulated + n_clean;
    let mut clean_by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for f in &clean_found {
        *clean_by_rule.entry(f.1.clone()).or_default() += 1;
    }
    let rows = RULES
        .iter()
        .map(|r| {
            let (tp, all, det, man) = scores.get(r).copied().unwrap_or_default();
            RuleScore {
                rule: r,
                manipulations: man,
                detected: det,
                findings: all,
                true_findings: tp,
                clean_findings: clean_by_rule.get(*r).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(EvalReport {
        rows,
        units: units.len(),
        clean_unit_weeks: units.len() as f64 * opts.clean_days as f64 / 7.0,
        readings,
        seconds: started.elapsed().as_secs_f64(),
        missed,
    })
}
