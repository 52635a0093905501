//! The dead-letter file: every message or reading the daemon refuses, with the reason.
//!
//! JSON lines in `data_dir/deadletter.jsonl`: time, source, topic, reason, detail, the raw payload
//! (UTF-8 text, or base64 when it is not text; cut at 64 KiB with its full size recorded). A record is
//! flushed and fsynced before the message is acknowledged, so a refusal is never silent. Each
//! refusal also increments `enviromon_readings_rejected_total{reason}` and logs a warning, at most
//! one per reason per `reject_log_interval` (the rest are counted in the next warning).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;

use super::{RejectReason, Rejection};
use crate::metrics::Metrics;
use crate::reading::Source;

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
        }
    }
}

/// The dead-letter sink with its telemetry.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<File>,
    metrics: Metrics,
    log_interval: Duration,
    /// Per reason: when we last warned, and how many refusals were not logged since.
    last_warn: Mutex<HashMap<RejectReason, (Instant, u64)>>,
}

impl DeadLetter {
    pub fn open(
        path: &Path,
        metrics: Metrics,
        log_interval: Duration,
    ) -> Result<Self, DeadLetterError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| DeadLetterError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(DeadLetter {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            metrics,
            log_interval,
            last_warn: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Count, log (rate-limited) and durably record the refusals of one message.
    /// `Err` means the records could not be written: the caller must not acknowledge the message.
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
        for r in rejections {
            self.metrics
                .readings_rejected
                .with_label_values(&[r.reason.as_str()])
                .inc();
            self.warn_limited(source, topic, r);
            let rec = Record::new(source, topic, payload, r);
            // Serializing a struct of strings and numbers cannot fail.
            if serde_json::to_writer(&mut buf, &rec).is_ok() {
                buf.push(b'\n');
            }
        }
        let result = (|| -> std::io::Result<()> {
            let mut f = match self.file.lock() {
                Ok(f) => f,
                Err(p) => p.into_inner(),
            };
            f.write_all(&buf)?;
            f.sync_data()
        })();
        match result {
            Ok(()) => {
                self.metrics
                    .deadletter_records
                    .inc_by(rejections.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .deadletter_errors
                    .inc_by(rejections.len() as u64);
                tracing::error!(path = %self.path.display(), error = %e, "cannot write dead-letter records; message left unacknowledged");
                Err(e.into())
            }
        }
    }

    fn warn_limited(&self, source: Source, topic: &str, r: &Rejection) {
        let mut map = match self.last_warn.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
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
