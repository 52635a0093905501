//! The standards engine: applies the pure rules of this module to the readings as they are stored,
//! and keeps the results.
//!
//! - **Input**: after each successful store write, the writer hands the batch to [`Engine::ingest`],
//!   which keeps the readings that matter (CEMS units, air stations, water sensors) in `std_input`
//!   (SQLite, same database) for the lateness window, keyed like the stores so a replay is the same
//!   row, and marks the hours they fall in as changed.
//! - **Recomputation**: every `standards.interval`, [`Engine::recompute`] rebuilds each changed hour
//!   from `std_input`, then the days those hours belong to, then writes the results to
//!   `std_results`. Results depend only on the input rows, never on arrival order: a reading a day
//!   late gives exactly the result it would have given on time. Readings older than the window are
//!   stored but change nothing (counted).
//! - **Outputs**: results are JSON documents (API) and, when the store is InfluxDB, line protocol
//!   (`cems_hourly`, `cems_daily`, `air_hourly`, `air_daily`, `water_daily`, `plan_targets`).
//!
//! Hours are labelled by their end and days are CST ([`super::time`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use super::hj633::{self, Concentrations, Edition, Report};
use super::time::{self, DAY_MS, HOUR_MS, MINUTE_MS};
use super::{gb18918, gb3838, hj663, hj75, plan};
use crate::catalogue::{self, find_quantity, find_unit};
use crate::config::WaterStandardsConfig;
use crate::reading::{DataFlag, Domain, Period, Reading};
use crate::registry::{MeasuredBasis, MeasuredState, Registry, RegistryHandle, SiteKind};

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

/// Settings resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub edition: Edition,
    pub lateness_ms: i64,
    pub water: WaterStandardsConfig,
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
    registry: RegistryHandle,
    settings: Settings,
    /// Changed (kind, entity, hour label or day start).
    dirty: Mutex<BTreeSet<(Kind, String, i64)>>,
}

/// Where a sensor's readings go in the engine.
fn entity_of(reg: &Registry, sensor: &str) -> Option<(Kind, String)> {
    let s = reg.sensors.get(sensor)?;
    match s.domain {
        Domain::Cems => s.unit.clone().map(|u| (Kind::CemsHour, u)),
        Domain::Air => Some((Kind::AirHour, s.site.clone())),
        Domain::Water => Some((Kind::WaterHour, s.id.clone())),
    }
}

/// Severity used to pick one flag for a minute from its samples.
fn severity(f: DataFlag) -> u8 {
    match f {
        DataFlag::N => 0,
        DataFlag::S => 1,
        DataFlag::T => 2,
        DataFlag::C => 3,
        DataFlag::M => 4,
        DataFlag::B => 5,
        DataFlag::D => 6,
        DataFlag::F => 7,
    }
}

/// Flags that make an air or water value unusable.
const AIR_WATER_EXCLUDED: [DataFlag; 5] = [
    DataFlag::F,
    DataFlag::M,
    DataFlag::C,
    DataFlag::D,
    DataFlag::B,
];

/// One input row.
#[derive(Debug, Clone)]
struct Row {
    quantity: String,
    ts_ms: i64,
    period: Period,
    value: f64,
    flag: DataFlag,
}

/// Per quantity: minute label → (sum, count, worst flag), plus hour-period values.
#[derive(Debug, Default)]
struct HourInput {
    minutes: BTreeMap<String, BTreeMap<i64, (f64, usize, DataFlag)>>,
    hourly: BTreeMap<String, (f64, DataFlag)>,
    /// (quantity, minute) with a logged minute mean: samples of that minute are not mixed in.
    logged_minutes: BTreeSet<(String, i64)>,
}

impl HourInput {
    fn from_rows(rows: &[Row], hour: i64) -> HourInput {
        let mut h = HourInput::default();
        for r in rows {
            if time::hour_label_of(r.ts_ms, r.period) != hour {
                continue;
            }
            match r.period {
                Period::Instant | Period::Minute => {
                    let m = time::minute_label_of(r.ts_ms, r.period);
                    if r.period == Period::Minute {
                        // The data logger's own minute mean stands for the minute.
                        h.logged_minutes.insert((r.quantity.clone(), m));
                        h.minutes
                            .entry(r.quantity.clone())
                            .or_default()
                            .insert(m, (r.value, 1, r.flag));
                        continue;
                    }
                    if h.logged_minutes.contains(&(r.quantity.clone(), m)) {
                        continue;
                    }
                    let e = h
                        .minutes
                        .entry(r.quantity.clone())
                        .or_default()
                        .entry(m)
                        .or_insert((0.0, 0, DataFlag::N));
                    e.0 += r.value;
                    e.1 += 1;
                    if severity(r.flag) > severity(e.2) {
                        e.2 = r.flag;
                    }
                }
                Period::Hour => {
                    h.hourly.insert(r.quantity.clone(), (r.value, r.flag));
                }
                Period::Day => {}
            }
        }
        h
    }

    /// Minute means of a quantity that are usable (flag not excluded).
    fn usable_minutes(&self, q: &str, excluded: &[DataFlag]) -> Vec<f64> {
        self.minutes
            .get(q)
            .map(|m| {
                m.values()
                    .filter(|(_, _, f)| !excluded.contains(f))
                    .map(|(s, n, _)| s / *n as f64)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hourly value of a quantity for air and water: from ≥ 45 usable minutes, else an hourly
    /// mean reported as such (HJ 212 2061 / `"period": "1h"`).
    fn air_hourly(&self, q: &str) -> Option<f64> {
        hj663::hourly_mean(&self.usable_minutes(q, &AIR_WATER_EXCLUDED)).or_else(|| {
            self.hourly
                .get(q)
                .filter(|(_, f)| !AIR_WATER_EXCLUDED.contains(f))
                .map(|(v, _)| *v)
        })
    }

    /// For water: any usable minute or hourly value (analysers sample every 1–4 h).
    fn water_hourly(&self, q: &str) -> Option<f64> {
        let m = self.usable_minutes(q, &AIR_WATER_EXCLUDED);
        if !m.is_empty() {
            return Some(m.iter().sum::<f64>() / m.len() as f64);
        }
        self.hourly
            .get(q)
            .filter(|(_, f)| !AIR_WATER_EXCLUDED.contains(f))
            .map(|(v, _)| *v)
    }
}

fn num(v: Option<f64>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

fn get_f(doc: &Value, path: &[&str]) -> Option<f64> {
    let mut v = doc;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

/// Convert a value in `unit` to `target` for quantity `q` (AQI needs µg/m3, CO mg/m3).
fn to_unit(q: &str, value: f64, unit: &str, target: &str) -> Option<f64> {
    let quantity = find_quantity(q)?;
    catalogue::convert(value, find_unit(unit)?, find_unit(target)?, quantity).ok()
}

/// Air pollutants with the unit HJ 633 uses.
const AIR_POLLUTANTS: [(&str, &str); 6] = [
    ("SO2", "ug/m3"),
    ("NO2", "ug/m3"),
    ("PM10", "ug/m3"),
    ("PM2.5", "ug/m3"),
    ("CO", "mg/m3"),
    ("O3", "ug/m3"),
];

impl Engine {
    pub fn open(
        db_path: &Path,
        registry: RegistryHandle,
        settings: Settings,
    ) -> Result<Engine, EngineError> {
        let conn = crate::db::open(db_path)?;
        // The engine's own rows can be rebuilt from the store; an OS crash may lose the last ones.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Engine {
            conn: Mutex::new(conn),
            registry,
            settings,
            dirty: Mutex::new(BTreeSet::new()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Kind, String, i64)>> {
        match self.dirty.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Keep the readings that matter and mark their hours changed.
    pub fn ingest(&self, readings: &[Reading], now_ms: i64) -> Result<IngestStats, EngineError> {
        let reg = self.registry.snapshot();
        let oldest_hour = time::label(now_ms - self.settings.lateness_ms, HOUR_MS);
        let mut stats = IngestStats::default();
        let mut marks = Vec::new();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO std_input (sensor, quantity, ts_ms, period, value, flag) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in readings {
                let Some((kind, entity)) = entity_of(&reg, &r.sensor) else {
                    continue;
                };
                let hour = time::hour_label_of(r.ts_ms(), r.period);
                if hour < oldest_hour {
                    stats.too_late += 1;
                    continue;
                }
                // Values in the unit the rules use (AQI: µg/m3, CO mg/m3).
                let value = match (kind, AIR_POLLUTANTS.iter().find(|(q, _)| *q == r.quantity)) {
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
                    r.flag.as_str()
                ])?;
                stats.kept += 1;
                marks.push((kind, entity, hour));
            }
        }
        tx.commit()?;
        drop(conn);
        self.dirty().extend(marks);
        Ok(stats)
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

    /// Delete input older than the lateness window (plus a day).
    pub fn purge(&self, now_ms: i64) -> Result<usize, EngineError> {
        let cutoff = now_ms - self.settings.lateness_ms - DAY_MS - HOUR_MS;
        Ok(self
            .conn()
            .execute("DELETE FROM std_input WHERE ts_ms < ?1", [cutoff])?)
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
        let reg = self.registry.snapshot();
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
                    if let Some(doc) = self.cems_hour(&reg, entity, *ts)? {
                        lines.extend(cems_hour_lines(&doc));
                        self.put("cems_hourly", entity, *ts, &doc)?;
                    }
                    days.insert((Kind::CemsDay, entity.clone(), day));
                }
                Kind::AirHour => {
                    let doc = self.air_hour(&reg, entity, *ts)?;
                    lines.push(air_line("air_hourly", entity, *ts, &doc));
                    self.put("air_hourly", entity, *ts, &doc)?;
                    air_hours.insert(*ts);
                    days.insert((Kind::AirDay, entity.clone(), day));
                    days.insert((Kind::AirDay, "district".into(), day));
                    if self.settings.edition == Edition::Hj633_2012 {
                        // 2012 real-time AQI uses 24h/8h moving means: later hours depend on this one.
                        for h in 1..=23 {
                            if self.exists("air_hourly", entity, ts + h * HOUR_MS)? {
                                self.dirty().insert((
                                    Kind::AirHour,
                                    entity.clone(),
                                    ts + h * HOUR_MS,
                                ));
                            }
                        }
                    }
                }
                _ => {
                    days.insert((Kind::WaterDay, entity.clone(), day));
                    self.put(
                        "water_hourly",
                        entity,
                        *ts,
                        &self.water_hour(&reg, entity, *ts)?,
                    )?;
                }
            }
        }
        for hour in air_hours {
            let doc = self.district_hour(&reg, hour)?;
            lines.push(air_line("air_hourly", "district", hour, &doc));
            self.put("air_hourly", "district", hour, &doc)?;
        }
        let mut treatment_days = BTreeSet::new();
        // Stations' days before the district's (which averages them).
        let mut ordered: Vec<_> = days.into_iter().collect();
        ordered.sort_by_key(|(k, e, d)| (*k, e == "district", *d));
        for (kind, entity, day_ms) in ordered {
            let day = time::cst_date(day_ms);
            match kind {
                Kind::CemsDay => {
                    let doc = self.cems_day(&reg, &entity, day, now_ms)?;
                    lines.extend(cems_day_lines(&doc, day_ms));
                    self.put("cems_daily", &entity, day_ms, &doc)?;
                }
                Kind::AirDay => {
                    let doc = if entity == "district" {
                        self.district_day(&reg, day)?
                    } else {
                        self.air_day(&entity, day)?
                    };
                    lines.push(air_line("air_daily", &entity, day_ms, &doc));
                    self.put("air_daily", &entity, day_ms, &doc)?;
                }
                Kind::WaterDay => {
                    let doc = self.water_day(&reg, &entity, day)?;
                    lines.push(water_line(&entity, day_ms, &doc));
                    self.put("water_daily", &entity, day_ms, &doc)?;
                    treatment_days.insert(day_ms);
                }
                _ => {}
            }
        }
        for day_ms in treatment_days {
            let doc = self.treatment_day(day_ms)?;
            lines.push(water_line("treatment", day_ms, &doc));
            self.put("water_daily", "treatment", day_ms, &doc)?;
        }
        Ok(lines)
    }

    fn put(&self, kind: &str, entity: &str, ts: i64, doc: &Value) -> Result<(), EngineError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO std_results (kind, entity, ts_ms, doc) VALUES (?1, ?2, ?3, ?4)",
            params![kind, entity, ts, serde_json::to_string(doc)?],
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

    /// Result documents of `kind` (for `entity`, or all) with `from ≤ ts ≤ to`, oldest first.
    pub fn results(
        &self,
        kind: &str,
        entity: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, Value)>, EngineError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT entity, ts_ms, doc FROM std_results WHERE kind = ?1 AND (?2 IS NULL OR entity = ?2)
             AND ts_ms >= ?3 AND ts_ms <= ?4 ORDER BY ts_ms, entity LIMIT 100000",
        )?;
        let rows = stmt.query_map(params![kind, entity, from, to], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (e, ts, doc) = row?;
            out.push((e, ts, serde_json::from_str(&doc)?));
        }
        Ok(out)
    }

    fn input_rows(&self, sensors: &[String], from: i64, to: i64) -> Result<Vec<Row>, EngineError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT sensor, quantity, ts_ms, period, value, flag FROM std_input WHERE sensor = ?1 AND ts_ms >= ?2 AND ts_ms <= ?3",
        )?;
        let mut out = Vec::new();
        for s in sensors {
            let rows = stmt.query_map(params![s, from, to], |r| {
                let period: String = r.get(3)?;
                let flag: String = r.get(5)?;
                Ok(Row {
                    quantity: r.get(1)?,
                    ts_ms: r.get(2)?,
                    period: Period::parse(&period).unwrap_or_default(),
                    value: r.get(4)?,
                    flag: flag.parse().unwrap_or(DataFlag::N),
                })
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Rows that can fall in the hour labelled `hour` (samples in (h−1, h], means starting in it).
    fn hour_input(&self, sensors: &[String], hour: i64) -> Result<HourInput, EngineError> {
        let rows = self.input_rows(sensors, hour - HOUR_MS - MINUTE_MS, hour)?;
        Ok(HourInput::from_rows(&rows, hour))
    }

    fn cems_hour(
        &self,
        reg: &Registry,
        unit_id: &str,
        hour: i64,
    ) -> Result<Option<Value>, EngineError> {
        let Some(unit) = reg.units.get(unit_id) else {
            return Ok(None);
        };
        let sensors: Vec<String> = reg
            .sensors
            .values()
            .filter(|s| s.unit.as_deref() == Some(unit_id) && s.domain == Domain::Cems)
            .map(|s| s.id.clone())
            .collect();
        let input = self.hour_input(&sensors, hour)?;
        let excluded: Vec<DataFlag> = unit
            .excluded_flags
            .clone()
            .unwrap_or_else(|| hj75::DEFAULT_EXCLUDED.to_vec());
        // Minute table: the worst flag across quantities applies to the whole minute.
        let mut minute_labels: BTreeSet<i64> = BTreeSet::new();
        for m in input.minutes.values() {
            minute_labels.extend(m.keys());
        }
        let mean_of = |q: &str, m: i64| {
            input
                .minutes
                .get(q)
                .and_then(|x| x.get(&m))
                .map(|(s, n, _)| s / *n as f64)
        };
        let flag_of = |m: i64| {
            input
                .minutes
                .values()
                .filter_map(|x| x.get(&m).map(|(_, _, f)| *f))
                .max_by_key(|f| severity(*f))
                .unwrap_or(DataFlag::N)
        };
        let normalise = |c: f64, m: i64| -> Option<f64> {
            let mut c = c;
            if unit.measured_basis == MeasuredBasis::Wet {
                c = hj75::wet_to_dry(c, mean_of("moisture", m)?)?;
            }
            if unit.measured_state == MeasuredState::Actual {
                let ps_pa = mean_of("flue_pressure", m).unwrap_or(0.0) * 1000.0;
                c = hj75::to_standard_state(
                    c,
                    unit.ambient_pressure_kpa * 1000.0,
                    ps_pa,
                    mean_of("flue_temp", m)?,
                )?;
            }
            Some(c)
        };
        let o2_dry = |m: i64| -> Option<f64> {
            let o2 = mean_of("O2", m)?;
            match unit.measured_basis {
                MeasuredBasis::Dry => Some(o2),
                MeasuredBasis::Wet => hj75::wet_to_dry(o2, mean_of("moisture", m)?),
            }
        };
        let nox_at = |m: i64| -> Option<f64> {
            mean_of("NOx", m).or_else(|| {
                Some(hj75::nox_as_no2(
                    mean_of("NO", m)?,
                    mean_of("NO2", m).unwrap_or(0.0),
                ))
            })
        };
        let mut pollutants = Map::new();
        let mut any = false;
        for (q, limit) in &unit.limits {
            let minutes: Vec<hj75::Minute> = minute_labels
                .iter()
                .filter_map(|&m| {
                    let raw = if q == "NOx" { nox_at(m) } else { mean_of(q, m) }?;
                    let measured = normalise(raw, m);
                    let corrected = measured
                        .and_then(|c| hj75::o2_corrected(c, o2_dry(m)?, unit.o2_ref_percent));
                    let mass = measured
                        .and_then(|c| Some(hj75::mass_rate_kg_h(c, mean_of("flue_flow", m)?)));
                    Some(hj75::Minute {
                        measured,
                        corrected,
                        mass_kg_h: mass,
                        flag: flag_of(m),
                    })
                })
                .collect();
            let mut h = hj75::hour(&minutes, Some(*limit), &excluded);
            let mut source = "minutes";
            if h.status != hj75::HourStatus::Valid {
                // An hourly mean reported as such (HJ 212 2061) stands in when minutes do not; an
                // already corrected (折算, `-ZsAvg`) one is used as it is, never corrected again.
                let zs = input
                    .hourly
                    .get(&format!("{q}_zs"))
                    .filter(|(_, f)| !excluded.contains(f));
                if let Some((zc, zf)) = zs {
                    let measured = input.hourly.get(q.as_str()).map(|(c, _)| *c);
                    h = hj75::Hour {
                        status: hj75::HourStatus::Valid,
                        valid_minutes: 0,
                        measured_mean: measured,
                        corrected_mean: Some(*zc),
                        mass_kg_h: measured.and_then(|c| {
                            input
                                .hourly
                                .get("flue_flow")
                                .map(|(qf, _)| hj75::mass_rate_kg_h(c, *qf))
                        }),
                        exceeded: *zc > *limit || *zf == DataFlag::T,
                        over_range: *zf == DataFlag::T,
                    };
                    source = "hourly_report_converted";
                } else if let (Some((c, f)), Some((o2, _))) =
                    (input.hourly.get(q.as_str()), input.hourly.get("O2"))
                {
                    if !excluded.contains(f) {
                        let corrected = hj75::o2_corrected(*c, *o2, unit.o2_ref_percent);
                        let mass = input
                            .hourly
                            .get("flue_flow")
                            .map(|(qf, _)| hj75::mass_rate_kg_h(*c, *qf));
                        h = hj75::Hour {
                            status: if corrected.is_some() {
                                hj75::HourStatus::Valid
                            } else {
                                hj75::HourStatus::Invalid
                            },
                            valid_minutes: 0,
                            measured_mean: Some(*c),
                            corrected_mean: corrected,
                            mass_kg_h: mass,
                            exceeded: corrected.is_some_and(|x| x > *limit) || *f == DataFlag::T,
                            over_range: *f == DataFlag::T,
                        };
                        source = "hourly_report";
                    }
                }
            }
            any |= !minutes.is_empty() || source.starts_with("hourly_report");
            pollutants.insert(
                q.clone(),
                json!({
                    "status": h.status, "valid_minutes": h.valid_minutes, "measured": num(h.measured_mean),
                    "corrected": num(h.corrected_mean), "limit": limit, "exceeded": h.exceeded,
                    "over_range": h.over_range, "mass_kg_h": num(h.mass_kg_h), "source": source,
                }),
            );
        }
        if !any {
            return Ok(None);
        }
        let avg = |q: &str| {
            let v: Vec<f64> = minute_labels
                .iter()
                .filter_map(|&m| mean_of(q, m))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        Ok(Some(json!({
            "unit": unit_id, "site": unit.site, "hour": time::cst_rfc3339(hour), "hour_ms": hour,
            "o2_ref_percent": unit.o2_ref_percent, "o2_mean": num(avg("O2")), "flue_flow_mean": num(avg("flue_flow")),
            "minutes_with_data": minute_labels.len(), "pollutants": pollutants,
        })))
    }

    fn cems_day(
        &self,
        reg: &Registry,
        unit_id: &str,
        day: NaiveDate,
        now_ms: i64,
    ) -> Result<Value, EngineError> {
        let start = time::day_start_ms(day);
        let hours = self.results(
            "cems_hourly",
            Some(unit_id),
            start + HOUR_MS,
            start + DAY_MS,
        )?;
        // Hours of the day that have ended (all 24 for a past day).
        let elapsed = ((now_ms.min(start + DAY_MS) - start) / HOUR_MS).clamp(0, 24);
        let mut pollutants = Map::new();
        let limits = reg
            .units
            .get(unit_id)
            .map(|u| u.limits.clone())
            .unwrap_or_default();
        for q in limits.keys() {
            let (mut valid, mut exceeded, mut stopped, mut mass) = (0i64, 0i64, 0i64, 0.0);
            for (_, _, doc) in &hours {
                let p = &doc["pollutants"][q];
                match p["status"].as_str() {
                    Some("valid") => {
                        valid += 1;
                        if p["exceeded"].as_bool() == Some(true) {
                            exceeded += 1;
                        }
                        mass += p["mass_kg_h"].as_f64().unwrap_or(0.0);
                    }
                    Some("stopped") => stopped += 1,
                    _ => {}
                }
            }
            let expected = (elapsed - stopped).max(0);
            pollutants.insert(
                q.clone(),
                json!({
                    "valid_hours": valid, "exceeded_hours": exceeded, "stopped_hours": stopped,
                    "expected_hours": expected,
                    "compliance_percent": num((valid > 0).then(|| (valid - exceeded) as f64 * 100.0 / valid as f64)),
                    "completeness_percent": num((expected > 0).then(|| (valid.min(expected)) as f64 * 100.0 / expected as f64)),
                    "mass_kg": mass,
                    // HJ 76-2017 as quoted: a valid day needs ≥ 20 valid hours.
                    "day_valid": valid >= 20,
                }),
            );
        }
        Ok(
            json!({"unit": unit_id, "day": day.to_string(), "hours_elapsed": elapsed, "pollutants": pollutants}),
        )
    }

    fn air_hour(&self, reg: &Registry, site: &str, hour: i64) -> Result<Value, EngineError> {
        let sensors: Vec<String> = reg
            .sensors
            .values()
            .filter(|s| s.site == site && s.domain == Domain::Air)
            .map(|s| s.id.clone())
            .collect();
        let input = self.hour_input(&sensors, hour)?;
        let mut values = Map::new();
        for (q, _) in AIR_POLLUTANTS {
            values.insert(q.into(), num(input.air_hourly(q)));
        }
        let conc = self.realtime_concentrations(site, hour, &values)?;
        let aqi = hj633::aqi(self.settings.edition, Report::Hourly, &conc).ok();
        Ok(
            json!({"station": site, "hour": time::cst_rfc3339(hour), "hour_ms": hour, "values": values, "aqi": aqi_json(aqi.as_ref())}),
        )
    }

    /// Concentrations for the real-time AQI of `hour`: the 1h values, plus (2012) the O3 8h and PM
    /// 24h moving means from the previous hours' results.
    fn realtime_concentrations(
        &self,
        entity: &str,
        hour: i64,
        values: &Map<String, Value>,
    ) -> Result<Concentrations, EngineError> {
        let v = |q: &str| values.get(q).and_then(Value::as_f64);
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
            let prev = self.results(
                "air_hourly",
                Some(entity),
                hour - 23 * HOUR_MS,
                hour - HOUR_MS,
            )?;
            let series = |q: &str, n: i64| -> Vec<Option<f64>> {
                let mut by_ts: HashMap<i64, Option<f64>> = prev
                    .iter()
                    .map(|(_, ts, d)| (*ts, get_f(d, &["values", q])))
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

    fn district_hour(&self, reg: &Registry, hour: i64) -> Result<Value, EngineError> {
        let stations = air_stations(reg);
        let docs = self.results("air_hourly", None, hour, hour)?;
        let keys: Vec<&str> = AIR_POLLUTANTS.iter().map(|(q, _)| *q).collect();
        let values = district_values(&stations, &docs, &keys);
        let conc = self.realtime_concentrations("district", hour, &values)?;
        let aqi = hj633::aqi(self.settings.edition, Report::Hourly, &conc).ok();
        Ok(
            json!({"station": "district", "hour": time::cst_rfc3339(hour), "hour_ms": hour, "values": values, "stations": stations, "aqi": aqi_json(aqi.as_ref())}),
        )
    }

    fn air_day(&self, site: &str, day: NaiveDate) -> Result<Value, EngineError> {
        let labels = time::hour_labels(day);
        let docs = self.results("air_hourly", Some(site), labels[0], labels[23])?;
        let hourly = |q: &str| -> [Option<f64>; 24] {
            std::array::from_fn(|i| {
                docs.iter()
                    .find(|(_, ts, _)| *ts == labels[i])
                    .and_then(|(_, _, d)| get_f(d, &["values", q]))
            })
        };
        let mut values = Map::new();
        let mut valid_hours = Map::new();
        for q in ["SO2", "NO2", "PM10", "PM2.5", "CO"] {
            let h = hourly(q);
            values.insert(q.into(), num(hj663::daily_mean(&h)));
            valid_hours.insert(q.into(), json!(h.iter().flatten().count()));
        }
        let o3 = hourly("O3");
        let max8 = hj663::o3_daily_max_8h(&o3);
        values.insert("O3_8h_max".into(), num(max8.max.filter(|_| max8.counts)));
        values.insert("O3_1h_max".into(), num(hj663::o3_daily_max_1h(&o3)));
        valid_hours.insert("O3".into(), json!(o3.iter().flatten().count()));
        Ok(day_doc(
            self.settings.edition,
            site,
            day,
            values,
            json!({"hours": valid_hours, "o3_valid_8h_windows": max8.valid_windows}),
        ))
    }

    fn district_day(&self, reg: &Registry, day: NaiveDate) -> Result<Value, EngineError> {
        let start = time::day_start_ms(day);
        let stations = air_stations(reg);
        let docs = self.results("air_daily", None, start, start)?;
        let values = district_values(
            &stations,
            &docs,
            &[
                "SO2",
                "NO2",
                "PM10",
                "PM2.5",
                "CO",
                "O3_8h_max",
                "O3_1h_max",
            ],
        );
        Ok(day_doc(
            self.settings.edition,
            "district",
            day,
            values,
            json!({"stations": stations}),
        ))
    }

    fn water_hour(&self, reg: &Registry, sensor: &str, hour: i64) -> Result<Value, EngineError> {
        let input = self.hour_input(&[sensor.to_string()], hour)?;
        let mut values = Map::new();
        if let Some(s) = reg.sensors.get(sensor) {
            for ch in &s.channels {
                values.insert(ch.quantity.clone(), num(input.water_hourly(&ch.quantity)));
            }
        }
        Ok(json!({"sensor": sensor, "hour_ms": hour, "values": values}))
    }

    fn water_day(
        &self,
        reg: &Registry,
        sensor: &str,
        day: NaiveDate,
    ) -> Result<Value, EngineError> {
        let labels = time::hour_labels(day);
        let hours = self.results("water_hourly", Some(sensor), labels[0], labels[23])?;
        let Some(s) = reg.sensors.get(sensor) else {
            return Ok(json!({"sensor": sensor, "day": day.to_string()}));
        };
        let mut values = Map::new();
        let mut counts = Map::new();
        for ch in &s.channels {
            let v: Vec<f64> = hours
                .iter()
                .filter_map(|(_, _, d)| get_f(d, &["values", &ch.quantity]))
                .collect();
            counts.insert(ch.quantity.clone(), json!(v.len()));
            values.insert(
                ch.quantity.clone(),
                num((!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)),
            );
        }
        let v = |q: &str| values.get(q).and_then(Value::as_f64);
        let mut doc = json!({"sensor": sensor, "site": s.site, "day": day.to_string(), "values": values, "hours": counts});
        if let Some(flow_hours) = counts.get("water_flow").and_then(Value::as_u64) {
            // Daily volume from the hourly mean flows (m3/h), with ≥ 20 hours; scaled to 24 h.
            let volume = (flow_hours >= 20)
                .then(|| v("water_flow").map(|f| f * 24.0))
                .flatten();
            doc["volume_m3"] = num(volume);
        }
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
            let verdicts = gb18918::class_1a(&e, self.settings.water.built_before_2006);
            doc["gb18918_class_1a"] = json!({
                "compliant": (!verdicts.is_empty()).then(|| verdicts.iter().all(|x| x.compliant)),
                "parameters": verdicts,
            });
        }
        if reg
            .sites
            .get(&s.site)
            .is_some_and(|x| x.kind == SiteKind::RiverSection)
        {
            use gb3838::Parameter as P;
            let params: Vec<(P, f64)> = [
                (P::Cod, "COD"),
                (P::CodMn, "CODMn"),
                (P::Nh3n, "NH3-N"),
                (P::TpRiver, "TP"),
                (P::Do, "DO"),
            ]
            .into_iter()
            .filter_map(|(p, q)| v(q).map(|x| (p, x)))
            .collect();
            if let Some((class, setting)) = gb3838::section_class(&params) {
                doc["gb3838_class"] = json!({"class": class, "label_zh": class.label_zh(), "set_by": setting.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>()});
            }
        }
        Ok(doc)
    }

    fn treatment_day(&self, day_ms: i64) -> Result<Value, EngineError> {
        let docs = self.results("water_daily", None, day_ms, day_ms)?;
        let volume = |s: &String| {
            docs.iter()
                .find(|(e, _, _)| e == s)
                .and_then(|(_, _, d)| d["volume_m3"].as_f64())
        };
        let w = &self.settings.water;
        let sum = |ids: &[String]| -> Option<f64> { ids.iter().map(volume).sum() };
        let treated = sum(&w.treated_flow_sensors);
        let produced = sum(&w.produced_flow_sensors).map(|p| p + w.unmetered_produced_m3_per_day);
        let rate = match (treated, produced) {
            (Some(t), Some(p)) => plan::treatment_rate_percent(t, p),
            _ => None,
        };
        Ok(
            json!({"day": time::cst_date(day_ms).to_string(), "treated_m3": num(treated), "produced_m3": num(produced), "treatment_rate_percent": num(rate)}),
        )
    }

    /// Monthly CEMS figures per unit and pollutant for `year`, summed from the daily results:
    /// valid, exceeded and stopped hours, compliance and completeness, mass, and whether the month
    /// is valid (HJ 76-2017 as quoted: ≥ 25 valid days, February ≥ 23).
    pub fn cems_monthly(&self, unit: Option<&str>, year: i32) -> Result<Vec<Value>, EngineError> {
        let (Some(a), Some(b)) = (
            NaiveDate::from_ymd_opt(year, 1, 1),
            NaiveDate::from_ymd_opt(year, 12, 31),
        ) else {
            return Ok(Vec::new());
        };
        let docs = self.results(
            "cems_daily",
            unit,
            time::day_start_ms(a),
            time::day_start_ms(b),
        )?;
        // (unit, month, pollutant) → sums
        let mut acc: BTreeMap<(String, u32, String), [f64; 6]> = BTreeMap::new();
        for (u, ts, d) in &docs {
            let month = time::cst_date(*ts).month();
            for (q, p) in d["pollutants"].as_object().into_iter().flatten() {
                let e = acc.entry((u.clone(), month, q.clone())).or_insert([0.0; 6]);
                e[0] += p["valid_hours"].as_f64().unwrap_or(0.0);
                e[1] += p["exceeded_hours"].as_f64().unwrap_or(0.0);
                e[2] += p["stopped_hours"].as_f64().unwrap_or(0.0);
                e[3] += p["expected_hours"].as_f64().unwrap_or(0.0);
                e[4] += p["mass_kg"].as_f64().unwrap_or(0.0);
                e[5] += f64::from(u8::from(p["day_valid"].as_bool() == Some(true)));
            }
        }
        let mut out: BTreeMap<(String, u32), Map<String, Value>> = BTreeMap::new();
        for ((u, month, q), [valid, exceeded, stopped, expected, mass, valid_days]) in acc {
            let needed_days = if month == 2 { 23.0 } else { 25.0 };
            out.entry((u, month)).or_default().insert(
                q,
                json!({
                    "valid_hours": valid, "exceeded_hours": exceeded, "stopped_hours": stopped, "expected_hours": expected,
                    "compliance_percent": num((valid > 0.0).then(|| (valid - exceeded) * 100.0 / valid)),
                    "completeness_percent": num((expected > 0.0).then(|| valid.min(expected) * 100.0 / expected)),
                    "mass_kg": mass, "valid_days": valid_days, "month_valid": valid_days >= needed_days,
                }),
            );
        }
        Ok(out
            .into_iter()
            .map(|((u, m), p)| json!({"unit": u, "year": year, "month": m, "pollutants": p}))
            .collect())
    }

    /// The plan's indicators for `year`: target, actual, status. The good-days rate is evaluated
    /// under `edition` (default: the configured one).
    pub fn compliance(
        &self,
        year: i32,
        now_ms: i64,
        edition: Option<Edition>,
    ) -> Result<Value, EngineError> {
        let edition = edition.unwrap_or(self.settings.edition);
        let reg = self.registry.snapshot();
        let (from, to) = match (
            NaiveDate::from_ymd_opt(year, 1, 1),
            NaiveDate::from_ymd_opt(year, 12, 31),
        ) {
            (Some(a), Some(b)) => (time::day_start_ms(a), time::day_start_ms(b)),
            _ => return Ok(json!({"year": year, "indicators": []})),
        };
        let today = time::cst_date(now_ms);
        let as_of = if today.year() > year {
            NaiveDate::from_ymd_opt(year, 12, 31).unwrap_or(today)
        } else {
            today
        };
        let target = |id: &str, default: f64| {
            reg.targets
                .iter()
                .find(|t| t.id == id)
                .map(|t| t.value)
                .unwrap_or(default)
        };
        let mut indicators = Vec::new();

        // Air: the district's daily AQI.
        let days: Vec<(NaiveDate, Option<u32>)> = self
            .results("air_daily", Some("district"), from, to)?
            .into_iter()
            .map(|(_, ts, d)| {
                (
                    time::cst_date(ts),
                    d["aqi"]["aqi"].as_u64().map(|a| a as u32),
                )
            })
            .collect();
        let t = target("air_good_days_rate", 80.0);
        let g = plan::good_days(year, as_of, &days, t);
        let status = match g.rate_percent {
            None => "no_data",
            Some(_) if g.already_missed => "missed",
            Some(r) if r >= t => "on_track",
            Some(_) => "at_risk",
        };
        indicators.push(json!({
            "id": "air_good_days_rate", "name_zh": "空气质量二级以上天数比例", "name_en": "Days with air quality grade II or better",
            "unit": "%", "target": t, "comparison": ">=", "actual": num(g.rate_percent), "status": status,
            "edition": edition.as_str(), "detail": g,
        }));

        // Sewage treatment rate, YTD.
        let tdocs = self.results("water_daily", Some("treatment"), from, to)?;
        let (mut treated, mut produced, mut months): (f64, f64, BTreeMap<u32, (f64, f64)>) =
            (0.0, 0.0, BTreeMap::new());
        for (_, ts, d) in &tdocs {
            if let (Some(a), Some(b)) = (d["treated_m3"].as_f64(), d["produced_m3"].as_f64()) {
                treated += a;
                produced += b;
                let m = months
                    .entry(time::cst_date(*ts).month())
                    .or_insert((0.0, 0.0));
                m.0 += a;
                m.1 += b;
            }
        }
        let t = target("sewage_treatment_rate", 96.0);
        let rate = plan::treatment_rate_percent(treated, produced);
        indicators.push(json!({
            "id": "sewage_treatment_rate", "name_zh": "城市污水集中处理率", "name_en": "Urban sewage treatment rate",
            "unit": "%", "target": t, "comparison": ">=", "actual": num(rate),
            "status": match rate { None => "no_data", Some(r) if r >= t => "met", Some(_) => "not_met" },
            "detail": {"treated_m3": treated, "produced_m3": produced, "months": months.iter().map(|(m, (a, b))| json!({"month": m, "treated_m3": a, "produced_m3": b, "rate_percent": num(plan::treatment_rate_percent(*a, *b))})).collect::<Vec<_>>()},
        }));

        // Coal units: share of valid hours within the ultra-low limits, YTD.
        let t = target("coal_units_ultra_low_emission", 100.0);
        let mut units = Vec::new();
        for (uid, unit) in &reg.units {
            let docs = self.results("cems_daily", Some(uid), from, to)?;
            let mut per = Map::new();
            for q in unit.limits.keys() {
                let (mut v, mut e) = (0i64, 0i64);
                for (_, _, d) in &docs {
                    v += d["pollutants"][q]["valid_hours"].as_i64().unwrap_or(0);
                    e += d["pollutants"][q]["exceeded_hours"].as_i64().unwrap_or(0);
                }
                per.insert(q.clone(), json!({"valid_hours": v, "exceeded_hours": e, "compliance_percent": num((v > 0).then(|| (v - e) as f64 * 100.0 / v as f64))}));
            }
            units.push(json!({"unit": uid, "name_zh": unit.name_zh, "pollutants": per}));
        }
        let worst = units
            .iter()
            .flat_map(|u| {
                u["pollutants"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values().filter_map(|p| p["compliance_percent"].as_f64()))
            })
            .reduce(f64::min);
        indicators.push(json!({
            "id": "coal_units_ultra_low_emission", "name_zh": "燃煤机组超低排放小时达标率", "name_en": "Coal units: valid hours within ultra-low limits",
            "unit": "%", "target": t, "comparison": ">=", "actual": num(worst),
            "status": match worst { None => "no_data", Some(w) if w >= t => "met", Some(_) => "not_met" },
            "detail": {"units": units},
        }));

        // Indicators no sensor measures.
        for tg in reg.targets.iter().filter(|t| !t.measured) {
            indicators.push(json!({"id": tg.id, "name_zh": tg.name_zh, "name_en": tg.name_en, "unit": tg.unit, "target": tg.value, "comparison": tg.comparison, "actual": null, "status": "manual", "source": tg.source}));
        }
        Ok(json!({"year": year, "as_of": as_of.to_string(), "indicators": indicators}))
    }
}

/// The district's air stations.
fn air_stations(reg: &Registry) -> Vec<String> {
    reg.sites
        .values()
        .filter(|s| s.kind == SiteKind::AirStation)
        .map(|s| s.id.clone())
        .collect()
}

/// Per key, the arithmetic mean of the stations' values in `docs` (HJ 663: stations first).
fn district_values(
    stations: &[String],
    docs: &[(String, i64, Value)],
    keys: &[&str],
) -> Map<String, Value> {
    keys.iter()
        .map(|q| {
            let per: Vec<Option<f64>> = stations
                .iter()
                .map(|s| {
                    docs.iter()
                        .find(|(e, _, _)| e == s)
                        .and_then(|(_, _, d)| get_f(d, &["values", q]))
                })
                .collect();
            (q.to_string(), num(hj663::district_mean(&per)))
        })
        .collect()
}

/// A daily air result: concentrations, validity, and the daily AQI under `edition`.
fn day_doc(
    edition: Edition,
    station: &str,
    day: NaiveDate,
    values: Map<String, Value>,
    validity: Value,
) -> Value {
    let v = |q: &str| values.get(q).and_then(Value::as_f64);
    let conc = Concentrations {
        so2: v("SO2"),
        no2: v("NO2"),
        pm10: v("PM10"),
        pm25: v("PM2.5"),
        co: v("CO"),
        o3_8h: v("O3_8h_max"),
        o3_1h: v("O3_1h_max"),
        so2_24h: None,
    };
    let any = values.values().any(|x| !x.is_null());
    let aqi = any
        .then(|| hj633::aqi(edition, Report::Daily, &conc).ok())
        .flatten();
    let good = aqi.as_ref().and_then(|a| a.aqi).map(|a| a <= 100);
    json!({"station": station, "day": day.to_string(), "values": values, "validity": validity, "aqi": aqi_json(aqi.as_ref()), "good_day": good})
}

/// Re-evaluate a stored daily air result under another edition (the stored concentrations are
/// edition-independent), e.g. HJ 633-2012 to compare with the plan period.
pub fn reevaluate_air_day(doc: &Value, edition: Edition) -> Value {
    let values = doc["values"].as_object().cloned().unwrap_or_default();
    let day = doc["day"]
        .as_str()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or_default();
    day_doc(
        edition,
        doc["station"].as_str().unwrap_or(""),
        day,
        values,
        doc["validity"].clone(),
    )
}

fn aqi_json(r: Option<&hj633::AqiResult>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "aqi": r.aqi, "aqi_from_available": r.aqi_from_available, "grade": r.grade.map(|g| g.roman()),
            "category_zh": r.category_zh, "category_en": r.category_en, "primary_pollutants": r.primary_pollutants,
            "iaqi": r.iaqi.iter().map(|(i, v)| (i.as_str().to_string(), json!(v.number()))).collect::<Map<_, _>>(),
            "missing": r.missing.iter().map(|i| i.as_str()).collect::<Vec<_>>(), "edition": r.edition.as_str(),
        }),
    }
}

/// `plan_targets` lines for the compliance document (one point per indicator, at `ts`).
pub fn plan_target_lines(doc: &Value, ts_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    for i in doc["indicators"].as_array().into_iter().flatten() {
        let (Some(id), Some(target)) = (i["id"].as_str(), i["target"].as_f64()) else {
            continue;
        };
        // The field is `goal`: a field named like the `target` tag makes `WHERE "target" = …`
        // match the field in InfluxQL, silently.
        let mut f = vec![format!("goal={target}")];
        push_field(&mut f, "actual", i["actual"].as_f64());
        push_field(
            &mut f,
            "affordable_non_good_days",
            i["detail"]["affordable_non_good_days"].as_f64(),
        );
        f.push(format!("status=\"{}\"", i["status"].as_str().unwrap_or("")));
        out.push(format!(
            "plan_targets,target={} {} {ts_ms}",
            tag(id),
            f.join(",")
        ));
    }
    out
}

/// Line-protocol field name for a value key.
fn field(k: &str) -> String {
    crate::store::line_protocol::field_name(k)
}

fn push_field(out: &mut Vec<String>, k: &str, v: Option<f64>) {
    if let Some(v) = v.filter(|x| x.is_finite()) {
        out.push(format!("{}={v}", field(k)));
    }
}

fn tag(v: &str) -> String {
    v.replace(['\\', ',', '=', ' '], "_")
}

fn cems_hour_lines(doc: &Value) -> Vec<String> {
    let (Some(unit), Some(ts)) = (doc["unit"].as_str(), doc["hour_ms"].as_i64()) else {
        return Vec::new();
    };
    let site = doc["site"].as_str().unwrap_or("");
    let mut out = Vec::new();
    if let Some(ps) = doc["pollutants"].as_object() {
        for (q, p) in ps {
            let mut f = Vec::new();
            push_field(&mut f, "measured", p["measured"].as_f64());
            push_field(&mut f, "corrected", p["corrected"].as_f64());
            push_field(&mut f, "limit", p["limit"].as_f64());
            push_field(&mut f, "mass_kg_h", p["mass_kg_h"].as_f64());
            f.push(format!(
                "valid_minutes={}",
                p["valid_minutes"].as_u64().unwrap_or(0)
            ));
            f.push(format!(
                "exceeded={}",
                u8::from(p["exceeded"].as_bool() == Some(true))
            ));
            f.push(format!("valid={}", u8::from(p["status"] == "valid")));
            f.push(format!("status=\"{}\"", p["status"].as_str().unwrap_or("")));
            out.push(format!(
                "cems_hourly,site={},unit={},pollutant={} {} {ts}",
                tag(site),
                tag(unit),
                tag(q),
                f.join(",")
            ));
        }
    }
    out
}

fn cems_day_lines(doc: &Value, day_ms: i64) -> Vec<String> {
    let unit = doc["unit"].as_str().unwrap_or("");
    let mut out = Vec::new();
    if let Some(ps) = doc["pollutants"].as_object() {
        for (q, p) in ps {
            let mut f = Vec::new();
            for k in [
                "valid_hours",
                "exceeded_hours",
                "stopped_hours",
                "expected_hours",
                "compliance_percent",
                "completeness_percent",
                "mass_kg",
            ] {
                push_field(&mut f, k, p[k].as_f64());
            }
            if !f.is_empty() {
                out.push(format!(
                    "cems_daily,unit={},pollutant={} {} {day_ms}",
                    tag(unit),
                    tag(q),
                    f.join(",")
                ));
            }
        }
    }
    out
}

fn air_line(measurement: &str, station: &str, ts: i64, doc: &Value) -> String {
    let mut f = Vec::new();
    if let Some(vs) = doc["values"].as_object() {
        for (k, v) in vs {
            push_field(&mut f, k, v.as_f64());
        }
    }
    push_field(&mut f, "aqi", doc["aqi"]["aqi"].as_f64());
    if let Some(g) = doc["aqi"]["grade"].as_str() {
        f.push(format!("grade=\"{g}\""));
    }
    if let Some(p) = doc["aqi"]["primary_pollutants"].as_array() {
        let names: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
        f.push(format!("primary_pollutant=\"{}\"", names.join("/")));
    }
    if let Some(good) = doc["good_day"].as_bool() {
        f.push(format!("good_day={}", u8::from(good)));
    }
    if f.is_empty() {
        f.push("aqi_missing=1".into());
    }
    format!(
        "{measurement},station={} {} {ts}",
        tag(station),
        f.join(",")
    )
}

fn water_line(entity: &str, day_ms: i64, doc: &Value) -> String {
    let mut f = Vec::new();
    if let Some(vs) = doc["values"].as_object() {
        for (k, v) in vs {
            push_field(&mut f, k, v.as_f64());
        }
    }
    for k in [
        "volume_m3",
        "treated_m3",
        "produced_m3",
        "treatment_rate_percent",
    ] {
        push_field(&mut f, k, doc[k].as_f64());
    }
    if let Some(c) = doc["gb18918_class_1a"]["compliant"].as_bool() {
        f.push(format!("class_1a_compliant={}", u8::from(c)));
    }
    if let Some(c) = doc["gb3838_class"]["label_zh"].as_str() {
        f.push(format!("gb3838_class=\"{c}\""));
    }
    if f.is_empty() {
        f.push("no_data=1".into());
    }
    format!(
        "water_daily,sensor={} {} {day_ms}",
        tag(entity),
        f.join(",")
    )
}
