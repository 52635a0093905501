//! The spooler: takes envelopes from the channel, appends their readings to the durable spool, and
//! acknowledges them once the append is durable (per `spool.fsync`), in arrival order.
//!
//! When the spool is at its size limit the spooler waits for the store writer to free space: the
//! channel fills, sources stop taking data (MQTT messages stay unacknowledged at the broker, Modbus
//! polls wait), and nothing is dropped. `enviromon_spool_ingest_paused` shows it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::Envelope;
use crate::metrics::Metrics;
use crate::store::spool::{encode_record, Spool};

/// Envelopes gathered into one append (and one fsync) at most.
const MAX_ENVELOPES_PER_APPEND: usize = 4096;
/// Bytes gathered into one append at most.
const MAX_BYTES_PER_APPEND: usize = 8 << 20;

pub struct Spooler {
    pub rx: mpsc::Receiver<Envelope>,
    pub spool: Arc<Spool>,
    pub metrics: Metrics,
    /// Wakes the store writer when records were appended.
    pub data_ready: Arc<Notify>,
    /// Woken by the store writer when it freed space.
    pub space_freed: Arc<Notify>,
    /// Cancelled at the shutdown deadline: stop waiting and return (unacked messages stay at the broker).
    pub hard_stop: CancellationToken,
    /// Cancelled by the spooler when it has finished (the channel is closed and drained).
    pub done: CancellationToken,
}

impl Spooler {
    pub async fn run(mut self) {
        let _done = self.done.clone().drop_guard();
        let mut batch: Vec<Envelope> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some(first) = self.rx.recv().await else {
                break;
            };
            batch.push(first);
            while batch.len() < MAX_ENVELOPES_PER_APPEND {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.set(self.rx.len() as i64);
            // Encode; a batch over the byte cap is appended in several writes, in order.
            let start = 0;
            while start < batch.len() {
                buf.clear();
                let mut end = start;
                let now = chrono::Utc::now().timestamp_millis();
                while end < batch.len() && (end == start || buf.len() < MAX_BYTES_PER_APPEND) {
                    if !batch[end].readings.is_empty() {
                        if let Err(e) = encode_record(now, &batch[end].readings, &mut buf) {
                            tracing::error!(error = %e, "cannot encode readings for the spool");
                        }
                    }
                    end += 1;
                }
                if self.append(&buf).await.is_err() {
                    tracing::warn!("spooler stopped at the shutdown deadline; unacknowledged messages stay with their source");
                    return;
                }
                let readings: usize = batch[start..end].iter().map(|e| e.readings.len()).sum();
                self.metrics.spool_appended_readings.inc_by(readings as u64);
                for env in batch.drain(start..end) {
                    if let Some(ack) = env.ack {
                        ack.ack();
                    }
                }
                // `drain` shifted the rest down: continue from `start`.
            }
            self.data_ready.notify_one();
        }
        tracing::debug!("spooler drained");
    }

    /// Wait for room, then append durably; retry I/O errors (disk full, …) until they clear.
    async fn append(&self, buf: &[u8]) -> Result<(), ()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut paused: Option<Instant> = None;
        loop {
            let freed = self.space_freed.notified();
            if self.spool.has_room(buf.len() as u64) {
                break;
            }
            if paused.is_none() {
                paused = Some(Instant::now());
                self.metrics.spool_ingest_paused.set(1);
                tracing::warn!(
                    spool_bytes = self.spool.stats().bytes,
                    "spool full: ingest paused until the store drains it (nothing is dropped)"
                );
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.hard_stop.cancelled() => return Err(()),
            }
        }
        if let Some(since) = paused {
            self.metrics.spool_ingest_paused.set(0);
            self.metrics
                .spool_paused_seconds
                .inc_by(since.elapsed().as_secs_f64());
            tracing::info!(
                paused_secs = since.elapsed().as_secs(),
                "spool has room again: ingest resumed"
            );
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let spool = self.spool.clone();
            let data = buf.to_vec();
            let result = tokio::task::spawn_blocking(move || spool.append(&data)).await;
            match result {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    self.metrics.spool_errors.inc();
                    tracing::error!(error = %e, "spool append failed; retrying (ingest waits)");
                }
                Err(e) => tracing::error!(error = %e, "spool append task failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => return Err(()),
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
