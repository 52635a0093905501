//! The standards engine: the stateful part. It keeps the input, knows what changed, applies the
//! pure rules of this module (`cems`, `air`, `hj633`, `gb18918`, `gb3838`, `plan`) and keeps the
//! typed results (`results`).
//!
//! - **Input**: after each successful store write, the writer hands the batch to [`Engine::ingest`],
//!   which keeps the readings that matter (CEMS units, air stations, water sensors) in `std_input`
//!   (SQLite, same database) for the lateness window, keyed like the stores so a replay is the same
//!   row, and marks the hours they fall in as changed.
//! - **Recomputation**: every `standards.interval`, [`Engine::recompute`] rebuilds each changed hour
//!   from `std_input` (one hour of one entity at a time, folded into minute buckets as the rows are read —
//!   `input::HourInput`), then the days those hours belong to, then writes the results to
//!   `std_results`. Results depend only on the input rows, never on arrival order: a reading a day
//!   late gives exactly the result it would have given on time. Live readings older than the
//!   window are stored but change nothing (counted). Imported history is taken whatever its age
//!   ([`Engine::ingest_history`]) and its hours are queued on disk (`std_backfill`) for the
//!   background re-evaluation ([`Engine::backfill_step`], `runner::Backfill`).
//! - **Outputs**: typed results (`results`), stored as their JSON and served by the API; when the
//!   store is InfluxDB, line protocol (`export`).
//!
//! Hours are labelled by their end and days are CST ([`super::time`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection};

use super::hj633::{Concentrations, Edition, Report};
use super::input::HourInput;
use super::results::{
    AirDay, AirDayValidity, AirHour, AirMonth, CemsDay, CemsHour, CemsMonth, CemsPollutantMonth,
    Compliance, Gb18918Summary, Gb3838Summary, Indicator, IndicatorDetail, IndicatorStatus,
    MonthVolumes, SewageDetail, Stored, TreatmentDay, UnitCompliance, UnitHours, UnitsDetail,
    Values, WaterDay, WaterHour,
};
use super::time::{self, DAY_MS, HOUR_MS, MINUTE_MS};
use super::{air, cems, export, gb18918, gb3838, hj663, plan};
use crate::catalogue::{self, find_quantity, find_unit, GasReference};
use crate::config::{
    AirStandardsConfig, CemsStandardsConfig, StandardsConfig, WaterStandardsConfig,
};
use crate::reading::{DataFlag, Domain, Period, Reading};
use crate::registry::{Registry, RegistryHandle, SiteKind};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("standards database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("standards result encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("standards task failed: {0}")]
    Task(String),
}

impl EngineError {
    /// A failure that passes by itself: the disk full (space is freed), the database busy or
    /// locked, an I/O error. Worth retrying; anything else is a bug or a broken database.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::{
            CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure,
        };
        let sql = match self {
            EngineError::Sql(e) => Some(e),
            EngineError::Db(crate::db::DbError::Sql(e)) => Some(e),
            _ => None,
        };
        matches!(
            sql.and_then(rusqlite::Error::sqlite_error_code),
            Some(DiskFull | DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen)
        )
    }
}

/// What the engine computes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    CemsHour,
    AirHour,
    WaterHour,
    CemsDay,
    AirDay,
    WaterDay,
}

impl Kind {
    /// The stored index of a kind (`std_backfill.kind`).
    fn from_index(i: i64) -> Option<Kind> {
        [
            Kind::CemsHour,
            Kind::AirHour,
            Kind::WaterHour,
            Kind::CemsDay,
            Kind::AirDay,
            Kind::WaterDay,
        ]
        .into_iter()
        .find(|k| *k as i64 == i)
    }
}

/// A changed (kind, entity, hour label or day start).
type Mark = (Kind, String, i64);

/// Settings resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub edition: Edition,
    pub lateness_ms: i64,
    /// `standards.history_input_keep`.
    pub history_keep_ms: i64,
    pub cems: CemsStandardsConfig,
    pub air: AirStandardsConfig,
    pub water: WaterStandardsConfig,
    pub integrity: crate::integrity::IntegrityConfig,
}

impl Settings {
    pub fn from_config(cfg: &StandardsConfig) -> Settings {
        Settings {
            edition: cfg.aqi_edition,
            lateness_ms: cfg.lateness.as_millis().min(i64::MAX as u128) as i64,
            history_keep_ms: cfg.history_input_keep.as_millis().min(i64::MAX as u128) as i64,
            cems: cfg.cems.clone(),
            air: cfg.air.clone(),
            water: cfg.water.clone(),
            integrity: cfg.integrity.clone(),
        }
    }
}

/// What one `ingest` call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestStats {
    pub kept: usize,
    pub too_late: usize,
}

/// The engine. Blocking (SQLite): call from `spawn_blocking`.
pub struct Engine {
    conn: Mutex<Connection>,
    pub(crate) registry: RegistryHandle,
    pub(crate) settings: Settings,
    /// Changed (kind, entity, hour label or day start).
    dirty: Mutex<BTreeSet<(Kind, String, i64)>>,
    /// Units whose integrity minutes changed since their last evaluation (`crate::integrity`).
    pub(crate) integrity_dirty: Mutex<BTreeSet<String>>,
}

/// Where a sensor's readings go in the engine.
fn entity_of(reg: &Registry, sensor: &str) -> Option<(Kind, String)> {
    let s = reg.sensors.get(sensor)?;
    match s.domain {
        Domain::Cems => s.unit.clone().map(|u| (Kind::CemsHour, u)),
        Domain::Air => Some((Kind::AirHour, s.site.clone())),
        Domain::Water => Some((Kind::WaterHour, s.id.clone())),
        // A unit's electricity use (ST 44) tells the integrity rules whether it runs.
        Domain::Power => s.unit.clone().map(|u| (Kind::CemsHour, u)),
        Domain::Production => None,
    }
}

/// Convert an ambient value in `unit` to `target` for quantity `q` (AQI needs µg/m3, CO mg/m3).
fn to_unit(q: &str, value: f64, unit: &str, target: &str) -> Option<f64> {
    let quantity = find_quantity(q)?;
    catalogue::convert(
        value,
        find_unit(unit)?,
        find_unit(target)?,
        quantity,
        GasReference::Ambient,
    )
    .ok()
}

/// The stations with a result, by name, and a copy of their values (to hold some out).
fn station_values<'a, T>(
    stations: &[String],
    docs: &'a [(String, i64, T)],
    values: impl Fn(&'a T) -> &'a Values,
) -> (Vec<String>, Vec<Values>) {
    stations
        .iter()
        .filter_map(|s| {
            docs.iter()
                .find(|(e, _, _)| e == s)
                .map(|(_, _, d)| (s.clone(), values(d).clone()))
        })
        .unzip()
}

/// Column `i` of `row` as borrowed text (no allocation per row).
fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a str, rusqlite::Error> {
    row.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Engine {
    pub fn open(
        db_path: &Path,
        registry: RegistryHandle,
        settings: Settings,
    ) -> Result<Engine, EngineError> {
        let conn = crate::db::open(db_path)?;
        // The engine's own rows can be rebuilt from the store; an OS crash may lose the last ones.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Hours of imported history waiting to be recomputed (`ingest_history`, `backfill_step`):
        // kept on disk, so a restart goes on where it stopped.
        // `gen` counts queuings: a step deletes only what it read, so input queued while it ran
        // is computed again. `follow`: queued because an earlier hour changed (moving means), not
        // for input of its own; such an hour does not pass the change on.
        crate::integrity::persist::create_tables(&conn)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS std_backfill (kind INTEGER NOT NULL, entity TEXT NOT NULL,
             ts_ms INTEGER NOT NULL, gen INTEGER NOT NULL DEFAULT 0, follow INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (ts_ms, kind, entity)) WITHOUT ROWID;",
        )?;
        // When imported input was taken (NULL: live), so the purge keeps it for a while.
        let has_imported: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('std_input') WHERE name = 'imported_ms'")?
            .exists([])?;
        if !has_imported {
            conn.execute_batch("ALTER TABLE std_input ADD COLUMN imported_ms INTEGER;")?;
        }
        Ok(Engine {
            conn: Mutex::new(conn),
            registry,
            settings,
            dirty: Mutex::new(BTreeSet::new()),
            integrity_dirty: Mutex::new(BTreeSet::new()),
        })
    }

    /// How late a reading may be and still change its hour and day.
    pub fn lateness_ms(&self) -> i64 {
        self.settings.lateness_ms
    }

    /// The AQI edition results are computed under.
    pub fn edition(&self) -> Edition {
        self.settings.edition
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        crate::sync::lock(&self.conn)
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Kind, String, i64)>> {
        crate::sync::lock(&self.dirty)
    }

    /// Keep the readings that matter and mark their hours changed.
    pub fn ingest(&self, readings: &[Reading], now_ms: i64) -> Result<IngestStats, EngineError> {
        let oldest_hour = time::label(now_ms - self.settings.lateness_ms, HOUR_MS);
        let (stats, marks) = self.keep(readings, Some(oldest_hour), None)?;
        self.dirty().extend(marks);
        Ok(stats)
    }

    /// Keep imported readings whatever their age and queue their hours for the background
    /// re-evaluation ([`Engine::backfill_step`]), on disk. `kept` counts readings taken; the
    /// second value is how many hours were newly queued.
    pub fn ingest_history(
        &self,
        readings: &[Reading],
    ) -> Result<(IngestStats, usize), EngineError> {
        let now = chrono::Utc::now().timestamp_millis();
        let (stats, marks) = self.keep(readings, None, Some(now))?;
        let queued = self.queue_backfill(marks.into_iter().collect::<BTreeSet<_>>(), false)?;
        Ok((stats, queued))
    }

    fn queue_backfill(
        &self,
        marks: impl IntoIterator<Item = (Kind, String, i64)>,
        follow: bool,
    ) -> Result<usize, EngineError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut queued = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO std_backfill (kind, entity, ts_ms, gen, follow) VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT (ts_ms, kind, entity) DO UPDATE SET gen = gen + 1,
                 follow = MIN(follow, excluded.follow)",
            )?;
            for (kind, entity, hour) in marks {
                queued += stmt.execute(params![kind as i64, entity, hour, i64::from(follow)])?;
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Hours of imported history still waiting for re-evaluation.
    pub fn backfill_pending(&self) -> Result<u64, EngineError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM std_backfill", [], |r| {
                r.get::<_, i64>(0)
            })?
            .max(0) as u64)
    }

    /// Re-evaluate the oldest `max_hours` hour labels of imported history (every entity at
    /// each of them, so the district's hour is formed from all its stations), then their days.
    /// Returns the line protocol of the new results and how many queued hours were done.
    pub fn backfill_step(
        &self,
        max_hours: usize,
        now_ms: i64,
    ) -> Result<(Vec<String>, usize), EngineError> {
        let rows: Vec<(i64, String, i64, i64, i64)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT kind, entity, ts_ms, gen, follow FROM std_backfill WHERE ts_ms IN
                 (SELECT DISTINCT ts_ms FROM std_backfill ORDER BY ts_ms LIMIT ?1)
                 ORDER BY ts_ms, kind, entity",
            )?;
            let it = stmt.query_map([max_hours as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            it.collect::<Result<_, _>>()?
        };
        let mut work = Vec::with_capacity(rows.len());
        let mut quiet = BTreeSet::new();
        for (k, e, ts, _, follow) in &rows {
            if let Some(k) = Kind::from_index(*k) {
                if *follow != 0 {
                    quiet.insert((k, e.clone(), *ts));
                }
                work.push((k, e.clone(), *ts));
            }
        }
        let n = rows.len();
        let lines = self.recompute_work(work, now_ms, Some(&quiet))?;
        // Taken off the queue only once done, and only as read: queued again meanwhile (`gen`
        // moved on), it stays for the next step.
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached(
                "DELETE FROM std_backfill WHERE kind = ?1 AND entity = ?2 AND ts_ms = ?3 AND gen = ?4",
            )?;
            for (k, e, ts, generation, _) in &rows {
                del.execute(params![k, e, ts, generation])?;
            }
        }
        tx.commit()?;
        Ok((lines, n))
    }

    /// Keep the readings that matter (those at or after `oldest_hour`, when given) in
    /// `std_input`; returns what was kept and the hours it falls in.
    fn keep(
        &self,
        readings: &[Reading],
        oldest_hour: Option<i64>,
        imported_ms: Option<i64>,
    ) -> Result<(IngestStats, Vec<Mark>), EngineError> {
        let reg = self.registry.snapshot();
        let mut stats = IngestStats::default();
        let mut marks = Vec::new();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO std_input (sensor, quantity, ts_ms, period, value, flag, imported_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in readings {
                // A CEMS logger's production-condition readings are not inputs of the emission
                // standards (its electricity use is, of the integrity rules: `entity_of`).
                if r.domain == Domain::Production {
                    continue;
                }
                let Some((kind, entity)) = entity_of(&reg, &r.sensor) else {
                    continue;
                };
                let hour = time::hour_label_of(r.ts_ms(), r.period);
                if oldest_hour.is_some_and(|oldest| hour < oldest) {
                    stats.too_late += 1;
                    continue;
                }
                // Values in the unit the rules use (AQI: µg/m3, CO mg/m3).
                let value = match (kind, air::POLLUTANTS.iter().find(|(q, _)| *q == r.quantity)) {
                    (Kind::AirHour, Some((_, target))) => {
                        match to_unit(&r.quantity, r.value, &r.unit, target) {
                            Some(v) => v,
                            None => continue,
                        }
                    }
                    _ => r.value,
                };
                stmt.execute(params![
                    r.sensor,
                    r.quantity,
                    r.ts_ms(),
                    r.period.as_str(),
                    value,
                    r.flag.as_str(),
                    imported_ms
                ])?;
                stats.kept += 1;
                marks.push((kind, entity, hour));
            }
        }
        tx.commit()?;
        Ok((stats, marks))
    }

    /// Mark every hour with input inside the lateness window as changed (at start: a crash may have
    /// lost the changed set).
    pub fn mark_recent(&self, now_ms: i64) -> Result<usize, EngineError> {
        let reg = self.registry.snapshot();
        let from = now_ms - self.settings.lateness_ms - HOUR_MS;
        let rows: Vec<(String, i64, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT DISTINCT sensor, ts_ms, period FROM std_input WHERE ts_ms >= ?1",
            )?;
            let it = stmt.query_map([from], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            it.collect::<Result<_, _>>()?
        };
        let mut d = self.dirty();
        let before = d.len();
        for (sensor, ts, period) in rows {
            if let Some((kind, entity)) = entity_of(&reg, &sensor) {
                d.insert((
                    kind,
                    entity,
                    time::hour_label_of(ts, Period::parse(&period).unwrap_or_default()),
                ));
            }
        }
        Ok(d.len() - before)
    }

    /// Delete input older than the lateness window (plus a day), except what imported history
    /// still waiting for re-evaluation needs (from two days before its oldest queued hour) and
    /// imported input younger than `standards.history_input_keep` (a later import of the same
    /// hours is re-evaluated with it).
    pub fn purge(&self, now_ms: i64) -> Result<usize, EngineError> {
        let cutoff = now_ms - self.settings.lateness_ms - DAY_MS - HOUR_MS;
        let conn = self.conn();
        let oldest_pending: Option<i64> =
            conn.query_row("SELECT MIN(ts_ms) FROM std_backfill", [], |r| r.get(0))?;
        let cutoff = match oldest_pending {
            Some(ts) => cutoff.min(ts - 2 * DAY_MS),
            None => cutoff,
        };
        // Imported input stays `history_input_keep` after its import.
        let keep_from = now_ms - self.settings.history_keep_ms;
        let n = conn.execute(
            "DELETE FROM std_input WHERE ts_ms < ?1 AND (imported_ms IS NULL OR imported_ms < ?2)",
            [cutoff, keep_from],
        )?;
        drop(conn);
        Ok(n + self.integrity_purge(now_ms)?)
    }

    /// Whether anything is waiting to be recomputed.
    pub fn has_changes(&self) -> bool {
        !self.dirty().is_empty()
    }

    /// Recompute what changed: hours first, then their days. Returns line protocol of every new
    /// result (for an InfluxDB store).
    pub fn recompute(&self, now_ms: i64) -> Result<Vec<String>, EngineError> {
        let work: Vec<(Kind, String, i64)> =
            std::mem::take(&mut *self.dirty()).into_iter().collect();
        self.recompute_work(work, now_ms, None)
    }

    /// Recompute `work` (hours; their days follow). Hours that depend on a recomputed one (the
    /// 2012 edition's moving means) are marked changed, or, for the background re-evaluation
    /// (`history`: the hours there that were only such followers, which pass nothing on), queued.
    fn recompute_work(
        &self,
        work: Vec<(Kind, String, i64)>,
        now_ms: i64,
        history: Option<&BTreeSet<Mark>>,
    ) -> Result<Vec<String>, EngineError> {
        let reg = self.registry.snapshot();
        let mut follow: Vec<(Kind, String, i64)> = Vec::new();
        let mut lines = Vec::new();
        let mut days: BTreeSet<(Kind, String, i64)> = BTreeSet::new();
        let mut air_hours: BTreeSet<i64> = BTreeSet::new();
        for (kind, entity, ts) in work
            .iter()
            .filter(|(k, _, _)| matches!(k, Kind::CemsHour | Kind::AirHour | Kind::WaterHour))
        {
            let day = time::day_start_ms(time::day_of_hour(*ts));
            match kind {
                Kind::CemsHour => {
                    if let Some(h) = self.cems_hour(&reg, entity, *ts)? {
                        lines.extend(export::cems_hour(&h));
                        self.put(entity, *ts, &h)?;
                    }
                    days.insert((Kind::CemsDay, entity.clone(), day));
                }
                Kind::AirHour => {
                    let h = self.air_hour(&reg, entity, *ts)?;
                    lines.push(export::air_hour(&h));
                    self.put(entity, *ts, &h)?;
                    air_hours.insert(*ts);
                    days.insert((Kind::AirDay, entity.clone(), day));
                    days.insert((Kind::AirDay, "district".into(), day));
                    let quiet =
                        history.is_some_and(|q| q.contains(&(Kind::AirHour, entity.clone(), *ts)));
                    if self.settings.edition == Edition::Hj633_2012 && !quiet {
                        // 2012 real-time AQI uses 24h/8h moving means: later hours depend on this one.
                        for h in 1..=23 {
                            if self.exists(AirHour::KIND, entity, ts + h * HOUR_MS)? {
                                follow.push((Kind::AirHour, entity.clone(), ts + h * HOUR_MS));
                            }
                        }
                    }
                }
                _ => {
                    days.insert((Kind::WaterDay, entity.clone(), day));
                    let h = self.water_hour(&reg, entity, *ts)?;
                    self.put(entity, *ts, &h)?;
                }
            }
        }
        for hour in air_hours {
            let h = self.district_hour(&reg, hour)?;
            lines.push(export::air_hour(&h));
            self.put("district", hour, &h)?;
        }
        let mut treatment_days = BTreeSet::new();
        // Stations' days before the district's (which is formed from them).
        let mut ordered: Vec<_> = days.into_iter().collect();
        ordered.sort_by_key(|(k, e, d)| (*k, e == "district", *d));
        for (kind, entity, day_ms) in ordered {
            let day = time::cst_date(day_ms);
            match kind {
                Kind::CemsDay => {
                    let d = self.cems_day(&reg, &entity, day, now_ms)?;
                    lines.extend(export::cems_day(&d, day_ms));
                    self.put(&entity, day_ms, &d)?;
                }
                Kind::AirDay => {
                    let d = if entity == "district" {
                        self.district_day(&reg, day)?
                    } else {
                        self.air_day(&reg, &entity, day)?
                    };
                    lines.push(export::air_day(&d, day_ms));
                    self.put(&entity, day_ms, &d)?;
                }
                Kind::WaterDay => {
                    let d = self.water_day(&reg, &entity, day)?;
                    lines.push(export::water_day(&d, day_ms));
                    self.put(&entity, day_ms, &d)?;
                    treatment_days.insert(day_ms);
                }
                _ => {}
            }
        }
        for day_ms in treatment_days {
            let d = self.treatment_day(day_ms)?;
            lines.push(export::treatment_day(&d, day_ms));
            self.put("treatment", day_ms, &d)?;
        }
        if history.is_some() {
            // Hours already done in this step are not queued again.
            let done: BTreeSet<&(Kind, String, i64)> = work.iter().collect();
            let later: Vec<_> = follow
                .iter()
                .filter(|f| !done.contains(f))
                .cloned()
                .collect();
            self.queue_backfill(later, true)?;
        } else {
            self.dirty().extend(follow);
        }
        Ok(lines)
    }

    fn put<T: Stored>(&self, entity: &str, ts: i64, doc: &T) -> Result<(), EngineError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO std_results (kind, entity, ts_ms, doc) VALUES (?1, ?2, ?3, ?4)",
            params![T::KIND, entity, ts, serde_json::to_string(doc)?],
        )?;
        Ok(())
    }

    fn exists(&self, kind: &str, entity: &str, ts: i64) -> Result<bool, EngineError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM std_results WHERE kind = ?1 AND entity = ?2 AND ts_ms = ?3",
            params![kind, entity, ts],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    /// Stored documents of `kind` (for `entity`, or all) with `from ≤ ts ≤ to`, oldest first, as
    /// their JSON text.
    fn raw(
        &self,
        kind: &str,
        entity: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, String)>, EngineError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT entity, ts_ms, doc FROM std_results WHERE kind = ?1 AND (?2 IS NULL OR entity = ?2)
             AND ts_ms >= ?3 AND ts_ms <= ?4 ORDER BY ts_ms, entity LIMIT 100000",
        )?;
        let rows = stmt.query_map(params![kind, entity, from, to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Results of type `T` (for `entity`, or all) with `from ≤ ts ≤ to`, oldest first. A stored
    /// document that no longer decodes (written by an older version) is skipped with a warning; it
    /// is replaced when its hour or day is recomputed.
    pub fn results<T: Stored>(
        &self,
        entity: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, T)>, EngineError> {
        let mut out = Vec::new();
        for (e, ts, doc) in self.raw(T::KIND, entity, from, to)? {
            match serde_json::from_str(&doc) {
                Ok(d) => out.push((e, ts, d)),
                Err(err) => {
                    tracing::warn!(kind = T::KIND, entity = %e, ts_ms = ts, error = %err, "standards: stored result does not decode; skipped until recomputed")
                }
            }
        }
        Ok(out)
    }

    /// Stored results of any kind as JSON values (for tests and tools that compare runs).
    pub fn results_json(
        &self,
        kind: &str,
        entity: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, serde_json::Value)>, EngineError> {
        self.raw(kind, entity, from, to)?
            .into_iter()
            .map(|(e, ts, d)| Ok((e, ts, serde_json::from_str(&d)?)))
            .collect()
    }

    /// The hour labelled `hour` of `sensors` (samples in (h−1, h], means starting in it), folded
    /// into minute buckets row by row as SQLite returns them: one hour of one entity costs its
    /// buckets, not its rows, however fast its sensors sample.
    fn hour_input(&self, sensors: &[String], hour: i64) -> Result<HourInput, EngineError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT quantity, ts_ms, period, value, flag FROM std_input WHERE sensor = ?1 AND ts_ms >= ?2 AND ts_ms <= ?3",
        )?;
        let mut input = HourInput::default();
        for s in sensors {
            let mut rows = stmt.query(params![s, hour - HOUR_MS - MINUTE_MS, hour])?;
            while let Some(r) = rows.next()? {
                let period = Period::parse(text(r, 2)?).unwrap_or_default();
                let flag = text(r, 4)?.parse().unwrap_or(DataFlag::N);
                input.add(hour, text(r, 0)?, r.get(1)?, period, r.get(3)?, flag);
            }
        }
        Ok(input)
    }

    fn cems_hour(
        &self,
        reg: &Registry,
        unit_id: &str,
        hour: i64,
    ) -> Result<Option<CemsHour>, EngineError> {
        let Some(unit) = reg.units.get(unit_id) else {
            return Ok(None);
        };
        let sensors: Vec<String> = reg
            .sensors
            .values()
            .filter(|s| {
                s.unit.as_deref() == Some(unit_id)
                    && matches!(s.domain, Domain::Cems | Domain::Power)
            })
            .map(|s| s.id.clone())
            .collect();
        let input = self.hour_input(&sensors, hour)?;
        let policy = cems::Policy::for_unit(unit, &self.settings.cems);
        if self.settings.integrity.enabled {
            let minutes = cems::integrity_minutes(unit, &input, &policy.rules);
            self.put_integrity_minutes(unit_id, hour, &minutes)?;
        }
        Ok(cems::hour(unit_id, unit, &input, hour, &policy))
    }

    fn cems_day(
        &self,
        reg: &Registry,
        unit_id: &str,
        day: NaiveDate,
        now_ms: i64,
    ) -> Result<CemsDay, EngineError> {
        let start = time::day_start_ms(day);
        let hours: Vec<CemsHour> = self
            .results::<CemsHour>(Some(unit_id), start + HOUR_MS, start + DAY_MS)?
            .into_iter()
            .map(|(_, _, h)| h)
            .collect();
        // Hours of the day that have ended (all 24 for a past day).
        let elapsed = ((now_ms.min(start + DAY_MS) - start) / HOUR_MS).clamp(0, 24) as u32;
        Ok(match reg.units.get(unit_id) {
            Some(unit) => cems::day(unit_id, unit, day, &hours, elapsed),
            None => CemsDay {
                unit: unit_id.to_string(),
                day: day.to_string(),
                hours_elapsed: elapsed,
                pollutants: BTreeMap::new(),
            },
        })
    }

    fn air_hour(&self, reg: &Registry, site: &str, hour: i64) -> Result<AirHour, EngineError> {
        let sensors: Vec<String> = reg
            .sensors
            .values()
            .filter(|s| s.site == site && s.domain == Domain::Air)
            .map(|s| s.id.clone())
            .collect();
        let input = self.hour_input(&sensors, hour)?;
        let values: Values = air::POLLUTANTS
            .iter()
            .map(|(q, _)| (q.to_string(), input.air_hourly(q)))
            .collect();
        let conc = self.realtime_concentrations(site, hour, &values)?;
        let nm = air::not_monitored(reg, site);
        Ok(AirHour {
            station: site.to_string(),
            hour: time::cst_rfc3339(hour),
            hour_ms: hour,
            aqi: air::aqi(self.settings.edition, Report::Hourly, &conc, &nm),
            values,
            stations: None,
            stations_valid: None,
            held_out: Default::default(),
        })
    }

    /// Concentrations for the real-time AQI of `hour`: the 1h values, plus (2012) the O3 8h and PM
    /// 24h moving means from the previous hours' results.
    fn realtime_concentrations(
        &self,
        entity: &str,
        hour: i64,
        values: &Values,
    ) -> Result<Concentrations, EngineError> {
        let v = |q: &str| values.get(q).copied().flatten();
        let mut c = Concentrations {
            so2: v("SO2"),
            no2: v("NO2"),
            pm10: v("PM10"),
            pm25: v("PM2.5"),
            co: v("CO"),
            o3_1h: v("O3"),
            o3_8h: None,
            so2_24h: None,
        };
        if self.settings.edition == Edition::Hj633_2012 {
            let prev =
                self.results::<AirHour>(Some(entity), hour - 23 * HOUR_MS, hour - HOUR_MS)?;
            let series = |q: &str, n: i64| -> Vec<Option<f64>> {
                let mut by_ts: HashMap<i64, Option<f64>> = prev
                    .iter()
                    .map(|(_, ts, d)| (*ts, d.values.get(q).copied().flatten()))
                    .collect();
                by_ts.insert(hour, v(q));
                (0..n)
                    .map(|i| by_ts.get(&(hour - i * HOUR_MS)).copied().flatten())
                    .collect()
            };
            c.o3_8h = hj663::o3_8h_mean(&series("O3", 8));
            // 24h moving means of PM (and SO2 for the >800 fall-back), valid with ≥ 20 hours.
            c.pm10 = hj663::daily_mean(&series("PM10", 24));
            c.pm25 = hj663::daily_mean(&series("PM2.5", 24));
            c.so2_24h = hj663::daily_mean(&series("SO2", 24));
        }
        Ok(c)
    }

    /// Whether station `station`'s `key` (a pollutant, or O3's daily maxima) at `at_ms` is checked
    /// against the other stations: every station's with `outlier_all_stations`, else only while a
    /// sensor measuring it there is in its first `outlier_probation` after registration.
    fn outlier_checked(&self, reg: &Registry, station: &str, key: &str, at_ms: i64) -> bool {
        if self.settings.air.outlier_all_stations {
            return true;
        }
        let q = if key.starts_with("O3") { "O3" } else { key };
        let probation = self.settings.air.outlier_probation.as_millis() as i64;
        reg.sensors.values().any(|s| {
            s.site == station
                && s.domain == Domain::Air
                && s.status != crate::registry::SensorStatus::Retired
                && s.channels.iter().any(|c| c.quantity == q)
                && s.registered_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t.timestamp_millis() + probation >= at_ms)
        })
    }

    fn district_hour(&self, reg: &Registry, hour: i64) -> Result<AirHour, EngineError> {
        let stations = air::stations(reg);
        let docs = self.results::<AirHour>(None, hour, hour)?;
        let (names, mut owned) = station_values(&stations, &docs, |d| &d.values);
        let keys: Vec<&str> = air::POLLUTANTS.iter().map(|(q, _)| *q).collect();
        let held_out = air::hold_out_outliers(
            &names,
            &mut owned,
            &keys,
            self.settings.air.outlier_factor,
            |st, q| self.outlier_checked(reg, st, q, hour),
        );
        for (q, hs) in &held_out {
            for h in hs {
                tracing::warn!(station = %h.station, pollutant = %q, value = h.value, median = h.median,
                    hour = %time::cst_rfc3339(hour), "station value held out of the district mean");
            }
        }
        let per: Vec<&Values> = owned.iter().collect();
        let (values, counts) =
            air::district_values(&per, &keys, self.settings.air.district_min_stations);
        let conc = self.realtime_concentrations("district", hour, &values)?;
        let nm = air::not_monitored(reg, "district");
        Ok(AirHour {
            station: "district".into(),
            hour: time::cst_rfc3339(hour),
            hour_ms: hour,
            aqi: air::aqi(self.settings.edition, Report::Hourly, &conc, &nm),
            values,
            stations: Some(stations),
            stations_valid: Some(counts),
            held_out,
        })
    }

    /// A day of `entity`'s hourly results (a station, or the district's own hourly series).
    fn day_from_hours(
        &self,
        entity: &str,
        day: NaiveDate,
    ) -> Result<(Values, AirDayValidity), EngineError> {
        let labels = time::hour_labels(day);
        let docs = self.results::<AirHour>(Some(entity), labels[0], labels[23])?;
        let hours: [Option<&AirHour>; 24] = std::array::from_fn(|i| {
            docs.iter()
                .find(|(_, ts, _)| *ts == labels[i])
                .map(|(_, _, d)| d)
        });
        Ok(air::day_values(&hours))
    }

    fn air_day(&self, reg: &Registry, site: &str, day: NaiveDate) -> Result<AirDay, EngineError> {
        let (values, validity) = self.day_from_hours(site, day)?;
        Ok(air::day(
            self.settings.edition,
            site,
            day,
            values,
            validity,
            air::not_monitored(reg, site),
        ))
    }

    fn district_day(&self, reg: &Registry, day: NaiveDate) -> Result<AirDay, EngineError> {
        let stations = air::stations(reg);
        let (values, mut validity) = match self.settings.air.district_method {
            air::DistrictMethod::HourlySeries => self.day_from_hours("district", day)?,
            air::DistrictMethod::StationDays => {
                let start = time::day_start_ms(day);
                let docs = self.results::<AirDay>(None, start, start)?;
                let (names, mut owned) = station_values(&stations, &docs, |d| &d.values);
                let keys = [
                    "SO2",
                    "NO2",
                    "PM10",
                    "PM2.5",
                    "CO",
                    "O3_8h_max",
                    "O3_1h_max",
                ];
                air::hold_out_outliers(
                    &names,
                    &mut owned,
                    &keys,
                    self.settings.air.outlier_factor,
                    |st, q| self.outlier_checked(reg, st, q, start + 86_400_000),
                );
                let per: Vec<&Values> = owned.iter().collect();
                let (values, _) =
                    air::district_values(&per, &keys, self.settings.air.district_min_stations);
                (values, AirDayValidity::default())
            }
        };
        validity.stations = Some(stations);
        validity.method = Some(
            match self.settings.air.district_method {
                air::DistrictMethod::HourlySeries => "hourly_series",
                air::DistrictMethod::StationDays => "station_days",
            }
            .into(),
        );
        Ok(air::day(
            self.settings.edition,
            "district",
            day,
            values,
            validity,
            air::not_monitored(reg, "district"),
        ))
    }

    fn water_hour(
        &self,
        reg: &Registry,
        sensor: &str,
        hour: i64,
    ) -> Result<WaterHour, EngineError> {
        let input = self.hour_input(&[sensor.to_string()], hour)?;
        let values: Values = reg
            .sensors
            .get(sensor)
            .map(|s| {
                s.channels
                    .iter()
                    .map(|ch| (ch.quantity.clone(), input.water_hourly(&ch.quantity)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(WaterHour {
            sensor: sensor.to_string(),
            hour_ms: hour,
            values,
        })
    }

    fn water_day(
        &self,
        reg: &Registry,
        sensor: &str,
        day: NaiveDate,
    ) -> Result<WaterDay, EngineError> {
        let labels = time::hour_labels(day);
        let hours = self.results::<WaterHour>(Some(sensor), labels[0], labels[23])?;
        let mut doc = WaterDay {
            sensor: sensor.to_string(),
            site: None,
            day: day.to_string(),
            values: Values::new(),
            hours: BTreeMap::new(),
            volume_m3: None,
            gb18918_class_1a: None,
            gb3838_class: None,
        };
        let Some(s) = reg.sensors.get(sensor) else {
            return Ok(doc);
        };
        doc.site = Some(s.site.clone());
        for ch in &s.channels {
            let v: Vec<f64> = hours
                .iter()
                .filter_map(|(_, _, d)| d.values.get(&ch.quantity).copied().flatten())
                .collect();
            doc.hours.insert(ch.quantity.clone(), v.len() as u32);
            doc.values.insert(ch.quantity.clone(), mean(&v));
        }
        let v = |q: &str| doc.values.get(q).copied().flatten();
        if let Some(flow_hours) = doc.hours.get("water_flow") {
            // Daily volume from the hourly mean flows (m3/h), with ≥ 20 hours; scaled to 24 h.
            doc.volume_m3 = (*flow_hours >= 20)
                .then(|| v("water_flow").map(|f| f * 24.0))
                .flatten();
        }
        let cmp = self.settings.water.comparison;
        if self
            .settings
            .water
            .effluent_sensors
            .iter()
            .any(|e| e == sensor)
        {
            let e = gb18918::Effluent {
                cod: v("COD"),
                bod5: v("BOD5"),
                ss: v("SS"),
                nh3n: v("NH3-N"),
                tn: v("TN"),
                tp: v("TP"),
                ph: v("pH"),
                water_temp: v("water_temp"),
            };
            let verdicts = gb18918::class_1a_by(cmp, &e, self.settings.water.built_before_2006);
            doc.gb18918_class_1a = Some(Gb18918Summary {
                compliant: (!verdicts.is_empty()).then(|| verdicts.iter().all(|x| x.compliant)),
                parameters: verdicts,
            });
        }
        if reg
            .sites
            .get(&s.site)
            .is_some_and(|x| x.kind == SiteKind::RiverSection)
        {
            use gb3838::Parameter as P;
            let params: Vec<(P, &str, f64)> = [
                (P::Cod, "COD"),
                (P::CodMn, "CODMn"),
                (P::Nh3n, "NH3-N"),
                (P::TpRiver, "TP"),
                (P::Do, "DO"),
            ]
            .into_iter()
            .filter_map(|(p, q)| v(q).map(|x| (p, q, x)))
            .collect();
            let pv: Vec<(P, f64)> = params.iter().map(|(p, _, x)| (*p, *x)).collect();
            if let Some((class, setting)) = gb3838::section_class_by(cmp, &pv) {
                doc.gb3838_class = Some(Gb3838Summary {
                    class,
                    label_zh: class.label_zh().to_string(),
                    set_by: setting.iter().map(|p| format!("{p:?}")).collect(),
                    reported: params
                        .iter()
                        .map(|(p, q, x)| {
                            (q.to_string(), cmp.value(*x, gb3838::reporting_decimals(*p)))
                        })
                        .collect(),
                });
            }
        }
        Ok(doc)
    }

    fn treatment_day(&self, day_ms: i64) -> Result<TreatmentDay, EngineError> {
        let docs = self.results::<WaterDay>(None, day_ms, day_ms)?;
        let volume = |s: &String| {
            docs.iter()
                .find(|(e, _, _)| e == s)
                .and_then(|(_, _, d)| d.volume_m3)
        };
        let w = &self.settings.water;
        let sum = |ids: &[String]| -> Option<f64> { ids.iter().map(volume).sum() };
        let treated = sum(&w.treated_flow_sensors);
        let produced = sum(&w.produced_flow_sensors).map(|p| p + w.unmetered_produced_m3_per_day);
        let rate = match (treated, produced) {
            (Some(t), Some(p)) => plan::treatment_rate_percent(t, p),
            _ => None,
        };
        Ok(TreatmentDay {
            day: time::cst_date(day_ms).to_string(),
            treated_m3: treated,
            produced_m3: produced,
            treatment_rate_percent: rate,
        })
    }

    /// Monthly CEMS figures per unit and pollutant for `year`, summed from the daily results:
    /// valid, exceeded and stopped hours, compliance and completeness, mass, and whether the month
    /// is valid (HJ 76-2017 Appendix B: ≥ 25 valid days, February ≥ 23).
    /// A station's (or the district's) months of `year` that have daily results (HJ 663).
    pub fn air_monthly(&self, station: &str, year: i32) -> Result<Vec<AirMonth>, EngineError> {
        let Some((a, b)) = plan::year_window(year) else {
            return Ok(Vec::new());
        };
        let docs =
            self.results::<AirDay>(Some(station), time::day_start_ms(a), time::day_start_ms(b))?;
        let mut by_month: BTreeMap<u32, Vec<AirDay>> = BTreeMap::new();
        for (_, ts, d) in docs {
            by_month
                .entry(time::cst_date(ts).month())
                .or_default()
                .push(d);
        }
        Ok(by_month
            .iter()
            .map(|(m, days)| air::month(station, year, *m, days))
            .collect())
    }

    pub fn cems_monthly(
        &self,
        unit: Option<&str>,
        year: i32,
    ) -> Result<Vec<CemsMonth>, EngineError> {
        let Some((a, b)) = plan::year_window(year) else {
            return Ok(Vec::new());
        };
        let docs = self.results::<CemsDay>(unit, time::day_start_ms(a), time::day_start_ms(b))?;
        let mut out: BTreeMap<(String, u32), BTreeMap<String, CemsPollutantMonth>> =
            BTreeMap::new();
        for (u, ts, d) in &docs {
            let month = time::cst_date(*ts).month();
            for (q, p) in &d.pollutants {
                let e = out
                    .entry((u.clone(), month))
                    .or_default()
                    .entry(q.clone())
                    .or_insert(CemsPollutantMonth {
                        valid_hours: 0,
                        exceeded_hours: 0,
                        stopped_hours: 0,
                        expected_hours: 0,
                        compliance_percent: None,
                        completeness_percent: None,
                        mass_kg: 0.0,
                        valid_days: 0,
                        month_valid: false,
                    });
                e.valid_hours += p.valid_hours;
                e.exceeded_hours += p.exceeded_hours;
                e.stopped_hours += p.stopped_hours;
                e.expected_hours += p.expected_hours;
                e.mass_kg += p.mass_kg;
                e.valid_days += u32::from(p.day_valid);
            }
        }
        Ok(out
            .into_iter()
            .map(|((unit, month), mut pollutants)| {
                let needed_days = if month == 2 { 23 } else { 25 };
                for p in pollutants.values_mut() {
                    let (v, e, x) = (
                        f64::from(p.valid_hours),
                        f64::from(p.exceeded_hours),
                        f64::from(p.expected_hours),
                    );
                    p.compliance_percent = (v > 0.0).then(|| (v - e) * 100.0 / v);
                    p.completeness_percent = (x > 0.0).then(|| v.min(x) * 100.0 / x);
                    p.month_valid = p.valid_days >= needed_days;
                }
                CemsMonth {
                    unit,
                    year,
                    month,
                    pollutants,
                }
            })
            .collect())
    }

    /// `station`'s days (or `"district"`'s) from `from` to `to` under both AQI editions.
    pub fn compare_editions(
        &self,
        station: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<super::compare::Comparison, EngineError> {
        let days: Vec<(NaiveDate, AirDay)> = self
            .results::<AirDay>(
                Some(station),
                time::day_start_ms(from),
                time::day_start_ms(to),
            )?
            .into_iter()
            .map(|(_, ts, d)| (time::cst_date(ts), d))
            .collect();
        Ok(super::compare::compare(station, from, to, &days))
    }

    /// The plan's indicators for the calendar year `year` (see [`Engine::compliance_window`]).
    pub fn compliance(
        &self,
        year: i32,
        now_ms: i64,
        edition: Option<Edition>,
    ) -> Result<Compliance, EngineError> {
        let (from, to) = plan::year_window(year).unwrap_or_default();
        self.compliance_window((from, to), now_ms, edition)
    }

    /// The plan's indicators over the days `from ..= to`: target, actual, status. The good-days
    /// rate is computed again from the stored daily concentrations under `edition` (default: the
    /// configured one), so another edition's verdicts are the ones that edition gives.
    pub fn compliance_window(
        &self,
        (from_day, to_day): (NaiveDate, NaiveDate),
        now_ms: i64,
        edition: Option<Edition>,
    ) -> Result<Compliance, EngineError> {
        let edition = edition.unwrap_or(self.settings.edition);
        let reg = self.registry.snapshot();
        let (from, to) = (time::day_start_ms(from_day), time::day_start_ms(to_day));
        let as_of = time::cst_date(now_ms).min(to_day);
        let window_end = to + DAY_MS;
        let window_over = now_ms >= window_end;
        let hours_left = u32::try_from((window_end - now_ms).max(0) / HOUR_MS).unwrap_or(u32::MAX);
        let target = |id: &str, default: f64| {
            reg.targets
                .iter()
                .find(|t| t.id == id)
                .map(|t| t.value)
                .unwrap_or(default)
        };
        let mut indicators = Vec::new();

        // Air: the district's daily AQI, evaluated under `edition`.
        let days: Vec<(NaiveDate, Option<u32>)> = self
            .results::<AirDay>(Some("district"), from, to)?
            .into_iter()
            .map(|(_, ts, d)| {
                let d = air::reevaluate(&d, edition);
                (time::cst_date(ts), d.aqi.and_then(|a| a.aqi))
            })
            .collect();
        let t = target("air_good_days_rate", 80.0);
        let g = plan::good_days((from_day, to_day), as_of, &days, t);
        let status = plan::standing(g.rate_percent, t, window_over, g.already_missed);
        indicators.push(Indicator {
            id: "air_good_days_rate".into(),
            name_zh: "空气质量二级以上天数比例".into(),
            name_en: "Days with air quality grade II or better".into(),
            unit: "%".into(),
            target: t,
            comparison: ">=".into(),
            actual: g.rate_percent,
            status,
            edition: Some(edition),
            detail: Some(IndicatorDetail::GoodDays(g)),
            source: None,
        });

        // Sewage treatment rate over the window.
        let tdocs = self.results::<TreatmentDay>(Some("treatment"), from, to)?;
        let (mut treated, mut produced) = (0.0, 0.0);
        let mut months: BTreeMap<(i32, u32), (f64, f64)> = BTreeMap::new();
        for (_, ts, d) in &tdocs {
            if let (Some(a), Some(b)) = (d.treated_m3, d.produced_m3) {
                treated += a;
                produced += b;
                let date = time::cst_date(*ts);
                let m = months
                    .entry((date.year(), date.month()))
                    .or_insert((0.0, 0.0));
                m.0 += a;
                m.1 += b;
            }
        }
        let t = target("sewage_treatment_rate", 96.0);
        let rate = plan::treatment_rate_percent(treated, produced);
        indicators.push(Indicator {
            id: "sewage_treatment_rate".into(),
            name_zh: "城市污水集中处理率".into(),
            name_en: "Urban sewage treatment rate".into(),
            unit: "%".into(),
            target: t,
            comparison: ">=".into(),
            actual: rate,
            // Future volumes are unknown: below target is at risk until the window is over.
            status: plan::standing(rate, t, window_over, false),
            edition: None,
            detail: Some(IndicatorDetail::Sewage(SewageDetail {
                treated_m3: treated,
                produced_m3: produced,
                months: months
                    .iter()
                    .map(|((_, m), (a, b))| MonthVolumes {
                        month: *m,
                        treated_m3: *a,
                        produced_m3: *b,
                        rate_percent: plan::treatment_rate_percent(*a, *b),
                    })
                    .collect(),
            })),
            source: None,
        });

        // Coal units: share of valid hours within the ultra-low limits.
        let t = target("coal_units_ultra_low_emission", 100.0);
        let mut units = Vec::new();
        for (uid, unit) in &reg.units {
            let docs = self.results::<CemsDay>(Some(uid), from, to)?;
            let mut per = BTreeMap::new();
            for q in unit.limits.keys() {
                let (mut v, mut e) = (0u32, 0u32);
                for (_, _, d) in &docs {
                    if let Some(p) = d.pollutants.get(q) {
                        v += p.valid_hours;
                        e += p.exceeded_hours;
                    }
                }
                per.insert(
                    q.clone(),
                    UnitHours {
                        valid_hours: v,
                        exceeded_hours: e,
                        compliance_percent: (v > 0)
                            .then(|| f64::from(v - e) * 100.0 / f64::from(v)),
                    },
                );
            }
            units.push(UnitCompliance {
                unit: uid.clone(),
                name_zh: unit.name_zh.clone(),
                pollutants: per,
            });
        }
        // A unit-pollutant whose share can no longer reach the target makes the indicator missed.
        let unreachable = units.iter().any(|u| {
            u.pollutants.values().any(|p| {
                plan::hours_share_unreachable(p.valid_hours, p.exceeded_hours, hours_left, t)
            })
        });
        let worst = units
            .iter()
            .flat_map(|u| u.pollutants.values().filter_map(|p| p.compliance_percent))
            .reduce(f64::min);
        indicators.push(Indicator {
            id: "coal_units_ultra_low_emission".into(),
            name_zh: "燃煤机组超低排放小时达标率".into(),
            name_en: "Coal units: valid hours within ultra-low limits".into(),
            unit: "%".into(),
            target: t,
            comparison: ">=".into(),
            actual: worst,
            status: plan::standing(worst, t, window_over, unreachable),
            edition: None,
            detail: Some(IndicatorDetail::Units(UnitsDetail { units })),
            source: None,
        });

        // Indicators no sensor measures.
        for tg in reg.targets.iter().filter(|t| !t.measured) {
            indicators.push(Indicator {
                id: tg.id.clone(),
                name_zh: tg.name_zh.clone(),
                name_en: tg.name_en.clone(),
                unit: tg.unit.clone(),
                target: tg.value,
                comparison: tg.comparison.clone(),
                actual: None,
                status: IndicatorStatus::Manual,
                edition: None,
                detail: None,
                source: Some(tg.source.clone()),
            });
        }
        Ok(Compliance {
            year: from_day.year(),
            from: from_day.to_string(),
            to: to_day.to_string(),
            as_of: as_of.to_string(),
            indicators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> EngineError {
        EngineError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_full_disk_or_a_busy_database_is_retried_a_broken_one_is_not() {
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_IOERR).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!EngineError::Task("panicked".into()).is_transient());
    }
}
