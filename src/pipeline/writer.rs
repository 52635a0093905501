//! The store writer: batches envelopes from the channel, writes them, then acknowledges them.
//!
//! A batch is written as soon as it holds `store.batch_size` readings or nothing more is queued, so
//! under light load a reading is stored at once and under heavy load batches grow. Failures:
//! - retryable (store down, timeout, 429/5xx): retry the same batch with capped exponential backoff
//!   and jitter, forever; the channel fills and sources wait (backpressure, nothing dropped);
//! - too large (413): split in halves;
//! - rejected (4xx, bad data): bisect down to the offending readings, dead-letter exactly those with
//!   the server's message, store the rest.
//!
//! Acknowledgements fire only after their envelope's readings are durable, in arrival order. On
//! shutdown the writer drains the channel; if the store is still failing at the hard deadline it
//! gives up, leaving those messages unacknowledged for the broker to redeliver.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::deadletter::DeadLetter;
use super::{Envelope, RejectReason, Rejection};
use crate::metrics::Metrics;
use crate::reading::Reading;
use crate::store::{Store, StoreError};

/// The newest stored reading per (sensor, quantity), for `/api/v1/readings/latest`.
#[derive(Debug, Clone, Default)]
pub struct LatestValues(Arc<RwLock<HashMap<(String, String), Reading>>>);

impl LatestValues {
    pub fn update<'a>(&self, readings: impl IntoIterator<Item = &'a Reading>) {
        let mut map = match self.0.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for r in readings {
            let key = (r.sensor.clone(), r.quantity.clone());
            match map.get(&key) {
                Some(old) if old.ts > r.ts => {}
                _ => {
                    map.insert(key, r.clone());
                }
            }
        }
    }

    /// All latest readings, sorted by sensor then quantity.
    pub fn snapshot(&self) -> Vec<Reading> {
        let map = match self.0.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut v: Vec<Reading> = map.values().cloned().collect();
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
    pub rx: mpsc::Receiver<Envelope>,
    pub store: Store,
    pub deadletter: Arc<DeadLetter>,
    pub latest: LatestValues,
    pub metrics: Metrics,
    pub config: WriterConfig,
    /// Cancelled at the shutdown deadline: stop retrying and return.
    pub hard_stop: CancellationToken,
}

/// Why a batch was not written.
#[derive(Debug)]
struct Aborted;

impl Writer {
    /// Run until every sender is dropped and the channel is drained (or `hard_stop`).
    pub async fn run(mut self) {
        let mut batch: Vec<Envelope> = Vec::new();
        loop {
            let Some(first) = self.rx.recv().await else {
                break;
            };
            let mut n = first.readings.len();
            batch.push(first);
            while n < self.config.batch_size {
                match self.rx.try_recv() {
                    Ok(env) => {
                        n += env.readings.len();
                        batch.push(env);
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.set(self.rx.len() as i64);
            if self.flush(&mut batch).await.is_err() {
                tracing::warn!(
                    unwritten_messages = batch.len() + self.rx.len(),
                    "store writer stopped at the shutdown deadline; unacknowledged messages will be redelivered by the broker"
                );
                return;
            }
        }
        tracing::debug!("store writer drained");
    }

    async fn flush(&self, batch: &mut Vec<Envelope>) -> Result<(), Aborted> {
        let readings: Vec<Reading> = batch
            .iter()
            .flat_map(|e| e.readings.iter().cloned())
            .collect();
        self.metrics.batch_pending.set(readings.len() as i64);
        if !readings.is_empty() {
            self.write_all(&readings).await?;
        }
        self.metrics.batch_pending.set(0);
        for env in batch.drain(..) {
            if let Some(ack) = env.ack {
                ack.ack();
            }
        }
        Ok(())
    }

    /// Write `readings`, splitting on 413 and bisecting on rejection; retry transient errors.
    async fn write_all(&self, readings: &[Reading]) -> Result<(), Aborted> {
        let mut work: Vec<&[Reading]> = vec![readings];
        while let Some(chunk) = work.pop() {
            match self.write_retrying(chunk).await? {
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
                Some(e) => self.dead_letter_reading(&chunk[0], &e),
            }
        }
        Ok(())
    }

    /// Write one chunk, retrying retryable errors; returns the non-retryable error, if any.
    async fn write_retrying(&self, chunk: &[Reading]) -> Result<Option<StoreError>, Aborted> {
        let store = self.store.name();
        let mut delay = self.config.retry_min;
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
                        .readings_stored
                        .with_label_values(&[store])
                        .inc_by(chunk.len() as u64);
                    self.metrics.store_writable.set(1);
                    self.latest.update(chunk);
                    if let Some(since) = failing_since {
                        tracing::info!(
                            store,
                            outage_secs = since.elapsed().as_secs(),
                            "store writable again"
                        );
                    }
                    return Ok(None);
                }
                Err(e @ StoreError::Retryable(_)) => {
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
                    let jittered = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.hard_stop.cancelled() => return Err(Aborted),
                    }
                    delay = (delay * 2).min(self.config.retry_max);
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

    fn dead_letter_reading(&self, r: &Reading, e: &StoreError) {
        let payload = serde_json::to_vec(r).unwrap_or_default();
        let rej = Rejection::new(
            RejectReason::StoreRejected,
            format!("{}: {e}", self.store.name()),
        );
        // The reading is refused by the store whatever happens to this record; a failed dead-letter
        // write is counted and logged by `reject`.
        let _ = self.deadletter.reject(
            r.source,
            &format!("{}/{}", r.sensor, r.quantity),
            &payload,
            &[rej],
        );
    }
}
