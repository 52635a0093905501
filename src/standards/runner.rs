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
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => break,
            }
            self.cycle(&mut pending).await;
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
