//! The dead-letter file: every message or reading the daemon refuses, with the reason.
//!
//! JSON lines in `data_dir/deadletter.jsonl`: time, source, topic, reason, detail, the raw payload
//! (UTF-8 text, or base64 when it is not text; cut at 64 KiB with its full size recorded). A record is
//! flushed and fsynced before the message is acknowledged, so a refusal is never silent. Each
//! refusal also increments `enviromon_readings_rejected_total{reason}` and logs a warning, at most
//! one per reason per `reject_log_interval` (the rest are counted in the next warning).
//!
//! Refusals are evidence, not the product, so they are bounded:
//! - a message's payload is written once, with its first refusal; the message's other refusals
//!   say `same_message: true` and carry no payload (2,000 refused values of one 60 KB message are
//!   60 KB and 2,000 short lines, not 2,000 copies);
//! - the file rotates at `pipeline.deadletter_max_bytes` (`deadletter.jsonl.1`, `.2`, … up to
//!   `deadletter_keep`; the oldest is deleted, counted in `enviromon_deadletter_rotations_total`);
//! - a flood (garbage on a port) is recorded at most `deadletter_flood_burst` records at once and
//!   `deadletter_flood_rate` a second per source and reason; the rest are counted
//!   (`enviromon_deadletter_suppressed_total`, and every refusal in `readings_rejected_total`) and
//!   summed up in one record when records are allowed again.
//!
//! Writes are blocking (fsync): async callers use [`DeadLetter::reject_async`], which runs them
//! on the blocking pool, so a slow disk never holds up another connection's task.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use super::{RejectReason, Rejection};
use crate::metrics::Metrics;
use crate::reading::Source;
use crate::sync::lock;

/// Payload bytes kept in a record.
const MAX_PAYLOAD_KEPT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot open dead-letter file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write dead-letter file: {0}")]
    Write(#[from] std::io::Error),
}

/// One line of the dead-letter file.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Record {
    pub time: String,
    pub source: String,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    /// `text` or `base64`.
    pub payload_encoding: String,
    pub payload: String,
    pub payload_bytes: usize,
    pub payload_truncated: bool,
    /// A further refusal of the message whose payload the previous record carries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_message: bool,
}

impl Record {
    pub fn new(source: Source, topic: &str, payload: &[u8], rejection: &Rejection) -> Record {
        let kept = &payload[..payload.len().min(MAX_PAYLOAD_KEPT)];
        let (payload_encoding, text) = match std::str::from_utf8(kept) {
            Ok(s) => ("text", s.to_string()),
            // A cut inside a multi-byte character is still text up to the cut.
            Err(e) if e.error_len().is_none() && payload.len() > MAX_PAYLOAD_KEPT => (
                "text",
                String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(),
            ),
            Err(_) => (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(kept),
            ),
        };
        Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.as_str().to_string(),
            topic: topic.to_string(),
            reason: rejection.reason.as_str().to_string(),
            detail: rejection.detail.clone(),
            payload_encoding: payload_encoding.to_string(),
            payload: text,
            payload_bytes: payload.len(),
            payload_truncated: payload.len() > MAX_PAYLOAD_KEPT,
            same_message: false,
        }
    }

    /// A further refusal of the same message: no payload again.
    fn again(source: Source, topic: &str, payload_bytes: usize, rejection: &Rejection) -> Record {
        Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.as_str().to_string(),
            topic: topic.to_string(),
            reason: rejection.reason.as_str().to_string(),
            detail: rejection.detail.clone(),
            payload_encoding: "text".into(),
            payload: String::new(),
            payload_bytes,
            payload_truncated: false,
            same_message: true,
        }
    }
}

/// How much of the refusals is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The file rotates past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` … `.keep`).
    pub keep: usize,
    /// Records per second per source and reason, after the burst.
    pub flood_rate: f64,
    pub flood_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            keep: 3,
            flood_rate: 20.0,
            flood_burst: 200.0,
        }
    }
}

/// The open file and its size.
#[derive(Debug)]
struct Output {
    file: File,
    size: u64,
}

/// A token bucket per source and reason, and the refusals it held back.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

/// The dead-letter sink with its telemetry.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    out: Mutex<Output>,
    metrics: Metrics,
    log_interval: Duration,
    limits: Limits,
    /// Per reason: when we last warned, and how many refusals were not logged since.
    last_warn: Mutex<HashMap<RejectReason, (Instant, u64)>>,
    flood: Mutex<HashMap<(Source, RejectReason), Bucket>>,
}

impl DeadLetter {
    pub fn open(
        path: &Path,
        metrics: Metrics,
        log_interval: Duration,
    ) -> Result<Self, DeadLetterError> {
        Self::open_with(path, metrics, log_interval, Limits::default())
    }

    pub fn open_with(
        path: &Path,
        metrics: Metrics,
        log_interval: Duration,
        limits: Limits,
    ) -> Result<Self, DeadLetterError> {
        let open_err = |source| DeadLetterError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(DeadLetter {
            path: path.to_path_buf(),
            out: Mutex::new(Output { file, size }),
            metrics,
            log_interval,
            limits,
            last_warn: Mutex::new(HashMap::new()),
            flood: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`DeadLetter::reject`] on the blocking pool: for async callers.
    pub async fn reject_async(
        self: &Arc<Self>,
        source: Source,
        topic: String,
        payload: Vec<u8>,
        rejections: Vec<Rejection>,
    ) -> Result<(), DeadLetterError> {
        if rejections.is_empty() {
            return Ok(());
        }
        let dl = self.clone();
        tokio::task::spawn_blocking(move || dl.reject(source, &topic, &payload, &rejections))
            .await
            .map_err(|e| DeadLetterError::Write(std::io::Error::other(e.to_string())))?
    }

    /// Whether a record of (source, reason) may be written now; a summary of what was held back
    /// comes with the first one allowed again.
    fn admit(&self, source: Source, reason: RejectReason) -> (bool, u64) {
        let mut flood = lock(&self.flood);
        let now = Instant::now();
        let b = flood.entry((source, reason)).or_insert(Bucket {
            tokens: self.limits.flood_burst,
            at: now,
            suppressed: 0,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.limits.flood_rate)
            .min(self.limits.flood_burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            (true, std::mem::take(&mut b.suppressed))
        } else {
            b.suppressed += 1;
            (false, 0)
        }
    }

    /// Log (rate-limited), durably record and then count the refusals of one message.
    /// `Err` means the records could not be written (nothing is counted but the error): the caller
    /// must not acknowledge the message.
    pub fn reject(
        &self,
        source: Source,
        topic: &str,
        payload: &[u8],
        rejections: &[Rejection],
    ) -> Result<(), DeadLetterError> {
        if rejections.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut records = 0u64;
        let mut suppressed = 0u64;
        let mut payload_written = false;
        for r in rejections {
            self.warn_limited(source, topic, r);
            let (admitted, held_back) = self.admit(source, r.reason);
            if !admitted {
                suppressed += 1;
                continue;
            }
            if held_back > 0 {
                let summary = Rejection::new(
                    r.reason,
                    format!(
                        "{held_back} more refusals of this kind from {} were not recorded one by one (flood limit: {} a second); they are counted in enviromon_readings_rejected_total",
                        source.as_str(),
                        self.limits.flood_rate
                    ),
                );
                let rec = Record::again(source, topic, 0, &summary);
                if serde_json::to_writer(&mut buf, &rec).is_ok() {
                    buf.push(b'\n');
                    records += 1;
                }
            }
            let rec = if payload_written {
                Record::again(source, topic, payload.len(), r)
            } else {
                payload_written = true;
                Record::new(source, topic, payload, r)
            };
            // Serializing a struct of strings and numbers cannot fail.
            if serde_json::to_writer(&mut buf, &rec).is_ok() {
                buf.push(b'\n');
                records += 1;
            }
        }
        let written = if buf.is_empty() {
            Ok(())
        } else {
            self.write(&buf)
        };
        match written {
            Ok(()) => {
                // Counted once they are durable (or held back for good): a caller that retries a
                // failed write never counts a refusal twice.
                for r in rejections {
                    self.metrics
                        .readings_rejected
                        .with_label_values(&[r.reason.as_str()])
                        .inc();
                }
                self.metrics.deadletter_records.inc_by(records);
                self.metrics.deadletter_suppressed.inc_by(suppressed);
                Ok(())
            }
            Err(e) => {
                self.metrics.deadletter_errors.inc_by(records);
                tracing::error!(path = %self.path.display(), error = %e, "cannot write dead-letter records; message left unacknowledged");
                Err(e.into())
            }
        }
    }

    /// Append and fsync, rotating first when the file would pass its bound.
    fn write(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut out = lock(&self.out);
        if out.size > 0 && out.size + buf.len() as u64 > self.limits.max_bytes {
            self.rotate(&mut out)?;
        }
        let before = out.size;
        let written = out.file.write_all(buf).and_then(|()| out.file.sync_data());
        if let Err(e) = written {
            // Never leave half a line: the next record starts on a line of its own.
            let _ = out.file.set_len(before);
            return Err(e);
        }
        out.size += buf.len() as u64;
        Ok(())
    }

    /// `deadletter.jsonl` → `.1` → `.2` …; the oldest beyond `keep` is deleted.
    fn rotate(&self, out: &mut Output) -> std::io::Result<()> {
        let name = |i: usize| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.limits.keep == 0 {
            out.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(name(self.limits.keep));
            for i in (1..self.limits.keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            std::fs::rename(&self.path, name(1))?;
            out.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        out.size = 0;
        self.metrics.deadletter_rotations.inc();
        tracing::info!(path = %self.path.display(), keep = self.limits.keep, "dead-letter file rotated");
        Ok(())
    }

    fn warn_limited(&self, source: Source, topic: &str, r: &Rejection) {
        let mut map = lock(&self.last_warn);
        let now = Instant::now();
        let entry = map
            .entry(r.reason)
            .or_insert((now - self.log_interval * 2, 0));
        if now.duration_since(entry.0) >= self.log_interval {
            let suppressed = entry.1;
            *entry = (now, 0);
            drop(map);
            tracing::warn!(
                source = source.as_str(),
                topic,
                reason = r.reason.as_str(),
                detail = %r.detail,
                suppressed_since_last_warning = suppressed,
                "rejected: {}",
                r.detail
            );
        } else {
            entry.1 += 1;
        }
    }
}

/// How much of the end of a dead-letter file [`recent`] reads (at most this many bytes per file).
const RECENT_TAIL_BYTES: u64 = 8 << 20;

/// The newest records of the dead-letter file at `path` and of its first rotated file, newest
/// first, at most `limit`, those `keep` accepts. Reads at most the last 8 MiB of each file, so a
/// large file answers as fast as a small one. A record of a further refusal of the same message
/// (`same_message`) is given the payload of the record it follows.
pub fn recent(
    path: &Path,
    limit: usize,
    keep: impl Fn(&Record) -> bool,
) -> std::io::Result<Vec<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    for p in [path.to_path_buf(), rotated] {
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(RECENT_TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(len - start).read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // cut in the middle
        }
        let mut records: Vec<Record> = Vec::with_capacity(lines.len());
        for l in lines.iter().filter(|l| !l.trim().is_empty()) {
            if let Ok(mut r) = serde_json::from_str::<Record>(l) {
                if r.same_message {
                    if let Some(prev) = records.last() {
                        r.payload.clone_from(&prev.payload);
                        r.payload_encoding.clone_from(&prev.payload_encoding);
                    }
                }
                records.push(r);
            }
        }
        out.extend(records.into_iter().rev().filter(|r| keep(r)));
        if out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// Read every record of a dead-letter file (tests and tools).
pub fn read_all(path: &Path) -> std::io::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /api/v1/deadletter`'s reader: newest first, filtered, a further refusal of a message
    /// given that message's payload, at most `limit`.
    #[test]
    fn recent_refusals_come_newest_first_with_their_payload() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        let dl = DeadLetter::open(&p, Metrics::new().unwrap(), Duration::from_secs(10)).unwrap();
        let r = |d: &str| Rejection::new(RejectReason::OutOfRange, d);
        dl.reject(Source::Mqtt, "a", b"first", &[r("one")]).unwrap();
        dl.reject(Source::Mqtt, "b", b"second", &[r("two"), r("three")])
            .unwrap();
        let all = recent(&p, 10, |_| true).unwrap();
        let details: Vec<&str> = all.iter().map(|x| x.detail.as_str()).collect();
        assert_eq!(details, ["three", "two", "one"]);
        assert_eq!(
            all[0].payload, "second",
            "the further refusal carries its message's payload"
        );
        let b_only = recent(&p, 1, |x| x.topic == "b").unwrap();
        assert_eq!((b_only.len(), b_only[0].detail.as_str()), (1, "three"));
        assert!(recent(&dir.path().join("none.jsonl"), 5, |_| true)
            .unwrap()
            .is_empty());
    }

    /// The message of 2,000 refused values: its payload is written once.
    #[test]
    fn a_message_payload_is_written_once_for_all_its_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        let m = Metrics::new().unwrap();
        let limits = Limits {
            flood_burst: 10_000.0,
            ..Limits::default()
        };
        let dl = DeadLetter::open_with(&p, m.clone(), Duration::from_secs(10), limits).unwrap();
        let payload = vec![b'x'; 60_000];
        let refusals: Vec<Rejection> = (0..2000)
            .map(|i| {
                Rejection::new(
                    RejectReason::UnknownQuantity,
                    format!("values.q{i}: unknown"),
                )
            })
            .collect();
        dl.reject(Source::Mqtt, "t", &payload, &refusals).unwrap();
        let recs = read_all(&p).unwrap();
        assert_eq!(recs.len(), 2000);
        assert_eq!(recs[0].payload.len(), 60_000);
        assert!(!recs[0].same_message);
        assert!(recs[1..]
            .iter()
            .all(|r| r.same_message && r.payload.is_empty()));
        assert!(recs[1..].iter().all(|r| r.payload_bytes == 60_000));
        // 60 KB once plus 2,000 short lines, not 2,000 × 60 KB (120 MB).
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size < 60_000 + 2000 * 400, "{size}");
        assert_eq!(
            m.readings_rejected
                .with_label_values(&["unknown_quantity"])
                .get(),
            2000
        );
    }

    #[test]
    fn the_file_rotates_at_its_bound_and_keeps_that_many() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        let m = Metrics::new().unwrap();
        let limits = Limits {
            max_bytes: 100 * 1024,
            keep: 2,
            flood_rate: 1e9,
            flood_burst: 1e9,
        };
        let dl = DeadLetter::open_with(&p, m.clone(), Duration::from_secs(10), limits).unwrap();
        let payload = vec![b'y'; 30_000];
        let r = Rejection::new(RejectReason::NotJson, "not JSON");
        for _ in 0..20 {
            dl.reject(Source::Mqtt, "t", &payload, std::slice::from_ref(&r))
                .unwrap();
        }
        // 20 records of ~30 KB, three to a 100 KB file: the live file and two rotated ones remain.
        let name = |i: usize| dir.path().join(format!("dl.jsonl.{i}"));
        assert!(std::fs::metadata(&p).unwrap().len() <= 100 * 1024);
        assert!(name(1).exists() && name(2).exists() && !name(3).exists());
        assert!(
            m.deadletter_rotations.get() >= 5,
            "{}",
            m.deadletter_rotations.get()
        );
        // Every record of the live file is whole.
        assert!(read_all(&p)
            .unwrap()
            .iter()
            .all(|r| r.payload.len() == 30_000));
        assert_eq!(
            m.readings_rejected.with_label_values(&["not_json"]).get(),
            20
        );
    }

    /// A flood (one bad frame after another on a port): the burst is recorded, the rest counted,
    /// and summed up in one record when the rate allows again.
    #[test]
    fn a_flood_is_recorded_up_to_its_limit_and_summed_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        let m = Metrics::new().unwrap();
        // 10 a second: any machine refuses faster than that.
        let limits = Limits {
            flood_rate: 10.0,
            flood_burst: 50.0,
            ..Limits::default()
        };
        let dl = DeadLetter::open_with(&p, m.clone(), Duration::from_secs(10), limits).unwrap();
        let r = Rejection::new(
            RejectReason::InvalidPayload,
            "HJ 212 frame refused: garbage",
        );
        for _ in 0..5000 {
            dl.reject(Source::Hj212, "peer", b"##", std::slice::from_ref(&r))
                .unwrap();
        }
        let written = m.deadletter_records.get();
        let held = m.deadletter_suppressed.get();
        assert!(
            written < 5000 && held > 0,
            "{written} written, {held} held back"
        );
        assert_eq!(
            m.readings_rejected
                .with_label_values(&["invalid_payload"])
                .get(),
            5000
        );
        // Wait for the bucket to hold a token again (10 a second): the next refusal brings the
        // summary.
        let refilled = Instant::now() + Duration::from_millis(150);
        while Instant::now() < refilled {
            std::hint::spin_loop();
        }
        dl.reject(Source::Hj212, "peer", b"##", std::slice::from_ref(&r))
            .unwrap();
        // Every refusal held back is in exactly one summary record.
        let recs = read_all(&p).unwrap();
        let summed: u64 = recs
            .iter()
            .filter(|r| r.detail.contains("were not recorded one by one"))
            .map(|r| r.detail.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(summed, held);
        assert_eq!(m.deadletter_suppressed.get(), held);
    }

    #[test]
    fn records_keep_text_binary_and_cut_large_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        let m = Metrics::new().unwrap();
        let dl = DeadLetter::open(&p, m.clone(), Duration::from_secs(10)).unwrap();
        let r = Rejection::new(RejectReason::NotJson, "not JSON: x");
        dl.reject(Source::Mqtt, "t/1", b"{oops", std::slice::from_ref(&r))
            .unwrap();
        dl.reject(
            Source::Mqtt,
            "t/2",
            &[0xff, 0x00, 0x80],
            std::slice::from_ref(&r),
        )
        .unwrap();
        let big = vec![b'a'; 1_000_000];
        let big_r = Rejection::new(RejectReason::PayloadTooLarge, "1000000 bytes");
        dl.reject(Source::Mqtt, "t/3", &big, &[big_r]).unwrap();
        let recs = read_all(&p).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            (recs[0].payload.as_str(), recs[0].payload_encoding.as_str()),
            ("{oops", "text")
        );
        assert_eq!(
            (recs[1].payload.as_str(), recs[1].payload_encoding.as_str()),
            ("/wCA", "base64")
        );
        assert_eq!(recs[2].payload.len(), MAX_PAYLOAD_KEPT);
        assert_eq!(recs[2].payload_bytes, 1_000_000);
        assert!(recs[2].payload_truncated);
        assert_eq!(m.deadletter_records.get(), 3);
        assert_eq!(
            m.readings_rejected.with_label_values(&["not_json"]).get(),
            2
        );
    }
}
