//! The engine's tasks: recompute what changed every `standards.interval`, export results to an
//! InfluxDB store, and purge input older than the lateness window ([`Runner`]); re-evaluate
//! imported history in the background ([`Backfill`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use crate::metrics::Metrics;
use crate::store::Store;

/// Result lines kept for export while the store is failing; past this the oldest are dropped (the
/// results stay in the embedded database and the API).
const MAX_PENDING_LINES: usize = 200_000;

pub struct Runner {
    pub engine: Arc<Engine>,
    pub store: Store,
    pub interval: Duration,
    pub metrics: Metrics,
    pub stop: CancellationToken,
    /// The CN 3020 site parameters loggers declared (for the `parameter_change` rule).
    pub site_info: Option<Arc<crate::ingest::hj212::site_info::SiteInfo>>,
}

/// While imported history is being re-evaluated, units are re-evaluated for integrity at most
/// this often (each evaluation reads the unit's whole history), or `standards.integrity.interval`
/// when that is longer.
const INTEGRITY_BUSY_EVERY: Duration = Duration::from_secs(30);

/// What the integrity pass carries from one cycle to the next.
#[derive(Default)]
pub struct IntegrityState {
    last_run: Option<Instant>,
    /// The parameter changes seen, so a new one marks its unit.
    params: std::collections::BTreeMap<String, Vec<crate::integrity::ParamChange>>,
    /// What each unit declared (registration), so a change re-evaluates it.
    declared: std::collections::BTreeMap<String, crate::integrity::UnitIntegrity>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Runner {
    pub async fn run(self) {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.mark_recent(now_ms())).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(hours = n, "standards: recomputing recent hours after start")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "standards: cannot read recent input"),
            _ => {}
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<String> = Vec::new();
        let mut last_purge = Instant::now();
        let mut integrity = IntegrityState::default();
        // Every unit once after a start: a crash may have come between new minutes and their
        // evaluation.
        self.engine
            .integrity_mark(self.engine.registry.snapshot().units.keys().cloned());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => break,
            }
            self.cycle(&mut pending).await;
            self.integrity(&mut integrity, &mut pending).await;
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = Instant::now();
                let engine = self.engine.clone();
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || engine.purge(now_ms())).await
                {
                    tracing::warn!(error = %e, "standards: purge failed");
                }
            }
        }
        // One last pass so a clean shutdown leaves results current.
        self.cycle(&mut pending).await;
    }

    /// Re-evaluate the units whose integrity minutes, CN 3020 parameters or declarations changed
    /// (looked at once per `standards.integrity.interval`).
    pub async fn integrity(&self, st: &mut IntegrityState, pending: &mut Vec<String>) {
        if !self.engine.settings.integrity.enabled {
            return;
        }
        let every = if self.metrics.standards_backfill_pending.get() > 0 {
            self.engine
                .settings
                .integrity
                .interval
                .max(INTEGRITY_BUSY_EVERY)
        } else {
            self.engine.settings.integrity.interval
        };
        if st.last_run.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        st.last_run = Some(Instant::now());
        let now = now_ms();
        if let Some(si) = self.site_info.clone() {
            let engine = self.engine.clone();
            let since = now - engine.integrity_history_ms() - 86_400_000;
            let read = tokio::task::spawn_blocking(move || {
                let reg = engine.registry.snapshot();
                si.changes_since(since).map(|cs| {
                    let mut by_unit: std::collections::BTreeMap<String, Vec<_>> =
                        Default::default();
                    for c in cs {
                        let Some(unit) = reg.sensors.get(&c.sensor).and_then(|s| s.unit.clone())
                        else {
                            continue;
                        };
                        by_unit
                            .entry(unit)
                            .or_default()
                            .push(crate::integrity::ParamChange {
                                at_ms: c.since_ms,
                                pol: c.pol,
                                code: c.code,
                                before: c.before,
                                after: c.value,
                            });
                    }
                    by_unit
                })
            })
            .await;
            if let Ok(Ok(by_unit)) = read {
                let changed: Vec<String> = by_unit
                    .iter()
                    .filter(|(u, v)| st.params.get(*u) != Some(*v))
                    .map(|(u, _)| u.clone())
                    .chain(
                        st.params
                            .keys()
                            .filter(|u| !by_unit.contains_key(*u))
                            .cloned(),
                    )
                    .collect();
                self.engine.integrity_mark(changed);
                st.params = by_unit;
            }
        }
        let declared: std::collections::BTreeMap<String, crate::integrity::UnitIntegrity> = self
            .engine
            .registry
            .snapshot()
            .units
            .iter()
            .map(|(id, u)| (id.clone(), u.integrity.clone()))
            .collect();
        if declared != st.declared {
            let changed: Vec<String> = declared
                .iter()
                .filter(|(id, d)| st.declared.get(*id) != Some(*d))
                .map(|(id, _)| id.clone())
                .collect();
            self.engine.integrity_mark(changed);
            st.declared = declared;
        }
        if self.engine.integrity_pending() == 0 {
            return;
        }
        let engine = self.engine.clone();
        let params = st.params.clone();
        match tokio::task::spawn_blocking(move || engine.integrity_step(now, &params)).await {
            Ok(Ok((lines, units))) => {
                self.metrics.integrity_evaluations.inc_by(units as u64);
                for l in &lines {
                    if let Some(rule) = l.split(',').find_map(|kv| kv.strip_prefix("rule=")) {
                        self.metrics
                            .integrity_findings
                            .with_label_values(&[rule])
                            .inc();
                    }
                }
                if !matches!(self.store, Store::Embedded(_)) {
                    pending.extend(lines);
                }
            }
            Ok(Err(e)) => {
                self.metrics.standards_errors.inc();
                tracing::error!(error = %e, "integrity: evaluation failed; the units stay marked");
            }
            Err(e) => tracing::error!(error = %e, "integrity: evaluation task failed"),
        }
    }

    /// Recompute what changed (every `interval`, and once more at shutdown).
    pub async fn cycle(&self, pending: &mut Vec<String>) {
        if !self.engine.has_changes() && pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.recompute(now_ms())).await {
            Ok(Ok(lines)) => {
                self.metrics.standards_recomputes.inc();
                self.metrics
                    .standards_recompute_seconds
                    .observe(started.elapsed().as_secs_f64());
                if !matches!(self.store, Store::Embedded(_)) {
                    pending.extend(lines);
                    // The plan's indicators as they stand now (one point per minute at most).
                    let engine = self.engine.clone();
                    let now = now_ms();
                    let year = chrono::Datelike::year(&super::time::cst_date(now));
                    if let Ok(Ok(doc)) =
                        tokio::task::spawn_blocking(move || engine.compliance(year, now, None))
                            .await
                    {
                        pending.extend(super::export::plan_targets(
                            &doc,
                            now - now.rem_euclid(60_000),
                        ));
                    }
                }
            }
            Ok(Err(e)) => {
                self.metrics.standards_errors.inc();
                tracing::error!(error = %e, "standards: recomputation failed");
            }
            Err(e) => tracing::error!(error = %e, "standards: recomputation task failed"),
        }
        if pending.is_empty() {
            return;
        }
        if pending.len() > MAX_PENDING_LINES {
            let drop = pending.len() - MAX_PENDING_LINES;
            pending.drain(..drop);
            self.metrics.standards_errors.inc();
            tracing::warn!(dropped = drop, "standards: export backlog too long; oldest result lines dropped (results remain in the API)");
        }
        for chunk in pending.chunks(5000) {
            let body = chunk.join("\n") + "\n";
            if let Err(e) = self.store.write_lines(body).await {
                self.metrics.standards_errors.inc();
                tracing::warn!(error = %e, pending = pending.len(), "standards: cannot export results yet; will retry");
                return;
            }
        }
        pending.clear();
    }
}

/// Hour labels re-evaluated per step of the background re-evaluation: small enough that the live
/// recomputation and ingest (which share the engine's database connection) wait at most one step.
pub const BACKFILL_STEP_HOURS: usize = 24;

/// The background re-evaluation of imported history: hours queued by `Engine::ingest_history`
/// are recomputed oldest first, one step at a time, whatever their age. Results go where the live
/// ones go (the API; an InfluxDB store, best effort).
pub struct Backfill {
    pub engine: Arc<Engine>,
    pub store: Store,
    pub metrics: Metrics,
    pub stop: CancellationToken,
    /// Woken when an import queues hours.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Backfill {
    pub async fn run(self) {
        loop {
            let engine = self.engine.clone();
            let pending = match tokio::task::spawn_blocking(move || engine.backfill_pending()).await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "standards: cannot read the re-evaluation queue");
                    0
                }
                Err(_) => 0,
            };
            self.metrics
                .standards_backfill_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            if pending == 0 {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = self.stop.cancelled() => return,
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
            let engine = self.engine.clone();
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || {
                engine.backfill_step(BACKFILL_STEP_HOURS, now_ms())
            })
            .await
            {
                Ok(Ok((lines, done))) => {
                    self.metrics.standards_backfill_hours.inc_by(done as u64);
                    tracing::debug!(
                        hours = done,
                        seconds = started.elapsed().as_secs_f64(),
                        "standards: imported history re-evaluated"
                    );
                    if !matches!(self.store, Store::Embedded(_)) && !lines.is_empty() {
                        for chunk in lines.chunks(5000) {
                            let body = chunk.join("\n") + "\n";
                            if let Err(e) = self.store.write_lines(body).await {
                                self.metrics.standards_errors.inc();
                                tracing::warn!(error = %e, "standards: re-evaluated results not exported (they are in the API)");
                                break;
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.standards_errors.inc();
                    tracing::error!(error = %e, "standards: re-evaluation of imported history failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(e) => tracing::error!(error = %e, "standards: re-evaluation task failed"),
            }
            tokio::task::yield_now().await;
        }
    }
}
