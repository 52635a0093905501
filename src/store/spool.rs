//! The spool: a durable, bounded, checksummed FIFO on local disk between ingest and the store.
//!
//! Sources' readings are appended here and acknowledged (to the broker, to the Modbus poller) once
//! the append is durable; the store writer reads them in order, writes them to the store, and only
//! then commits its position. So a reading acknowledged to the broker or read from a device is in
//! the spool or in the store, across crashes, restarts and outages. Design and crash window:
//! `ARCHITECTURE.md` § Spool.
//!
//! Layout of `spool/`:
//! - `NNNNNNNNNNNNNNNN.seg`: segments, appended in order; a new one starts at `segment_bytes`.
//! - `ledger`: `"{segment} {offset}\n"`, the first byte not yet stored; replaced atomically
//!   (write temp, fsync, rename, fsync dir) after every store success.
//!
//! A record: magic `ENVM` (u32 LE) | payload length (u32 LE) | CRC-32 of (append time ‖ payload)
//! (u32 LE) | append time, epoch ms (i64 LE) | payload: the readings in the compact binary form of
//! [`encode_readings`] (tag byte `0xB1`), or a JSON array (what versions before it wrote; still
//! read). The binary form is what made the spool cheap: JSON encoding and decoding of every
//! reading was a third of the daemon's CPU under load (issue 10's profile).
//! Recovery: a record that does not check (torn write, flipped bytes) is skipped by scanning for the
//! next magic whose record checks; an unreadable tail of the last segment is truncated so new
//! appends start on a clean boundary. Every skipped region is counted and logged.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{TimeZone, Utc};

use crate::reading::{DataFlag, Domain, Period, Reading, Source};

const MAGIC: u32 = 0x4D56_4E45; // "ENVM" little-endian
const HEADER: usize = 20;
/// Larger lengths are corruption, not records.
const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool record encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("spool record encoding: {0} is longer than a record field allows")]
    TooLong(&'static str),
}

impl SpoolError {
    /// The disk (or the quota) is full: appends fail until space is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
                || source.raw_os_error() == Some(28))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A position in the spool: segment id and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// When appends are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append batch, before it is acknowledged: nothing acknowledged is lost even on power loss.
    Batch,
    /// Only when `sync()` is called (by a timer): a process crash loses nothing (the data is in the
    /// OS page cache), a power loss may lose the appends since the last sync.
    Interval,
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub appended_ms: i64,
    pub readings: Vec<Reading>,
}

/// A batch of records read from the spool, with the position just after it.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub end: Position,
    /// Spool bytes the batch covers.
    pub bytes: u64,
}

impl Batch {
    pub fn readings(&self) -> usize {
        self.records.iter().map(|r| r.readings.len()).sum()
    }
}

/// What `stats()` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Bytes appended but not yet stored.
    pub unstored_bytes: u64,
    pub segments: usize,
    /// Records skipped because they did not check (since start).
    pub corrupt_records: u64,
    /// Bytes skipped with them.
    pub corrupt_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    /// Segment id → its size on disk.
    segments: BTreeMap<u64, u64>,
    active: File,
    active_id: u64,
    /// First byte not yet read by the store writer.
    read: Position,
    /// First byte not yet stored (the ledger).
    committed: Position,
    corrupt_records: u64,
    corrupt_bytes: u64,
    dirty: bool,
    /// An append could not cut a failed write back: the next append starts a new segment.
    must_rotate: bool,
    /// The ledger is behind `committed` (its write failed): the next commit writes it.
    ledger_stale: bool,
    /// Where the last `read_batch` stopped, with the segment still open there: the next batch
    /// goes on from it instead of seeking again.
    cursor: Option<ReadCursor>,
}

/// An open segment file positioned at `offset`.
#[derive(Debug)]
struct ReadCursor {
    segment: u64,
    offset: u64,
    file: File,
}

/// Read the record at the file's position, `room` bytes before the segment's known end, into
/// `buf`. `Ok(None)`: what is there does not check (or the segment ends inside it). Reads only
/// the record's own bytes (its header, then the length the header gives), never past `room`:
/// bytes beyond the segment's known length may be an append still being written or one that
/// failed and was cut back.
fn read_record(
    file: &mut File,
    room: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Record, usize)>> {
    if room < HEADER as u64 {
        return Ok(None);
    }
    buf.resize(HEADER, 0);
    file.read_exact(&mut buf[..HEADER])?;
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let len = word(buf, 4) as usize;
    if word(buf, 0) != MAGIC || len > MAX_RECORD || (HEADER + len) as u64 > room {
        return Ok(None);
    }
    buf.resize(HEADER + len, 0);
    file.read_exact(&mut buf[HEADER..])?;
    Ok(decode_at(buf, 0))
}

/// The spool. All methods do blocking file I/O: call them from `spawn_blocking`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    policy: FsyncPolicy,
    inner: Mutex<Inner>,
    /// Published by every operation; read without waiting for I/O.
    view: Mutex<View>,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn crc(appended_ms: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&appended_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Encode one record.
pub fn encode_record(
    appended_ms: i64,
    readings: &[Reading],
    out: &mut Vec<u8>,
) -> Result<(), SpoolError> {
    let mut payload = Vec::with_capacity(16 + readings.len() * 64);
    encode_readings(readings, &mut payload)?;
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(appended_ms, &payload).to_le_bytes());
    out.extend_from_slice(&appended_ms.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Tag of the binary payload (a JSON payload starts with `[`).
const BINARY_V1: u8 = 0xB1;

/// Binary payload: tag `0xB1`, count (u32 LE), then per reading: sensor, site (strings), domain
/// (u8), quantity (string), value (f64 LE), unit (string), ts (epoch ms, i64 LE), flag, source,
/// period (u8 each, index in [`DataFlag::ALL`], [`SOURCES`], [`PERIODS`]) and ts_assumed (u8).
/// A string is its length (u16 LE) and UTF-8 bytes.
pub fn encode_readings(readings: &[Reading], out: &mut Vec<u8>) -> Result<(), SpoolError> {
    fn string(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), SpoolError> {
        let n = u16::try_from(s.len()).map_err(|_| SpoolError::TooLong(what))?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    out.push(BINARY_V1);
    let n = u32::try_from(readings.len()).map_err(|_| SpoolError::TooLong("a batch"))?;
    out.extend_from_slice(&n.to_le_bytes());
    for r in readings {
        string(out, &r.sensor, "a sensor id")?;
        string(out, &r.site, "a site id")?;
        out.push(DOMAINS.iter().position(|d| *d == r.domain).unwrap_or(0) as u8);
        string(out, &r.quantity, "a quantity")?;
        out.extend_from_slice(&r.value.to_le_bytes());
        string(out, &r.unit, "a unit")?;
        out.extend_from_slice(&r.ts_ms().to_le_bytes());
        out.push(DataFlag::ALL.iter().position(|f| *f == r.flag).unwrap_or(0) as u8);
        out.push(SOURCES.iter().position(|x| *x == r.source).unwrap_or(0) as u8);
        out.push(PERIODS.iter().position(|x| *x == r.period).unwrap_or(0) as u8);
        out.push(u8::from(r.ts_assumed));
    }
    Ok(())
}

/// Indexes are the record format: append new domains, never reorder.
const DOMAINS: [Domain; 5] = [
    Domain::Cems,
    Domain::Air,
    Domain::Water,
    Domain::Power,
    Domain::Production,
];
const SOURCES: [Source; 5] = [
    Source::Mqtt,
    Source::Modbus,
    Source::Hj212,
    Source::Api,
    Source::Import,
];
const PERIODS: [Period; 4] = [Period::Instant, Period::Minute, Period::Hour, Period::Day];

/// Decode a record's payload (binary or the older JSON); `None` if it does not parse.
pub fn decode_readings(payload: &[u8]) -> Option<Vec<Reading>> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }
        fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }
        fn string(&mut self) -> Option<String> {
            let n = u16::from_le_bytes(self.array()?) as usize;
            std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
        }
    }
    match payload.first() {
        Some(b'[') => return serde_json::from_slice(payload).ok(),
        Some(&BINARY_V1) => {}
        _ => return None,
    }
    let mut c = Cursor(&payload[1..]);
    let n = u32::from_le_bytes(c.array()?) as usize;
    // Each reading takes at least 30 bytes: a count beyond that is corruption.
    if n > payload.len() / 30 + 1 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sensor = c.string()?;
        let site = c.string()?;
        let domain = *DOMAINS.get(c.u8()? as usize)?;
        let quantity = c.string()?;
        let value = f64::from_le_bytes(c.array()?);
        let unit = c.string()?;
        let ts = Utc
            .timestamp_millis_opt(i64::from_le_bytes(c.array()?))
            .single()?;
        let flag = *DataFlag::ALL.get(c.u8()? as usize)?;
        let source = *SOURCES.get(c.u8()? as usize)?;
        let period = *PERIODS.get(c.u8()? as usize)?;
        let ts_assumed = c.u8()? != 0;
        out.push(Reading {
            sensor,
            site,
            domain,
            quantity,
            value,
            unit,
            ts,
            flag,
            source,
            period,
            ts_assumed,
        });
    }
    c.0.is_empty().then_some(out)
}

/// Try to decode a record at `buf[at..]`: `Some((record, length))` if it checks.
fn decode_at(buf: &[u8], at: usize) -> Option<(Record, usize)> {
    let h = buf.get(at..at + HEADER)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    if len > MAX_RECORD {
        return None;
    }
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&h[12..20]);
    let appended_ms = i64::from_le_bytes(ms);
    let payload = buf.get(at + HEADER..at + HEADER + len)?;
    if crc(appended_ms, payload) != word(8) {
        return None;
    }
    let readings = decode_readings(payload)?;
    Some((
        Record {
            appended_ms,
            readings,
        },
        HEADER + len,
    ))
}

/// Where the next valid record starts at or after `from` (scanning for the magic).
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut i = from;
    while i + HEADER <= buf.len() {
        match buf[i..].windows(4).position(|w| w == magic) {
            Some(p) => {
                let at = i + p;
                if decode_at(buf, at).is_some() {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

impl Spool {
    /// Open (or create) the spool in `dir`, recovering from a crash: read the ledger, check the
    /// last segment and truncate a torn tail.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        policy: FsyncPolicy,
    ) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = entry.metadata().map_err(io(&entry.path()))?.len();
                segments.insert(id, len);
            }
        }
        let ledger_path = dir.join("ledger");
        let mut committed = match fs::read_to_string(&ledger_path) {
            Ok(s) => {
                let mut it = s.split_whitespace().map(|x| x.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
                    _ => {
                        tracing::error!(path = %ledger_path.display(), "spool ledger unreadable; replaying the whole spool (stores are idempotent)");
                        Position::default()
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position::default(),
            Err(e) => return Err(io(&ledger_path)(e)),
        };
        // Segments wholly before the ledger were stored: delete leftovers of an interrupted cleanup.
        let stale: Vec<u64> = segments
            .range(..committed.segment)
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            let p = seg_path(dir, id);
            fs::remove_file(&p).map_err(io(&p))?;
            segments.remove(&id);
        }
        if let Some((&first, _)) = segments.iter().next() {
            if committed.segment < first {
                committed = Position {
                    segment: first,
                    offset: 0,
                };
            }
        }
        // Check the last segment and cut a torn tail.
        if let Some((&last, &len)) = segments.iter().next_back() {
            let p = seg_path(dir, last);
            let buf = fs::read(&p).map_err(io(&p))?;
            let mut at = 0usize;
            let mut good_end = 0usize;
            while at < buf.len() {
                match decode_at(&buf, at) {
                    Some((_, n)) => {
                        at += n;
                        good_end = at;
                    }
                    // Damage in the middle is skipped (and counted) when the writer reads it.
                    None => match resync(&buf, at + 1) {
                        Some(next) => at = next,
                        None => break,
                    },
                }
            }
            if (good_end as u64) < len {
                tracing::warn!(
                    segment = last,
                    offset = good_end,
                    truncated_bytes = len - good_end as u64,
                    "spool: torn write at the tail truncated"
                );
                let f = OpenOptions::new().write(true).open(&p).map_err(io(&p))?;
                f.set_len(good_end as u64).map_err(io(&p))?;
                f.sync_all().map_err(io(&p))?;
                segments.insert(last, good_end as u64);
            }
        }
        let active_id = match segments.iter().next_back() {
            Some((&id, _)) => id,
            None => {
                let id = committed.segment.max(1);
                segments.insert(id, 0);
                id
            }
        };
        let p = seg_path(dir, active_id);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(&p))?;
        if committed.segment == 0 {
            committed = Position {
                segment: *segments.keys().next().unwrap_or(&active_id),
                offset: 0,
            };
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(HEADER as u64 + 1),
            policy,
            inner: Mutex::new(Inner {
                segments,
                active,
                active_id,
                read: committed,
                committed,
                corrupt_records: 0,
                corrupt_bytes: 0,
                dirty: false,
                must_rotate: false,
                ledger_stale: false,
                cursor: None,
            }),
            view: Mutex::new(View::default()),
        };
        // Publish the view of what was found on disk.
        drop(spool.lock());
        sync_dir(dir)?;
        Ok(spool)
    }

    /// The spool's state for I/O; the view is published when the guard drops.
    fn lock(&self) -> Locked<'_> {
        let g = crate::sync::lock(&self.inner);
        Locked { g, spool: self }
    }

    fn view(&self) -> View {
        *crate::sync::lock(&self.view)
    }

    /// What the spool holds. Never waits for an append's fsync: it reads the view the last
    /// operation published.
    pub fn stats(&self) -> Stats {
        self.view().stats
    }

    /// Whether `bytes` more fit under the limit. An empty spool always takes one record, however
    /// large, so a record bigger than the limit cannot block ingest forever.
    pub fn has_room(&self, bytes: u64) -> bool {
        let v = self.view();
        let used = v.stats.bytes;
        used == 0 || v.drained || used + bytes <= self.max_bytes
    }

    /// Append encoded records (one `write`), rotating segments, and fsync per the policy.
    ///
    /// A failed append leaves the segment as it was: a write that stopped part-way (a full disk)
    /// or an fsync that failed is cut back to the previous end, so the caller may retry the same
    /// bytes and the reader never meets a half record. If even the cut fails, the segment is closed
    /// at its last good record and the next append starts a new one.
    pub fn append(&self, encoded: &[u8]) -> Result<(), SpoolError> {
        if encoded.is_empty() {
            return Ok(());
        }
        let mut g = self.lock();
        let size = g.segments.get(&g.active_id).copied().unwrap_or(0);
        if g.must_rotate || (size > 0 && size + encoded.len() as u64 > self.segment_bytes) {
            self.rotate(&mut g)?;
            g.must_rotate = false;
        }
        let before = g.segments.get(&g.active_id).copied().unwrap_or(0);
        let p = seg_path(&self.dir, g.active_id);
        let written = g.active.write_all(encoded).and_then(|()| {
            if self.policy == FsyncPolicy::Batch {
                g.active.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            if g.active.set_len(before).is_err() {
                g.must_rotate = true;
            }
            return Err(io(&p)(e));
        }
        let id = g.active_id;
        *g.segments.entry(id).or_insert(0) += encoded.len() as u64;
        if self.policy != FsyncPolicy::Batch {
            g.dirty = true;
        }
        Ok(())
    }

    /// fsync pending appends (the `Interval` policy's timer calls this).
    pub fn sync(&self) -> Result<(), SpoolError> {
        let mut g = self.lock();
        if g.dirty {
            let p = seg_path(&self.dir, g.active_id);
            g.active.sync_data().map_err(io(&p))?;
            g.dirty = false;
        }
        Ok(())
    }

    fn rotate(&self, g: &mut Inner) -> Result<(), SpoolError> {
        let old = seg_path(&self.dir, g.active_id);
        g.active.sync_data().map_err(io(&old))?;
        let id = g.active_id + 1;
        let p = seg_path(&self.dir, id);
        g.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(&p))?;
        g.active_id = id;
        g.segments.insert(id, 0);
        g.dirty = false;
        sync_dir(&self.dir)
    }

    /// Read up to `max_readings` readings (whole records; at least one record) after the last read.
    ///
    /// Record by record from a cursor kept between calls, so a backlog is read once (not the rest
    /// of the segment again for every batch) and a batch holds only its own records in memory.
    /// A record that does not check is skipped by scanning the rest of its segment for the next
    /// one that does (rare: that read is the only one that takes the rest of a segment).
    pub fn read_batch(&self, max_readings: usize) -> Result<Batch, SpoolError> {
        let mut g = self.lock();
        let mut batch = Batch {
            records: Vec::new(),
            end: g.read,
            bytes: 0,
        };
        let mut n = 0;
        let mut buf = Vec::new();
        while n < max_readings {
            let pos = batch.end;
            let Some(&seg_len) = g.segments.get(&pos.segment) else {
                break;
            };
            if pos.offset >= seg_len {
                // End of this segment: move on if a later one exists.
                match g.segments.range(pos.segment + 1..).next() {
                    Some((&next, _)) => {
                        batch.end = Position {
                            segment: next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let p = seg_path(&self.dir, pos.segment);
            let reuse = g
                .cursor
                .as_ref()
                .is_some_and(|c| c.segment == pos.segment && c.offset == pos.offset);
            if !reuse {
                g.cursor = None;
                let mut file = File::open(&p).map_err(io(&p))?;
                file.seek(SeekFrom::Start(pos.offset)).map_err(io(&p))?;
                g.cursor = Some(ReadCursor {
                    segment: pos.segment,
                    offset: pos.offset,
                    file,
                });
            }
            let Some(cursor) = g.cursor.as_mut() else {
                break;
            };
            let record = match read_record(&mut cursor.file, seg_len - pos.offset, &mut buf) {
                Ok(r) => r,
                // The file is shorter than its known length: what is missing does not check.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                Err(e) => {
                    g.cursor = None;
                    return Err(io(&p)(e));
                }
            };
            let advanced = match record {
                Some((rec, len)) => {
                    n += rec.readings.len();
                    batch.records.push(rec);
                    cursor.offset += len as u64;
                    len as u64
                }
                None => {
                    g.cursor = None;
                    let skipped = self.skip_corrupt(&p, pos, seg_len)?;
                    g.corrupt_records += 1;
                    g.corrupt_bytes += skipped;
                    skipped
                }
            };
            batch.end.offset += advanced;
            batch.bytes += advanced;
        }
        g.read = batch.end;
        Ok(batch)
    }

    /// How many bytes from `pos` to the next record that checks in its segment (or to the
    /// segment's known end), logged.
    fn skip_corrupt(&self, p: &Path, pos: Position, seg_len: u64) -> Result<u64, SpoolError> {
        let mut f = File::open(p).map_err(io(p))?;
        f.seek(SeekFrom::Start(pos.offset)).map_err(io(p))?;
        let mut rest = Vec::new();
        f.take(seg_len - pos.offset)
            .read_to_end(&mut rest)
            .map_err(io(p))?;
        let next = resync(&rest, 1).unwrap_or((seg_len - pos.offset) as usize);
        tracing::error!(
            segment = pos.segment,
            offset = pos.offset,
            skipped_bytes = next,
            "spool: corrupt record detected and skipped"
        );
        Ok(next as u64)
    }

    /// Everything before `pos` is stored: delete the consumed segments, then persist the ledger.
    ///
    /// Space is freed first, so a full disk never keeps the ledger from being written (the ledger
    /// needs a temporary file). A crash between the two leaves a ledger that points into a deleted
    /// segment: `open` then starts at the first segment left, replaying the start of a segment that
    /// was already stored (stores are idempotent). A ledger that cannot be written is retried by
    /// the next `commit`, even of the same position.
    pub fn commit(&self, pos: Position) -> Result<(), SpoolError> {
        let mut g = self.lock();
        if pos <= g.committed && !g.ledger_stale {
            return Ok(());
        }
        let mut pos = pos.max(g.committed);
        let done: Vec<u64> = g.segments.range(..pos.segment).map(|(k, _)| *k).collect();
        for id in done {
            let p = seg_path(&self.dir, id);
            fs::remove_file(&p).map_err(io(&p))?;
            g.segments.remove(&id);
        }
        // The active segment fully stored: start a fresh one so its space is returned.
        if pos == end_position(&g) && g.segments.get(&g.active_id).copied().unwrap_or(0) > 0 {
            let old = g.active_id;
            self.rotate(&mut g)?;
            g.must_rotate = false;
            let p = seg_path(&self.dir, old);
            fs::remove_file(&p).map_err(io(&p))?;
            g.segments.remove(&old);
            pos = Position {
                segment: g.active_id,
                offset: 0,
            };
        }
        // An open cursor would keep a deleted segment's space until it is closed.
        if g.cursor
            .as_ref()
            .is_some_and(|c| !g.segments.contains_key(&c.segment))
        {
            g.cursor = None;
        }
        g.committed = pos;
        if g.read < pos {
            g.read = pos;
        }
        g.ledger_stale = true;
        self.write_ledger(pos)?;
        g.ledger_stale = false;
        Ok(())
    }

    fn write_ledger(&self, pos: Position) -> Result<(), SpoolError> {
        let ledger = self.dir.join("ledger");
        let tmp = self.dir.join("ledger.tmp");
        let written = (|| {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", pos.segment, pos.offset)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            // A half-written temporary file is never read; do not leave it taking space.
            let _ = fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        fs::rename(&tmp, &ledger).map_err(io(&ledger))?;
        sync_dir(&self.dir)
    }

    /// True when everything appended has been stored.
    pub fn is_drained(&self) -> bool {
        self.view().drained
    }

    /// True when every appended record has been read (not necessarily stored).
    pub fn is_read_to_end(&self) -> bool {
        self.view().read_to_end
    }
}

/// What async code asks of the spool, published after every operation under a lock that is
/// never held across I/O.
#[derive(Debug, Clone, Copy, Default)]
struct View {
    stats: Stats,
    drained: bool,
    read_to_end: bool,
}

impl View {
    fn of(g: &Inner) -> View {
        let bytes: u64 = g.segments.values().sum();
        let stored_in_first = match g.segments.keys().next() {
            Some(&first) if first == g.committed.segment => g.committed.offset,
            _ => 0,
        };
        let end = end_position(g);
        View {
            stats: Stats {
                bytes,
                unstored_bytes: bytes.saturating_sub(stored_in_first),
                segments: g.segments.len(),
                corrupt_records: g.corrupt_records,
                corrupt_bytes: g.corrupt_bytes,
            },
            drained: g.committed == end,
            read_to_end: g.read >= end,
        }
    }
}

/// The spool's lock; dropping it publishes the [`View`].
struct Locked<'a> {
    g: std::sync::MutexGuard<'a, Inner>,
    spool: &'a Spool,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.g
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.g
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let v = View::of(&self.g);
        *crate::sync::lock(&self.spool.view) = v;
    }
}

fn end_position(g: &Inner) -> Position {
    Position {
        segment: g.active_id,
        offset: g.segments.get(&g.active_id).copied().unwrap_or(0),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: i64) -> Reading {
        Reading {
            sensor: "dt-1-cems".into(),
            site: "datang".into(),
            domain: Domain::Cems,
            quantity: "SO2".into(),
            value: i as f64,
            unit: "mg/m3".into(),
            ts: chrono::Utc
                .timestamp_millis_opt(1_764_000_000_000 + i)
                .unwrap(),
            flag: DataFlag::N,
            source: Source::Mqtt,
            ts_assumed: false,
            period: crate::reading::Period::Instant,
        }
    }

    #[test]
    fn binary_payload_round_trips_every_field_and_value_and_reads_the_older_json() {
        let mut all = Vec::new();
        for (i, flag) in DataFlag::ALL.into_iter().enumerate() {
            let mut r = reading(i as i64);
            r.flag = flag;
            r.domain = DOMAINS[i % DOMAINS.len()];
            r.source = SOURCES[i % 4];
            r.period = PERIODS[(i + 1) % 4];
            r.ts_assumed = i % 2 == 0;
            r.sensor = format!("传感器-{i}");
            r.value = [f64::MIN_POSITIVE, -0.5, 1e300, 12.345678901234567][i % 4];
            all.push(r);
        }
        let mut buf = Vec::new();
        encode_readings(&all, &mut buf).unwrap();
        assert_eq!(buf[0], 0xB1);
        assert_eq!(decode_readings(&buf).unwrap(), all);
        // Spools written before the binary form hold JSON arrays: still read.
        assert_eq!(
            decode_readings(&serde_json::to_vec(&all).unwrap()).unwrap(),
            all
        );
        // Any truncation, or a byte too many, is not a payload.
        for cut in 0..buf.len() {
            assert_eq!(decode_readings(&buf[..cut]), None, "cut at {cut}");
        }
        buf.push(0);
        assert_eq!(decode_readings(&buf), None);
        // An out-of-range enum index is not a payload either.
        let mut one = Vec::new();
        encode_readings(&all[..1], &mut one).unwrap();
        let flag_at = one.len() - 4;
        one[flag_at] = 8;
        assert_eq!(decode_readings(&one), None);
    }

    #[test]
    fn a_string_longer_than_the_field_allows_is_an_error_not_a_truncation() {
        let mut r = reading(1);
        r.sensor = "x".repeat(70_000);
        assert!(matches!(
            encode_readings(&[r], &mut Vec::new()),
            Err(SpoolError::TooLong("a sensor id"))
        ));
    }

    fn append_n(s: &Spool, from: i64, n: i64) {
        for i in from..from + n {
            let mut buf = Vec::new();
            encode_record(i, &[reading(i)], &mut buf).unwrap();
            s.append(&buf).unwrap();
        }
    }

    fn read_all(s: &Spool) -> Vec<i64> {
        let mut out = Vec::new();
        loop {
            let b = s.read_batch(1000).unwrap();
            if b.records.is_empty() {
                return out;
            }
            out.extend(
                b.records
                    .iter()
                    .flat_map(|r| r.readings.iter().map(|x| x.value as i64)),
            );
            s.commit(b.end).unwrap();
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 4096, FsyncPolicy::Batch).unwrap();
        append_n(&s, 0, 300);
        assert!(s.stats().segments > 3, "rotated: {:?}", s.stats());
        let b = s.read_batch(100).unwrap();
        assert_eq!(b.readings(), 100);
        s.commit(b.end).unwrap();
        drop(s);
        let s = Spool::open(dir.path(), 1 << 30, 4096, FsyncPolicy::Batch).unwrap();
        assert_eq!(
            read_all(&s),
            (100..300).collect::<Vec<_>>(),
            "restart resumes at the ledger"
        );
        assert!(s.is_drained());
        assert_eq!(s.stats().segments, 1, "stored segments are deleted");
    }

    /// Files this process holds open under `dir` whose name was deleted.
    fn deleted_but_open(dir: &Path) -> Vec<String> {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.display().to_string())
            .filter(|t| t.starts_with(&dir.display().to_string()) && t.ends_with("(deleted)"))
            .collect()
    }

    #[test]
    fn the_read_cursor_goes_on_where_it_stopped_and_never_holds_a_stored_segment() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 4096, FsyncPolicy::Batch).unwrap();
        append_n(&s, 0, 300);
        // Batches of 7 stop inside segments: each goes on from the cursor left by the last.
        let mut got = Vec::new();
        loop {
            let b = s.read_batch(7).unwrap();
            if b.records.is_empty() {
                break;
            }
            assert!(b.readings() <= 7);
            got.extend(
                b.records
                    .iter()
                    .flat_map(|r| r.readings.iter().map(|x| x.value as i64)),
            );
            s.commit(b.end).unwrap();
            assert_eq!(deleted_but_open(dir.path()), Vec::<String>::new());
        }
        assert_eq!(got, (0..300).collect::<Vec<_>>());
        assert!(s.is_drained());
        // Appends after the reader caught up are read too (the cursor sat at the old end).
        append_n(&s, 300, 3);
        assert_eq!(read_all(&s), vec![300, 301, 302]);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_appends_continue_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20, FsyncPolicy::Batch).unwrap();
        append_n(&s, 0, 10);
        drop(s);
        let seg = seg_path(dir.path(), 1);
        let len = fs::metadata(&seg).unwrap().len();
        // A crash in the middle of writing record 10: half a record at the end.
        let mut half = Vec::new();
        encode_record(10, &[reading(10)], &mut half).unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20, FsyncPolicy::Batch).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), len, "torn tail cut");
        append_n(&s, 11, 2);
        assert_eq!(read_all(&s), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]);
    }

    #[test]
    fn flipped_bytes_lose_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20, FsyncPolicy::Batch).unwrap();
        append_n(&s, 0, 100);
        drop(s);
        let seg = seg_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let offset = |k: i64| -> usize {
            (0..k)
                .map(|i| {
                    let mut b = Vec::new();
                    encode_record(i, &[reading(i)], &mut b).unwrap();
                    b.len()
                })
                .sum()
        };
        // Damage record 50's payload and record 70's length field.
        bytes[offset(50) + HEADER + 5] ^= 0xFF;
        bytes[offset(70) + 5] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        let s = Spool::open(dir.path(), 1 << 30, 1 << 20, FsyncPolicy::Batch).unwrap();
        let got = read_all(&s);
        let want: Vec<i64> = (0..100).filter(|i| *i != 50 && *i != 70).collect();
        assert_eq!(got, want);
        assert_eq!(
            s.stats().corrupt_records,
            2,
            "each damaged record counted once"
        );
    }

    #[test]
    fn the_limit_is_reported_and_space_returns_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 2000, 1000, FsyncPolicy::Interval).unwrap();
        let mut n = 0;
        while s.has_room(200) {
            append_n(&s, n, 1);
            n += 1;
            assert!(n < 100);
        }
        assert!(s.stats().bytes <= 2000 + 200);
        s.sync().unwrap();
        let got = read_all(&s);
        assert_eq!(got.len() as i64, n);
        assert!(s.has_room(200));
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Append one record of this many readings (acknowledged once `append` returns).
        Append(u8),
        /// Read a batch of at most this many readings.
        Read(u8),
        /// Commit what was read.
        Commit,
        /// The process dies in the middle of an append: this many bytes of a record that was never
        /// acknowledged reach the active segment; then the spool is opened again.
        Crash(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u8..5).prop_map(Op::Append),
            3 => (1u8..12).prop_map(Op::Read),
            2 => Just(Op::Commit),
            1 => (0u8..120).prop_map(Op::Crash),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A model of the spool (Vector's disk buffer has the same kind of test): random appends,
        /// reads, commits and crashes that tear an unacknowledged write. Reads always return the
        /// acknowledged readings in order, from the last commit on after a crash; nothing committed
        /// comes back, nothing acknowledged is missing, no record is taken for corrupt.
        #[test]
        fn every_acknowledged_reading_is_read_in_order_across_crashes(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            // Small segments: rotation and segment deletion happen all the time.
            let open = || Spool::open(dir.path(), 1 << 30, 400, FsyncPolicy::Batch).unwrap();
            let mut s = open();
            let mut acked: Vec<i64> = Vec::new();
            let (mut read_upto, mut committed_upto) = (0usize, 0usize);
            let mut last_end: Option<Position> = None;
            let mut next = 0i64;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        let rs: Vec<Reading> = (next..next + i64::from(n)).map(reading).collect();
                        let mut buf = Vec::new();
                        encode_record(next, &rs, &mut buf).unwrap();
                        s.append(&buf).unwrap();
                        acked.extend(next..next + i64::from(n));
                        next += i64::from(n);
                    }
                    Op::Read(max) => {
                        let b = s.read_batch(usize::from(max)).unwrap();
                        let got: Vec<i64> = b.records.iter().flat_map(|r| r.readings.iter().map(|x| x.value as i64)).collect();
                        proptest::prop_assert_eq!(&got[..], &acked[read_upto..read_upto + got.len()]);
                        read_upto += got.len();
                        if !got.is_empty() {
                            last_end = Some(b.end);
                        }
                    }
                    Op::Commit => {
                        if let Some(end) = last_end {
                            s.commit(end).unwrap();
                            committed_upto = read_upto;
                        }
                    }
                    Op::Crash(torn) => {
                        drop(s);
                        // A torn write: the start of a record that was never acknowledged.
                        let last = fs::read_dir(dir.path()).unwrap()
                            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse::<u64>().ok())
                            .max();
                        if let (Some(id), true) = (last, torn > 0) {
                            let mut buf = Vec::new();
                            encode_record(0, &[reading(-1)], &mut buf).unwrap();
                            buf.truncate(usize::from(torn).min(buf.len() - 1));
                            let mut f = OpenOptions::new().append(true).open(seg_path(dir.path(), id)).unwrap();
                            f.write_all(&buf).unwrap();
                        }
                        s = open();
                        read_upto = committed_upto;
                        last_end = None;
                    }
                }
            }
            if let Some(end) = last_end {
                s.commit(end).unwrap();
            }
            let rest = read_all(&s);
            proptest::prop_assert_eq!(&rest[..], &acked[read_upto..]);
            proptest::prop_assert_eq!(s.stats().corrupt_records, 0);
            proptest::prop_assert!(s.is_drained());
        }
    }
}
