//! Where the integrity rules meet the standards engine: the minutes each CEMS hour yields are kept
//! (`integrity_minutes`, one JSON document per unit and hour, for `standards.integrity.history`),
//! a unit whose minutes changed (live, late, re-sent or imported) is re-evaluated over that whole
//! history, and its findings are kept in `integrity_findings`.
//!
//! A finding is keyed by (unit, rule, channel, start): while it goes on, each evaluation extends
//! its end in place (one finding, one alert, its `first_seen` kept); late data that makes a finding
//! untrue deletes it. Findings that begin before the history window, or in the first day of a full
//! one, are left as they were: their minutes are gone or being purged, so re-evaluating them would
//! only move their start or lose them.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{evaluate, Finding, Minute, ParamChange, Series, Severity, DAY_MS, MINUTE_MS};
use crate::standards::engine::{Engine, EngineError};
use crate::standards::time::HOUR_MS;
use crate::store::line_protocol::{string_field, tag};

pub(crate) fn create_tables(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS integrity_minutes (unit TEXT NOT NULL, hour_ms INTEGER NOT NULL,
         doc TEXT NOT NULL, PRIMARY KEY (unit, hour_ms)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS integrity_findings (unit TEXT NOT NULL, rule TEXT NOT NULL,
         channel TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
         severity TEXT NOT NULL, ongoing INTEGER NOT NULL, doc TEXT NOT NULL,
         first_seen_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
         PRIMARY KEY (unit, rule, channel, start_ms));
         CREATE INDEX IF NOT EXISTS integrity_findings_end ON integrity_findings (end_ms);",
    )
}

/// A finding as kept and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFinding {
    pub unit: String,
    pub rule: String,
    pub channel: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub severity: Severity,
    pub evidence: serde_json::Value,
    pub summary_zh: String,
    pub summary_en: String,
    /// Still going on at the end of the unit's data when last evaluated.
    pub ongoing: bool,
    /// When this finding was first made, epoch ms.
    pub first_seen_ms: i64,
}

/// The JSON kept in `integrity_findings.doc`.
#[derive(Serialize, Deserialize)]
struct Doc {
    evidence: serde_json::Value,
    summary_zh: String,
    summary_en: String,
}

fn severity_of(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "info" => Severity::Info,
        _ => Severity::Warning,
    }
}

/// A finding as line protocol (`integrity_finding`, at its start), for an InfluxDB store.
pub fn line(f: &Finding, site: &str, ongoing: bool) -> String {
    format!(
        "integrity_finding,site={},unit={},rule={},severity={} channel={},minutes={}i,ongoing={},summary_zh={},summary_en={} {}",
        tag(site),
        tag(&f.unit),
        tag(f.rule),
        tag(f.severity.as_str()),
        string_field(&f.channel),
        (f.end_ms - f.start_ms) / MINUTE_MS,
        ongoing,
        string_field(&f.summary_zh),
        string_field(&f.summary_en),
        f.start_ms
    )
}

impl Engine {
    /// Keep the integrity minutes of `unit`'s hour labelled `hour` (none: the row goes) and mark
    /// the unit for re-evaluation when they changed.
    pub(crate) fn put_integrity_minutes(
        &self,
        unit: &str,
        hour: i64,
        minutes: &[Minute],
    ) -> Result<(), EngineError> {
        let conn = self.conn();
        let old: Option<String> = conn
            .query_row(
                "SELECT doc FROM integrity_minutes WHERE unit = ?1 AND hour_ms = ?2",
                params![unit, hour],
                |r| r.get(0),
            )
            .optional()?;
        let changed = if minutes.is_empty() {
            conn.execute(
                "DELETE FROM integrity_minutes WHERE unit = ?1 AND hour_ms = ?2",
                params![unit, hour],
            )? > 0
        } else {
            let doc = serde_json::to_string(minutes)?;
            let changed = old.as_deref() != Some(doc.as_str());
            if changed {
                conn.execute(
                    "INSERT OR REPLACE INTO integrity_minutes (unit, hour_ms, doc) VALUES (?1, ?2, ?3)",
                    params![unit, hour, doc],
                )?;
            }
            changed
        };
        drop(conn);
        if changed {
            crate::sync::lock(&self.integrity_dirty).insert(unit.to_string());
        }
        Ok(())
    }

    /// Units waiting for re-evaluation.
    pub fn integrity_pending(&self) -> usize {
        crate::sync::lock(&self.integrity_dirty).len()
    }

    /// Mark units for re-evaluation (their declared site parameters changed).
    pub fn integrity_mark(&self, units: impl IntoIterator<Item = String>) {
        crate::sync::lock(&self.integrity_dirty).extend(units);
    }

    /// The history window, ms.
    pub fn integrity_history_ms(&self) -> i64 {
        self.settings
            .integrity
            .history
            .as_millis()
            .min(i64::MAX as u128) as i64
    }

    /// `unit`'s integrity minutes in `[from_ms, to_ms)`, oldest first.
    pub fn integrity_minutes(
        &self,
        unit: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Minute>, EngineError> {
        let docs: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM integrity_minutes WHERE unit = ?1 AND hour_ms > ?2 AND hour_ms <= ?3
                 ORDER BY hour_ms",
            )?;
            let rows = stmt.query_map(params![unit, from_ms, to_ms + HOUR_MS], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for d in docs {
            // A document this version cannot read (written by another) is skipped, with a
            // warning: the hour's next recomputation writes it again.
            let ms: Vec<Minute> = match serde_json::from_str(&d) {
                Ok(ms) => ms,
                Err(e) => {
                    tracing::warn!(unit, error = %e, "integrity: stored minutes do not decode; skipped");
                    continue;
                }
            };
            out.extend(
                ms.into_iter()
                    .filter(|m| m.ts_ms >= from_ms && m.ts_ms < to_ms),
            );
        }
        out.sort_by_key(|m| m.ts_ms);
        out.dedup_by_key(|m| m.ts_ms);
        Ok(out)
    }

    /// Re-evaluate every unit marked since the last step over its history (`params`: the CN 3020
    /// changes by unit). Returns the line protocol of the findings made or changed, and how many
    /// units were evaluated.
    pub fn integrity_step(
        &self,
        now_ms: i64,
        params: &BTreeMap<String, Vec<ParamChange>>,
    ) -> Result<(Vec<String>, usize), EngineError> {
        let units: Vec<String> = std::mem::take(&mut *crate::sync::lock(&self.integrity_dirty))
            .into_iter()
            .collect();
        let mut lines = Vec::new();
        let mut done = 0;
        for (i, unit) in units.iter().enumerate() {
            match self.evaluate_unit(unit, now_ms, params.get(unit).map_or(&[][..], |v| v)) {
                Ok(l) => {
                    lines.extend(l);
                    done += 1;
                }
                Err(e) => {
                    // Not lost: the unit and those after it are evaluated on the next step.
                    self.integrity_mark(units[i..].iter().cloned());
                    return Err(e);
                }
            }
        }
        Ok((lines, done))
    }

    /// The findings of one unit over its history, persisted.
    fn evaluate_unit(
        &self,
        unit_id: &str,
        now_ms: i64,
        params: &[ParamChange],
    ) -> Result<Vec<String>, EngineError> {
        let reg = self.registry.snapshot();
        let Some(unit) = reg.units.get(unit_id) else {
            return Ok(Vec::new());
        };
        let cfg = &self.settings.integrity;
        let decl = unit.integrity.overlaid(cfg.units.get(unit_id));
        let th = decl
            .thresholds(&cfg.thresholds)
            .unwrap_or_else(|_| cfg.thresholds.clone());
        let facts = decl.facts(
            unit_id,
            unit.capacity_mw,
            &unit.limits,
            unit.flow_basis == crate::standards::hj75::FlowBasis::DryStandard,
        );
        let history = self.integrity_history_ms();
        // The window ends at the unit's newest minute (or now): imported history that ends in the
        // past is evaluated over its own last weeks.
        let newest: Option<i64> = self.conn().query_row(
            "SELECT MAX(hour_ms) FROM integrity_minutes WHERE unit = ?1",
            [unit_id],
            |r| r.get(0),
        )?;
        let Some(newest) = newest else {
            return Ok(Vec::new());
        };
        let from = newest.min(now_ms) - history;
        let minutes = self.integrity_minutes(unit_id, from, newest.min(now_ms) + HOUR_MS)?;
        let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
            return Ok(Vec::new());
        };
        // Live data is known up to now (minus the recomputation's lag); imported history up to
        // its last minute (the end of a file is not a gap).
        let until_ms = if now_ms - last.ts_ms < DAY_MS {
            (now_ms - 2 * MINUTE_MS).max(last.ts_ms + MINUTE_MS)
        } else {
            last.ts_ms + MINUTE_MS
        };
        // Findings that start before this are left as they are: before the window, or (a full
        // window) in its first day, whose minutes are being purged.
        let frozen_before = if first.ts_ms <= from + DAY_MS {
            first.ts_ms + DAY_MS
        } else {
            from
        };
        let params: Vec<ParamChange> = params.iter().filter(|p| p.at_ms >= from).cloned().collect();
        let series = Series {
            unit: &facts,
            minutes: &minutes,
            params: &params,
            until_ms,
        };
        let found: Vec<Finding> = evaluate(&series, &th)
            .into_iter()
            .filter(|f| f.start_ms >= frozen_before)
            .collect();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut lines = Vec::new();
        {
            let existing: BTreeMap<(String, String, i64), (i64, String, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT rule, channel, start_ms, end_ms, doc, ongoing FROM integrity_findings
                     WHERE unit = ?1 AND start_ms >= ?2",
                )?;
                let rows = stmt.query_map(params![unit_id, frozen_before], |r| {
                    Ok((
                        (r.get(0)?, r.get(1)?, r.get(2)?),
                        (r.get(3)?, r.get(4)?, r.get(5)?),
                    ))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut kept = BTreeSet::new();
            let mut upsert = tx.prepare_cached(
                "INSERT INTO integrity_findings (unit, rule, channel, start_ms, end_ms, severity,
                 ongoing, doc, first_seen_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                 ON CONFLICT (unit, rule, channel, start_ms) DO UPDATE SET end_ms = excluded.end_ms,
                 severity = excluded.severity, ongoing = excluded.ongoing, doc = excluded.doc,
                 updated_ms = excluded.updated_ms",
            )?;
            for f in &found {
                let key = (f.rule.to_string(), f.channel.clone(), f.start_ms);
                let ongoing = f.end_ms >= until_ms - MINUTE_MS;
                let doc = serde_json::to_string(&Doc {
                    evidence: f.evidence.clone(),
                    summary_zh: f.summary_zh.clone(),
                    summary_en: f.summary_en.clone(),
                })?;
                let same = existing.get(&key).is_some_and(|(end, d, on)| {
                    *end == f.end_ms && *d == doc && (*on != 0) == ongoing
                });
                kept.insert(key);
                if same {
                    continue;
                }
                upsert.execute(params![
                    unit_id,
                    f.rule,
                    f.channel,
                    f.start_ms,
                    f.end_ms,
                    f.severity.as_str(),
                    i64::from(ongoing),
                    doc,
                    now_ms
                ])?;
                lines.push(line(f, &unit.site, ongoing));
            }
            let mut del = tx.prepare_cached(
                "DELETE FROM integrity_findings WHERE unit = ?1 AND rule = ?2 AND channel = ?3 AND start_ms = ?4",
            )?;
            for (rule, channel, start) in existing.keys() {
                if !kept.contains(&(rule.clone(), channel.clone(), *start)) {
                    tracing::info!(unit = %unit_id, rule = %rule, channel = %channel, start = %super::cst(*start),
                        "integrity: finding withdrawn after re-evaluation (late or corrected data)");
                    del.execute(params![unit_id, rule, channel, start])?;
                }
            }
        }
        tx.commit()?;
        Ok(lines)
    }

    /// Findings (of `unit`, or every unit) that overlap `[from_ms, to_ms)`, oldest first.
    pub fn integrity_findings(
        &self,
        unit: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredFinding>, EngineError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT unit, rule, channel, start_ms, end_ms, severity, ongoing, doc, first_seen_ms
             FROM integrity_findings WHERE (?1 IS NULL OR unit = ?1) AND end_ms > ?2 AND start_ms < ?3
             ORDER BY start_ms, unit, rule, channel LIMIT 10000",
        )?;
        let rows = stmt.query_map(params![unit, from_ms, to_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (unit, rule, channel, start_ms, end_ms, sev, ongoing, doc, first_seen_ms) = row?;
            let d: Doc = serde_json::from_str(&doc)?;
            out.push(StoredFinding {
                unit,
                rule,
                channel,
                start_ms,
                end_ms,
                severity: severity_of(&sev),
                evidence: d.evidence,
                summary_zh: d.summary_zh,
                summary_en: d.summary_en,
                ongoing: ongoing != 0,
                first_seen_ms,
            });
        }
        Ok(out)
    }

    /// Whether a finding is still on record.
    pub fn integrity_finding_exists(
        &self,
        unit: &str,
        rule: &str,
        channel: &str,
        start_ms: i64,
    ) -> Result<bool, EngineError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM integrity_findings WHERE unit = ?1 AND rule = ?2 AND channel = ?3 AND start_ms = ?4",
                params![unit, rule, channel, start_ms],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Delete integrity minutes older than the history window and findings that ended longer
    /// than `standards.integrity.keep` ago.
    pub(crate) fn integrity_purge(&self, now_ms: i64) -> Result<usize, EngineError> {
        let keep = self
            .settings
            .integrity
            .keep
            .as_millis()
            .min(i64::MAX as u128) as i64;
        let conn = self.conn();
        let a = conn.execute(
            "DELETE FROM integrity_minutes WHERE hour_ms < ?1",
            [now_ms - self.integrity_history_ms() - HOUR_MS],
        )?;
        let b = conn.execute(
            "DELETE FROM integrity_findings WHERE end_ms < ?1",
            [now_ms - keep],
        )?;
        Ok(a + b)
    }
}
