//! Importing history: a bureau adopting enviromon has years of data in vendors' CSV and Excel
//! exports, data loggers' HJ 212 captures and line-protocol dumps. An import reads such a file as
//! a stream and sends its readings down the live path: the same validation (`pipeline::validate`,
//! `ingest::hj212`), the same dead-letter file for what is refused, the same spool and store.
//! Then, whatever their age, their hours are queued for the standards' background re-evaluation
//! (`Engine::ingest_history`, `standards::runner::Backfill`).
//!
//! - **Formats**: [`csv`] and [`xlsx`] tables in a long or wide layout ([`mapping`]), [`hj212`]
//!   captures, [`lineproto`] line protocol.
//! - **Durable before counted**: readings go in envelopes of [`BATCH`] on the pipeline channel,
//!   at most [`IN_FLIGHT`] at a time (so live sources always find room); a batch counts as
//!   stored once the spooler has fsynced it, and only then does the job's position move.
//! - **Idempotent**: stores keep one copy per (sensor, quantity, time, period). With the embedded
//!   store a value already stored with the same value, unit and flag is a duplicate and is not
//!   sent again; a file imported to the end (same content digest, the `key`) is not read again
//!   unless forced.
//! - **Resumable**: a job's position (the last row whose readings are durable) is kept in the
//!   database; importing the same file again continues after it.
//! - **Memory**: rows are read as they arrive (a text line is at most [`MAX_LINE`]); what is
//!   held is the batches in flight.

pub mod client;
pub mod csv;
pub mod hj212;
pub mod lineproto;
pub mod mapping;
pub mod xlsx;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::ingest::hj212::keys::Keystore;
use crate::metrics::Metrics;
use crate::pipeline::deadletter::DeadLetter;
use crate::pipeline::validate::{validate_item, Context, Decoded};
use crate::pipeline::{Acknowledge, Envelope, RejectReason, Rejection};
use crate::reading::{Reading, Source};
use crate::registry::{Registry, RegistryHandle, Sensor, SensorStatus};
use crate::standards::engine::Engine;
use crate::store::embedded::EmbeddedReader;
use crate::sync::lock;

/// Readings per envelope.
pub const BATCH: usize = 5000;
/// Envelopes of one import on the channel or the spooler at once.
pub const IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read as asked (header, mapping, layout): nothing of it was imported.
    #[error("{0}")]
    Layout(String),
    #[error("reading the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("XLSX: {0}")]
    Xlsx(String),
    #[error(
        "the daemon is stopping; rows up to {0} are imported (import the file again to go on)"
    )]
    Stopping(u64),
    #[error("dead-letter file: {0}")]
    DeadLetter(#[from] crate::pipeline::deadletter::DeadLetterError),
    #[error("standards: {0}")]
    Standards(#[from] crate::standards::engine::EngineError),
    #[error("import database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("import {0} is running; one import at a time")]
    Busy(String),
    #[error("looking up stored readings: {0}")]
    Store(#[from] crate::store::embedded::EmbeddedError),
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Xlsx,
    Hj212,
    LineProtocol,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Some(Format::Csv),
            "xlsx" | "excel" => Some(Format::Xlsx),
            "hj212" | "hj 212" | "capture" => Some(Format::Hj212),
            "line" | "lp" | "line_protocol" | "line-protocol" | "influx" => {
                Some(Format::LineProtocol)
            }
            _ => None,
        }
    }

    /// By the file name's extension.
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" => Some(Format::Csv),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            "hj212" | "212" => Some(Format::Hj212),
            "lp" | "line" | "influx" => Some(Format::LineProtocol),
            _ => None,
        }
    }

    /// By the first bytes: a zip (XLSX), `##` (HJ 212), a line-protocol line, else CSV.
    pub fn sniff(head: &[u8]) -> Format {
        let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        if head.starts_with(b"PK\x03\x04") {
            Format::Xlsx
        } else if text.contains("##") && text.contains("CP=&&") {
            Format::Hj212
        } else if lineproto::parse_line(first)
            .is_ok_and(|l| l.ts.is_some() && l.tags.iter().any(|(k, _)| k == "sensor"))
        {
            Format::LineProtocol
        } else {
            Format::Csv
        }
    }
}

/// How to read one file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The file's name (for messages, the dead-letter records and the format by extension).
    pub name: String,
    pub format: Option<Format>,
    pub mapping: Option<mapping::Mapping>,
    /// The file's content digest (SHA-256, hex): what makes an import resumable and a finished
    /// one recognised.
    pub key: Option<String>,
    /// Read a file imported to the end again (duplicates are still not stored twice).
    pub force: bool,
    pub precision: Option<lineproto::Precision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
    AlreadyImported,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::AlreadyImported => "already_imported",
        }
    }
}

/// What an import did (and, while it runs, has done so far); kept as JSON with its job.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub job: String,
    pub name: String,
    pub format: Option<Format>,
    pub state: JobState,
    pub started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Rows (CSV/XLSX data rows, HJ 212 frames, line-protocol lines) read.
    pub rows: u64,
    /// The last row whose readings are durable: where a resumed import goes on.
    pub position: u64,
    /// Rows skipped because an earlier run of this file had imported them.
    pub already_imported: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_after_row: Option<u64>,
    /// Values: valid ones, stored (durable in the spool, on their way to the store), already
    /// stored with the same value and flag, empty cells, refused (by reason).
    pub values: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub empty: u64,
    pub refused: BTreeMap<String, u64>,
    /// Stored readings older than the embedded store's retention (it will delete them; the
    /// standards' results stay).
    pub older_than_retention: u64,
    /// HJ 212 frames that were not monitoring data, and bytes between frames.
    pub not_data: u64,
    pub garbage_bytes: u64,
    /// Earliest and latest reading stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Hours (of a unit, station or analyser) queued for re-evaluation by the standards. An hour
    /// whose readings span two batches may be re-evaluated between them and queued again: it is
    /// counted (and recomputed) twice.
    pub hours_queued: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Summary {
    fn new(job: &str, name: &str) -> Summary {
        Summary {
            job: job.to_string(),
            name: name.to_string(),
            format: None,
            state: JobState::Running,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            finished: None,
            rows: 0,
            position: 0,
            already_imported: 0,
            resumed_after_row: None,
            values: 0,
            stored: 0,
            duplicates: 0,
            empty: 0,
            refused: BTreeMap::new(),
            older_than_retention: 0,
            not_data: 0,
            garbage_bytes: 0,
            first: None,
            last: None,
            hours_queued: 0,
            seconds: 0.0,
            error: None,
            notes: Vec::new(),
        }
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// A running or finished import.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    resume_after: u64,
    started: Instant,
    summary: Mutex<Summary>,
}

impl Job {
    pub fn summary(&self) -> Summary {
        let mut s = lock(&self.summary).clone();
        if s.state == JobState::Running {
            s.seconds = self.started.elapsed().as_secs_f64();
        }
        s
    }
}

/// What `begin` decided.
#[derive(Debug)]
pub enum Begun {
    Run(Arc<Job>),
    /// The file (same digest) was imported to the end before: nothing to do.
    Already(Box<Summary>),
}

/// The daemon's importer (one import at a time).
pub struct Importer {
    registry: RegistryHandle,
    tx: Mutex<Option<mpsc::Sender<Envelope>>>,
    closed: std::sync::atomic::AtomicBool,
    deadletter: Arc<DeadLetter>,
    metrics: Metrics,
    engine: Option<Arc<Engine>>,
    reader: Option<EmbeddedReader>,
    keys: Arc<Keystore>,
    max_future_skew: Duration,
    retention: Option<Duration>,
    wake: Arc<tokio::sync::Notify>,
    db: Mutex<Connection>,
    tmp_dir: PathBuf,
    current: Mutex<Option<Arc<Job>>>,
}

/// Everything the importer is handed at start.
pub struct Parts {
    pub registry: RegistryHandle,
    pub tx: mpsc::Sender<Envelope>,
    pub deadletter: Arc<DeadLetter>,
    pub metrics: Metrics,
    pub engine: Option<Arc<Engine>>,
    /// The embedded store's reader (duplicates are recognised there), when it is the store.
    pub reader: Option<EmbeddedReader>,
    pub keys: Arc<Keystore>,
    pub max_future_skew: Duration,
    /// The embedded store's retention, when it deletes old readings.
    pub retention: Option<Duration>,
    /// Woken when hours are queued for re-evaluation.
    pub wake: Arc<tokio::sync::Notify>,
    pub db_path: PathBuf,
    /// Where an uploaded workbook waits while it is read (XLSX needs to seek).
    pub tmp_dir: PathBuf,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug)]
struct Acked(oneshot::Sender<()>);

impl Acknowledge for Acked {
    fn ack(self: Box<Self>) {
        let _ = self.0.send(());
    }
}

impl Importer {
    /// Open the importer; imports a previous run left running are marked failed (resumable).
    pub fn open(p: Parts) -> Result<Importer, ImportError> {
        let conn = crate::db::open(&p.db_path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS import_jobs (id TEXT PRIMARY KEY, key TEXT, name TEXT NOT NULL,
             state TEXT NOT NULL, position INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL,
             summary TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS import_jobs_key ON import_jobs (key, started_ms);",
        )?;
        conn.execute(
            "UPDATE import_jobs SET state = 'failed' WHERE state = 'running'",
            [],
        )?;
        Ok(Importer {
            registry: p.registry,
            tx: Mutex::new(Some(p.tx)),
            closed: std::sync::atomic::AtomicBool::new(false),
            deadletter: p.deadletter,
            metrics: p.metrics,
            engine: p.engine,
            reader: p.reader,
            keys: p.keys,
            max_future_skew: p.max_future_skew,
            retention: p.retention,
            wake: p.wake,
            db: Mutex::new(conn),
            tmp_dir: p.tmp_dir,
            current: Mutex::new(None),
        })
    }

    /// Stop taking imports: the pipeline channel is let go at once (a running import holds it
    /// only weakly), so the daemon's drain can finish. A running import stops at its next row;
    /// what the spool holds stays imported and its position is kept.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        lock(&self.tx).take();
    }

    /// Hours of imported history waiting for re-evaluation.
    pub fn reevaluation_pending(&self) -> Option<u64> {
        self.engine.as_ref().and_then(|e| e.backfill_pending().ok())
    }

    /// Start an import of `opts` (blocking: SQLite).
    pub fn begin(&self, opts: &Options) -> Result<Begun, ImportError> {
        let mut current = lock(&self.current);
        if let Some(j) = current.as_ref() {
            return Err(ImportError::Busy(j.id.clone()));
        }
        let mut resume_after = 0;
        if let Some(key) = &opts.key {
            let last: Option<(String, String, i64)> = lock(&self.db)
                .query_row(
                    "SELECT id, state, position FROM import_jobs WHERE key = ?1 ORDER BY started_ms DESC LIMIT 1",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match last {
                Some((id, state, _)) if state == "done" && !opts.force => {
                    let s = self.already_summary(&id, &opts.name)?;
                    self.metrics
                        .imports
                        .with_label_values(&["already_imported"])
                        .inc();
                    return Ok(Begun::Already(Box::new(s)));
                }
                Some((_, state, position)) if state != "done" => {
                    resume_after = u64::try_from(position).unwrap_or(0)
                }
                _ => {}
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let id = format!("imp-{now}-{:04x}", rand::random::<u16>());
        let mut summary = Summary::new(&id, &opts.name);
        if resume_after > 0 {
            summary.resumed_after_row = Some(resume_after);
        }
        let job = Arc::new(Job {
            id: id.clone(),
            resume_after,
            started: Instant::now(),
            summary: Mutex::new(summary.clone()),
        });
        lock(&self.db).execute(
            "INSERT INTO import_jobs (id, key, name, state, position, started_ms, summary) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
            params![id, opts.key, opts.name, resume_after as i64, now, serde_json::to_string(&summary).unwrap_or_default()],
        )?;
        *current = Some(job.clone());
        Ok(Begun::Run(job))
    }

    /// What importing the file with content digest `key` again would do when it was imported to
    /// the end before: nothing (its summary says so). `None`: it would be read (new, or resumed).
    pub fn already(&self, key: &str, name: &str) -> Result<Option<Summary>, ImportError> {
        let last: Option<(String, String)> = lock(&self.db)
            .query_row(
                "SELECT id, state FROM import_jobs WHERE key = ?1 ORDER BY started_ms DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match last {
            Some((id, state)) if state == "done" => Ok(Some(self.already_summary(&id, name)?)),
            _ => Ok(None),
        }
    }

    fn already_summary(&self, id: &str, name: &str) -> Result<Summary, ImportError> {
        let before = self
            .stored_summary(id)?
            .unwrap_or_else(|| Summary::new(id, name));
        // This run: nothing read, nothing stored; every row was imported before.
        let mut s = Summary::new(id, name);
        s.format = before.format;
        s.state = JobState::AlreadyImported;
        s.finished = before.finished.clone();
        s.rows = before.rows;
        s.position = before.position;
        s.already_imported = before.rows;
        s.first = before.first.clone();
        s.last = before.last.clone();
        let at = before.finished.clone().unwrap_or_default();
        s.notes.push(format!(
            "已于 {at} 导入（任务 {id}），未重复导入；--force 可重新读取 / imported to the end by job {id} at {at}; not read again (--force reads it again; stored values are not duplicated)"
        ));
        Ok(s)
    }

    fn stored_summary(&self, id: &str) -> Result<Option<Summary>, ImportError> {
        let doc: Option<String> = lock(&self.db)
            .query_row("SELECT summary FROM import_jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(doc.and_then(|d| serde_json::from_str::<Summary>(&d).ok()))
    }

    /// The running import, then the last `limit` finished ones, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Summary>, ImportError> {
        let mut out = Vec::new();
        let running = lock(&self.current).clone();
        if let Some(j) = &running {
            out.push(j.summary());
        }
        let docs: Vec<(String, String)> = {
            let db = lock(&self.db);
            let mut stmt = db
                .prepare("SELECT id, summary FROM import_jobs ORDER BY started_ms DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, doc) in docs {
            if running.as_ref().is_some_and(|j| j.id == id) {
                continue;
            }
            if let Ok(s) = serde_json::from_str::<Summary>(&doc) {
                out.push(s);
            }
        }
        out.truncate(limit.max(1));
        Ok(out)
    }

    /// One import by id.
    pub fn job(&self, id: &str) -> Result<Option<Summary>, ImportError> {
        if let Some(j) = lock(&self.current).as_ref().filter(|j| j.id == id) {
            return Ok(Some(j.summary()));
        }
        self.stored_summary(id)
    }

    /// [`Importer::begin`], then (when there is something to read) [`Importer::run`] over the
    /// chunks `rx` brings, in one blocking task: `begun` hears what `begin` decided. Whatever
    /// happens to the caller (an HTTP handler dropped when its client goes away), a job begun is
    /// run, and the one-import slot is given back.
    pub fn begin_and_run(
        self: &Arc<Self>,
        opts: Options,
        rx: mpsc::Receiver<Chunk>,
        begun: oneshot::Sender<Result<Option<Box<Summary>>, ImportError>>,
    ) -> tokio::task::JoinHandle<Option<Summary>> {
        let imp = self.clone();
        tokio::task::spawn_blocking(move || match imp.begin(&opts) {
            Ok(Begun::Run(job)) => {
                let _ = begun.send(Ok(None));
                Some(imp.run(&job, &opts, ChannelReader::new(rx)))
            }
            Ok(Begun::Already(s)) => {
                let _ = begun.send(Ok(Some(s)));
                None
            }
            Err(e) => {
                let _ = begun.send(Err(e));
                None
            }
        })
    }

    /// Run `job` over `input` (blocking: call from `spawn_blocking`). Always returns the summary;
    /// a failure is in its `error` (rows up to its `position` are imported).
    pub fn run(&self, job: &Arc<Job>, opts: &Options, input: impl Read) -> Summary {
        let result = self.read(job, opts, input);
        let mut s = job.summary();
        s.finished = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        s.seconds = job.started.elapsed().as_secs_f64();
        match result {
            Ok(()) => s.state = JobState::Done,
            Err(e) => {
                s.state = JobState::Failed;
                s.error = Some(e.to_string());
            }
        }
        if let Some(r) = self.retention {
            if s.older_than_retention > 0 {
                s.notes.push(format!(
                    "{} 个值早于嵌入式存储的保留期（{}），将被保留任务删除；标准计算结果保留 / {} values are older than store.embedded.retention ({}): retention will delete them from the embedded store (the standards' results stay); raise it (or set \"0s\") to keep them",
                    s.older_than_retention,
                    humantime::format_duration(r),
                    s.older_than_retention,
                    humantime::format_duration(r)
                ));
            }
        }
        if s.hours_queued > 0 && self.engine.is_some() {
            s.notes.push(format!(
                "{} 个小时已排队重新计算（后台进行，见 GET /api/v1/imports）/ {} hours queued for re-evaluation by the standards (in the background: GET /api/v1/imports)",
                s.hours_queued, s.hours_queued
            ));
        }
        *lock(&job.summary) = s.clone();
        self.metrics
            .imports
            .with_label_values(&[if s.state == JobState::Done {
                "done"
            } else {
                "failed"
            }])
            .inc();
        if let Err(e) = lock(&self.db).execute(
            "UPDATE import_jobs SET state = ?2, position = ?3, summary = ?4 WHERE id = ?1",
            params![
                job.id,
                s.state.as_str(),
                s.position as i64,
                serde_json::to_string(&s).unwrap_or_default()
            ],
        ) {
            tracing::error!(job = %job.id, error = %e, "import: cannot record the job's end");
        }
        tracing::info!(job = %job.id, file = %s.name, state = s.state.as_str(), rows = s.rows, stored = s.stored, duplicates = s.duplicates, refused = s.refused_total(), "import finished");
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|j| j.id == job.id) {
            *current = None;
        }
        s
    }

    fn read(&self, job: &Arc<Job>, opts: &Options, input: impl Read) -> Result<(), ImportError> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let format = match opts.format.or_else(|| Format::from_name(&opts.name)) {
            Some(f) => f,
            None => Format::sniff(input.fill_buf()?),
        };
        lock(&job.summary).format = Some(format);
        let tx = lock(&self.tx)
            .as_ref()
            .map(mpsc::Sender::downgrade)
            .ok_or(ImportError::Stopping(job.resume_after))?;
        let mut sink = Sink::new(self, job, tx);
        let mapping = opts.mapping.clone().unwrap_or_default();
        let read = match format {
            Format::Csv => csv::import(
                BufReader::with_capacity(256 * 1024, LineLimit::new(input)),
                &mapping,
                &mut sink,
            ),
            Format::LineProtocol => lineproto::import(
                BufReader::with_capacity(256 * 1024, LineLimit::new(input)),
                opts.precision,
                &mut sink,
            ),
            Format::Hj212 => hj212::import(input, &mut sink),
            Format::Xlsx => self.xlsx(job, input, &mapping, &mut sink),
        };
        // What was read is made durable (and counted) even when reading failed half-way.
        let finished = sink.finish();
        read.and(finished)
    }

    fn xlsx(
        &self,
        job: &Job,
        mut input: impl Read,
        mapping: &mapping::Mapping,
        sink: &mut Sink<'_>,
    ) -> Result<(), ImportError> {
        std::fs::create_dir_all(&self.tmp_dir)?;
        let path = self.tmp_dir.join(format!("{}.xlsx", job.id));
        let copied = (|| -> Result<(), ImportError> {
            let mut f = std::fs::File::create(&path)?;
            std::io::copy(&mut input, &mut f)?;
            Ok(())
        })();
        let result = copied.and_then(|()| xlsx::import(&path, mapping, sink));
        let _ = std::fs::remove_file(&path);
        result
    }
}

/// A batch on its way to the spool.
struct InFlight {
    /// `None`: nothing was sent (every reading already stored).
    ack: Option<oneshot::Receiver<()>>,
    /// Readings sent to the spool (the rest were duplicates).
    sent: u64,
    /// Every valid reading of the batch, for the standards.
    readings: Vec<Reading>,
    last_row: u64,
}

/// Where a format's rows go: validation, refusals, batching, acknowledgement, position.
pub struct Sink<'a> {
    imp: &'a Importer,
    job: &'a Arc<Job>,
    /// Weak: the importer's [`Importer::close`] lets the channel go at once, so the daemon's
    /// drain never waits on an import (a strong sender is held only while a batch is sent).
    tx: mpsc::WeakSender<Envelope>,
    reg: Arc<Registry>,
    ctx: Context,
    /// Registered sensors as of now, taken as active: history of a sensor under maintenance or
    /// retired today is still its history.
    sensors: HashMap<String, Option<Sensor>>,
    batch: Vec<Reading>,
    inflight: VecDeque<InFlight>,
    /// The last row handed in; rows up to it are in a batch, in flight or done.
    last_row: u64,
    retention_cutoff: Option<i64>,
    last_progress: Instant,
    /// The first row of a split HJ 212 packet still waiting for its other parts: the position
    /// stays before it, so a resumed import reads the whole packet again.
    hold: Option<u64>,
}

impl<'a> Sink<'a> {
    fn new(imp: &'a Importer, job: &'a Arc<Job>, tx: mpsc::WeakSender<Envelope>) -> Sink<'a> {
        let now = chrono::Utc::now();
        Sink {
            imp,
            job,
            tx,
            reg: imp.registry.snapshot(),
            ctx: Context {
                now,
                max_future_skew: chrono::Duration::from_std(imp.max_future_skew)
                    .unwrap_or(chrono::Duration::minutes(5)),
                source: Source::Import,
            },
            sensors: HashMap::new(),
            batch: Vec::with_capacity(BATCH),
            inflight: VecDeque::new(),
            last_row: job.resume_after,
            retention_cutoff: imp
                .retention
                .map(|r| now.timestamp_millis() - i64::try_from(r.as_millis()).unwrap_or(i64::MAX)),
            last_progress: Instant::now(),
            hold: None,
        }
    }

    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// Keep the position before `row` (`None`: no hold).
    pub fn hold_position_from(&mut self, row: Option<u64>) {
        self.hold = row;
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn now_ms(&self) -> i64 {
        self.ctx.now.timestamp_millis()
    }

    pub fn keys(&self) -> &Keystore {
        &self.imp.keys
    }

    fn as_active(s: &Sensor) -> Sensor {
        let mut s = s.clone();
        s.status = SensorStatus::Active;
        s
    }

    /// The sensor registered as `id`.
    pub fn sensor(&mut self, id: &str) -> Result<&Sensor, Rejection> {
        if !self.sensors.contains_key(id) {
            let s = self.reg.sensors.get(id).map(Self::as_active);
            self.sensors.insert(id.to_string(), s);
        }
        self.sensors
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| unknown_sensor(id))
    }

    /// The sensor whose HJ 212 MN is `mn`.
    pub fn sensor_for_mn(&mut self, mn: &str) -> Result<Sensor, Rejection> {
        self.reg
            .sensor_for_mn(mn)
            .map(Self::as_active)
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownTopic,
                    format!("no sensor is registered for MN {mn:?}"),
                )
            })
    }

    /// Whether row `row` was imported by an earlier run of this file (then it is counted and
    /// skipped).
    pub fn skip(&mut self, row: u64) -> bool {
        if row <= self.job.resume_after {
            let mut s = lock(&self.job.summary);
            s.rows = row;
            s.already_imported += 1;
            s.position = self.job.resume_after;
            return true;
        }
        false
    }

    pub fn note_garbage(&mut self, bytes: usize) {
        lock(&self.job.summary).garbage_bytes += bytes as u64;
    }

    pub fn note_not_data(&mut self) {
        lock(&self.job.summary).not_data += 1;
    }

    /// A row refused whole.
    pub fn refuse(&mut self, row: u64, r: Rejection, raw: &[u8]) -> Result<(), ImportError> {
        self.row(
            row,
            Decoded {
                readings: Vec::new(),
                rejections: vec![r],
            },
            raw,
            0,
        )
    }

    /// A table row's items: validated against their sensors' channels, then as [`Sink::row`].
    pub fn table_row(
        &mut self,
        row: u64,
        items: mapping::RowItems,
        raw: impl FnOnce() -> String,
    ) -> Result<(), ImportError> {
        let mut d = Decoded::default();
        if let Some(r) = items.refused {
            d.rejections.push(r);
        }
        let ctx = self.ctx;
        for (sensor, item) in &items.items {
            match self.sensor(sensor) {
                Ok(s) => match validate_item(s, item, &ctx) {
                    Ok(r) => d.readings.push(r),
                    Err(r) => d.rejections.push(r),
                },
                Err(r) => d.rejections.push(r),
            }
        }
        let text = if d.rejections.is_empty() {
            String::new()
        } else {
            raw()
        };
        self.row(row, d, text.as_bytes(), items.empty)
    }

    /// One row's outcome: refusals to the dead-letter file (durably, before the row counts),
    /// readings into the batch.
    pub fn row(&mut self, row: u64, d: Decoded, raw: &[u8], empty: u64) -> Result<(), ImportError> {
        if self.imp.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ImportError::Stopping(self.job.summary().position));
        }
        if !d.rejections.is_empty() {
            let topic = format!("import/{}#{row}", lock(&self.job.summary).name);
            self.imp
                .deadletter
                .reject(Source::Import, &topic, raw, &d.rejections)?;
            let mut s = lock(&self.job.summary);
            for r in &d.rejections {
                *s.refused.entry(r.reason.as_str().to_string()).or_insert(0) += 1;
            }
            self.imp
                .metrics
                .import_rows
                .with_label_values(&["refused"])
                .inc_by(d.rejections.len() as u64);
        }
        {
            let mut s = lock(&self.job.summary);
            s.rows = row;
            s.values += d.readings.len() as u64;
            s.empty += empty;
        }
        if empty > 0 {
            self.imp
                .metrics
                .import_rows
                .with_label_values(&["empty"])
                .inc_by(empty);
        }
        self.last_row = row;
        self.batch.extend(d.readings);
        if self.batch.len() >= BATCH {
            self.flush()?;
        } else if self.batch.is_empty()
            && self.inflight.is_empty()
            && self.last_progress.elapsed() > Duration::from_secs(1)
        {
            // Rows without readings (refused, empty) still move the position, once nothing
            // before them is waiting to be durable.
            self.mark_position(row)?;
        }
        Ok(())
    }

    /// Send the batch (less what is already stored), waiting for the oldest in flight when
    /// [`IN_FLIGHT`] are.
    fn flush(&mut self) -> Result<(), ImportError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch = Vec::with_capacity(BATCH);
        // What the store already holds with the same value, unit and flag is not sent again;
        // the standards get every reading all the same (their input may have been purged).
        let mut fresh = Vec::with_capacity(batch.len());
        match &self.imp.reader {
            Some(reader) if !batch.is_empty() => {
                let same = reader.same_blocking(&batch)?;
                for (r, dup) in batch.iter().zip(same) {
                    if !dup {
                        fresh.push(r.clone());
                    }
                }
                let dup = (batch.len() - fresh.len()) as u64;
                if dup > 0 {
                    lock(&self.job.summary).duplicates += dup;
                    self.imp
                        .metrics
                        .import_rows
                        .with_label_values(&["duplicate"])
                        .inc_by(dup);
                }
            }
            _ => fresh.clone_from(&batch),
        }
        while self.inflight.len() >= IN_FLIGHT {
            self.complete_oldest()?;
        }
        let last_row = self.last_row;
        let sent = fresh.len() as u64;
        if fresh.is_empty() {
            // Nothing to make durable: only the standards' part, in order with the rest.
            self.inflight.push_back(InFlight {
                ack: None,
                sent: 0,
                readings: batch,
                last_row,
            });
            return Ok(());
        }
        let tx = match self.tx.upgrade() {
            Some(tx) if !self.imp.closed.load(std::sync::atomic::Ordering::SeqCst) => tx,
            _ => return Err(ImportError::Stopping(self.job.summary().position)),
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        let env = Envelope {
            readings: fresh,
            ack: Some(Box::new(Acked(ack_tx))),
        };
        if tx.blocking_send(env).is_err() {
            return Err(ImportError::Stopping(self.job.summary().position));
        }
        drop(tx);
        self.inflight.push_back(InFlight {
            ack: Some(ack_rx),
            sent,
            readings: batch,
            last_row,
        });
        Ok(())
    }

    /// Wait until the oldest batch is durable; then hand it to the standards and move the position.
    fn complete_oldest(&mut self) -> Result<(), ImportError> {
        let Some(f) = self.inflight.pop_front() else {
            return Ok(());
        };
        if let Some(ack) = f.ack {
            if ack.blocking_recv().is_err() {
                // The spooler let the batch go without storing it: the daemon is stopping.
                return Err(ImportError::Stopping(self.job.summary().position));
            }
        }
        let mut hours = 0;
        if let Some(engine) = &self.imp.engine {
            let mut tries = 0;
            loop {
                match engine.ingest_history(&f.readings) {
                    Ok((_, queued)) => {
                        hours = queued;
                        break;
                    }
                    Err(e) if e.is_transient() && tries < 20 => {
                        tries += 1;
                        tracing::warn!(error = %e, "import: standards busy; retrying");
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if hours > 0 {
                self.imp.wake.notify_one();
            }
        }
        let n = f.sent;
        let old = match self.retention_cutoff {
            Some(cut) => f.readings.iter().filter(|r| r.ts_ms() < cut).count() as u64,
            None => 0,
        };
        let (lo, hi) = f.readings.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
            (lo.min(r.ts_ms()), hi.max(r.ts_ms()))
        });
        {
            let mut s = lock(&self.job.summary);
            s.stored += n;
            s.older_than_retention += old;
            s.hours_queued += hours as u64;
            if lo <= hi {
                let first = rfc3339(lo);
                let last = rfc3339(hi);
                if s.first.as_ref().is_none_or(|f| *f > first) {
                    s.first = Some(first);
                }
                if s.last.as_ref().is_none_or(|l| *l < last) {
                    s.last = Some(last);
                }
            }
        }
        self.imp
            .metrics
            .import_rows
            .with_label_values(&["stored"])
            .inc_by(n);
        self.mark_position(f.last_row)
    }

    /// Rows up to `row` are done: keep that (a resumed import goes on after it).
    fn mark_position(&mut self, row: u64) -> Result<(), ImportError> {
        let row = match self.hold {
            Some(h) => row.min(h.saturating_sub(1)),
            None => row,
        };
        let summary = {
            let mut s = lock(&self.job.summary);
            if row <= s.position {
                return Ok(());
            }
            s.position = row;
            s.seconds = self.job.started.elapsed().as_secs_f64();
            s.clone()
        };
        self.last_progress = Instant::now();
        lock(&self.imp.db).execute(
            "UPDATE import_jobs SET position = ?2, summary = ?3 WHERE id = ?1",
            params![
                self.job.id,
                row as i64,
                serde_json::to_string(&summary).unwrap_or_default()
            ],
        )?;
        Ok(())
    }

    /// The rest of the file: the last batch sent and every batch durable.
    fn finish(mut self) -> Result<(), ImportError> {
        let flushed = self.flush();
        while !self.inflight.is_empty() {
            self.complete_oldest()?;
        }
        flushed?;
        let last = self.last_row;
        self.mark_position(last)
    }
}

fn unknown_sensor(id: &str) -> Rejection {
    Rejection::new(
        RejectReason::UnknownTopic,
        format!("no sensor is registered as {id:?} (register it first, or map the file's name for it in sensor_values)"),
    )
}

/// The longest line a text file may have: a file that is one endless line (or not text at all)
/// is refused instead of being held in memory.
pub const MAX_LINE: usize = 16 << 20;

/// A `Read` that fails once more than [`MAX_LINE`] bytes pass without a newline.
pub struct LineLimit<R> {
    inner: R,
    since_newline: usize,
}

impl<R: Read> LineLimit<R> {
    pub fn new(inner: R) -> Self {
        LineLimit {
            inner,
            since_newline: 0,
        }
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match buf[..n].iter().rposition(|b| *b == b'\n') {
            Some(i) => self.since_newline = n - i - 1,
            None => self.since_newline += n,
        }
        if self.since_newline > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a line longer than {} MiB: not a table of readings",
                    MAX_LINE >> 20
                ),
            ));
        }
        Ok(n)
    }
}

/// What the HTTP side sends the blocking importer: the body's bytes, then its end (or why it
/// broke off). A channel that closes without [`Chunk::End`] is an upload cut off (the client
/// went away): never the end of the file.
#[derive(Debug)]
pub enum Chunk {
    Data(bytes::Bytes),
    End,
    Failed(String),
}

/// A `Read` over [`Chunk`]s sent from async code (an HTTP body), for the blocking importer.
pub struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: bytes::Bytes,
    ended: bool,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(std::io::Error::other(e)),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload stopped before the end of the file (the client went away)",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_line_is_refused_and_long_files_of_short_lines_are_not() {
        let endless = vec![b'x'; MAX_LINE + 10];
        let mut out = Vec::new();
        let e = std::io::copy(&mut LineLimit::new(&endless[..]), &mut out).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let many: Vec<u8> = b"2026-01-01T00:00:00Z,s,SO2,1\n".repeat(MAX_LINE / 10);
        let mut out = Vec::new();
        assert_eq!(
            std::io::copy(&mut LineLimit::new(&many[..]), &mut out).unwrap() as usize,
            many.len()
        );
    }
}
