//! The spooler: takes envelopes from the channel, appends their readings to the durable spool, and
//! acknowledges them once the append is durable (per `spool.fsync`), in arrival order.
//!
//! When the spool is at its size limit the spooler waits for the store writer to free space: the
//! channel fills, sources stop taking data (MQTT messages stay unacknowledged at the broker, Modbus
//! polls wait), and nothing is dropped. `enviromon_spool_ingest_paused` shows it. A full disk is
//! the same from the sources' side: the append fails and is retried, nothing is acknowledged
//! until it succeeds (`enviromon_spool_disk_full`, and `/readyz` says why).
//!
//! Readings the spool's record format cannot hold are dead-lettered; their message is acknowledged
//! only once that record is durable, never without one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::deadletter::DeadLetter;
use super::{Envelope, RejectReason, Rejection};
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::store::spool::{encode_record, Spool};

/// Envelopes gathered into one append (and one fsync) at most.
const MAX_ENVELOPES_PER_APPEND: usize = 4096;
/// Bytes gathered into one append at most.
const MAX_BYTES_PER_APPEND: usize = 8 << 20;

pub struct Spooler {
    pub rx: mpsc::Receiver<Envelope>,
    pub spool: Arc<Spool>,
    pub deadletter: Arc<DeadLetter>,
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
                // Envelopes whose readings cannot be encoded: acknowledged only if dead-lettered.
                let mut unencodable = Vec::new();
                while end < batch.len() && (end == start || buf.len() < MAX_BYTES_PER_APPEND) {
                    if !batch[end].readings.is_empty() {
                        let mark = buf.len();
                        if let Err(e) = encode_record(now, &batch[end].readings, &mut buf) {
                            buf.truncate(mark);
                            unencodable.push((end, e.to_string()));
                        }
                    }
                    end += 1;
                }
                if self.append(&buf).await.is_err() {
                    tracing::warn!("spooler stopped at the shutdown deadline; unacknowledged messages stay with their source");
                    return;
                }
                let mut recorded = vec![true; end - start];
                let mut spooled = vec![true; end - start];
                for (i, why) in unencodable {
                    let readings = batch[i].readings.clone();
                    spooled[i - start] = false;
                    recorded[i - start] = self.dead_letter(readings, &why).await;
                }
                let readings: usize = batch[start..end]
                    .iter()
                    .zip(&spooled)
                    .filter(|(_, in_spool)| **in_spool)
                    .map(|(e, _)| e.readings.len())
                    .sum();
                self.metrics.spool_appended_readings.inc_by(readings as u64);
                for (env, ok) in batch.drain(start..end).zip(recorded) {
                    // Without a durable record the message stays unacknowledged: its source
                    // delivers it again (MQTT after a reconnect), it is not lost.
                    if let (Some(ack), true) = (env.ack, ok) {
                        ack.ack();
                    }
                }
                // `drain` shifted the rest down: continue from `start`.
            }
            self.data_ready.notify_one();
        }
        tracing::debug!("spooler drained");
    }

    /// Dead-letter an envelope the spool cannot hold; true when the record is durable.
    async fn dead_letter(&self, readings: Vec<crate::reading::Reading>, why: &str) -> bool {
        let Some(first) = readings.first() else {
            return true;
        };
        let (source, topic) = (first.source, first.sensor.clone());
        let payload = serde_json::to_vec(&readings).unwrap_or_default();
        let rejection = Rejection::new(
            RejectReason::SpoolEncoding,
            format!("{} readings cannot be spooled: {why}", readings.len()),
        );
        let dl = self.deadletter.clone();
        let written = tokio::task::spawn_blocking(move || {
            dl.reject(source, &topic, &payload, std::slice::from_ref(&rejection))
        })
        .await;
        matches!(written, Ok(Ok(())))
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
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let spool = self.spool.clone();
            let data = buf.to_vec();
            let result = tokio::task::spawn_blocking(move || spool.append(&data)).await;
            match result {
                Ok(Ok(())) => {
                    if self.metrics.spool_disk_full.get() == 1 {
                        self.metrics.spool_disk_full.set(0);
                        tracing::info!("spool disk has space again: ingest resumed");
                    }
                    return Ok(());
                }
                Ok(Err(e)) if e.is_disk_full() => {
                    self.metrics.spool_errors.inc();
                    if self.metrics.spool_disk_full.get() == 0 {
                        self.metrics.spool_disk_full.set(1);
                        tracing::error!(error = %e, "spool disk full: nothing is acknowledged until space is freed (sources keep their messages); retrying");
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.spool_errors.inc();
                    tracing::error!(error = %e, "spool append failed; retrying (ingest waits)");
                }
                Err(e) => tracing::error!(error = %e, "spool append task failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.hard_stop.cancelled() => return Err(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Acknowledge;
    use crate::reading::{DataFlag, Domain, Period, Reading, Source};
    use crate::store::spool::FsyncPolicy;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Flag(Arc<AtomicBool>);
    impl Acknowledge for Flag {
        fn ack(self: Box<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn reading(unit: &str) -> Reading {
        Reading {
            sensor: "dt-1-cems".into(),
            site: "datang".into(),
            domain: Domain::Cems,
            quantity: "SO2".into(),
            value: 1.0,
            unit: unit.into(),
            ts: chrono::Utc::now(),
            flag: DataFlag::N,
            source: Source::Mqtt,
            ts_assumed: false,
            period: Period::Instant,
        }
    }

    /// Three messages, the middle one's readings too long for a spool record (a 70,000-byte unit;
    /// the record's strings take 65,535). With a working dead-letter file all three are
    /// acknowledged and the middle one is recorded; with a dead-letter file that cannot be written
    /// (`/dev/full`: every write fails with ENOSPC) the middle one is not acknowledged, so its
    /// source delivers it again, while its neighbours are.
    #[tokio::test]
    async fn unencodable_readings_are_acknowledged_only_with_a_durable_dead_letter_record() {
        for (deadletter_path, recorded) in [(None, true), (Some("/dev/full"), false)] {
            let dir = tempfile::tempdir().unwrap();
            let metrics = Metrics::new().unwrap();
            let dl_path = deadletter_path
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| dir.path().join("deadletter.jsonl"));
            let deadletter = Arc::new(
                DeadLetter::open(&dl_path, metrics.clone(), Duration::from_secs(60)).unwrap(),
            );
            let spool = Arc::new(
                Spool::open(
                    &dir.path().join("spool"),
                    1 << 20,
                    1 << 16,
                    FsyncPolicy::Batch,
                )
                .unwrap(),
            );
            let (tx, rx) = mpsc::channel(8);
            let done = CancellationToken::new();
            let spooler = Spooler {
                rx,
                spool: spool.clone(),
                deadletter,
                metrics: metrics.clone(),
                data_ready: Arc::new(Notify::new()),
                space_freed: Arc::new(Notify::new()),
                hard_stop: CancellationToken::new(),
                done: done.clone(),
            };
            let task = tokio::spawn(spooler.run());
            let acks: Vec<Arc<AtomicBool>> =
                (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
            let units = ["mg/m3".to_string(), "x".repeat(70_000), "mg/m3".to_string()];
            for (unit, a) in units.iter().zip(&acks) {
                tx.send(Envelope {
                    readings: vec![reading(unit)],
                    ack: Some(Box::new(Flag(a.clone()))),
                })
                .await
                .unwrap();
            }
            drop(tx);
            task.await.unwrap();
            assert!(done.is_cancelled());
            let acked: Vec<bool> = acks.iter().map(|a| a.load(Ordering::SeqCst)).collect();
            assert_eq!(
                acked,
                vec![true, recorded, true],
                "dead-letter at {dl_path:?}"
            );
            // The two good readings are in the spool, counted; the refused one is not.
            let batch = spool.read_batch(100).unwrap();
            assert_eq!(batch.readings(), 2);
            assert_eq!(metrics.spool_appended_readings.get(), 2);
            if recorded {
                let records = crate::pipeline::deadletter::read_all(&dl_path).unwrap();
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].reason, "spool_encoding");
            } else {
                assert_eq!(metrics.deadletter_errors.get(), 1);
            }
        }
    }
}
