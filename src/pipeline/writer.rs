//! The store writer: reads the spool in order, writes batches to the store, and commits the spool
//! position only after the store has them.
//!
//! A batch is up to `store.batch_size` readings (whole spool records); when the spool has less, the
//! writer takes what there is at once, so under light load a reading is stored immediately.
//! Failures:
//! - retryable (store down, timeout, 429/5xx): retry the same batch with capped exponential backoff
//!   and jitter, forever; meanwhile the spool grows (up to its limit, then ingest pauses);
//! - too large (413): split in halves;
//! - rejected (4xx, bad data): bisect down to the offending readings, dead-letter exactly those with
//!   the server's message, store the rest.
//!
//! On shutdown the writer keeps storing until the spool is read to the end; if the store is still
//! failing at the hard deadline it stops, and the rest waits in the spool for the next start.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::deadletter::DeadLetter;
use super::{RejectReason, Rejection};
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::reading::Reading;
use crate::store::spool::{Batch, Spool};
use crate::store::{Store, StoreError};

/// The newest stored reading per (sensor, quantity), for `/api/v1/readings/latest`.
/// Keyed sensor → quantity so a lookup borrows the reading's strings instead of copying them.
#[derive(Debug, Clone, Default)]
pub struct LatestValues(Arc<RwLock<HashMap<String, HashMap<String, Reading>>>>);

impl LatestValues {
    pub fn update<'a>(&self, readings: impl IntoIterator<Item = &'a Reading>) {
        let mut map = crate::sync::write(&self.0);
        for r in readings {
            if !map.contains_key(r.sensor.as_str()) {
                map.insert(r.sensor.clone(), HashMap::new());
            }
            let Some(by_quantity) = map.get_mut(r.sensor.as_str()) else {
                continue;
            };
            match by_quantity.get_mut(r.quantity.as_str()) {
                Some(old) if old.ts > r.ts => {}
                // Same sensor and quantity: overwrite in place, reusing the strings' buffers.
                Some(old) => {
                    old.site.clone_from(&r.site);
                    old.unit.clone_from(&r.unit);
                    old.domain = r.domain;
                    old.value = r.value;
                    old.ts = r.ts;
                    old.flag = r.flag;
                    old.source = r.source;
                    old.period = r.period;
                    old.ts_assumed = r.ts_assumed;
                }
                None => {
                    by_quantity.insert(r.quantity.clone(), r.clone());
                }
            }
        }
    }

    /// All latest readings, sorted by sensor then quantity.
    pub fn snapshot(&self) -> Vec<Reading> {
        let map = crate::sync::read(&self.0);
        let mut v: Vec<Reading> = map.values().flat_map(|q| q.values().cloned()).collect();
        v.sort_by(|a, b| (&a.sensor, &a.quantity).cmp(&(&b.sensor, &b.quantity)));
        v
    }
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Everything the writer task owns.
pub struct Writer {
    pub spool: Arc<Spool>,
    pub store: Store,
    pub deadletter: Arc<DeadLetter>,
    pub latest: LatestValues,
    pub metrics: Metrics,
    pub config: WriterConfig,
    /// Woken by the spooler after appends.
    pub data_ready: Arc<Notify>,
    /// Woken by the writer after a commit freed space.
    pub space_freed: Arc<Notify>,
    /// Cancelled when the spooler has finished: once the spool is read to the end, return.
    pub input_done: CancellationToken,
    /// Cancelled at the shutdown deadline: stop retrying and return.
    pub hard_stop: CancellationToken,
    /// The standards engine, fed every stored chunk.
    pub standards: Option<Arc<crate::standards::engine::Engine>>,
    /// Alerting, fed every stored chunk (latest values, arrival times).
    pub alerting: Option<Arc<crate::alerts::Alerting>>,
}

/// Why a batch was not written.
#[derive(Debug)]
struct Aborted;

impl Writer {
    /// Run until the input is done and the spool read to the end (or `hard_stop`).
    pub async fn run(self) {
        let mut drain_rate = DrainRate::default();
        self.update_spool_gauges(None, &drain_rate);
        // A stored position the spool could not commit yet (a full disk): retried every round.
        let mut uncommitted: Option<crate::store::spool::Position> = None;
        loop {
            if let Some(pos) = uncommitted {
                if self.commit(pos).await {
                    uncommitted = None;
                    self.space_freed.notify_waiters();
                }
            }
            let mut batch = match self.read_batch().await {
                Some(b) => b,
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.records.is_empty() {
                self.update_spool_gauges(None, &drain_rate);
                if self.input_done.is_cancelled() && self.spool.is_read_to_end() {
                    if let Some(pos) = uncommitted {
                        // The last commit, tried once more before the writer ends.
                        self.commit(pos).await;
                    }
                    break;
                }
                tokio::select! {
                    _ = self.data_ready.notified() => {}
                    _ = self.input_done.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let oldest = batch.records.first().map(|r| r.appended_ms);
            self.update_spool_gauges(oldest, &drain_rate);
            let started = Instant::now();
            let records = std::mem::take(&mut batch.records);
            let readings: Vec<Reading> = records.into_iter().flat_map(|r| r.readings).collect();
            self.metrics.batch_pending.set(readings.len() as i64);
            if self.write_all(&readings, oldest).await.is_err() {
                tracing::warn!("store writer stopped at the shutdown deadline; unstored readings stay in the spool");
                return;
            }
            self.metrics.batch_pending.set(0);
            uncommitted = (!self.commit(batch.end).await).then_some(batch.end);
            drain_rate.observe(batch.bytes, started.elapsed());
            self.space_freed.notify_waiters();
        }
        self.update_spool_gauges(None, &drain_rate);
        tracing::debug!("store writer drained the spool");
    }

    /// Commit the spool up to `pos`; false (counted, logged) when it failed: the caller retries.
    /// The batch is stored either way; a restart before the commit replays it (stores are
    /// idempotent).
    async fn commit(&self, pos: crate::store::spool::Position) -> bool {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.commit(pos)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.metrics.spool_errors.inc();
                tracing::error!(error = %e, "spool commit failed; retrying");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "spool commit task failed; retrying");
                false
            }
        }
    }

    async fn read_batch(&self) -> Option<Batch> {
        let spool = self.spool.clone();
        let max = self.config.batch_size;
        match tokio::task::spawn_blocking(move || spool.read_batch(max)).await {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                self.metrics.spool_errors.inc();
                tracing::error!(error = %e, "spool read failed; retrying");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "spool read task failed; retrying");
                None
            }
        }
    }

    fn update_spool_gauges(&self, oldest_appended_ms: Option<i64>, rate: &DrainRate) {
        let stats = self.spool.stats();
        self.metrics.spool_bytes.set(stats.bytes as i64);
        self.metrics
            .spool_unstored_bytes
            .set(stats.unstored_bytes as i64);
        let corrupt_seen = self.metrics.spool_corrupt_records.get();
        if stats.corrupt_records > corrupt_seen {
            self.metrics
                .spool_corrupt_records
                .inc_by(stats.corrupt_records - corrupt_seen);
        }
        match oldest_appended_ms {
            Some(ms) => {
                let age = (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0;
                self.metrics.spool_oldest_age_seconds.set(age);
            }
            None if stats.unstored_bytes == 0 => self.metrics.spool_oldest_age_seconds.set(0.0),
            None => {}
        }
        self.metrics
            .spool_drain_seconds
            .set(rate.seconds_to_drain(stats.unstored_bytes));
    }

    /// Write `readings`, splitting on 413 and bisecting on rejection; retry transient errors.
    async fn write_all(&self, readings: &[Reading], oldest: Option<i64>) -> Result<(), Aborted> {
        let mut work: Vec<&[Reading]> = vec![readings];
        while let Some(chunk) = work.pop() {
            match self.write_retrying(chunk, oldest).await? {
                None => {}
                Some(StoreError::TooLarge(msg)) | Some(StoreError::Rejected(msg))
                    if chunk.len() > 1 =>
                {
                    tracing::debug!(len = chunk.len(), %msg, "splitting batch");
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    // Pop order keeps the original order: `a` first.
                    work.push(b);
                    work.push(a);
                }
                Some(e) => self.dead_letter_reading(&chunk[0], &e).await?,
            }
        }
        Ok(())
    }

    /// Write one chunk, retrying retryable errors; returns the non-retryable error, if any.
    /// The spool's gauges are kept current while the store fails (`oldest`: the batch's first
    /// append time), so a backlog that grows during an outage shows, and alerts, as it grows.
    async fn write_retrying(
        &self,
        chunk: &[Reading],
        oldest: Option<i64>,
    ) -> Result<Option<StoreError>, Aborted> {
        let store = self.store.name();
        let mut backoff = Backoff::new(self.config.retry_min, self.config.retry_max).with_jitter();
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.store.write(chunk).await {
                Ok(()) => {
                    self.metrics
                        .store_batch_seconds
                        .with_label_values(&[store])
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .readings_written
                        .with_label_values(&[store])
                        .inc_by(chunk.len() as u64);
                    self.metrics.store_writable.set(1);
                    self.latest.update(chunk);
                    // Imported history says nothing about now, so alerts watch live readings
                    // only; the importer hands it to the standards itself, whatever its age
                    // (`Engine::ingest_history`), once the spool holds it.
                    let live: std::borrow::Cow<'_, [Reading]> = if chunk
                        .iter()
                        .any(|r| r.source == crate::reading::Source::Import)
                    {
                        chunk
                            .iter()
                            .filter(|r| r.source != crate::reading::Source::Import)
                            .cloned()
                            .collect::<Vec<_>>()
                            .into()
                    } else {
                        chunk.into()
                    };
                    if let Some(a) = &self.alerting {
                        a.observe(&live, chrono::Utc::now().timestamp_millis());
                    }
                    self.feed_standards(&live).await?;
                    if let Some(since) = failing_since {
                        tracing::info!(
                            store,
                            outage_secs = since.elapsed().as_secs(),
                            "store writable again"
                        );
                    }
                    return Ok(None);
                }
                Err(e @ StoreError::Retryable { .. }) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&[store, e.kind()])
                        .inc();
                    self.metrics.store_writable.set(0);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(store, error = %e, pending = chunk.len(), "store write failed; retrying until it succeeds");
                    } else {
                        tracing::debug!(store, error = %e, "store write failed again");
                    }
                    // While the store fails the time to drain is unknown (-1).
                    self.update_spool_gauges(oldest, &DrainRate::default());
                    let mut jittered = backoff.next_delay();
                    if let StoreError::Retryable {
                        retry_after: Some(after),
                        ..
                    } = &e
                    {
                        // The server said when: not before, and not past our cap.
                        jittered = (*after).min(backoff.max()).max(jittered);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.hard_stop.cancelled() => return Err(Aborted),
                    }
                }
                Err(e) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&[store, e.kind()])
                        .inc();
                    return Ok(Some(e));
                }
            }
        }
    }

    /// Hand a stored chunk to the standards engine before the spool moves past it. A transient
    /// failure (the data disk full, the database busy) is retried until it passes, so the
    /// verdicts are never computed from a silently thinned input; any other failure is counted
    /// and logged, and storage goes on (the readings are stored; the standards miss them).
    async fn feed_standards(&self, chunk: &[Reading]) -> Result<(), Aborted> {
        let Some(engine) = self.standards.clone() else {
            return Ok(());
        };
        if chunk.is_empty() {
            return Ok(());
        }
        let readings: Arc<Vec<Reading>> = Arc::new(chunk.to_vec());
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut warned = false;
        loop {
            let (e2, r2) = (engine.clone(), readings.clone());
            let now = chrono::Utc::now().timestamp_millis();
            match tokio::task::spawn_blocking(move || e2.ingest(&r2, now)).await {
                Ok(Ok(stats)) => {
                    if stats.too_late > 0 {
                        self.metrics
                            .standards_too_late
                            .inc_by(stats.too_late as u64);
                    }
                    if warned {
                        tracing::info!("standards engine takes stored readings again");
                    }
                    return Ok(());
                }
                Ok(Err(e)) if e.is_transient() => {
                    self.metrics.standards_errors.inc();
                    if !warned {
                        warned = true;
                        tracing::error!(error = %e, "standards engine cannot take stored readings yet; retrying (the spool holds them)");
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.standards_errors.inc();
                    tracing::error!(error = %e, "standards engine could not take stored readings");
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(error = %e, "standards ingest task failed");
                    return Ok(());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.hard_stop.cancelled() => return Err(Aborted),
            }
        }
    }

    /// A reading the store refuses is dead-lettered before the spool moves past it: the write is
    /// retried until it is durable (or the shutdown deadline), so a refused reading is never
    /// committed away without its record.
    async fn dead_letter_reading(&self, r: &Reading, e: &StoreError) -> Result<(), Aborted> {
        let payload = serde_json::to_vec(r).unwrap_or_default();
        let rej = Rejection::new(
            RejectReason::StoreRejected,
            format!("{}: {e}", self.store.name()),
        );
        let topic = format!("{}/{}", r.sensor, r.quantity);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let written = self
                .deadletter
                .reject_async(r.source, topic.clone(), payload.clone(), vec![rej.clone()])
                .await;
            if written.is_ok() {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.hard_stop.cancelled() => return Err(Aborted),
            }
        }
    }
}

/// Bytes stored per second, smoothed; gives the time-to-drain estimate.
#[derive(Debug, Default)]
struct DrainRate {
    bytes_per_sec: f64,
}

impl DrainRate {
    fn observe(&mut self, bytes: u64, took: Duration) {
        let secs = took.as_secs_f64().max(1e-3);
        let r = bytes as f64 / secs;
        self.bytes_per_sec = if self.bytes_per_sec == 0.0 {
            r
        } else {
            0.8 * self.bytes_per_sec + 0.2 * r
        };
    }

    fn seconds_to_drain(&self, unstored: u64) -> f64 {
        if unstored == 0 {
            0.0
        } else if self.bytes_per_sec <= 0.0 {
            // Nothing drained yet (store down since start): unknown, shown as -1.
            -1.0
        } else {
            unstored as f64 / self.bytes_per_sec
        }
    }
}
